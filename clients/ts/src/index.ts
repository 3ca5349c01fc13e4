// uip-realtime client: one multiplexed `/ws` socket that survives drops.
// Every reconnect resubscribes each channel with `since` = the last `seq` the
// application got, so it sees every event once and in order; a gap that
// history cannot fill is handed over as a fresh snapshot, never silently.

/** What the client needs of a WebSocket (the browser's, or `ws` in Node). */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type SocketFactory = new (url: string) => SocketLike;

/** A token, or a function that gets a fresh one (called on every connect and refresh). */
export type TokenSource = string | (() => string | Promise<string>);

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** The error codes of the wire contract, plus the client's own. */
export type ErrorCode =
  | 'AUTH_FAILED'
  | 'AUTH_EXPIRED'
  | 'SUBSCRIPTION_FAILED'
  | 'RATE_LIMIT_EXCEEDED'
  | 'INVALID_MESSAGE'
  | 'CHANNEL_NOT_FOUND'
  | 'MAX_SUBSCRIPTIONS'
  | 'FORBIDDEN'
  | 'MESSAGE_TOO_LARGE'
  | 'OVERLOADED'
  | 'COMMAND_FAILED'
  | 'INTERNAL_ERROR'
  | 'INVALID_FRAME'
  | 'CONNECTION_LOST';

/** A server error (or a client-side one: `INVALID_FRAME`, `CONNECTION_LOST`). */
export class UipError extends Error {
  constructor(
    readonly code: ErrorCode | string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'UipError';
  }
}

/** A channel event as the gateway sends it. */
export interface ChannelEvent<D = Record<string, unknown>> {
  type: string;
  channel: string;
  seq: number;
  timestamp: string;
  data: D;
  id?: string;
}

/** The known channels' event payloads (`000_…`). */
export interface Location {
  lat: number;
  lon: number;
}
export interface TrafficFlow {
  camera_id: string;
  location: Location;
  intensity: number;
  average_speed: number;
  vehicle_types: Record<string, number>;
  occupancy: number;
  congestion_level: string;
}
export interface AccidentNew {
  id: string;
  location: Location;
  severity: string;
  confidence: number;
  camera_id: string;
  vehicles_involved: number;
}
export interface AccidentUpdate {
  id: string;
  status?: string;
  emergency_services?: string;
}
export interface AccidentResolved {
  id: string;
  resolution?: string;
  duration?: number;
}
export interface CongestionUpdate {
  zone_id: string;
  level: string;
  severity: number;
  affected_roads: string[];
  estimated_delay: number;
  alternative_routes: { route: string; delay: number }[];
}
export interface WeatherUpdate {
  location: Location;
  temperature: number;
  conditions: string;
  precipitation: number;
}
export interface WeatherAlert {
  alert_type: string;
  severity: string;
  description: string;
  affected_zones: string[];
  start_time: string;
  end_time: string;
}
export interface AirQuality {
  location: Location;
  aqi: number;
  category: string;
  dominant_pollutant: string;
  pollutants: Record<string, number>;
}
export interface CameraStatus {
  camera_id: string;
  status: string;
  last_frame: string;
  health: Record<string, unknown>;
}
export interface Alert {
  id: string;
  priority: string;
  category: string;
  title: string;
  message: string;
  location?: Location;
  action_required?: boolean;
}

/** `data` of a `system` status frame. */
export interface SystemStatus {
  status: 'online' | 'degraded' | 'maintenance';
  timestamp: number;
  message?: string;
  reconnect_after_s?: number;
}

/** The error object of `error` and `auth.failed` frames. */
export interface ErrorBody {
  code: ErrorCode | string;
  message: string;
  details?: Record<string, unknown>;
}

/** A presence member. */
export interface Member {
  sub: string | null;
  connection_id: string;
  joined_at: string;
}

