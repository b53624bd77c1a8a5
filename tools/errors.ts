/** The one error type tools throw. Callers branch on `code`; the message is for logs and operators. */
export const toolErrorCodes = [
  'invalid_input',
  'permission_denied',
  'limit_exceeded',
  'not_found',
  'invalid_state',
] as const;
export type ToolErrorCode = (typeof toolErrorCodes)[number];

export class ToolError extends Error {
  override readonly name = 'ToolError';
  readonly code: ToolErrorCode;

  constructor(code: ToolErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export function isToolErrorCode(value: unknown): value is ToolErrorCode {
  return typeof value === 'string' && (toolErrorCodes as readonly string[]).includes(value);
}
