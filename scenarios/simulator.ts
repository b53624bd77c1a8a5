/**
 * Plays a scenario against the real case runtime over a fresh SQLite database. A simulated
 * customer and a simulated rider both speak through the engine. The final database state is
 * then checked against the scenario's expectations.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runAgentTurn } from '../agents/agent.ts';
import { promptLocale } from '../agents/prompt.ts';
import type { TextGenerator } from '../engine/engine.ts';
import { CaseService } from '../runtime/case-service.ts';
import { transcriptWith } from '../runtime/case-turns.ts';
import { loadConfig, type Config } from '../runtime/config.ts';
import { listCouponsForCase } from '../runtime/store/coupons.ts';
import { openStore } from '../runtime/store/db.ts';
import { listMessagesAfter } from '../runtime/store/messages.ts';
import { demoOrderIds, seedDemoData } from '../runtime/store/seed.ts';
import { getCase } from '../runtime/store/cases.ts';
import type { Scenario } from './scenario.ts';

export interface TranscriptEntry {
  party: string;
  direction: 'in' | 'out';
  text: string;
}

export interface CheckResult {
  name: string;
  passed: boolean;
  expected: string;
  actual: string;
}

export interface SimulationReport {
  scenario: string;
  passed: boolean;
  checks: CheckResult[];
  transcript: TranscriptEntry[];
  customerTurns: number;
  durationMs: number;
}

export interface SimulateOptions {
  engine: TextGenerator;
  config?: Partial<Config>;
  /** SQLite file to use; a temporary one is created and removed when absent. */
  dbPath?: string;
  now?: number;
}

export async function simulate(scenario: Scenario, options: SimulateOptions): Promise<SimulationReport> {
  const started = performance.now();
  const tempDir = options.dbPath ? undefined : mkdtempSync(join(tmpdir(), 'sanfang-sim-'));
  const store = openStore(options.dbPath ?? join(tempDir!, 'simulation.db'));
  const config = loadConfig({}, { riderReplyTimeoutMs: 30_000, ...options.config });
  const now = options.now ?? Date.now();
  const agent = { engine: options.engine, turnTimeoutMs: config.turnTimeoutMs };
  const cases = new CaseService({ db: store.db, config, agent, isRiderOnline: () => false });

  try {
    seedDemoData(store.db, now);
    const orderId = demoOrderIds(now)[scenario.customer.order];
    const opened = cases.openCase(scenario.customer.id, orderId, scenario.locale);

    let customerTurns = 0;
    for (let turn = 0; turn < scenario.customer.maxTurns; turn++) {
      const transcript = transcriptWith(store.db, opened.id, 'customer');
      const result = await runAgentTurn(agent, {
        role: 'sim_customer',
        locale: promptLocale(scenario.locale),
        facts: { goal: scenario.customer.goal, mood: scenario.customer.mood },
        transcript,
        temperature: 0.7,
        seed: scenario.seed + turn,
        priority: 'simulation',
      });
      // A simulated customer that produces no valid turn opens with the scripted line, or stops.
      if (result.status !== 'ok' && turn > 0) break;
      if (result.status === 'ok' && result.turn.action === 'end' && turn > 0) break;
      const text = result.status === 'ok' && result.reply.trim() ? result.reply : scenario.customer.opening;

      cases.customerMessage(opened.id, text, `sim-${turn}`);
      customerTurns++;
      await cases.settled(opened.id, 120_000);
      if (getCase(store.db, opened.id)?.status === 'handoff') break;
    }

    const messages = listMessagesAfter(store.db, opened.id, 0);
    const coupons = listCouponsForCase(store.db, opened.id);
    const couponYuan = coupons.reduce((sum, c) => sum + c.amountFen, 0) / 100;
    const facts = cases.snapshot(opened.id).context.facts;
    const toCustomer = messages.filter((m) => m.party === 'customer' && m.direction === 'out').map((m) => m.text);
    const etaCommunicated = typeof facts.eta === 'number' && toCustomer.some((text) => text.includes(`${facts.eta}分钟`) || text.includes(`${facts.eta} minutes`));
    const handedOff = getCase(store.db, opened.id)?.status === 'handoff';

    const checks: CheckResult[] = [
      { name: 'coupon issued', passed: coupons.length > 0 === scenario.expect.couponIssued, expected: String(scenario.expect.couponIssued), actual: String(coupons.length > 0) },
      { name: 'ETA communicated', passed: etaCommunicated === scenario.expect.etaCommunicated, expected: String(scenario.expect.etaCommunicated), actual: typeof facts.eta === 'number' ? `${etaCommunicated} (ETA ${facts.eta} min)` : `${etaCommunicated} (no ETA)` },
      { name: 'handoff', passed: handedOff === scenario.expect.handoff, expected: String(scenario.expect.handoff), actual: String(handedOff) },
    ];
    if (scenario.expect.couponYuan !== undefined) {
      checks.push({ name: 'coupon total (yuan)', passed: couponYuan === scenario.expect.couponYuan, expected: String(scenario.expect.couponYuan), actual: String(couponYuan) });
    }

    return {
      scenario: scenario.name,
      passed: checks.every((check) => check.passed),
      checks,
      transcript: messages.map((m) => ({ party: m.party, direction: m.direction, text: m.text })),
      customerTurns,
      durationMs: performance.now() - started,
    };
  } finally {
    cases.close();
    store.close();
    if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  }
}
