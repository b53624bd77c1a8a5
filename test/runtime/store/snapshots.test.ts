import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCase } from '../../../runtime/store/cases.ts';
import { StoreError } from '../../../runtime/store/errors.ts';
import { demoOrderIds, seedDemoData } from '../../../runtime/store/seed.ts';
import { loadSnapshot, saveSnapshot } from '../../../runtime/store/snapshots.ts';
import { fixedNow, openTempStore, type TempStore } from './temp-store.ts';

describe('machine snapshots', () => {
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

  it('returns undefined before any save', () => {
    expect(loadSnapshot(temp.store.db, caseId)).toBeUndefined();
  });

  it('replaces the earlier snapshot', () => {
    const db = temp.store.db;

    saveSnapshot(db, caseId, { value: 'greeting', context: { tries: 0 } }, fixedNow);
    saveSnapshot(db, caseId, { value: { waiting: 'rider' }, context: { tries: 1 } }, fixedNow + 1000);
    const loaded = loadSnapshot(db, caseId);

    expect(loaded?.snapshot).toEqual({ value: { waiting: 'rider' }, context: { tries: 1 } });
    expect(loaded?.updatedAt).toBe(fixedNow + 1000);
  });

  it('rejects an unknown case', () => {
    let caught: unknown;
    try {
      saveSnapshot(temp.store.db, 'missing', { value: 'x' }, fixedNow);
    } catch (error) {
      caught = error;
    }

    expect(caught).toBeInstanceOf(StoreError);
    expect((caught as StoreError).code).toBe('not_found');
  });
});
