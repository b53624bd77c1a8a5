/**
 * A stand-in for the engine in unit tests of the runtime: it answers each prompt with the turn
 * the model was trained to give, read from the prompt's role and facts. Integration tests use
 * the real engine instead.
 */
import type { GenerateRequest, GenerateResult, TextGenerator } from '../../engine/engine.ts';

function turn(fields: Record<string, unknown>): string {
  return JSON.stringify({ intent: 'query_delivery', emotion: 'calm', entities: {}, action: 'none', reply: '', ...fields });
}

function answer(prompt: string): string {
  const role = /<\|sys\|>(\w+)/.exec(prompt)?.[1];
  const facts = Object.fromEntries((/<\|facts\|>([^\n]*)/.exec(prompt)?.[1] ?? '').split(' ').map((pair) => pair.split('=')));
  const lastRider = [...prompt.matchAll(/<\|rider\|>([^\n]*)/g)].at(-1)?.[1];
  const lastCustomer = [...prompt.matchAll(/<\|customer\|>([^\n]*)/g)].at(-1)?.[1] ?? '';

  if (role === 'sim_customer') {
    const answered = prompt.includes('分钟');
    return turn({ action: answered ? 'end' : 'say', reply: answered ? '好的，谢谢' : '我的外卖怎么还没到？' });
  }
  if (role === 'sim_rider') return turn({ intent: 'provide_eta', action: 'say', reply: `大概${facts.eta}分钟到` });
  if (role === 'rider_agent') {
    if (!lastRider) return turn({ intent: 'other', action: 'message_rider', reply: '您好，尾号{order_tail}的顾客在问，请问多久能到？' });
    const eta = /\d+分钟/.exec(lastRider)?.[0];
    if (eta) return turn({ intent: 'provide_eta', entities: { eta }, action: 'report_eta', reply: '好的，辛苦了' });
    return turn({ intent: 'report_delay', action: 'message_rider', reply: '请问大概多久能到？' });
  }

  if (lastCustomer.includes('转人工')) return turn({ intent: 'request_human', action: 'handoff', reply: '正在为您转接人工客服' });
  if (facts.order === 'none') return turn({ action: 'lookup_order' });
  if (facts.order !== 'delivering') return turn({ reply: '订单状态已更新' });
  if (facts.eta === 'unknown') return turn({ action: 'ask_rider_eta', reply: '我马上联系骑手' });
  if (facts.eta === 'asked') return turn({ reply: '正在联系骑手，请稍等' });
  if (facts.comp === 'due') return turn({ action: 'issue_coupon', reply: '骑手预计{eta_min}分钟后送达，已发放{coupon_yuan}元优惠券' });
  return turn({ reply: '骑手预计{eta_min}分钟后送达' });
}

export interface ScriptedEngine extends TextGenerator {
  prompts: string[];
}

/** Creates the stand-in; `override` may replace the answer for chosen prompts (return undefined to keep it). */
export function scriptedEngine(override?: (prompt: string) => string | undefined): ScriptedEngine {
  const prompts: string[] = [];
  return {
    prompts,
    async generate(request: GenerateRequest): Promise<GenerateResult> {
      if (request.signal?.aborted) throw Object.assign(new Error('aborted'), { code: 'aborted' });
      prompts.push(request.prompt);
      await new Promise((resolve) => setTimeout(resolve, 1));
      const text = override?.(request.prompt) ?? answer(request.prompt);
      return { text, promptTokens: 0, completionTokens: 0, finishReason: 'stop', queueMs: 0, firstTokenMs: 0, totalMs: 1 };
    },
  };
}
