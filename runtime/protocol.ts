/**
 * The WebSocket wire protocol: every frame in either direction is a JSON object validated by
 * these schemas. A client first says `hello` with its role, then opens or resumes cases.
 */
import { z } from 'zod';

const caseId = z.string().min(1).max(64);
// A message must contain something visible: whitespace, zero-width and control characters alone are rejected.
const text = z
  .string()
  .trim()
  .min(1)
  .refine((value) => /[^\s\u0000-\u001f\u007f\u200b-\u200f\u2060\ufeff]/u.test(value), { message: 'message has no visible characters' });
const clientMsgId = z.string().min(1).max(64);

const helloFrameSchema = z.discriminatedUnion('role', [
  z.object({ type: z.literal('hello'), role: z.literal('customer'), customerId: z.string().min(1).max(32), locale: z.enum(['zh', 'en']).default('zh') }).strict(),
  z.object({ type: z.literal('hello'), role: z.literal('rider'), riderId: z.string().min(1).max(32), locale: z.enum(['zh', 'en']).default('zh') }).strict(),
]);

export const clientFrameSchema = z.discriminatedUnion('type', [
  helloFrameSchema,
  z.object({ type: z.literal('open_case'), orderId: z.string().min(1).max(64) }).strict(),
  z.object({ type: z.literal('resume'), resumeToken: z.string().min(1).max(128), lastSeq: z.number().int().min(0) }).strict(),
  z.object({ type: z.literal('message'), caseId, text, clientMsgId }).strict(),
  z.object({ type: z.literal('ping') }).strict(),
]);

export type ClientFrame = z.infer<typeof clientFrameSchema>;

export const errorCodes = [
  'malformed_frame',
  'invalid_frame',
  'frame_too_large',
  'message_too_long',
  'not_authenticated',
  'not_found',
  'forbidden',
  'rate_limited',
  'duplicate_id',
  'internal_error',
] as const;
export type ErrorCode = (typeof errorCodes)[number];

export const orderSummarySchema = z.object({
  orderId: z.string(),
  status: z.string(),
  merchantName: z.string(),
  items: z.array(z.object({ name: z.string(), qty: z.number() })),
  amountFen: z.number(),
  promisedAt: z.number(),
});

export const wireMessageSchema = z.object({
  caseId: z.string(),
  seq: z.number().int(),
  party: z.string(),
  direction: z.enum(['in', 'out']),
  text: z.string(),
  at: z.number(),
});
export type WireMessage = z.infer<typeof wireMessageSchema>;

export const serverFrameSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('welcome'), role: z.enum(['customer', 'rider']), orders: z.array(orderSummarySchema) }),
  z.object({ type: z.literal('case'), caseId: z.string(), orderId: z.string(), resumeToken: z.string(), status: z.string(), messages: z.array(wireMessageSchema) }),
  z.object({ type: z.literal('ack'), caseId: z.string(), clientMsgId: z.string(), seq: z.number().int(), duplicate: z.boolean() }),
  z.object({ type: z.literal('message'), message: wireMessageSchema }),
  z.object({ type: z.literal('error'), code: z.enum(errorCodes), message: z.string(), ref: z.string().optional() }),
  z.object({ type: z.literal('pong') }),
]);

export type ServerFrame = z.infer<typeof serverFrameSchema>;
