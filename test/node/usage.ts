// Type-checked against the served /v1/client.d.ts by TestClientTypeDeclarations
// (the test puts client.js and client.d.ts next to a copy of this file).
import { connect, newConnectionId, State, defaults, SSEParser } from "./client.js";
import type { ConnectionState, RelayEvent, Relay, ConnectOptions } from "./client.js";

const seen: RelayEvent[] = [];
const opts: ConnectOptions = {
  url: "https://relay.example.com/v1/events",
  appId: "todo",
  topics: ["orders"],
  feeds: ["alice", "_all"],
  getToken: async () => "token",
  transport: "xhr",
  on: { "todo.created": (ev) => { seen.push(ev); } },
  onEvent: (ev) => { const d: string = ev.data; const id: string = ev.id; void d; void id; },
  onResync: (reason: string) => { void reason; },
  onConnected: (info) => { const c: string = info.connection_id; void c; },
  onStateChange: (state: ConnectionState, info) => { void state; void info.reason; },
  backoffMin: 50,
  hiddenTimeout: -1,
};
const relay: Relay = connect(opts);
const id: string = relay.connectionId;
const state: ConnectionState = relay.state;
const seq: Promise<number> = relay.publish({ feed: "alice", event: "note", data: { any: "json" } });
const res: Promise<Response> = relay.fetch("/api/todos", { method: "POST" });
relay.reconnect();
relay.close();
const open: "open" = State.OPEN;
const max: number = defaults.backoffMax;
const p = new SSEParser((ev) => { seen.push(ev); }, (ms: number) => { void ms; });
p.push("data: x\n\n");
const other: string = newConnectionId();

// @ts-expect-error: not a transport
connect({ appId: "todo", transport: "websocket" });
// @ts-expect-error: appId is required
connect({ token: "t" });

void [id, state, seq, res, open, max, other];
