import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { turnSchema } from '../../agents/turn.ts';
import { completionLength, maxCompletionLength, shortestCompletion, tokenizeBytes } from '../../engine/constrained/completion.ts';
import { jsonSchemaConstraint, tokenVocabulary } from '../../engine/constrained/index.ts';
import { grammarFromZod } from '../../engine/constrained/from-zod.ts';
import { advanceBytes, initialState } from '../../engine/constrained/matcher.ts';
import { vocabularyTrie } from '../../engine/constrained/token-mask.ts';
import { createRandom } from '../../engine/sampler.ts';
import { TextTokenizer } from '../../engine/tokenizer.ts';
import { defaultModelDir } from '../support/model.ts';

const utf8 = new TextEncoder();

/** Completes every byte prefix of `text` and checks that each result parses and passes the schema. */
function expectEveryPrefixCompletes(schema: z.ZodType, text: string): void {
  const grammar = grammarFromZod(schema);
  const bytes = utf8.encode(text);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const state = advanceBytes(initialState(grammar), bytes.subarray(0, cut));
    expect(state.length, `prefix ${cut} of ${text}`).toBeGreaterThan(0);
    const completion = shortestCompletion(state);
    expect(completion, `prefix ${cut} of ${text}`).toBeDefined();
    expect(completionLength(state), `prefix ${cut} of ${text}`).toBe(completion!.length);
    expect(completion!.length, `prefix ${cut} of ${text}`).toBeLessThanOrEqual(maxCompletionLength(grammar));

    const whole = new Uint8Array([...bytes.subarray(0, cut), ...completion!]);
    const decoded = new TextDecoder('utf-8', { fatal: true }).decode(whole);
    const parsed = schema.safeParse(JSON.parse(decoded));
    expect(parsed.success, `prefix ${cut} of ${text} completed as ${decoded}`).toBe(true);
  }
}

describe('shortestCompletion', () => {
  it('closes every prefix of nested objects', () => {
    const schema = z.object({
      name: z.string().min(2).max(10),
      note: z.string().optional(),
      mood: z.enum(['calm', 'angry', 'anxious']),
      order: z.object({ id: z.string(), items: z.array(z.string().min(1)).min(2) }),
      flag: z.boolean(),
      missing: z.null(),
    });
    const text = JSON.stringify({ name: '王师傅', note: 'a"b\\c\n\u00e9', mood: 'anxious', order: { id: 'A1', items: ['饭', 'soup'] }, flag: false, missing: null });
    expectEveryPrefixCompletes(schema, text);
  });

  it('closes numbers within their bounds', () => {
    const schema = z.object({ big: z.number().int().min(100).max(250), below: z.number().int().min(-90).max(-12), any: z.number(), small: z.number().int().min(-5).max(5) });
    expectEveryPrefixCompletes(schema, JSON.stringify({ big: 123, below: -45, any: -3.25, small: -4 }));
  });

  it('closes records, unions and any-order keys', () => {
    const schema = z.object({
      slots: z.record(z.string(), z.number().int()),
      choice: z.union([z.object({ kind: z.literal('a'), value: z.number() }), z.string().min(3)]),
      picks: z.record(z.enum(['dish', 'waited']), z.string()),
      list: z.array(z.number().int()).max(3),
    });
    expectEveryPrefixCompletes(schema, JSON.stringify({ slots: { eta: 12, late: 3 }, choice: { kind: 'a', value: 1.5 }, picks: { waited: '十分钟', dish: '面' }, list: [1, 2] }));
    expectEveryPrefixCompletes(schema, JSON.stringify({ slots: {}, choice: 'abcd', picks: { dish: '', waited: '' }, list: [] }));
  });

  it('closes strings cut inside an escape or a character', () => {
    const schema = z.object({ say: z.string().min(4) });
    expectEveryPrefixCompletes(schema, '{"say":"\\u00e9\\u0041\\n😀外"}');
  });

  it('gives the shortest value before any byte', () => {
    const grammar = grammarFromZod(z.object({ a: z.string().min(2), b: z.number().int().min(7), c: z.array(z.boolean()).min(1), d: z.string().optional() }));
    expect(new TextDecoder().decode(shortestCompletion(initialState(grammar)))).toBe('{"a":"aa","b":7,"c":[true]}');
  });
});

describe('turn completion tokens', () => {
  const readJson = (name: string) => JSON.parse(readFileSync(join(defaultModelDir, name), 'utf8')) as Record<string, unknown>;
  const tokenizer = new TextTokenizer({ tokenizerJson: readJson('tokenizer.json'), tokenizerConfig: readJson('tokenizer_config.json') });
  const vocabulary = tokenVocabulary(tokenizer);
  const endId = vocabulary.specialTokens.get('<|end|>')!;

  it('splits bytes into tokens that decode back to them', () => {
    const bytes = utf8.encode('{"reply":"您好","action":"none"}');
    const tokens = tokenizeBytes(vocabularyTrie(vocabulary), bytes);
    expect(tokens).toBeDefined();
    expect(tokenizer.decode(tokens!)).toBe('{"reply":"您好","action":"none"}');
  });

  it('closes random walks into valid turns', () => {
    const factory = jsonSchemaConstraint(turnSchema, vocabulary, { endTokenIds: [endId] });
    const random = createRandom(7);
    for (let walk = 0; walk < 40; walk++) {
      const constraint = factory.create();
      const ids: number[] = [];
      const steps = Math.floor(random() * 120);
      for (let step = 0; step < steps && !constraint.isComplete(); step++) {
        const logits = new Float32Array(vocabulary.size);
        constraint.maskLogits(logits);
        const allowed = [...logits.keys()].filter((id) => logits[id] === 0 && id !== endId);
        const id = allowed[Math.floor(random() * allowed.length)]!;
        constraint.accept(id);
        ids.push(id);
      }

      const completion = constraint.completion();
      expect(completion).toBeDefined();
      expect(completion!.length).toBeLessThanOrEqual(maxCompletionLength(grammarFromZod(turnSchema)));
      const [first, ...rest] = completion!;
      if (first !== undefined) {
        expect(constraint.fitsAfter(first, rest.length)).toBe(true);
        if (rest.length > 0) expect(constraint.fitsAfter(first, rest.length - 1)).toBe(false);
      }
      for (const id of completion!) constraint.accept(id);
      expect(constraint.isComplete()).toBe(true);
      const text = tokenizer.decode([...ids, ...completion!]);
      expect(turnSchema.safeParse(JSON.parse(text)).success, text).toBe(true);
    }
  });
});
