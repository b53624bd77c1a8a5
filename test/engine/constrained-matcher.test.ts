import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConstraintError } from '../../engine/constrained/errors.ts';
import { grammarFromZod } from '../../engine/constrained/from-zod.ts';
import type { GrammarNode } from '../../engine/constrained/grammar.ts';
import { acceptsAnyByte, advanceBytes, canEnd, initialState } from '../../engine/constrained/matcher.ts';
import { createRandom } from '../../engine/sampler.ts';

const utf8 = new TextEncoder();

function accepts(grammar: GrammarNode, text: string | Uint8Array): boolean {
  const bytes = typeof text === 'string' ? utf8.encode(text) : text;
  const state = advanceBytes(initialState(grammar), bytes);
  return state.length > 0 && canEnd(state);
}

function acceptsPrefix(grammar: GrammarNode, text: string | Uint8Array): boolean {
  const bytes = typeof text === 'string' ? utf8.encode(text) : text;
  return advanceBytes(initialState(grammar), bytes).length > 0;
}

describe('byte matcher strings', () => {
  const grammar = grammarFromZod(z.string().min(1).max(3));

  it('accepts strings within the length bounds', () => {
    expect(accepts(grammar, '"a"')).toBe(true);
    expect(accepts(grammar, '"外卖到"')).toBe(true);
    expect(accepts(grammar, '"a😀"')).toBe(true);
  });

  it('counts length in code points as zod does', () => {
    const schema = z.string().min(1).max(3);
    for (const text of ['ab😀', 'abc😀', '😀😀😀😀']) {
      expect(accepts(grammar, JSON.stringify(text)), text).toBe(schema.safeParse(text).success);
    }
    // The fourth character's lead byte already exceeds the maximum, so the prefix dies there.
    expect(acceptsPrefix(grammar, utf8.encode('"abc😀').slice(0, 5))).toBe(false);
    const atLeastFour = grammarFromZod(z.string().min(4));
    expect(accepts(atLeastFour, '"😀😀"')).toBe(false);
    expect(accepts(atLeastFour, '"😀😀😀😀"')).toBe(true);
  });

  it('rejects strings outside the length bounds', () => {
    expect(accepts(grammar, '""')).toBe(false);
    expect(acceptsPrefix(grammar, '"abcd')).toBe(false);
  });

  it('counts each escape as one unit', () => {
    expect(accepts(grammar, '"\\n\\"\\\\"')).toBe(true);
    expect(accepts(grammar, '"\\u4f60\\u597d"')).toBe(true);
    expect(acceptsPrefix(grammar, '"\\n\\n\\n\\')).toBe(false);
  });

  it('rejects invalid escapes and lone surrogates', () => {
    expect(acceptsPrefix(grammar, '"\\x')).toBe(false);
    expect(acceptsPrefix(grammar, '"\\u12g')).toBe(false);
    expect(acceptsPrefix(grammar, '"\\ud83d')).toBe(false);
    expect(acceptsPrefix(grammar, '"\\uDfff')).toBe(false);
    expect(accepts(grammar, '"\\ud7ff"')).toBe(true);
  });

  it('rejects control characters and ill-formed UTF-8', () => {
    expect(acceptsPrefix(grammar, '"a\n')).toBe(false);
    expect(acceptsPrefix(grammar, new Uint8Array([0x22, 0xc0, 0x80]))).toBe(false);
    expect(acceptsPrefix(grammar, new Uint8Array([0x22, 0xed, 0xa0]))).toBe(false);
    expect(acceptsPrefix(grammar, new Uint8Array([0x22, 0xf5]))).toBe(false);
    expect(acceptsPrefix(grammar, new Uint8Array([0x22, 0xe4, 0xbd]))).toBe(true);
    expect(acceptsPrefix(grammar, new Uint8Array([0x22, 0xe4, 0xbd, 0x22]))).toBe(false);
  });

  it('allows nothing after the closing quote', () => {
    const state = advanceBytes(initialState(grammar), utf8.encode('"ok"'));
    expect(canEnd(state)).toBe(true);
    expect(acceptsAnyByte(state)).toBe(false);
  });
});

