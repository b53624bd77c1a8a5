import { describe, expect, it } from 'vitest';
import type { EngineStats } from '../../engine/engine.ts';
import { createMetrics } from '../../runtime/metrics.ts';

const stats: EngineStats = {
  queued: 2,
  running: 3,
  completed: 10,
  aborted: 1,
  rejected: 4,
  deadlineExceeded: 1,
  decodeSteps: 50,
  prefillCalls: 5,
  generatedTokens: 640,
  batchLayouts: 2,
  kvBytes: 4096,
  kvReservedBytes: 8192,
  kvBudgetBytes: 1 << 20,
  batchBufferBytes: 1024,
  batchBufferReserveBytes: 2048,
  expertLoad: [
    [7, 9],
    [3, 13],
  ],
};

describe('createMetrics', () => {
  it('exports engine stats at scrape time', async () => {
    const metrics = createMetrics(() => stats);
    const text = await metrics.registry.metrics();
    expect(text).toContain('sanfang_engine_kv_reserved_bytes 8192');
    expect(text).toContain('sanfang_engine_deadline_exceeded 1');
    expect(text).toContain('sanfang_engine_batch_buffer_reserve_bytes 2048');
    expect(text).toContain('sanfang_process_cpu_seconds_total');
    expect(text).toContain('sanfang_engine_expert_assignments{layer="1",expert="1"} 13');
  });

  it('records engine observer timings', async () => {
    const metrics = createMetrics(() => stats);
    metrics.engineObserver.firstToken?.(40);
    metrics.engineObserver.interToken?.(5);
    metrics.engineObserver.queueWait?.(2);
    metrics.engineObserver.step?.('decode', 16, 16, 3);
    const text = await metrics.registry.metrics();
    expect(text).toContain('sanfang_engine_time_to_first_token_seconds_sum 0.04');
    expect(text).toContain('sanfang_engine_inter_token_seconds_count 1');
    expect(text).toContain('sanfang_engine_queue_wait_seconds_count 1');
    expect(text).toContain('sanfang_engine_batch_rows_sum{kind="decode"} 16');
  });

  it('skips engine stats before the engine loads', async () => {
    const metrics = createMetrics(() => undefined);
    const text = await metrics.registry.metrics();
    expect(text).not.toContain('sanfang_engine_expert_assignments{');
  });
});
