/**
 * The machine of one agent turn, shared by the user-facing and rider-facing agents (and the
 * simulated parties): generate, then validate, ending in exactly one outcome. The engine call
 * is the injected `generate` actor; leaving `generating` (timeout or stop) aborts it.
 */
import { assign, fromPromise, setup } from 'xstate';
import type { GenerateResult } from '../engine/engine.ts';
import { isEngineError } from '../engine/errors.ts';
import { parseTurn, type ParsedTurn, type SlotValues } from './parse.ts';
import type { Role, Turn } from './turn.ts';
import type { TurnRejection } from './parse.ts';

export type FallbackReason = TurnRejection | 'timeout' | 'overloaded' | 'engine_failed';

export type AgentTurnResult =
  | { status: 'ok'; turn: Turn; reply: string; raw: string; latencyMs: number; droppedEntities: string[] }
  | { status: 'fallback'; reason: FallbackReason; detail: string; raw?: string; latencyMs: number }
  | { status: 'aborted'; latencyMs: number };

export interface TurnMachineInput {
  role: Role;
  prompt: string;
  slots?: SlotValues;
  lastPartyMessage?: string;
  timeoutMs: number;
}

type Outcome = 'accepted' | 'rejected' | 'timedOut' | 'engineFailed';

interface TurnMachineContext extends TurnMachineInput {
  startedAt: number;
  outcome: Outcome | null;
  generated: GenerateResult | null;
  parsed: ParsedTurn | null;
  error: unknown;
}

const elapsed = (context: TurnMachineContext) => performance.now() - context.startedAt;

export const turnMachine = setup({
  types: {
    input: {} as TurnMachineInput,
    context: {} as TurnMachineContext,
    output: {} as AgentTurnResult,
  },
  actors: {
    generate: fromPromise<GenerateResult, { prompt: string }>(async () => {
      throw new Error('turn machine actor generate was not provided; call turnMachine.provide({ actors })');
    }),
  },
  delays: {
    turnTimeout: ({ context }) => context.timeoutMs,
  },
}).createMachine({
  id: 'agentTurn',
  context: ({ input }) => ({ ...input, startedAt: performance.now(), outcome: null, generated: null, parsed: null, error: null }),
  initial: 'generating',
  states: {
    generating: {
      invoke: {
        src: 'generate',
        input: ({ context }) => ({ prompt: context.prompt }),
        onDone: { target: 'validating', actions: assign({ generated: ({ event }) => event.output }) },
        onError: { target: 'engineFailed', actions: assign({ error: ({ event }) => event.error }) },
      },
      after: { turnTimeout: { target: 'timedOut' } },
    },
    validating: {
      entry: assign({
        parsed: ({ context }) =>
          parseTurn(context.generated!.text, context.role, {
            slots: context.slots,
            lastPartyMessage: context.lastPartyMessage,
            truncated: context.generated!.finishReason === 'length',
          }),
      }),
      always: [{ guard: ({ context }) => context.parsed!.ok, target: 'accepted' }, { target: 'rejected' }],
    },
    accepted: { type: 'final', entry: assign({ outcome: 'accepted' as const }) },
    rejected: { type: 'final', entry: assign({ outcome: 'rejected' as const }) },
    timedOut: { type: 'final', entry: assign({ outcome: 'timedOut' as const }) },
    engineFailed: { type: 'final', entry: assign({ outcome: 'engineFailed' as const }) },
  },
  output: ({ context }): AgentTurnResult => {
    const latencyMs = elapsed(context);
    const state = context.outcome;
    const raw = context.generated?.text;
    if (state === 'accepted' && context.parsed?.ok) {
      const { turn, reply, droppedEntities } = context.parsed;
      return { status: 'ok', turn, reply, raw: raw ?? '', latencyMs, droppedEntities };
    }
    if (state === 'rejected' && context.parsed && !context.parsed.ok) {
      return { status: 'fallback', reason: context.parsed.rejection, detail: context.parsed.detail, raw, latencyMs };
    }
    if (state === 'timedOut') return { status: 'fallback', reason: 'timeout', detail: `no turn within ${context.timeoutMs} ms`, latencyMs };
    const error = context.error;
    if (isEngineError(error)) {
      return { status: 'fallback', reason: error.code === 'overloaded' ? 'overloaded' : 'engine_failed', detail: error.message, latencyMs };
    }
    return { status: 'fallback', reason: 'engine_failed', detail: error instanceof Error ? error.message : String(error), latencyMs };
  },
});
