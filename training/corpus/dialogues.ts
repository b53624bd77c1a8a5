/**
 * Generates training examples in the agents' prompt and turn format. Each generator walks one
 * conversation through the states the runtime produces (lookup, asking the rider, ETA known)
 * and emits an example at every model call, so training prompts match run-time prompts.
 */
import { renderPrompt, type Facts, type TranscriptLine } from '../../agents/prompt.ts';
import type { Action, Emotion, EntityName, Intent, Role, Turn } from '../../agents/turn.ts';
import { createRandom } from '../../engine/sampler.ts';
import * as bank from './banks.ts';

export interface Example {
  prompt: string;
  /** The JSON turn, without the end token. */
  completion: string;
  role: Role;
  turn: Turn;
}

export type Random = () => number;

/** A seeded generator (mulberry32, shared with the engine's sampler), so the corpus is reproducible. */
export const seededRandom: (seed: number) => Random = createRandom;

function pick<T>(random: Random, items: readonly T[]): T {
  const item = items[Math.floor(random() * items.length)];
  if (item === undefined) throw new Error('pick() called on an empty bank');
  return item;
}

function int(random: Random, min: number, max: number): number {
  return min + Math.floor(random() * (max - min + 1));
}

function example(role: Role, facts: Facts, transcript: TranscriptLine[], turn: Turn): Example {
  const completion = JSON.stringify({
    intent: turn.intent,
    emotion: turn.emotion,
    entities: turn.entities,
    action: turn.action,
    reply: turn.reply,
  });
  return { prompt: renderPrompt({ role, locale: 'zh', facts, transcript }), completion, role, turn };
}

interface CustomerUtterance {
  text: string;
  intent: Intent;
  emotion: Emotion;
  entities: Partial<Record<EntityName, string>>;
}

/** Builds one customer message from the banks of the chosen split. */
function customerUtterance(random: Random, heldOut: boolean, intent: Intent): CustomerUtterance {
  const b = <T>(items: readonly T[]) => bank.splitBank(items, heldOut);
  const entities: Partial<Record<EntityName, string>> = {};

  if (intent === 'request_human' || intent === 'greeting' || intent === 'thanks' || intent === 'other') {
    const cores = { request_human: bank.humanCores, greeting: bank.greetingCores, thanks: bank.thanksCores, other: bank.otherCores }[intent];
    const emotion: Emotion = intent === 'request_human' && random() < 0.5 ? 'angry' : 'calm';
    const opener = intent === 'greeting' || intent === 'thanks' ? '' : pick(random, b(bank.openers));
    return { text: opener + pick(random, b(cores)), intent, emotion, entities };
  }

  let core = pick(random, b(intent === 'request_compensation' ? bank.compensationCores : bank.deliveryCores));
  if (core.includes('{dish}')) {
    const dish = pick(random, heldOut ? bank.dishes.heldout : bank.dishes.train);
    core = core.replace('{dish}', dish);
    entities.dish = dish;
  }
  let text = pick(random, b(bank.openers)) + core.replace(/[？?！!]$/, '');
  if (random() < 0.45) {
    const duration = pick(random, heldOut ? bank.waitedDurations.heldout : bank.waitedDurations.train);
    text += '，' + pick(random, b(bank.waitedClauses)).replace('{dur}', duration);
    entities.waited = duration;
  }
  const tail = pick(random, b(bank.tails));
  text += tail.text || (core.endsWith('？') ? '？' : '');
  return { text, intent, emotion: tail.emotion, entities };
}

const userAgentIntents: Intent[] = ['query_delivery', 'query_delivery', 'query_delivery', 'request_compensation', 'request_human', 'greeting', 'thanks', 'other'];

type OrderStatus = 'preparing' | 'delivering' | 'delivered' | 'cancelled';

/**
 * Generates one customer conversation for the user-facing agent. Emits the lookup step, the ask-the-rider
 * step, an optional impatient follow-up while the rider is asked, and the final ETA reply.
 */
