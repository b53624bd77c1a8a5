/**
 * The fallback strategy library: prepared replies, in Simplified Chinese and English, that the
 * runtime sends when a model turn fails validation, times out or the engine is overloaded.
 * `fallbackDecision` picks the next step from the case's facts alone, so a case keeps moving
 * even when no model turn succeeds.
 */
import { fillSlots, type SlotValues } from '../agents/parse.ts';
import type { Locale } from '../agents/prompt.ts';
import type { Action, Intent } from '../agents/turn.ts';

export interface Strategy {
  id: string;
  /** When the strategy applies, for people maintaining the library. */
  situation: string;
  text: Record<Locale, string>;
}

const library = [
  {
    id: 'late.ask_rider',
    situation: 'order is out for delivery and the ETA is unknown',
    text: {
      zh: '您的订单正在配送中，我正在联系骑手确认送达时间，请稍等。',
      en: 'Your order is on its way. I am checking the arrival time with the rider, one moment please.',
    },
  },
  {
    id: 'late.still_asking',
    situation: 'the rider has been asked and has not answered yet',
    text: { zh: '正在等待骑手回复，有结果会第一时间告诉您。', en: 'I am waiting for the rider to reply and will tell you as soon as I hear back.' },
  },
  {
    id: 'late.eta',
    situation: 'ETA known, no compensation due',
    text: { zh: '骑手预计{eta_min}分钟后送达，请您耐心等待。', en: 'The rider expects to arrive in {eta_min} minutes. Thank you for your patience.' },
  },
  {
    id: 'late.eta_coupon',
    situation: 'ETA known and the order is late past the threshold: coupon issued',
    text: {
      zh: '骑手预计{eta_min}分钟后送达，比承诺时间晚约{late_min}分钟，非常抱歉！已为您发放{coupon_yuan}元优惠券。',
      en: 'The rider expects to arrive in {eta_min} minutes, about {late_min} minutes later than promised, so we have issued you a {coupon_yuan} yuan coupon. We are sorry.',
    },
  },
  {
    id: 'late.eta_coupon_issued',
    situation: 'ETA known, coupon already issued earlier in the case',
    text: {
      zh: '骑手预计{eta_min}分钟后送达，之前为您发放的{coupon_yuan}元优惠券已到账。',
      en: 'The rider expects to arrive in {eta_min} minutes. The {coupon_yuan} yuan coupon issued earlier is in your account.',
    },
  },
  {
    id: 'order.preparing',
    situation: 'order still being prepared by the merchant',
    text: { zh: '您的订单商家正在出餐中，出餐后会尽快安排骑手配送。', en: 'The merchant is still preparing your order; a rider will pick it up as soon as it is ready.' },
  },
  {
    id: 'order.delivered',
    situation: 'order already delivered',
    text: { zh: '系统显示您的订单已经送达，请您在门口或取餐点看一下。', en: 'Your order is marked as delivered. Please check your door or the pick-up point.' },
  },
  {
    id: 'order.cancelled',
    situation: 'order cancelled',
    text: { zh: '该订单已取消，款项会原路退回。', en: 'This order was cancelled; the payment will be refunded to the original method.' },
  },
  {
    id: 'handoff',
    situation: 'the customer asks for a person, or the case cannot continue automatically',
    text: { zh: '正在为您转接人工客服，请稍候。', en: 'Connecting you to a customer service agent, one moment please.' },
  },
  {
    id: 'greeting',
    situation: 'the customer greets the agent',
    text: { zh: '您好，我是智能客服，请问有什么可以帮您？', en: 'Hello, I am the customer service assistant. How can I help you?' },
  },
  {
    id: 'thanks',
    situation: 'the customer thanks the agent or closes the conversation',
    text: { zh: '不客气，祝您用餐愉快！', en: 'You are welcome. Enjoy your meal!' },
  },
  {
    id: 'other',
    situation: 'a request outside the delivery flow',
    text: {
      zh: '抱歉，这个问题我暂时无法处理，您可以描述订单遇到的问题，或回复“转人工”。',
      en: 'Sorry, I cannot help with that yet. Please describe the problem with your order, or reply "human" for a person.',
    },
  },
  {
    id: 'busy',
    situation: 'the engine is overloaded or timed out and no step can be taken from the facts',
    text: { zh: '抱歉，系统有点忙，请稍后再试，或回复“转人工”。', en: 'Sorry, the system is busy. Please try again shortly or reply "human" for a person.' },
  },
  {
    id: 'rider.ask_eta',
    situation: 'rider-facing: ask the rider for an ETA',
    text: {
      zh: '您好，订单尾号{order_tail}的顾客在询问送达时间，请问您大概多久能送到？',
      en: 'Hello, the customer of the order ending {order_tail} is asking when it will arrive. How long do you need?',
    },
  },
  {
    id: 'rider.re_ask',
    situation: 'rider-facing: the rider answered without a time',
    text: { zh: '辛苦了！请问大概还需要多久能送到？', en: 'Thank you! Roughly how many more minutes do you need?' },
  },
  {
    id: 'rider.ack',
    situation: 'rider-facing: ETA received',
    text: { zh: '好的，收到，辛苦了，路上注意安全！', en: 'Got it, thank you. Ride safely!' },
  },
] as const satisfies readonly Strategy[];

