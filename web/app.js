/**
 * The Sanfang chat page: one WebSocket to /ws speaking the protocol of runtime/protocol.ts.
 * A customer picks an order and chats with the service agent about it. A rider
 * receives the agent's questions, one thread per case, and replies to them.
 *
 * The page survives dropped connections. It reconnects with backoff and resumes every known
 * case from the last sequence number it has seen. It keeps messages by (case id, seq), so a
 * replay shows nothing twice. It resends unacknowledged messages under their original
 * clientMsgId, which the server uses to store each message once. Cases, messages and the outbox
 * live in localStorage, so a reload picks up where the page left off.
 *
 * Every piece of user or server text reaches the DOM through textContent, never innerHTML.
 * The page is one file because the server serves only /, /app.js and /style.css.
 */

// ---------------------------------------------------------------------------------------------
// Strings

const strings = {
  zh: {
    appTitle: '三方客服',
    languageToggle: 'English',
    roleLabel: '身份',
    roleCustomer: '顾客',
    roleRider: '骑手',
    customerLabel: '顾客',
    riderLabel: '骑手',
    customerOption: '顾客 {id}',
    riderOption: '骑手 {id}',
    'status.connecting': '正在连接…',
    'status.connected': '已连接',
    'status.reconnecting': '连接已断开，正在重新连接…',
    'status.offline': '网络已断开，恢复后会自动重连',
    'status.rejected': '无法登录，请选择其他身份',
    ordersHeading: '我的订单',
    riderOrdersHeading: '我的配送',
    ordersLoading: '正在加载订单…',
    ordersEmpty: '暂无订单',
    conversationHeading: '会话',
    pickOrder: '请选择一个订单，开始咨询。',
    opening: '正在打开会话…',
    riderEmpty: '暂无平台消息，有新消息时会显示在这里。',
    'orderStatus.placed': '已下单',
    'orderStatus.preparing': '商家备餐中',
    'orderStatus.delivering': '配送中',
    'orderStatus.delivered': '已送达',
    'orderStatus.cancelled': '已取消',
    'caseStatus.open': '咨询中',
    'caseStatus.handoff': '已转人工客服',
    'caseStatus.resolved': '已解决',
    orderLabel: '订单 {id}',
    riderThreadTitle: '会话 …{id}',
    itemQty: '{name} ×{qty}',
    itemSeparator: '、',
    promisedAt: '预计 {time} 送达',
    promisedFor: '约定 {time} 送达',
    lateBy: '已超时 {minutes} 分钟',
    amount: '¥{amount}',
    unread: '{count} 条新消息',
    metaSeparator: ' · ',
    senderAgent: '客服',
    senderPlatform: '平台客服',
    'bubble.pending': '发送中…',
    'bubble.failed': '发送失败',
    retry: '重试',
    discard: '删除',
    customerPlaceholder: '请输入您的问题',
    riderPlaceholder: '回复平台',
    send: '发送',
    back: '‹ 订单',
    close: '关闭',
    'error.malformed_frame': '抱歉，请求格式有误，请刷新页面后重试。',
    'error.invalid_frame': '抱歉，请求格式有误，请刷新页面后重试。',
    'error.frame_too_large': '抱歉，消息太大，无法发送。',
    'error.message_too_long': '抱歉，消息太长了，请缩短后再发送。',
    'error.not_authenticated': '连接尚未就绪，请稍后再试。',
    'error.not_found': '抱歉，没有找到相关的订单或会话。',
    'error.forbidden': '抱歉，您无权进行此操作。',
    'error.internal_error': '抱歉，系统出了点问题，请稍后重试。',
    'error.unknown': '抱歉，出现了意外错误，请稍后重试。',
    customerNotFound: '找不到顾客 {id}，请从列表中选择其他顾客。',
    riderNotFound: '找不到骑手 {id}，请从列表中选择其他骑手。',
    caseExpired: '之前的一个会话已失效，请重新选择订单。',
  },
  en: {
    appTitle: 'Sanfang Support',
    languageToggle: '中文',
    roleLabel: 'Role',
    roleCustomer: 'Customer',
    roleRider: 'Rider',
    customerLabel: 'Customer',
    riderLabel: 'Rider',
    customerOption: 'Customer {id}',
    riderOption: 'Rider {id}',
    'status.connecting': 'Connecting…',
    'status.connected': 'Connected',
    'status.reconnecting': 'Connection lost, reconnecting…',
    'status.offline': 'You are offline; the page reconnects when the network is back',
    'status.rejected': 'Sign-in failed; please pick another identity',
    ordersHeading: 'My orders',
    riderOrdersHeading: 'My deliveries',
    ordersLoading: 'Loading orders…',
    ordersEmpty: 'No orders yet',
    conversationHeading: 'Conversation',
    pickOrder: 'Choose an order to start a conversation.',
    opening: 'Opening the conversation…',
    riderEmpty: 'No messages from the platform yet. New ones will appear here.',
    'orderStatus.placed': 'Placed',
    'orderStatus.preparing': 'Being prepared',
    'orderStatus.delivering': 'On the way',
    'orderStatus.delivered': 'Delivered',
    'orderStatus.cancelled': 'Cancelled',
    'caseStatus.open': 'Open',
    'caseStatus.handoff': 'With a human agent',
    'caseStatus.resolved': 'Resolved',
    orderLabel: 'Order {id}',
    riderThreadTitle: 'Conversation …{id}',
    itemQty: '{name} ×{qty}',
    itemSeparator: ', ',
    promisedAt: 'Due {time}',
    promisedFor: 'Promised for {time}',
    lateBy: '{minutes} min late',
    amount: '¥{amount}',
    unread: '{count} new',
    metaSeparator: ' · ',
    senderAgent: 'Agent',
    senderPlatform: 'Platform',
    'bubble.pending': 'Sending…',
    'bubble.failed': 'Not sent',
    retry: 'Retry',
    discard: 'Remove',
    customerPlaceholder: 'Type your question',
    riderPlaceholder: 'Reply to the platform',
    send: 'Send',
    back: '‹ Orders',
    close: 'Close',
    'error.malformed_frame': 'Sorry, the request was not understood. Please reload the page and try again.',
    'error.invalid_frame': 'Sorry, the request was not understood. Please reload the page and try again.',
    'error.frame_too_large': 'Sorry, that message is too large to send.',
    'error.message_too_long': 'Sorry, that message is too long. Please shorten it and send it again.',
    'error.not_authenticated': 'The connection is not ready yet. Please try again in a moment.',
    'error.not_found': 'Sorry, we could not find that order or conversation.',
    'error.forbidden': 'Sorry, you are not allowed to do that.',
    'error.internal_error': 'Sorry, something went wrong on our side. Please try again shortly.',
    'error.unknown': 'Sorry, something unexpected happened. Please try again shortly.',
    customerNotFound: 'Customer {id} was not found. Please pick another customer from the list.',
    riderNotFound: 'Rider {id} was not found. Please pick another rider from the list.',
    caseExpired: 'An earlier conversation is no longer available. Please choose the order again.',
  },
};

