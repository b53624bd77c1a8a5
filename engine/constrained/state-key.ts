/** Cache keys for matcher states, so that states which allow the same tokens share one mask. */
import type { Frame, MatcherState, Stack } from './frames.ts';
import { maxNumberDigits } from './grammar.ts';

/**
 * Returns a key under which states accept the same byte sequences of up to `horizon` bytes and
 * allow the end token after the same ones. Budgets of length and count above `horizon` + 1 share
 * one key, because n bytes use at most n units of any budget, which leaves one unit to spare.
 * Pass Infinity for an exact key.
 */
export function stateKey(state: MatcherState, horizon: number): string {
  const keys = state.map((stack) => stackKey(stack, horizon));
  if (keys.length > 1) keys.sort();
  return keys.join('|');
}

function stackKey(stack: Stack, horizon: number): string {
  let key = '';
  for (let current: Stack | undefined = stack; current !== undefined; current = current.parent) {
    key += frameKey(current.frame, horizon) + '/';
  }
  return key;
}

function frameKey(frame: Frame, horizon: number): string {
  const cap = (budget: number) => (budget > horizon ? 'h' : String(budget));
  switch (frame.kind) {
    case 'root':
      return `R${frame.node.kind}${frame.done ? 1 : 0}`;
    case 'literal':
      return `L${frame.node.id}:${frame.candidates.join(',')}:${frame.offset}`;
    case 'string': {
      const node = frame.node;
      const remaining = cap(node.maxLength - frame.length);
      const needed = cap(Math.max(0, node.minLength - frame.length));
      return `S${node.id}:${frame.mode}:${frame.pending}:${frame.low}:${frame.high}:${remaining}:${needed}`;
    }
    case 'number': {
      const sign = frame.negative ? '-' : '+';
      if (frame.node.integer) return `N${frame.node.id}:${sign}${frame.digits}`;
      // Only an empty or leading-zero integer part and a bare point change what may follow.
      const digits = frame.digits === '' || frame.digits === '0' ? `i${frame.digits}` : `r${cap(maxNumberDigits - frame.digits.length)}`;
      const fraction = frame.fraction <= 0 ? `f${frame.fraction}` : `r${cap(maxNumberDigits - frame.fraction)}`;
      return `N${frame.node.id}:${sign}${digits}:${fraction}`;
    }
    case 'array': {
      const remaining = cap(frame.node.maxItems - frame.count);
      const needed = cap(Math.max(0, frame.node.minItems - frame.count));
      return `A${frame.node.id}:${frame.phase}:${remaining}:${needed}`;
    }
    case 'object':
      return `O${frame.node.id}:${frame.phase}:${frame.next}:${frame.used}:${frame.candidates.join(',')}:${frame.offset}:${frame.current}`;
    case 'record':
      return `D${frame.node.id}:${frame.phase}`;
  }
}
