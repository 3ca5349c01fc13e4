//! Small pieces of I/O shared by the Worker and the Durable Objects: clock,
//! config, JSON responses, attachments, alarms, frame admission, and the one
//! fan-out loop with its send helper.

use crate::telemetry::log_error;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures;
use worker::{
    Env, Headers, Method, Request, RequestInit, Response, Result, ScheduledTime, State, Storage,
    Url, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::core::auth::Claims;
use crate::core::config::Config;
use crate::core::error::{to_json, ApiError, ErrorCode};
use crate::core::filter::Filters;
use crate::core::history::HistoryQuery;
use crate::core::internal::CHANNEL_HEADER;
use crate::core::protocol::{
    batch_frame, AuthSuccess, ClientMessage, RateLimitInfo, ServerMessage, MAX_FRAME_BYTES,
    PING_REQUEST, PING_RESPONSE,
};
use crate::core::refusal::Refusal;
use crate::core::session::{Conn, Deadline, HasConn, MAX_ATTACHMENT_BYTES};
use crate::core::status::SystemStatus;
use crate::core::time::rfc3339_ms;

/// Milliseconds since the epoch, from the runtime's clock.
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// The current time as an RFC 3339 timestamp.
pub fn now_rfc3339() -> String {
    rfc3339_ms(now_ms())
}

/// A response's status and body. worker's `Response::text` reads a streamed
/// body (every answer of another object or of `fetch`) chunk by chunk through
/// wasm, releasing a reader lock with an error each time; the runtime's own
/// `text()` reads it in one call (see BENCHMARKS.md, "Profile").
pub async fn read_text(resp: Response) -> Result<(u16, String)> {
    let status = resp.status_code();
    let raw: web_sys::Response = resp.into();
    let text = wasm_bindgen_futures::JsFuture::from(raw.text()?).await?;
    Ok((status, text.as_string().unwrap_or_default()))
}

/// A response's body as JSON, read as [`read_text`] does.
pub async fn read_json<T: serde::de::DeserializeOwned>(resp: Response) -> Result<T> {
    let (_, text) = read_text(resp).await?;
    Ok(serde_json::from_str(&text)?)
}

/// The gateway config from `wrangler.toml` `[vars]`.
///
/// Read once per isolate: vars cannot change while it lives, and reading them
/// is ~25 binding lookups, which every publish request would otherwise pay.
pub fn config(env: &Env) -> Rc<Config> {
    thread_local! {
        static CONFIG: std::cell::OnceCell<Rc<Config>> = const { std::cell::OnceCell::new() };
    }
    CONFIG.with(|cell| {
        Rc::clone(cell.get_or_init(|| {
            Rc::new(Config::from_lookup(|name| {
                env.var(name).ok().map(|v| v.to_string())
            }))
        }))
    })
}

/// Verifies a client's token at `now_ms` with the configured keys and leeway.
pub async fn verify(env: &Env, token: &str, now_ms: i64) -> std::result::Result<Claims, ApiError> {
    let leeway = i64::from(config(env).jwt_leeway_s);
    crate::keyring::verify(env, token, now_ms, leeway).await
}

/// The error for a message that needs an authenticated socket.
pub fn not_authenticated() -> ApiError {
    ApiError::new(
        ErrorCode::AuthFailed,
        "authenticate first: send {\"type\":\"auth\",\"token\":…}",
    )
}

/// Lets the runtime answer the exact ping without waking the object.
pub fn set_ping_auto_response(state: &State) {
    if let Ok(pair) =
        worker::worker_sys::WebSocketRequestResponsePair::new(PING_REQUEST, PING_RESPONSE)
    {
        state.set_websocket_auto_response(&pair);
    }
}

/// A socket whose attachment cannot be read: told so and closed.
pub fn lost_state(ws: &WebSocket) -> Result<()> {
    refuse(ws, Refusal::LostState);
    Ok(())
}

/// Answers a client's close frame with the same code (1000 for codes a
/// server may not send back), which completes the closing handshake.
pub fn answer_close(ws: &WebSocket, code: usize) {
    let code = match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => code as u16,
        _ => 1000,
    };
    let _ = ws.close(Some(code), Some("closed"));
}

/// A JSON response with `status`.
pub fn json_response(body: String, status: u16) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    Ok(Response::ok(body)?
        .with_status(status)
        .with_headers(headers))
}