const localeTags = { zh: 'zh-CN', en: 'en-GB' };

/** Looks up `key` in the current locale (falling back to Chinese) and fills its {placeholders}. */
function t(key, params = {}) {
  const template = strings[state.locale][key] ?? strings.zh[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (match, name) => (name in params ? String(params[name]) : match));
}

// ---------------------------------------------------------------------------------------------
// Configuration

/** The demo identities from runtime/store/seed.ts. The server has no endpoint that lists them. */
const demoIdentities = { customer: ['C001', 'C002', 'C003'], rider: ['R001', 'R002', 'R003'] };
const identityPattern = /^[A-Za-z0-9_-]{1,32}$/;

const storagePrefix = 'sanfang.v1';
const localeStorageKey = `${storagePrefix}.locale`;
/** Older messages of a case are dropped from localStorage, but the server keeps them. */
const maxStoredMessagesPerCase = 200;

const reconnectBaseDelayMs = 500;
const reconnectMaxDelayMs = 15_000;
/** A connection that has been silent this long gets a ping. */
const heartbeatIdleMs = 25_000;
/** A ping unanswered for this long means the connection is dead, even if the browser has not noticed. */
const heartbeatTimeoutMs = 10_000;
const heartbeatCheckMs = 5_000;
const noticeVisibleMs = 10_000;
/** How often order cards refresh their "late by" text. */
const orderRefreshMs = 30_000;

/** Reads the role and id from `?role=customer&customerId=C001` or `?role=rider&riderId=R001`. */
function readRoute() {
  const params = new URLSearchParams(location.search);
  const role = params.get('role') === 'rider' ? 'rider' : 'customer';
  const requested = params.get(role === 'rider' ? 'riderId' : 'customerId');
  const id = requested !== null && identityPattern.test(requested) ? requested : demoIdentities[role][0];
  return { role, id };
}

function readInitialLocale() {
  const requested = new URLSearchParams(location.search).get('lang');
  if (requested === 'zh' || requested === 'en') return requested;
  const stored = readStored(localeStorageKey, 'zh');
  return stored === 'en' ? 'en' : 'zh';
}

function readStored(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

function writeStored(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage is full or disabled: the page keeps working from memory and loses only reload recovery.
  }
}

// ---------------------------------------------------------------------------------------------
// State

const route = readRoute();
/** The party this page writes as. Its own messages have direction 'in' and the agent's have 'out'. */
const ownParty = route.role;
const threadStorageKey = `${storagePrefix}.${route.role}.${route.id}`;

