/**
 * The structured turn: what every agent and every simulated party returns from the model.
 * The model writes it as one JSON object followed by the end token; nothing reaches a
 * party until it has parsed and validated here.
 */
import { z } from 'zod';

export const roles = ['user_agent', 'rider_agent', 'sim_customer', 'sim_rider'] as const;
export type Role = (typeof roles)[number];

export const intents = [
  // customer intents
  'query_delivery',
  'request_compensation',
  'request_human',
  'greeting',
  'thanks',
  'other',
  // rider intents
  'provide_eta',
  'report_delay',
  'report_delivered',
  // a role-played party just talking
  'chat',
] as const;
export type Intent = (typeof intents)[number];

export const emotions = ['calm', 'anxious', 'angry', 'happy'] as const;
export type Emotion = (typeof emotions)[number];

export const actions = [
  // user-facing agent
  'lookup_order',
  'ask_rider_eta',
  'issue_coupon',
  'handoff',
  // rider-facing agent
  'message_rider',
  'report_eta',
  'report_delivered',
  // simulated parties
  'say',
  'end',
  // any role
  'none',
] as const;
export type Action = (typeof actions)[number];

/** Actions each role may emit; a turn with an action outside its role fails validation. */
export const actionsByRole: Record<Role, readonly Action[]> = {
  user_agent: ['lookup_order', 'ask_rider_eta', 'issue_coupon', 'handoff', 'none'],
  rider_agent: ['message_rider', 'report_eta', 'report_delivered', 'none'],
  sim_customer: ['say', 'end'],
  sim_rider: ['say'],
};

/** Entity names the model may extract; each value must be a span of the party's last message. */
export const entityNames = ['waited', 'dish', 'eta', 'reason'] as const;
export type EntityName = (typeof entityNames)[number];

/**
 * Placeholders an agent reply may carry. The agent fills them from tool results, so numbers
 * that reach a party come from the platform, never from the model.
 */
export const replySlots = ['eta_min', 'coupon_yuan', 'order_tail', 'late_min'] as const;
export type ReplySlot = (typeof replySlots)[number];

export const maxReplyChars = 200;

export const turnSchema = z
  .object({
    intent: z.enum(intents),
    emotion: z.enum(emotions),
    entities: z.partialRecord(z.enum(entityNames), z.string().min(1).max(40)),
    action: z.enum(actions),
    reply: z.string().max(maxReplyChars),
  })
  .strict();

export type Turn = z.infer<typeof turnSchema>;

const roleSchemas = new Map<Role, z.ZodType>();

/** Returns the turn schema with the action narrowed to the role's actions, which agents decode under. */
export function turnSchemaFor(role: Role): z.ZodType {
  let schema = roleSchemas.get(role);
  if (!schema) {
    schema = turnSchema.extend({ action: z.enum(actionsByRole[role] as [Action, ...Action[]]) });
    roleSchemas.set(role, schema);
  }
  return schema;
}
