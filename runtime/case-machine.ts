/**
 * The dialogue machine of one late-delivery case. It decides what happens next. The effects
 * (model turns, tools, messages) are the injected `userTurn`, `riderTurn` and `platformEta`
 * actors, so this file imports no engine, socket or SQL code. The runtime persists its
 * snapshot after every transition.
 */
import { assign, fromPromise, setup } from 'xstate';
import type { Locale } from '../agents/prompt.ts';
import type { DeliveryFacts } from './strategies.ts';

export interface CaseContext {
  caseId: string;
  orderId: string;
  locale: Locale;
  facts: DeliveryFacts;
  /** Sequence number of the customer message that the current user turn replies to. */
  customerSeq: number;
  /**
   * Counts the user turns started in this case. Effect keys include it, so two turns that reply to
   * the same customer message (an interim reply, then the ETA) never share a key.
   */
  turnCount: number;
  /** Questions sent to the rider in this case. */
  riderQuestions: number;
  /** The rider's latest message, while the rider-facing agent reads it. */
  riderText: string | null;
}

export type CaseEvent =
  | { type: 'customer.message'; seq: number; text: string }
  | { type: 'rider.message'; seq: number; text: string }
  | { type: 'operator.return' }
  /** Re-arms the rider wait after a restart, because timers are not part of the snapshot. */
  | { type: 'rider.resume' };

export interface UserTurnInput {
  context: CaseContext;
}

export interface UserTurnOutput {
  facts: DeliveryFacts;
  next: 'idle' | 'ask_rider' | 'handoff';
}

export interface RiderTurnInput {
  context: CaseContext;
}

export type RiderTurnOutput =
  | { next: 'wait'; riderQuestions: number }
  | { next: 'eta'; etaMin: number }
  | { next: 'delivered' }
  | { next: 'give_up' };

export interface PlatformEtaInput {
  context: CaseContext;
}

export interface CaseMachineInput {
  caseId: string;
  orderId: string;
  locale: Locale;
}

const unimplemented = (name: string) =>
  fromPromise<never, unknown>(async () => {
    throw new Error(`case machine actor ${name} was not provided; call caseMachine.provide({ actors })`);
  });

export const caseMachine = setup({
  types: {
    context: {} as CaseContext,
    events: {} as CaseEvent,
    input: {} as CaseMachineInput,
  },
  actors: {
    userTurn: unimplemented('userTurn') as unknown as ReturnType<typeof fromPromise<UserTurnOutput, UserTurnInput>>,
    riderTurn: unimplemented('riderTurn') as unknown as ReturnType<typeof fromPromise<RiderTurnOutput, RiderTurnInput>>,
    platformEta: unimplemented('platformEta') as unknown as ReturnType<typeof fromPromise<DeliveryFacts, PlatformEtaInput>>,
  },
  delays: {
    riderReplyTimeout: 90_000,
  },
}).createMachine({
  id: 'case',
  context: ({ input }) => ({
    caseId: input.caseId,
    orderId: input.orderId,
    locale: input.locale,
    facts: { order: 'none', eta: 'unknown', late: 0, comp: 'no' },
    customerSeq: 0,
    turnCount: 0,
    riderQuestions: 0,
    riderText: null,
  }),
  initial: 'idle',
  states: {
    idle: {
      on: {
        'customer.message': { target: 'userTurn', actions: assign({ customerSeq: ({ event }) => event.seq }) },
      },
    },
    userTurn: {
      entry: assign({ turnCount: ({ context }) => context.turnCount + 1 }),
      invoke: {
        src: 'userTurn',
        input: ({ context }) => ({ context }),
        onDone: [
          { guard: ({ event }) => event.output.next === 'ask_rider', target: 'rider', actions: assign({ facts: ({ event }) => event.output.facts }) },
          { guard: ({ event }) => event.output.next === 'handoff', target: 'handoff', actions: assign({ facts: ({ event }) => event.output.facts }) },
          { target: 'idle', actions: assign({ facts: ({ event }) => event.output.facts }) },
        ],
        onError: { target: 'idle' },
      },
      on: {
        // Barge-in: a new message restarts the turn, which aborts the running model call.
        'customer.message': { target: 'userTurn', reenter: true, actions: assign({ customerSeq: ({ event }) => event.seq }) },
      },
    },
    rider: {
      initial: 'asking',
      states: {
        asking: {
          invoke: {
            src: 'riderTurn',
            input: ({ context }) => ({ context }),
            onDone: [
              {
                guard: ({ event }) => event.output.next === 'wait',
                target: 'waiting',
                actions: assign({
                  riderQuestions: ({ event }) => (event.output.next === 'wait' ? event.output.riderQuestions : 0),
                  riderText: null,
                }),
              },
              {
                guard: ({ event }) => event.output.next === 'eta',
                target: '#case.userTurn',
                actions: assign({
                  facts: ({ context, event }) => ({ ...context.facts, eta: event.output.next === 'eta' ? event.output.etaMin : context.facts.eta }),
                  riderText: null,
                }),
              },
              {
                guard: ({ event }) => event.output.next === 'delivered',
                target: '#case.userTurn',
                actions: assign({ facts: ({ context }) => ({ ...context.facts, order: 'delivered' as const }), riderText: null }),
              },
              { target: 'platformEta', actions: assign({ riderText: null }) },
            ],
            onError: { target: 'platformEta' },
          },
        },
        waiting: {
          after: { riderReplyTimeout: { target: 'platformEta' } },
          on: {
            'rider.message': { target: 'asking', actions: assign({ riderText: ({ event }) => event.text }) },
            'rider.resume': { target: 'waiting', reenter: true },
            // While the rider is asked, the customer gets an interim reply and the wait goes on.
            'customer.message': { target: 'interim', actions: assign({ customerSeq: ({ event }) => event.seq }) },
          },
        },
        interim: {
          entry: assign({ turnCount: ({ context }) => context.turnCount + 1 }),
          invoke: {
            src: 'userTurn',
            input: ({ context }) => ({ context }),
            onDone: [
              { guard: ({ event }) => event.output.next === 'handoff', target: '#case.handoff' },
              { target: 'waiting' },
            ],
            onError: { target: 'waiting' },
          },
          on: {
            'rider.message': { target: 'asking', actions: assign({ riderText: ({ event }) => event.text }) },
          },
        },
        // The rider gave no usable reply in time, so the platform's own estimate is used.
        platformEta: {
          invoke: {
            src: 'platformEta',
            input: ({ context }) => ({ context }),
            onDone: { target: '#case.userTurn', actions: assign({ facts: ({ event }) => event.output }) },
            onError: { target: '#case.idle' },
          },
        },
      },
      on: {
        // Outside `waiting`, a customer message is stored and remembered. The next user turn
        // reads the latest transcript lines, this message among them, and replies to it.
        'customer.message': { actions: assign({ customerSeq: ({ event }) => event.seq }) },
      },
    },
    handoff: {
      on: {
        'operator.return': { target: 'idle' },
      },
    },
  },
});
