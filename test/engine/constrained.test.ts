import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseTurn } from '../../agents/parse.ts';
import { actionsByRole, actions, emotions, entityNames, intents, turnSchema, type Action, type Turn } from '../../agents/turn.ts';
import { ConstraintError, jsonSchemaConstraint, tokenVocabulary, type TokenConstraint, type TokenVocabulary } from '../../engine/constrained/index.ts';
import { grammarFromZod } from '../../engine/constrained/from-zod.ts';
import { advanceBytes, initialState } from '../../engine/constrained/matcher.ts';
import { TokenMasker } from '../../engine/constrained/token-mask.ts';
import { TextTokenizer } from '../../engine/tokenizer.ts';
import { defaultModelDir } from '../support/model.ts';
import { createRandom } from '../../engine/sampler.ts';

let tokenizer: TextTokenizer;
let vocabulary: TokenVocabulary;
let endId: number;

beforeAll(() => {
  const readJson = (name: string) => JSON.parse(readFileSync(join(defaultModelDir, name), 'utf8')) as Record<string, unknown>;
  tokenizer = new TextTokenizer({ tokenizerJson: readJson('tokenizer.json'), tokenizerConfig: readJson('tokenizer_config.json') });
  vocabulary = tokenVocabulary(tokenizer);
  endId = vocabulary.specialTokens.get('<|end|>')!;
});

/** Returns the ids whose logits survive masking, leaving the constraint's state unchanged. */
function allowedIds(constraint: TokenConstraint): number[] {
  const logits = new Float32Array(vocabulary.size);
  constraint.maskLogits(logits);
  const ids: number[] = [];
  logits.forEach((value, id) => {
    if (value === 0) ids.push(id);
  });
  return ids;
}

const entityValues = ['黄焖鸡米饭', '一个小时', '十分钟', '电梯坏了', '等了快四十分钟了还没有到我真的很着急啊😡', '麻辣烫"加辣"', '路上堵车\n', '五分钟', `${'一'.repeat(38)}😡`];
const replies = [
  '您好，我马上帮您查询订单{order_tail}的配送情况。',
  '骑手预计{eta_min}分钟送达，给您带来不便非常抱歉！',
  '已为您发放{coupon_yuan}元优惠券😀',
  '',
  '好的',
  '请稍候……我这边联系一下骑手“王师傅”',
  'quote " and backslash \\ and tab \t inside',
  '超时{late_min}分钟了，'.repeat(6),
  '这'.repeat(200),
];

/** Builds turns that cover every enum value, varied entity subsets and orders, and tricky replies. */
function sampleTurns(): Turn[] {
  const turns: Turn[] = [];
  for (let index = 0; index < 120; index++) {
    const entities: Turn['entities'] = {};
    const names = index % 2 === 0 ? [...entityNames] : [...entityNames].reverse();
    names.forEach((name, position) => {
      if ((index >> position) & 1) entities[name] = entityValues[(index + position) % entityValues.length]!;
    });
    turns.push({
      intent: intents[index % intents.length]!,
      emotion: emotions[index % emotions.length]!,
      entities,
      action: actions[(index * 3) % actions.length]!,
      reply: replies[index % replies.length]!,
    });
  }
  return turns;
}

describe('token vocabulary', () => {
  it('reads bytes for every non-special token', () => {
    expect(vocabulary.size).toBe(3000);
    expect([...vocabulary.specialTokens.keys()]).toContain('<|end|>');
    for (const id of vocabulary.specialTokens.values()) expect(vocabulary.tokenBytes[id]).toBeUndefined();
    const withBytes = vocabulary.tokenBytes.filter((bytes) => bytes !== undefined);
    expect(withBytes.length).toBe(3000 - vocabulary.specialTokens.size);
  });

  it('recovers partial UTF-8 tokens that decode to U+FFFD', () => {
    const partial = vocabulary.tokenBytes.findIndex((bytes, id) => bytes !== undefined && tokenizer.decode([id]).includes('\uFFFD'));
    expect(partial).toBeGreaterThanOrEqual(0);

    // A character split across tokens decodes to the same text from the recovered bytes.
    const ids = tokenizer.encode('外卖怎么还没到？骑手说十分钟');
    const bytes = ids.flatMap((id) => [...vocabulary.tokenBytes[id]!]);
    expect(new TextDecoder().decode(new Uint8Array(bytes))).toBe('外卖怎么还没到？骑手说十分钟');
  });
});