/// The HTTP form of an error: its status and `{"error": {...}}`, with
/// `Retry-After` when the error names a retry delay.
pub fn error_response(err: &ApiError) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(s) = err.retry_after_s() {
        headers.set("retry-after", &s.max(1).to_string())?;
    }
    Ok(Response::ok(err.http_body())?
        .with_status(err.http_status())
        .with_headers(headers))
}

/// Serializes and answers 200.
pub fn ok_json<T: serde::Serialize>(value: &T) -> Result<Response> {
    json_response(to_json(value), 200)
}

#[wasm_bindgen]
extern "C" {
    /// The runtime's WebSocket, bound directly so a frame already held as a JS
    /// string is sent without another UTF-8 conversion per socket.
    #[wasm_bindgen(extends = js_sys::Object)]
    type RawSocket;

    #[wasm_bindgen(method, catch, js_name = send)]
    fn send_js(this: &RawSocket, data: &JsValue) -> std::result::Result<(), JsValue>;
}

/// Sends one frame. A socket that is closing or broken fails alone: the error is
/// reported as `false` and never stops the caller's loop.
pub fn send(ws: &WebSocket, frame: &JsValue) -> bool {
    let raw: &RawSocket = AsRef::<web_sys::WebSocket>::as_ref(ws).unchecked_ref();
    raw.send_js(frame).is_ok()
}

/// Sends a frame built in Rust.
pub fn send_str(ws: &WebSocket, frame: &str) -> bool {
    send(ws, &JsValue::from_str(frame))
}

/// Ends a socket as `refusal` says: its reason frame, then its close code.
/// Both may fail on a dead socket.
pub fn refuse(ws: &WebSocket, refusal: Refusal) {
    crate::telemetry::refused(&refusal);
    if let Some((kind, err)) = refusal.error() {
        send_str(ws, &err.frame(kind, &now_rfc3339()));
    }
    let close = refusal.close();
    let _ = ws.close(Some(close.code()), Some(close.reason()));
}

/// Refuses an upgrade in-band: a browser cannot read the HTTP status of a failed
/// upgrade, so the socket is accepted, told why, and closed.
pub fn refuse_upgrade(refusal: Refusal) -> Result<Response> {
    let pair = WebSocketPair::new()?;
    pair.server.accept()?;
    refuse(&pair.server, refusal);
    Response::from_websocket(pair.client)
}

/// Reads a socket's attachment (stored as one JSON string).
pub fn load<T: serde::de::DeserializeOwned>(ws: &WebSocket) -> Option<T> {
    let text: String = ws.deserialize_attachment().ok().flatten()?;
    serde_json::from_str(&text).ok()
}

/// Stores a socket's attachment; `false` when the runtime refused it (too large).
pub fn save<T: serde::Serialize>(ws: &WebSocket, value: &T) -> bool {
    let text = to_json(value);
    text.len() <= MAX_ATTACHMENT_BYTES && ws.serialize_attachment(text).is_ok()
}

/// A random connection id, prefixed with what holds the socket (a hub's
/// name, or `direct`), so operators and tests can tell where it lives.
pub fn connection_id(holder: &str) -> String {
    let a = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let b = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    format!("{holder}.{a:08x}{b:08x}")
}

/// An absolute alarm time (an `i64` alone would be read as an offset).
fn at(ms: i64) -> ScheduledTime {
    ScheduledTime::new(js_sys::Date::new(&JsValue::from_f64(ms as f64)))
}

/// How long a count or cursor kept in memory may stay unwritten: well inside
/// the 10 s after which an idle object hibernates and loses its memory.
pub const LAZY_SAVE_MS: i64 = 4000;

/// What a store asks of its object after a change it keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDue {
    /// The first unsaved change: set the alarm that writes it.
    Schedule,
    /// The alarm is already due.
    Scheduled,
}

/// Makes sure the object's alarm fires by `deadline`.
pub async fn wake_by(storage: &Storage, deadline: i64) {
    let current = storage.get_alarm().await.ok().flatten();
    if current.is_none_or(|c| c > deadline) {
        if let Err(e) = storage.set_alarm(at(deadline)).await {
            log_error!("cannot set alarm: {e}");
        }
    }
}

#[wasm_bindgen]
extern "C" {
    /// The Durable Object state, for the one method `worker` does not bind.
    #[wasm_bindgen(extends = js_sys::Object)]
    type RawState;

    #[wasm_bindgen(method, js_name = getWebSocketAutoResponseTimestamp)]
    fn auto_response_timestamp(this: &RawState, ws: &web_sys::WebSocket) -> JsValue;

    #[wasm_bindgen(method, js_name = getWebSockets)]
    fn raw_websockets(this: &RawState) -> js_sys::Array;
}