const state = {
  locale: readInitialLocale(),
  orders: [],
  welcomed: false,
  /** Cases by id, shaped as createCaseState builds them. */
  cases: new Map(),
  activeCaseId: null,
  /** The order whose open_case request has no response yet. */
  openingOrderId: null,
  /**
   * open_case and resume requests in the order they were sent. The server responds to frames
   * in order, so an error without `ref` while one of these is outstanding belongs to the oldest.
   */
  caseRequests: [],
};

const connection = {
  socket: null,
  /** True between `welcome` and the socket closing: cases may be resumed and messages sent. */
  ready: false,
  attempt: 0,
  reconnectTimer: 0,
  lastFrameAt: 0,
  pingSentAt: 0,
  /** The server rejected our hello (unknown id); reconnecting would be rejected again. */
  rejected: false,
  status: 'connecting',
};

function createCaseState(caseId) {
  return {
    caseId,
    orderId: null,
    resumeToken: null,
    status: 'open',
    /** Wire messages by seq. Keying by seq makes a replayed message show once. */
    messages: new Map(),
    /** Own messages not yet acknowledged, oldest first: { clientMsgId, text, at, state, errorCode, boundSeq }. */
    pending: [],
    lastSeq: 0,
    unread: 0,
  };
}

function caseFor(caseId) {
  let found = state.cases.get(caseId);
  if (!found) {
    found = createCaseState(caseId);
    state.cases.set(caseId, found);
  }
  return found;
}

function restoreState() {
  const saved = readStored(threadStorageKey, null);
  if (!saved || !Array.isArray(saved.cases)) return;

  for (const stored of saved.cases) {
    if (typeof stored?.caseId !== 'string') continue;
    const restored = caseFor(stored.caseId);
    restored.orderId = typeof stored.orderId === 'string' ? stored.orderId : null;
    restored.resumeToken = typeof stored.resumeToken === 'string' ? stored.resumeToken : null;
    restored.status = typeof stored.status === 'string' ? stored.status : 'open';
    restored.lastSeq = Number.isInteger(stored.lastSeq) ? stored.lastSeq : 0;
    for (const message of Array.isArray(stored.messages) ? stored.messages : []) {
      if (isWireMessage(message)) restored.messages.set(message.seq, message);
    }
    restored.pending = (Array.isArray(stored.pending) ? stored.pending : [])
      .filter((item) => typeof item?.clientMsgId === 'string' && typeof item.text === 'string')
      .map((item) => ({
        ...item,
        state: item.state === 'failed' ? 'failed' : 'pending',
        boundSeq: Number.isInteger(item.boundSeq) && restored.messages.has(item.boundSeq) ? item.boundSeq : null,
      }));
  }
  if (typeof saved.activeCaseId === 'string' && state.cases.has(saved.activeCaseId)) state.activeCaseId = saved.activeCaseId;
}

function persistState() {
  const cases = [...state.cases.values()].map((c) => ({
    caseId: c.caseId,
    orderId: c.orderId,
    resumeToken: c.resumeToken,
    status: c.status,
    lastSeq: c.lastSeq,
    messages: sortedMessages(c).slice(-maxStoredMessagesPerCase),
    pending: c.pending.map(({ clientMsgId, text, at, state: itemState, errorCode, boundSeq }) => ({ clientMsgId, text, at, state: itemState, errorCode, boundSeq })),
  }));
  writeStored(threadStorageKey, { activeCaseId: state.activeCaseId, cases });
}

function isWireMessage(value) {
  return (
    typeof value?.caseId === 'string' &&
    Number.isInteger(value.seq) &&
    (value.direction === 'in' || value.direction === 'out') &&
    typeof value.text === 'string' &&
    typeof value.at === 'number'
  );
}

function sortedMessages(c) {
  return [...c.messages.values()].sort((a, b) => a.seq - b.seq);
}

/**
 * Adds a stored message to its case unless that seq is already there. An own message that
 * matches a pending one by text is bound to it, so the pending bubble hides behind the stored
 * one until the ack removes it. The server publishes a message before it sends the ack, and the
 * published frame carries no clientMsgId, so the text is the only link. Returns whether the
 * message was new.
 */
function mergeMessage(c, message) {
  if (c.messages.has(message.seq)) return false;

  c.messages.set(message.seq, {
    caseId: message.caseId,
    seq: message.seq,
    party: message.party,
    direction: message.direction,
    text: message.text,
    at: message.at,
  });
  c.lastSeq = Math.max(c.lastSeq, message.seq);
  if (message.direction === 'in') {
    const twin = c.pending.find((item) => item.boundSeq === null && item.state === 'pending' && item.text === message.text);
    if (twin) twin.boundSeq = message.seq;
  }

  return true;
}

