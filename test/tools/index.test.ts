import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listCouponsForCase } from '../../runtime/store/coupons.ts';
import { listToolCallsForCase } from '../../runtime/store/tool-calls.ts';
import { callTool, toolNames } from '../../tools/index.ts';
import { defaultToolLimits } from '../../tools/limits.ts';
import type { CouponOutcome, CouponRequest } from './coupon-process.ts';
import { fixedNow, openToolFixture, orderIds, toolErrorCode, type ToolFixture } from './fixture.ts';

describe('callTool', () => {
  let fixture: ToolFixture;

  beforeEach(() => {
    fixture = openToolFixture();
  });

  afterEach(() => {
    fixture.cleanup();
  });

  function calls() {
    return listToolCallsForCase(fixture.store.db, fixture.case.id);
  }

  it('lists the four tools', () => {
    expect([...toolNames].sort()).toEqual(['ask_rider_eta', 'issue_coupon', 'lookup_order', 'record_rider_eta']);
  });

  it('rejects an unknown tool', () => {
    const code = toolErrorCode(() => fixture.call('refund_everything', {}, 'user_agent'));

    expect(code).toBe('not_found');
    expect(calls()[0]).toMatchObject({ tool: 'refund_everything', status: 'error', errorCode: 'not_found' });
  });

  it('rejects an unknown case', () => {
    const code = toolErrorCode(() =>
      callTool(
        'lookup_order',
        { orderId: orderIds.c001Late },
        { caseId: 'missing', role: 'user_agent', idempotencyKey: 'k', now: fixedNow },
        { db: fixture.store.db, limits: defaultToolLimits },
      ),
    );

    expect(code).toBe('not_found');
  });

  it('rejects an empty idempotency key', () => {
    const code = toolErrorCode(() => fixture.call('lookup_order', { orderId: orderIds.c001Late }, 'user_agent', ''));

    expect(code).toBe('invalid_input');
    expect(calls()).toHaveLength(0);
  });

  it('records ok and failed calls', () => {
    fixture.call('lookup_order', { orderId: orderIds.c001Late }, 'user_agent', 'ok-call');
    toolErrorCode(() => fixture.call('lookup_order', { orderId: 5 }, 'user_agent', 'bad-call'));

    const [ok, failed] = calls();

    expect(ok).toMatchObject({ idempotencyKey: 'ok-call', status: 'ok', errorCode: null, createdAt: fixedNow });
    expect(ok?.output).toMatchObject({ view: 'service', orderId: orderIds.c001Late });
    expect(failed).toMatchObject({ idempotencyKey: 'bad-call', status: 'error', errorCode: 'invalid_input', output: null });
    expect(failed?.input).toEqual({ orderId: 5 });
  });

  it('replays the stored output', () => {
    const first = fixture.call('lookup_order', { orderId: orderIds.c001Late }, 'user_agent', 'lookup-1');
    const retry = fixture.call('lookup_order', { orderId: orderIds.c001Late }, 'user_agent', 'lookup-1');

    expect(first.replayed).toBe(false);
    expect(retry.replayed).toBe(true);
    expect(retry.output).toEqual(first.output);
    expect(calls()).toHaveLength(1);
  });

  it('rejects a key reused by another tool or role', () => {
    fixture.call('lookup_order', { orderId: orderIds.c001Late }, 'user_agent', 'shared');

    const otherTool = toolErrorCode(() => fixture.call('ask_rider_eta', { orderId: orderIds.c001Late }, 'user_agent', 'shared'));
    const otherRole = toolErrorCode(() => fixture.call('lookup_order', { orderId: orderIds.c001Late }, 'rider_agent', 'shared'));

    expect(otherTool).toBe('invalid_input');
    expect(otherRole).toBe('invalid_input');
    expect(calls()).toHaveLength(1);
  });

  it('records an unserialisable input as null', () => {
    const code = toolErrorCode(() => fixture.call('lookup_order', { orderId: 10n }, 'user_agent'));

    expect(code).toBe('invalid_input');
    expect(calls()[0]?.input).toBeNull();
  });
});

describe('callTool across connections', () => {
  let fixture: ToolFixture;

  beforeEach(() => {
    fixture = openToolFixture();
  });

  afterEach(() => {
    fixture.cleanup();
  });

  // Forks one process per key, each with its own connection, and starts their calls together.
  async function issueConcurrently(keys: string[], amountYuan: number): Promise<CouponOutcome[]> {
    const children = keys.map((idempotencyKey) => {
      const request: CouponRequest = {
        path: fixture.path,
        caseId: fixture.case.id,
        orderId: orderIds.c001Late,
        amountYuan,
        idempotencyKey,
        now: fixedNow,
      };
      return fork(childScript, [JSON.stringify(request)], { execArgv: ['--import', 'tsx'] });
    });

    try {
      await Promise.all(children.map((child) => nextMessage(child)));
      const outcomes = children.map((child) => nextMessage(child) as Promise<CouponOutcome>);
      for (const child of children) {
        child.send('go');
      }
      return await Promise.all(outcomes);
    } finally {
      for (const child of children) {
        child.kill();
      }
    }
  }

  it('issues one coupon for one key', async () => {
    const outcomes = await issueConcurrently(['same', 'same', 'same', 'same'], 3);
    const couponIds = new Set(outcomes.map((outcome) => (outcome.ok ? outcome.couponId : outcome.code)));

    expect(outcomes.every((outcome) => outcome.ok)).toBe(true);
    expect(couponIds.size).toBe(1);
    expect(outcomes.filter((outcome) => outcome.ok && !outcome.replayed)).toHaveLength(1);
    expect(listCouponsForCase(fixture.store.db, fixture.case.id)).toHaveLength(1);
  });

  it('holds the limit across connections', async () => {
    const outcomes = await issueConcurrently(['a', 'b', 'c', 'd'], 4);
    const codes = outcomes.map((outcome) => (outcome.ok ? 'ok' : outcome.code)).sort();

    expect(codes).toEqual(['limit_exceeded', 'limit_exceeded', 'ok', 'ok']);
    expect(listCouponsForCase(fixture.store.db, fixture.case.id)).toHaveLength(2);
  });
});

const childScript = fileURLToPath(new URL('./coupon-process.ts', import.meta.url));

// Resolves with the child's next message; rejects if it exits first.
function nextMessage(child: ChildProcess): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`child process exited with code ${code} before replying`));
    child.once('exit', onExit);
    child.once('message', (message) => {
      child.off('exit', onExit);
      resolve(message);
    });
  });
}