/** Every message the gateway sends (SPEC "Exact shapes" and "Two-way"), by `type`. */
export type ServerMessage =
  | { type: 'auth.success'; timestamp: string; data: { sub: string | null; exp: number | null; connection_id: string } }
  | { type: 'auth.failed'; timestamp: string; error: ErrorBody }
  | { type: 'error'; timestamp: string; error: ErrorBody }
  | { type: 'rate_limit_info'; timestamp: string; data: { max_messages_per_minute: number; max_subscriptions: number; burst_limit: number; burst_window: number } }
  | { type: 'subscribed'; timestamp: string; data: { channel: string; filters: Record<string, unknown>; seq: number; recovered?: boolean } }
  | { type: 'snapshot'; timestamp: string; data: { channel: string; seq: number; events: ChannelEvent[] } }
  | { type: 'unsubscribed'; timestamp: string; data: { channel: string } }
  | { type: 'pong'; timestamp?: string; data?: Record<string, never> }
  | { type: 'batch'; timestamp: string; events: ChannelEvent[] }
  | { type: 'published'; timestamp: string; data: { channel: string; seq: number; id?: string; duplicate?: boolean } }
  | { type: 'presence'; timestamp: string; data: { channel: string; members: Member[] } }
  | { type: 'presence.join' | 'presence.leave'; channel: string; timestamp: string; data: { sub: string | null; connection_id: string } }
  | { type: 'system'; event: 'status'; timestamp: string; data: SystemStatus }
  | { type: `${string}.result`; timestamp: string; data: unknown; id?: unknown }
  | ChannelEvent;

/** The known channels' events, typed by `type`. */
export type KnownEvent =
  | (ChannelEvent<TrafficFlow> & { type: 'traffic.flow' })
  | (ChannelEvent<AccidentNew> & { type: 'accidents.new' })
  | (ChannelEvent<AccidentUpdate> & { type: 'accidents.update' })
  | (ChannelEvent<AccidentResolved> & { type: 'accidents.resolved' })
  | (ChannelEvent<CongestionUpdate> & { type: 'congestion.update' })
  | (ChannelEvent<WeatherUpdate> & { type: 'weather.update' })
  | (ChannelEvent<WeatherAlert> & { type: 'weather.alert' })
  | (ChannelEvent<AirQuality> & { type: 'air-quality.update' })
  | (ChannelEvent<CameraStatus> & { type: 'cameras.status' })
  | (ChannelEvent<Alert> & { type: 'alert' });

/** Why a subscription got a snapshot: its first subscribe, or a gap the history no longer holds. */
export type SnapshotReason = 'subscribed' | 'gap';

export interface SubscribeOptions {
  filters?: Record<string, unknown>;
  /** Start after this `seq` instead of the snapshot. */
  since?: number;
  onEvent?: (event: ChannelEvent) => void;
  /** The channel's state: latest event per key, and the head it stands at. */
  onSnapshot?: (events: ChannelEvent[], seq: number, reason: SnapshotReason) => void;
  /** A refusal of this subscription (`FORBIDDEN`, `CHANNEL_NOT_FOUND`, …); it is dropped. */
  onError?: (error: UipError) => void;
}

export interface Subscription {
  readonly channel: string;
  /** The last `seq` handed to the application. */
  readonly lastSeq: number | undefined;
  unsubscribe(): void;
}

export interface BackoffOptions {
  /** First delay cap (ms). */
  initialMs: number;
  /** Largest delay (ms). */
  maxMs: number;
  /** A connection that stayed up this long resets the attempts. */
  resetAfterMs: number;
}

export interface ClientOptions {
  /** The gateway: `wss://host` (or `ws://`, `https://`, `http://`); `/ws` is added. */
  url: string;
  token: TokenSource;
  /** A WebSocket implementation (needed in Node 20: `import WebSocket from 'ws'`). */
  WebSocket?: SocketFactory;
  /** Ask for `?batch=1` frames (unpacked transparently). */
  batch?: boolean;
  /** Ping every this many ms (25 s). */
  pingIntervalMs?: number;
  /** A connection with no pong this long after a ping is dead (10 s). */
  pongTimeoutMs?: number;
  /** Refresh the token this long before its `exp` (60 s). */
  refreshBeforeMs?: number;
  backoff?: Partial<BackoffOptions>;
  /** `fetch`, for history requests (the global one by default). */
  fetch?: typeof fetch;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 20_000, resetAfterMs: 10_000 };

