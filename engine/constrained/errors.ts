/** Typed errors of constrained decoding: callers branch on `code`, never on message text. */
export type ConstraintErrorCode =
  /** The schema uses a zod feature that the grammar cannot express, named in `feature`. */
  | 'unsupported_schema'
  /** The schema admits no value at all, for example a string with min length above its max length. */
  | 'invalid_schema'
  /** Options such as the end token ids are invalid for the vocabulary. */
  | 'invalid_options'
  /** The tokenizer's vocabulary could not be read as byte sequences. */
  | 'invalid_vocabulary'
  /** accept() was given a token that the grammar does not allow in the current state. */
  | 'token_not_allowed'
  /** No token of the vocabulary continues the current state, so masking would allow nothing. */
  | 'no_token_allowed'
  /** The end token was already accepted, so the engine must stop decoding this sequence. */
  | 'constraint_finished';

export class ConstraintError extends Error {
  override readonly name = 'ConstraintError';
  /** The unsupported zod feature, for code `unsupported_schema`. */
  readonly feature: string | undefined;

  constructor(
    readonly code: ConstraintErrorCode,
    message: string,
    options?: { cause?: unknown; feature?: string },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.feature = options?.feature;
  }
}

export function isConstraintError(error: unknown): error is ConstraintError {
  return error instanceof ConstraintError;
}
