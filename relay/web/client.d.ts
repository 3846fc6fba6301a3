// TypeScript declarations of the SSE Relay client module, served at
// /v1/client.d.ts next to /v1/client.js.

/** One event as the relay sent it. */
export interface RelayEvent {
  /** The SSE id: the stream sequence, in decimal. */
  id: string;
  /** The event name; "message" when the publisher gave none. */
  event: string;
  /** The data, its lines joined with "\n". */
  data: string;
}

/** The first event of every stream. */
export interface ConnectedInfo {
  connection_id: string;
  user: string;
  app_id: string;
}

export type ConnectionState = "connecting" | "open" | "polling" | "closed";

/**
 * Why the state changed. A "closed" state with reason "hidden" or "offline"
 * comes back by itself; "forbidden", "unauthorized", "bad-request",
 * "server-stop", "unsupported" and "closed" are final.
 */
export interface StateInfo {
  reason?: string;
  message?: string;
}

export type Transport = "eventsource" | "fetch" | "xhr";

export interface ConnectOptions {
  /** The events URL (default "/v1/events" of the page's origin; absolute outside a page). */
  url?: string;
  /** The publish URL for publish() (default /v1/publish of the events URL's origin). */
  publishUrl?: string;
  appId: string;
  /** Topics to narrow the feeds to (default: all topics). */
  topics?: string[];
  /** Feeds to read (default the token's own feed; list the user too to keep it). */
  feeds?: string[];
  /** A fixed token; with getToken it is the first one. */
  token?: string;
  /** Called for a first token, after a 401 and on sserelay.token-expired. */
  getToken?: () => string | Promise<string>;
  /**
   * "eventsource" (default): the token in the access_token query parameter,
   * or in the sserelay_token cookie with tokenIn "cookie". "fetch": a
   * streamed body with Authorization and Last-Event-ID headers. "xhr":
   * XMLHttpRequest progress events (React Native).
   */
  transport?: Transport;
  /** "query" (default for eventsource) or "cookie" (nothing in the URL; credentials sent). */
  tokenIn?: "query" | "cookie";
  /** Send cookies cross-origin. */
  withCredentials?: boolean;
  /** The connection id to use (default: a random one), kept across every reconnect. */
  connectionId?: string;
  /** Resume after this id (default: from now on). */
  lastEventId?: string;
  /** Handlers by event name ("message" for unnamed events). */
  on?: Record<string, (ev: RelayEvent) => void>;
  /** More event names to receive with the eventsource transport (onEvent only). */
  events?: string[];
  /** Every published event, after its handler in `on`. */
  onEvent?: (ev: RelayEvent) => void;
  /** The relay lost this client's position ("history-gone", "unknown-id"): reload the state; live events follow. */
  onResync?: (reason: string) => void;
  onConnected?: (info: ConnectedInfo) => void;
  onStateChange?: (state: ConnectionState, info: StateInfo) => void;
  /** Failed attempts and handler exceptions, for logging; the client carries on. */
  onError?: (err: unknown) => void;

  /** Reconnection delay until the server hints one with retry: (ms, default 1000). */
  retry?: number;
  /** Backoff after failures: full jitter below backoffMin * 2^(n-1), capped at backoffMax (ms, default 1000 and 30000). */
  backoffMin?: number;
  backoffMax?: number;
  /** Failures in a row before polling (default 5). */
  pollAfter?: number;
  /** Interval of poll=1 requests (ms, default 5000). */
  pollInterval?: number;
  /** While polling, how often to try the stream again (ms, default 30000). */
  probeInterval?: number;
  /** The relay's --poll-page: a full page is followed by another poll at once (default 500). */
  pollPage?: number;
  /** Disconnect after the page was hidden this long; resume when visible (ms, default 60000; -1: never). */
  hiddenTimeout?: number;
  /** xhr: reopen the request after this many characters, since responseText keeps them all (default 8 MiB). */
  xhrMaxBytes?: number;

  /** Implementations to use instead of the globals (tests, Node, React Native). */
  fetch?: typeof fetch;
  EventSource?: typeof EventSource;
  XMLHttpRequest?: typeof XMLHttpRequest;
}

export interface PublishRequest {
  feed: string;
  topic?: string;
  event?: string;
  data: unknown;
  /** De-duplication id. */
  id?: string;
  /** Default this client's app. */
  app_id?: string;
  /** Default this client's connection id (so this client does not get it back). */
  connection_id?: string;
}

export interface Relay {
  readonly connectionId: string;
  readonly state: ConnectionState;
  /** The id of the last event delivered: where a reconnect resumes. */
  readonly lastEventId: string;
  /** The user of the stream, once connected. */
  readonly user: string;
  /** fetch with an X-Connection-Id header, for the app's own backend. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** POST /v1/publish with this client's token; resolves to the sequence. */
  publish(ev: PublishRequest): Promise<number>;
  /** Reconnect now, from the last id. */
  reconnect(): void;
  /** Stop for good. */
  close(): void;
}

export function connect(opts: ConnectOptions): Relay;
export function newConnectionId(): string;

export const State: {
  readonly CONNECTING: "connecting";
  readonly OPEN: "open";
  readonly POLLING: "polling";
  readonly CLOSED: "closed";
};

export const defaults: Readonly<{
  backoffMin: number; backoffMax: number; retry: number; pollAfter: number; pollInterval: number;
  probeInterval: number; hiddenTimeout: number; xhrMaxBytes: number; pollPage: number;
}>;

/** The text/event-stream parser of the fetch and xhr transports. */
export class SSEParser {
  constructor(onEvent: (ev: RelayEvent) => void, onRetry?: (ms: number) => void);
  lastEventId: string;
  push(chunk: string): void;
}
