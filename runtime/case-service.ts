/**
 * Owns the live cases of this process: one case machine actor per open case, restored from its
 * persisted snapshot when needed. Incoming messages are stored before anything else happens;
 * outgoing messages are stored, then published to subscribers (sockets, the simulator).
 */
import { EventEmitter } from 'node:events';
import { createActor, fromPromise, waitFor, type Actor, type SnapshotFrom } from 'xstate';
import { runAgentTurn, type AgentOptions } from '../agents/agent.ts';
import { promptLocale, type Locale } from '../agents/prompt.ts';
import type { ToolDeps } from '../tools/index.ts';
import { caseMachine, type CaseContext, type CaseEvent, type PlatformEtaInput, type RiderTurnInput, type UserTurnInput } from './case-machine.ts';
import { platformEta, riderTurn, transcriptWith, userTurn, type TurnDeps } from './case-turns.ts';
import type { Config } from './config.ts';
import { caseLogger, log } from './log.ts';
import { createCase, getCase, listOpenCases, setCaseStatus } from './store/cases.ts';
import type { Db } from './store/db.ts';
import { appendMessage, listMessagesAfter, type AppendedMessage } from './store/messages.ts';
import { getOrder } from './store/orders.ts';
import type { Case, Message, Party } from './store/schema.ts';
import { loadSnapshot, saveSnapshot } from './store/snapshots.ts';

export type CaseActor = Actor<typeof caseMachine>;

export class CaseServiceError extends Error {
  override readonly name = 'CaseServiceError';
  constructor(
    readonly code: 'not_found' | 'forbidden' | 'invalid_state',
    message: string,
  ) {
    super(message);
  }
}

export interface CaseServiceOptions {
  db: Db;
  config: Config;
  agent: AgentOptions;
  now?: () => number;
  /** Whether a human rider is connected. When none is, the simulated rider replies instead. */
  isRiderOnline?: (riderId: string) => boolean;
}

