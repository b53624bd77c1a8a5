/**
 * Runs one model turn for a role: builds the prompt, calls the engine with a deadline, and
 * parses the structured turn. A failed turn comes back as a typed fallback so the caller can
 * answer from the strategy library instead of showing raw model output.
 */
import { isEngineError, type EngineErrorCode } from '../engine/errors.ts';
import type { TextGenerator } from '../engine/engine.ts';
import { parseTurn, type SlotValues, type TurnRejection } from './parse.ts';
import { renderPrompt, type Facts, type Locale, type TranscriptLine } from './prompt.ts';
import type { Role, Turn } from './turn.ts';

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

export type FallbackReason = TurnRejection | 'timeout' | 'overloaded' | 'engine_failed';

export type AgentTurnResult =
  | { status: 'ok'; turn: Turn; reply: string; raw: string; latencyMs: number; droppedEntities: string[] }
  | { status: 'fallback'; reason: FallbackReason; detail: string; raw?: string; latencyMs: number }
  | { status: 'aborted'; latencyMs: number };

export interface AgentOptions {
  engine: TextGenerator;
  turnTimeoutMs: number;
  maxTurnTokens?: number;
  /** Called with every finished turn, e.g. to count outcomes in metrics. */
  observe?: (role: Role, result: AgentTurnResult) => void;
}

function engineFallbackReason(code: EngineErrorCode): FallbackReason {
  return code === 'overloaded' ? 'overloaded' : 'engine_failed';
}

export async function runAgentTurn(options: AgentOptions, input: AgentTurnInput): Promise<AgentTurnResult> {
  const result = await runTurn(options, input);
  options.observe?.(input.role, result);
  return result;
}

async function runTurn(options: AgentOptions, input: AgentTurnInput): Promise<AgentTurnResult> {
  const started = performance.now();
  const elapsed = () => performance.now() - started;
  const timeout = AbortSignal.timeout(options.turnTimeoutMs);
  const signal = input.signal ? AbortSignal.any([input.signal, timeout]) : timeout;
  const prompt = renderPrompt(input);

  let result;
  try {
    result = await options.engine.generate({
      prompt,
      maxNewTokens: options.maxTurnTokens ?? 160,
      sampling: { temperature: input.temperature ?? 0, topP: 0.9, seed: input.seed },
      priority: input.priority ?? 'live',
      signal,
    });
  } catch (error) {
    if (input.signal?.aborted) return { status: 'aborted', latencyMs: elapsed() };
    if (timeout.aborted) return { status: 'fallback', reason: 'timeout', detail: `no turn within ${options.turnTimeoutMs} ms`, latencyMs: elapsed() };
    if (isEngineError(error)) return { status: 'fallback', reason: engineFallbackReason(error.code), detail: error.message, latencyMs: elapsed() };
    throw error;
  }

  const lastPartyLine = [...input.transcript].reverse().find((line) => line.speaker !== 'agent');
  const parsed = parseTurn(result.text, input.role, {
    slots: input.slots,
    lastPartyMessage: lastPartyLine?.text,
    truncated: result.finishReason === 'length',
  });
  if (!parsed.ok) return { status: 'fallback', reason: parsed.rejection, detail: parsed.detail, raw: result.text, latencyMs: elapsed() };
  return { status: 'ok', turn: parsed.turn, reply: parsed.reply, raw: result.text, latencyMs: elapsed(), droppedEntities: parsed.droppedEntities };
}
