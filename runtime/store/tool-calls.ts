/** The log of every tool call, keyed by the caller's idempotency key. */
import { asc, eq } from 'drizzle-orm';
import type { Db } from './db.ts';
import { withStoreErrors } from './errors.ts';
import { toolCalls, type ToolCall } from './schema.ts';

interface ToolCallBase {
  caseId: string;
  tool: string;
  role: string;
  idempotencyKey: string;
  input: unknown;
  now: number;
}

export type NewToolCall =
  | (ToolCallBase & { status: 'ok'; output: unknown })
  | (ToolCallBase & { status: 'error'; errorCode: string; errorMessage: string });

export function findToolCall(db: Db, idempotencyKey: string): ToolCall | undefined {
  return withStoreErrors(`read tool call with idempotency key ${idempotencyKey}`, () =>
    db.select().from(toolCalls).where(eq(toolCalls.idempotencyKey, idempotencyKey)).get(),
  );
}

/**
 * Stores one tool call and returns the row. Throws StoreError 'conflict' when the
 * idempotency key is already stored and 'not_found' for an unknown case.
 */
export function recordToolCall(db: Db, call: NewToolCall): ToolCall {
  const { caseId, tool, role, idempotencyKey, input, now } = call;
  const result =
    call.status === 'ok'
      ? { status: 'ok' as const, output: call.output, errorCode: null, errorMessage: null }
      : { status: 'error' as const, output: null, errorCode: call.errorCode, errorMessage: call.errorMessage };

  return withStoreErrors(`record ${tool} call for case ${caseId}`, () =>
    db
      .insert(toolCalls)
      .values({ caseId, tool, role, idempotencyKey, input, ...result, createdAt: now })
      .returning()
      .get(),
  );
}

/** Lists a case's tool calls in the order they were made. */
export function listToolCallsForCase(db: Db, caseId: string): ToolCall[] {
  return withStoreErrors(`list tool calls of case ${caseId}`, () =>
    db.select().from(toolCalls).where(eq(toolCalls.caseId, caseId)).orderBy(asc(toolCalls.id)).all(),
  );
}
