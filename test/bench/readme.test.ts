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

  it('ignores a closing marker before the opening one', () => {
    const text = `<!-- /${key} -->\n<!-- ${key} -->\n`;
    const file = readmeWith(text);

    expect(replaceReadmeBlock(file, key, 'written')).toBe(false);
    expect(readFileSync(file, 'utf8')).toBe(text);
  });
});