describe('turn constraint', () => {
  it('accepts tokenized valid turns token by token', () => {
    const factory = jsonSchemaConstraint(turnSchema, vocabulary, { endTokenIds: [endId] });
    for (const turn of sampleTurns()) {
      const text = JSON.stringify(turn);
      expect(turnSchema.safeParse(JSON.parse(text)).success).toBe(true);

      const constraint = factory.create();
      for (const id of tokenizer.encode(text)) {
        expect(constraint.isComplete(), text).toBe(false);
        expect(allowedIds(constraint), `token ${id} in ${text}`).toContain(id);
        constraint.accept(id);
      }
      expect(constraint.isComplete(), text).toBe(true);
      expect(allowedIds(constraint)).toEqual([endId]);
      constraint.accept(endId);
      expect(constraint.isComplete()).toBe(true);
    }
  });

  it('completes random walks with valid turns', () => {
    const factory = jsonSchemaConstraint(turnSchema, vocabulary, { endTokenIds: [endId] });
    const random = createRandom(20240611);
    const walks = 60;
    const maxSteps = 400;
    let completed = 0;

    for (let walk = 0; walk < walks; walk++) {
      const constraint = factory.create();
      const ids: number[] = [];
      for (let step = 0; step < maxSteps; step++) {
        const allowed = allowedIds(constraint);
        expect(allowed.length).toBeGreaterThan(0);
        // The end token is offered only once the turn is closed, and then alone.
        expect(allowed.includes(endId)).toBe(constraint.isComplete());
        const id = allowed[Math.floor(random() * allowed.length)]!;
        constraint.accept(id);
        if (id === endId) break;
        ids.push(id);
      }
      if (!constraint.isComplete()) continue;

      completed++;
      const text = tokenizer.decode(ids);
      const parsed = turnSchema.safeParse(JSON.parse(text));
      expect(parsed.success, text).toBe(true);
    }
    // Strings are bounded (reply 200, entities 40 units), so nearly every walk closes in 400 steps.
    expect(completed).toBeGreaterThanOrEqual(walks * 0.9);
  });

  it('limits actions to a role through a narrowed schema', () => {
    const simCustomerTurn = turnSchema.extend({ action: z.enum(actionsByRole.sim_customer as [Action, ...Action[]]) });
    const factory = jsonSchemaConstraint(simCustomerTurn, vocabulary, { endTokenIds: [endId] });
    const random = createRandom(99);
    for (let walk = 0; walk < 10; walk++) {
      const constraint = factory.create();
      const ids: number[] = [];
      while (!constraint.isComplete() && ids.length < 400) {
        const allowed = allowedIds(constraint);
        const id = allowed[Math.floor(random() * allowed.length)]!;
        constraint.accept(id);
        ids.push(id);
      }
      if (!constraint.isComplete()) continue;

      const parsed = parseTurn(tokenizer.decode(ids), 'sim_customer');
      if (!parsed.ok) expect(parsed.rejection).not.toBe('action_not_allowed');
      expect(['say', 'end']).toContain(JSON.parse(tokenizer.decode(ids)).action);
    }
  });

  it('rejects a disallowed token', () => {
    const constraint = jsonSchemaConstraint(turnSchema, vocabulary, { endTokenIds: [endId] }).create();
    const brace = tokenizer.tokenId('{')!;
    const quote = tokenizer.tokenId('"')!;

    expect(() => constraint.accept(quote)).toThrow(ConstraintError);
    expect(() => constraint.accept(quote)).toThrow(expect.objectContaining({ code: 'token_not_allowed' }));
    expect(() => constraint.accept(endId)).toThrow(expect.objectContaining({ code: 'token_not_allowed' }));
    expect(() => constraint.accept(vocabulary.specialTokens.get('<|turn|>')!)).toThrow(expect.objectContaining({ code: 'token_not_allowed' }));

    // A rejected token leaves the state as it was.
    constraint.accept(brace);
    expect(() => constraint.accept(brace)).toThrow(expect.objectContaining({ code: 'token_not_allowed' }));
    expect(allowedIds(constraint).length).toBeGreaterThan(0);
  });

  it('throws when no token continues the output', () => {
    const utf8 = new TextEncoder();
    const tiny: TokenVocabulary = {
      size: 3,
      tokenBytes: [undefined, utf8.encode('{'), utf8.encode('"a":')],
      specialTokens: new Map([['<|end|>', 0]]),
    };
    const constraint = jsonSchemaConstraint(z.object({ a: z.boolean() }), tiny, { endTokenIds: [0] }).create();
    constraint.accept(1);
    constraint.accept(2);

    // The vocabulary has no token for `t` or `f`, so nothing can follow the key.
    expect(() => constraint.maskLogits(new Float32Array(3))).toThrow(expect.objectContaining({ code: 'no_token_allowed' }));
  });

  it('rejects every call after the end token', () => {
    const constraint = jsonSchemaConstraint(z.boolean(), vocabulary, { endTokenIds: [endId] }).create();
    for (const id of tokenizer.encode('true')) constraint.accept(id);
    constraint.accept(endId);

    expect(constraint.isComplete()).toBe(true);
    expect(() => constraint.accept(endId)).toThrow(expect.objectContaining({ code: 'constraint_finished' }));
    expect(() => constraint.maskLogits(new Float32Array(vocabulary.size))).toThrow(expect.objectContaining({ code: 'constraint_finished' }));
  });

  it('rejects unsupported schemas when the factory is built', () => {
    const schema = turnSchema.extend({ reply: z.string().max(200).transform((reply) => reply.trim()) });
    expect(() => jsonSchemaConstraint(schema, vocabulary, { endTokenIds: [endId] })).toThrow(expect.objectContaining({ code: 'unsupported_schema' }));
  });

  it('rejects end tokens that are not special tokens', () => {
    expect(() => jsonSchemaConstraint(turnSchema, vocabulary, { endTokenIds: [] })).toThrow(expect.objectContaining({ code: 'invalid_options' }));
    const plain = tokenizer.tokenId('{')!;
    expect(() => jsonSchemaConstraint(turnSchema, vocabulary, { endTokenIds: [plain] })).toThrow(expect.objectContaining({ code: 'invalid_options' }));
  });
});

