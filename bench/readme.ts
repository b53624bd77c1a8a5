/**
 * Writes a benchmark's tables into the READMEs between marker comments, so that the published
 * figures are always the last measured ones. A block looks like
 *
 *   <!-- bench:engine threads=1 -->
 *   ...generated Markdown...
 *   <!-- /bench:engine threads=1 -->
 *
 * Each marker must be a line of its own, and a README must have at most one block per key.
 * Only the lines between the markers change, and the file keeps its line endings.
 */
import { readFileSync, writeFileSync } from 'node:fs';

/**
 * Replaces block `key` of `file` with `markdown`. Returns false when the file has no such
 * block. Throws when the markers are repeated, out of order, or inside `markdown`.
 */
export function replaceReadmeBlock(file: string, key: string, markdown: string): boolean {
  const text = readFileSync(file, 'utf8');
  const newline = text.includes('\r\n') ? '\r\n' : '\n';
  const lines = text.split(/\r?\n/);
  const open = `<!-- ${key} -->`;
  const close = `<!-- /${key} -->`;
  const opens = lines.flatMap((line, index) => (line.trim() === open ? [index] : []));
  const closes = lines.flatMap((line, index) => (line.trim() === close ? [index] : []));
  if (opens.length === 0 && closes.length === 0) return false;
  if (opens.length !== 1 || closes.length !== 1 || closes[0]! < opens[0]!) {
    throw new Error(`${file} must have one "${open}" line followed by one "${close}" line; found ${opens.length} and ${closes.length}`);
  }

  const body = markdown.trim().split(/\r?\n/);
  if (body.some((line) => line.trim() === open || line.trim() === close)) throw new Error(`the tables for ${file} contain the "${key}" markers`);
  const updated = [...lines.slice(0, opens[0]! + 1), ...body, ...lines.slice(closes[0]!)].join(newline);
  if (updated !== text) writeFileSync(file, updated);
  return true;
}
