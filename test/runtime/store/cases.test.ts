import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createCase,
  getCase,
  getCaseByResumeToken,
  listOpenCases,
  setCaseStatus,
} from '../../../runtime/store/cases.ts';
import { StoreError } from '../../../runtime/store/errors.ts';
import { demoOrderIds, seedDemoData } from '../../../runtime/store/seed.ts';
import { fixedNow, openTempStore, type TempStore } from './temp-store.ts';

function storeErrorCode(work: () => unknown): string | undefined {
  try {
    work();
  } catch (error) {
    return error instanceof StoreError ? error.code : 'not a StoreError';
  }
  return undefined;
}

describe('cases', () => {
  let temp: TempStore;
  const ids = demoOrderIds(fixedNow);

  beforeEach(() => {
    temp = openTempStore();
    seedDemoData(temp.store.db, fixedNow);
  });

  afterEach(() => {
    temp.cleanup();
  });

  it('opens a case with a unique token', () => {
    const db = temp.store.db;

    const first = createCase(db, { orderId: ids.c001Late, customerId: 'C001', locale: 'zh', now: fixedNow });
    const second = createCase(db, { orderId: ids.c001OnTime, customerId: 'C001', locale: 'en', now: fixedNow });

    expect(first.status).toBe('open');
    expect(first.resumeToken.length).toBeGreaterThanOrEqual(40);
    expect(second.resumeToken).not.toBe(first.resumeToken);
    expect(second.id).not.toBe(first.id);
    expect(getCase(db, first.id)).toEqual(first);
    expect(getCaseByResumeToken(db, second.resumeToken)?.id).toBe(second.id);
    expect(getCaseByResumeToken(db, 'no-such-token')).toBeUndefined();
  });

  it('rejects an unknown order', () => {
    const code = storeErrorCode(() =>
      createCase(temp.store.db, { orderId: 'D00000000000', customerId: 'C001', locale: 'zh', now: fixedNow }),
    );

    expect(code).toBe('not_found');
  });

  it("rejects another customer's order", () => {
    const code = storeErrorCode(() =>
      createCase(temp.store.db, { orderId: ids.c003OnTime, customerId: 'C001', locale: 'zh', now: fixedNow }),
    );

    expect(code).toBe('conflict');
  });

  it('updates status and time', () => {
    const db = temp.store.db;
    const opened = createCase(db, { orderId: ids.c001Late, customerId: 'C001', locale: 'zh', now: fixedNow });

    const updated = setCaseStatus(db, opened.id, 'handoff', fixedNow + 5000);

    expect(updated.status).toBe('handoff');
    expect(updated.updatedAt).toBe(fixedNow + 5000);
    expect(updated.createdAt).toBe(fixedNow);
    expect(storeErrorCode(() => setCaseStatus(db, 'missing', 'resolved', fixedNow))).toBe('not_found');
  });

  it('lists unresolved cases oldest first', () => {
    const db = temp.store.db;
    const older = createCase(db, { orderId: ids.c001Late, customerId: 'C001', locale: 'zh', now: fixedNow });
    const handedOff = createCase(db, { orderId: ids.c001OnTime, customerId: 'C001', locale: 'zh', now: fixedNow + 1 });
    const resolved = createCase(db, { orderId: ids.c003OnTime, customerId: 'C003', locale: 'zh', now: fixedNow + 2 });
    setCaseStatus(db, handedOff.id, 'handoff', fixedNow + 3);
    setCaseStatus(db, resolved.id, 'resolved', fixedNow + 4);

    expect(listOpenCases(db).map((row) => row.id)).toEqual([older.id, handedOff.id]);
  });
});
