import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterEach, describe, expect, it } from 'vitest';
import { createCase } from '../../../runtime/store/cases.ts';
import { openStore, runInTransaction } from '../../../runtime/store/db.ts';
import { StoreError } from '../../../runtime/store/errors.ts';
import { appendMessage, listMessagesAfter } from '../../../runtime/store/messages.ts';
import { listOrdersForCustomer } from '../../../runtime/store/orders.ts';
import { customers } from '../../../runtime/store/schema.ts';
import { demoOrderIds, seedDemoData } from '../../../runtime/store/seed.ts';
import { loadSnapshot, saveSnapshot } from '../../../runtime/store/snapshots.ts';
import { fixedNow } from './temp-store.ts';

const expectedTables = [
  'cases',
  'coupons',
  'customers',
  'machine_snapshots',
  'merchants',
  'messages',
  'order_status_history',
  'orders',
  'riders',
  'tool_calls',
];

describe('openStore', () => {
  let dir: string;

  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function makeDir(): string {
    dir = mkdtempSync(join(tmpdir(), 'sanfang-db-'));
    return dir;
  }

  it('creates every table on a fresh file', () => {
    const store = openStore(join(makeDir(), 'fresh.db'));

    const rows = store.db.all<{ name: string }>(
      sql`select name from sqlite_master where type = 'table' and name not like 'sqlite_%' and name not like '__drizzle%' order by name`,
    );
    store.close();

    expect(rows.map((row) => row.name)).toEqual(expectedTables);
  });

  it('creates a missing parent folder', () => {
    const store = openStore(join(makeDir(), 'nested', 'deeper', 'store.db'));
    const count = store.db.select().from(customers).all().length;
    store.close();

    expect(count).toBe(0);
  });

  it('turns on WAL and foreign keys', () => {
    const store = openStore(join(makeDir(), 'pragmas.db'));
    const journal = store.db.get<{ journal_mode: string }>(sql`pragma journal_mode`);
    const foreignKeys = store.db.get<{ foreign_keys: number }>(sql`pragma foreign_keys`);
    store.close();

    expect(journal?.journal_mode).toBe('wal');
    expect(foreignKeys?.foreign_keys).toBe(1);
  });

  it('opens an in-memory database', () => {
    makeDir();
    const store = openStore(':memory:');
    const seeded = seedDemoData(store.db, fixedNow);
    store.close();

    expect(seeded).toBe(true);
  });

  it('keeps everything after a reopen', () => {
    const path = join(makeDir(), 'reopen.db');
    const first = openStore(path);
    seedDemoData(first.db, fixedNow);
    const ids = demoOrderIds(fixedNow);
    const opened = createCase(first.db, { orderId: ids.c001Late, customerId: 'C001', locale: 'zh', now: fixedNow });
    appendMessage(first.db, { caseId: opened.id, party: 'customer', direction: 'in', text: '我的外卖怎么还没到？', now: fixedNow });
    saveSnapshot(first.db, opened.id, { value: 'waiting' }, fixedNow);
    const ordersBefore = listOrdersForCustomer(first.db, 'C001');
    first.close();

    const second = openStore(path);
    const ordersAfter = listOrdersForCustomer(second.db, 'C001');
    const messages = listMessagesAfter(second.db, opened.id, 0);
    const snapshot = loadSnapshot(second.db, opened.id);
    const seededAgain = seedDemoData(second.db, fixedNow);
    second.close();

    expect(ordersAfter).toEqual(ordersBefore);
    expect(messages.map((message) => message.text)).toEqual(['我的外卖怎么还没到？']);
    expect(snapshot?.snapshot).toEqual({ value: 'waiting' });
    expect(seededAgain).toBe(false);
  });

  it('rolls back a failed transaction', () => {
    const store = openStore(join(makeDir(), 'rollback.db'));
    seedDemoData(store.db, fixedNow);
    const orderId = demoOrderIds(fixedNow).c001Late;

    expect(() =>
      runInTransaction(store.db, 'open a case and fail', (tx) => {
        createCase(tx, { orderId, customerId: 'C001', locale: 'zh', now: fixedNow });
        throw new Error('stop here');
      }),
    ).toThrow('stop here');
    const count = store.db.all(sql`select id from cases`).length;
    store.close();

    expect(count).toBe(0);
  });

  it('wraps a unique violation as conflict', () => {
    const store = openStore(join(makeDir(), 'constraint.db'));
    seedDemoData(store.db, fixedNow);

    let caught: unknown;
    try {
      runInTransaction(store.db, 'insert customer C001 again', (tx) =>
        tx.insert(customers).values({ id: 'C001', name: '重复', phone: '13800000000', address: '上海市' }).run(),
      );
    } catch (error) {
      caught = error;
    }
    store.close();

    expect(caught).toBeInstanceOf(StoreError);
    expect((caught as StoreError).code).toBe('conflict');
    expect((caught as StoreError).cause).toHaveProperty('code', 'SQLITE_CONSTRAINT_PRIMARYKEY');
  });
});
