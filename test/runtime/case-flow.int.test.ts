import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../engine/engine.ts';
import { CaseService } from '../../runtime/case-service.ts';
import { loadConfig } from '../../runtime/config.ts';
import { listCouponsForCase } from '../../runtime/store/coupons.ts';
import { openStore, type Store } from '../../runtime/store/db.ts';
import { listMessagesAfter } from '../../runtime/store/messages.ts';
import { loadSnapshot } from '../../runtime/store/snapshots.ts';
import { demoOrderIds, seedDemoData } from '../../runtime/store/seed.ts';
import { defaultModelDir } from '../support/model.ts';

let engine: Engine;
let dir: string;

beforeAll(async () => {
  engine = await Engine.load({ modelDir: defaultModelDir });
  dir = mkdtempSync(join(tmpdir(), 'sanfang-flow-'));
});

afterAll(async () => {
  await engine.close();
  rmSync(dir, { recursive: true, force: true });
});

function openCases(name: string, riderOnline: boolean): { store: Store; cases: CaseService; now: number } {
  const store = openStore(join(dir, `${name}.db`));
  const now = Date.now();
  seedDemoData(store.db, now);
  const cases = new CaseService({
    db: store.db,
    config: loadConfig({}, { riderReplyTimeoutMs: 20_000 }),
    agent: { engine, turnTimeoutMs: 15_000 },
    isRiderOnline: () => riderOnline,
  });
  return { store, cases, now };
}

/** Waits until the case has stored a message from the agent to the rider. */
async function riderQuestion(store: Store, caseId: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!listMessagesAfter(store.db, caseId, 0).some((m) => m.party === 'rider' && m.direction === 'out')) {
    if (Date.now() > deadline) throw new Error('the rider was not asked within 20 s');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('late-order case with the real model', () => {
  it('tells the human rider ETA and compensates', async () => {
    const { store, cases, now } = openCases('human-rider', true);
    const opened = cases.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    cases.customerMessage(opened.id, '我的外卖怎么还没到？', 'c1');

    await riderQuestion(store, opened.id);
    cases.riderMessage(opened.id, 'R001', '路上有点堵，大概还有15分钟', 'r1');
    await cases.settled(opened.id);

    const messages = listMessagesAfter(store.db, opened.id, 0);
    expect(messages.map((m) => m.seq)).toEqual(messages.map((_, i) => i + 1));
    const toCustomer = messages.filter((m) => m.party === 'customer' && m.direction === 'out').map((m) => m.text);
    expect(toCustomer.at(-1)).toContain('15分钟');
    expect(listCouponsForCase(store.db, opened.id).map((c) => c.amountFen)).toEqual([500]);
    expect(cases.snapshot(opened.id).context.facts).toMatchObject({ eta: 15, comp: 'issued' });
    expect(loadSnapshot(store.db, opened.id)).toBeDefined();
    cases.close();
    store.close();
  });

  it('keeps to one coupon across follow-ups', async () => {
    const { store, cases, now } = openCases('follow-up', false);
    const opened = cases.openCase('C001', demoOrderIds(now).c001Late, 'zh');
    cases.customerMessage(opened.id, '外卖到哪了，我都等了一个小时了', 'c1');
    await cases.settled(opened.id);
    cases.customerMessage(opened.id, '还要多久啊', 'c2');
    await cases.settled(opened.id);

    expect(listCouponsForCase(store.db, opened.id)).toHaveLength(1);
    const eta = cases.snapshot(opened.id).context.facts.eta;
    expect(typeof eta).toBe('number');
    const toCustomer = listMessagesAfter(store.db, opened.id, 0).filter((m) => m.party === 'customer' && m.direction === 'out');
    expect(toCustomer.at(-1)?.text).toContain(`${eta}`);
    cases.close();
    store.close();
  });

  it('issues no coupon for an on-time order', async () => {
    const { store, cases, now } = openCases('on-time', false);
    const opened = cases.openCase('C001', demoOrderIds(now).c001OnTime, 'zh');
    cases.customerMessage(opened.id, '骑手到哪了', 'c1');
    await cases.settled(opened.id);

    expect(listCouponsForCase(store.db, opened.id)).toHaveLength(0);
    expect(typeof cases.snapshot(opened.id).context.facts.eta).toBe('number');
    cases.close();
    store.close();
  });
});
