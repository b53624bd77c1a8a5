/**
 * Writes the training corpus: JSONL text examples, the trained tokenizer (into the model
 * folder) and the token-id files the Python trainer reads.
 *
 *   npm run corpus -- --out training/out/corpus --model-dir models/sanfang-moe-v0
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { Tokenizer } from '@huggingface/tokenizers';
import { specialTokens } from '../../agents/prompt.ts';
import { riderAgentConversation, seededRandom, simCustomerExamples, simRiderExample, userAgentConversation, type Example, type Random } from './dialogues.ts';
import { trainByteLevelBpe } from './bpe.ts';

const program = new Command()
  .option('--out <dir>', 'folder for the corpus files', 'training/out/corpus')
  .option('--model-dir <dir>', 'model folder that receives tokenizer.json', 'models/sanfang-moe-v0')
  .option('--train-conversations <n>', 'user-facing conversations in the training split', '9000')
  .option('--heldout-conversations <n>', 'user-facing conversations in the held-out split', '400')
  .option('--vocab-size <n>', 'tokenizer vocabulary size, special tokens included', '3000')
  .option('--seed <n>', 'random seed', '20261204')
  .parse();
const options = program.opts<{ out: string; modelDir: string; trainConversations: string; heldoutConversations: string; vocabSize: string; seed: string }>();

function generate(random: Random, conversations: number, heldOut: boolean): Example[] {
  const examples: Example[] = [];
  for (let i = 0; i < conversations; i++) {
    examples.push(...userAgentConversation(random, heldOut));
    if (i % 2 === 0) examples.push(...riderAgentConversation(random, heldOut));
    if (i % 3 === 0) examples.push(simRiderExample(random, heldOut));
    if (i % 3 === 1) examples.push(...simCustomerExamples(random, heldOut));
  }
  return examples;
}

const random = seededRandom(Number(options.seed));
const train = generate(random, Number(options.trainConversations), false);
const heldout = generate(random, Number(options.heldoutConversations), true);

mkdirSync(options.out, { recursive: true });
mkdirSync(options.modelDir, { recursive: true });
const allSpecial = Object.values(specialTokens);
const { json: tokenizerJson, vocabSize } = trainByteLevelBpe(
  train.flatMap((e) => [e.prompt, e.completion]),
  allSpecial,
  Number(options.vocabSize),
);
writeFileSync(join(options.modelDir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
const tokenizerConfig = {
  tokenizer_class: 'PreTrainedTokenizerFast',
  bos_token: null,
  eos_token: specialTokens.end,
  pad_token: specialTokens.pad,
  add_bos_token: false,
  add_eos_token: false,
  clean_up_tokenization_spaces: false,
  model_max_length: 1024,
};
writeFileSync(join(options.modelDir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig, null, 2));

const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
const endId = allSpecial.indexOf(specialTokens.end);
let maxLength = 0;
let tokenTotal = 0;
for (const [name, examples] of [['train', train], ['heldout', heldout]] as const) {
  const textLines: string[] = [];
  const idLines: string[] = [];
  for (const e of examples) {
    const promptIds = tokenizer.encode(e.prompt, { add_special_tokens: false }).ids;
    const completionIds = tokenizer.encode(e.completion, { add_special_tokens: false }).ids;
    const ids = [...promptIds, ...completionIds, endId];
    maxLength = Math.max(maxLength, ids.length);
    tokenTotal += ids.length;
    textLines.push(JSON.stringify({ role: e.role, prompt: e.prompt, completion: e.completion, turn: e.turn }));
    idLines.push(JSON.stringify({ ids, loss_from: promptIds.length }));
  }
  writeFileSync(join(options.out, `${name}.text.jsonl`), textLines.join('\n') + '\n');
  writeFileSync(join(options.out, `${name}.jsonl`), idLines.join('\n') + '\n');
}
const summary = { train: train.length, heldout: heldout.length, vocabSize, endId, padId: 0, maxLength, meanLength: Math.round(tokenTotal / (train.length + heldout.length)), tokenTotal };
writeFileSync(join(options.out, 'summary.json'), JSON.stringify(summary, null, 2));
console.log(JSON.stringify(summary));