/// How many sockets the object holds, counted without wrapping each one
/// (`State::get_websockets` converts every socket; a hub asks on each upgrade).
pub fn socket_count(state: &State) -> u32 {
    let raw: &RawState = state.as_raw().unchecked_ref();
    raw.raw_websockets().length()
}

/// When the runtime last answered this socket's ping for us, if ever.
fn last_pong_ms(state: &State, ws: &WebSocket) -> Option<i64> {
    let raw: &RawState = state.as_raw().unchecked_ref();
    raw.auto_response_timestamp(ws.as_ref())
        .dyn_into::<js_sys::Date>()
        .ok()
        .map(|d| d.get_time() as i64)
}

/// What an alarm's sweep did: when to look again, and the sockets it closed
/// (their objects forget them now: a dead client may never answer the close).
pub struct Swept {
    pub next: Option<i64>,
    pub closed: Vec<WebSocket>,
}

/// An alarm's sweep over every socket of the object (attachments of type
/// `S`): enforces each deadline, sends the keep-alives that are due, and
/// returns the earliest time to look again with the sockets it closed.
pub fn sweep<S: HasConn + serde::Serialize + serde::de::DeserializeOwned>(
    state: &State,
    config: &Config,
) -> Swept {
    let now = now_ms();
    let mut swept = Swept {
        next: None,
        closed: Vec::new(),
    };
    for ws in state.get_websockets() {
        let Some(session) = load::<S>(&ws) else {
            continue;
        };
        match enforce_deadline(state, &ws, session, now, config) {
            Some(t) => swept.next = Some(swept.next.map_or(t, |n| n.min(t))),
            None => swept.closed.push(ws),
        }
    }
    swept
}

/// Sends a system status to every authenticated socket of the object
/// (attachments of type `S`); answers how many it reached.
pub fn announce<S: HasConn + serde::de::DeserializeOwned>(
    state: &State,
    status: &SystemStatus,
) -> u64 {
    let frame = JsValue::from_str(&status.frame(&now_rfc3339()));
    state
        .get_websockets()
        .iter()
        .filter(|ws| load::<S>(ws).is_some_and(|s| s.conn().is_authenticated()) && send(ws, &frame))
        .count() as u64
}

/// A socket that came without a token: `rate_limit_info` now, and an alarm by
/// its auth deadline in case no `auth` message follows.
pub async fn await_auth<S: HasConn + serde::Serialize>(
    state: &State,
    ws: &WebSocket,
    session: &S,
    config: &Config,
) {
    send_str(ws, &rate_limit_info(config));
    save(ws, session);
    wake_by(&state.storage(), session.conn().next_check_ms(None, config)).await;
}

/// An alarm's pass over one socket: closes it when its auth timed out, its
/// token expired or its heartbeat stopped, sends a keep-alive when one is
/// due, and returns when to look again.
fn enforce_deadline<S: HasConn + serde::Serialize>(
    state: &State,
    ws: &WebSocket,
    mut session: S,
    now_ms: i64,
    config: &Config,
) -> Option<i64> {
    let pong = last_pong_ms(state, ws);
    match session.conn().check(now_ms, pong, config) {
        Deadline::AuthTimedOut => {
            refuse(ws, Refusal::AuthTimeout);
            None
        }
        Deadline::Expired => {
            refuse(ws, Refusal::Expired);
            None
        }
        Deadline::Silent => {
            refuse(ws, Refusal::HeartbeatTimeout);
            None
        }
        Deadline::KeepAlive => {
            send_str(ws, &session.keepalive_frame(&rfc3339_ms(now_ms)));
            session.conn_mut().keepalive_ms = now_ms;
            save(ws, &session);
            Some(session.conn().next_check_ms(pong, config))
        }
        Deadline::At(t) => Some(t),
    }
}

/// Maps a storage failure to the client's error, logging the cause.
pub fn storage_failed(
    code: ErrorCode,
    what: &'static str,
) -> impl Fn(worker::Error) -> ApiError + Copy {
    move |e| {
        log_error!("{what}: {e}");
        ApiError::new(code, what)
    }
}

/// `RATE_LIMIT_EXCEEDED` with the limits in force.
fn rate_limited(config: &Config) -> ApiError {
    ApiError::new(
        ErrorCode::RateLimitExceeded,
        "too many messages; slow down and reconnect",
    )
    .with("max_messages_per_minute", config.max_messages_per_minute)
    .with("burst_limit", config.burst_limit)
    .with("burst_window", config.burst_window_s)
}

