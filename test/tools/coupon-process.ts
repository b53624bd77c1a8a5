/**
 * Child process for the concurrency tests: opens its own connection to the store, reports
 * 'ready', and issues one coupon when the parent sends 'go'. Node 20 worker threads do not
 * inherit the TypeScript loader, so the tests fork processes instead.
 */
import { openStore } from '../../runtime/store/db.ts';
import { ToolError } from '../../tools/errors.ts';
import { callTool } from '../../tools/index.ts';
import { defaultToolLimits } from '../../tools/limits.ts';

export interface CouponRequest {
  path: string;
  caseId: string;
  orderId: string;
  amountYuan: number;
  idempotencyKey: string;
  now: number;
}

export type CouponOutcome = { ok: true; couponId: string; replayed: boolean } | { ok: false; code: string };

function issueCoupon(request: CouponRequest): CouponOutcome {
  const store = openStore(request.path);
  try {
    const { output, replayed } = callTool(
      'issue_coupon',
      { orderId: request.orderId, amountYuan: request.amountYuan },
      { caseId: request.caseId, role: 'user_agent', idempotencyKey: request.idempotencyKey, now: request.now },
      { db: store.db, limits: defaultToolLimits },
    );
    return { ok: true, couponId: output.couponId, replayed };
  } catch (error) {
    if (error instanceof ToolError) {
      return { ok: false, code: error.code };
    }
    throw error;
  } finally {
    store.close();
  }
}

const requestArgument = process.argv[2];
if (requestArgument !== undefined && process.send !== undefined) {
  const request = JSON.parse(requestArgument) as CouponRequest;

  process.once('message', () => {
    process.send?.(issueCoupon(request), () => process.disconnect());
  });
  process.send('ready');
}
