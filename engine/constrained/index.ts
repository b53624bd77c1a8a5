/**
 * Constrained decoding: masks each decode step's logits so that the output is always a JSON text
 * of a zod schema followed by the end token.
 */
export { jsonSchemaConstraint, type ConstraintFactory, type JsonSchemaConstraintFactory, type JsonSchemaConstraintOptions, type TokenConstraint } from './constraint.ts';
export { ConstraintError, isConstraintError, type ConstraintErrorCode } from './errors.ts';
export { grammarFromZod } from './from-zod.ts';
export type { GrammarNode } from './grammar.ts';
export type { MaskCacheStats } from './token-mask.ts';
export { tokenVocabulary, type TokenVocabulary } from './vocabulary.ts';
