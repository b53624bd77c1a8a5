/**
 * The effects behind the case machine's `userTurn`, `riderTurn` and `platformEta` actors:
 * model turns through the agents, platform actions through the tools, and messages through
 * the case service's `deliver`. Every effect carries a key derived from the case's state, so
 * a turn replayed after a restart neither repeats a message nor pays twice.
 */
import { runAgentTurn, type AgentOptions } from '../agents/agent.ts';
import { parseEtaMinutes } from '../agents/eta.ts';
import { maxTranscriptLines, promptLocale, type TranscriptLine } from '../agents/prompt.ts';
import type { Action } from '../agents/turn.ts';
import { callTool } from '../tools/index.ts';
import type { ToolDeps } from '../tools/index.ts';
import type { CaseContext, RiderTurnOutput, UserTurnOutput } from './case-machine.ts';
import type { Config } from './config.ts';
import { promptFacts, replySlotValues, withLateness } from './facts.ts';
import { caseLogger } from './log.ts';
import { listCouponsForCase } from './store/coupons.ts';
import type { Db } from './store/db.ts';
import { listRecentMessages } from './store/messages.ts';
import { getOrder } from './store/orders.ts';
import type { Party } from './store/schema.ts';
import { fallbackDecision, renderStrategy, riderStrategyForTurn, strategyForTurn, type DeliveryFacts } from './strategies.ts';

export interface TurnDeps {
  tools: ToolDeps;
  agent: AgentOptions;
  config: Pick<Config, 'lateThresholdMin' | 'lateCouponYuan' | 'limits'>;
  now: () => number;
  /** Persists an agent message to `party` and sends it; `key` makes a replay a no-op. */
  deliver: (caseId: string, party: Party, text: string, key: string) => void;
}

/** Loads the case's transcript with one party as prompt lines. */
export function transcriptWith(db: Db, caseId: string, party: 'customer' | 'rider'): TranscriptLine[] {
  // Prompts keep only the latest lines, so a long case costs no more to prompt than a short one.
  return listRecentMessages(db, caseId, party, maxTranscriptLines)
    .map((message) => ({ speaker: message.direction === 'in' ? party : 'agent', text: message.text }));
}

function couponsIssuedYuan(deps: TurnDeps, caseId: string): number {
  return listCouponsForCase(deps.tools.db, caseId).reduce((sum, coupon) => sum + coupon.amountFen, 0) / 100;
}

/** Checks that `action` is a step the facts allow, because a model turn asking for anything else is not trusted. */
function actionFitsFacts(action: Action, facts: DeliveryFacts): boolean {
  switch (action) {
    case 'lookup_order':
      return facts.order === 'none';
    case 'ask_rider_eta':
      return facts.order === 'delivering' && facts.eta === 'unknown';
    case 'issue_coupon':
      return facts.comp === 'due';
    default:
      return true;
  }
}

/**
 * Whether a reply template states what the customer must hear: the ETA once it is known and
 * the coupon when one is issued. A valid turn that leaves either out is replaced by a
 * strategy reply.
 */
function replyStatesFacts(template: string, action: Action, facts: DeliveryFacts): boolean {
  const speaksOfDelivery = facts.order === 'delivering' && typeof facts.eta === 'number' && (action === 'none' || action === 'issue_coupon');
  if (speaksOfDelivery && !template.includes('{eta_min}')) return false;
  if (action === 'issue_coupon' && !template.includes('{coupon_yuan}')) return false;
  return statusClaims.every(([claim, holds]) => !claim.test(template) || holds(facts));
}

/**
 * Order states a reply may claim, each with the facts that must hold for the claim. A reply
 * claiming an out-for-delivery order was cancelled (and promising a refund) is not sent.
 */
const statusClaims: [RegExp, (facts: DeliveryFacts) => boolean][] = [
  [/取消|退款|cancel|refund/i, (facts) => facts.order === 'cancelled'],
  [/已送达|已经送达|送到了|delivered/i, (facts) => facts.order === 'delivered'],
  [/出餐|制作中|备餐|preparing/i, (facts) => facts.order === 'preparing' || facts.order === 'placed'],
  [/确认中|正在联系|正在帮您联系|等骑手回复|等待骑手|正在等/, (facts) => facts.order === 'delivering' && typeof facts.eta !== 'number'],
];

const maxUserSteps = 4;

class TurnAborted extends Error {
  override readonly name = 'TurnAborted';
}

/**
 * Runs the user-facing agent until it has replied or handed over. A failure other than a
 * barge-in still sends the customer the 'busy' strategy reply, so no message goes without one.
 */
