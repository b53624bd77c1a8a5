/** Scenario files: YAML, validated by zod; an invalid file is rejected with the file and the field named. */
import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';

export const demoOrderKeys = ['c001Late', 'c001OnTime', 'c001Preparing', 'c001Delivered', 'c002Delivered', 'c002Placed', 'c003Cancelled', 'c003OnTime'] as const;

export const scenarioSchema = z
  .object({
    name: z.string().min(1),
    description: z.string().optional(),
    locale: z.enum(['zh', 'en']).default('zh'),
    customer: z
      .object({
        id: z.string().default('C001'),
        order: z.enum(demoOrderKeys),
        goal: z.enum(['late_order', 'compensation']).default('late_order'),
        mood: z.enum(['calm', 'anxious', 'angry']).default('anxious'),
        /** Said instead when the simulated customer's opening turn does not validate. */
        opening: z.string().min(1).default('我的外卖怎么还没到？'),
        /** Maximum simulated customer messages. The customer also stops after its goodbye turn. */
        maxTurns: z.number().int().min(1).max(10).default(3),
      })
      .strict(),
    rider: z.object({ simulated: z.literal(true).default(true) }).strict().default({ simulated: true }),
    seed: z.number().int().default(1),
    expect: z
      .object({
        couponIssued: z.boolean(),
        /** The total coupon value, in yuan, when a coupon is expected. */
        couponYuan: z.number().positive().optional(),
        etaCommunicated: z.boolean().default(true),
        handoff: z.boolean().default(false),
      })
      .strict(),
  })
  .strict();

export type Scenario = z.infer<typeof scenarioSchema>;

export class ScenarioError extends Error {
  override readonly name = 'ScenarioError';
  constructor(
    readonly code: 'not_found' | 'invalid_yaml' | 'invalid_scenario',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function parseScenario(source: string, file: string): Scenario {
  let document: unknown;
  try {
    document = parseYaml(source);
  } catch (cause) {
    const where = cause instanceof YAMLParseError && cause.linePos ? ` at line ${cause.linePos[0].line}` : '';
    throw new ScenarioError('invalid_yaml', `${file}: not valid YAML${where}: ${(cause as Error).message}`, { cause });
  }
  const parsed = scenarioSchema.safeParse(document);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new ScenarioError('invalid_scenario', `${file}: invalid scenario: ${detail}`);
  }
  return parsed.data;
}

export function loadScenario(file: string): Scenario {
  let source: string;
  try {
    source = readFileSync(file, 'utf8');
  } catch (cause) {
    throw new ScenarioError('not_found', `scenario file not found: ${file}`, { cause });
  }
  return parseScenario(source, file);
}
