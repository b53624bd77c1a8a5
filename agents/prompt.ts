/**
 * The prompt format shared by the agents at run time and the corpus generator at training
 * time. A prompt is a role header, a facts line, the recent transcript, then the turn marker.
 * The model completes it with one JSON turn and the end token.
 */
import type { Role } from './turn.ts';

export const specialTokens = {
  pad: '<|pad|>',
  system: '<|sys|>',
  facts: '<|facts|>',
  customer: '<|customer|>',
  agent: '<|agent|>',
  rider: '<|rider|>',
  turn: '<|turn|>',
  end: '<|end|>',
} as const;

export type Speaker = 'customer' | 'agent' | 'rider';
export type Locale = 'zh' | 'en';

/**
 * Locales the default model was trained to write replies in. For any other locale the agents
 * still prompt in Chinese for the decision, and the runtime takes the reply text from the
 * strategy library.
 */
export const modelLocales: readonly Locale[] = ['zh'];

export function promptLocale(locale: Locale): Locale {
  return modelLocales.includes(locale) ? locale : 'zh';
}

export interface TranscriptLine {
  speaker: Speaker;
  text: string;
}

/** Facts are rendered in insertion order as `key=value` pairs; values must not contain spaces. */
export type Facts = Record<string, string | number>;

export interface PromptInput {
  role: Role;
  locale: Locale;
  facts: Facts;
  transcript: readonly TranscriptLine[];
}

/** Prompts keep at most this many transcript lines; older ones are dropped first. */
export const maxTranscriptLines = 8;
/** One transcript line is cut to this many characters before it enters a prompt. */
export const maxLineChars = 160;

export function renderFacts(facts: Facts): string {
  return Object.entries(facts)
    .map(([key, value]) => `${key}=${String(value).replace(/\s+/g, '_')}`)
    .join(' ');
}

export function renderPrompt(input: PromptInput): string {
  const lines = input.transcript.slice(-maxTranscriptLines);
  let prompt = `${specialTokens.system}${input.role} ${input.locale}\n${specialTokens.facts}${renderFacts(input.facts)}\n`;
  for (const line of lines) {
    // Special-token text typed by a party must not reach the model as a control token. The
    // replacement contains no '<', so no new '<|' can form from what is left.
    const text = line.text.replace(/<\|/g, '‹|').slice(0, maxLineChars).replace(/\n/g, ' ');
    prompt += `${specialTokens[line.speaker]}${text}\n`;
  }
  return prompt + specialTokens.turn;
}
