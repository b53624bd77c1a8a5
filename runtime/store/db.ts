/**
 * Opens the SQLite store and applies the committed migrations. This folder is the only
 * code that imports better-sqlite3, so a move to another database touches this module.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database, { type RunResult } from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import type { BaseSQLiteDatabase } from 'drizzle-orm/sqlite-core';
import { withStoreErrors } from './errors.ts';
import * as schema from './schema.ts';

export type Schema = typeof schema;

/**
 * A drizzle handle on the store: the database itself or a transaction inside it.
 * Repository functions take this type, so they compose inside `runInTransaction`.
 */
export type Db = BaseSQLiteDatabase<'sync', RunResult, Schema>;

export interface Store {
  db: BetterSQLite3Database<Schema>;
  close(): void;
}

const migrationsFolder = fileURLToPath(new URL('./migrations', import.meta.url));

// How long a write waits for another connection's write lock before failing with
// SQLITE_BUSY. Transactions here are short, so a wait this long means something is stuck.
const busyTimeoutMs = 5_000;

/**
 * Opens (creating if missing) the SQLite file at `path`, or an in-memory database for
 * ':memory:', and migrates it to the current schema. Throws a StoreError with code
 * 'storage_failed' when the file cannot be opened or migrated.
 */
export function openStore(path: string): Store {
  const inMemory = path === ':memory:';
  if (!inMemory) {
    mkdirSync(dirname(path), { recursive: true });
  }

  const client = withStoreErrors(`open database ${path}`, () => new Database(path));
  try {
    // WAL lets readers run while one connection writes; an in-memory database ignores it.
    client.pragma('journal_mode = WAL');
    client.pragma('foreign_keys = ON');
    client.pragma(`busy_timeout = ${busyTimeoutMs}`);

    const db = drizzle(client, { schema });
    withStoreErrors(`migrate database ${path}`, () => migrate(db, { migrationsFolder }));

    return { db, close: () => client.close() };
  } catch (error) {
    client.close();
    throw error;
  }
}

/**
 * Runs `work` in one transaction that takes the write lock up front, so that two
 * connections checking and then writing the same rows run one after the other. Inside an
 * outer transaction this becomes a savepoint. An error thrown by `work` rolls back and is
 * rethrown; driver failures arrive as StoreError.
 */
export function runInTransaction<T>(db: Db, action: string, work: (tx: Db) => T): T {
  return withStoreErrors(action, () => db.transaction((tx) => work(tx), { behavior: 'immediate' }));
}
