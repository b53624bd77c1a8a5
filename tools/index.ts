/**
 * The entry point for every platform action an agent or operator takes. `callTool` checks
 * the caller's role and the input, runs the tool in one transaction, records the call, and
 * replays the stored result when an idempotency key comes back.
 */
import { caseLogger } from '../runtime/log.ts';
import { runInTransaction, type Db } from '../runtime/store/db.ts';
import { StoreError } from '../runtime/store/errors.ts';
import { getCase } from '../runtime/store/cases.ts';
import type { ToolCall } from '../runtime/store/schema.ts';
import { findToolCall, recordToolCall } from '../runtime/store/tool-calls.ts';
import { askRiderEtaTool } from './ask-rider-eta.ts';
import { isToolErrorCode, ToolError } from './errors.ts';
import { issueCouponTool } from './issue-coupon.ts';
import type { ToolLimits } from './limits.ts';
import { lookupOrderTool } from './lookup-order.ts';
import { recordRiderEtaTool } from './record-rider-eta.ts';
import type { CallerRole } from './roles.ts';
import type { ToolRunContext } from './tool.ts';

const toolsByName = {
  lookup_order: lookupOrderTool,
  ask_rider_eta: askRiderEtaTool,
  record_rider_eta: recordRiderEtaTool,
  issue_coupon: issueCouponTool,
};

export type ToolName = keyof typeof toolsByName;
export const toolNames = Object.keys(toolsByName) as ToolName[];

export type ToolOutput<N extends ToolName> = ReturnType<(typeof toolsByName)[N]['execute']>;

/** A successful call. `replayed` is true when the output is the stored output of an earlier call with the same key. */
export type ToolResult = { [N in ToolName]: { tool: N; output: ToolOutput<N>; replayed: boolean } }[ToolName];

/** The result type for a tool name: narrowed for a known name, the whole union for any other string. */
export type ToolResultFor<N extends string> = N extends ToolName ? Extract<ToolResult, { tool: N }> : ToolResult;

export interface ToolCallContext {
  caseId: string;
  role: CallerRole;
  /**
   * Identifies one logical call. A call with a key that is already stored returns the
   * stored result, or throws the stored error, and has no effect.
   */
  idempotencyKey: string;
  /** ms since the epoch */
  now: number;
}

export interface ToolDeps {
  db: Db;
  limits: ToolLimits;
}

type Outcome = { ok: true; result: ToolResult } | { ok: false; error: ToolError };

/**
 * Calls tool `name` with `rawInput` on behalf of `ctx.role`, in one transaction. Every
 * call is recorded in the tool call log, ok or not, except those that cannot be: a replay,
 * an empty key, a key reused for a different call, and a call on an unknown case.
 *
 * Throws ToolError with code 'not_found' (unknown tool, case or order), 'permission_denied',
 * 'invalid_input' (also for an empty key or a key reused with another tool, case, role or
 * input), 'limit_exceeded' or 'invalid_state'. A failure of the store itself arrives as StoreError.
 */
export function callTool<N extends string>(
  name: N,
  rawInput: unknown,
  ctx: ToolCallContext,
  deps: ToolDeps,
): ToolResultFor<N> {
  if (ctx.idempotencyKey.length === 0) {
    throw new ToolError('invalid_input', `empty idempotency key for ${name}; give every logical call its own key`);
  }

  const logger = caseLogger(ctx.caseId);

  let outcome: Outcome;
  try {
    outcome = runInTransaction(deps.db, `call ${name} for case ${ctx.caseId}`, (tx) =>
      callInTransaction(tx, name, rawInput, ctx, deps.limits),
    );
  } catch (error) {
    // The write lock is taken before the key is checked, so only a connection that skips
    // it can store the same key first. The unique index catches that, and the stored
    // call is replayed here.
    const stored =
      error instanceof StoreError && error.code === 'conflict' ? findToolCall(deps.db, ctx.idempotencyKey) : undefined;
    if (stored === undefined) {
      throw error;
    }

    logger.warn({ tool: name, idempotencyKey: ctx.idempotencyKey, err: error }, 'tool call key stored concurrently; replaying it');
    outcome = replay(stored, name, rawInput, ctx);
  }

  if (!outcome.ok) {
    logger.info({ tool: name, role: ctx.role, code: outcome.error.code }, 'tool call failed');
    throw outcome.error;
  }

  logger.info({ tool: name, role: ctx.role, replayed: outcome.result.replayed }, 'tool call succeeded');
  return outcome.result as ToolResultFor<N>;
}

