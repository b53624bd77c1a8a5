import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { replaceReadmeBlock } from '../../bench/readme.ts';

const key = 'bench:engine threads=1';

function readmeWith(text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'sanfang-readme-')), 'README.md');
  writeFileSync(file, text);
  return file;
}

describe('replaceReadmeBlock', () => {
  it('replaces only the text between the markers', () => {
    const file = readmeWith(`# Title\n\n<!-- ${key} -->\n| old | table |\n<!-- /${key} -->\n\nAfter.\n`);

    expect(replaceReadmeBlock(file, key, '| new | table |\n')).toBe(true);

    expect(readFileSync(file, 'utf8')).toBe(`# Title\n\n<!-- ${key} -->\n| new | table |\n<!-- /${key} -->\n\nAfter.\n`);
  });

  it('keeps other blocks apart', () => {
    const other = 'bench:engine threads=2';
    const file = readmeWith(`<!-- ${other} -->\nkept\n<!-- /${other} -->\n<!-- ${key} -->\n<!-- /${key} -->\n`);

    replaceReadmeBlock(file, key, 'written');

    expect(readFileSync(file, 'utf8')).toBe(`<!-- ${other} -->\nkept\n<!-- /${other} -->\n<!-- ${key} -->\nwritten\n<!-- /${key} -->\n`);
  });

  it('leaves a README without the block alone', () => {
    const text = '# Title\n\nNo generated tables here.\n';
    const file = readmeWith(text);

    expect(replaceReadmeBlock(file, key, 'written')).toBe(false);
    expect(readFileSync(file, 'utf8')).toBe(text);
  });

  it('rejects markers out of order or repeated', () => {
    for (const text of [`<!-- /${key} -->\n<!-- ${key} -->\n`, `<!-- ${key} -->\n<!-- /${key} -->\n<!-- ${key} -->\n<!-- /${key} -->\n`, `<!-- ${key} -->\n`]) {
      const file = readmeWith(text);
      expect(() => replaceReadmeBlock(file, key, 'written')).toThrow(/must have one/);
      expect(readFileSync(file, 'utf8')).toBe(text);
    }
  });

  it('ignores a marker quoted inside a line', () => {
    const file = readmeWith(`Tables go between \`<!-- ${key} -->\` lines.\n\n## Numbers\n<!-- ${key} -->\nold\n<!-- /${key} -->\n`);

    replaceReadmeBlock(file, key, 'new');

    expect(readFileSync(file, 'utf8')).toBe(`Tables go between \`<!-- ${key} -->\` lines.\n\n## Numbers\n<!-- ${key} -->\nnew\n<!-- /${key} -->\n`);
  });

  it('keeps CRLF line endings', () => {
    const file = readmeWith(`a\r\n<!-- ${key} -->\r\nold\r\n<!-- /${key} -->\r\nb\r\n`);

    replaceReadmeBlock(file, key, 'one\ntwo');

    expect(readFileSync(file, 'utf8')).toBe(`a\r\n<!-- ${key} -->\r\none\r\ntwo\r\n<!-- /${key} -->\r\nb\r\n`);
  });

  it('rejects tables that contain the markers', () => {
    const file = readmeWith(`<!-- ${key} -->\n<!-- /${key} -->\n`);
    expect(() => replaceReadmeBlock(file, key, `x\n<!-- /${key} -->`)).toThrow(/contain/);
  });
});
