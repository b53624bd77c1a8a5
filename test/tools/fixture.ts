/** A seeded store on a temp file with one open case for customer C001, and helpers to call tools in it. */
import { createCase } from '../../runtime/store/cases.ts';
import type { Case } from '../../runtime/store/schema.ts';
import { demoOrderIds, seedDemoData } from '../../runtime/store/seed.ts';
import { ToolError } from '../../tools/errors.ts';
import { callTool, type ToolResultFor } from '../../tools/index.ts';
import { defaultToolLimits, type ToolLimits } from '../../tools/limits.ts';
import type { CallerRole } from '../../tools/roles.ts';
import { fixedNow, openTempStore, type TempStore } from '../runtime/store/temp-store.ts';

export { fixedNow };
export const orderIds = demoOrderIds(fixedNow);

export interface ToolFixture extends TempStore {
  /** A case about C001's late order. */
  case: Case;
  /** Calls a tool in the fixture's case with a fresh idempotency key unless one is given. */
  call<N extends string>(name: N, input: unknown, role: CallerRole, idempotencyKey?: string): ToolResultFor<N>;
}

export function openToolFixture(limits: ToolLimits = defaultToolLimits): ToolFixture {
  const temp = openTempStore();
  seedDemoData(temp.store.db, fixedNow);
  const opened = createCase(temp.store.db, {
    orderId: orderIds.c001Late,
    customerId: 'C001',
    locale: 'zh',
    now: fixedNow,
  });

  let keyCounter = 0;
  return {
    ...temp,
    case: opened,
    call(name, input, role, idempotencyKey) {
      keyCounter += 1;
      const key = idempotencyKey ?? `test-key-${keyCounter}`;
      return callTool(name, input, { caseId: opened.id, role, idempotencyKey: key, now: fixedNow }, { db: temp.store.db, limits });
    },
  };
}

/** Runs `work` and returns the code of the ToolError it throws, or undefined when it throws none. */
export function toolErrorCode(work: () => unknown): string | undefined {
  try {
    work();
  } catch (error) {
    if (error instanceof ToolError) {
      return error.code;
    }
    throw error;
  }
  return undefined;
}
