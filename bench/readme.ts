/**
 * Writes a benchmark's tables into the READMEs between marker comments, so that the published
 * figures are always the last measured ones. A block looks like
 *
 *   <!-- bench:engine threads=1 -->
 *   ...generated Markdown...
 *   <!-- /bench:engine threads=1 -->
 *
 * Only the text between the markers changes; a README without the block is left alone.
 */
import { readFileSync, writeFileSync } from 'node:fs';

/** Replaces block `key` of `file` with `markdown`. Returns false when the file has no such block. */
export function replaceReadmeBlock(file: string, key: string, markdown: string): boolean {
  const text = readFileSync(file, 'utf8');
  const open = `<!-- ${key} -->`;
  const close = `<!-- /${key} -->`;
  const start = text.indexOf(open);
  const end = start === -1 ? -1 : text.indexOf(close, start + open.length);
  if (end === -1) return false;
  const updated = `${text.slice(0, start + open.length)}\n${markdown.trim()}\n${text.slice(end)}`;
  if (updated !== text) writeFileSync(file, updated);
  return true;
}
