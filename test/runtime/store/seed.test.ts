import { asc } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Db } from '../../../runtime/store/db.ts';
import { getOrder, listOrdersForCustomer, listOrderStatusHistory } from '../../../runtime/store/orders.ts';
import {
  customers,
  merchants,
  orderStatusHistory,
  orders,
  riders,
} from '../../../runtime/store/schema.ts';
import { demoOrderIds, seedDemoData } from '../../../runtime/store/seed.ts';
import { fixedNow, openTempStore, type TempStore } from './temp-store.ts';

const minuteMs = 60_000;

function dumpPlatformData(db: Db) {
  return {
    customers: db.select().from(customers).orderBy(asc(customers.id)).all(),
    merchants: db.select().from(merchants).orderBy(asc(merchants.id)).all(),
    riders: db.select().from(riders).orderBy(asc(riders.id)).all(),
    orders: db.select().from(orders).orderBy(asc(orders.id)).all(),
    history: db.select().from(orderStatusHistory).orderBy(asc(orderStatusHistory.id)).all(),
  };
}

describe('seedDemoData', () => {
  let first: TempStore;
  let second: TempStore;

  beforeEach(() => {
    first = openTempStore();
    second = openTempStore();
  });

  afterEach(() => {
    first.cleanup();
    second.cleanup();
  });

  it('writes the same rows for the same now', () => {
    seedDemoData(first.store.db, fixedNow);
    seedDemoData(second.store.db, fixedNow);

    expect(dumpPlatformData(second.store.db)).toEqual(dumpPlatformData(first.store.db));
  });

  it('changes nothing when run twice', () => {
    const seededFirst = seedDemoData(first.store.db, fixedNow);
    const before = dumpPlatformData(first.store.db);
    const seededSecond = seedDemoData(first.store.db, fixedNow + 60 * minuteMs);

    expect(seededFirst).toBe(true);
    expect(seededSecond).toBe(false);
    expect(dumpPlatformData(first.store.db)).toEqual(before);
  });

  it('seeds three of each party', () => {
    seedDemoData(first.store.db, fixedNow);
    const data = dumpPlatformData(first.store.db);

    expect(data.customers).toHaveLength(3);
    expect(data.merchants.map((merchant) => merchant.name)).toEqual(['老王牛肉面', '川味小馆', '鲜果时光']);
    expect(data.riders).toHaveLength(3);
    for (const person of [...data.customers, ...data.merchants, ...data.riders]) {
      expect(person.phone).toMatch(/^1[3-9]\d{9}$/);
    }
  });

  it('gives C001 late, on-time, preparing and delivered orders', () => {
    seedDemoData(first.store.db, fixedNow);
    const ids = demoOrderIds(fixedNow);
    const db = first.store.db;

    const late = getOrder(db, ids.c001Late);
    const onTime = getOrder(db, ids.c001OnTime);
    const preparing = getOrder(db, ids.c001Preparing);
    const delivered = getOrder(db, ids.c001Delivered);

    expect(late?.status).toBe('delivering');
    expect(late?.promisedAt).toBe(fixedNow - 20 * minuteMs);
    expect(late?.riderEtaMin).toBe(12);
    expect(onTime?.status).toBe('delivering');
    expect(onTime?.promisedAt).toBe(fixedNow + 15 * minuteMs);
    expect(onTime?.riderEtaMin).toBe(8);
    expect(preparing?.status).toBe('preparing');
    expect(delivered?.status).toBe('delivered');
    expect(listOrdersForCustomer(db, 'C001').every((order) => order.customerId === 'C001')).toBe(true);
  });

  it('gives other customers orders too', () => {
    seedDemoData(first.store.db, fixedNow);

    expect(listOrdersForCustomer(first.store.db, 'C002').length).toBeGreaterThanOrEqual(2);
    expect(listOrdersForCustomer(first.store.db, 'C003').length).toBeGreaterThanOrEqual(2);
  });

  it('names orders by their date', () => {
    const ids = demoOrderIds(fixedNow);

    expect(ids.c001Late).toBe('D20261204001');
    expect(ids.c001Delivered).toBe('D20261203004');
  });

  it('keeps history consistent with status', () => {
    seedDemoData(first.store.db, fixedNow);
    const db = first.store.db;

    for (const order of db.select().from(orders).all()) {
      const history = listOrderStatusHistory(db, order.id);

      expect(history[0]?.status).toBe('placed');
      expect(history[0]?.at).toBe(order.createdAt);
      expect(history.at(-1)?.status).toBe(order.status);
      expect(history.map((change) => change.at)).toEqual([...history.map((change) => change.at)].sort((a, b) => a - b));
      expect(order.amountFen).toBe(order.items.reduce((total, item) => total + item.qty * item.priceFen, 0));
      if (order.status === 'delivering') {
        expect(order.riderId).not.toBeNull();
      }
    }
  });
});
