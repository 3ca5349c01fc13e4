//! The ChannelRoom Durable Object: one per channel. It owns the channel's
//! sequence, history and snapshot, and holds its `/ws/{channel}` sockets with
//! the hibernation API.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::value::RawValue;
use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, ScheduledTime, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair,
};

use crate::core::auth::{self, Claims};
use crate::core::channel::Channel;
use crate::core::config::Config;
use crate::core::error::{to_json, ApiError, CloseCode, ErrorCode, ErrorFrame};
use crate::core::filter::Filters;
use crate::core::history::{self, HistoryQuery, Resume};
use crate::core::protocol::{
    AuthSuccess, ChannelEvent, ChannelOnly, ClientMessage, Empty, PublishEvent, PublishResult,
    RateLimitInfo, ServerMessage, SnapshotData, Subscribed, MAX_FRAME_BYTES, PING_REQUEST,
    PING_RESPONSE,
};
use crate::core::session::{Deadline, Session};
use crate::core::snapshot::{self, SnapshotOp};
use crate::core::time::rfc3339_ms;
use crate::glue::{self, error_response, now_ms, now_rfc3339, ok_json, refuse, send, send_str};
use crate::room_store::RoomStore;
use crate::router::{CHANNEL_HEADER, CLAIMS_HEADER};

/// A socket that receives events, with the filters it receives them through.
struct Target {
    ws: WebSocket,
    filters: Filters,
}

#[durable_object]
pub struct ChannelRoom {
    state: State,
    env: Env,
    config: Config,
    store: Option<RoomStore>,
    /// Receiving sockets, rebuilt from the attachments after any change; the
    /// publish path reads it instead of decoding every attachment per event.
    targets: RefCell<Option<Rc<Vec<Target>>>>,
}

fn load(ws: &WebSocket) -> Option<Session> {
    let text: String = ws.deserialize_attachment().ok().flatten()?;
    serde_json::from_str(&text).ok()
}

fn save(ws: &WebSocket, session: &Session) -> bool {
    ws.serialize_attachment(to_json(session)).is_ok()
}

fn connection_id() -> String {
    let a = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let b = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    format!("{a:08x}{b:08x}")
}