describe('byte matcher numbers', () => {
  it('accepts integers within the bounds', () => {
    const grammar = grammarFromZod(z.int().min(-5).max(120));
    for (const value of [-5, -1, 0, 7, 99, 120]) expect(accepts(grammar, String(value))).toBe(true);
  });

  it('rejects integers outside the bounds as early as possible', () => {
    const grammar = grammarFromZod(z.int().min(-5).max(120));
    expect(accepts(grammar, '121')).toBe(false);
    expect(acceptsPrefix(grammar, '130')).toBe(false);
    expect(acceptsPrefix(grammar, '-6')).toBe(false);
    expect(acceptsPrefix(grammar, '1.')).toBe(false);
    expect(acceptsPrefix(grammar, '1e')).toBe(false);
  });

  it('rejects a minus sign when no negative value fits', () => {
    expect(acceptsPrefix(grammarFromZod(z.int().nonnegative()), '-')).toBe(false);
    expect(accepts(grammarFromZod(z.int().gt(2).lt(5)), '2')).toBe(false);
    expect(accepts(grammarFromZod(z.int().gt(2).lt(5)), '4')).toBe(true);
  });

  it('rejects leading zeros and bare points', () => {
    const grammar = grammarFromZod(z.number());
    expect(acceptsPrefix(grammar, '01')).toBe(false);
    expect(accepts(grammar, '0.5')).toBe(true);
    expect(accepts(grammar, '-12.25')).toBe(true);
    expect(accepts(grammar, '3.')).toBe(false);
    expect(acceptsPrefix(grammar, '.5')).toBe(false);
  });

  it('keeps a number open for more digits', () => {
    const state = advanceBytes(initialState(grammarFromZod(z.number())), utf8.encode('12'));
    expect(canEnd(state)).toBe(true);
    expect(acceptsAnyByte(state)).toBe(true);
  });
});

describe('byte matcher objects and arrays', () => {
  const schema = z
    .object({
      kind: z.literal('order'),
      id: z.int().min(1).max(999),
      note: z.string().max(10).optional(),
      tags: z.array(z.enum(['hot', 'late'])).max(2),
      rider: z.string().nullable(),
      paid: z.boolean(),
    })
    .strict();
  const grammar = grammarFromZod(schema);

  it('accepts JSON.stringify output', () => {
    expect(accepts(grammar, JSON.stringify({ kind: 'order', id: 12, note: '快点', tags: ['hot'], rider: null, paid: true }))).toBe(true);
    expect(accepts(grammar, JSON.stringify({ kind: 'order', id: 999, tags: [], rider: '王师傅', paid: false }))).toBe(true);
  });

  it('rejects whitespace and keys out of order', () => {
    expect(acceptsPrefix(grammar, '{ "kind"')).toBe(false);
    expect(acceptsPrefix(grammar, '{"id":1')).toBe(false);
    expect(acceptsPrefix(grammar, '{"kind":"order","id":1,"rider"')).toBe(false);
  });

  it('rejects unknown and missing keys', () => {
    expect(acceptsPrefix(grammar, '{"kind":"order","id":1,"extra"')).toBe(false);
    expect(acceptsPrefix(grammar, '{"kind":"order","id":1}')).toBe(false);
  });

  it('rejects arrays beyond their max length', () => {
    expect(acceptsPrefix(grammar, '{"kind":"order","id":1,"tags":["hot","late"]')).toBe(true);
    expect(acceptsPrefix(grammar, '{"kind":"order","id":1,"tags":["hot","late",')).toBe(false);
  });

  it('accepts enum-keyed record keys in any order once each', () => {
    const record = grammarFromZod(z.partialRecord(z.enum(['waited', 'dish']), z.string().min(1)));
    expect(accepts(record, '{}')).toBe(true);
    expect(accepts(record, '{"dish":"面","waited":"一小时"}')).toBe(true);
    expect(accepts(record, '{"waited":"一小时","dish":"面"}')).toBe(true);
    expect(acceptsPrefix(record, '{"dish":"面","dish"')).toBe(false);
    expect(acceptsPrefix(record, '{"dish":""')).toBe(false);
  });

  it('requires every key of a non-partial enum record', () => {
    const record = grammarFromZod(z.record(z.enum(['a', 'b']), z.int().min(0).max(9)));
    expect(accepts(record, '{"b":1,"a":2}')).toBe(true);
    expect(acceptsPrefix(record, '{"b":1}')).toBe(false);
  });

  it('accepts string-keyed records', () => {
    const record = grammarFromZod(z.record(z.string().min(1), z.boolean()));
    expect(accepts(record, '{"x":true,"你好":false}')).toBe(true);
    expect(acceptsPrefix(record, '{"":')).toBe(false);
  });

  it('follows every option of a discriminated union', () => {
    const union = grammarFromZod(
      z.discriminatedUnion('type', [z.object({ type: z.literal('eta'), minutes: z.int().min(0).max(90) }), z.object({ type: z.literal('note'), text: z.string() })]),
    );
    expect(accepts(union, '{"type":"eta","minutes":15}')).toBe(true);
    expect(accepts(union, '{"type":"note","text":"到了"}')).toBe(true);
    expect(acceptsPrefix(union, '{"type":"eta","text"')).toBe(false);
  });

  it('ends a literal that prefixes a longer one at its parent', () => {
    const grammar = grammarFromZod(z.array(z.literal([1, 12])).max(3));
    expect(accepts(grammar, '[1,12,1]')).toBe(true);
    expect(acceptsPrefix(grammar, '[13')).toBe(false);
  });
});