function callInTransaction(
  tx: Db,
  name: string,
  rawInput: unknown,
  ctx: ToolCallContext,
  limits: ToolLimits,
): Outcome {
  const stored = findToolCall(tx, ctx.idempotencyKey);
  if (stored !== undefined) {
    return replay(stored, name, rawInput, ctx);
  }

  const caseRow = getCase(tx, ctx.caseId);
  if (caseRow === undefined) {
    return { ok: false, error: new ToolError('not_found', `case ${ctx.caseId} not found; tools run only inside a case`) };
  }

  const call = {
    caseId: ctx.caseId,
    tool: name,
    role: ctx.role,
    idempotencyKey: ctx.idempotencyKey,
    input: toJsonValue(rawInput),
    now: ctx.now,
  };
  try {
    // A savepoint, so that a tool failing after a write leaves nothing behind.
    const result = runInTransaction(tx, `run ${name} for case ${ctx.caseId}`, (savepoint) => {
      const runContext: ToolRunContext = {
        db: savepoint,
        case: caseRow,
        role: ctx.role,
        idempotencyKey: ctx.idempotencyKey,
        now: ctx.now,
        limits,
      };
      return executeTool(name, rawInput, runContext);
    });

    recordToolCall(tx, { ...call, status: 'ok', output: result.output });
    return { ok: true, result };
  } catch (error) {
    if (!(error instanceof ToolError)) {
      throw error;
    }

    recordToolCall(tx, { ...call, status: 'error', errorCode: error.code, errorMessage: error.message });
    return { ok: false, error };
  }
}

function executeTool(name: string, rawInput: unknown, ctx: ToolRunContext): ToolResult {
  switch (name) {
    case 'lookup_order':
      return { tool: name, output: lookupOrderTool.execute(rawInput, ctx), replayed: false };
    case 'ask_rider_eta':
      return { tool: name, output: askRiderEtaTool.execute(rawInput, ctx), replayed: false };
    case 'record_rider_eta':
      return { tool: name, output: recordRiderEtaTool.execute(rawInput, ctx), replayed: false };
    case 'issue_coupon':
      return { tool: name, output: issueCouponTool.execute(rawInput, ctx), replayed: false };
    default:
      throw new ToolError('not_found', `unknown tool ${JSON.stringify(name)}; valid tools: ${toolNames.join(', ')}`);
  }
}

// Replays a stored call for a request with the same key. A key names one logical call, so
// the same key with another tool, case, role or input is a caller bug. It is rejected
// instead of returning the result of an unrelated call.
function replay(stored: ToolCall, name: string, rawInput: unknown, ctx: ToolCallContext): Outcome {
  const sameCall =
    stored.tool === name &&
    stored.caseId === ctx.caseId &&
    stored.role === ctx.role &&
    canonicalJson(stored.input) === canonicalJson(toJsonValue(rawInput));
  if (!sameCall) {
    const error = new ToolError(
      'invalid_input',
      `idempotency key ${ctx.idempotencyKey} was already used for a different call (${stored.tool} by ${stored.role} on case ${stored.caseId}); use a new key for a new call`,
    );
    return { ok: false, error };
  }

  if (stored.status === 'error') {
    const code = isToolErrorCode(stored.errorCode) ? stored.errorCode : 'invalid_state';
    return { ok: false, error: new ToolError(code, stored.errorMessage ?? `${name} failed earlier with ${code}`) };
  }

  // The stored output was written by this tool for this same call, so its type is the tool's output type.
  const result = { tool: stored.tool, output: stored.output, replayed: true } as ToolResult;
  return { ok: true, result };
}

// The input as it is stored: a JSON value, or null when it cannot be serialised (a BigInt,
// a cycle). The tools' schemas accept only strings and numbers in known keys, so such an
// input fails validation anyway and dropping it loses nothing.
function toJsonValue(value: unknown): unknown {
  try {
    const text = JSON.stringify(value);
    return text === undefined ? null : (JSON.parse(text) as unknown);
  } catch {
    return null;
  }
}

// JSON with object keys sorted, so that two equal inputs compare equal whatever their key order.
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, nested: unknown) => {
    if (nested === null || typeof nested !== 'object' || Array.isArray(nested)) {
      return nested;
    }
    // Keys of one object are distinct, so the comparison never needs to return 0.
    const entries = Object.entries(nested).sort(([a], [b]) => (a < b ? -1 : 1));
    return Object.fromEntries(entries);
  });
}
