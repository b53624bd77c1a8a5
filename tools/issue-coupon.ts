/**
 * issue_coupon: compensates the customer with a coupon, within the per-case compensation
 * limit. Amounts arrive in yuan and are stored in fen.
 */
import { z } from 'zod';
import { insertCoupon, sumCouponFenForCase } from '../runtime/store/coupons.ts';
import { ToolError } from './errors.ts';
import { orderIdSchema, requireOrder } from './order-access.ts';
import { defineTool } from './tool.ts';

export interface IssuedCoupon {
  couponId: string;
  orderId: string;
  amountYuan: number;
  /** All coupons of the case, this one included. */
  caseTotalYuan: number;
  /** Amount the case may still issue before it reaches its limit. */
  remainingYuan: number;
}

const fenPerYuan = 100;

export const issueCouponTool = defineTool({
  name: 'issue_coupon',
  allowedRoles: ['user_agent', 'operator'],
  inputSchema: z.strictObject({
    orderId: orderIdSchema,
    // Whole fen only: 0.01 is the smallest amount a coupon can carry.
    amountYuan: z.number().positive().multipleOf(0.01),
  }),
  run({ orderId, amountYuan }, ctx): IssuedCoupon {
    const order = requireOrder(ctx, orderId);
    const amountFen = Math.round(amountYuan * fenPerYuan);

    const limitFen = Math.round(ctx.limits.maxCompensationYuanPerCase * fenPerYuan);
    const issuedFen = sumCouponFenForCase(ctx.db, ctx.case.id);
    if (issuedFen + amountFen > limitFen) {
      throw new ToolError(
        'limit_exceeded',
        `a coupon of ${amountYuan} yuan would bring case ${ctx.case.id} to ${(issuedFen + amountFen) / fenPerYuan} yuan, ` +
          `above its limit of ${limitFen / fenPerYuan} yuan; at most ${(limitFen - issuedFen) / fenPerYuan} yuan can still be issued`,
      );
    }

    const coupon = insertCoupon(ctx.db, {
      caseId: ctx.case.id,
      orderId: order.id,
      customerId: order.customerId,
      amountFen,
      idempotencyKey: ctx.idempotencyKey,
      now: ctx.now,
    });

    const caseTotalFen = issuedFen + amountFen;
    return {
      couponId: coupon.id,
      orderId: order.id,
      amountYuan: amountFen / fenPerYuan,
      caseTotalYuan: caseTotalFen / fenPerYuan,
      remainingYuan: (limitFen - caseTotalFen) / fenPerYuan,
    };
  },
});