/// The `rate_limit_info` frame.
fn rate_limit_info(config: &Config) -> String {
    let ts = now_rfc3339();
    ServerMessage::RateLimitInfo {
        timestamp: &ts,
        data: RateLimitInfo::from_config(config),
    }
    .to_json()
}

/// Accepts verified claims on a socket of either endpoint: a token without
/// scope `subscribe` is `FORBIDDEN` (close 4003); else the identity is stored
/// (a token too large for the attachment is `AUTH_FAILED`, close 4001) and the
/// socket gets `auth.success`, then `rate_limit_info` when the token came on the
/// URL. `false` when the socket was refused.
pub fn accept_claims<S: HasConn + serde::Serialize>(
    ws: &WebSocket,
    session: &mut S,
    claims: &Claims,
    via_url: bool,
    config: &Config,
    status: Option<&SystemStatus>,
) -> bool {
    if let Some(refusal) = Refusal::of_claims(claims, None) {
        refuse(ws, refusal);
        return false;
    }
    session.conn_mut().authenticate(claims, config);
    if !save(ws, session) {
        refuse(ws, Refusal::ClaimsTooLarge);
        return false;
    }
    send_str(ws, &auth_success(claims, &session.conn().id));
    // SPEC: a status other than online is the very next frame.
    if let Some(status) = status.filter(|s| s.is_announced()) {
        send_str(ws, &status.frame(&now_rfc3339()));
    }
    if via_url {
        send_str(ws, &rate_limit_info(config));
    }
    true
}

/// The `auth.success` frame.
fn auth_success(claims: &Claims, connection_id: &str) -> String {
    let ts = now_rfc3339();
    ServerMessage::AuthSuccess {
        timestamp: &ts,
        data: AuthSuccess {
            sub: claims.sub.as_deref(),
            exp: claims.exp,
            connection_id,
        },
    }
    .to_json()
}

/// What every client frame goes through before it is read: the 1 MiB limit,
/// then the rate windows (every frame counts, bad ones too), then parsing.
/// `None` means the socket was refused and closed; `Some(Err)` is a bad
/// message that gets its error while the socket stays open.
pub fn admit(
    ws: &WebSocket,
    conn: &mut Conn,
    message: WebSocketIncomingMessage,
    now_ms: i64,
    config: &Config,
) -> Option<std::result::Result<ClientMessage, ApiError>> {
    let size = match &message {
        WebSocketIncomingMessage::String(s) => s.len(),
        WebSocketIncomingMessage::Binary(b) => b.len(),
    };
    if size > MAX_FRAME_BYTES {
        refuse(ws, Refusal::FrameTooLarge);
        return None;
    }
    conn.last_seen_ms = now_ms;
    if conn.limiter.hit(now_ms, config).is_err() {
        refuse(ws, Refusal::RateLimited(rate_limited(config)));
        return None;
    }
    let parsed = match message {
        WebSocketIncomingMessage::String(text) => {
            ClientMessage::parse_with(&text, &config.commands)
        }
        WebSocketIncomingMessage::Binary(_) => Err(ApiError::new(
            ErrorCode::InvalidMessage,
            "binary frames are not accepted; send JSON text",
        )),
    };
    if matches!(parsed, Ok(ClientMessage::Ping | ClientMessage::ActionPing)) {
        conn.heartbeats = true;
    }
    Some(parsed)
}

/// A socket that receives a channel's events, with the filters it receives
/// them through.
pub struct Target {
    pub ws: WebSocket,
    pub filters: Filters,
    /// Opted in to batched frames (`?batch=1`).
    pub batch: bool,
}

/// One event ready to fan out: its type and merged data (what filters read)
/// and its frame.
pub struct Outgoing<'a> {
    pub kind: &'a str,
    pub merged: &'a Value,
    pub body: &'a str,
}

