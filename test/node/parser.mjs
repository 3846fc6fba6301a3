// Checks the SSE parser of the served client module against the cases of the
// web-platform-tests eventsource/format-* fixtures (behaviour restated here),
// fed whole and split at every position (a CRLF or a BOM may be cut in two).
// Usage: node parser.mjs /path/to/client.mjs
const { SSEParser } = await import(process.argv[2]);

const cases = [
  { name: "bom", in: "\uFEFFdata: lf\n\n", want: [["", "message", "lf"]] },
  { name: "double bom loses the first event", in: "\uFEFF\uFEFFdata: 1\n\ndata: 2\n\n", want: [["", "message", "2"]] },
  { name: "newlines", in: "data:test\r\ndata\ndata:test\r\n\r", want: [["", "message", "test\n\ntest"]] },
  { name: "lone CR", in: "data: cr\r\rdata: crlf\r\n\r\n", want: [["", "message", "cr"], ["", "message", "crlf"]] },
  { name: "leading space", in: "data:nospace\n\ndata:  two\n\ndata:\ttab\n\n", want: [["", "message", "nospace"], ["", "message", " two"], ["", "message", "\ttab"]] },
  { name: "field parsing", in: "data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n\n", want: [["", "message", "\0\n 2\n1\n3\n\n4"]] },
  { name: "comments and unknown fields", in: ": hi\nfalsefield:msg\n\n:x\ndata: a\n\n", want: [["", "message", "a"]] },
  { name: "event names", in: "event: custom\ndata: 1\n\nevent:\ndata: 2\n\n", want: [["", "custom", "1"], ["", "message", "2"]] },
  { name: "id persists, id-only block commits", in: "id: 7\ndata: a\n\ndata: b\n\nid: 8\n\ndata: c\n\n", want: [["7", "message", "a"], ["7", "message", "b"], ["8", "message", "c"]], last: "8" },
  { name: "id with NUL ignored", in: "id: 1\ndata: a\n\nid: x\0y\ndata: b\n\n", want: [["1", "message", "a"], ["1", "message", "b"]] },
  { name: "empty id resets", in: "id: 1\ndata: a\n\nid\ndata: b\n\n", want: [["1", "message", "a"], ["", "message", "b"]] },
  { name: "data-less block is no event", in: "retry: 500\n: c\n\nevent: x\n\ndata: d\n\n", want: [["", "message", "d"]], retry: [500] },
  { name: "retry digits only", in: "retry: 1000x\nretry\nretry: 03000\ndata: r\n\n", want: [["", "message", "r"]], retry: [3000] },
  { name: "no final blank line, no event", in: "data: 1\n\nid: final\ndata: last", want: [["", "message", "1"]], last: "" },
  { name: "relay frames", in: "retry: 2000\nid: 41\nevent: sserelay.connected\ndata: {\"connection_id\":\"abc\"}\n\n: keepalive\n\nid: 42\ndata: two\ndata: lines\n\n", want: [["41", "sserelay.connected", "{\"connection_id\":\"abc\"}"], ["42", "message", "two\nlines"]], retry: [2000], last: "42" },
];

function run(c, chunks) {
  const got = [], retry = [];
  const p = new SSEParser((ev) => got.push([ev.id, ev.event, ev.data]), (ms) => retry.push(ms));
  for (const ch of chunks) p.push(ch);
  const ok = JSON.stringify(got) === JSON.stringify(c.want) &&
    JSON.stringify(retry) === JSON.stringify(c.retry || []) &&
    (c.last === undefined || p.lastEventId === c.last);
  return { ok, got, retry, last: p.lastEventId };
}

let passed = 0, failed = 0;
for (const c of cases) {
  const splits = [[c.in]];
  for (let i = 1; i < c.in.length; i++) splits.push([c.in.slice(0, i), c.in.slice(i)]);
  splits.push([...c.in]); // one character at a time
  let bad = null;
  for (const s of splits) {
    const r = run(c, s);
    if (!r.ok) { bad = { split: s.map((x) => x.length), ...r }; break; }
  }
  if (bad) {
    failed++;
    console.log(`FAIL ${c.name}: got ${JSON.stringify(bad.got)} retry ${JSON.stringify(bad.retry)} last ${JSON.stringify(bad.last)}, want ${JSON.stringify(c.want)} (chunks ${JSON.stringify(bad.split)})`);
  } else {
    passed++;
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
