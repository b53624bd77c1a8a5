/** Cases: one conversation about one order, with the token a client resumes it with. */
import { randomBytes, randomUUID } from 'node:crypto';
import { asc, eq, inArray } from 'drizzle-orm';
import { runInTransaction, type Db } from './db.ts';
import { StoreError, withStoreErrors } from './errors.ts';
import { getOrder } from './orders.ts';
import { cases, type Case, type CaseStatus, type Locale } from './schema.ts';

export interface NewCase {
  orderId: string;
  customerId: string;
  locale: Locale;
  now: number;
}

// 32 random bytes: a resume token is a bearer secret, so it must not be guessable.
const resumeTokenBytes = 32;

/**
 * Opens a case about `orderId` for `customerId`. Throws StoreError 'not_found' when the
 * order does not exist and 'conflict' when it belongs to another customer.
 */
export function createCase(db: Db, input: NewCase): Case {
  const { orderId, customerId, locale, now } = input;

  return runInTransaction(db, `create case for order ${orderId}`, (tx) => {
    const order = getOrder(tx, orderId);
    if (order === undefined) {
      throw new StoreError('not_found', `order ${orderId} not found; a case must be about an existing order`);
    }
    if (order.customerId !== customerId) {
      throw new StoreError(
        'conflict',
        `order ${orderId} belongs to customer ${order.customerId}, not ${customerId}; open the case for the order's customer`,
      );
    }

    return tx
      .insert(cases)
      .values({
        id: randomUUID(),
        orderId,
        customerId,
        status: 'open',
        locale,
        resumeToken: randomBytes(resumeTokenBytes).toString('base64url'),
        createdAt: now,
        updatedAt: now,
      })
      .returning()
      .get();
  });
}

export function getCase(db: Db, id: string): Case | undefined {
  return withStoreErrors(`read case ${id}`, () => db.select().from(cases).where(eq(cases.id, id)).get());
}

export function getCaseByResumeToken(db: Db, resumeToken: string): Case | undefined {
  // The token is a secret, so it stays out of the error message.
  return withStoreErrors('read case by resume token', () =>
    db.select().from(cases).where(eq(cases.resumeToken, resumeToken)).get(),
  );
}

/** Sets a case's status and returns the updated row. Throws StoreError 'not_found' for an unknown id. */
export function setCaseStatus(db: Db, id: string, status: CaseStatus, now: number): Case {
  const updated = withStoreErrors(`set status of case ${id} to ${status}`, () =>
    db.update(cases).set({ status, updatedAt: now }).where(eq(cases.id, id)).returning().get(),
  );
  if (updated === undefined) {
    throw new StoreError('not_found', `case ${id} not found; cannot set its status to ${status}`);
  }

  return updated;
}

/**
 * Lists the cases that are not resolved (status 'open' or 'handoff'), oldest first: the
 * cases a restarted runtime must resume.
 */
export function listOpenCases(db: Db): Case[] {
  return withStoreErrors('list open cases', () =>
    db
      .select()
      .from(cases)
      .where(inArray(cases.status, ['open', 'handoff']))
      .orderBy(asc(cases.createdAt), asc(cases.id))
      .all(),
  );
}