describe('byte matcher soundness', () => {
  const schema = z
    .object({
      intent: z.enum(['greeting', 'thanks']),
      count: z.int().min(0).max(50),
      entities: z.partialRecord(z.enum(['dish', 'eta']), z.string().min(1).max(5)),
      items: z.array(z.union([z.string().max(4), z.null()])).max(3),
      reply: z.string().max(12),
    })
    .strict();
  const grammar = grammarFromZod(schema);
  const seeds = [
    { intent: 'greeting', count: 3, entities: { eta: '十分钟' }, items: ['a', null], reply: '你好 "朋友"\n' },
    { intent: 'thanks', count: 50, entities: {}, items: [], reply: '' },
    { intent: 'thanks', count: 0, entities: { eta: '😀', dish: '面' }, items: [null, null, '\\'], reply: '谢谢😀' },
  ];

  it('accepts every seed value', () => {
    for (const value of seeds) expect(accepts(grammar, JSON.stringify(value))).toBe(true);
  });

  it('accepts only mutated texts that the schema accepts', () => {
    const random = createRandom(7);
    const alphabet = utf8.encode('{}[]",:\\0123456789-.nultrue好😀x ');
    let accepted = 0;
    for (let round = 0; round < 3000; round++) {
      const bytes = [...utf8.encode(JSON.stringify(seeds[round % seeds.length]))];
      const edits = 1 + Math.floor(random() * 3);
      for (let edit = 0; edit < edits; edit++) {
        const at = Math.floor(random() * (bytes.length + 1));
        const inserted = alphabet[Math.floor(random() * alphabet.length)]!;
        const operation = random();
        if (operation < 0.33) bytes.splice(at, 1);
        else if (operation < 0.66) bytes.splice(at, 0, inserted);
        else bytes.splice(at, 1, inserted);
      }

      const mutated = new Uint8Array(bytes);
      if (!accepts(grammar, mutated)) continue;
      accepted++;
      const text = new TextDecoder('utf-8', { fatal: true }).decode(mutated);
      expect(schema.safeParse(JSON.parse(text)).success, text).toBe(true);
    }
    // Most mutations break the JSON, but enough survive for the check to mean something.
    expect(accepted).toBeGreaterThan(20);
  });
});

describe('grammar from zod', () => {
  const unsupported: [string, z.ZodType][] = [
    ['email', z.email()],
    ['regex', z.string().regex(/^a/)],
    ['refine', z.string().refine((value) => value.length > 2)],
    ['trim', z.string().trim()],
    ['transform', z.string().transform((value) => value.length)],
    ['any', z.object({ payload: z.any() })],
    ['tuple', z.tuple([z.string()])],
    ['lazy', z.lazy(() => z.string())],
    ['non-integer bound', z.number().min(0)],
    ['multipleOf', z.int().multipleOf(5)],
    ['date', z.date()],
    ['intersection', z.intersection(z.object({ a: z.string() }), z.object({ b: z.string() }))],
    ['xor', z.xor([z.string(), z.string().max(3)])],
    ['number-keyed record', z.record(z.number(), z.string())],
  ];

  it.each(unsupported)('rejects %s at build time', (_name, schema) => {
    let error: unknown;
    try {
      grammarFromZod(schema);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConstraintError);
    expect((error as ConstraintError).code).toBe('unsupported_schema');
    expect((error as ConstraintError).feature).toBeTruthy();
  });

  it('rejects schemas that admit no value', () => {
    for (const schema of [z.string().min(5).max(2), z.int().min(3).max(2), z.array(z.string()).min(3).max(1), z.int().gt(2).lt(3)]) {
      expect(() => grammarFromZod(schema)).toThrow(expect.objectContaining({ code: 'invalid_schema' }));
    }
  });

  it('names the schema path of an unsupported feature', () => {
    expect(() => grammarFromZod(z.object({ contact: z.object({ email: z.email() }) }))).toThrow(/at \$\.contact\.email/);
  });
});