export class CaseService {
  private readonly actors = new Map<string, CaseActor>();
  private readonly events = new EventEmitter();
  private readonly turnDeps: TurnDeps;
  private readonly now: () => number;
  private readonly simulatedRiderReplies = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly options: CaseServiceOptions) {
    this.now = options.now ?? Date.now;
    this.events.setMaxListeners(0);
    const tools: ToolDeps = { db: options.db, limits: options.config.limits };
    this.turnDeps = {
      tools,
      agent: options.agent,
      config: options.config,
      now: this.now,
      deliver: (caseId, party, text, key) => this.deliverOutgoing(caseId, party, text, key),
    };
  }

  /** Subscribes to every stored message of every case; returns the unsubscribe function. */
  onMessage(listener: (message: Message) => void): () => void {
    this.events.on('message', listener);
    return () => this.events.off('message', listener);
  }

  /** Opens a case for the customer's order, or returns the case already open for it. */
  openCase(customerId: string, orderId: string, locale: Locale): Case {
    const order = getOrder(this.options.db, orderId);
    if (!order) throw new CaseServiceError('not_found', `order ${orderId} not found`);
    if (order.customerId !== customerId) throw new CaseServiceError('forbidden', `order ${orderId} does not belong to customer ${customerId}`);
    const existing = listOpenCases(this.options.db).find((c) => c.orderId === orderId && c.status !== 'resolved');
    if (existing) return existing;
    const created = createCase(this.options.db, { orderId, customerId, locale, now: this.now() });
    caseLogger(created.id).info({ orderId }, 'case opened');
    return created;
  }

  getCase(caseId: string): Case {
    const found = getCase(this.options.db, caseId);
    if (!found) throw new CaseServiceError('not_found', `case ${caseId} not found`);
    return found;
  }

  /** Stores a customer message, then hands it to the case machine; a duplicate frame is stored once and not replayed. */
  customerMessage(caseId: string, text: string, clientMsgId?: string): AppendedMessage {
    return this.incoming(caseId, 'customer', text, clientMsgId, (seq) => ({ type: 'customer.message', seq, text }));
  }

  riderMessage(caseId: string, riderId: string, text: string, clientMsgId?: string): AppendedMessage {
    const found = this.getCase(caseId);
    const order = getOrder(this.options.db, found.orderId);
    if (order?.riderId !== riderId) throw new CaseServiceError('forbidden', `rider ${riderId} is not the rider of case ${caseId}`);
    return this.incoming(caseId, 'rider', text, clientMsgId, (seq) => ({ type: 'rider.message', seq, text }));
  }

  operatorReturn(caseId: string): void {
    setCaseStatus(this.options.db, caseId, 'open', this.now());
    this.actorFor(caseId).send({ type: 'operator.return' });
  }

  /** Resolves when the case waits for the customer (or an operator): no turn is running. */
  async settled(caseId: string, timeoutMs = 60_000): Promise<SnapshotFrom<typeof caseMachine>> {
    const actor = this.actorFor(caseId);
    const snapshot = await waitFor(actor, (s) => s.matches('idle') || s.matches('handoff'), { timeout: timeoutMs });
    await Promise.all(this.simulatedRiderReplies);
    return snapshot;
  }

  snapshot(caseId: string): SnapshotFrom<typeof caseMachine> {
    return this.actorFor(caseId).getSnapshot();
  }

  /**
   * Restarts every open case from its persisted snapshot, e.g. after a process restart. Timers
   * are not in the snapshot, so a case waiting on the rider re-arms its wait (and prompts the
   * simulated rider again). A customer message stored but not yet handed to the machine when
   * the process died is handed to it now.
   */
  resumeOpenCases(): number {
    const open = listOpenCases(this.options.db);
    for (const found of open) {
      const actor = this.actorFor(found.id);
      const snapshot = actor.getSnapshot();
      if (snapshot.matches({ rider: 'waiting' })) {
        actor.send({ type: 'rider.resume' });
        this.maybeSimulateRider(found.id);
      }
      const lastCustomer = listMessagesAfter(this.options.db, found.id, snapshot.context.customerSeq)
        .filter((m) => m.party === 'customer' && m.direction === 'in')
        .at(-1);
      if (lastCustomer && snapshot.matches('idle')) actor.send({ type: 'customer.message', seq: lastCustomer.seq, text: lastCustomer.text });
    }
    if (open.length > 0) log.info({ cases: open.length }, 'resumed open cases');
    return open.length;
  }

  close(): void {
    this.closed = true;
    for (const actor of this.actors.values()) actor.stop();
    this.actors.clear();
    this.events.removeAllListeners();
  }

  private incoming(caseId: string, party: 'customer' | 'rider', text: string, clientMsgId: string | undefined, event: (seq: number) => CaseEvent): AppendedMessage {
    this.getCase(caseId);
    // Client ids live in a namespace per party, apart from the runtime's own message keys.
    const scopedId = clientMsgId === undefined ? undefined : `${party}:${clientMsgId}`;
    const stored = appendMessage(this.options.db, { caseId, party, direction: 'in', text, clientMsgId: scopedId, now: this.now() });
    if (stored.duplicate) return stored;
    this.events.emit('message', stored);
    this.actorFor(caseId).send(event(stored.seq));
    return stored;
  }

  private deliverOutgoing(caseId: string, party: Party, text: string, key: string): void {
    if (this.closed) return;
    const stored = appendMessage(this.options.db, { caseId, party, direction: 'out', text, clientMsgId: `out:${key}`, now: this.now() });
    if (stored.duplicate) return;
    this.events.emit('message', stored);
    if (party === 'rider') this.maybeSimulateRider(caseId);
  }

  /** With no human rider online, the simulated rider answers the question through the engine. */
  private maybeSimulateRider(caseId: string): void {
    const found = this.getCase(caseId);
    const order = getOrder(this.options.db, found.orderId);
    if (!order?.riderId || this.options.isRiderOnline?.(order.riderId)) return;

    const reply = (async () => {
      const eta = order.riderEtaMin ?? 15;
      const result = await runAgentTurn(this.options.agent, {
        role: 'sim_rider',
        locale: promptLocale(found.locale as Locale),
        facts: { eta, situation: 'normal' },
        transcript: transcriptWith(this.options.db, caseId, 'rider').slice(-1),
        temperature: 0.7,
        seed: order.id.length + eta,
        priority: 'live',
      });
      const text = result.status === 'ok' ? result.reply : `大概${eta}分钟到`;
      const state = this.actorFor(caseId).getSnapshot();
      if (!this.closed && (state.matches({ rider: 'waiting' }) || state.matches({ rider: 'interim' }))) {
        this.riderMessage(caseId, order.riderId!, text);
      }
    })().catch((error) => caseLogger(caseId).error({ err: error }, 'simulated rider failed'));
    this.simulatedRiderReplies.add(reply);
    void reply.finally(() => this.simulatedRiderReplies.delete(reply));
  }

  private actorFor(caseId: string): CaseActor {
    const existing = this.actors.get(caseId);
    if (existing) return existing;
    const found = this.getCase(caseId);

    const machine = caseMachine.provide({
      actors: {
        userTurn: fromPromise<Awaited<ReturnType<typeof userTurn>>, UserTurnInput>(({ input, signal }) => userTurn(this.turnDeps, input.context, signal)),
        riderTurn: fromPromise<Awaited<ReturnType<typeof riderTurn>>, RiderTurnInput>(({ input, signal }) => riderTurn(this.turnDeps, input.context, signal)),
        platformEta: fromPromise<Awaited<ReturnType<typeof platformEta>>, PlatformEtaInput>(({ input }) => platformEta(this.turnDeps, input.context)),
      },
      delays: { riderReplyTimeout: this.options.config.riderReplyTimeoutMs },
    });
    const persisted = loadSnapshot(this.options.db, caseId);
    const actor = createActor(machine, {
      input: { caseId, orderId: found.orderId, locale: found.locale as Locale },
      snapshot: persisted ? (persisted.snapshot as never) : undefined,
    });
    const logger = caseLogger(caseId);
    actor.subscribe({
      next: (snapshot) => {
        if (this.closed) return;
        saveSnapshot(this.options.db, caseId, actor.getPersistedSnapshot(), this.now());
        if (snapshot.matches('handoff') && this.getCase(caseId).status !== 'handoff') {
          setCaseStatus(this.options.db, caseId, 'handoff', this.now());
          logger.info('case handed off to an operator');
        }
      },
      error: (error) => logger.error({ err: error }, 'case machine failed'),
    });
    this.actors.set(caseId, actor);
    actor.start();
    return actor;
  }
}

export type { CaseContext };
