/**
 * Converts a zod 4 schema to the grammar the matcher walks. The converter reads the schema's
 * definition (`schema._zod.def`) rather than its JSON Schema, because `z.toJSONSchema` drops
 * refinements silently, and a constraint that allowed a value the schema rejects would defeat
 * its purpose. Every feature it cannot express raises ConstraintError `unsupported_schema`.
 */
import type { z } from 'zod';
import { ConstraintError } from './errors.ts';
import { maxAnyOrderProperties, type GrammarNode, type LiteralNode, type NumberNode, type PropertyRule, type StringNode } from './grammar.ts';

type ZodSchema = z.core.$ZodType;
type ZodDef = z.core.$ZodTypeDef & Record<string, unknown>;

const utf8 = new TextEncoder();

/** Integer bounds zod applies for each number format; float formats only rule out non-finite values. */
const integerFormatBounds: Partial<Record<z.core.$ZodNumberFormats, [number, number]>> = {
  safeint: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  uint32: [0, 2 ** 32 - 1],
};

const supportedFeatures =
  'objects, records with string or enum keys, strings with length bounds, numbers, integers with bounds, booleans, null, literals, enums, arrays with length bounds, unions and discriminated unions';

/** Builds the grammar of the JSON values `schema` accepts; throws ConstraintError for unsupported features. */
export function grammarFromZod(schema: z.ZodType): GrammarNode {
  return new GrammarBuilder().convert(schema, '$');
}

class GrammarBuilder {
  private nextId = 0;

  convert(schema: ZodSchema, path: string): GrammarNode {
    const def = schema._zod.def as ZodDef;
    switch (def.type) {
      case 'string':
        return this.string(def, path);
      case 'number':
        return this.number(def, path);
      case 'boolean':
        this.rejectChecks(def, path);
        return this.literal([true, false], path);
      case 'null':
        this.rejectChecks(def, path);
        return this.literal([null], path);
      case 'literal':
      case 'enum':
        this.rejectChecks(def, path);
        return this.literal([...(schema._zod.values ?? [])], path);
      case 'array':
        return this.array(def as ZodDef & z.core.$ZodArrayDef, path);
      case 'object':
        return this.object(def as ZodDef & z.core.$ZodObjectDef, path);
      case 'record':
        return this.record(def as ZodDef & z.core.$ZodRecordDef, path);
      case 'union':
        return this.union(def as ZodDef & z.core.$ZodUnionDef & { discriminator?: string; inclusive?: boolean }, path);
      case 'nullable': {
        this.rejectChecks(def, path);
        const inner = this.convert((def as ZodDef & z.core.$ZodNullableDef).innerType, path);
        return { kind: 'union', id: this.nextId++, options: [inner, this.literal([null], path)] };
      }
      // Each wrapper below accepts every value its inner schema accepts, so the inner grammar is a
      // valid subset. An object key whose schema may be absent is made optional in `object`.
      case 'optional':
      case 'nonoptional':
      case 'default':
      case 'prefault':
      case 'readonly':
      case 'catch':
        this.rejectChecks(def, path);
        return this.convert((def as ZodDef & { innerType: ZodSchema }).innerType, path);
      case 'pipe':
      case 'transform':
        throw unsupported('transform or pipe (the parsed value would differ from the generated JSON)', path);
      case 'lazy':
        throw unsupported('recursive (lazy) schema', path);
      default:
        throw unsupported(`${def.type} schema`, path);
    }
  }

  private string(def: ZodDef, path: string): StringNode {
    if (typeof def.format === 'string') throw unsupported(`string format "${def.format}"`, path);

    const bounds = { min: 0, max: Infinity };
    for (const check of checkDefs(def)) {
      if (narrowLength(check, bounds)) continue;
      switch (check.check) {
        case 'string_format':
          throw unsupported(`string format "${String(check.format)}"`, path);
        case 'overwrite':
          throw unsupported('string transform such as trim() or toLowerCase()', path);
        default:
          throw unsupportedCheck('string', check.check, path);
      }
    }
    const { min: minLength, max: maxLength } = bounds;
    if (minLength > maxLength) {
      throw new ConstraintError('invalid_schema', `string at ${path} has min length ${minLength} above its max length ${maxLength}, so no value is valid`);
    }
    return { kind: 'string', id: this.nextId++, minLength, maxLength };
  }

