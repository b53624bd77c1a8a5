import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../engine/engine.ts';
import { loadScenario, parseScenario } from '../../scenarios/scenario.ts';
import { simulate } from '../../scenarios/simulator.ts';
import { defaultModelDir } from '../support/model.ts';

describe('scenario files', () => {
  it('loads the committed scenarios', () => {
    expect(loadScenario('scenarios/delivery/late-order.yaml').expect.couponIssued).toBe(true);
    expect(loadScenario('scenarios/delivery/on-time-order.yaml').expect.couponIssued).toBe(false);
  });

  it('rejects invalid YAML', () => {
    expect(() => parseScenario('name: [unclosed', 'bad.yaml')).toThrow(expect.objectContaining({ code: 'invalid_yaml' }));
  });

  it('names the invalid field', () => {
    const source = 'name: x\ncustomer:\n  order: c001Late\nexpect:\n  couponIssued: maybe\n';
    expect(() => parseScenario(source, 'bad.yaml')).toThrow(expect.objectContaining({ code: 'invalid_scenario', message: expect.stringContaining('expect.couponIssued') }));
  });

  it('rejects an unknown order', () => {
    const source = 'name: x\ncustomer:\n  order: c999\nexpect:\n  couponIssued: true\n';
    expect(() => parseScenario(source, 'bad.yaml')).toThrow(expect.objectContaining({ code: 'invalid_scenario' }));
  });

  it('rejects unknown keys', () => {
    const source = 'name: x\ncustomer:\n  order: c001Late\nexpect:\n  couponIssued: true\nsurprise: 1\n';
    expect(() => parseScenario(source, 'bad.yaml')).toThrow(expect.objectContaining({ code: 'invalid_scenario' }));
  });

  it('reports a missing file', () => {
    expect(() => loadScenario('scenarios/none.yaml')).toThrow(expect.objectContaining({ code: 'not_found' }));
  });
});

describe('simulate with the real engine', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.load({ modelDir: defaultModelDir });
  });
  afterAll(async () => {
    await engine.close();
  });

  it('passes the late-order scenario', async () => {
    const report = await simulate(loadScenario('scenarios/delivery/late-order.yaml'), { engine });
    expect(report.checks.filter((check) => !check.passed)).toEqual([]);
    expect(report.passed).toBe(true);
    expect(report.transcript.some((entry) => entry.party === 'rider' && entry.direction === 'in')).toBe(true);
  });

  it('passes the on-time scenario', async () => {
    const report = await simulate(loadScenario('scenarios/delivery/on-time-order.yaml'), { engine });
    expect(report.checks.filter((check) => !check.passed)).toEqual([]);
  });

  it('fails a scenario whose expectation is wrong', async () => {
    const scenario = { ...loadScenario('scenarios/delivery/on-time-order.yaml'), expect: { couponIssued: true, etaCommunicated: true, handoff: false } };
    const report = await simulate(scenario, { engine });
    expect(report.passed).toBe(false);
    expect(report.checks.find((check) => check.name === 'coupon issued')?.passed).toBe(false);
  });
});
