/** Derives the user-facing dialogue's facts, and their prompt form, from platform data. */
import type { Facts } from '../agents/prompt.ts';
import type { SlotValues } from '../agents/parse.ts';
import type { DeliveryFacts } from './strategies.ts';

const minuteMs = 60_000;

/**
 * Adds lateness and the compensation state once the ETA is known: `late` is how many minutes
 * after the promised time the order is expected, and a coupon is due past the threshold unless
 * one was already issued in this case.
 */
export function withLateness(
  facts: DeliveryFacts,
  order: { promisedAt: number },
  now: number,
  policy: { lateThresholdMin: number; couponsIssuedYuan: number },
): DeliveryFacts {
  if (typeof facts.eta !== 'number') return facts;
  const late = Math.max(0, Math.round((now + facts.eta * minuteMs - order.promisedAt) / minuteMs));
  let comp: DeliveryFacts['comp'] = 'no';
  if (policy.couponsIssuedYuan > 0) comp = 'issued';
  else if (late > policy.lateThresholdMin) comp = 'due';
  return { ...facts, late, comp };
}

/** Renders the facts line the model was trained on, with only the keys that matter in each state. */
export function promptFacts(facts: DeliveryFacts): Facts {
  if (facts.order === 'none') return { order: 'none' };
  if (facts.order !== 'delivering') return { order: facts.order === 'placed' ? 'preparing' : facts.order };
  if (typeof facts.eta !== 'number') return { order: 'delivering', eta: facts.eta };
  return { order: 'delivering', eta: facts.eta, late: facts.late, comp: facts.comp };
}

export function orderTail(orderId: string): string {
  return orderId.slice(-4);
}

export function replySlotValues(facts: DeliveryFacts, orderId: string, couponYuan: number | undefined): SlotValues {
  const slots: SlotValues = { order_tail: orderTail(orderId), late_min: facts.late };
  if (typeof facts.eta === 'number') slots.eta_min = facts.eta;
  if (couponYuan !== undefined) slots.coupon_yuan = couponYuan;
  return slots;
}
