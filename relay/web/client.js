// SSE Relay client (one dependency-free ES module). Served by the relay at
// /v1/client.js, its TypeScript declarations at /v1/client.d.ts.
//
//   import { connect } from "/v1/client.js";
//   const relay = connect({
//     appId: "myapp", getToken: () => fetch("/token").then((r) => r.text()),
//     on: { "todo.changed"(ev) { render(JSON.parse(ev.data)); } },
//     onResync(reason) { reloadEverything(); },
//     onStateChange(state, info) { badge.textContent = state; },
//   });
//   await relay.fetch("/api/todos", { method: "POST", body });   // adds X-Connection-Id
//
// Transports: "eventsource" (token in the query or cookie), "fetch" (sends
// Authorization and Last-Event-ID itself) and "xhr" (React Native, whose fetch
// cannot stream); the last two share one WHATWG-exact parser. The relay's
// README ("Browser and React Native client") describes reconnects, polling,
// token refresh, the page lifecycle and sender exclusion; client.d.ts every option.

/** The states a client goes through; see onStateChange. */
export const State = Object.freeze({ CONNECTING: "connecting", OPEN: "open", POLLING: "polling", CLOSED: "closed" });

/** Defaults of the timing options (milliseconds), exported for tests and docs. */
export const defaults = Object.freeze({
  backoffMin: 1000, backoffMax: 30000, retry: 1000, pollAfter: 5, pollInterval: 5000,
  probeInterval: 30000, hiddenTimeout: 60000, xhrMaxBytes: 8 << 20, pollPage: 500,
});

const RESERVED = "sserelay.";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** A random connection id: 22 characters of [A-Za-z0-9_-] (132 bits). */
export function newConnectionId() {
  const b = new Uint8Array(22);
  const cr = globalThis.crypto;
  if (cr && cr.getRandomValues) cr.getRandomValues(b);
  else for (let i = 0; i < b.length; i++) b[i] = Math.floor(Math.random() * 256);
  let s = "";
  for (const x of b) s += ALPHABET[x & 63];
  return s;
}

/**
 * A text/event-stream parser (WHATWG HTML "Parsing an event stream"): one
 * leading BOM is dropped; lines end at CRLF, LF or a lone CR, also when a CRLF
 * is split across chunks; an event is dispatched by a blank line and only if
 * it has data; the last event id persists and is committed at dispatch, also
 * by a block without data; an id containing NUL is ignored; retry takes ASCII
 * digits only; comments and unknown fields are ignored.
 */
export class SSEParser {
  /**
   * @param {(ev: {id: string, event: string, data: string}) => void} onEvent
   * @param {(ms: number) => void} [onRetry]
   */
  constructor(onEvent, onRetry) {
    this.onEvent = onEvent;
    this.onRetry = onRetry || (() => {});
    this.lastEventId = "";
    this.buf = "";
    this.started = false;
    this.skipLF = false;
    this.data = "";
    this.type = "";
    this.idBuf = "";
  }

  /** push feeds decoded text; it may end anywhere, even inside a CRLF. */
  push(chunk) {
    if (!chunk) return;
    if (!this.started) {
      this.started = true;
      if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1);
    }
    if (this.skipLF) {
      this.skipLF = false;
      if (chunk[0] === "\n") chunk = chunk.slice(1);
    }
    const buf = this.buf + chunk;
    let start = 0;
    for (;;) {
      const lf = buf.indexOf("\n", start);
      const cr = buf.indexOf("\r", start);
      let end = lf < 0 ? cr : cr < 0 ? lf : Math.min(lf, cr);
      if (end < 0) break;
      const line = buf.slice(start, end);
      if (buf[end] === "\r") {
        if (end + 1 === buf.length) this.skipLF = true;
        else if (buf[end + 1] === "\n") end++;
      }
      start = end + 1;
      this.line(line);
    }
    this.buf = buf.slice(start);
  }

  line(l) {
    if (l === "") return this.dispatch();
    if (l[0] === ":") return;
    const i = l.indexOf(":");
    let field = l, value = "";
    if (i >= 0) {
      field = l.slice(0, i);
      value = l.slice(l[i + 1] === " " ? i + 2 : i + 1);
    }
    switch (field) {
      case "data": this.data += value + "\n"; break;
      case "event": this.type = value; break;
      case "id": if (!value.includes("\0")) this.idBuf = value; break;
      case "retry": if (/^[0-9]+$/.test(value)) this.onRetry(parseInt(value, 10)); break;
    }
  }

  dispatch() {
    this.lastEventId = this.idBuf;
    if (this.data === "") {
      this.type = "";
      return;
    }
    const ev = { id: this.lastEventId, event: this.type || "message", data: this.data.slice(0, -1) };
    this.data = "";
    this.type = "";
    this.onEvent(ev);
  }
}