function findPending(clientMsgId) {
  for (const c of state.cases.values()) {
    const item = c.pending.find((candidate) => candidate.clientMsgId === clientMsgId);
    if (item) return { c, item };
  }
  return null;
}

function newClientMsgId() {
  // crypto.randomUUID exists only in secure contexts, but getRandomValues also works over plain http on a LAN.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `m-${Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('')}`;
}

// ---------------------------------------------------------------------------------------------
// Connection

function connect() {
  clearTimeout(connection.reconnectTimer);
  if (connection.rejected) return;

  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const socket = new WebSocket(`${scheme}//${location.host}/ws`);
  connection.socket = socket;
  connection.ready = false;
  setStatus(connection.attempt === 0 ? 'connecting' : 'reconnecting');

  // Events of a socket that has been replaced (after a heartbeat timeout) are ignored.
  socket.addEventListener('open', () => {
    if (socket !== connection.socket) return;
    connection.lastFrameAt = Date.now();
    sendHello();
  });
  socket.addEventListener('message', (event) => {
    if (socket === connection.socket) handleFrame(event.data);
  });
  socket.addEventListener('close', () => {
    if (socket === connection.socket) handleDisconnect();
  });
}

function handleDisconnect() {
  connection.socket = null;
  connection.ready = false;
  connection.pingSentAt = 0;
  state.caseRequests = [];
  if (connection.rejected) {
    setStatus('rejected');
    return;
  }

  const delayMs = Math.min(reconnectMaxDelayMs, reconnectBaseDelayMs * 2 ** connection.attempt) * (0.8 + Math.random() * 0.4);
  connection.attempt += 1;
  connection.reconnectTimer = setTimeout(connect, delayMs);
  setStatus(navigator.onLine === false ? 'offline' : 'reconnecting');
}

/** Drops a connection that stopped responding, because closing it cleanly could wait for a peer that is gone. */
function abandonSocket() {
  const socket = connection.socket;
  if (!socket) return;

  connection.socket = null;
  socket.close();
  handleDisconnect();
}

function checkHeartbeat() {
  if (!connection.socket || connection.socket.readyState !== WebSocket.OPEN) return;

  const now = Date.now();
  if (connection.pingSentAt !== 0 && now - connection.pingSentAt > heartbeatTimeoutMs) {
    abandonSocket();
    return;
  }
  if (connection.pingSentAt === 0 && now - connection.lastFrameAt > heartbeatIdleMs) {
    connection.pingSentAt = now;
    send({ type: 'ping' });
  }
}

function send(frame) {
  const socket = connection.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;

  socket.send(JSON.stringify(frame));
  return true;
}

function sendHello() {
  connection.ready = false;
  const identity = route.role === 'rider' ? { riderId: route.id } : { customerId: route.id };
  send({ type: 'hello', role: route.role, ...identity, locale: state.locale });
}

/** Resumes every known case after `welcome`, reopens a pending open_case, then resends the outbox. */
function restoreSession() {
  state.caseRequests = [];
  // NOTE: riders cannot resume, because the server accepts only message frames from them. Rider-thread
  // messages sent while this page was disconnected never arrive, and only this browser's cache keeps history.
  if (route.role === 'customer') {
    for (const c of state.cases.values()) {
      if (!c.resumeToken) continue;
      send({ type: 'resume', resumeToken: c.resumeToken, lastSeq: c.lastSeq });
      state.caseRequests.push({ kind: 'resume', caseId: c.caseId });
    }
    if (state.openingOrderId !== null) requestOpenCase(state.openingOrderId);
  }

  // Resumes go first. The server responds in order, so history arrives before the acks of resent messages.
  for (const c of state.cases.values()) {
    for (const item of c.pending) {
      if (item.state === 'pending') sendPending(c, item);
    }
  }
}

function requestOpenCase(orderId) {
  state.openingOrderId = orderId;
  if (!connection.ready) return;

  send({ type: 'open_case', orderId });
  state.caseRequests.push({ kind: 'open', orderId });
}

function sendPending(c, item) {
  if (!connection.ready) return;
  send({ type: 'message', caseId: c.caseId, text: item.text, clientMsgId: item.clientMsgId });
}

// ---------------------------------------------------------------------------------------------
// Server frames

function handleFrame(data) {
  connection.lastFrameAt = Date.now();
  connection.pingSentAt = 0;

  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    return;
  }
  if (typeof frame?.type !== 'string') return;

  switch (frame.type) {
    case 'welcome':
      return handleWelcome(frame);
    case 'case':
      return handleCase(frame);
    case 'ack':
      return handleAck(frame);
    case 'message':
      return handleMessage(frame.message);
    case 'error':
      return handleError(frame);
    default:
      // 'pong' only proves the connection is alive, which lastFrameAt already records.
      return;
  }
}

