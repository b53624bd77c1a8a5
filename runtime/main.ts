/**
 * `npm start`: opens (and on first start creates, migrates and seeds) the SQLite file, loads
 * the default model into the shared engine, resumes open cases and serves the chat page.
 */
import { Engine, type TextGenerator } from '../engine/engine.ts';
import { isEngineError } from '../engine/errors.ts';
import { OpenAiCompatibleGenerator } from '../engine/remote/openai-backend.ts';
import { CaseService } from './case-service.ts';
import { engineLoadFailure, engineOptions, loadConfig } from './config.ts';
import { log } from './log.ts';
import { createMetrics } from './metrics.ts';
import { ChatServer } from './server.ts';
import { openStore } from './store/db.ts';
import { seedDemoData } from './store/seed.ts';

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (error) {
  log.fatal((error as Error).message);
  process.exit(2);
}

let localEngine: Engine | undefined;
const metrics = createMetrics(() => localEngine?.stats());
let engine: TextGenerator & { close(): Promise<void> };
if (config.engineBackend === 'remote') {
  engine = new OpenAiCompatibleGenerator({
    baseUrl: config.remoteBaseUrl!,
    model: config.remoteModel,
    apiKey: config.remoteApiKey,
    api: config.remoteApi,
    logger: log,
  });
  log.info({ baseUrl: config.remoteBaseUrl, model: config.remoteModel }, 'using the remote engine');
} else {
  try {
    engine = localEngine = await Engine.load({ ...engineOptions(config), observer: metrics.engineObserver });
  } catch (error) {
    // Fail before the database is created or seeded, with the variables to change.
    if (!isEngineError(error)) throw error;
    log.fatal({ code: error.code, modelDir: config.modelDir }, engineLoadFailure(error));
    process.exit(1);
  }
  log.info({ modelDir: config.modelDir, graph: localEngine.graphPath, executionProvider: config.executionProvider }, 'engine loaded');
}

const store = openStore(config.dbPath);
if (seedDemoData(store.db, Date.now())) log.info({ dbPath: config.dbPath }, 'seeded demo data');

const observe = (role: string, result: { status: string; latencyMs: number; reason?: string }) => {
  metrics.agentTurns.inc({ role, outcome: result.status === 'fallback' ? (result.reason ?? 'fallback') : result.status });
  metrics.agentTurnSeconds.observe({ role }, result.latencyMs / 1000);
};

let server: ChatServer | undefined;
const cases = new CaseService({
  db: store.db,
  config,
  agent: { engine, turnTimeoutMs: config.turnTimeoutMs, observe },
  isRiderOnline: (riderId) => server?.isRiderOnline(riderId) ?? false,
});
server = new ChatServer(store.db, cases, config, metrics.registry);
cases.resumeOpenCases();
const running = await server.listen();
console.log(`Sanfang is listening on ${running.url}`);

let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'shutting down');
  await running.close();
  cases.close();
  await engine.close();
  store.close();
  process.exit(0);
}
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));