export type StrategyId = (typeof library)[number]['id'];

const byId = new Map<string, Strategy>(library.map((strategy) => [strategy.id, strategy]));

export function listStrategies(): readonly Strategy[] {
  return library;
}

/** Renders a strategy's text in `locale`; a slot without a value throws, since that is a runtime bug. */
export function renderStrategy(id: StrategyId, locale: Locale, slots: SlotValues = {}): string {
  const strategy = byId.get(id)!;
  const filled = fillSlots(strategy.text[locale], slots);
  if (!filled.ok) throw new Error(`strategy ${id}: ${filled.detail}`);
  return filled.reply;
}

/** Facts of the user-facing dialogue, as the runtime tracks them. */
export interface DeliveryFacts {
  order: 'none' | 'placed' | 'preparing' | 'delivering' | 'delivered' | 'cancelled';
  eta: 'unknown' | 'asked' | number;
  late: number;
  comp: 'no' | 'due' | 'issued';
}

/** Decides, from the facts alone, the step the user-facing agent takes when its model turn failed. */
export function fallbackDecision(facts: DeliveryFacts): { action: Action; strategy: StrategyId | null } {
  if (facts.order === 'none') return { action: 'lookup_order', strategy: null };
  if (facts.order === 'preparing' || facts.order === 'placed') return { action: 'none', strategy: 'order.preparing' };
  if (facts.order === 'delivered') return { action: 'none', strategy: 'order.delivered' };
  if (facts.order === 'cancelled') return { action: 'none', strategy: 'order.cancelled' };
  if (facts.eta === 'unknown') return { action: 'ask_rider_eta', strategy: 'late.ask_rider' };
  if (facts.eta === 'asked') return { action: 'none', strategy: 'late.still_asking' };
  if (facts.comp === 'due') return { action: 'issue_coupon', strategy: 'late.eta_coupon' };
  if (facts.comp === 'issued') return { action: 'none', strategy: 'late.eta_coupon_issued' };
  return { action: 'none', strategy: 'late.eta' };
}

/**
 * Picks the strategy whose text matches a validated model turn's reply, for a case whose locale the
 * model does not speak. Returns null for a turn that sends nothing (an order lookup).
 */
export function strategyForTurn(action: Action, intent: Intent, facts: DeliveryFacts): StrategyId | null {
  switch (action) {
    case 'lookup_order':
      return null;
    case 'ask_rider_eta':
      return 'late.ask_rider';
    case 'issue_coupon':
      return 'late.eta_coupon';
    case 'handoff':
      return 'handoff';
  }
  if (intent === 'greeting' || intent === 'thanks' || intent === 'other') return intent;
  return fallbackDecision(facts).strategy ?? 'other';
}

/** Picks the rider-facing strategy for a validated rider-agent turn. */
export function riderStrategyForTurn(action: Action, riderHasReplied: boolean): StrategyId {
  if (action === 'report_eta' || action === 'report_delivered') return 'rider.ack';
  return riderHasReplied ? 'rider.re_ask' : 'rider.ask_eta';
}
