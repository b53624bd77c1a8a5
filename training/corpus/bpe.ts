/**
 * A byte-level BPE trainer that writes a Hugging Face `tokenizer.json` (ByteLevel pre-tokenizer
 * and decoder, BPE model), so any runtime that reads that format can load Sanfang's tokenizer.
 */

/** GPT-2's reversible map from bytes to printable characters, as Hugging Face's ByteLevel uses. */
export function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  }
  return table;
}

/** The split pattern of Hugging Face's ByteLevel pre-tokenizer with `use_regex: true`. */
const byteLevelPattern = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export interface TrainedTokenizer {
  json: object;
  vocabSize: number;
}

/**
 * Trains merges on `texts` until the vocabulary contains `vocabSize` entries. Special tokens take
 * ids 0..n-1 and are never split; ties between equally frequent pairs break on the pair's
 * string, so the result is deterministic.
 */
export function trainByteLevelBpe(
  texts: Iterable<string>,
  specialTokens: readonly string[],
  vocabSize: number,
  maxNonAsciiTokenBytes = 6,
): TrainedTokenizer {
  const byteChars = bytesToUnicode();
  const encoder = new TextEncoder();
  const specialPattern = new RegExp(specialTokens.map((t) => t.replace(/[|<>]/g, (c) => `\\${c}`)).join('|'), 'g');

  const wordCounts = new Map<string, number>();
  for (const text of texts) {
    for (const piece of text.split(specialPattern)) {
      for (const match of piece.matchAll(byteLevelPattern)) {
        const word = Array.from(encoder.encode(match[0]), (b) => byteChars[b]).join('');
        wordCounts.set(word, (wordCounts.get(word) ?? 0) + 1);
      }
    }
  }

  const symbols: string[] = [...specialTokens, ...byteChars];
  const symbolIds = new Map(symbols.map((s, i) => [s, i]));
  // Token length in bytes, and whether it contains a non-ASCII byte. Capping non-ASCII tokens at
  // two CJK characters keeps Chinese tokens near word size, so a paraphrase the model never saw
  // still splits into pieces it knows.
  const highByteChars = new Set(byteChars.slice(128));
  const symbolBytes: number[] = symbols.map((_, i) => (i < specialTokens.length ? Infinity : 1));
  const symbolNonAscii: boolean[] = symbols.map((s, i) => i >= specialTokens.length && highByteChars.has(s));
  const words: number[][] = [];
  const counts: number[] = [];
  for (const [word, count] of wordCounts) {
    words.push(Array.from(word, (ch) => symbolIds.get(ch)!));
    counts.push(count);
  }

  const pairKey = (a: number, b: number) => a * 1_048_576 + b;
  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addPairs = (index: number, sign: 1 | -1) => {
    const word = words[index]!;
    for (let i = 0; i + 1 < word.length; i++) {
      const key = pairKey(word[i]!, word[i + 1]!);
      pairCounts.set(key, (pairCounts.get(key) ?? 0) + sign * counts[index]!);
      if (sign === 1) {
        let set = pairWords.get(key);
        if (!set) pairWords.set(key, (set = new Set()));
        set.add(index);
      }
    }
  };
  for (let i = 0; i < words.length; i++) addPairs(i, 1);

  const merges: string[] = [];
  while (symbols.length < vocabSize && merges.length < vocabSize * 2) {
    let bestKey = -1;
    let bestCount = 1;
    let bestText = '';
    for (const [key, count] of pairCounts) {
      if (count < bestCount) continue;
      const a = Math.floor(key / 1_048_576);
      const b = key % 1_048_576;
      if ((symbolNonAscii[a] || symbolNonAscii[b]) && symbolBytes[a]! + symbolBytes[b]! > maxNonAsciiTokenBytes) continue;
      const text = symbols[Math.floor(key / 1_048_576)]! + ' ' + symbols[key % 1_048_576]!;
      if (count > bestCount || bestKey === -1 || text < bestText) {
        bestKey = key;
        bestCount = count;
        bestText = text;
      }
    }
    if (bestKey === -1) break;

    const left = Math.floor(bestKey / 1_048_576);
    const right = bestKey % 1_048_576;
    // Two merge paths can spell the same string; the later merge then reuses the first id.
    const mergedText = symbols[left]! + symbols[right]!;
    let merged = symbolIds.get(mergedText);
    if (merged === undefined) {
      merged = symbols.length;
      symbols.push(mergedText);
      symbolIds.set(mergedText, merged);
      symbolBytes.push(symbolBytes[left]! + symbolBytes[right]!);
      symbolNonAscii.push(symbolNonAscii[left]! || symbolNonAscii[right]!);
    }
    merges.push(bestText);

    for (const index of pairWords.get(bestKey) ?? []) {
      const word = words[index]!;
      addPairs(index, -1);
      const next: number[] = [];
      for (let i = 0; i < word.length; i++) {
        if (i + 1 < word.length && word[i] === left && word[i + 1] === right) {
          next.push(merged);
          i++;
        } else {
          next.push(word[i]!);
        }
      }
      words[index] = next;
      addPairs(index, 1);
    }
    pairCounts.delete(bestKey);
    pairWords.delete(bestKey);
  }

  const vocab: Record<string, number> = {};
  symbols.forEach((symbol, id) => (vocab[symbol] = id));
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specialTokens.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  return { json, vocabSize: symbols.length };
}
