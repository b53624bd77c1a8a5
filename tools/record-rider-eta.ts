/** record_rider_eta: stores the ETA a rider gave, as the output of this call in the tool call log. */
import { z } from 'zod';
import { orderIdSchema, requireDeliveringOrder } from './order-access.ts';
import { defineTool } from './tool.ts';

export interface RecordedRiderEta {
  etaMin: number;
  /** ms since the epoch */
  expectedAt: number;
}

// Three hours. A longer value is taken as a misunderstanding rather than a real ETA.
const maxEtaMin = 180;
const minuteMs = 60_000;

export const recordRiderEtaTool = defineTool({
  name: 'record_rider_eta',
  allowedRoles: ['rider_agent'],
  inputSchema: z.strictObject({
    orderId: orderIdSchema,
    etaMin: z.number().int().min(0).max(maxEtaMin),
  }),
  run({ orderId, etaMin }, ctx): RecordedRiderEta {
    requireDeliveringOrder(ctx, orderId);

    return { etaMin, expectedAt: ctx.now + etaMin * minuteMs };
  },
});
