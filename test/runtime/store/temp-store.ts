/** Stores on real SQLite files in a fresh temporary folder, removed after the test. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '../../../runtime/store/db.ts';

export interface TempStore {
  store: Store;
  /** The database file. */
  path: string;
  /** Closes the store and deletes its folder. */
  cleanup(): void;
}

export function openTempStore(): TempStore {
  const dir = mkdtempSync(join(tmpdir(), 'sanfang-store-'));
  const path = join(dir, 'sanfang.db');
  const store = openStore(path);

  return {
    store,
    path,
    cleanup() {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** 2026-12-04 12:00 in China Standard Time, as ms since the epoch. */
export const fixedNow = Date.UTC(2026, 11, 4, 4, 0, 0);
