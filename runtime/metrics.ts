/** Prometheus metrics for operators, served at GET /metrics. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EngineStats } from '../engine/engine.ts';

export interface Metrics {
  registry: Registry;
  agentTurns: Counter<'role' | 'outcome'>;
  agentTurnSeconds: Histogram<'role'>;
}

/** Creates the registry; `engineStats` is read at every scrape when the engine is in-process. */
export function createMetrics(engineStats?: () => EngineStats): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'sanfang_process_' });

  const agentTurns = new Counter({
    name: 'sanfang_agent_turns_total',
    help: 'Agent turns by role and outcome: ok, or the fallback reason',
    labelNames: ['role', 'outcome'] as const,
    registers: [registry],
  });
  const agentTurnSeconds = new Histogram({
    name: 'sanfang_agent_turn_seconds',
    help: 'Time of one agent turn, from prompt to validated turn, in seconds',
    labelNames: ['role'] as const,
    buckets: [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 15],
    registers: [registry],
  });

  if (engineStats) {
    const fields: [keyof EngineStats, string][] = [
      ['queued', 'Requests waiting in the engine queue'],
      ['running', 'Requests in the running batch'],
      ['completed', 'Requests completed since start'],
      ['aborted', 'Requests aborted since start'],
      ['rejected', 'Requests rejected because the queue was full, since start'],
      ['decodeSteps', 'Batched decode steps since start'],
      ['prefillCalls', 'Prefill calls since start, each for one or more prompts'],
      ['generatedTokens', 'Tokens generated since start'],
    ];
    for (const [field, help] of fields) {
      new Gauge({
        name: `sanfang_engine_${field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`,
        help,
        registers: [registry],
        collect() {
          this.set(engineStats()[field]);
        },
      });
    }
  }
  return { registry, agentTurns, agentTurnSeconds };
}