impl DurableObject for ChannelRoom {
    fn new(state: State, env: Env) -> Self {
        if let Ok(pair) =
            worker::worker_sys::WebSocketRequestResponsePair::new(PING_REQUEST, PING_RESPONSE)
        {
            state.set_websocket_auto_response(&pair);
        }
        let store = match RoomStore::open(state.storage().sql()) {
            Ok(s) => Some(s),
            Err(e) => {
                worker::console_error!("cannot open room storage: {e}");
                None
            }
        };
        let config = glue::config(&env);
        ChannelRoom {
            state,
            env,
            config,
            store,
            targets: RefCell::new(None),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.url()?;
        match url.path() {
            "/health" => Response::ok("ok"),
            "/ws" => self.accept(req).await,
            "/publish" => self.publish(req).await,
            "/snapshot" => self.snapshot_http(req),
            "/history" => self.history_http(req),
            _ => error_response(&ApiError::new(ErrorCode::NotFound, "unknown room path")),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        self.on_message(&ws, message).await;
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        self.invalidate();
        let _ = ws.close(
            Some(CloseCode::Normal.code()),
            Some(CloseCode::Normal.reason()),
        );
        Ok(())
    }

    async fn websocket_error(&self, _ws: WebSocket, _error: worker::Error) -> Result<()> {
        self.invalidate();
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        let now = now_ms();
        let mut next: Option<i64> = None;
        for ws in self.state.get_websockets() {
            let Some(session) = load(&ws) else { continue };
            match session.check(now, &self.config) {
                Deadline::AuthTimedOut => refuse(
                    &ws,
                    &ApiError::new(ErrorCode::AuthFailed, "no auth message within the timeout"),
                    ErrorFrame::AuthFailed,
                    CloseCode::AuthTimeout,
                ),
                Deadline::Expired => refuse(
                    &ws,
                    &ApiError::new(
                        ErrorCode::AuthExpired,
                        "token has expired; reconnect with a fresh token",
                    ),
                    ErrorFrame::Error,
                    CloseCode::AuthFailed,
                ),
                Deadline::At(t) => next = Some(next.map_or(t, |n| n.min(t))),
                Deadline::None => {}
            }
        }
        self.invalidate();
        if let Some(t) = next {
            self.state.storage().set_alarm(at(t)).await?;
        }
        Response::ok("")
    }
}

impl ChannelRoom {
    fn store(&self) -> std::result::Result<&RoomStore, ApiError> {
        self.store
            .as_ref()
            .ok_or_else(|| ApiError::internal("channel storage is unavailable"))
    }

    fn channel_of(req: &Request, config: &Config) -> std::result::Result<Channel, ApiError> {
        let name = req
            .headers()
            .get(CHANNEL_HEADER)
            .ok()
            .flatten()
            .unwrap_or_default();
        Channel::parse(&name, config)
    }

    fn invalidate(&self) {
        self.targets.replace(None);
    }

    fn targets(&self) -> Rc<Vec<Target>> {
        if let Some(t) = self.targets.borrow().as_ref() {
            return Rc::clone(t);
        }
        let list: Vec<Target> = self
            .state
            .get_websockets()
            .into_iter()
            .filter_map(|ws| {
                let s = load(&ws)?;
                s.receives().then_some(Target {
                    ws,
                    filters: s.filters,
                })
            })
            .collect();
        let list = Rc::new(list);
        self.targets.replace(Some(Rc::clone(&list)));
        list
    }

    /// Makes sure an alarm fires by `deadline`.
    async fn wake_by(&self, deadline: Option<i64>) {
        let Some(deadline) = deadline else { return };
        let storage = self.state.storage();
        let current = storage.get_alarm().await.ok().flatten();
        if current.is_none_or(|c| c > deadline) {
            if let Err(e) = storage.set_alarm(at(deadline)).await {
                worker::console_error!("cannot set alarm: {e}");
            }
        }
    }

    async fn accept(&self, req: Request) -> Result<Response> {
        let channel = match Self::channel_of(&req, &self.config) {
            Ok(c) => c,
            Err(e) => return error_response(&e),
        };
        let batch = req
            .url()?
            .query_pairs()
            .any(|(k, v)| k == "batch" && v == "1");
        let claims: Option<Claims> = req
            .headers()
            .get(CLAIMS_HEADER)?
            .and_then(|c| serde_json::from_str(&c).ok());
        let pair = WebSocketPair::new()?;
        let ws = pair.server;
        self.state.accept_web_socket(&ws);
        let mut session = Session::new(connection_id(), channel.name().to_owned(), now_ms(), batch);
        if let Some((_, raw)) = req.url()?.query_pairs().find(|(k, _)| k == "since") {
            match raw.parse::<u64>() {
                Ok(since) => session.resume_from = Some(since),
                Err(_) => {
                    let err = ApiError::invalid("since", format!("'since' must be a non-negative integer, got '{raw}'; subscribing without it"));
                    send_str(&ws, &err.frame(ErrorFrame::Error, &now_rfc3339()));
                }
            }
        }
        match claims {
            Some(claims) => {
                self.authenticate(&ws, &mut session, &claims, &channel, true)
                    .await;
            }
            None => {
                self.send_rate_limit_info(&ws);
                save(&ws, &session);
                self.wake_by(session.deadline_ms(&self.config)).await;
            }
        }
        Response::from_websocket(pair.client)
    }

    fn send_rate_limit_info(&self, ws: &WebSocket) {
        let ts = now_rfc3339();
        send_str(
            ws,
            &ServerMessage::RateLimitInfo {
                timestamp: &ts,
                data: RateLimitInfo::from_config(&self.config),
            }
            .to_json(),
        );
    }

    /// Accepts verified claims on a socket: checks scope and channel, answers
    /// `auth.success`, and on a first authentication subscribes the socket.
    /// A refusal closes the socket; the session is saved either way.
    async fn authenticate(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        claims: &Claims,
        channel: &Channel,
        via_url: bool,
    ) {
        if !claims.scopes.subscribe {
            let err = ApiError::new(ErrorCode::Forbidden, "the token lacks scope 'subscribe'");
            return refuse(ws, &err, ErrorFrame::Error, CloseCode::Forbidden);
        }
        if !claims.allows(channel, false) {
            return refuse(
                ws,
                &ApiError::forbidden_channel(channel.name()),
                ErrorFrame::Error,
                CloseCode::Forbidden,
            );
        }
        let first = session.identity.is_none();
        session.authenticate(claims, &self.config);
        let ts = now_rfc3339();
        send_str(
            ws,
            &ServerMessage::AuthSuccess {
                timestamp: &ts,
                data: AuthSuccess {
                    sub: claims.sub.as_deref(),
                    exp: claims.exp,
                    connection_id: &session.id,
                },
            }
            .to_json(),
        );
        if via_url {
            self.send_rate_limit_info(ws);
        }
        if first {
            session.subscribed = true;
            let since = session.resume_from.take();
            self.send_subscription(ws, session, since);
        }
        save(ws, session);
        self.invalidate();
        self.wake_by(session.deadline_ms(&self.config)).await;
    }

    /// `subscribed`, then either the retained events after `since` (a resume
    /// inside the window) or the filtered `snapshot`. Nothing awaits in
    /// between, so no publish can slip into the seam.
    fn send_subscription(&self, ws: &WebSocket, session: &Session, since: Option<u64>) {
        if let Err(err) = self.try_send_subscription(ws, session, since) {
            send_str(ws, &err.frame(ErrorFrame::Error, &now_rfc3339()));
        }
    }

    fn try_send_subscription(
        &self,
        ws: &WebSocket,
        session: &Session,
        since: Option<u64>,
    ) -> std::result::Result<(), ApiError> {
        let store = self.store()?;
        let read = storage_failed(
            ErrorCode::SubscriptionFailed,
            "the channel state could not be read",
        );
        let now = now_ms();
        let head = store.head().map_err(read)?;
        let resume = match since {
            Some(s) => Some(history::resume(s, head, store.oldest().map_err(read)?)),
            None => None,
        };
        let ts = rfc3339_ms(now);
        send_str(
            ws,
            &ServerMessage::Subscribed {
                timestamp: &ts,
                data: Subscribed {
                    channel: &session.channel,
                    filters: session.filters.to_value(),
                    seq: head,
                    recovered: resume.map(Resume::recovered),
                },
            }
            .to_json(),
        );
        let passes = |kind: &str, merged: &str| {
            session.filters.is_empty()
                || serde_json::from_str::<Value>(merged)
                    .is_ok_and(|m| session.filters.matches(kind, &m))
        };
        if let Some(Resume::Replay { after }) = resume {
            for row in store.after(after, u64::MAX).map_err(read)? {
                if passes(&row.kind, &row.merged) {
                    send_str(ws, &row.body);
                }
            }
            return Ok(());
        }
        let bodies: Vec<Box<RawValue>> = store
            .snapshot(now)
            .map_err(read)?
            .into_iter()
            .filter(|r| passes(&r.kind, &r.merged))
            .filter_map(|r| RawValue::from_string(r.body).ok())
            .collect();
        send_str(
            ws,
            &ServerMessage::Snapshot {
                timestamp: &ts,
                data: SnapshotData {
                    channel: &session.channel,
                    seq: head,
                    events: bodies.iter().map(AsRef::as_ref).collect(),
                },
            }
            .to_json(),
        );
        Ok(())
    }

    async fn on_message(&self, ws: &WebSocket, message: WebSocketIncomingMessage) {
        let Some(mut session) = load(ws) else {
            let _ = ws.close(Some(1011), Some("lost connection state"));
            return;
        };
        let now = now_ms();
        let text = match message {
            WebSocketIncomingMessage::String(s) => Some(s),
            WebSocketIncomingMessage::Binary(b) if b.len() > MAX_FRAME_BYTES => {
                return refuse(
                    ws,
                    &too_large(),
                    ErrorFrame::Error,
                    CloseCode::MessageTooBig,
                )
            }
            WebSocketIncomingMessage::Binary(_) => None,
        };
        if text.as_ref().is_some_and(|t| t.len() > MAX_FRAME_BYTES) {
            return refuse(
                ws,
                &too_large(),
                ErrorFrame::Error,
                CloseCode::MessageTooBig,
            );
        }
        if session.limiter.hit(now, &self.config).is_err() {
            let err = ApiError::new(
                ErrorCode::RateLimitExceeded,
                "too many messages; slow down and reconnect",
            )
            .with(
                "max_messages_per_minute",
                self.config.max_messages_per_minute,
            )
            .with("burst_limit", self.config.burst_limit)
            .with("burst_window", self.config.burst_window_s);
            return refuse(ws, &err, ErrorFrame::Error, CloseCode::RateLimited);
        }
        let parsed = match text {
            Some(t) => ClientMessage::parse(&t),
            None => Err(ApiError::new(
                ErrorCode::InvalidMessage,
                "binary frames are not accepted; send JSON text",
            )),
        };
        let ts = rfc3339_ms(now);
        match parsed {
            Err(e) => {
                send_str(ws, &e.frame(ErrorFrame::Error, &ts));
            }
            Ok(ClientMessage::Ping) => {
                send_str(
                    ws,
                    &ServerMessage::Pong {
                        timestamp: &ts,
                        data: Empty {},
                    }
                    .to_json(),
                );
            }
            Ok(ClientMessage::Auth { token }) => {
                let verified = auth::verify(
                    &token,
                    &glue::jwt_secret(&self.env),
                    now / 1000,
                    i64::from(self.config.jwt_leeway_s),
                );
                let channel = Channel::parse(&session.channel, &self.config);
                match (verified, channel) {
                    (Ok(claims), Ok(channel)) => {
                        return self
                            .authenticate(ws, &mut session, &claims, &channel, false)
                            .await;
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        return refuse(ws, &e, ErrorFrame::AuthFailed, CloseCode::AuthFailed);
                    }
                }
            }
            Ok(ClientMessage::Subscribe { .. } | ClientMessage::Unsubscribe { .. })
                if session.identity.is_none() =>
            {
                let err = ApiError::new(
                    ErrorCode::AuthFailed,
                    "authenticate first: send {\"type\":\"auth\",\"token\":…}",
                );
                send_str(ws, &err.frame(ErrorFrame::Error, &ts));
            }
            Ok(ClientMessage::Subscribe {
                channel,
                filters,
                since: _,
            }) => match self.resubscribe(&mut session, &channel, filters.as_ref()) {
                Ok(()) => {
                    self.send_subscription(ws, &session, None);
                    self.invalidate();
                }
                Err(e) => {
                    send_str(ws, &e.frame(ErrorFrame::Error, &ts));
                }
            },
            Ok(ClientMessage::Unsubscribe { channel }) => {
                if channel == session.channel {
                    session.subscribed = false;
                    self.invalidate();
                }
                send_str(
                    ws,
                    &ServerMessage::Unsubscribed {
                        timestamp: &ts,
                        data: ChannelOnly { channel: &channel },
                    }
                    .to_json(),
                );
            }
        }
        save(ws, &session);
    }

    /// A `subscribe` on a direct socket: only its own channel, with new filters.
    fn resubscribe(
        &self,
        session: &mut Session,
        channel: &str,
        filters: Option<&Value>,
    ) -> std::result::Result<(), ApiError> {
        if channel != session.channel {
            return Err(ApiError::new(
                ErrorCode::SubscriptionFailed,
                format!(
                    "this socket carries '{}' only; connect to /ws to multiplex channels",
                    session.channel
                ),
            )
            .with("channel", channel));
        }
        let parsed = Channel::parse(channel, &self.config)?;
        session.filters = Filters::parse(&parsed, filters)?;
        session.subscribed = true;
        Ok(())
    }

    fn snapshot_http(&self, req: Request) -> Result<Response> {
        let built = (|| {
            let channel = Self::channel_of(&req, &self.config)?;
            let store = self.store()?;
            let read = storage_failed(
                ErrorCode::InternalError,
                "the channel state could not be read",
            );
            let head = store.head().map_err(read)?;
            let rows = store.snapshot(now_ms()).map_err(read)?;
            let events: Vec<Box<RawValue>> = rows
                .into_iter()
                .filter_map(|r| RawValue::from_string(r.body).ok())
                .collect();
            #[derive(serde::Serialize)]
            struct Body<'a> {
                channel: &'a str,
                seq: u64,
                events: &'a [Box<RawValue>],
            }
            Ok::<String, ApiError>(to_json(&Body {
                channel: channel.name(),
                seq: head,
                events: &events,
            }))
        })();
        match built {
            Ok(body) => glue::json_response(body, 200),
            Err(e) => error_response(&e),
        }
    }

    fn history_http(&self, req: Request) -> Result<Response> {
        let built = (|| {
            let channel = Self::channel_of(&req, &self.config)?;
            let url = req.url().map_err(|_| ApiError::internal("bad room URL"))?;
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let query = HistoryQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            let store = self.store()?;
            let read = storage_failed(
                ErrorCode::InternalError,
                "the channel history could not be read",
            );
            let head = store.head().map_err(read)?;
            let recovered =
                history::resume(query.since, head, store.oldest().map_err(read)?).recovered();
            let rows = store.after(query.since, query.limit).map_err(read)?;
            let events: Vec<Box<RawValue>> = rows
                .into_iter()
                .filter_map(|r| RawValue::from_string(r.body).ok())
                .collect();
            #[derive(serde::Serialize)]
            struct Body<'a> {
                channel: &'a str,
                head: u64,
                recovered: bool,
                events: &'a [Box<RawValue>],
            }
            Ok::<String, ApiError>(to_json(&Body {
                channel: channel.name(),
                head,
                recovered,
                events: &events,
            }))
        })();
        match built {
            Ok(body) => glue::json_response(body, 200),
            Err(e) => error_response(&e),
        }
    }

