/** Prometheus metrics for operators, served at GET /metrics. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EngineObserver, EngineStats } from '../engine/engine.ts';

export interface Metrics {
  registry: Registry;
  agentTurns: Counter<'role' | 'outcome'>;
  agentTurnSeconds: Histogram<'role'>;
  /** Pass to Engine.load to record queue wait, first-token and inter-token times and step sizes. */
  engineObserver: EngineObserver;
}

/**
 * Creates the registry. `engineStats` is read at every scrape when the engine is in-process;
 * it may return undefined until the engine has loaded.
 */
export function createMetrics(engineStats?: () => EngineStats | undefined): Metrics {
  const registry = new Registry();
  // The default metric names already start with process_ or nodejs_.
  collectDefaultMetrics({ register: registry, prefix: 'sanfang_' });

  const agentTurns = new Counter({
    name: 'sanfang_agent_turns_total',
    help: "Agent turns by role and the agent's outcome: ok (a valid turn, which the case may still replace when it does not fit the order's facts) or the fallback reason",
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
      ['rejected', 'Requests rejected since start: queue full, context too long or KV budget too small'],
      ['deadlineExceeded', 'Requests that failed their deadline, since start'],
      ['decodeSteps', 'Batched decode steps since start'],
      ['prefillCalls', 'Prefill calls since start, each for one or more prompts'],
      ['generatedTokens', 'Tokens generated since start'],
      ['kvBytes', 'Bytes of KV cache pages held by running requests'],
      ['kvReservedBytes', 'Bytes of KV cache reserved by admitted requests'],
      ['kvBudgetBytes', 'Bytes of KV cache the engine may reserve'],
      ['batchBufferBytes', "Bytes of the decode batch's slot buffers"],
      ['batchBufferReserveBytes', "Bytes of the KV budget set aside for the decode batch's slot buffers at their largest"],
    ];
    for (const [field, help] of fields) {
      new Gauge({
        name: `sanfang_engine_${field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`,
        help,
        registers: [registry],
        collect() {
          const value = engineStats()?.[field];
          if (typeof value === 'number') this.set(value);
        },
      });
    }
    new Gauge({
      name: 'sanfang_engine_expert_assignments',
      help: 'Tokens routed to each expert of each MoE layer since start (one per token and choice)',
      labelNames: ['layer', 'expert'] as const,
      registers: [registry],
      collect() {
        engineStats()?.expertLoad.forEach((experts, layer) => experts.forEach((count, expert) => this.set({ layer: String(layer), expert: String(expert) }, count)));
      },
    });
  }

  const seconds = (name: string, help: string, buckets: number[]) => new Histogram({ name, help, buckets, registers: [registry] });
  const queueWait = seconds('sanfang_engine_queue_wait_seconds', 'Time requests wait in the engine queue', [0.001, 0.005, 0.02, 0.05, 0.1, 0.5, 2]);
  const firstToken = seconds('sanfang_engine_time_to_first_token_seconds', 'Time from submission to the first generated token', [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5]);
  const interToken = seconds('sanfang_engine_inter_token_seconds', 'Time between two generated tokens of one request', [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5]);
  const batchRows = new Histogram({
    name: 'sanfang_engine_batch_rows',
    help: 'Rows per engine call, by kind',
    labelNames: ['kind'] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers: [registry],
  });
  const engineObserver: EngineObserver = {
    queueWait: (ms) => queueWait.observe(ms / 1000),
    firstToken: (ms) => firstToken.observe(ms / 1000),
    interToken: (ms) => interToken.observe(ms / 1000),
    step: (kind, rows) => batchRows.observe({ kind }, rows),
  };
  return { registry, agentTurns, agentTurnSeconds, engineObserver };
}
