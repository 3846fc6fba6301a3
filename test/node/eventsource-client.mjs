// The npm eventsource package (pinned in package.json) against the relay,
// with the token in an Authorization header. Prints one JSON line per
// callback on stdout. Usage: node eventsource-client.mjs URL TOKEN NAME...
import { EventSource } from "eventsource";

const [url, token, ...names] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const es = new EventSource(url, {
  fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, Authorization: "Bearer " + token } }),
});
es.onopen = () => out({ kind: "open" });
es.onerror = (e) => out({ kind: "error", message: String(e && e.message || ""), readyState: es.readyState });
es.onmessage = (e) => out({ kind: "event", id: e.lastEventId, event: e.type, data: e.data });
for (const name of names) {
  es.addEventListener(name, (e) => out({ kind: name.startsWith("sserelay.") ? name : "event", id: e.lastEventId, event: name, data: e.data }));
}
process.on("SIGTERM", () => { es.close(); process.exit(0); });