    async fn publish(&self, mut req: Request) -> Result<Response> {
        let channel = match Self::channel_of(&req, &self.config) {
            Ok(c) => c,
            Err(e) => return error_response(&e),
        };
        let events: Vec<PublishEvent> = match req.json().await {
            Ok(e) => e,
            Err(_) => {
                return error_response(&ApiError::new(
                    ErrorCode::InvalidMessage,
                    "malformed room publish",
                ))
            }
        };
        match self.append_and_fan_out(&channel, events) {
            Ok(results) => ok_json(&results),
            Err(e) => error_response(&e),
        }
    }

    /// Orders, stores and delivers each event in turn. An event is sent only
    /// after its writes are queued, and the answer waits for them to be durable.
    fn append_and_fan_out(
        &self,
        channel: &Channel,
        events: Vec<PublishEvent>,
    ) -> std::result::Result<Vec<PublishResult>, ApiError> {
        let store = self.store()?;
        let write = |e: worker::Error| ApiError::internal(format!("storage write failed: {e}"));
        let now = now_ms();
        let targets = self.targets();
        let mut results = Vec::with_capacity(events.len());
        for ev in events {
            if let Some(id) = &ev.id {
                if let Some(seq) = store.seq_of_id(id).map_err(write)? {
                    results.push(PublishResult {
                        channel: channel.name().to_owned(),
                        seq,
                        delivered: 0,
                        duplicate: true,
                    });
                    continue;
                }
            }
            let seq = store.head().map_err(write)? + 1;
            let event = ChannelEvent {
                kind: ev.kind,
                channel: channel.name().to_owned(),
                seq,
                timestamp: ev.timestamp.unwrap_or_else(|| rfc3339_ms(now)),
                data: ev.data,
                id: ev.id,
            };
            let body = to_json(&event);
            let op = snapshot::op_for(channel.kind(), &event.kind, &event.data);
            let previous = match &op {
                SnapshotOp::Upsert { key, .. } | SnapshotOp::Remove { key } => store
                    .merged_of(key)
                    .map_err(write)?
                    .and_then(|m| serde_json::from_str::<Value>(&m).ok()),
                SnapshotOp::Skip => None,
            };
            let merged = snapshot::merge(previous.as_ref(), &event.data);
            store
                .append(
                    seq,
                    event.id.as_deref(),
                    &event.kind,
                    &body,
                    &to_json(&merged),
                    &op,
                    now,
                )
                .map_err(write)?;
            let frame = JsValue::from_str(&body);
            let delivered = targets
                .iter()
                .filter(|t| t.filters.matches(&event.kind, &merged) && send(&t.ws, &frame))
                .count() as u64;
            results.push(PublishResult {
                channel: channel.name().to_owned(),
                seq,
                delivered,
                duplicate: false,
            });
        }
        if let Err(e) = store.prune(&self.config, now) {
            worker::console_error!("history prune failed: {e}");
        }
        Ok(results)
    }
}

/// Maps a storage failure to the client's error, logging the cause.
fn storage_failed(
    code: ErrorCode,
    what: &'static str,
) -> impl Fn(worker::Error) -> ApiError + Copy {
    move |e| {
        worker::console_error!("{what}: {e}");
        ApiError::new(code, what)
    }
}

/// An absolute alarm time (an `i64` alone would be read as an offset).
fn at(ms: i64) -> ScheduledTime {
    ScheduledTime::new(js_sys::Date::new(&JsValue::from_f64(ms as f64)))
}

fn too_large() -> ApiError {
    ApiError::new(ErrorCode::MessageTooLarge, "frames are limited to 1 MiB")
}
