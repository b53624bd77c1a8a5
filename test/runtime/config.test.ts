import { describe, expect, it } from 'vitest';
import { engineOptions, loadConfig } from '../../runtime/config.ts';

describe('loadConfig', () => {
  it('uses the embedded defaults', () => {
    const config = loadConfig({});
    expect(config.dbPath).toBe('data/sanfang.db');
    expect(config.modelDir).toBe('models/sanfang-moe-v0');
    expect(config.engineBackend).toBe('onnx');
    expect(config.host).toBe('127.0.0.1');
  });

  it('reads environment variables', () => {
    const config = loadConfig({ PORT: '4123', SANFANG_LATE_THRESHOLD_MIN: '15', SANFANG_DB: '/tmp/x.db' });
    expect(config.port).toBe(4123);
    expect(config.lateThresholdMin).toBe(15);
    expect(config.dbPath).toBe('/tmp/x.db');
  });

  it('reads the engine settings', () => {
    const config = loadConfig({ SANFANG_ENGINE_KV_BUDGET_MB: '512', SANFANG_ENGINE_SINK_TOKENS: '32', SANFANG_ENGINE_WINDOW_TOKENS: '96' });
    expect(config.engineKvBudgetMb).toBe(512);
    expect(config.engineSinkTokens).toBe(32);
    expect(config.engineWindowTokens).toBe(96);
    expect(config.engineSelectedTokens).toBe(256);
  });

  it('rejects sink tokens off the page size', () => {
    expect(() => loadConfig({ SANFANG_ENGINE_SINK_TOKENS: '40' })).toThrow(/SANFANG_ENGINE_SINK_TOKENS/);
  });

  it('rejects an engine context too short for agent turns', () => {
    expect(() => loadConfig({ SANFANG_ENGINE_MAX_CONTEXT_TOKENS: '512' })).toThrow(/SANFANG_ENGINE_MAX_CONTEXT_TOKENS/);
  });

  it('rejects an invalid port', () => {
    expect(() => loadConfig({ PORT: 'eighty' })).toThrow(/SANFANG_PORT/);
  });

  it('passes every engine setting to the engine', () => {
    const config = loadConfig({
      SANFANG_ENGINE_MAX_BATCH_SIZE: '8',
      SANFANG_ENGINE_MAX_QUEUED_REQUESTS: '32',
      SANFANG_ENGINE_KV_BUDGET_MB: '300',
      SANFANG_ENGINE_PREFILL_CHUNK_TOKENS: '128',
      SANFANG_ENGINE_WINDOW_TOKENS: '96',
      SANFANG_EXECUTION_PROVIDER: 'cuda',
    });
    expect(engineOptions(config)).toMatchObject({
      maxBatchSize: 8,
      maxQueuedRequests: 32,
      kvBudgetBytes: 300 * 1024 * 1024,
      prefillChunkTokens: 128,
      executionProvider: 'cuda',
      sparseAttention: { sinkTokens: 64, windowTokens: 96, selectedTokens: 256 },
    });
  });

  it('requires a URL for the remote backend', () => {
    expect(() => loadConfig({ SANFANG_ENGINE_BACKEND: 'remote' })).toThrow(/SANFANG_REMOTE_BASE_URL/);
    const config = loadConfig({ SANFANG_ENGINE_BACKEND: 'remote', SANFANG_REMOTE_BASE_URL: 'http://127.0.0.1:8000/v1' });
    expect(config.remoteBaseUrl).toBe('http://127.0.0.1:8000/v1');
  });
});
