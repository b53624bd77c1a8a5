/**
 * The HTTP and WebSocket server: serves the chat page and speaks the protocol of protocol.ts.
 * Only this module imports `ws`. A bad frame gets a typed error frame in return, and the
 * connection stays open.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { CaseService, CaseServiceError } from './case-service.ts';
import type { Config } from './config.ts';
import type { Registry } from 'prom-client';
import { log } from './log.ts';
import { clientFrameSchema, type ClientFrame, type ErrorCode, type ServerFrame, type WireMessage } from './protocol.ts';
import { getCaseByResumeToken, listOpenCases } from './store/cases.ts';
import type { Db } from './store/db.ts';
import { StoreError } from './store/errors.ts';
import { listMessagesAfter } from './store/messages.ts';
import { getCustomer, getMerchant, getOrder, getRider, listOrdersForCustomer, listOrdersForRider } from './store/orders.ts';
import type { Message, Order } from './store/schema.ts';

/** A token bucket per connection for chat messages. */
interface RateBucket {
  tokens: number;
  updatedAt: number;
}

type Session =
  | { role: 'anonymous' }
  | { role: 'customer'; customerId: string; locale: 'zh' | 'en'; cases: Set<string> }
  | { role: 'rider'; riderId: string; locale: 'zh' | 'en' };

/** Frames past this size are not even buffered by ws; smaller oversized frames get an error frame. */
const hardFrameLimitBytes = 1024 * 1024;

const webRoot = fileURLToPath(new URL('../web/', import.meta.url));
const staticFiles: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

export interface RunningServer {
  server: Server;
  url: string;
  port: number;
  close(): Promise<void>;
}

function toWire(message: Message): WireMessage {
  return { caseId: message.caseId, seq: message.seq, party: message.party, direction: message.direction, text: message.text, at: message.createdAt };
}

function orderSummary(db: Db, order: Order) {
  return {
    orderId: order.id,
    status: order.status,
    merchantName: getMerchant(db, order.merchantId)?.name ?? '',
    items: order.items.map((item) => ({ name: item.name, qty: item.qty })),
    amountFen: order.amountFen,
    promisedAt: order.promisedAt,
  };
}

export class ChatServer {
  private readonly sockets = new Map<WebSocket, Session>();
  private readonly buckets = new Map<WebSocket, RateBucket>();
  private readonly wss: WebSocketServer;
  private readonly http: Server;
  private unsubscribe: () => void = () => {};

  constructor(
    private readonly db: Db,
    private readonly cases: CaseService,
    private readonly config: Config,
    private readonly metrics?: Registry,
  ) {
    this.http = createServer((request, response) => this.handleHttp(request, response));
    this.wss = new WebSocketServer({ server: this.http, path: '/ws', maxPayload: hardFrameLimitBytes });
    this.wss.on('connection', (socket) => this.handleConnection(socket));
  }

  /** Returns whether a rider is connected right now. The case service checks this before simulating one. */
  isRiderOnline(riderId: string): boolean {
    for (const session of this.sockets.values()) if (session.role === 'rider' && session.riderId === riderId) return true;
    return false;
  }