  private number(def: ZodDef, path: string): NumberNode {
    let integer = false;
    let minimum = -Infinity;
    let maximum = Infinity;
    const applyFormat = (format: z.core.$ZodNumberFormats) => {
      const bounds = integerFormatBounds[format];
      if (bounds === undefined) return;
      integer = true;
      minimum = Math.max(minimum, bounds[0]);
      maximum = Math.min(maximum, bounds[1]);
    };

    // z.int() and its siblings carry their format on the schema itself rather than in `checks`.
    if (def.check === 'number_format') applyFormat(def.format as z.core.$ZodNumberFormats);
    const bounds: { value: number; inclusive: boolean; lower: boolean }[] = [];
    for (const check of checkDefs(def)) {
      switch (check.check) {
        case 'number_format':
          applyFormat(check.format as z.core.$ZodNumberFormats);
          break;
        case 'greater_than':
          bounds.push({ value: Number(check.value), inclusive: check.inclusive === true, lower: true });
          break;
        case 'less_than':
          bounds.push({ value: Number(check.value), inclusive: check.inclusive === true, lower: false });
          break;
        case 'multiple_of':
          throw unsupported('number multipleOf()', path);
        default:
          throw unsupportedCheck('number', check.check, path);
      }
    }
    if (bounds.length > 0 && !integer) {
      throw unsupported('bounds on a non-integer number (add .int() or drop the bound)', path);
    }

    // Integer bounds become inclusive: gt(2.5) and gte(3) both start at 3.
    for (const bound of bounds) {
      if (bound.lower) minimum = Math.max(minimum, bound.inclusive ? Math.ceil(bound.value) : Math.floor(bound.value) + 1);
      else maximum = Math.min(maximum, bound.inclusive ? Math.floor(bound.value) : Math.ceil(bound.value) - 1);
    }
    if (minimum > maximum) {
      throw new ConstraintError('invalid_schema', `number at ${path} has minimum ${minimum} above its maximum ${maximum}, so no value is valid`);
    }
    return { kind: 'number', id: this.nextId++, integer, minimum, maximum };
  }

  private literal(values: readonly unknown[], path: string): LiteralNode {
    if (values.length === 0) {
      throw new ConstraintError('invalid_schema', `enum or literal at ${path} has no values, so no value is valid`);
    }
    const texts = new Set<string>();
    for (const value of values) {
      const valid = typeof value === 'string' || typeof value === 'boolean' || value === null || (typeof value === 'number' && Number.isFinite(value));
      if (!valid) throw unsupported(`literal value ${String(value)} of type ${typeof value}`, path);
      texts.add(JSON.stringify(value));
    }
    return { kind: 'literal', id: this.nextId++, alternatives: [...texts].map((text) => utf8.encode(text)) };
  }

  private array(def: ZodDef & z.core.$ZodArrayDef, path: string): GrammarNode {
    const bounds = { min: 0, max: Infinity };
    for (const check of checkDefs(def)) {
      if (!narrowLength(check, bounds)) throw unsupportedCheck('array', check.check, path);
    }
    const { min: minItems, max: maxItems } = bounds;
    if (minItems > maxItems) {
      throw new ConstraintError('invalid_schema', `array at ${path} has min length ${minItems} above its max length ${maxItems}, so no value is valid`);
    }
    const items = this.convert(def.element, `${path}[]`);
    return { kind: 'array', id: this.nextId++, items, minItems, maxItems };
  }

  private object(def: ZodDef & z.core.$ZodObjectDef, path: string): GrammarNode {
    this.rejectChecks(def, path);