/**
 * Full-jitter exponential backoff: a random delay in [0, min(max, initial·2^attempt)].
 * `random` returns [0, 1).
 */
export function backoffDelay(attempt: number, options: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const cap = Math.min(options.maxMs, options.initialMs * 2 ** Math.max(0, attempt));
  return Math.floor(random() * cap);
}

function hasFilters(filters: Record<string, unknown> | undefined): boolean {
  return filters !== undefined && Object.keys(filters).length > 0;
}

/** Close codes after which reconnecting cannot help. */
const TERMINAL_CLOSES = new Set([4003, 4004]);
/** The exact ping the runtime answers without waking the server. */
const PING = '{"type":"ping"}';

interface SubState {
  channel: string;
  options: SubscribeOptions;
  lastSeq: number | undefined;
  /** Events that arrived while a gap is being repaired. */
  held: ChannelEvent[] | undefined;
  active: boolean;
}

type Listener<T> = (value: T) => void;

interface Pending {
  resolve: (v: Record<string, unknown>) => void;
  reject: (e: UipError) => void;
}

/** The gateway client. */
export class UipClient {
  private readonly opts: ClientOptions;
  private readonly backoff: BackoffOptions;
  private ws: SocketLike | undefined;
  private currentToken = '';
  private stateValue: ConnectionState = 'idle';
  private readonly subs = new Map<string, SubState>();
  private attempt = 0;
  private openedAt = 0;
  private timers: ReturnType<typeof setTimeout>[] = [];
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private pongTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private readonly listeners = {
    state: new Set<Listener<ConnectionState>>(),
    error: new Set<Listener<UipError>>(),
    system: new Set<Listener<SystemStatus>>(),
    message: new Set<Listener<ServerMessage>>(),
  };
  private readonly pending = new Map<string, Pending>();
  private counter = 0;

  constructor(options: ClientOptions) {
    this.opts = options;
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    const g = globalThis as unknown as { addEventListener?: (t: string, f: () => void) => void; document?: { visibilityState?: string; addEventListener?: (t: string, f: () => void) => void } };
    if (typeof g.addEventListener === 'function') {
      g.addEventListener('online', () => this.reconnectNow());
      g.addEventListener('offline', () => this.ws?.close(4999, 'offline'));
    }
    g.document?.addEventListener?.('visibilitychange', () => {
      if (g.document?.visibilityState === 'visible') this.checkAlive();
    });
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.stateValue;
  }

  /** Listens for `state` changes, `error`s, `system` status and every raw `message`. */
  on(kind: 'state', f: Listener<ConnectionState>): () => void;
  on(kind: 'error', f: Listener<UipError>): () => void;
  on(kind: 'system', f: Listener<SystemStatus>): () => void;
  on(kind: 'message', f: Listener<ServerMessage>): () => void;
  on(kind: keyof UipClient['listeners'], f: Listener<never>): () => void {
    const set = this.listeners[kind] as Set<Listener<never>>;
    set.add(f);
    return () => set.delete(f);
  }

  /** Opens the connection (and keeps it open until `close`). */
  connect(): this {
    this.stopped = false;
    if (!this.ws) void this.open();
    return this;
  }

  /** Closes for good: no reconnect. */
  close(): void {
    this.stopped = true;
    this.clearTimers();
    this.ws?.close(1000, 'client closed');
    this.ws = undefined;
    this.setState('closed');
  }

