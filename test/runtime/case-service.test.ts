import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CaseService } from '../../runtime/case-service.ts';
import { loadConfig } from '../../runtime/config.ts';
import { listCouponsForCase } from '../../runtime/store/coupons.ts';
import { openStore, type Store } from '../../runtime/store/db.ts';
import { appendMessage, listMessagesAfter } from '../../runtime/store/messages.ts';
import { listToolCallsForCase } from '../../runtime/store/tool-calls.ts';
import { orders } from '../../runtime/store/schema.ts';
import { demoOrderIds, seedDemoData } from '../../runtime/store/seed.ts';
import { scriptedEngine } from '../support/scripted-engine.ts';

const now = Date.parse('2026-12-04T04:00:00Z');
let dir: string;
let store: Store;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sanfang-case-'));
  store = openStore(join(dir, 'test.db'));
  seedDemoData(store.db, now);
});

afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

function service(engine = scriptedEngine(), overrides = {}) {
  const config = loadConfig({}, { riderReplyTimeoutMs: 5_000, ...overrides });
  return new CaseService({ db: store.db, config, agent: { engine, turnTimeoutMs: 5_000 }, now: () => now, isRiderOnline: () => false });
}

describe('CaseService', () => {
  it('resolves a late order with ETA and coupon', async () => {
    const cases = service();
    const opened = cases.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    cases.customerMessage(opened.id, '我的外卖怎么还没到？', 'm1');
    await cases.settled(opened.id);

    const toCustomer = listMessagesAfter(store.db, opened.id, 0).filter((m) => m.party === 'customer' && m.direction === 'out');
    expect(toCustomer.map((m) => m.text)).toEqual(['我马上联系骑手', '骑手预计12分钟后送达，已发放5元优惠券']);
    expect(listCouponsForCase(store.db, opened.id).map((c) => c.amountFen)).toEqual([500]);
    const riderThread = listMessagesAfter(store.db, opened.id, 0).filter((m) => m.party === 'rider');
    expect(riderThread.map((m) => m.direction)).toEqual(['out', 'in', 'out']);
    cases.close();
  });

  it('issues no coupon for an on-time order', async () => {
    const cases = service();
    const opened = cases.openCase('C001', demoOrderIds(now).c001OnTime, 'zh');
    cases.customerMessage(opened.id, '外卖到哪了', 'm1');
    await cases.settled(opened.id);

    expect(listCouponsForCase(store.db, opened.id)).toHaveLength(0);
    const last = listMessagesAfter(store.db, opened.id, 0).filter((m) => m.party === 'customer').at(-1);
    expect(last?.text).toBe('骑手预计8分钟后送达');
    cases.close();
  });

  it('stores a retried customer frame once', async () => {
    const cases = service();
    const opened = cases.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    const first = cases.customerMessage(opened.id, '在吗', 'same-id');
    const second = cases.customerMessage(opened.id, '在吗', 'same-id');
    expect(second.duplicate).toBe(true);
    expect(second.seq).toBe(first.seq);
    await cases.settled(opened.id);
    expect(listMessagesAfter(store.db, opened.id, 0).filter((m) => m.direction === 'in' && m.party === 'customer')).toHaveLength(1);
    cases.close();
  });

  it('falls back to strategies on invalid model output', async () => {
    const cases = service(scriptedEngine((prompt) => (prompt.includes('<|sys|>user_agent') ? '骑手马上到！！' : undefined)));
    const opened = cases.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    cases.customerMessage(opened.id, '我的外卖怎么还没到？', 'm1');
    await cases.settled(opened.id);

    const toCustomer = listMessagesAfter(store.db, opened.id, 0).filter((m) => m.party === 'customer' && m.direction === 'out');
    expect(toCustomer.some((m) => m.text.includes('骑手马上到'))).toBe(false);
    expect(toCustomer.at(-1)?.text).toContain('12分钟');
    expect(listCouponsForCase(store.db, opened.id)).toHaveLength(1);
    cases.close();
  });

  it('never issues a coupon the facts do not allow', async () => {
    const couponTurn = JSON.stringify({ intent: 'request_compensation', emotion: 'angry', entities: {}, action: 'issue_coupon', reply: '已发放{coupon_yuan}元优惠券' });
    const cases = service(scriptedEngine((prompt) => (prompt.includes('<|sys|>user_agent') && prompt.includes('comp=no') ? couponTurn : undefined)));
    const opened = cases.openCase('C001', demoOrderIds(now).c001OnTime, 'zh');
    cases.customerMessage(opened.id, '给我发券', 'm1');
    await cases.settled(opened.id);
    expect(listCouponsForCase(store.db, opened.id)).toHaveLength(0);
    cases.close();
  });

  it('hands off when the customer asks for a person', async () => {
    const cases = service();
    const opened = cases.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    cases.customerMessage(opened.id, '转人工', 'm1');
    const snapshot = await cases.settled(opened.id);
    expect(snapshot.value).toBe('handoff');
    expect(cases.getCase(opened.id).status).toBe('handoff');
    cases.close();
  });

  it('resumes a case from its snapshot', async () => {
    const first = service();
    const opened = first.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    first.customerMessage(opened.id, '我的外卖怎么还没到？', 'm1');
    await first.settled(opened.id);
    first.close();

    const second = service();
    expect(second.resumeOpenCases()).toBe(1);
    expect(second.snapshot(opened.id).context.facts.comp).toBe('issued');
    second.customerMessage(opened.id, '还要多久？', 'm2');
    await second.settled(opened.id);
    expect(listCouponsForCase(store.db, opened.id)).toHaveLength(1);
    second.close();
  });

  it('uses the platform ETA when the rider is silent', async () => {
    const silentRider = scriptedEngine((prompt) => (prompt.includes('<|sys|>sim_rider') ? 'not json' : undefined));
    const cases = new CaseService({
      db: store.db,
      config: loadConfig({}, { riderReplyTimeoutMs: 50 }),
      agent: { engine: silentRider, turnTimeoutMs: 5_000 },
      now: () => now,
      isRiderOnline: () => true,
    });
    const opened = cases.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    cases.customerMessage(opened.id, '我的外卖怎么还没到？', 'm1');
    await cases.settled(opened.id);
    expect(cases.snapshot(opened.id).context.facts.eta).toBe(12);
    cases.close();
  });

  it('rejects a message for an unknown case', () => {
    const cases = service();
    expect(() => cases.customerMessage('no-such-case', 'hi')).toThrow(expect.objectContaining({ code: 'not_found' }));
    cases.close();
  });

  it('records every tool call of the case', async () => {
    const cases = service();
    const opened = cases.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    cases.customerMessage(opened.id, '我的外卖怎么还没到？', 'm1');
    await cases.settled(opened.id);
    expect(listToolCallsForCase(store.db, opened.id).map((c) => c.tool)).toEqual(['lookup_order', 'ask_rider_eta', 'record_rider_eta', 'issue_coupon']);
    cases.close();
  });

  it('replies in English for an English case', async () => {
    const engine = scriptedEngine();
    const cases = service(engine);
    const opened = cases.openCase('C001', demoOrderIds(now).c001Late, 'en');
    cases.customerMessage(opened.id, 'Where is my food?', 'm1');
    await cases.settled(opened.id);

    const replies = listMessagesAfter(store.db, opened.id, 0).filter((m) => m.direction === 'out').map((m) => m.text);
    expect(replies.length).toBeGreaterThan(2);
    for (const reply of replies) expect(reply).not.toMatch(/[\u4e00-\u9fff]/);
    expect(replies.at(-1)).toContain('12 minutes');
    expect(replies.at(-1)).toContain('5 yuan');
    expect(engine.prompts.every((prompt) => !prompt.includes(' en\n'))).toBe(true);
    cases.close();
  });

  it('asks the rider when an English reply says so', async () => {
    // The model picks action none, and the strategy chosen from the facts is to ask the rider.
    const idle = '{"intent":"query_delivery","emotion":"calm","entities":{},"action":"none","reply":"请稍等"}';
    const lookup = '{"intent":"query_delivery","emotion":"calm","entities":{},"action":"lookup_order","reply":""}';
    const engine = scriptedEngine((prompt) => {
      if (!prompt.includes('<|sys|>user_agent')) return undefined;
      return prompt.includes('order=none') ? lookup : idle;
    });
    const cases = service(engine);
    const opened = cases.openCase('C001', demoOrderIds(now).c001Late, 'en');
    cases.customerMessage(opened.id, 'When will my order arrive?', 'm1');
    await cases.settled(opened.id);

    const tools = listToolCallsForCase(store.db, opened.id).map((c) => c.tool);
    expect(tools.slice(0, 2)).toEqual(['lookup_order', 'ask_rider_eta']);
    const toCustomer = listMessagesAfter(store.db, opened.id, 0).filter((m) => m.party === 'customer' && m.direction === 'out');
    expect(toCustomer[0]!.text).toContain('checking the arrival time with the rider');
    cases.close();
  });

  it('answers with the busy strategy when a tool fails', async () => {
    // A delivering order without a rider makes ask_rider_eta fail with invalid_state.
    const orderId = demoOrderIds(now).c001Late;
    store.db.update(orders).set({ riderId: null }).where(eq(orders.id, orderId)).run();
    const cases = service();
    const opened = cases.openCase('C001', orderId, 'zh');
    cases.customerMessage(opened.id, '我的外卖怎么还没到？', 'm1');
    const snapshot = await cases.settled(opened.id);

    expect(snapshot.value).toBe('idle');
    const last = listMessagesAfter(store.db, opened.id, 0).at(-1);
    expect(last?.direction).toBe('out');
    expect(last?.text).toContain('系统有点忙');
    cases.close();
  });

  it('sends the ETA after an interim reply', async () => {
    let releaseRider: () => void = () => {};
    const riderHeld = new Promise<void>((resolve) => (releaseRider = resolve));
    const engine = scriptedEngine();
    const slowRider = {
      prompts: engine.prompts,
      async generate(request: Parameters<typeof engine.generate>[0]) {
        if (request.prompt.includes('<|sys|>sim_rider')) await riderHeld;
        return engine.generate(request);
      },
    };
    const cases = service(slowRider);
    const opened = cases.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    cases.customerMessage(opened.id, '我的外卖怎么还没到？', 'm1');
    await vi.waitFor(() => expect(cases.snapshot(opened.id).matches({ rider: 'waiting' })).toBe(true));
    cases.customerMessage(opened.id, '快点啊', 'm2');
    await vi.waitFor(() => expect(cases.snapshot(opened.id).matches({ rider: 'waiting' })).toBe(true));
    releaseRider();
    await cases.settled(opened.id);

    const toCustomer = listMessagesAfter(store.db, opened.id, 0).filter((m) => m.party === 'customer' && m.direction === 'out').map((m) => m.text);
    expect(toCustomer).toEqual(['我马上联系骑手', '正在联系骑手，请稍等', '骑手预计12分钟后送达，已发放5元优惠券']);
    cases.close();
  });

  it('re-arms the rider wait after a restart', async () => {
    const silent = scriptedEngine((prompt) => (prompt.includes('<|sys|>sim_rider') ? 'not json' : undefined));
    const config = loadConfig({}, { riderReplyTimeoutMs: 200 });
    const first = new CaseService({ db: store.db, config, agent: { engine: silent, turnTimeoutMs: 5_000 }, now: () => now, isRiderOnline: () => true });
    const opened = first.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    first.customerMessage(opened.id, '我的外卖怎么还没到？', 'm1');
    await vi.waitFor(() => expect(first.snapshot(opened.id).matches({ rider: 'waiting' })).toBe(true));
    first.close();

    const second = new CaseService({ db: store.db, config, agent: { engine: silent, turnTimeoutMs: 5_000 }, now: () => now, isRiderOnline: () => true });
    second.resumeOpenCases();
    await second.settled(opened.id);
    expect(second.snapshot(opened.id).context.facts.eta).toBe(12);
    expect(listCouponsForCase(store.db, opened.id)).toHaveLength(1);
    second.close();
  });

  it('answers a message stored before a crash', async () => {
    const first = service();
    const opened = first.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    first.close();
    // Stored, but the process died before the machine saw it.
    appendMessage(store.db, { caseId: opened.id, party: 'customer', direction: 'in', text: '我的外卖怎么还没到？', clientMsgId: 'customer:m1', now });

    const second = service();
    second.resumeOpenCases();
    await vi.waitFor(() => expect(listCouponsForCase(store.db, opened.id)).toHaveLength(1));
    await second.settled(opened.id);
    second.close();
  });

  it('keeps client ids apart from runtime keys', async () => {
    const cases = service();
    const opened = cases.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    cases.customerMessage(opened.id, '我的外卖怎么还没到？', `out:${opened.id}:t1:s1`);
    await cases.settled(opened.id);
    const toCustomer = listMessagesAfter(store.db, opened.id, 0).filter((m) => m.party === 'customer' && m.direction === 'out');
    expect(toCustomer).toHaveLength(2);
    cases.close();
  });
});