export async function userTurn(deps: TurnDeps, context: CaseContext, signal: AbortSignal): Promise<UserTurnOutput> {
  try {
    return await userTurnSteps(deps, context, signal);
  } catch (error) {
    if (error instanceof TurnAborted || signal.aborted) throw error;
    caseLogger(context.caseId).error({ err: error, customerSeq: context.customerSeq }, 'user turn failed; replied with the busy strategy');
    deps.deliver(context.caseId, 'customer', renderStrategy('busy', context.locale), `${context.caseId}:t${context.turnCount}:failed`);
    return { facts: context.facts, next: 'idle' };
  }
}

async function userTurnSteps(deps: TurnDeps, context: CaseContext, signal: AbortSignal): Promise<UserTurnOutput> {
  const logger = caseLogger(context.caseId);
  const order = getOrder(deps.tools.db, context.orderId);
  if (!order) throw new Error(`order ${context.orderId} of case ${context.caseId} not found`);
  const toolContext = (key: string) => ({ caseId: context.caseId, role: 'user_agent' as const, idempotencyKey: key, now: deps.now() });
  const keyPrefix = `${context.caseId}:t${context.turnCount}`;

  let issued = couponsIssuedYuan(deps, context.caseId);
  let facts = withLateness(context.facts, order, deps.now(), { lateThresholdMin: deps.config.lateThresholdMin, couponsIssuedYuan: issued });
  const remaining = Math.max(0, deps.config.limits.maxCompensationYuanPerCase - issued);
  const dueCouponYuan = Math.min(deps.config.lateCouponYuan, remaining);
  if (facts.comp === 'due' && dueCouponYuan <= 0) facts = { ...facts, comp: 'no' };

  for (let step = 0; step < maxUserSteps; step++) {
    let couponYuan: number | undefined;
    if (facts.comp === 'due') couponYuan = dueCouponYuan;
    else if (facts.comp === 'issued') couponYuan = issued;
    const slots = replySlotValues(facts, context.orderId, couponYuan);
    const result = await runAgentTurn(deps.agent, {
      role: 'user_agent',
      locale: promptLocale(context.locale),
      facts: promptFacts(facts),
      transcript: transcriptWith(deps.tools.db, context.caseId, 'customer'),
      slots,
      signal,
    });
    if (result.status === 'aborted') throw new TurnAborted('user turn aborted by a newer customer message');

    let action: Action;
    let reply: string | null;
    if (result.status === 'ok' && actionFitsFacts(result.turn.action, facts) && replyStatesFacts(result.turn.reply, result.turn.action, facts)) {
      action = result.turn.action;
      reply = result.reply;
      if (promptLocale(context.locale) !== context.locale) {
        const strategy = strategyForTurn(action, result.turn.intent, facts);
        reply = strategy ? renderStrategy(strategy, context.locale, slots) : null;
        // A strategy chosen from the facts (say, "asking the rider") comes with its own action,
        // which must run so that the reply does not promise a step that never happens.
        const decision = fallbackDecision(facts);
        if (action === 'none' && strategy !== null && strategy === decision.strategy) action = decision.action;
      }
      logger.info({ intent: result.turn.intent, emotion: result.turn.emotion, action, latencyMs: Math.round(result.latencyMs) }, 'user agent turn');
    } else {
      const decision = fallbackDecision(facts);
      action = decision.action;
      reply = decision.strategy ? renderStrategy(decision.strategy, context.locale, slots) : null;
      const reason = result.status === 'fallback' ? result.reason : `turn (${result.turn.action}) does not fit the facts`;
      // The rejection detail can quote model output or message text, so only the reason is logged.
      logger.warn({ reason, action, strategy: decision.strategy }, 'user agent turn fell back to a strategy');
    }

    const say = (text: string | null) => {
      if (text) deps.deliver(context.caseId, 'customer', text, `${keyPrefix}:s${step}`);
    };
    switch (action) {
      case 'lookup_order': {
        const view = callTool('lookup_order', { orderId: context.orderId }, toolContext(`${keyPrefix}:lookup`), deps.tools).output;
        if (view.view !== 'service') throw new Error('lookup_order returned the rider view to the user agent');
        facts = { ...facts, order: view.status };
        continue;
      }
      case 'ask_rider_eta':
        callTool('ask_rider_eta', { orderId: context.orderId }, toolContext(`${keyPrefix}:ask_rider`), deps.tools);
        say(reply);
        return { facts: { ...facts, eta: 'asked' }, next: 'ask_rider' };
      case 'issue_coupon': {
        const coupon = callTool('issue_coupon', { orderId: context.orderId, amountYuan: dueCouponYuan }, toolContext(`${context.caseId}:late_coupon`), deps.tools).output;
        issued = coupon.caseTotalYuan;
        say(reply);
        return { facts: { ...facts, comp: 'issued' }, next: 'idle' };
      }
      case 'handoff':
        say(reply ?? renderStrategy('handoff', context.locale));
        return { facts, next: 'handoff' };
      default:
        say(reply);
        return { facts, next: 'idle' };
    }
  }
  deps.deliver(context.caseId, 'customer', renderStrategy('busy', context.locale), `${keyPrefix}:busy`);
  return { facts, next: 'idle' };
}

