/** The persisted snapshot of each case's dialogue machine, one row per case. */
import { eq } from 'drizzle-orm';
import type { Db } from './db.ts';
import { withStoreErrors } from './errors.ts';
import { machineSnapshots, type MachineSnapshot } from './schema.ts';

/**
 * Stores `snapshot` as the case's current machine snapshot, replacing any earlier one.
 * The snapshot must survive JSON.stringify. Throws StoreError 'not_found' for an unknown case.
 */
export function saveSnapshot(db: Db, caseId: string, snapshot: unknown, now: number): void {
  withStoreErrors(`save machine snapshot of case ${caseId}`, () =>
    db
      .insert(machineSnapshots)
      .values({ caseId, snapshot, updatedAt: now })
      .onConflictDoUpdate({ target: machineSnapshots.caseId, set: { snapshot, updatedAt: now } })
      .run(),
  );
}

/** Returns the case's latest snapshot with the time it was saved, or undefined when none was saved. */
export function loadSnapshot(db: Db, caseId: string): MachineSnapshot | undefined {
  return withStoreErrors(`load machine snapshot of case ${caseId}`, () =>
    db.select().from(machineSnapshots).where(eq(machineSnapshots.caseId, caseId)).get(),
  );
}