function handleWelcome(frame) {
  state.orders = Array.isArray(frame.orders) ? frame.orders : [];
  state.welcomed = true;
  connection.ready = true;
  connection.attempt = 0;
  setStatus('connected');

  restoreSession();
  renderOrders();
  renderConversation();
}

function handleCase(frame) {
  const index = state.caseRequests.findIndex((request) => request.caseId === frame.caseId || request.orderId === frame.orderId);
  const request = index === -1 ? null : state.caseRequests.splice(index, 1)[0];

  const c = caseFor(frame.caseId);
  c.orderId = frame.orderId;
  c.resumeToken = frame.resumeToken;
  c.status = frame.status;
  for (const message of Array.isArray(frame.messages) ? frame.messages : []) {
    if (isWireMessage(message)) mergeMessage(c, message);
  }

  if (request?.kind === 'open' || state.openingOrderId === frame.orderId) {
    state.openingOrderId = null;
    activateCase(c.caseId);
  }
  persistState();
  renderOrders();
  renderConversation();
  renderCase(c, { scrollToEnd: request?.kind === 'open' });
}

function handleAck(frame) {
  const found = findPending(frame.clientMsgId);
  if (!found || !Number.isInteger(frame.seq)) return;

  const { c, item } = found;
  if (!c.messages.has(frame.seq)) {
    // The stored copy was published to an earlier connection: the ack alone proves it is stored.
    c.messages.set(frame.seq, { caseId: c.caseId, seq: frame.seq, party: ownParty, direction: 'in', text: item.text, at: item.at });
    c.lastSeq = Math.max(c.lastSeq, frame.seq);
  }
  c.pending = c.pending.filter((candidate) => candidate !== item);

  persistState();
  renderCase(c);
}

function handleMessage(message) {
  if (!isWireMessage(message)) return;
  // A customer is sent messages only of cases it opened or resumed. A rider learns its cases from their messages.
  if (route.role === 'customer' && !state.cases.has(message.caseId)) return;

  const c = caseFor(message.caseId);
  if (!mergeMessage(c, message)) return;
  if (message.direction === 'out' && route.role === 'customer' && c.caseId !== state.activeCaseId) c.unread += 1;

  persistState();
  renderCase(c);
  if (route.role === 'customer') renderOrders();
  else renderConversation();
}

function handleError(frame) {
  const code = typeof frame.code === 'string' ? frame.code : 'unknown';

  if (typeof frame.ref === 'string') {
    const found = findPending(frame.ref);
    // No pending message means its case was dropped meanwhile (a failed resume), which has its own notice.
    if (!found) return;

    found.item.state = 'failed';
    found.item.errorCode = code;
    found.item.boundSeq = null;
    persistState();
    renderCase(found.c);
    showNotice(errorText(code));
    return;
  }

  // NOTE: error frames for open_case and resume carry no ref, so this attributes them to the oldest
  // outstanding request, which the server responds to first. An unrelated ref-less error arriving in
  // between would be misattributed.
  if ((code === 'not_found' || code === 'forbidden') && state.caseRequests.length > 0) {
    const request = state.caseRequests.shift();
    if (request.kind === 'resume') {
      forgetCase(request.caseId);
      showNotice(t('caseExpired'));
      return;
    }
    state.openingOrderId = null;
    renderConversation();
  } else if (!connection.ready && code === 'not_found') {
    // With no case request outstanding, the only request before `welcome` is the hello, so the id is unknown.
    connection.rejected = true;
    setStatus('rejected');
    renderOrders();
    showNotice(t(route.role === 'rider' ? 'riderNotFound' : 'customerNotFound', { id: route.id }));
    return;
  }
  showNotice(errorText(code));
}

function errorText(code) {
  return strings.zh[`error.${code}`] === undefined ? t('error.unknown') : t(`error.${code}`);
}

/** Drops a case the server no longer has, e.g. after its database was reset. */
function forgetCase(caseId) {
  state.cases.delete(caseId);
  panes.get(caseId)?.root.remove();
  panes.delete(caseId);
  if (state.activeCaseId === caseId) state.activeCaseId = null;

  persistState();
  renderOrders();
  renderConversation();
}

// ---------------------------------------------------------------------------------------------
// User actions

function submitMessage(c, rawText) {
  const text = rawText.trim();
  if (text === '') return false;

  const item = { clientMsgId: newClientMsgId(), text, at: Date.now(), state: 'pending', errorCode: null, boundSeq: null };
  c.pending.push(item);
  persistState();
  renderCase(c, { scrollToEnd: true });
  sendPending(c, item);
  return true;
}