// idAfter tells whether decimal id a comes after b (ids are stream sequences,
// possibly beyond 2^53, so they are compared as strings).
function idAfter(a, b) {
  if (!/^[0-9]+$/.test(a) || !/^[0-9]+$/.test(b)) return true;
  a = a.replace(/^0+(?=.)/, "");
  b = b.replace(/^0+(?=.)/, "");
  return a.length !== b.length ? a.length > b.length : a > b;
}

function isEventStream(ct) {
  return /^text\/event-stream\s*(;|$)/i.test(ct || "");
}

async function errorText(res) {
  try {
    const j = JSON.parse(await res.text());
    if (j && typeof j.error === "string") return j.error;
  } catch { /* not JSON */ }
  return "HTTP " + res.status;
}

// Each transport opens one stream and reports to h: event(ev), retry(ms),
// fail({status, message}) when it did not open (status 0: network; -1:
// EventSource, which cannot tell), end({soon}) when an open stream stopped.

function fetchStream(c, url, headers, h) {
  const ac = new AbortController();
  (async () => {
    let res;
    try {
      res = await c.fetch(url, { headers, signal: ac.signal, cache: "no-store", credentials: c.credentials });
    } catch (e) {
      if (!ac.signal.aborted) h.fail({ status: 0, message: String(e && e.message || e) });
      return;
    }
    if (res.status !== 200 || !isEventStream(res.headers.get("content-type"))) {
      const message = res.status === 200 ? "not an event stream: " + res.headers.get("content-type") : await errorText(res);
      if (!ac.signal.aborted) h.fail({ status: res.status, message, blocked: res.status === 200 });
      return;
    }
    if (!res.body || !res.body.getReader) {
      h.fail({ status: 0, message: "this fetch cannot stream a response body: use transport xhr", fatal: true });
      return;
    }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    const parser = new SSEParser(h.event, h.retry);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || ac.signal.aborted) break;
        parser.push(dec.decode(value, { stream: true }));
      }
    } catch { /* the stream broke */ }
    if (!ac.signal.aborted) h.end({});
  })();
  return { close() { ac.abort(); } };
}

function xhrStream(c, url, headers, h) {
  const xhr = new c.XMLHttpRequest();
  const parser = new SSEParser(h.event, h.retry);
  let seen = 0, ok = false, over = false, closed = false;
  const feed = () => {
    if (!ok || closed) return;
    const text = xhr.responseText || "";
    if (text.length > seen) {
      parser.push(text.slice(seen));
      seen = text.length;
    }
    // responseText keeps everything: start over before it grows too large.
    if (seen > c.xhrMaxBytes && !over) {
      over = true;
      closed = true;
      xhr.abort();
      h.end({ soon: true });
    }
  };
  xhr.open("GET", url, true);
  for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
  xhr.withCredentials = c.credentials === "include";
  xhr.onreadystatechange = () => {
    if (xhr.readyState >= 2 && !ok && xhr.status === 200 && isEventStream(xhr.getResponseHeader("content-type"))) {
      ok = true;
    }
  };
  xhr.onprogress = feed;
  xhr.onload = () => {
    if (closed) return;
    feed();
    closed = true;
    if (ok) return h.end({});
    let message = "HTTP " + xhr.status;
    try { message = JSON.parse(xhr.responseText).error || message; } catch { /* not JSON */ }
    if (xhr.status === 200) message = "not an event stream: " + xhr.getResponseHeader("content-type");
    h.fail({ status: xhr.status, message, blocked: xhr.status === 200 });
  };
  xhr.onerror = xhr.ontimeout = () => {
    if (closed) return;
    closed = true;
    if (ok) h.end({});
    else h.fail({ status: 0, message: "network error" });
  };
  xhr.send();
  return { close() { closed = true; xhr.abort(); } };
}

