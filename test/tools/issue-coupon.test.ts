import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listCouponsForCase, sumCouponFenForCase } from '../../runtime/store/coupons.ts';
import { listToolCallsForCase } from '../../runtime/store/tool-calls.ts';
import { openToolFixture, orderIds, toolErrorCode, type ToolFixture } from './fixture.ts';

describe('issue_coupon', () => {
  let fixture: ToolFixture;

  beforeEach(() => {
    fixture = openToolFixture();
  });

  afterEach(() => {
    fixture.cleanup();
  });

  function couponCount(): number {
    return listCouponsForCase(fixture.store.db, fixture.case.id).length;
  }

  it('issues a coupon in fen', () => {
    const { output, replayed } = fixture.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 3.5 }, 'user_agent');
    const [coupon] = listCouponsForCase(fixture.store.db, fixture.case.id);

    expect(replayed).toBe(false);
    expect(output).toMatchObject({ orderId: orderIds.c001Late, amountYuan: 3.5, caseTotalYuan: 3.5, remainingYuan: 6.5 });
    expect(coupon?.id).toBe(output.couponId);
    expect(coupon?.amountFen).toBe(350);
    expect(coupon?.customerId).toBe('C001');
  });

  it('lets operators issue coupons', () => {
    const { output } = fixture.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 5 }, 'operator');

    expect(output.amountYuan).toBe(5);
    expect(couponCount()).toBe(1);
  });

  it('denies the rider agent and writes no coupon', () => {
    const code = toolErrorCode(() =>
      fixture.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 1 }, 'rider_agent'),
    );
    const [call] = listToolCallsForCase(fixture.store.db, fixture.case.id);

    expect(code).toBe('permission_denied');
    expect(couponCount()).toBe(0);
    expect(call?.status).toBe('error');
    expect(call?.errorCode).toBe('permission_denied');
  });

  it('denies the rider agent even with bad input', () => {
    const code = toolErrorCode(() => fixture.call('issue_coupon', { amountYuan: 'lots' }, 'rider_agent'));

    expect(code).toBe('permission_denied');
  });

  it('stops at the per-case limit', () => {
    fixture.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 6 }, 'user_agent');

    const code = toolErrorCode(() =>
      fixture.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 4.01 }, 'user_agent'),
    );

    expect(code).toBe('limit_exceeded');
    expect(sumCouponFenForCase(fixture.store.db, fixture.case.id)).toBe(600);
    expect(couponCount()).toBe(1);
  });

  it('allows reaching the limit exactly', () => {
    fixture.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 6 }, 'user_agent');
    const { output } = fixture.call('issue_coupon', { orderId: orderIds.c001OnTime, amountYuan: 4 }, 'user_agent');

    expect(output.caseTotalYuan).toBe(10);
    expect(output.remainingYuan).toBe(0);
    expect(toolErrorCode(() => fixture.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 0.01 }, 'user_agent'))).toBe(
      'limit_exceeded',
    );
  });

  it('applies the limit to operators too', () => {
    const code = toolErrorCode(() =>
      fixture.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 10.5 }, 'operator'),
    );

    expect(code).toBe('limit_exceeded');
    expect(couponCount()).toBe(0);
  });

  it('reads the limit from config', () => {
    const generous = openToolFixture({ maxCompensationYuanPerCase: 30 });
    try {
      const { output } = generous.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 25 }, 'user_agent');

      expect(output.remainingYuan).toBe(5);
    } finally {
      generous.cleanup();
    }
  });

  it('issues one coupon per key', () => {
    const input = { orderId: orderIds.c001Late, amountYuan: 5 };

    const first = fixture.call('issue_coupon', input, 'user_agent', 'turn-7-coupon');
    const retry = fixture.call('issue_coupon', { amountYuan: 5, orderId: orderIds.c001Late }, 'user_agent', 'turn-7-coupon');

    expect(retry.output).toEqual(first.output);
    expect(retry.replayed).toBe(true);
    expect(couponCount()).toBe(1);
    expect(listToolCallsForCase(fixture.store.db, fixture.case.id)).toHaveLength(1);
  });

  it('replays a limit error for its key', () => {
    fixture.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 8 }, 'user_agent');
    const input = { orderId: orderIds.c001Late, amountYuan: 5 };

    const first = toolErrorCode(() => fixture.call('issue_coupon', input, 'user_agent', 'over-limit'));
    const retry = toolErrorCode(() => fixture.call('issue_coupon', input, 'user_agent', 'over-limit'));

    expect(first).toBe('limit_exceeded');
    expect(retry).toBe('limit_exceeded');
    expect(listToolCallsForCase(fixture.store.db, fixture.case.id)).toHaveLength(2);
  });

  it('rejects a key reused for another amount', () => {
    fixture.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 2 }, 'user_agent', 'reused');

    const code = toolErrorCode(() =>
      fixture.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 3 }, 'user_agent', 'reused'),
    );

    expect(code).toBe('invalid_input');
    expect(sumCouponFenForCase(fixture.store.db, fixture.case.id)).toBe(200);
  });

  it('rejects invalid amounts', () => {
    const inputs: unknown[] = [
      { orderId: orderIds.c001Late, amountYuan: -1 },
      { orderId: orderIds.c001Late, amountYuan: 0 },
      { orderId: orderIds.c001Late, amountYuan: '5' },
      { orderId: orderIds.c001Late, amountYuan: 1.005 },
      { orderId: orderIds.c001Late, amountYuan: Number.NaN },
      { orderId: orderIds.c001Late, amountYuan: Number.POSITIVE_INFINITY },
      { orderId: orderIds.c001Late },
      { orderId: 7, amountYuan: 1 },
    ];
    for (const input of inputs) {
      expect(toolErrorCode(() => fixture.call('issue_coupon', input, 'user_agent'))).toBe('invalid_input');
    }

    expect(couponCount()).toBe(0);
  });

  it('accepts amounts in whole fen', () => {
    const { output } = fixture.call('issue_coupon', { orderId: orderIds.c001Late, amountYuan: 3.33 }, 'user_agent');
    const [coupon] = listCouponsForCase(fixture.store.db, fixture.case.id);

    expect(output.amountYuan).toBe(3.33);
    expect(coupon?.amountFen).toBe(333);
  });

  it('rejects an unknown order', () => {
    const code = toolErrorCode(() =>
      fixture.call('issue_coupon', { orderId: 'D20990101999', amountYuan: 1 }, 'user_agent'),
    );

    expect(code).toBe('not_found');
    expect(couponCount()).toBe(0);
  });

  it("rejects another customer's order", () => {
    const code = toolErrorCode(() =>
      fixture.call('issue_coupon', { orderId: orderIds.c003OnTime, amountYuan: 1 }, 'user_agent'),
    );

    expect(code).toBe('permission_denied');
    expect(couponCount()).toBe(0);
  });
});
