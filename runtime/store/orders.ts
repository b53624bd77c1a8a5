/** Read access to platform data: orders, their status history, customers, merchants and riders. */
import { asc, desc, eq } from 'drizzle-orm';
import type { Db } from './db.ts';
import { withStoreErrors } from './errors.ts';
import {
  customers,
  merchants,
  orderStatusHistory,
  orders,
  riders,
  type Customer,
  type Merchant,
  type Order,
  type OrderStatusChange,
  type Rider,
} from './schema.ts';

export function getOrder(db: Db, id: string): Order | undefined {
  return withStoreErrors(`read order ${id}`, () => db.select().from(orders).where(eq(orders.id, id)).get());
}

/** Lists a customer's orders, newest first. */
export function listOrdersForCustomer(db: Db, customerId: string): Order[] {
  return withStoreErrors(`list orders of customer ${customerId}`, () =>
    db
      .select()
      .from(orders)
      .where(eq(orders.customerId, customerId))
      .orderBy(desc(orders.createdAt), desc(orders.id))
      .all(),
  );
}

/** Lists the orders assigned to a rider, newest first. */
export function listOrdersForRider(db: Db, riderId: string): Order[] {
  return withStoreErrors(`list orders of rider ${riderId}`, () =>
    db
      .select()
      .from(orders)
      .where(eq(orders.riderId, riderId))
      .orderBy(desc(orders.createdAt), desc(orders.id))
      .all(),
  );
}

/** Lists an order's status changes, oldest first. */
export function listOrderStatusHistory(db: Db, orderId: string): OrderStatusChange[] {
  return withStoreErrors(`read status history of order ${orderId}`, () =>
    db
      .select()
      .from(orderStatusHistory)
      .where(eq(orderStatusHistory.orderId, orderId))
      .orderBy(asc(orderStatusHistory.at), asc(orderStatusHistory.id))
      .all(),
  );
}

export function getCustomer(db: Db, id: string): Customer | undefined {
  return withStoreErrors(`read customer ${id}`, () =>
    db.select().from(customers).where(eq(customers.id, id)).get(),
  );
}

export function getMerchant(db: Db, id: string): Merchant | undefined {
  return withStoreErrors(`read merchant ${id}`, () =>
    db.select().from(merchants).where(eq(merchants.id, id)).get(),
  );
}

export function getRider(db: Db, id: string): Rider | undefined {
  return withStoreErrors(`read rider ${id}`, () => db.select().from(riders).where(eq(riders.id, id)).get());
}
