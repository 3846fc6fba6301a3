// SSE Relay browser client (ES module). Served by the relay at /v1/client.js.
//
//   import { connect } from "/v1/client.js";
//   const relay = connect({ appId: "myapp", token, onEvent(ev) { ... }, onResync() { reload(); } });
//   await relay.fetch("/api/todos", { method: "POST", body });   // adds X-Connection-Id
//
// The connection id is chosen here and kept in the URL, so EventSource's own
// reconnects keep it: the relay then still skips this tab's own events, live
// and on replay. Last-Event-ID is sent by the browser on those reconnects; when
// this module reopens the stream itself (new token) it passes last_event_id.
function randomId() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function connect(opts) {
  const base = opts.url || "/v1/events";
  const connectionId = opts.connectionId || randomId();
  let token = opts.token;
  let lastEventId = opts.lastEventId || "";
  let es = null;
  let closed = false;
  const events = opts.events || [];

  function url() {
    const u = new URL(base, location.href);
    u.searchParams.set("app_id", opts.appId);
    u.searchParams.set("connection_id", connectionId);
    for (const t of opts.topics || []) u.searchParams.append("topic", t);
    for (const f of opts.feeds || []) u.searchParams.append("feed", f);
    if (token) u.searchParams.set("access_token", token);
    if (lastEventId) u.searchParams.set("last_event_id", lastEventId);
    return u.toString();
  }

  function deliver(ev) {
    if (ev.lastEventId) lastEventId = ev.lastEventId;
    if (opts.onEvent) opts.onEvent({ id: ev.lastEventId, event: ev.type, data: ev.data });
  }

  function open() {
    es = new EventSource(url(), { withCredentials: !!opts.withCredentials });
    es.onmessage = deliver;
    for (const name of events) es.addEventListener(name, deliver);
    es.addEventListener("sserelay.connected", (ev) => {
      if (ev.lastEventId) lastEventId = ev.lastEventId;
      if (opts.onConnected) opts.onConnected(JSON.parse(ev.data));
    });
    es.addEventListener("sserelay.reset", (ev) => {
      if (ev.lastEventId) lastEventId = ev.lastEventId;
      if (opts.onResync) opts.onResync(JSON.parse(ev.data).reason);
    });
    es.addEventListener("sserelay.token-expired", async () => {
      es.close();
      if (closed || !opts.refreshToken) return;
      token = await opts.refreshToken();
      if (!closed) open();
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED && opts.onClosed) opts.onClosed();
    };
  }
  open();

  return {
    connectionId,
    get lastEventId() { return lastEventId; },
    // fetch adds X-Connection-Id so the backend can copy it into the NATS header.
    fetch(input, init = {}) {
      const headers = new Headers(init.headers || {});
      headers.set("X-Connection-Id", connectionId);
      return fetch(input, { ...init, headers });
    },
    close() { closed = true; if (es) es.close(); },
  };
}
