/**
 * An incremental parser for Server-Sent Events (the `text/event-stream` format of the WHATWG
 * HTML standard). It keeps only the `data` field, because OpenAI-compatible servers put each
 * stream chunk there and send no event types or ids that a client needs.
 */

/** The default bound on one unterminated line, so a server that never ends a line cannot exhaust memory. */
export const defaultMaxLineChars = 1_048_576;

export class SseLineTooLong extends Error {
  override readonly name = 'SseLineTooLong';
}

export class SseParser {
  private buffer = '';
  private dataLines: string[] = [];

  constructor(private readonly maxLineChars = defaultMaxLineChars) {}

  /**
   * Appends decoded text and returns the data of every event that it completes, in order.
   * Throws SseLineTooLong when one line grows past `maxLineChars`.
   */
  push(text: string): string[] {
    this.buffer += text;
    const events: string[] = [];
    let lineStart = 0;

    for (let i = 0; i < this.buffer.length; i++) {
      const char = this.buffer[i];
      if (char !== '\n' && char !== '\r') continue;
      // A trailing CR may be the first half of a CRLF split across two pushes.
      if (char === '\r' && i + 1 === this.buffer.length) break;

      const line = this.buffer.slice(lineStart, i);
      if (char === '\r' && this.buffer[i + 1] === '\n') i++;
      lineStart = i + 1;
      const event = this.takeLine(line);
      if (event !== undefined) events.push(event);
    }

    this.buffer = this.buffer.slice(lineStart);
    if (this.buffer.length > this.maxLineChars) {
      throw new SseLineTooLong(`event-stream line is longer than ${this.maxLineChars} characters without a line break`);
    }
    return events;
  }

  /** Applies one line to the pending event and returns the event's data when the line ends it. */
  private takeLine(line: string): string | undefined {
    if (line === '') {
      if (this.dataLines.length === 0) return undefined;
      const data = this.dataLines.join('\n');
      this.dataLines = [];
      return data;
    }
    if (line.startsWith(':')) return undefined;

    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.dataLines.push(value);
    return undefined;
  }
}