    // Unknown keys are never generated, which is valid for strict, strip and loose objects alike.
    const properties: PropertyRule[] = Object.entries(def.shape).map(([name, value]) =>
      this.property(name, value, value._zod.optin === undefined, `${path}.${name}`),
    );
    return { kind: 'object', id: this.nextId++, properties, anyOrder: false };
  }

  private record(def: ZodDef & z.core.$ZodRecordDef, path: string): GrammarNode {
    this.rejectChecks(def, path);

    const keyValues = def.keyType._zod.values;
    if (keyValues !== undefined) {
      const names = [...keyValues];
      if (!names.every((name): name is string => typeof name === 'string')) throw unsupported('record with non-string literal keys', path);
      if (names.length > maxAnyOrderProperties) throw unsupported(`record with more than ${maxAnyOrderProperties} enum keys`, path);

      // zod requires every enum key unless the record is partial or its value may be absent.
      const required = def.partial !== true && def.valueType._zod.optin === undefined;
      const properties = names.map((name) => this.property(name, def.valueType, required, `${path}.${name}`));
      return { kind: 'object', id: this.nextId++, properties, anyOrder: true };
    }

    const keyDef = def.keyType._zod.def as ZodDef;
    if (keyDef.type !== 'string') throw unsupported(`record key of type ${keyDef.type}`, path);
    const key = this.string(keyDef, `${path}{key}`);
    const value = this.convert(def.valueType, `${path}{value}`);
    return { kind: 'record', id: this.nextId++, key, value };
  }

  private union(def: ZodDef & z.core.$ZodUnionDef & { discriminator?: string; inclusive?: boolean }, path: string): GrammarNode {
    this.rejectChecks(def, path);
    // A discriminated union is exclusive too, but its discriminator keeps the options apart.
    if (def.inclusive === false && def.discriminator === undefined) {
      throw unsupported('exclusive union (z.xor), which rejects values that match more than one option', path);
    }

    const options = def.options.map((option, index) => this.convert(option, `${path}|${index}`));
    if (options.length === 1) return options[0]!;
    return { kind: 'union', id: this.nextId++, options };
  }

  private property(name: string, value: ZodSchema, required: boolean, path: string): PropertyRule {
    return { name, keyBytes: utf8.encode(`${JSON.stringify(name)}:`), value: this.convert(value, path), required };
  }

  /** Rejects refinements and other checks on types whose grammar has no bounds to apply them to. */
  private rejectChecks(def: ZodDef, path: string): void {
    const check = checkDefs(def)[0];
    if (check !== undefined) throw unsupportedCheck(def.type, check.check, path);
  }
}

function checkDefs(def: ZodDef): (z.core.$ZodCheckDef & Record<string, unknown>)[] {
  return (def.checks ?? []).map((check) => check._zod.def as z.core.$ZodCheckDef & Record<string, unknown>);
}

/** Narrows `bounds` by a min_length, max_length or length_equals check. Returns false for any other check. */
function narrowLength(check: ReturnType<typeof checkDefs>[number], bounds: { min: number; max: number }): boolean {
  switch (check.check) {
    case 'min_length':
      bounds.min = Math.max(bounds.min, check.minimum as number);
      return true;
    case 'max_length':
      bounds.max = Math.min(bounds.max, check.maximum as number);
      return true;
    case 'length_equals':
      bounds.min = Math.max(bounds.min, check.length as number);
      bounds.max = Math.min(bounds.max, check.length as number);
      return true;
    default:
      return false;
  }
}

function unsupportedCheck(type: string, check: string, path: string): ConstraintError {
  return unsupported(check === 'custom' ? `refine() or superRefine() on ${type}` : `${type} check "${check}"`, path);
}

function unsupported(feature: string, path: string): ConstraintError {
  return new ConstraintError('unsupported_schema', `constrained decoding does not support ${feature} at ${path}; it supports ${supportedFeatures}`, { feature });
}