function eventSourceStream(c, url, names, h) {
  const es = new c.EventSource(url, { withCredentials: c.credentials === "include" });
  let open = false, nativeRetry = false;
  const deliver = (name) => (e) => h.event({ id: e.lastEventId || "", event: name, data: e.data });
  es.onmessage = deliver("message");
  for (const name of names) es.addEventListener(name, deliver(name));
  es.addEventListener("sserelay.connected", () => { open = true; nativeRetry = false; });
  es.onerror = () => {
    // After an open stream ends, the browser reconnects once by itself, after
    // the server's retry: hint and with Last-Event-ID; anything else is ours.
    if (open && !nativeRetry && es.readyState === 0) {
      nativeRetry = true;
      open = false;
      h.reconnecting();
      return;
    }
    es.close();
    if (open) h.end({});
    else h.fail({ status: -1, message: "EventSource failed" });
  };
  return { close() { es.close(); } };
}

/**
 * connect opens a stream of events for one app and keeps it open. See
 * client.d.ts for every option.
 */
export function connect(opts) {
  if (!opts || !opts.appId) throw new Error("sserelay: appId is required");
  const g = globalThis;
  const doc = g.document;
  // URLs are built as strings: React Native's URL cannot set search params.
  const base = g.location ? new URL(opts.url || "/v1/events", g.location.href).toString() : opts.url;
  if (!/^https?:\/\//.test(base || "")) throw new Error("sserelay: url must be absolute outside a browser page");
  const publishURL = opts.publishUrl || base.replace(/^(https?:\/\/[^/?#]+).*$/, "$1/v1/publish");
  const transport = opts.transport || "eventsource";
  const cfg = { ...defaults, ...opts };
  const c = {
    fetch: opts.fetch || (g.fetch && g.fetch.bind(g)),
    XMLHttpRequest: opts.XMLHttpRequest || g.XMLHttpRequest,
    EventSource: opts.EventSource || g.EventSource,
    credentials: opts.tokenIn === "cookie" || opts.withCredentials ? "include" : "same-origin",
    xhrMaxBytes: cfg.xhrMaxBytes,
  };
  if (!["eventsource", "fetch", "xhr"].includes(transport)) throw new Error("sserelay: unknown transport " + transport);
  if (transport === "eventsource" && !c.EventSource) throw new Error("sserelay: no EventSource here: use transport fetch or xhr");
  const handlers = opts.on || {};
  const names = [...new Set([...Object.keys(handlers), ...(opts.events || [])])]
    .filter((n) => n !== "message" && !n.startsWith(RESERVED))
    .concat(["sserelay.connected", "sserelay.reset", "sserelay.token-expired"]);
  const connectionId = opts.connectionId || newConnectionId();

  let token = opts.token || "";
  let lastEventId = opts.lastEventId || "";
  let state = "";
  let stream = null;      // the open transport, if any
  let gen = 0;            // bumps with every stream or poll; stale callbacks compare it
  let timer = null;
  let failures = 0;       // consecutive failed attempts
  let retryHint = cfg.retry;
  let polling = false;    // in the polling fallback
  let nextProbe = 0;
  let refreshed = false;  // a token was fetched and no stream opened since
  let stopped = false;    // for good
  let paused = "";        // "hidden" or "offline" while disconnected for it
  let hiddenTimer = null;
  let user = "";

  function setState(s, info = {}) {
    if (s === state && !info.reason) return;
    state = s;
    if (opts.onStateChange) opts.onStateChange(s, info);
  }
  const report = (err) => opts.onError && opts.onError(err);
  const clearTimer = () => { clearTimeout(timer); timer = null; };
  function later(ms, fn) {
    clearTimer();
    timer = setTimeout(() => { timer = null; fn(); }, Math.max(0, ms));
  }
  function backoff(n) {
    const cap = Math.min(cfg.backoffMax, cfg.backoffMin * 2 ** Math.max(0, n - 1));
    return Math.random() * cap;
  }
  function drop() {
    gen++;
    clearTimer();
    if (stream) stream.close();
    stream = null;
  }

  function query(extra) {
    const q = [["app_id", opts.appId], ["connection_id", connectionId]];
    for (const t of opts.topics || []) q.push(["topic", t]);
    for (const f of opts.feeds || []) q.push(["feed", f]);
    for (const [k, v] of Object.entries(extra)) if (v) q.push([k, v]);
    const qs = q.map(([k, v]) => k + "=" + encodeURIComponent(v)).join("&");
    return base + (base.includes("?") ? "&" : "?") + qs;
  }
  function authHeaders() {
    const h = {};
    if (token && opts.tokenIn !== "cookie") h.Authorization = "Bearer " + token;
    return h;
  }
  async function ensureToken() {
    if (!token && opts.getToken) token = await opts.getToken();
  }

  function deliver(ev) {
    if (ev.event.startsWith(RESERVED)) return reserved(ev);
    if (ev.id && lastEventId && !idAfter(ev.id, lastEventId)) return; // already delivered
    if (ev.id) lastEventId = ev.id;
    const fn = handlers[ev.event];
    try {
      if (fn) fn(ev);
      if (opts.onEvent) opts.onEvent(ev);
    } catch (e) {
      report(e);
    }
  }
  function reserved(ev) {
    let data = {};
    try { data = JSON.parse(ev.data); } catch { /* keep {} */ }
    switch (ev.event) {
      case "sserelay.connected":
        if (ev.id && !lastEventId) lastEventId = ev.id;
        user = data.user || "";
        return opened(data);
      case "sserelay.reset":
        if (ev.id) lastEventId = ev.id;
        if (opts.onResync) opts.onResync(data.reason || "reset");
        return;
      case "sserelay.token-expired":
        return unauthorized("token expired", true);
    }
  }

  function opened(info) {
    failures = 0;
    refreshed = false;
    polling = false;
    setState("open");
    if (opts.onConnected) opts.onConnected(info);
  }

  // unauthorized gets a new token and resumes; when a fresh token was
  // refused too, it backs off before asking again.
  function unauthorized(message, expired) {
    if (!opts.getToken) return stop("unauthorized", message);
    drop();
    const my = gen;
    setState("connecting", { reason: expired ? "token-expired" : "unauthorized", message });
    const refresh = async () => {
      try {
        token = await opts.getToken();
      } catch (e) {
        if (my === gen) failed({ status: 0, message: "getToken: " + e });
        return;
      }
      if (my !== gen || stopped || paused) return;
      refreshed = true;
      polling ? poll() : open();
    };
    if (refreshed && !expired) later(backoff(++failures), refresh);
    else refresh();
  }

  function stop(reason, message) {
    drop();
    stopped = true;
    setState("closed", { reason, message });
  }

  // failed handles a request that did not open (or a poll that failed).
  function failed(f) {
    if (stopped || paused) return;
    if (f.fatal) return stop("unsupported", f.message);
    switch (f.status) {
      case 401: return unauthorized(f.message, false);
      case 403: return stop("forbidden", f.message);
      case 400: return stop("bad-request", f.message);
      case 204: return stop("server-stop", "the server asked the client to stop");
    }
    report(new Error("sserelay: " + f.message));
    failures++;
    if (polling) {
      nextProbe = Date.now() + cfg.probeInterval;
      return later(cfg.pollInterval, poll);
    }
    if (failures >= cfg.pollAfter) {
      polling = true;
      nextProbe = Date.now() + cfg.probeInterval;
      setState("polling", { reason: f.message });
      return poll();
    }
    setState("connecting", { reason: f.message });
    later(backoff(failures), open);
  }

  // ended handles an open stream that stopped: resume after the server's hint.
  function ended(e) {
    stream = null;
    if (stopped || paused) return;
    setState("connecting", { reason: "stream ended" });
    later(e.soon ? 0 : retryHint, open);
  }

  async function open() {
    drop();
    if (stopped || paused) return;
    const my = gen;
    if (!polling) setState("connecting");
    try {
      await ensureToken();
    } catch (e) {
      report(e);
      return failed({ status: 0, message: "getToken: " + e });
    }
    if (my !== gen) return;
    const h = {
      event: (ev) => { if (my === gen) deliver(ev); },
      retry: (ms) => { retryHint = ms; },
      reconnecting: () => { if (my === gen) setState("connecting", { reason: "stream ended" }); },
      fail: (f) => {
        if (my !== gen) return;
        stream = null;
        f.status === -1 ? diagnose(my) : failed(f);
      },
      end: (e) => { if (my === gen) ended(e); },
    };
    if (transport === "eventsource") {
      const extra = { last_event_id: lastEventId };
      if (opts.tokenIn !== "cookie") extra.access_token = token;
      stream = eventSourceStream(c, query(extra), names, h);
    } else {
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      stream = (transport === "fetch" ? fetchStream : xhrStream)(c, query({}), headers, h);
    }
  }

  // diagnose learns why an EventSource failed (it cannot tell): one poll=1
  // request with the same position, whose events are delivered too.
  async function diagnose(my) {
    const r = await pollRequest();
    if (my !== gen) return;
    if (r.ok) {
      take(r.body);
      return failed({ status: 200, message: "the stream was refused (a proxy blocking text/event-stream?)" });
    }
    failed(r);
  }

  async function pollRequest() {
    // The token goes in the Authorization header (or the cookie goes along).
    const extra = { poll: "1", last_event_id: lastEventId };
    try {
      if (!c.fetch) return { status: 0, message: "no fetch for polling", fatal: true };
      const res = await c.fetch(query(extra), { headers: authHeaders(), cache: "no-store", credentials: c.credentials });
      if (res.status !== 200) return { status: res.status, message: await errorText(res) };
      return { ok: true, status: 200, body: await res.json() };
    } catch (e) {
      return { status: 0, message: String(e && e.message || e) };
    }
  }

  // take delivers a poll=1 answer; it returns whether the page was full.
  function take(body) {
    if (body.reset) {
      lastEventId = body.last_event_id;
      if (opts.onResync) opts.onResync(body.reset);
      return false;
    }
    for (const e of body.events || []) deliver({ id: e.id, event: e.event || "message", data: e.data });
    if (body.last_event_id && (!lastEventId || idAfter(body.last_event_id, lastEventId))) lastEventId = body.last_event_id;
    return (body.events || []).length >= cfg.pollPage;
  }

  async function poll() {
    drop();
    if (stopped || paused) return;
    const my = gen;
    setState("polling");
    try {
      await ensureToken();
    } catch (e) {
      return failed({ status: 0, message: "getToken: " + e });
    }
    const r = await pollRequest();
    if (my !== gen || stopped || paused) return;
    if (!r.ok) return failed(r);
    refreshed = false;
    const full = take(r.body);
    if (my !== gen) return;
    if (Date.now() >= nextProbe) {
      // A probe: try the stream again; if it fails, polling goes on.
      nextProbe = Date.now() + cfg.probeInterval;
      return open();
    }
    later(full ? 0 : cfg.pollInterval, poll);
  }

  function pause(why) {
    if (stopped || paused) return;
    paused = why;
    drop();
    setState("closed", { reason: why });
  }
  function resume(why) {
    if (stopped || (why && paused !== why)) return;
    paused = "";
    failures = 0;
    polling = false;
    open();
  }

  const listeners = [];
  function listen(target, name, fn) {
    if (!target || !target.addEventListener) return;
    target.addEventListener(name, fn);
    listeners.push(() => target.removeEventListener(name, fn));
  }
  const visibility = () => {
    if (doc.visibilityState === "hidden") {
      if (!hiddenTimer) hiddenTimer = setTimeout(() => { hiddenTimer = null; pause("hidden"); }, cfg.hiddenTimeout);
    } else {
      clearTimeout(hiddenTimer);
      hiddenTimer = null;
      resume("hidden");
    }
  };
  if (doc && cfg.hiddenTimeout >= 0) listen(doc, "visibilitychange", visibility);
  if (g.window) {
    listen(g.window, "offline", () => pause("offline"));
    listen(g.window, "online", () => resume("offline"));
  }
  open();
  if (doc && cfg.hiddenTimeout >= 0 && doc.visibilityState === "hidden") visibility(); // opened in the background

  return {
    connectionId,
    get state() { return state; },
    get lastEventId() { return lastEventId; },
    get user() { return user; },
    /** fetch adds X-Connection-Id, so that the backend can pass it on to the relay. */
    fetch(input, init = {}) {
      const headers = new Headers(init.headers || {});
      headers.set("X-Connection-Id", connectionId);
      return c.fetch(input, { ...init, headers });
    },
    /** publish posts one event to /v1/publish with this client's token and connection id. */
    async publish(ev) {
      await ensureToken();
      const body = { app_id: opts.appId, connection_id: connectionId, ...ev };
      const res = await c.fetch(publishURL, {
        method: "POST", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
      });
      if (res.status !== 200) throw new Error("sserelay publish: " + (await errorText(res)));
      return (await res.json()).seq;
    },
    /** reconnect drops the stream and opens a new one now, from the last id. */
    reconnect() { resume(""); },
    /** close stops for good. */
    close() {
      if (hiddenTimer) clearTimeout(hiddenTimer);
      for (const off of listeners.splice(0)) off();
      if (!stopped) stop("closed", "closed by the application");
    },
  };
}
