/**
 * lookup_order: the order as the calling role needs it. Customer-service roles get the
 * order's contents, rider and lateness. The rider agent gets the addresses to deliver
 * between. Every view carries the customer's phone masked.
 */
import { z } from 'zod';
import { getCustomer, getMerchant, getRider, listOrderStatusHistory } from '../runtime/store/orders.ts';
import type { Order, OrderItem, OrderStatus } from '../runtime/store/schema.ts';
import { ToolError } from './errors.ts';
import { orderIdSchema, requireOrder } from './order-access.ts';
import { maskPhone } from './privacy.ts';
import { defineTool, type ToolRunContext } from './tool.ts';

/** The view for the user-facing agent and operators. */
export interface ServiceOrderView {
  view: 'service';
  orderId: string;
  status: OrderStatus;
  items: OrderItem[];
  amountFen: number;
  /** ms since the epoch */
  promisedAt: number;
  merchantName: string;
  riderId: string | null;
  riderName: string | null;
  /** The platform's estimate of the rider's minutes to arrival, when it has one. */
  riderEtaMin: number | null;
  /**
   * Whole minutes past the promised time: at `now` for an open order, at delivery for a
   * delivered one, 0 when on time, null for a cancelled order.
   */
  lateByMin: number | null;
  customerPhoneMasked: string;
}

/** The view for the rider-facing agent. The address is in full because the rider delivers to it. */
export interface RiderOrderView {
  view: 'rider';
  orderId: string;
  status: OrderStatus;
  /** ms since the epoch */
  promisedAt: number;
  merchantName: string;
  merchantAddress: string;
  customerAddress: string;
  customerPhoneMasked: string;
}

export type OrderView = ServiceOrderView | RiderOrderView;

const minuteMs = 60_000;

export const lookupOrderTool = defineTool({
  name: 'lookup_order',
  allowedRoles: ['user_agent', 'rider_agent', 'operator'],
  inputSchema: z.strictObject({ orderId: orderIdSchema }),
  run({ orderId }, ctx): OrderView {
    const order = requireOrder(ctx, orderId);

    return ctx.role === 'rider_agent' ? riderView(ctx, order) : serviceView(ctx, order);
  },
});

function serviceView(ctx: ToolRunContext, order: Order): ServiceOrderView {
  const customer = requireRow(getCustomer(ctx.db, order.customerId), 'customer', order);
  const merchant = requireRow(getMerchant(ctx.db, order.merchantId), 'merchant', order);
  const rider = order.riderId === null ? undefined : getRider(ctx.db, order.riderId);

  return {
    view: 'service',
    orderId: order.id,
    status: order.status,
    items: order.items,
    amountFen: order.amountFen,
    promisedAt: order.promisedAt,
    merchantName: merchant.name,
    riderId: order.riderId,
    riderName: rider?.name ?? null,
    riderEtaMin: order.riderEtaMin,
    lateByMin: lateByMin(ctx, order),
    customerPhoneMasked: maskPhone(customer.phone),
  };
}

function riderView(ctx: ToolRunContext, order: Order): RiderOrderView {
  const customer = requireRow(getCustomer(ctx.db, order.customerId), 'customer', order);
  const merchant = requireRow(getMerchant(ctx.db, order.merchantId), 'merchant', order);

  return {
    view: 'rider',
    orderId: order.id,
    status: order.status,
    promisedAt: order.promisedAt,
    merchantName: merchant.name,
    merchantAddress: merchant.address,
    customerAddress: customer.address,
    customerPhoneMasked: maskPhone(customer.phone),
  };
}

function lateByMin(ctx: ToolRunContext, order: Order): number | null {
  if (order.status === 'cancelled') {
    return null;
  }

  let arrivedAt = ctx.now;
  if (order.status === 'delivered') {
    const delivered = listOrderStatusHistory(ctx.db, order.id)
      .filter((change) => change.status === 'delivered')
      .at(-1);
    // NOTE: a delivered order without a 'delivered' history row is measured at `now`,
    // which overstates its lateness; every order the platform writes has that row.
    arrivedAt = delivered?.at ?? ctx.now;
  }

  return Math.max(0, Math.floor((arrivedAt - order.promisedAt) / minuteMs));
}

// Foreign keys guarantee these rows, so a missing one means the platform data is damaged.
function requireRow<T>(row: T | undefined, kind: string, order: Order): T {
  if (row === undefined) {
    throw new ToolError('not_found', `${kind} of order ${order.id} not found; the platform data is incomplete`);
  }
  return row;
}