export function userAgentConversation(random: Random, heldOut: boolean): Example[] {
  const examples: Example[] = [];
  const transcript: TranscriptLine[] = [];
  const intent = pick(random, userAgentIntents);

  // Some conversations start after a greeting exchange, so the prompt carries earlier lines.
  if (intent !== 'greeting' && random() < 0.2) {
    transcript.push({ speaker: 'customer', text: pick(random, bank.splitBank(bank.greetingCores, heldOut)) });
    transcript.push({ speaker: 'agent', text: pick(random, bank.agentReplies.greeting) });
  }

  const utterance = customerUtterance(random, heldOut, intent);
  transcript.push({ speaker: 'customer', text: utterance.text });
  const base = { intent: utterance.intent, emotion: utterance.emotion, entities: utterance.entities };
  const say = (facts: Facts, action: Action, reply: string) => {
    examples.push(example('user_agent', facts, [...transcript], { ...base, action, reply }));
  };

  const simple: Partial<Record<Intent, [Action, string[]]>> = {
    request_human: ['handoff', bank.agentReplies.handoff],
    greeting: ['none', bank.agentReplies.greeting],
    thanks: ['none', bank.agentReplies.thanks],
    other: ['none', bank.agentReplies.other],
  };
  const simpleTurn = simple[intent];
  if (simpleTurn) {
    const facts: Facts = random() < 0.7 ? { order: 'none' } : { order: 'delivering', eta: int(random, 3, 40), late: 0, comp: 'no' };
    say(facts, simpleTurn[0], pick(random, simpleTurn[1]));
    return examples;
  }

  say({ order: 'none' }, 'lookup_order', '');

  const status = pick<OrderStatus>(random, ['delivering', 'delivering', 'delivering', 'delivering', 'preparing', 'delivered', 'cancelled']);
  if (status !== 'delivering') {
    say({ order: status }, 'none', pick(random, bank.agentReplies[status]));
    return examples;
  }

  const askReply = pick(random, bank.agentReplies.askRider);
  say({ order: 'delivering', eta: 'unknown' }, 'ask_rider_eta', askReply);
  transcript.push({ speaker: 'agent', text: askReply });

  if (random() < 0.25) {
    const followUp = customerUtterance(random, heldOut, 'query_delivery');
    transcript.push({ speaker: 'customer', text: followUp.text });
    const reply = pick(random, bank.agentReplies.stillAsking);
    examples.push(
      example('user_agent', { order: 'delivering', eta: 'asked' }, [...transcript], {
        intent: followUp.intent,
        emotion: followUp.emotion,
        entities: followUp.entities,
        action: 'none',
        reply,
      }),
    );
    transcript.push({ speaker: 'agent', text: reply });
    base.emotion = followUp.emotion;
    base.entities = followUp.entities;
  }

  const eta = int(random, 2, 45);
  const late = random() < 0.55 ? int(random, 11, 60) : int(random, 0, 10);
  let comp = 'no';
  if (late > 10) comp = random() < 0.85 ? 'due' : 'issued';
  const facts: Facts = { order: 'delivering', eta, late, comp };
  if (comp === 'due') say(facts, 'issue_coupon', pick(random, bank.agentReplies.etaWithCoupon));
  else if (comp === 'issued') say(facts, 'none', pick(random, bank.agentReplies.etaCouponIssued));
  else if (intent === 'request_compensation') say(facts, 'none', pick(random, bank.agentReplies.etaNotEligible));
  else say(facts, 'none', pick(random, bank.agentReplies.etaOnly));
  return examples;
}

function riderEtaExpression(random: Random, heldOut: boolean): string {
  return pick(random, heldOut ? bank.riderEtaExpressions.heldout : bank.riderEtaExpressions.train);
}