describe('logit masking', () => {
  it('keeps allowed logits unchanged', () => {
    const constraint = jsonSchemaConstraint(turnSchema, vocabulary, { endTokenIds: [endId] }).create();
    for (const id of tokenizer.encode('{"intent":"chat","emotion":"calm","entities":{},"action":"say","reply":"你')) constraint.accept(id);

    const random = createRandom(5);
    const logits = Float32Array.from({ length: vocabulary.size }, () => random() * 20 - 10);
    const original = logits.slice();
    const allowed = new Set(allowedIds(constraint));
    constraint.maskLogits(logits);

    expect(allowed.size).toBeGreaterThan(1000);
    expect(allowed.size).toBeLessThan(vocabulary.size);
    logits.forEach((value, id) => {
      if (allowed.has(id)) expect(value).toBe(original[id]);
      else expect(value).toBe(-Infinity);
    });
  });

  it('masks ids beyond the tokenizer vocabulary', () => {
    const constraint = jsonSchemaConstraint(turnSchema, vocabulary, { endTokenIds: [endId] }).create();
    const logits = new Float32Array(vocabulary.size + 64);
    constraint.maskLogits(logits);
    expect(logits.subarray(vocabulary.size).every((value) => value === -Infinity)).toBe(true);
  });

  it('reuses cached masks across 16 interleaved sequences', () => {
    const schema = turnSchema.extend({});
    const factory = jsonSchemaConstraint(schema, vocabulary, { endTokenIds: [endId] });
    const random = createRandom(16);
    const sequences = Array.from({ length: 16 }, () => factory.create());
    const logits = new Float32Array(vocabulary.size);
    const stepMs: number[] = [];

    for (let step = 0; step < 150; step++) {
      for (const constraint of sequences) {
        if (constraint.isComplete()) continue;
        logits.fill(0);
        const started = performance.now();
        constraint.maskLogits(logits);
        stepMs.push(performance.now() - started);

        const allowed: number[] = [];
        logits.forEach((value, id) => {
          if (value === 0) allowed.push(id);
        });
        constraint.accept(allowed[Math.floor(random() * allowed.length)]!);
      }
    }

    const stats = factory.stats();
    expect(stats.lookups).toBe(stepMs.length);
    expect(stats.hits / stats.lookups).toBeGreaterThan(0.8);
    stepMs.sort((a, b) => a - b);
    // The median measured about 0.005 ms on a 2-core container. The bound leaves room for a loaded machine.
    expect(stepMs[Math.floor(stepMs.length / 2)]!).toBeLessThan(1);
  });

  it('serves cached masks equal to fresh walks', () => {
    const schemas = [
      turnSchema,
      z.object({ name: z.string().min(2).max(14), scores: z.array(z.int().min(-20).max(300)).max(13), ratio: z.number(), flag: z.boolean().nullable() }),
    ];
    const random = createRandom(77);
    for (const schema of schemas) {
      const grammar = grammarFromZod(schema);
      const cached = new TokenMasker(grammar, vocabulary, [endId], 4096);
      for (let walk = 0; walk < 12; walk++) {
        let state = initialState(grammar);
        for (let step = 0; step < 150; step++) {
          const fresh = new TokenMasker(grammar, vocabulary, [endId], 1).mask(state);
          const reused = cached.mask(state);
          const firstDifference = fresh.allowed.findIndex((flag, id) => reused.allowed[id] !== flag);
          expect(firstDifference).toBe(-1);

          const allowed = [...fresh.allowed.keys()].filter((id) => fresh.allowed[id] === 1 && id !== endId);
          if (allowed.length === 0) break;
          state = advanceBytes(state, vocabulary.tokenBytes[allowed[Math.floor(random() * allowed.length)]!]!);
        }
      }
      expect(cached.stats().hits).toBeGreaterThan(0);
    }
  });
});
