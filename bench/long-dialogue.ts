/**
 * Long agent prompts for the context benchmarks: the prompt format's header and facts, then a
 * dialogue of customer and agent chatter far past the 8 lines the runtime keeps, then one last
 * customer line. The chatter states no facts, so a correct turn must use the facts line at the
 * very start of the context.
 */
import type { Facts } from '../agents/prompt.ts';
import { renderFacts, specialTokens } from '../agents/prompt.ts';
import type { TextTokenizer } from '../engine/tokenizer.ts';

const customerLines = [
  '我的外卖怎么还没到？',
  '都等了好久了，能不能快一点',
  '骑手到哪了，地图上半天不动',
  '孩子还饿着呢，麻烦催一下',
  '我一会儿还要出门，急',
  '电话也打不通，怎么回事',
];
const agentLines = ['您好，我正在帮您查询，请稍候。', '理解您的心情，我这边在跟进。', '非常抱歉让您久等了。', '请您再耐心等一下，有消息马上告诉您。'];

export const finalCustomerLine = '到底还要多久？';

/** Facts whose correct turns differ: a coupon due (issue_coupon), not due, or already issued. */
export const factCases: Facts[] = [
  { order: 'delivering', eta: 12, late: 20, comp: 'due' },
  { order: 'delivering', eta: 25, late: 35, comp: 'due' },
  { order: 'delivering', eta: 8, late: 0, comp: 'no' },
  { order: 'delivering', eta: 5, late: 3, comp: 'no' },
  { order: 'delivering', eta: 15, late: 30, comp: 'issued' },
  { order: 'delivering', eta: 9, late: 18, comp: 'issued' },
];

export interface LongPrompt {
  prompt: string;
  tokens: number;
}

/** Builds a user-agent prompt with `facts` and at most `targetTokens` tokens, as close to it as lines allow. */
export function longDialoguePrompt(tokenizer: TextTokenizer, facts: Facts, targetTokens: number, seed = 0): LongPrompt {
  const head = `${specialTokens.system}user_agent zh\n${specialTokens.facts}${renderFacts(facts)}\n`;
  const tail = `${specialTokens.customer}${finalCustomerLine}\n${specialTokens.turn}`;
  // Lines are numbered from the end, so a shorter prompt's dialogue is the tail of a longer one's.
  const lines: string[] = [];
  // Every line pair takes well over 4 tokens, so this many lines always overshoot the target.
  for (let i = 0; lines.length < Math.ceil(targetTokens / 4) + 2; i++) {
    const customer = customerLines[(i * 5 + seed) % customerLines.length]!;
    const agent = agentLines[(i * 3 + seed) % agentLines.length]!;
    lines.unshift(`${specialTokens.customer}${customer}\n`, `${specialTokens.agent}${agent}\n`);
  }
  const total = lines.length;
  const render = (count: number) => head + lines.slice(total - count).join('') + tail;
  const measure = (count: number) => tokenizer.encode(render(count)).length;

  // Tokens rise with the line count, so a binary search finds the most lines that fit.
  let low = 0;
  let high = lines.length;
  while (low < high) {
    const middle = Math.floor((low + high + 1) / 2);
    if (measure(middle) <= targetTokens) low = middle;
    else high = middle - 1;
  }
  const prompt = render(low);
  return { prompt, tokens: tokenizer.encode(prompt).length };
}
