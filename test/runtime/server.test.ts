import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { CaseService } from '../../runtime/case-service.ts';
import { loadConfig } from '../../runtime/config.ts';
import type { ServerFrame } from '../../runtime/protocol.ts';
import { createMetrics } from '../../runtime/metrics.ts';
import { ChatServer, type RunningServer } from '../../runtime/server.ts';
import { openStore, type Store } from '../../runtime/store/db.ts';
import { listMessagesAfter } from '../../runtime/store/messages.ts';
import { demoOrderIds, seedDemoData } from '../../runtime/store/seed.ts';
import { scriptedEngine } from '../support/scripted-engine.ts';

const now = Date.now();
let dir: string;
let store: Store;
let cases: CaseService;
let running: RunningServer;

/** A test client that queues every frame it receives. */
class Client {
  readonly frames: ServerFrame[] = [];
  private waiters: (() => void)[] = [];
  constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => {
      this.frames.push(JSON.parse(data.toString()));
      this.waiters.splice(0).forEach((wake) => wake());
    });
  }
  static async connect(url: string): Promise<Client> {
    const socket = new WebSocket(url.replace('http', 'ws') + '/ws');
    const client = new Client(socket);
    await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
    return client;
  }
  send(frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }
  /** Waits for the first queued frame matching `predicate` and removes it from the queue. */
  async next<T extends ServerFrame['type']>(type: T, predicate: (f: Extract<ServerFrame, { type: T }>) => boolean = () => true, timeoutMs = 5_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.frames.findIndex((f) => f.type === type && predicate(f as Extract<ServerFrame, { type: T }>));
      if (index !== -1) return this.frames.splice(index, 1)[0] as Extract<ServerFrame, { type: T }>;
      if (Date.now() > deadline) throw new Error(`no ${type} frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames)}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }
  close(): void {
    this.socket.close();
  }
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sanfang-server-'));
  store = openStore(join(dir, 'test.db'));
  seedDemoData(store.db, now);
  const config = loadConfig({}, { port: 0, maxFrameBytes: 2048, maxMessageChars: 100, messageBurst: 5, messagesPerSecond: 1 });
  let server: ChatServer | undefined;
  const metrics = createMetrics();
  const observe = (role: string, result: { status: string; latencyMs: number }) => {
    metrics.agentTurns.inc({ role, outcome: result.status });
    metrics.agentTurnSeconds.observe({ role }, result.latencyMs / 1000);
  };
  cases = new CaseService({
    db: store.db,
    config,
    agent: { engine: scriptedEngine(), turnTimeoutMs: 5_000, observe },
    isRiderOnline: (id) => server?.isRiderOnline(id) ?? false,
  });
  server = new ChatServer(store.db, cases, config, metrics.registry);
  running = await server.listen();
});

afterEach(async () => {
  await running.close();
  cases.close();
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

async function customer(): Promise<Client> {
  const client = await Client.connect(running.url);
  client.send({ type: 'hello', role: 'customer', customerId: 'C001' });
  await client.next('welcome');
  return client;
}

async function riderClient(): Promise<Client> {
  const client = await Client.connect(running.url);
  client.send({ type: 'hello', role: 'rider', riderId: 'R001' });
  await client.next('welcome');
  return client;
}

/** Opens the case of customer C001's late demo order and returns the server's `case` frame. */
function openLateCase(client: Client) {
  client.send({ type: 'open_case', orderId: demoOrderIds(now).c001Late });
  return client.next('case');
}

describe('ChatServer frames', () => {
  it('answers malformed JSON and stays open', async () => {
    const client = await Client.connect(running.url);
    client.send('{not json');
    expect((await client.next('error')).code).toBe('malformed_frame');
    client.send({ type: 'ping' });
    await client.next('pong');
    client.close();
  });

  it('rejects frames that fail the schema', async () => {
    const client = await Client.connect(running.url);
    client.send({ type: 'launch_rocket' });
    expect((await client.next('error')).code).toBe('invalid_frame');
    client.send({ type: 'message', caseId: 'x', text: 42, clientMsgId: 'a' });
    expect((await client.next('error')).code).toBe('invalid_frame');
    client.close();
  });

  it('rejects an oversized frame', async () => {
    const client = await customer();
    client.send({ type: 'message', caseId: 'x', text: '长'.repeat(3000), clientMsgId: 'big' });
    expect((await client.next('error')).code).toBe('frame_too_large');
    client.send({ type: 'ping' });
    await client.next('pong');
    client.close();
  });

  it('rejects a message over the character limit', async () => {
    const client = await customer();
    const opened = await openLateCase(client);
    client.send({ type: 'message', caseId: opened.caseId, text: '好'.repeat(101), clientMsgId: 'long' });
    const error = await client.next('error');
    expect(error.code).toBe('message_too_long');
    expect(error.ref).toBe('long');
    expect(listMessagesAfter(store.db, opened.caseId, 0)).toHaveLength(0);
    client.close();
  });

  it('requires hello before other frames', async () => {
    const client = await Client.connect(running.url);
    client.send({ type: 'open_case', orderId: demoOrderIds(now).c001Late });
    expect((await client.next('error')).code).toBe('not_authenticated');
    client.close();
  });

  it('reports unknown ids as not_found', async () => {
    const client = await customer();
    client.send({ type: 'open_case', orderId: 'D00000000999' });
    expect((await client.next('error')).code).toBe('not_found');
    client.send({ type: 'message', caseId: 'no-such-case', text: '你好', clientMsgId: 'a' });
    expect((await client.next('error')).code).toBe('not_found');
    client.close();
  });

  it("forbids opening another customer's order", async () => {
    const client = await customer();
    client.send({ type: 'open_case', orderId: demoOrderIds(now).c003OnTime });
    expect((await client.next('error')).code).toBe('forbidden');
    client.close();
  });
});

describe('ChatServer conversation', () => {
  it('acks after storing and streams agent replies', async () => {
    const client = await customer();
    const opened = await openLateCase(client);
    client.send({ type: 'message', caseId: opened.caseId, text: '我的外卖怎么还没到？', clientMsgId: 'c1' });
    const ack = await client.next('ack');
    expect(ack.seq).toBe(1);
    expect(listMessagesAfter(store.db, opened.caseId, 0)[0]?.text).toBe('我的外卖怎么还没到？');
    const reply = await client.next('message', (f) => f.message.direction === 'out' && f.message.text.includes('分钟'));
    expect(reply.message.text).toContain('12分钟');
    client.close();
  });

  it('replays missed messages once after resume', async () => {
    const first = await customer();
    const opened = await openLateCase(first);
    first.send({ type: 'message', caseId: opened.caseId, text: '我的外卖怎么还没到？', clientMsgId: 'c1' });
    await first.next('ack');
    first.close();
    await cases.settled(opened.caseId);

    const second = await customer();
    second.send({ type: 'resume', resumeToken: opened.resumeToken, lastSeq: 1 });
    const resumed = await second.next('case');
    const seqs = resumed.messages.map((m) => m.seq);
    expect(seqs[0]).toBeGreaterThan(1);
    expect(new Set(seqs).size).toBe(seqs.length);
    expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
    expect(resumed.messages.at(-1)?.text).toContain('12分钟');
    second.close();
  });

  it('lets a connected rider answer instead of the simulation', async () => {
    const rider = await riderClient();
    const client = await customer();
    const opened = await openLateCase(client);
    client.send({ type: 'message', caseId: opened.caseId, text: '外卖到哪了', clientMsgId: 'c1' });

    const question = await rider.next('message', (f) => f.message.direction === 'out');
    expect(question.message.party).toBe('rider');
    rider.send({ type: 'message', caseId: opened.caseId, text: '还有7分钟', clientMsgId: 'r1' });
    await rider.next('ack');
    const answer = await client.next('message', (f) => f.message.text.includes('7分钟'));
    expect(answer.message.direction).toBe('out');
    rider.close();
    client.close();
  });

  it('never shows the rider the customer thread', async () => {
    const rider = await riderClient();
    const client = await customer();
    const opened = await openLateCase(client);
    client.send({ type: 'message', caseId: opened.caseId, text: '我电话13812345678，地址漕溪北路88号', clientMsgId: 'c1' });
    await rider.next('message', (f) => f.message.direction === 'out');
    expect(rider.frames.every((f) => f.type !== 'message' || f.message.party === 'rider')).toBe(true);
    expect(JSON.stringify(rider.frames)).not.toContain('13812345678');
    rider.close();
    client.close();
  });

  it('counts agent turns in /metrics', async () => {
    const client = await customer();
    const opened = await openLateCase(client);
    client.send({ type: 'message', caseId: opened.caseId, text: '外卖到哪了', clientMsgId: 'c1' });
    await client.next('ack');
    await cases.settled(opened.caseId);

    const response = await fetch(`${running.url}/metrics`);
    expect(response.status).toBe(200);
    const body = await response.text();
    expect(body).toMatch(/sanfang_agent_turns_total\{role="user_agent",outcome="ok"\} [1-9]/);
    expect(body).toContain('sanfang_agent_turn_seconds_bucket');
    client.close();
  });

  it('serves the chat page', async () => {
    const response = await fetch(running.url + '/');
    expect(response.status).toBe(200);
    expect(await response.text()).toContain('三方');
    expect((await fetch(running.url + '/nope')).status).toBe(404);
  });

  it('rate-limits a flooding connection', async () => {
    const client = await customer();
    const opened = await openLateCase(client);
    for (let i = 0; i < 8; i++) client.send({ type: 'message', caseId: opened.caseId, text: `第${i}条`, clientMsgId: `f${i}` });
    const limited = await client.next('error');
    expect(limited.code).toBe('rate_limited');
    expect(limited.ref).toBe('f5');
    const stored = listMessagesAfter(store.db, opened.caseId, 0).filter((m) => m.direction === 'in');
    expect(stored).toHaveLength(5);
    client.close();
  });

  it('rejects a reused id with other text', async () => {
    const client = await customer();
    const opened = await openLateCase(client);
    client.send({ type: 'message', caseId: opened.caseId, text: '你好', clientMsgId: 'same' });
    await client.next('ack');
    client.send({ type: 'message', caseId: opened.caseId, text: '转人工', clientMsgId: 'same' });
    expect((await client.next('error')).code).toBe('duplicate_id');
    client.close();
  });

  it('rejects an invisible message', async () => {
    const client = await customer();
    client.send({ type: 'message', caseId: 'x', text: '\u200b\u200b', clientMsgId: 'zw' });
    expect((await client.next('error')).code).toBe('invalid_frame');
    client.close();
  });

  it('replays the rider thread on hello', async () => {
    const client = await customer();
    const opened = await openLateCase(client);
    client.send({ type: 'message', caseId: opened.caseId, text: '外卖到哪了', clientMsgId: 'c1' });
    await client.next('ack');
    await cases.settled(opened.caseId);

    const rider = await riderClient();
    const question = await rider.next('message', (f) => f.message.direction === 'out');
    expect(question.message.caseId).toBe(opened.caseId);
    rider.close();
    client.close();
  });
});