  async listen(): Promise<RunningServer> {
    this.unsubscribe = this.cases.onMessage((message) => this.publish(message));
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(this.config.port, this.config.host, () => resolve());
    });
    const port = (this.http.address() as AddressInfo).port;
    const url = `http://${this.config.host}:${port}`;
    log.info({ url }, 'server listening');
    return { server: this.http, url, port, close: () => this.close() };
  }

  async close(): Promise<void> {
    this.unsubscribe();
    for (const socket of this.wss.clients) socket.terminate();
    // With an external HTTP server, ws's close callback waits for every client socket's close
    // event. The HTTP server's own close below already waits for those sockets, so this one is not awaited.
    this.wss.close();
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeAllConnections();
    await closed;
  }


  private handleHttp(request: IncomingMessage, response: ServerResponse): void {
    const path = new URL(request.url ?? '/', 'http://localhost').pathname;
    if (path === '/healthz') {
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true }));
      return;
    }
    if (path === '/metrics' && this.metrics) {
      const registry = this.metrics;
      registry
        .metrics()
        .then((body) => response.writeHead(200, { 'content-type': registry.contentType }).end(body))
        .catch((error) => {
          log.error({ err: error }, 'metrics collection failed');
          response.writeHead(500).end();
        });
      return;
    }
    const entry = staticFiles[path];
    if (!entry || request.method !== 'GET') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    response.writeHead(200, { 'content-type': entry.type, 'cache-control': 'no-cache' }).end(readFileSync(webRoot + entry.file));
  }

  private send(socket: WebSocket, frame: ServerFrame): void {
    if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(frame));
  }

  private sendError(socket: WebSocket, code: ErrorCode, message: string, ref?: string): void {
    this.send(socket, { type: 'error', code, message, ...(ref ? { ref } : {}) });
  }

  private handleConnection(socket: WebSocket): void {
    this.sockets.set(socket, { role: 'anonymous' });
    socket.on('message', (data, isBinary) => {
      try {
        this.handleFrame(socket, data, isBinary);
      } catch (error) {
        log.error({ err: error }, 'frame handler failed');
        this.sendError(socket, 'internal_error', 'the server failed to handle this frame; it was not stored');
      }
    });
    socket.on('close', () => {
      this.sockets.delete(socket);
      this.buckets.delete(socket);
    });
    socket.on('error', (error) => log.warn({ err: error }, 'websocket error'));
  }

  private handleFrame(socket: WebSocket, data: RawData, isBinary: boolean): void {
    const bytes = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer).byteLength;
    if (bytes > this.config.maxFrameBytes) {
      this.sendError(socket, 'frame_too_large', `frame of ${bytes} bytes exceeds the limit of ${this.config.maxFrameBytes} bytes`);
      return;
    }
    if (isBinary) {
      this.sendError(socket, 'malformed_frame', 'binary frames are not supported; send JSON text frames');
      return;
    }

    let json: unknown;
    try {
      json = JSON.parse(data.toString());
    } catch {
      this.sendError(socket, 'malformed_frame', 'frame is not valid JSON');
      return;
    }
    const parsed = clientFrameSchema.safeParse(json);
    if (!parsed.success) {
      const detail = parsed.error.issues.map((i) => `${i.path.join('.') || 'frame'}: ${i.message}`).join('; ');
      this.sendError(socket, 'invalid_frame', `invalid frame: ${detail}`);
      return;
    }

    try {
      this.dispatch(socket, parsed.data);
    } catch (error) {
      const ref = parsed.data.type === 'message' ? parsed.data.clientMsgId : undefined;
      if (error instanceof CaseServiceError) this.sendError(socket, error.code === 'invalid_state' ? 'forbidden' : error.code, error.message, ref);
      else if (error instanceof StoreError && error.code === 'not_found') this.sendError(socket, 'not_found', error.message, ref);
      else {
        log.error({ err: error, frameType: parsed.data.type }, 'frame handling failed');
        this.sendError(socket, 'internal_error', 'the server failed to handle this frame; it was not stored', ref);
      }
    }
  }

  private dispatch(socket: WebSocket, frame: ClientFrame): void {
    const session = this.sockets.get(socket)!;
    if (frame.type === 'ping') return this.send(socket, { type: 'pong' });

    if (frame.type === 'hello') {
      // NOTE: hello trusts the id it is given: there is no authentication yet, so any client can
      // act as any demo customer or rider. A deployment must put the platform's login in front.
      if (frame.role === 'customer') {
        if (!getCustomer(this.db, frame.customerId)) throw new CaseServiceError('not_found', `customer ${frame.customerId} not found`);
        this.sockets.set(socket, { role: 'customer', customerId: frame.customerId, locale: frame.locale, cases: new Set() });
        const orders = listOrdersForCustomer(this.db, frame.customerId).map((order) => orderSummary(this.db, order));
        return this.send(socket, { type: 'welcome', role: 'customer', orders });
      }
      if (!getRider(this.db, frame.riderId)) throw new CaseServiceError('not_found', `rider ${frame.riderId} not found`);
      this.sockets.set(socket, { role: 'rider', riderId: frame.riderId, locale: frame.locale });
      const orders = listOrdersForRider(this.db, frame.riderId);
      this.send(socket, { type: 'welcome', role: 'rider', orders: orders.map((order) => orderSummary(this.db, order)) });
      // A rider who connects or reconnects gets the rider threads of the open cases on their orders.
      const orderIds = new Set(orders.map((order) => order.id));
      for (const open of listOpenCases(this.db).filter((c) => orderIds.has(c.orderId))) {
        for (const message of listMessagesAfter(this.db, open.id, 0).filter((m) => m.party === 'rider')) {
          this.send(socket, { type: 'message', message: toWire(message) });
        }
      }
      return;
    }

    if (session.role === 'anonymous') {
      return this.sendError(socket, 'not_authenticated', `send a hello frame before ${frame.type}`);
    }

    if (frame.type === 'message' && frame.text.length > this.config.maxMessageChars) {
      return this.sendError(socket, 'message_too_long', `message of ${frame.text.length} characters exceeds the limit of ${this.config.maxMessageChars}`, frame.clientMsgId);
    }
    if (frame.type === 'message' && !this.takeToken(socket)) {
      return this.sendError(socket, 'rate_limited', `more than ${this.config.messagesPerSecond} messages per second; the message was not stored, send it again later`, frame.clientMsgId);
    }

    if (session.role === 'rider') {
      if (frame.type !== 'message') return this.sendError(socket, 'forbidden', `riders cannot send ${frame.type} frames`);
      const stored = this.cases.riderMessage(frame.caseId, session.riderId, frame.text, frame.clientMsgId);
      return this.acknowledge(socket, frame, stored);
    }

    switch (frame.type) {
      case 'open_case': {
        const opened = this.cases.openCase(session.customerId, frame.orderId, session.locale);
        session.cases.add(opened.id);
        return this.sendCase(socket, opened.id, opened.resumeToken, 0);
      }
      case 'resume': {
        const found = getCaseByResumeToken(this.db, frame.resumeToken);
        if (!found || found.customerId !== session.customerId) throw new CaseServiceError('not_found', 'no case for this resume token');
        session.cases.add(found.id);
        return this.sendCase(socket, found.id, found.resumeToken, frame.lastSeq);
      }
      case 'message': {
        if (!session.cases.has(frame.caseId)) {
          const found = this.cases.getCase(frame.caseId);
          if (found.customerId !== session.customerId) throw new CaseServiceError('forbidden', `case ${frame.caseId} is not yours`);
          session.cases.add(frame.caseId);
        }
        const stored = this.cases.customerMessage(frame.caseId, frame.text, frame.clientMsgId);
        return this.acknowledge(socket, frame, stored);
      }
    }
  }

  /** Acks a stored message; a reused client message id with other text is reported instead. */
  private acknowledge(socket: WebSocket, frame: { caseId: string; clientMsgId: string; text: string }, stored: { seq: number; duplicate: boolean; text: string }): void {
    if (stored.duplicate && stored.text !== frame.text) {
      return this.sendError(socket, 'duplicate_id', `client message id ${frame.clientMsgId} was already used for another message; use a new id`, frame.clientMsgId);
    }
    this.send(socket, { type: 'ack', caseId: frame.caseId, clientMsgId: frame.clientMsgId, seq: stored.seq, duplicate: stored.duplicate });
  }

  private takeToken(socket: WebSocket): boolean {
    const now = Date.now();
    const bucket = this.buckets.get(socket) ?? { tokens: this.config.messageBurst, updatedAt: now };
    bucket.tokens = Math.min(this.config.messageBurst, bucket.tokens + ((now - bucket.updatedAt) / 1000) * this.config.messagesPerSecond);
    bucket.updatedAt = now;
    this.buckets.set(socket, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  private sendCase(socket: WebSocket, caseId: string, resumeToken: string, afterSeq: number): void {
    const found = this.cases.getCase(caseId);
    const messages = listMessagesAfter(this.db, caseId, afterSeq).filter((m) => m.party === 'customer').map(toWire);
    this.send(socket, { type: 'case', caseId, orderId: found.orderId, resumeToken, status: found.status, messages });
  }

  /** Sends a stored message to the sockets allowed to see it: the customer thread to the customer, the rider thread to the rider. */
  private publish(message: Message): void {
    let riderId: string | null | undefined;
    for (const [socket, session] of this.sockets) {
      if (session.role === 'customer' && message.party === 'customer' && session.cases.has(message.caseId)) {
        this.send(socket, { type: 'message', message: toWire(message) });
      } else if (session.role === 'rider' && message.party === 'rider') {
        riderId ??= getOrder(this.db, this.cases.getCase(message.caseId).orderId)?.riderId;
        if (riderId === session.riderId) this.send(socket, { type: 'message', message: toWire(message) });
      }
    }
  }
}
