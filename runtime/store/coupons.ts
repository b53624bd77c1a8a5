/** Coupons issued to customers as compensation, each tied to the case that issued it. */
import { randomUUID } from 'node:crypto';
import { asc, eq, sql, sum } from 'drizzle-orm';
import type { Db } from './db.ts';
import { withStoreErrors } from './errors.ts';
import { coupons, type Coupon } from './schema.ts';

export interface NewCoupon {
  caseId: string;
  orderId: string;
  customerId: string;
  amountFen: number;
  idempotencyKey: string;
  now: number;
}

/** Stores a coupon and returns it. Throws StoreError 'conflict' when the idempotency key is already stored. */
export function insertCoupon(db: Db, coupon: NewCoupon): Coupon {
  const { caseId, orderId, customerId, amountFen, idempotencyKey, now } = coupon;

  return withStoreErrors(`insert coupon for case ${caseId}`, () =>
    db
      .insert(coupons)
      .values({ id: randomUUID(), caseId, orderId, customerId, amountFen, idempotencyKey, createdAt: now })
      .returning()
      .get(),
  );
}

/** Returns the total in fen of the coupons issued for a case; 0 when there are none. */
export function sumCouponFenForCase(db: Db, caseId: string): number {
  const row = withStoreErrors(`sum coupons of case ${caseId}`, () =>
    db
      .select({ totalFen: sum(coupons.amountFen).mapWith(Number) })
      .from(coupons)
      .where(eq(coupons.caseId, caseId))
      .get(),
  );

  return row?.totalFen ?? 0;
}

/** Lists a case's coupons in the order they were issued. */
export function listCouponsForCase(db: Db, caseId: string): Coupon[] {
  return withStoreErrors(`list coupons of case ${caseId}`, () =>
    db.select().from(coupons).where(eq(coupons.caseId, caseId)).orderBy(asc(coupons.createdAt), sql`rowid`).all(),
  );
}
