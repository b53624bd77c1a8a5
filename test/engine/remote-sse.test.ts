import { describe, expect, it } from 'vitest';
import { SseLineTooLong, SseParser } from '../../engine/remote/sse.ts';

describe('SseParser', () => {
  it('returns the data of complete events', () => {
    const parser = new SseParser();

    expect(parser.push('data: {"a":1}\n\ndata: [DONE]\n\n')).toEqual(['{"a":1}', '[DONE]']);
  });

  it('holds an event split across pushes', () => {
    const parser = new SseParser();

    expect(parser.push('data: {"a"')).toEqual([]);
    expect(parser.push(':1}\n')).toEqual([]);
    expect(parser.push('\n')).toEqual(['{"a":1}']);
  });

  it.each([
    ['CRLF', 'data: x\r\n\r\n'],
    // A trailing CR stays buffered in case an LF follows, so the CR case ends with more text.
    ['CR', 'data: x\r\rdata: y'],
    ['LF', 'data: x\n\n'],
  ])('accepts %s line endings', (_name, stream) => {
    expect(new SseParser().push(stream)).toEqual(['x']);
  });

  it('joins a CRLF split across pushes', () => {
    const parser = new SseParser();

    expect(parser.push('data: x\r')).toEqual([]);
    expect(parser.push('\n\r')).toEqual([]);
    expect(parser.push('\n')).toEqual(['x']);
  });

  it('joins multi-line data with newlines', () => {
    expect(new SseParser().push('data: one\ndata: two\n\n')).toEqual(['one\ntwo']);
  });

  it('ignores comments and other fields', () => {
    const stream = ': keep-alive\n\nevent: message\nid: 7\nretry: 100\ndata:x\n\n';

    expect(new SseParser().push(stream)).toEqual(['x']);
  });

  it('keeps spaces after the first', () => {
    expect(new SseParser().push('data:  two spaces\n\n')).toEqual([' two spaces']);
  });

  it('drops an event without data', () => {
    expect(new SseParser().push('event: ping\n\n')).toEqual([]);
  });

  it('throws on an endless line', () => {
    const parser = new SseParser(16);

    expect(() => parser.push('data: 0123456789abcdef')).toThrow(SseLineTooLong);
  });
});
