/** Typed engine errors: callers branch on `code`, never on message text. */
export type EngineErrorCode =
  | 'aborted'
  | 'overloaded'
  | 'invalid_request'
  | 'context_overflow'
  | 'kv_budget_exceeded'
  | 'deadline_exceeded'
  | 'request_failed'
  | 'model_load_failed'
  | 'inference_failed'
  | 'closed';

export class EngineError extends Error {
  override readonly name = 'EngineError';

  constructor(
    readonly code: EngineErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Raised when the bounded queue is full; callers fall back to the strategy library. */
export class EngineOverloaded extends EngineError {
  constructor(queued: number, maxQueued: number) {
    super('overloaded', `engine queue is full (${queued} of ${maxQueued} requests waiting); retry later or use a fallback reply`);
  }
}

export function isEngineError(error: unknown): error is EngineError {
  return error instanceof EngineError;
}
