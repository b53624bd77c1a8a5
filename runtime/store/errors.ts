/** The one error type the store throws, and the mapping from SQLite driver failures to it. */
import Database from 'better-sqlite3';
import { DrizzleQueryError } from 'drizzle-orm';

type SqliteError = InstanceType<typeof Database.SqliteError>;

export const storeErrorCodes = ['not_found', 'conflict', 'storage_failed'] as const;
export type StoreErrorCode = (typeof storeErrorCodes)[number];

export class StoreError extends Error {
  override readonly name = 'StoreError';
  readonly code: StoreErrorCode;

  constructor(code: StoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/**
 * Runs `work` and rethrows a driver failure as a StoreError whose message starts with
 * `action` (what the store was doing, naming the ids involved). Errors that do not come
 * from the driver, such as a StoreError or a caller's own error thrown inside a
 * transaction, pass through unchanged.
 */
export function withStoreErrors<T>(action: string, work: () => T): T {
  try {
    return work();
  } catch (error) {
    const driverError = findDriverError(error);
    if (driverError === undefined) {
      throw error;
    }

    throw new StoreError(codeForDriverError(driverError), `failed to ${action}: ${driverError.message}`, {
      cause: driverError,
    });
  }
}

// Drizzle wraps driver errors in DrizzleQueryError, whose message carries the query
// parameters (message text, phone numbers). The cause kept here is the SqliteError itself,
// so logging a StoreError never prints customer data.
function findDriverError(error: unknown): SqliteError | undefined {
  if (error instanceof Database.SqliteError) {
    return error;
  }
  if (error instanceof DrizzleQueryError && error.cause instanceof Database.SqliteError) {
    return error.cause;
  }
  return undefined;
}

function codeForDriverError(error: SqliteError): StoreErrorCode {
  switch (error.code) {
    case 'SQLITE_CONSTRAINT_UNIQUE':
    case 'SQLITE_CONSTRAINT_PRIMARYKEY':
      return 'conflict';
    case 'SQLITE_CONSTRAINT_FOREIGNKEY':
      return 'not_found';
    default:
      return 'storage_failed';
  }
}
