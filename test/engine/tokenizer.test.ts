import { describe, expect, it } from 'vitest';
import { readModelDir } from '../../engine/model-dir.ts';
import { tokenVocabulary } from '../../engine/constrained/index.ts';
import { StreamDecoder, TextTokenizer } from '../../engine/tokenizer.ts';
import { defaultModelDir } from '../support/model.ts';

const tokenizer = new TextTokenizer(readModelDir(defaultModelDir));

describe('StreamDecoder', () => {
  it.each([
    ['Chinese with punctuation', '{"reply":"骑手预计还需12分钟送达，感谢您的耐心！"}'],
    ['mixed scripts and emoji', 'ETA 5 min 🛵 到了吗？ ok\n下一行'],
    ['split multi-byte characters', '鲜虾米线、麻辣烫和🍜'],
  ])('adds up to the full decode for %s', (_name, text) => {
    const ids = tokenizer.encode(text);
    const decoder = new StreamDecoder(tokenizer);
    const pieces: string[] = [];
    for (let count = 1; count <= ids.length; count++) pieces.push(decoder.push(ids.slice(0, count)));
    expect(pieces.join('')).toBe(tokenizer.decode(ids));
    expect(pieces.every((piece) => !piece.includes('\uFFFD'))).toBe(true);
  });

  it('flushes complete characters held before a cut one', () => {
    // A token whose bytes are whole characters followed by the start of another.
    const vocabulary = tokenVocabulary(tokenizer);
    const strict = new TextDecoder('utf-8', { fatal: true });
    const id = vocabulary.tokenBytes.findIndex((bytes) => {
      if (bytes === undefined) return false;
      try {
        strict.decode(bytes);
        return false;
      } catch {
        return !new TextDecoder().decode(bytes).startsWith('\uFFFD');
      }
    });
    expect(id).toBeGreaterThanOrEqual(0);
    const whole = new TextDecoder().decode(vocabulary.tokenBytes[id]!).replace(/\uFFFD+$/, '');

    const decoder = new StreamDecoder(tokenizer);
    expect(decoder.push([id])).toBe('');
    expect(decoder.flush([id])).toBe(whole);
    expect(decoder.flush([id])).toBe('');
  });
});
