/**
 * Runs one model turn for a role: builds the prompt, calls the engine with a deadline, and
 * parses the structured turn. A failed turn comes back as a typed fallback so the caller can
 * reply from the strategy library instead of showing raw model output.
 */
import { createActor, fromPromise, toPromise } from 'xstate';
import type { GenerateResult, TextGenerator } from '../engine/engine.ts';
import type { SlotValues } from './parse.ts';
import { renderPrompt, type Facts, type Locale, type TranscriptLine } from './prompt.ts';
import { turnSchemaFor, type Role } from './turn.ts';
import { turnMachine, type AgentTurnResult } from './turn-machine.ts';

export type { AgentTurnResult, FallbackReason } from './turn-machine.ts';

export interface AgentTurnInput {
  role: Role;
  locale: Locale;
  facts: Facts;
  transcript: readonly TranscriptLine[];
  slots?: SlotValues;
  /** Sampling temperature; agents decode greedily, simulated parties sample. */
  temperature?: number;
  seed?: number;
  priority?: 'live' | 'simulation';
  /** Aborts the turn, e.g. when the party writes again before the reply is out. */
  signal?: AbortSignal;
}

export interface AgentOptions {
  engine: TextGenerator;
  turnTimeoutMs: number;
  maxTurnTokens?: number;
  /** Called with every finished turn, e.g. to count outcomes in metrics. */
  observe?: (role: Role, result: AgentTurnResult) => void;
}

export async function runAgentTurn(options: AgentOptions, input: AgentTurnInput): Promise<AgentTurnResult> {
  const result = await runTurn(options, input);
  options.observe?.(input.role, result);
  return result;
}

async function runTurn(options: AgentOptions, input: AgentTurnInput): Promise<AgentTurnResult> {
  const started = performance.now();
  if (input.signal?.aborted) return { status: 'aborted', latencyMs: 0 };

  const machine = turnMachine.provide({
    actors: {
      generate: fromPromise<GenerateResult, { prompt: string }>(({ input: generateInput, signal }) =>
        options.engine.generate({
          prompt: generateInput.prompt,
          maxNewTokens: options.maxTurnTokens ?? 160,
          sampling: { temperature: input.temperature ?? 0, topP: 0.9, seed: input.seed },
          priority: input.priority ?? 'live',
          // The engine masks tokens so the turn always parses as JSON of the role's schema.
          responseSchema: turnSchemaFor(input.role),
          // Stopping the invoked actor (timeout, or the caller's abort) aborts the engine request.
          signal,
        }),
      ),
    },
  });
  const lastPartyLine = [...input.transcript].reverse().find((line) => line.speaker !== 'agent');
  const actor = createActor(machine, {
    input: { role: input.role, prompt: renderPrompt(input), slots: input.slots, lastPartyMessage: lastPartyLine?.text, timeoutMs: options.turnTimeoutMs },
  });

  // A caller's abort (a barge-in) stops the machine, which stops and aborts the engine call.
  let onAbort = () => {};
  const aborted = new Promise<AgentTurnResult>((resolve) => {
    onAbort = () => {
      actor.stop();
      resolve({ status: 'aborted', latencyMs: performance.now() - started });
    };
    input.signal?.addEventListener('abort', onAbort, { once: true });
  });
  actor.start();
  try {
    const result = await Promise.race([toPromise(actor), aborted]);
    // A stopped actor settles toPromise without output, possibly before `aborted` settles.
    if (input.signal?.aborted || result === undefined) return { status: 'aborted', latencyMs: performance.now() - started };
    return result;
  } finally {
    input.signal?.removeEventListener('abort', onAbort);
  }
}