const maxRiderQuestions = 3;

export async function riderTurn(deps: TurnDeps, context: CaseContext, signal: AbortSignal): Promise<RiderTurnOutput> {
  const logger = caseLogger(context.caseId);
  const slots = { order_tail: context.orderId.slice(-4) };
  const transcript = transcriptWith(deps.tools.db, context.caseId, 'rider');
  const riderText = context.riderText;
  const key = `${context.caseId}:r${context.riderQuestions}`;

  if (riderText === null && context.riderQuestions >= maxRiderQuestions) return { next: 'give_up' };

  const result = await runAgentTurn(deps.agent, {
    role: 'rider_agent',
    locale: promptLocale(context.locale),
    facts: { task: 'ask_eta', asked: context.riderQuestions },
    transcript,
    slots,
    signal,
  });
  if (result.status === 'aborted') throw new TurnAborted('rider turn aborted');

  const ask = (text: string): RiderTurnOutput => {
    if (context.riderQuestions >= maxRiderQuestions) return { next: 'give_up' };
    deps.deliver(context.caseId, 'rider', text, `${key}:ask`);
    return { next: 'wait', riderQuestions: context.riderQuestions + 1 };
  };
  const etaFrom = (entity: string | undefined) => {
    const now = new Date(deps.now());
    return (entity ? parseEtaMinutes(entity, now) : undefined) ?? (riderText ? parseEtaMinutes(riderText, now) : undefined);
  };
  const reportEta = (etaMin: number, ack: string): RiderTurnOutput => {
    callTool('record_rider_eta', { orderId: context.orderId, etaMin }, { caseId: context.caseId, role: 'rider_agent', idempotencyKey: `${key}:eta`, now: deps.now() }, deps.tools);
    deps.deliver(context.caseId, 'rider', ack, `${key}:ack`);
    return { next: 'eta', etaMin };
  };

  if (result.status === 'ok') {
    logger.info({ intent: result.turn.intent, action: result.turn.action, latencyMs: Math.round(result.latencyMs) }, 'rider agent turn');
    const { action, entities } = result.turn;
    if (promptLocale(context.locale) !== context.locale) {
      result.reply = renderStrategy(riderStrategyForTurn(action, riderText !== null), context.locale, slots);
    }
    if (riderText === null) return ask(action === 'message_rider' ? result.reply : renderStrategy('rider.ask_eta', context.locale, slots));
    if (action === 'report_delivered') {
      deps.deliver(context.caseId, 'rider', result.reply, `${key}:ack`);
      return { next: 'delivered' };
    }
    const etaMin = etaFrom(entities.eta);
    if (etaMin !== undefined) return reportEta(etaMin, action === 'report_eta' ? result.reply : renderStrategy('rider.ack', context.locale));
    return ask(action === 'message_rider' ? result.reply : renderStrategy('rider.re_ask', context.locale));
  }

  logger.warn({ reason: result.reason }, 'rider agent turn fell back to a strategy');
  if (riderText === null) return ask(renderStrategy('rider.ask_eta', context.locale, slots));
  const etaMin = etaFrom(undefined);
  if (etaMin !== undefined) return reportEta(etaMin, renderStrategy('rider.ack', context.locale));
  return ask(renderStrategy('rider.re_ask', context.locale));
}

/** Returns the facts with the platform's own ETA, used when the rider does not reply in time. */
export async function platformEta(deps: TurnDeps, context: CaseContext): Promise<DeliveryFacts> {
  const order = getOrder(deps.tools.db, context.orderId);
  const eta = order?.riderEtaMin ?? 15;
  caseLogger(context.caseId).info({ eta }, 'rider gave no ETA; using the platform estimate');
  return { ...context.facts, eta };
}
