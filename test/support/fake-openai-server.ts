/**
 * A fake OpenAI-compatible server for the remote backend tests. It serves /v1/completions and
 * /v1/chat/completions on 127.0.0.1 and streams Server-Sent Events in the OpenAI wire format.
 * Each request gets the next reply a test has queued: stream steps with delays, a status code,
 * a dropped connection, raw or malformed bytes, or no reply at all.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type StreamStep =
  /** One chunk carrying text: `choices[0].text`, or `choices[0].delta.content` for chat. */
  | { text: string }
  /** A chunk with no text and this finish_reason. */
  | { finish: 'stop' | 'length' }
  /** The usage chunk (`choices: []`), written only when the request asked for it in stream_options. */
  | { usage: { promptTokens: number; completionTokens: number } }
  | { done: true }
  /** Bytes written as they are, for malformed chunks and UTF-8 split across writes. */
  | { raw: string | Uint8Array }
  | { delayMs: number }
  /** Destroys the socket at this point of the stream. */
  | { drop: true };

export type FakeReply =
  | { kind: 'stream'; steps: StreamStep[] }
  | { kind: 'status'; status: number; message: string }
  /** Destroys the socket before any response byte. */
  | { kind: 'drop' }
  /** Sends nothing and keeps the connection open until the client closes it. */
  | { kind: 'hang' };

export interface SeenRequest {
  path: string;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
  /** Resolves when the response closes: true when the connection closed before the reply ended. */
  closed: Promise<boolean>;
}

/** Builds the usual reply: one chunk per piece, a finish chunk, a usage chunk and `data: [DONE]`. */
export function streamReply(
  pieces: string[],
  options: { finish?: 'stop' | 'length'; usage?: { promptTokens: number; completionTokens: number } } = {},
): FakeReply {
  const steps: StreamStep[] = pieces.map((text) => ({ text }));
  steps.push({ finish: options.finish ?? 'stop' });
  steps.push({ usage: options.usage ?? { promptTokens: 7, completionTokens: pieces.length } });
  steps.push({ done: true });
  return { kind: 'stream', steps };
}

export class FakeOpenAiServer {
  readonly requests: SeenRequest[] = [];
  private readonly replies: FakeReply[] = [];

  private constructor(private readonly server: Server) {}

  static async start(): Promise<FakeOpenAiServer> {
    const server = createServer();
    const fake = new FakeOpenAiServer(server);
    server.on('request', (request: IncomingMessage, response: ServerResponse) => void fake.handle(request, response));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return fake;
  }

  get baseUrl(): string {
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}/v1`;
  }

  /** Queues replies for the next requests, in order. A request with none queued gets HTTP 500. */
  enqueue(...replies: FakeReply[]): void {
    this.replies.push(...replies);
  }

  reset(): void {
    this.requests.length = 0;
    this.replies.length = 0;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const closed = new Promise<boolean>((resolve) => response.on('close', () => resolve(!response.writableEnded)));
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const path = request.url ?? '';
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
    this.requests.push({ path, headers: request.headers, body, closed });

    const routes: Record<string, 'chat' | 'completions'> = { '/v1/chat/completions': 'chat', '/v1/completions': 'completions' };
    const api = routes[path];
    if (api === undefined || request.method !== 'POST') {
      sendError(response, 404, `no route for ${request.method} ${path}`);
      return;
    }

    const reply = this.replies.shift() ?? { kind: 'status', status: 500, message: 'the test queued no reply for this request' };
    switch (reply.kind) {
      case 'status':
        sendError(response, reply.status, reply.message);
        return;
      case 'drop':
        request.socket.destroy();
        return;
      case 'hang':
        return;
      case 'stream':
        await writeStream(response, api, body, reply.steps);
        return;
    }
  }
}

/** Writes an error in vLLM's format: `{ error: { message, type, param, code } }`. */
function sendError(response: ServerResponse, status: number, message: string): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify({ error: { message, type: 'BadRequestError', param: null, code: status } }));
}

async function writeStream(response: ServerResponse, api: 'chat' | 'completions', body: Record<string, unknown>, steps: StreamStep[]): Promise<void> {
  const model = String(body.model);
  const created = Math.floor(Date.now() / 1000);
  const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
  const base = api === 'chat' ? { id: 'chatcmpl-fake', object: 'chat.completion.chunk', created, model } : { id: 'cmpl-fake', object: 'text_completion', created, model };
  const choice = (text: string | undefined, finishReason: string | null) =>
    api === 'chat'
      ? { index: 0, delta: text === undefined ? {} : { content: text }, logprobs: null, finish_reason: finishReason }
      : { index: 0, text: text ?? '', logprobs: null, finish_reason: finishReason };
  const event = (payload: unknown) => `data: ${JSON.stringify(payload)}\n\n`;

  response.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
  // vLLM opens a chat stream with a chunk that carries only the assistant role.
  if (api === 'chat') response.write(event({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] }));

  for (const step of steps) {
    if (response.destroyed) return;
    if ('delayMs' in step) await new Promise((resolve) => setTimeout(resolve, step.delayMs));
    else if ('drop' in step) response.socket?.destroy();
    else if ('raw' in step) response.write(step.raw);
    else if ('done' in step) response.write('data: [DONE]\n\n');
    else if ('text' in step) response.write(event({ ...base, choices: [choice(step.text, null)] }));
    else if ('finish' in step) response.write(event({ ...base, choices: [choice(undefined, step.finish)] }));
    else if (includeUsage) {
      const { promptTokens, completionTokens } = step.usage;
      response.write(event({ ...base, choices: [], usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens } }));
    }
  }
  if (!response.destroyed) response.end();
}