function retryMessage(c, item) {
  item.state = 'pending';
  item.errorCode = null;
  persistState();
  renderCase(c);
  sendPending(c, item);
}

function discardMessage(c, item) {
  c.pending = c.pending.filter((candidate) => candidate !== item);
  persistState();
  renderCase(c);
}

function selectOrder(orderId) {
  const known = [...state.cases.values()].filter((c) => c.orderId === orderId);
  const current = known.find((c) => c.status !== 'resolved') ?? known[known.length - 1];
  if (current) {
    activateCase(current.caseId);
    persistState();
    renderOrders();
    renderConversation();
    return;
  }

  requestOpenCase(orderId);
  document.body.dataset.view = 'chat';
  renderOrders();
  renderConversation();
}

function activateCase(caseId) {
  state.activeCaseId = caseId;
  const c = state.cases.get(caseId);
  if (c) c.unread = 0;
  document.body.dataset.view = 'chat';
}

function switchLocale() {
  state.locale = state.locale === 'zh' ? 'en' : 'zh';
  writeStored(localeStorageKey, state.locale);
  renderAll();

  // A new hello carries the locale, which the server gives the cases opened from now on.
  if (connection.socket?.readyState === WebSocket.OPEN && !connection.rejected) sendHello();
}

function navigateTo(role, id) {
  const params = new URLSearchParams({ role, [role === 'rider' ? 'riderId' : 'customerId']: id });
  location.search = params.toString();
}

// ---------------------------------------------------------------------------------------------
// Rendering

const elements = {
  title: document.querySelector('[data-testid="app-title"]'),
  rolePicker: document.querySelector('[data-testid="role-picker"]'),
  identityPicker: document.querySelector('[data-testid="identity-picker"]'),
  identityLabel: document.querySelector('[data-testid="identity-picker-label"]'),
  languageToggle: document.querySelector('[data-testid="language-toggle"]'),
  status: document.querySelector('[data-testid="connection-status"]'),
  notice: document.querySelector('[data-testid="error-banner"]'),
  noticeText: document.querySelector('[data-testid="error-text"]'),
  noticeClose: document.querySelector('[data-testid="error-close"]'),
  ordersHeading: document.querySelector('[data-testid="orders-heading"]'),
  ordersEmpty: document.querySelector('[data-testid="orders-empty"]'),
  orderList: document.querySelector('[data-testid="order-list"]'),
  conversationEmpty: document.querySelector('[data-testid="conversation-empty"]'),
  panes: document.querySelector('[data-testid="chat-panes"]'),
  paneTemplate: document.querySelector('#chat-pane-template'),
};

/** Pane elements by case id. A pane is built once and updated in place. */
const panes = new Map();
let noticeTimer = 0;

function el(tag, { className, testid, text, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (testid) node.dataset.testid = testid;
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attrs ?? {})) node.setAttribute(name, String(value));
  for (const child of children) if (child) node.append(child);
  return node;
}

