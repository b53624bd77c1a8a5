/** Policy limits on tool effects, with their defaults. */
import { z } from 'zod';

export const toolLimitsSchema = z.object({
  /** Maximum compensation, in yuan, that all coupons of one case may add up to. */
  maxCompensationYuanPerCase: z.number().nonnegative().default(10),
});

export type ToolLimits = z.infer<typeof toolLimitsSchema>;

export const defaultToolLimits: ToolLimits = toolLimitsSchema.parse({});
