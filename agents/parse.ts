/**
 * Parses and validates the model's structured turn. Nothing the model writes reaches a party
 * unless it parses as JSON, matches the turn schema, uses an action the role may take and
 * fills its reply only from known slots.
 */
import { actionsByRole, replySlots, turnSchema, type ReplySlot, type Role, type Turn } from './turn.ts';

export type TurnRejection =
  | 'empty'
  | 'truncated'
  | 'not_json'
  | 'schema_mismatch'
  | 'action_not_allowed'
  | 'unknown_slot'
  | 'missing_slot'
  | 'empty_reply';

export type ParsedTurn = { ok: true; turn: Turn; reply: string; droppedEntities: string[] } | { ok: false; rejection: TurnRejection; detail: string };

export type SlotValues = Partial<Record<ReplySlot, string | number>>;

/** Actions whose turn is internal, so the agent sends nothing to the party yet. */
const silentActions = new Set(['lookup_order']);

export function parseTurn(raw: string, role: Role, options: { slots?: SlotValues; lastPartyMessage?: string; truncated?: boolean } = {}): ParsedTurn {
  const text = raw.trim();
  if (text.length === 0) return { ok: false, rejection: 'empty', detail: 'model returned no text' };

  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    const rejection = options.truncated ? 'truncated' : 'not_json';
    return { ok: false, rejection, detail: `${(error as Error).message} in ${JSON.stringify(text.slice(0, 80))}` };
  }
  // The engine closes a constrained turn that reaches the token limit with the shortest valid
  // ending, so it parses, but its reply is cut off and its last fields are placeholders.
  if (options.truncated) return { ok: false, rejection: 'truncated', detail: `the turn reached the token limit: ${JSON.stringify(text.slice(0, 80))}` };

  const parsed = turnSchema.safeParse(json);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join('.') || 'turn'}: ${i.message}`).join('; ');
    return { ok: false, rejection: 'schema_mismatch', detail };
  }
  const turn = parsed.data;

  if (!actionsByRole[role].includes(turn.action)) {
    return { ok: false, rejection: 'action_not_allowed', detail: `action ${turn.action} is not allowed for ${role}; allowed: ${actionsByRole[role].join(', ')}` };
  }

  // An entity must be a span of what the party wrote; anything else is invented and dropped.
  const droppedEntities: string[] = [];
  if (options.lastPartyMessage !== undefined) {
    for (const [name, value] of Object.entries(turn.entities)) {
      if (value !== undefined && !options.lastPartyMessage.includes(value)) {
        droppedEntities.push(name);
        delete turn.entities[name as keyof Turn['entities']];
      }
    }
  }

  const filled = fillSlots(turn.reply, options.slots ?? {});
  if (!filled.ok) return filled;
  if (filled.reply.trim().length === 0 && !silentActions.has(turn.action)) {
    return { ok: false, rejection: 'empty_reply', detail: `action ${turn.action} needs a reply` };
  }
  return { ok: true, turn, reply: filled.reply, droppedEntities };
}

export function fillSlots(template: string, slots: SlotValues): { ok: true; reply: string } | { ok: false; rejection: TurnRejection; detail: string } {
  let failure: { ok: false; rejection: TurnRejection; detail: string } | undefined;
  const reply = template.replace(/\{([a-z_]+)\}/g, (match, name: string) => {
    if (!(replySlots as readonly string[]).includes(name)) {
      failure ??= { ok: false, rejection: 'unknown_slot', detail: `reply uses unknown slot {${name}}; known: ${replySlots.join(', ')}` };
      return match;
    }
    const value = slots[name as ReplySlot];
    if (value === undefined) {
      failure ??= { ok: false, rejection: 'missing_slot', detail: `reply uses {${name}} but no value is known for it` };
      return match;
    }
    return String(value);
  });
  return failure ?? { ok: true, reply };
}
