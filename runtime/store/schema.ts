/**
 * The SQLite schema: platform data (customers, merchants, riders, orders) and conversation
 * data (cases, their message logs, machine snapshots, tool calls, coupons).
 * Every timestamp is milliseconds since the Unix epoch; every amount is an integer in fen.
 */
import { sql, type SQL } from 'drizzle-orm';
import type { AnySQLiteColumn } from 'drizzle-orm/sqlite-core';
import { check, index, integer, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

export const orderStatuses = ['placed', 'preparing', 'delivering', 'delivered', 'cancelled'] as const;
export type OrderStatus = (typeof orderStatuses)[number];

export const caseStatuses = ['open', 'handoff', 'resolved'] as const;
export type CaseStatus = (typeof caseStatuses)[number];

export const locales = ['zh', 'en'] as const;
export type Locale = (typeof locales)[number];

export const parties = ['customer', 'rider', 'merchant', 'operator', 'system'] as const;
export type Party = (typeof parties)[number];

/** `in`: written by a person or a simulated party. `out`: written by an agent to that party. */
export const messageDirections = ['in', 'out'] as const;
export type MessageDirection = (typeof messageDirections)[number];

export const toolCallStatuses = ['ok', 'error'] as const;
export type ToolCallStatus = (typeof toolCallStatuses)[number];

export interface OrderItem {
  name: string;
  qty: number;
  priceFen: number;
}

// Builds a CHECK that keeps a text column inside its literal union, so rows written by
// hand or by another client cannot carry a value the TypeScript type does not know.
function oneOf(column: AnySQLiteColumn, values: readonly string[]): SQL {
  const list = sql.join(
    values.map((value) => sql.raw(`'${value}'`)),
    sql.raw(', '),
  );
  return sql`${column} in (${list})`;
}

export const customers = sqliteTable('customers', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  phone: text('phone').notNull(),
  address: text('address').notNull(),
});

export const merchants = sqliteTable('merchants', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  phone: text('phone').notNull(),
  address: text('address').notNull(),
});

export const riders = sqliteTable('riders', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  phone: text('phone').notNull(),
});

export const orders = sqliteTable(
  'orders',
  {
    id: text('id').primaryKey(),
    customerId: text('customer_id')
      .notNull()
      .references(() => customers.id),
    merchantId: text('merchant_id')
      .notNull()
      .references(() => merchants.id),
    riderId: text('rider_id').references(() => riders.id),
    items: text('items', { mode: 'json' }).$type<OrderItem[]>().notNull(),
    amountFen: integer('amount_fen').notNull(),
    promisedAt: integer('promised_at').notNull(),
    status: text('status', { enum: orderStatuses }).notNull(),
    // The platform's own estimate in minutes; the simulated rider replies with it.
    riderEtaMin: integer('rider_eta_min'),
    createdAt: integer('created_at').notNull(),
  },
  (table) => [
    index('orders_customer_id_idx').on(table.customerId),
    check('orders_status_check', oneOf(table.status, orderStatuses)),
    check('orders_amount_fen_check', sql`${table.amountFen} >= 0`),
  ],
);

export const orderStatusHistory = sqliteTable(
  'order_status_history',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    orderId: text('order_id')
      .notNull()
      .references(() => orders.id),
    status: text('status', { enum: orderStatuses }).notNull(),
    at: integer('at').notNull(),
  },
  (table) => [
    index('order_status_history_order_id_idx').on(table.orderId),
    check('order_status_history_status_check', oneOf(table.status, orderStatuses)),
  ],
);

export const cases = sqliteTable(
  'cases',
  {
    id: text('id').primaryKey(),
    orderId: text('order_id')
      .notNull()
      .references(() => orders.id),
    customerId: text('customer_id')
      .notNull()
      .references(() => customers.id),
    status: text('status', { enum: caseStatuses }).notNull(),
    locale: text('locale', { enum: locales }).notNull(),
    resumeToken: text('resume_token').notNull().unique(),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
  },
  (table) => [
    index('cases_status_idx').on(table.status),
    check('cases_status_check', oneOf(table.status, caseStatuses)),
    check('cases_locale_check', oneOf(table.locale, locales)),
  ],
);

export const messages = sqliteTable(
  'messages',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    caseId: text('case_id')
      .notNull()
      .references(() => cases.id),
    // Per-case sequence number starting at 1; clients resume from the last one they saw.
    seq: integer('seq').notNull(),
    party: text('party', { enum: parties }).notNull(),
    direction: text('direction', { enum: messageDirections }).notNull(),
    text: text('text').notNull(),
    // Set by the client on every frame so that a retried frame is stored once.
    clientMsgId: text('client_msg_id'),
    createdAt: integer('created_at').notNull(),
  },
  (table) => [
    uniqueIndex('messages_case_id_seq_idx').on(table.caseId, table.seq),
    uniqueIndex('messages_case_id_client_msg_id_idx').on(table.caseId, table.clientMsgId),
    check('messages_seq_check', sql`${table.seq} >= 1`),
    check('messages_party_check', oneOf(table.party, parties)),
    check('messages_direction_check', oneOf(table.direction, messageDirections)),
  ],
);

export const machineSnapshots = sqliteTable('machine_snapshots', {
  caseId: text('case_id')
    .primaryKey()
    .references(() => cases.id),
  snapshot: text('snapshot', { mode: 'json' }).$type<unknown>().notNull(),
  updatedAt: integer('updated_at').notNull(),
});

export const toolCalls = sqliteTable(
  'tool_calls',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    caseId: text('case_id')
      .notNull()
      .references(() => cases.id),
    tool: text('tool').notNull(),
    role: text('role').notNull(),
    idempotencyKey: text('idempotency_key').notNull().unique(),
    // The raw input as the caller sent it, so that a replay can be compared with it.
    input: text('input', { mode: 'json' }).$type<unknown>(),
    output: text('output', { mode: 'json' }).$type<unknown>(),
    status: text('status', { enum: toolCallStatuses }).notNull(),
    errorCode: text('error_code'),
    errorMessage: text('error_message'),
    createdAt: integer('created_at').notNull(),
  },
  (table) => [
    index('tool_calls_case_id_idx').on(table.caseId),
    check('tool_calls_status_check', oneOf(table.status, toolCallStatuses)),
  ],
);

export const coupons = sqliteTable(
  'coupons',
  {
    id: text('id').primaryKey(),
    caseId: text('case_id')
      .notNull()
      .references(() => cases.id),
    orderId: text('order_id')
      .notNull()
      .references(() => orders.id),
    customerId: text('customer_id')
      .notNull()
      .references(() => customers.id),
    amountFen: integer('amount_fen').notNull(),
    idempotencyKey: text('idempotency_key').notNull().unique(),
    createdAt: integer('created_at').notNull(),
  },
  (table) => [
    index('coupons_case_id_idx').on(table.caseId),
    check('coupons_amount_fen_check', sql`${table.amountFen} > 0`),
  ],
);

export type Customer = typeof customers.$inferSelect;
export type Merchant = typeof merchants.$inferSelect;
export type Rider = typeof riders.$inferSelect;
export type Order = typeof orders.$inferSelect;
export type OrderStatusChange = typeof orderStatusHistory.$inferSelect;
export type Case = typeof cases.$inferSelect;
export type Message = typeof messages.$inferSelect;
export type MachineSnapshot = typeof machineSnapshots.$inferSelect;
export type ToolCall = typeof toolCalls.$inferSelect;
export type Coupon = typeof coupons.$inferSelect;
