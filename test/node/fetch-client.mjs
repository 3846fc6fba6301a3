// The relay's own client module (served at /v1/client.js, saved to a file by
// the test) under Node, with the fetch transport: Node's fetch streams the
// body. Prints one JSON line per callback on stdout.
// Usage: node fetch-client.mjs CLIENT_MODULE URL TOKEN OPTIONS_JSON
const [mod, url, token, extra] = process.argv.slice(2);
const { connect } = await import(mod);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
let relay = null;
relay = connect({
  url, appId: "app", token, transport: "fetch", ...JSON.parse(extra || "{}"),
  onEvent: (ev) => out({ kind: "event", id: ev.id, event: ev.event, data: ev.data }),
  onConnected: (info) => out({ kind: "sserelay.connected", data: JSON.stringify(info), id: relay ? relay.lastEventId : "" }),
  onResync: (reason) => out({ kind: "sserelay.reset", data: reason }),
  onStateChange: (state, info) => out({ kind: "state", data: state, reason: info.reason || "" }),
});
process.on("SIGTERM", () => { relay.close(); process.exit(0); });
