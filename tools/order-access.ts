/** Loading the order a tool call is about, and checking that the caller may see it. */
import { z } from 'zod';
import { getOrder } from '../runtime/store/orders.ts';
import type { Order } from '../runtime/store/schema.ts';
import { ToolError } from './errors.ts';
import type { ToolRunContext } from './tool.ts';

export const orderIdSchema = z.string().trim().min(1).max(64);

/**
 * Returns the order `orderId`. Agents may only reach orders of their case's customer, so a
 * prompt that names someone else's order id gets nothing; operators may reach any order.
 * Throws ToolError 'not_found' for an unknown order and 'permission_denied' for another
 * customer's order.
 */
export function requireOrder(ctx: ToolRunContext, orderId: string): Order {
  const order = getOrder(ctx.db, orderId);
  if (order === undefined) {
    throw new ToolError('not_found', `order ${orderId} not found; check the order id`);
  }

  if (ctx.role !== 'operator' && order.customerId !== ctx.case.customerId) {
    throw new ToolError(
      'permission_denied',
      `order ${orderId} does not belong to customer ${ctx.case.customerId} of case ${ctx.case.id}; agents may only reach that customer's orders`,
    );
  }

  return order;
}

/** Returns the order and its rider id. Throws ToolError 'invalid_state' unless the order is being delivered by a rider. */
export function requireDeliveringOrder(ctx: ToolRunContext, orderId: string): Order & { riderId: string } {
  const order = requireOrder(ctx, orderId);
  const { riderId } = order;
  if (order.status !== 'delivering' || riderId === null) {
    throw new ToolError(
      'invalid_state',
      `order ${orderId} is ${order.status}${riderId === null ? ' with no rider' : ''}; only an order that a rider is delivering has a rider ETA`,
    );
  }

  return { ...order, riderId };
}
