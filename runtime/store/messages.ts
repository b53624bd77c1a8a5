/** The per-case message log: every message of every party, numbered 1, 2, 3… within its case. */
import { and, asc, desc, eq, gt, max } from 'drizzle-orm';
import { runInTransaction, type Db } from './db.ts';
import { StoreError, withStoreErrors } from './errors.ts';
import { cases, messages, type Message, type MessageDirection, type Party } from './schema.ts';

export interface NewMessage {
  caseId: string;
  party: Party;
  direction: MessageDirection;
  text: string;
  /** The client's id for the frame; a retried frame with the same id is stored once. */
  clientMsgId?: string;
  now: number;
}

/** A stored message, and whether it had already been stored under the same client message id. */
export type AppendedMessage = Message & { duplicate: boolean };

/**
 * Appends a message to its case's log with the next sequence number. When the case already
 * has a message with the same `clientMsgId`, returns that message with `duplicate: true`
 * and stores nothing. Throws StoreError 'not_found' for an unknown case.
 */
export function appendMessage(db: Db, input: NewMessage): AppendedMessage {
  const { caseId, party, direction, text, clientMsgId, now } = input;

  return runInTransaction(db, `append message to case ${caseId}`, (tx) => {
    const caseRow = tx.select({ id: cases.id }).from(cases).where(eq(cases.id, caseId)).get();
    if (caseRow === undefined) {
      throw new StoreError('not_found', `case ${caseId} not found; cannot append a message to it`);
    }

    if (clientMsgId !== undefined) {
      const existing = tx
        .select()
        .from(messages)
        .where(and(eq(messages.caseId, caseId), eq(messages.clientMsgId, clientMsgId)))
        .get();
      if (existing !== undefined) {
        return { ...existing, duplicate: true };
      }
    }

    const last = tx
      .select({ seq: max(messages.seq) })
      .from(messages)
      .where(eq(messages.caseId, caseId))
      .get();
    const seq = (last?.seq ?? 0) + 1;

    const stored = tx
      .insert(messages)
      .values({ caseId, seq, party, direction, text, clientMsgId: clientMsgId ?? null, createdAt: now })
      .returning()
      .get();
    return { ...stored, duplicate: false };
  });
}

/** Lists a case's messages with a sequence number above `afterSeq`, in sequence order. */
export function listMessagesAfter(db: Db, caseId: string, afterSeq: number): Message[] {
  return withStoreErrors(`list messages of case ${caseId} after ${afterSeq}`, () =>
    db
      .select()
      .from(messages)
      .where(and(eq(messages.caseId, caseId), gt(messages.seq, afterSeq)))
      .orderBy(asc(messages.seq))
      .all(),
  );
}

/** Lists a party's latest `limit` messages in a case, oldest first, without reading the rest of the case. */
export function listRecentMessages(db: Db, caseId: string, party: Party, limit: number): Message[] {
  const newestFirst = withStoreErrors(`list recent ${party} messages of case ${caseId}`, () =>
    db
      .select()
      .from(messages)
      .where(and(eq(messages.caseId, caseId), eq(messages.party, party)))
      .orderBy(desc(messages.seq))
      .limit(limit)
      .all(),
  );
  return newestFirst.reverse();
}
