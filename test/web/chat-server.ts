/**
 * The real chat server for browser tests: wired as runtime/main.ts wires it, on 127.0.0.1 and
 * a free port, over a temporary SQLite file seeded with the demo data.
 */
import type { TextGenerator } from '../../engine/engine.ts';
import { CaseService } from '../../runtime/case-service.ts';
import { loadConfig } from '../../runtime/config.ts';
import { ChatServer } from '../../runtime/server.ts';
import type { Db } from '../../runtime/store/db.ts';
import { demoOrderIds, seedDemoData, type DemoOrderKey } from '../../runtime/store/seed.ts';
import { openTempStore } from '../runtime/store/temp-store.ts';

export interface TestChatServer {
  url: string;
  db: Db;
  orderIds: Record<DemoOrderKey, string>;
  /** Stops the server and the case service, closes the engine, then deletes the database. */
  close(): Promise<void>;
}

/** Starts the server on `engine`, which it owns from then on and closes in `close()`. */
export async function startChatServer(engine: TextGenerator & { close?(): Promise<void> }): Promise<TestChatServer> {
  const temp = openTempStore();
  // The page shows lateness against the browser's clock, so the demo orders are timed from the real now.
  const now = Date.now();
  seedDemoData(temp.store.db, now);
  const config = loadConfig(process.env, { port: 0, host: '127.0.0.1', dbPath: temp.path });

  let server: ChatServer | undefined;
  const cases = new CaseService({
    db: temp.store.db,
    config,
    agent: { engine, turnTimeoutMs: config.turnTimeoutMs },
    isRiderOnline: (riderId) => server?.isRiderOnline(riderId) ?? false,
  });
  server = new ChatServer(temp.store.db, cases, config);
  const running = await server.listen();

  return {
    url: running.url,
    db: temp.store.db,
    orderIds: demoOrderIds(now),
    async close() {
      await running.close();
      cases.close();
      await engine.close?.();
      temp.cleanup();
    },
  };
}
