/** The shape of a tool: its name, the roles that may call it, its input schema and its effect. */
import { z } from 'zod';
import type { Db } from '../runtime/store/db.ts';
import type { Case } from '../runtime/store/schema.ts';
import { ToolError } from './errors.ts';
import type { ToolLimits } from './limits.ts';
import type { CallerRole } from './roles.ts';

/** Context passed to a tool's `run` besides its input. */
export interface ToolRunContext {
  /** The transaction of this call: every read and write of the tool goes through it. */
  db: Db;
  case: Case;
  role: CallerRole;
  idempotencyKey: string;
  /** The time of the call, in ms since the epoch. */
  now: number;
  limits: ToolLimits;
}

export interface ToolDefinition<Name extends string, Input, Output> {
  name: Name;
  allowedRoles: readonly CallerRole[];
  inputSchema: z.ZodType<Input>;
  /** Performs the tool's effect on validated input; rejects with ToolError before writing anything. */
  run(input: Input, ctx: ToolRunContext): Output;
}

export interface Tool<Name extends string, Output> {
  name: Name;
  allowedRoles: readonly CallerRole[];
  /**
   * Checks the caller's role, then parses `rawInput`, then runs the tool. Throws ToolError
   * 'permission_denied' or 'invalid_input' before the tool reads or writes anything.
   */
  execute(rawInput: unknown, ctx: ToolRunContext): Output;
}

export function defineTool<Name extends string, Input, Output>(
  definition: ToolDefinition<Name, Input, Output>,
): Tool<Name, Output> {
  const { name, allowedRoles, inputSchema, run } = definition;

  return {
    name,
    allowedRoles,
    execute(rawInput, ctx) {
      if (!allowedRoles.includes(ctx.role)) {
        throw new ToolError(
          'permission_denied',
          `role ${ctx.role} may not call ${name}; allowed roles: ${allowedRoles.join(', ')}`,
        );
      }

      const parsed = inputSchema.safeParse(rawInput);
      if (!parsed.success) {
        throw new ToolError('invalid_input', `invalid input for ${name}: ${z.prettifyError(parsed.error)}`, {
          cause: parsed.error,
        });
      }

      return run(parsed.data, ctx);
    },
  };
}
