import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCase } from '../../../runtime/store/cases.ts';
import { StoreError } from '../../../runtime/store/errors.ts';
import { appendMessage, listMessagesAfter } from '../../../runtime/store/messages.ts';
import { demoOrderIds, seedDemoData } from '../../../runtime/store/seed.ts';
import { fixedNow, openTempStore, type TempStore } from './temp-store.ts';

describe('appendMessage', () => {
  let temp: TempStore;
  let caseId: string;
  let otherCaseId: string;

  beforeEach(() => {
    temp = openTempStore();
    seedDemoData(temp.store.db, fixedNow);
    const ids = demoOrderIds(fixedNow);
    caseId = createCase(temp.store.db, { orderId: ids.c001Late, customerId: 'C001', locale: 'zh', now: fixedNow }).id;
    otherCaseId = createCase(temp.store.db, { orderId: ids.c003OnTime, customerId: 'C003', locale: 'zh', now: fixedNow }).id;
  });

  afterEach(() => {
    temp.cleanup();
  });

  it('numbers each case from 1', () => {
    const db = temp.store.db;

    const first = appendMessage(db, { caseId, party: 'customer', direction: 'in', text: '外卖到哪了', now: fixedNow });
    const other = appendMessage(db, { caseId: otherCaseId, party: 'customer', direction: 'in', text: '你好', now: fixedNow });
    const second = appendMessage(db, { caseId, party: 'customer', direction: 'out', text: '正在为您查询', now: fixedNow + 1 });
    const third = appendMessage(db, { caseId, party: 'rider', direction: 'out', text: '请问还要多久送达？', now: fixedNow + 2 });

    expect([first.seq, second.seq, third.seq]).toEqual([1, 2, 3]);
    expect(other.seq).toBe(1);
    expect(first.duplicate).toBe(false);
  });

  it('stores a retried client frame once', () => {
    const db = temp.store.db;
    const frame = { caseId, party: 'customer' as const, direction: 'in' as const, text: '还要多久', clientMsgId: 'frame-1' };

    const stored = appendMessage(db, { ...frame, now: fixedNow });
    const retried = appendMessage(db, { ...frame, now: fixedNow + 500 });
    const next = appendMessage(db, { ...frame, clientMsgId: 'frame-2', text: '在吗', now: fixedNow + 600 });

    expect(retried.duplicate).toBe(true);
    expect(retried.id).toBe(stored.id);
    expect(retried.seq).toBe(stored.seq);
    expect(retried.createdAt).toBe(fixedNow);
    expect(next.seq).toBe(2);
    expect(listMessagesAfter(db, caseId, 0)).toHaveLength(2);
  });

  it('scopes client ids to their case', () => {
    const db = temp.store.db;

    const mine = appendMessage(db, { caseId, party: 'customer', direction: 'in', text: 'a', clientMsgId: 'same', now: fixedNow });
    const theirs = appendMessage(db, {
      caseId: otherCaseId,
      party: 'customer',
      direction: 'in',
      text: 'b',
      clientMsgId: 'same',
      now: fixedNow,
    });

    expect(theirs.duplicate).toBe(false);
    expect(theirs.id).not.toBe(mine.id);
  });

  it('rejects an unknown case', () => {
    let caught: unknown;
    try {
      appendMessage(temp.store.db, { caseId: 'missing', party: 'customer', direction: 'in', text: 'x', now: fixedNow });
    } catch (error) {
      caught = error;
    }

    expect(caught).toBeInstanceOf(StoreError);
    expect((caught as StoreError).code).toBe('not_found');
  });
});

describe('listMessagesAfter', () => {
  let temp: TempStore;
  let caseId: string;

  beforeEach(() => {
    temp = openTempStore();
    seedDemoData(temp.store.db, fixedNow);
    const orderId = demoOrderIds(fixedNow).c001Late;
    caseId = createCase(temp.store.db, { orderId, customerId: 'C001', locale: 'zh', now: fixedNow }).id;
  });

  afterEach(() => {
    temp.cleanup();
  });

  it('returns later messages in order', () => {
    const db = temp.store.db;
    const texts = ['一', '二', '三', '四', '五'];
    for (const [index, text] of texts.entries()) {
      appendMessage(db, { caseId, party: 'customer', direction: 'in', text, now: fixedNow + index });
    }

    const missed = listMessagesAfter(db, caseId, 2);

    expect(missed.map((message) => message.seq)).toEqual([3, 4, 5]);
    expect(missed.map((message) => message.text)).toEqual(['三', '四', '五']);
  });

  it('returns nothing when caught up', () => {
    appendMessage(temp.store.db, { caseId, party: 'customer', direction: 'in', text: '一', now: fixedNow });

    expect(listMessagesAfter(temp.store.db, caseId, 1)).toEqual([]);
    expect(listMessagesAfter(temp.store.db, 'missing', 0)).toEqual([]);
  });
});
