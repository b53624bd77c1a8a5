import { describe, expect, it } from 'vitest';
import { fallbackDecision, listStrategies, renderStrategy, strategyForTurn, type DeliveryFacts, type StrategyId } from '../../runtime/strategies.ts';

const slots = { eta_min: 12, late_min: 20, coupon_yuan: 5, order_tail: '0001' };

describe('strategy library', () => {
  it('renders every strategy in both locales', () => {
    for (const strategy of listStrategies()) {
      const zh = renderStrategy(strategy.id as StrategyId, 'zh', slots);
      const en = renderStrategy(strategy.id as StrategyId, 'en', slots);
      expect(zh).toMatch(/[\u4e00-\u9fff]/);
      expect(en).not.toMatch(/[\u4e00-\u9fff]/);
      expect(zh).not.toContain('{');
      expect(en).not.toContain('{');
    }
  });

  it('rejects a render without its slots', () => {
    expect(() => renderStrategy('late.eta', 'zh', {})).toThrow(/eta_min/);
  });

  it('has unique ids', () => {
    const ids = listStrategies().map((s) => s.id);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('fallbackDecision', () => {
  const base: DeliveryFacts = { order: 'delivering', eta: 'unknown', late: 0, comp: 'no' };
  it.each([
    [{ ...base, order: 'none' }, 'lookup_order', null],
    [{ ...base, order: 'preparing' }, 'none', 'order.preparing'],
    [{ ...base, order: 'delivered' }, 'none', 'order.delivered'],
    [{ ...base, order: 'cancelled' }, 'none', 'order.cancelled'],
    [base, 'ask_rider_eta', 'late.ask_rider'],
    [{ ...base, eta: 'asked' }, 'none', 'late.still_asking'],
    [{ ...base, eta: 9, comp: 'due' }, 'issue_coupon', 'late.eta_coupon'],
    [{ ...base, eta: 9, comp: 'issued' }, 'none', 'late.eta_coupon_issued'],
    [{ ...base, eta: 9 }, 'none', 'late.eta'],
  ] as [DeliveryFacts, string, string | null][])('decides %o', (facts, action, strategy) => {
    expect(fallbackDecision(facts)).toEqual({ action, strategy });
  });
});

describe('strategyForTurn', () => {
  it('maps greetings and actions', () => {
    const facts: DeliveryFacts = { order: 'none', eta: 'unknown', late: 0, comp: 'no' };
    expect(strategyForTurn('none', 'greeting', facts)).toBe('greeting');
    expect(strategyForTurn('handoff', 'request_human', facts)).toBe('handoff');
    expect(strategyForTurn('lookup_order', 'query_delivery', facts)).toBeNull();
    expect(strategyForTurn('none', 'query_delivery', { ...facts, order: 'delivering', eta: 7 })).toBe('late.eta');
  });
});
