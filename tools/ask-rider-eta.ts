/**
 * ask_rider_eta: starts asking the rider of a delivering order for an ETA. This tool only
 * checks the order and returns the rider's id. The runtime runs the conversation with the rider.
 */
import { z } from 'zod';
import { orderIdSchema, requireDeliveringOrder } from './order-access.ts';
import { defineTool } from './tool.ts';

export interface RiderEtaRequest {
  orderId: string;
  riderId: string;
}

export const askRiderEtaTool = defineTool({
  name: 'ask_rider_eta',
  allowedRoles: ['user_agent', 'rider_agent'],
  inputSchema: z.strictObject({ orderId: orderIdSchema }),
  run({ orderId }, ctx): RiderEtaRequest {
    const order = requireDeliveringOrder(ctx, orderId);

    return { orderId: order.id, riderId: order.riderId };
  },
});