  /** Subscribes to a channel; resubscribed with `since` after every reconnect. */
  subscribe(channel: string, options: SubscribeOptions = {}): Subscription {
    const sub: SubState = { channel, options, lastSeq: options.since, held: undefined, active: true };
    this.subs.set(channel, sub);
    if (this.stateValue === 'open') this.sendSubscribe(sub);
    return {
      channel,
      get lastSeq() {
        return sub.lastSeq;
      },
      unsubscribe: () => {
        sub.active = false;
        this.subs.delete(channel);
        if (this.stateValue === 'open') this.send({ type: 'unsubscribe', channel });
      },
    };
  }

  /** Publishes from the socket (token scope `publish`); resolves with `published`'s data. */
  publish(channel: string, event: string, data: Record<string, unknown>, id = this.newId()): Promise<Record<string, unknown>> {
    return this.request(id, { type: 'publish', channel, event, data, id });
  }

  /** Sends a command (e.g. `stream_control`); resolves with its `.result` data. */
  command(type: string, fields: Record<string, unknown> = {}, id = this.newId()): Promise<Record<string, unknown>> {
    return this.request(id, { ...fields, type, id });
  }

  private newId(): string {
    this.counter += 1;
    return `c${Date.now().toString(36)}${this.counter}${Math.random().toString(36).slice(2, 8)}`;
  }