function translateTree(root) {
  for (const node of root.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
}

function renderAll() {
  renderChrome();
  renderStatus();
  renderOrders();
  renderConversation();
  for (const c of state.cases.values()) renderCase(c);
}

function renderChrome() {
  document.documentElement.lang = localeTags[state.locale];
  document.title = t('appTitle');
  document.body.dataset.role = route.role;
  elements.ordersHeading.dataset.i18n = route.role === 'rider' ? 'riderOrdersHeading' : 'ordersHeading';
  elements.identityLabel.dataset.i18n = route.role === 'rider' ? 'riderLabel' : 'customerLabel';
  translateTree(document);

  elements.languageToggle.textContent = t('languageToggle');
  elements.languageToggle.lang = state.locale === 'zh' ? 'en' : 'zh-CN';
  elements.rolePicker.value = route.role;

  const ids = demoIdentities[route.role].includes(route.id) ? demoIdentities[route.role] : [route.id, ...demoIdentities[route.role]];
  const optionKey = route.role === 'rider' ? 'riderOption' : 'customerOption';
  elements.identityPicker.replaceChildren(...ids.map((id) => el('option', { text: t(optionKey, { id }), attrs: { value: id } })));
  elements.identityPicker.value = route.id;
}

function setStatus(status) {
  connection.status = status;
  renderStatus();
}

function renderStatus() {
  elements.status.dataset.state = connection.status;
  elements.status.textContent = t(`status.${connection.status}`);
}

function showNotice(text) {
  elements.noticeText.textContent = text;
  elements.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(hideNotice, noticeVisibleMs);
}

function hideNotice() {
  clearTimeout(noticeTimer);
  elements.notice.hidden = true;
}

function formatTime(ms) {
  const date = new Date(ms);
  const sameDay = date.toDateString() === new Date().toDateString();
  const options = sameDay ? { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' } : { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
  return new Intl.DateTimeFormat(localeTags[state.locale], options).format(date);
}

function isUnderway(order) {
  return ['placed', 'preparing', 'delivering'].includes(order.status);
}

function minutesLate(order) {
  if (!isUnderway(order)) return 0;
  return Math.floor((Date.now() - order.promisedAt) / 60_000);
}

function orderTitle(orderId) {
  const order = state.orders.find((candidate) => candidate.orderId === orderId);
  return order?.merchantName || t('orderLabel', { id: orderId });
}

function renderOrders() {
  const unreadByOrder = new Map();
  const activeOrderId = state.cases.get(state.activeCaseId)?.orderId ?? state.openingOrderId;
  for (const c of state.cases.values()) {
    if (c.orderId) unreadByOrder.set(c.orderId, (unreadByOrder.get(c.orderId) ?? 0) + c.unread);
  }

  elements.ordersEmpty.hidden = connection.rejected || (state.welcomed && state.orders.length > 0);
  elements.ordersEmpty.textContent = t(state.welcomed ? 'ordersEmpty' : 'ordersLoading');
  elements.orderList.replaceChildren(...state.orders.map((order) => renderOrder(order, order.orderId === activeOrderId, unreadByOrder.get(order.orderId) ?? 0)));
}

function renderOrder(order, active, unread) {
  const late = minutesLate(order);
  const items = order.items.map((item) => t('itemQty', { name: item.name, qty: item.qty })).join(t('itemSeparator'));
  const body = [
    el('div', { className: 'order-line' }, [
      el('span', { className: 'merchant', testid: 'order-merchant', text: order.merchantName }),
      el('span', { className: 'chip', testid: 'order-status', text: t(`orderStatus.${order.status}`), attrs: { 'data-status': order.status } }),
    ]),
    el('p', { className: 'order-items', testid: 'order-items', text: items }),
    el('div', { className: 'order-line order-meta' }, [
      el('span', { testid: 'order-promised', text: t(isUnderway(order) ? 'promisedAt' : 'promisedFor', { time: formatTime(order.promisedAt) }) }),
      late > 0 ? el('span', { className: 'late', testid: 'order-late', text: t('lateBy', { minutes: late }) }) : null,
      el('span', { className: 'amount', text: t('amount', { amount: (order.amountFen / 100).toFixed(2) }) }),
    ]),
    unread > 0 ? el('span', { className: 'unread', testid: 'order-unread', text: t('unread', { count: unread }) }) : null,
  ];

  // Riders see their orders for context only; the chat for an order is the customer's.
  const card =
    route.role === 'customer'
      ? el('button', { className: 'order-card', attrs: { type: 'button', 'aria-pressed': active } }, body)
      : el('div', { className: 'order-card' }, body);
  if (route.role === 'customer') card.addEventListener('click', () => selectOrder(order.orderId));

  return el('li', { testid: 'order-item', attrs: { 'data-order-id': order.orderId, 'data-status': order.status } }, [card]);
}

function renderConversation() {
  let emptyKey = null;
  if (route.role === 'rider') {
    emptyKey = state.cases.size === 0 ? 'riderEmpty' : null;
  } else if (state.openingOrderId !== null) {
    emptyKey = 'opening';
  } else if (!state.cases.has(state.activeCaseId)) {
    emptyKey = 'pickOrder';
  }
  elements.conversationEmpty.hidden = emptyKey === null;
  if (emptyKey !== null) elements.conversationEmpty.textContent = t(emptyKey);

  for (const c of state.cases.values()) {
    if (route.role === 'customer' && !c.orderId) continue;
    const isNew = !panes.has(c.caseId);
    const pane = paneFor(c);
    pane.root.hidden = route.role === 'customer' && (c.caseId !== state.activeCaseId || state.openingOrderId !== null);
    if (isNew) renderCase(c, { scrollToEnd: true });
    else renderPaneHeader(c, pane);
  }

  if (route.role === 'rider') {
    // The thread with the newest message comes first.
    const newest = (c) => Math.max(0, ...[...c.messages.values()].map((message) => message.at), ...c.pending.map((item) => item.at));
    const order = [...state.cases.values()].sort((a, b) => newest(b) - newest(a));
    for (const c of order) elements.panes.append(paneFor(c).root);
  }
}

function paneFor(c) {
  const existing = panes.get(c.caseId);
  if (existing) return existing;

  const root = elements.paneTemplate.content.firstElementChild.cloneNode(true);
  root.dataset.caseId = c.caseId;
  root.hidden = route.role === 'customer' && c.caseId !== state.activeCaseId;
  const pane = {
    root,
    title: root.querySelector('[data-testid="chat-title"]'),
    meta: root.querySelector('[data-testid="chat-meta"]'),
    list: root.querySelector('[data-testid="message-list"]'),
    input: root.querySelector('[data-testid="composer-input"]'),
    form: root.querySelector('[data-testid="composer"]'),
  };
  translateTree(root);

  root.querySelector('[data-testid="back-to-orders"]').addEventListener('click', () => {
    document.body.dataset.view = 'orders';
  });
  pane.form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (submitMessage(c, pane.input.value)) pane.input.value = '';
    resizeInput(pane.input);
    pane.input.focus();
  });
  pane.input.addEventListener('keydown', (event) => {
    // Enter while an IME is composing picks a candidate (pinyin input), so it must not send.
    if (event.key !== 'Enter' || event.shiftKey || event.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    pane.form.requestSubmit();
  });
  pane.input.addEventListener('input', () => resizeInput(pane.input));

  panes.set(c.caseId, pane);
  elements.panes.append(root);
  return pane;
}

function resizeInput(input) {
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

function renderPaneHeader(c, pane) {
  pane.input.placeholder = t(route.role === 'rider' ? 'riderPlaceholder' : 'customerPlaceholder');
  if (route.role === 'rider') {
    pane.title.textContent = t('riderThreadTitle', { id: c.caseId.slice(-6) });
    pane.meta.textContent = '';
    return;
  }

  const order = state.orders.find((candidate) => candidate.orderId === c.orderId);
  pane.title.textContent = orderTitle(c.orderId);
  const meta = [t('orderLabel', { id: c.orderId })];
  if (order) meta.push(t(`orderStatus.${order.status}`));
  meta.push(t(`caseStatus.${c.status}`));
  pane.meta.textContent = meta.join(t('metaSeparator'));
}

function renderCase(c, { scrollToEnd = false } = {}) {
  if (route.role === 'customer' && !c.orderId) return;
  const pane = paneFor(c);
  const list = pane.list;
  const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 48;

  const bubbles = sortedMessages(c).map((message) => renderBubble(c, message, null));
  for (const item of c.pending) {
    if (item.boundSeq === null) bubbles.push(renderBubble(c, null, item));
  }
  list.replaceChildren(...bubbles);
  renderPaneHeader(c, pane);

  if (atEnd || scrollToEnd) list.scrollTop = list.scrollHeight;
}

/** Builds one bubble, for a stored `message` or for a pending outbox `item`. */
function renderBubble(c, message, item) {
  const direction = message ? message.direction : 'in';
  const own = direction === 'in';
  const bubbleState = message ? 'sent' : item.state;
  const footer = el('div', { className: 'bubble-footer' }, [el('time', { text: formatTime(message ? message.at : item.at) })]);

  if (item) {
    footer.append(el('span', { className: 'bubble-state', testid: 'bubble-state', text: t(`bubble.${item.state}`) }));
  }
  if (item?.state === 'failed') {
    if (item.errorCode === 'internal_error') {
      const retry = el('button', { className: 'link', testid: 'bubble-retry', text: t('retry'), attrs: { type: 'button' } });
      retry.addEventListener('click', () => retryMessage(c, item));
      footer.append(retry);
    }
    const discard = el('button', { className: 'link', testid: 'bubble-discard', text: t('discard'), attrs: { type: 'button' } });
    discard.addEventListener('click', () => discardMessage(c, item));
    footer.append(discard);
  }

  const attrs = { 'data-direction': direction, 'data-state': bubbleState };
  if (message) attrs['data-seq'] = message.seq;
  if (item) attrs['data-client-msg-id'] = item.clientMsgId;
  const sender = own ? null : el('span', { className: 'sender', text: t(route.role === 'rider' ? 'senderPlatform' : 'senderAgent') });
  return el('li', { className: `bubble ${own ? 'own' : 'other'}`, testid: 'bubble', attrs }, [
    sender,
    el('p', { className: 'bubble-text', testid: 'bubble-text', text: message ? message.text : item.text }),
    footer,
  ]);
}

// ---------------------------------------------------------------------------------------------
// Start

function start() {
  restoreState();

  elements.languageToggle.addEventListener('click', switchLocale);
  elements.noticeClose.addEventListener('click', hideNotice);
  elements.rolePicker.addEventListener('change', () => navigateTo(elements.rolePicker.value, demoIdentities[elements.rolePicker.value][0]));
  elements.identityPicker.addEventListener('change', () => navigateTo(route.role, elements.identityPicker.value));

  window.addEventListener('online', () => {
    if (!connection.socket) connect();
  });
  window.addEventListener('offline', () => {
    if (!connection.ready) setStatus('offline');
  });
  setInterval(checkHeartbeat, heartbeatCheckMs);
  setInterval(renderOrders, orderRefreshMs);

  if (state.activeCaseId !== null) document.body.dataset.view = 'chat';
  renderAll();
  connect();
}

start();