/// Sends `events`, in order, to every plain (not `?batch=1`) target whose
/// filters pass, a frame per event. Each frame is one JS string shared by
/// every socket that gets it; a failing socket never stops the loop. Returns,
/// per event, the sockets it reached. Batch clients are served by an
/// [`Outbox`].
pub fn fan_out(targets: &[Target], events: &[Outgoing<'_>]) -> Vec<u64> {
    let mut delivered = vec![0u64; events.len()];
    for (i, ev) in events.iter().enumerate() {
        let frame = JsValue::from_str(ev.body);
        for t in targets {
            if !t.batch && t.filters.matches(ev.kind, ev.merged) && send(&t.ws, &frame) {
                delivered[i] += 1;
            }
        }
    }
    delivered
}

/// Events waiting to go to `?batch=1` sockets in one frame: those of the
/// deliveries that arrive while a flush is due, with the receiving sockets as
/// they were when the events were stored and what each of them gets.
#[derive(Default)]
pub struct Outbox {
    queued: Option<Flush>,
    /// A caller flushes after yielding once.
    scheduled: bool,
}

/// What an outbox holds and hands over to be sent: event frames, and per
/// target the indices of the frames its filters passed.
pub struct Flush {
    targets: Rc<Vec<Target>>,
    bodies: Vec<String>,
    per_target: Vec<Vec<usize>>,
}

impl Outbox {
    /// Queues `events` for the batch clients among `targets` whose filters
    /// pass, and returns, per event, how many it will reach. When the queue
    /// holds events for another set of sockets, those come back to be sent
    /// first.
    pub fn enqueue(
        &mut self,
        targets: &Rc<Vec<Target>>,
        events: &[Outgoing<'_>],
    ) -> (Vec<u64>, Option<Flush>) {
        let mut counts = vec![0u64; events.len()];
        if !targets.iter().any(|t| t.batch) {
            return (counts, None);
        }
        let earlier = match &self.queued {
            Some(q) if !Rc::ptr_eq(&q.targets, targets) => self.take(),
            _ => None,
        };
        let queued = self.queued.get_or_insert_with(|| Flush {
            targets: Rc::clone(targets),
            bodies: Vec::new(),
            per_target: vec![Vec::new(); targets.len()],
        });
        for (ev, count) in events.iter().zip(counts.iter_mut()) {
            let index = queued.bodies.len();
            let mut wanted = false;
            for (t, list) in targets.iter().zip(queued.per_target.iter_mut()) {
                if t.batch && t.filters.matches(ev.kind, ev.merged) {
                    list.push(index);
                    *count += 1;
                    wanted = true;
                }
            }
            if wanted {
                queued.bodies.push(ev.body.to_owned());
            }
        }
        (counts, earlier)
    }

    /// Whether the caller is the one to flush (after yielding once): `false`
    /// when a flush is already due or nothing is queued.
    pub fn schedule(&mut self) -> bool {
        if self.scheduled || self.queued.as_ref().is_none_or(|q| q.bodies.is_empty()) {
            return false;
        }
        self.scheduled = true;
        true
    }

    /// Everything queued, to be sent now.
    pub fn take(&mut self) -> Option<Flush> {
        self.scheduled = false;
        self.queued.take().filter(|q| !q.bodies.is_empty())
    }
}

/// Sends what an outbox handed over: one frame per batch client, holding its
/// events in order; clients that get the same events share one JS string.
pub fn send_flush(flush: Option<Flush>) {
    let Some(flush) = flush else {
        return;
    };
    let timestamp = now_rfc3339();
    let mut frames: HashMap<&[usize], JsValue> = HashMap::new();
    for (t, list) in flush.targets.iter().zip(&flush.per_target) {
        if list.is_empty() {
            continue;
        }
        let frame = frames.entry(list.as_slice()).or_insert_with(|| {
            let bodies: Vec<&str> = list.iter().map(|&i| flush.bodies[i].as_str()).collect();
            JsValue::from_str(&batch_frame(&timestamp, &bodies))
        });
        send(&t.ws, frame);
    }
}

/// Lets the object take the requests that are waiting, then goes on.
pub async fn yield_once() {
    worker::Delay::from(std::time::Duration::ZERO).await;
}

/// A request from the Worker or a Durable Object to another Durable Object:
/// `url` (only its path and query matter), the channel it concerns, and a JSON
/// body, which makes it a `POST`.
pub fn internal_request(url: &str, channel: Option<&str>, body: Option<String>) -> Result<Request> {
    let headers = Headers::new();
    if let Some(channel) = channel {
        headers.set(CHANNEL_HEADER, channel)?;
    }
    let mut init = RequestInit::new();
    if let Some(body) = body {
        headers.set("content-type", "application/json")?;
        init.with_method(Method::Post)
            .with_body(Some(JsValue::from_str(&body)));
    }
    init.with_headers(headers);
    Request::new_with_init(url, &init)
}

/// The `?since=&limit=` of a history request, validated.
pub fn history_query(url: &Url) -> std::result::Result<HistoryQuery, ApiError> {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    HistoryQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}