  private request(id: string, message: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      if (this.stateValue !== 'open') {
        reject(new UipError('CONNECTION_LOST', 'not connected'));
        return;
      }
      this.pending.set(id, { resolve, reject });
      this.send(message);
    });
  }

  private setState(s: ConnectionState): void {
    if (s === this.stateValue) return;
    this.stateValue = s;
    for (const f of this.listeners.state) f(s);
  }

  private emitError(e: UipError): void {
    for (const f of this.listeners.error) f(e);
  }

  private async token(): Promise<string> {
    const t = this.opts.token;
    return typeof t === 'function' ? await t() : t;
  }

  private wsUrl(): string {
    const base = this.opts.url.replace(/\/+$/, '').replace(/^http/, 'ws');
    const batch = this.opts.batch ? '&batch=1' : '';
    return `${base}/ws?token=${encodeURIComponent(this.currentToken)}${batch}`;
  }

  private async open(): Promise<void> {
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    try {
      this.currentToken = await this.token();
    } catch (e) {
      this.emitError(new UipError('AUTH_FAILED', `the token provider failed: ${String(e)}`));
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) return;
    const Ctor = this.opts.WebSocket ?? (globalThis as unknown as { WebSocket?: SocketFactory }).WebSocket;
    if (!Ctor) throw new Error('no WebSocket implementation: pass options.WebSocket (e.g. the ws package)');
    const ws = new Ctor(this.wsUrl());
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (this.ws === ws) this.onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.onClosed(ev.code, ev.reason);
    };
    ws.onerror = () => {
      // `onclose` follows with the code.
    };
  }

  private send(message: Record<string, unknown>): void {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(message));
  }

  private sendSubscribe(sub: SubState): void {
    const m: Record<string, unknown> = { type: 'subscribe', channel: sub.channel };
    if (sub.options.filters) m.filters = sub.options.filters;
    if (sub.lastSeq !== undefined) m.since = sub.lastSeq;
    this.send(m);
  }

  private onFrame(raw: unknown): void {
    this.gotPong();
    let m: Record<string, unknown>;
    try {
      const text = typeof raw === 'string' ? raw : String(raw);
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      m = parsed as Record<string, unknown>;
    } catch (e) {
      this.emitError(new UipError('INVALID_FRAME', `a frame from the server is not a JSON object: ${String(e)}`));
      return;
    }
    for (const f of this.listeners.message) f(m as unknown as ServerMessage);
    const type = m.type;
    const data = (m.data ?? {}) as Record<string, unknown>;
    switch (type) {
      case 'auth.success':
        this.onAuthenticated(data.exp as number | null | undefined);
        return;
      case 'auth.failed':
      case 'error':
        this.onServerError(m);
        return;
      case 'pong':
      case 'rate_limit_info':
      case 'unsubscribed':
        return;
      case 'system':
        for (const f of this.listeners.system) f(data as unknown as SystemStatus);
        return;
      case 'subscribed':
        this.onSubscribed(data);
        return;
      case 'snapshot':
        this.onSnapshotFrame(data);
        return;
      case 'batch':
        for (const e of (m.events as ChannelEvent[]) ?? []) this.onEvent(e);
        return;
      case 'published':
        this.settle(data.id as string | undefined, data);
        return;
      default:
        if (typeof type === 'string' && type.endsWith('.result')) {
          this.settle(m.id as string | undefined, data);
          return;
        }
        if (typeof m.seq === 'number' && typeof m.channel === 'string') this.onEvent(m as unknown as ChannelEvent);
    }
  }

  private settle(id: string | undefined, data: Record<string, unknown>): void {
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p || id === undefined) return;
    this.pending.delete(id);
    p.resolve(data);
  }

  private onAuthenticated(exp: number | null | undefined): void {
    const firstAuth = this.stateValue !== 'open';
    this.openedAt = Date.now();
    this.setState('open');
    this.startHeartbeat();
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    if (typeof exp === 'number') {
      const refreshMs = this.opts.refreshBeforeMs ?? 60_000;
      const wait = Math.max(0, exp * 1000 - Date.now() - refreshMs);
      this.refreshTimer = setTimeout(() => void this.refresh(), wait);
    }
    if (firstAuth) for (const sub of this.subs.values()) this.sendSubscribe(sub);
  }

  /** Sends a fresh token on the live socket ahead of `exp`. */
  private async refresh(): Promise<void> {
    try {
      const t = await this.token();
      this.currentToken = t;
      this.send({ type: 'auth', token: t });
    } catch (e) {
      this.emitError(new UipError('AUTH_FAILED', `the token provider failed: ${String(e)}`));
    }
  }

  private onServerError(m: Record<string, unknown>): void {
    const err = (m.error ?? {}) as { code?: string; message?: string; details?: Record<string, unknown> };
    const e = new UipError(err.code ?? 'INTERNAL_ERROR', err.message ?? 'error', err.details);
    const id = (err.details?.id as string | undefined) ?? undefined;
    const pending = id === undefined ? undefined : this.pending.get(id);
    if (pending && id !== undefined) {
      this.pending.delete(id);
      pending.reject(e);
    }
    const channel = err.details?.channel;
    const sub = typeof channel === 'string' ? this.subs.get(channel) : undefined;
    if (sub && ['FORBIDDEN', 'CHANNEL_NOT_FOUND', 'SUBSCRIPTION_FAILED', 'MAX_SUBSCRIPTIONS'].includes(e.code)) {
      this.subs.delete(sub.channel);
      sub.active = false;
      sub.options.onError?.(e);
    }
    if (e.code === 'AUTH_EXPIRED') void this.refresh();
    this.emitError(e);
  }

  private onSubscribed(data: Record<string, unknown>): void {
    const sub = this.subs.get(data.channel as string);
    if (!sub) return;
    if (data.recovered === false) {
      // The gap is gone from history: the snapshot that follows replaces the state.
      sub.held = [];
      sub.lastSeq = undefined;
    }
  }

  private onSnapshotFrame(data: Record<string, unknown>): void {
    const sub = this.subs.get(data.channel as string);
    if (!sub) return;
    const reason: SnapshotReason = sub.held ? 'gap' : 'subscribed';
    const seq = data.seq as number;
    sub.options.onSnapshot?.((data.events as ChannelEvent[]) ?? [], seq, reason);
    const held = sub.held ?? [];
    sub.held = undefined;
    sub.lastSeq = seq;
    for (const e of held) this.onEvent(e);
  }

  private onEvent(e: ChannelEvent): void {
    const sub = this.subs.get(e.channel);
    if (!sub || !sub.active) return;
    if (sub.held) {
      sub.held.push(e);
      return;
    }
    if (sub.lastSeq !== undefined && e.seq <= sub.lastSeq) return;
    // Filtered subscriptions skip `seq`s by design; an unfiltered one that
    // skips lost events, which history fills.
    if (sub.lastSeq !== undefined && e.seq > sub.lastSeq + 1 && !hasFilters(sub.options.filters)) {
      void this.repair(sub, e);
      return;
    }
    sub.lastSeq = e.seq;
    sub.options.onEvent?.(e);
  }

  /** Fills a gap from the history endpoint before `next`; events arriving meanwhile wait. */
  private async repair(sub: SubState, next: ChannelEvent): Promise<void> {
    sub.held = [next];
    const http = this.opts.url.replace(/\/+$/, '').replace(/^ws/, 'http');
    const f = this.opts.fetch ?? fetch;
    try {
      const r = await f(`${http}/v1/channels/${encodeURIComponent(sub.channel)}/history?since=${sub.lastSeq}&limit=1000`, {
        headers: { authorization: `Bearer ${this.currentToken}` },
      });
      const body = (await r.json()) as { recovered?: boolean; events?: ChannelEvent[] };
      if (!r.ok || body.recovered === false) throw new Error(`history answered ${r.status}`);
      const held = sub.held ?? [];
      sub.held = undefined;
      for (const e of [...(body.events ?? []), ...held]) this.onEvent(e);
    } catch (err) {
      // History cannot fill it: resubscribe without `since` for a fresh snapshot.
      this.emitError(new UipError('CONNECTION_LOST', `a gap in ${sub.channel} could not be filled: ${String(err)}`));
      sub.lastSeq = undefined;
      sub.held = [];
      this.sendSubscribe(sub);
    }
  }

  private startHeartbeat(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this.checkAlive(), this.opts.pingIntervalMs ?? 25_000);
  }

  /** Pings, and declares the connection dead when no frame answers in time. */
  private checkAlive(): void {
    if (!this.ws || this.ws.readyState !== 1) return;
    this.ws.send(PING);
    if (this.pongTimer) return;
    this.pongTimer = setTimeout(() => {
      this.pongTimer = undefined;
      this.emitError(new UipError('CONNECTION_LOST', 'no pong from the server'));
      this.ws?.close(4998, 'heartbeat timeout');
      const ws = this.ws;
      if (ws) this.onClosed(4998, 'heartbeat timeout');
    }, this.opts.pongTimeoutMs ?? 10_000);
  }

  private gotPong(): void {
    if (this.pongTimer) clearTimeout(this.pongTimer);
    this.pongTimer = undefined;
  }

  private clearTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    if (this.pingTimer) clearInterval(this.pingTimer);
    if (this.pongTimer) clearTimeout(this.pongTimer);
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.pingTimer = this.pongTimer = this.refreshTimer = undefined;
  }

  private onClosed(code: number, reason: string): void {
    this.ws = undefined;
    this.clearTimers();
    for (const [id, p] of this.pending) {
      p.reject(new UipError('CONNECTION_LOST', `the connection closed (${code})`));
      this.pending.delete(id);
    }
    if (this.stopped) return;
    if (TERMINAL_CLOSES.has(code)) {
      this.emitError(new UipError(code === 4003 ? 'FORBIDDEN' : 'CHANNEL_NOT_FOUND', `the server refused the connection (${code} ${reason})`));
      this.stopped = true;
      this.setState('closed');
      return;
    }
    if (code === 4001 && typeof this.opts.token === 'string') {
      this.emitError(new UipError('AUTH_FAILED', `the token was refused (${reason}); give a token provider to recover`));
      this.stopped = true;
      this.setState('closed');
      return;
    }
    if (Date.now() - this.openedAt >= this.backoff.resetAfterMs) this.attempt = 0;
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this.setState('reconnecting');
    const delay = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this.timers.push(setTimeout(() => void this.open(), delay));
  }

  private reconnectNow(): void {
    if (this.stopped || this.ws) return;
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    void this.open();
  }
}
export { apply, fromSnapshot, keyOf } from './state.js';