/** Generates one exchange of the rider-facing agent with a rider about an ETA. */
export function riderAgentConversation(random: Random, heldOut: boolean): Example[] {
  const b = <T>(items: readonly T[]) => bank.splitBank(items, heldOut);
  const examples: Example[] = [];
  const transcript: TranscriptLine[] = [];
  const orderTail = String(int(random, 0, 9999)).padStart(4, '0');
  const calm = { emotion: 'calm' as const, entities: {} };

  const question = pick(random, bank.riderAgentReplies.askEta);
  examples.push(example('rider_agent', { task: 'ask_eta', asked: 0 }, [], { intent: 'other', ...calm, action: 'message_rider', reply: question }));
  transcript.push({ speaker: 'agent', text: question.replace('{order_tail}', orderTail) });

  for (let round = 0; round < 3; round++) {
    const kind = round === 2 ? 'eta' : pick(random, ['eta', 'eta', 'eta', 'delay', 'delivered', 'chitchat'] as const);
    const facts: Facts = { task: 'ask_eta', asked: round + 1 };
    if (kind === 'eta') {
      const eta = riderEtaExpression(random, heldOut);
      transcript.push({ speaker: 'rider', text: pick(random, b(bank.riderEtaSentences)).replace('{eta}', eta) });
      const turn: Turn = { intent: 'provide_eta', emotion: 'calm', entities: { eta }, action: 'report_eta', reply: pick(random, bank.riderAgentReplies.ack) };
      examples.push(example('rider_agent', facts, [...transcript], turn));
      return examples;
    }
    if (kind === 'delivered') {
      transcript.push({ speaker: 'rider', text: pick(random, b(bank.riderDeliveredSentences)) });
      const turn: Turn = { intent: 'report_delivered', ...calm, action: 'report_delivered', reply: pick(random, bank.riderAgentReplies.ack) };
      examples.push(example('rider_agent', facts, [...transcript], turn));
      return examples;
    }
    const reAsk = pick(random, bank.riderAgentReplies.reAsk);
    if (kind === 'delay') {
      const reason = pick(random, b(bank.riderDelayReasons));
      transcript.push({ speaker: 'rider', text: pick(random, b(bank.riderDelaySentences)).replace('{reason}', reason) });
      examples.push(example('rider_agent', facts, [...transcript], { intent: 'report_delay', emotion: 'calm', entities: { reason }, action: 'message_rider', reply: reAsk }));
    } else {
      transcript.push({ speaker: 'rider', text: pick(random, b(bank.riderChitchat)) });
      examples.push(example('rider_agent', facts, [...transcript], { intent: 'other', ...calm, action: 'message_rider', reply: reAsk }));
    }
    transcript.push({ speaker: 'agent', text: reAsk });
  }
  return examples;
}

/** Generates the simulated rider's reply to the rider-facing agent, with the ETA from its facts line. */
export function simRiderExample(random: Random, heldOut: boolean): Example {
  const situation = pick(random, ['normal', 'traffic', 'near', 'rain'] as const);
  const eta = situation === 'near' ? int(random, 1, 6) : int(random, 3, 40);
  const orderTail = String(int(random, 0, 9999)).padStart(4, '0');
  const question = pick(random, bank.riderAgentReplies.askEta).replace('{order_tail}', orderTail);
  const reply = pick(random, bank.simRiderSentences[situation]).replace('{n}', String(eta));
  const turn: Turn = { intent: 'provide_eta', emotion: 'calm', entities: {}, action: 'say', reply };
  void heldOut;
  return example('sim_rider', { eta, situation }, [{ speaker: 'agent', text: question }], turn);
}

/** Generates the simulated customer's turns: an opening complaint, then a closing line after the agent's reply. */
export function simCustomerExamples(random: Random, heldOut: boolean): Example[] {
  const mood = pick(random, ['calm', 'anxious', 'angry'] as const);
  const goal = pick(random, ['late_order', 'late_order', 'compensation'] as const);
  const intent: Intent = goal === 'compensation' ? 'request_compensation' : 'query_delivery';
  let utterance = customerUtterance(random, heldOut, intent);
  // The simulated customer speaks in the mood of its facts, so resample until the tail matches.
  for (let tries = 0; tries < 20 && utterance.emotion !== mood; tries++) utterance = customerUtterance(random, heldOut, intent);
  const facts: Facts = { goal, mood };
  const opening: Turn = { intent, emotion: utterance.emotion, entities: {}, action: 'say', reply: utterance.text };
  const examples = [example('sim_customer', facts, [], opening)];

  const transcript: TranscriptLine[] = [
    { speaker: 'customer', text: utterance.text },
    { speaker: 'agent', text: pick(random, bank.agentReplies.askRider) },
  ];
  const eta = String(int(random, 2, 40));
  const final = pick(random, [...bank.agentReplies.etaWithCoupon, ...bank.agentReplies.etaOnly, ...bank.agentReplies.etaNotEligible])
    .replace('{eta_min}', eta)
    .replace('{late_min}', String(int(random, 11, 50)))
    .replace('{coupon_yuan}', String(int(random, 3, 10)));
  transcript.push({ speaker: 'agent', text: final });
  const closing: Turn = { intent: 'thanks', emotion: mood, entities: {}, action: 'end', reply: pick(random, bank.simCustomerClosings[mood]) };
  examples.push(example('sim_customer', facts, transcript, closing));
  return examples;
}
