//! The ChannelRoom Durable Object: one per channel. It owns the channel's
//! sequence, history and snapshot, holds its `/ws/{channel}` sockets with the
//! hibernation API, and hands each event once to every hub with subscribers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use futures::future::join_all;
use serde_json::value::RawValue;
use serde_json::Value;
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, State, Stub, WebSocket,
    WebSocketIncomingMessage, WebSocketPair,
};

use crate::core::auth::{self, Claims};
use crate::core::channel::Channel;
use crate::core::config::Config;
use crate::core::dialect;
use crate::core::error::{to_json, ApiError, CloseCode, ErrorCode, ErrorFrame};
use crate::core::filter::Filters;
use crate::core::history;
use crate::core::protocol::{
    ChannelEvent, ChannelOnly, ClientMessage, Empty, PublishEvent, PublishResult, ServerMessage,
    PING_REQUEST, PING_RESPONSE,
};
use crate::core::session::{Conn, Session};
use crate::core::snapshot::{self, SnapshotOp};
use crate::core::subscriptions::{
    subscription_frames, AttachRequest, AttachResponse, DeliverRequest, DeliverResponse, Delivered,
};
use crate::core::time::rfc3339_ms;
use crate::glue::{
    self, accept_claims, admit, await_auth, connection_id, error_response, fan_out, load, now_ms,
    now_rfc3339, ok_json, refuse, save, send_str, storage_failed, sweep, wake_by, Outgoing, Target,
};
use crate::room_store::RoomStore;
use crate::router::{CHANNEL_HEADER, CLAIMS_HEADER, HUB_BINDING};

type ApiResult<T> = std::result::Result<T, ApiError>;

/// A newly stored event for the hubs, with its index in the publish results.
type Fresh = (usize, Delivered);

#[durable_object]
pub struct ChannelRoom {
    state: State,
    env: Env,
    config: Config,
    store: Option<RoomStore>,
    /// Receiving sockets, rebuilt from the attachments after any change; the
    /// publish path reads it instead of decoding every attachment per event.
    targets: RefCell<Option<Rc<Vec<Target>>>>,
    /// One stub per hub, reused so deliveries to a hub keep their order.
    hub_stubs: RefCell<HashMap<String, Rc<Stub>>>,
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
            hub_stubs: RefCell::new(HashMap::new()),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let path = req.path();
        match path.as_str() {
            "/health" => Response::ok("ok"),
            "/ws" => self.accept(req).await,
            "/publish" => self.publish(req).await,
            "/snapshot" => answer(self.snapshot_json(&req)),
            "/history" => answer(self.history_json(&req)),
            "/attach" => answer(self.attach(req).await),
            "/detach" => answer(self.detach(req).await),
            "/stats" => answer(self.stats_json()),
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
        sweep::<Session>(&self.state, &self.config).await?;
        self.invalidate();
        Response::ok("")
    }
}

/// Answers a JSON body built by a handler, or its error.
fn answer(result: ApiResult<String>) -> Result<Response> {
    match result {
        Ok(body) => glue::json_response(body, 200),
        Err(e) => error_response(&e),
    }
}

impl ChannelRoom {
    fn store(&self) -> ApiResult<&RoomStore> {
        self.store
            .as_ref()
            .ok_or_else(|| ApiError::internal("channel storage is unavailable"))
    }

    fn channel_of(&self, req: &Request) -> ApiResult<Channel> {
        let name = req
            .headers()
            .get(CHANNEL_HEADER)
            .ok()
            .flatten()
            .unwrap_or_default();
        Channel::parse(&name, &self.config)
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
                let s: Session = load(&ws)?;
                s.receives().then_some(Target {
                    ws,
                    filters: s.filters,
                    batch: s.conn.batch,
                })
            })
            .collect();
        let list = Rc::new(list);
        self.targets.replace(Some(Rc::clone(&list)));
        list
    }

    /// What a new subscriber needs: the head and either the retained events
    /// after `since` or the snapshot. Read without awaiting, so no publish can
    /// slip between the head and the events.
    fn subscription_state(&self, since: Option<u64>) -> ApiResult<AttachResponse> {
        let store = self.store()?;
        let read = storage_failed(
            ErrorCode::SubscriptionFailed,
            "the channel state could not be read",
        );
        let head = store.head().map_err(read)?;
        let resume = match since {
            Some(s) => Some(history::resume(s, head, store.oldest().map_err(read)?)),
            None => None,
        };
        let events = match resume {
            Some(history::Resume::Replay { after }) => {
                store.after(after, u64::MAX).map_err(read)?
            }
            _ => store.snapshot(now_ms()).map_err(read)?,
        };
        Ok(AttachResponse {
            head,
            recovered: resume.map(history::Resume::recovered),
            events,
        })
    }

    async fn accept(&self, req: Request) -> Result<Response> {
        let channel = match self.channel_of(&req) {
            Ok(c) => c,
            Err(e) => return error_response(&e),
        };
        let url = req.url()?;
        let batch = url.query_pairs().any(|(k, v)| k == "batch" && v == "1");
        let claims: Option<Claims> = req
            .headers()
            .get(CLAIMS_HEADER)?
            .and_then(|c| serde_json::from_str(&c).ok());
        let pair = WebSocketPair::new()?;
        let ws = pair.server;
        self.state.accept_web_socket(&ws);
        let mut session = Session::new(
            Conn::new(connection_id(), now_ms(), batch),
            channel.name().to_owned(),
        );
        if let Some((_, raw)) = url.query_pairs().find(|(k, _)| k == "since") {
            match raw.parse::<u64>() {
                Ok(since) => session.resume_from = Some(since),
                Err(_) => {
                    let err = ApiError::invalid(
                        "since",
                        format!("'since' must be a non-negative integer, got '{raw}'; subscribing without it"),
                    );
                    send_str(&ws, &err.frame(ErrorFrame::Error, &now_rfc3339()));
                }
            }
        }
        match claims {
            Some(claims) => {
                self.authenticate(&ws, &mut session, &claims, &channel, true)
                    .await
            }
            None => await_auth(&self.state, &ws, &session, &self.config).await,
        }
        Response::from_websocket(pair.client)
    }

    /// Accepts verified claims on a socket: checks scope and channel, answers
    /// `auth.success`, and on a first authentication subscribes the socket.
    async fn authenticate(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        claims: &Claims,
        channel: &Channel,
        via_url: bool,
    ) {
        if !claims.allows(channel, false) {
            return refuse(
                ws,
                &ApiError::forbidden_channel(channel.name()),
                ErrorFrame::Error,
                CloseCode::Forbidden,
            );
        }
        let first = !session.conn.is_authenticated();
        if !accept_claims(ws, session, claims, via_url, &self.config) {
            return;
        }
        if first {
            session.subscribed = true;
            let since = session.resume_from.take();
            self.send_subscription(ws, session, since);
            save(ws, session);
        }
        self.invalidate();
        wake_by(
            &self.state.storage(),
            session.conn.next_check_ms(&self.config),
        )
        .await;
    }

    fn send_subscription(&self, ws: &WebSocket, session: &Session, since: Option<u64>) {
        match self.subscription_state(since) {
            Ok(state) => {
                for frame in
                    subscription_frames(&session.channel, &session.filters, &state, &now_rfc3339())
                {
                    send_str(ws, &frame);
                }
            }
            Err(err) => {
                send_str(ws, &err.frame(ErrorFrame::Error, &now_rfc3339()));
            }
        }
    }

    async fn on_message(&self, ws: &WebSocket, message: WebSocketIncomingMessage) {
        let Some(mut session) = load::<Session>(ws) else {
            let _ = ws.close(Some(1011), Some("lost connection state"));
            return;
        };
        let now = now_ms();
        let Some(parsed) = admit(ws, &mut session.conn, message, now, &self.config) else {
            return;
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
            Ok(ClientMessage::ActionPing) => {
                send_str(ws, &dialect::pong(&ts));
            }
            Ok(ClientMessage::Topics { .. }) => {
                let err = ApiError::new(
                    ErrorCode::SubscriptionFailed,
                    "topics are served on /ws; this socket carries one channel",
                );
                send_str(ws, &err.frame(ErrorFrame::Error, &ts));
            }
            Ok(ClientMessage::Auth { token }) => {
                let verified = auth::verify(
                    &token,
                    &glue::jwt_secret(&self.env),
                    now / 1000,
                    i64::from(self.config.jwt_leeway_s),
                );
                match (verified, Channel::parse(&session.channel, &self.config)) {
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
                if !session.conn.is_authenticated() =>
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
                since,
            }) => match self.resubscribe(&mut session, &channel, filters.as_ref()) {
                Ok(()) => {
                    self.send_subscription(ws, &session, since);
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
    ) -> ApiResult<()> {
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

    fn snapshot_json(&self, req: &Request) -> ApiResult<String> {
        let channel = self.channel_of(req)?;
        let state = self.subscription_state(None)?;
        let events: Vec<Box<RawValue>> = state
            .events
            .into_iter()
            .filter_map(|r| RawValue::from_string(r.body).ok())
            .collect();
        #[derive(serde::Serialize)]
        struct Body<'a> {
            channel: &'a str,
            seq: u64,
            events: &'a [Box<RawValue>],
        }
        Ok(to_json(&Body {
            channel: channel.name(),
            seq: state.head,
            events: &events,
        }))
    }

    fn history_json(&self, req: &Request) -> ApiResult<String> {
        let channel = self.channel_of(req)?;
        let url = req.url().map_err(|_| ApiError::internal("bad room URL"))?;
        let query = glue::history_query(&url)?;
        let store = self.store()?;
        let read = storage_failed(
            ErrorCode::InternalError,
            "the channel history could not be read",
        );
        let head = store.head().map_err(read)?;
        let recovered =
            history::resume(query.since, head, store.oldest().map_err(read)?).recovered();
        let events: Vec<Box<RawValue>> = store
            .after(query.since, query.limit)
            .map_err(read)?
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
        Ok(to_json(&Body {
            channel: channel.name(),
            head,
            recovered,
            events: &events,
        }))
    }

    fn stats_json(&self) -> ApiResult<String> {
        let store = self.store()?;
        let read = storage_failed(
            ErrorCode::InternalError,
            "the channel state could not be read",
        );
        #[derive(serde::Serialize)]
        struct Body {
            direct: usize,
            seq: u64,
        }
        Ok(to_json(&Body {
            direct: self.targets().len(),
            seq: store.head().map_err(read)?,
        }))
    }

    /// A hub with a new subscriber: register it, and answer the state that
    /// subscriber starts from.
    async fn attach(&self, mut req: Request) -> ApiResult<String> {
        let body: AttachRequest = req
            .json()
            .await
            .map_err(|_| ApiError::internal("malformed attach"))?;
        let write = storage_failed(
            ErrorCode::SubscriptionFailed,
            "the hub could not be registered",
        );
        self.store()?
            .register_hub(&body.hub, body.dialect)
            .map_err(write)?;
        Ok(to_json(&self.subscription_state(body.since)?))
    }

    /// A hub whose last subscriber left.
    async fn detach(&self, mut req: Request) -> ApiResult<String> {
        let body: AttachRequest = req
            .json()
            .await
            .map_err(|_| ApiError::internal("malformed detach"))?;
        let write = storage_failed(
            ErrorCode::InternalError,
            "the hub could not be unregistered",
        );
        self.store()?.unregister_hub(&body.hub).map_err(write)?;
        Ok("{}".into())
    }

    async fn publish(&self, mut req: Request) -> Result<Response> {
        let channel = match self.channel_of(&req) {
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
        let (mut results, fresh) = match self.append_and_fan_out(&channel, events) {
            Ok(r) => r,
            Err(e) => return error_response(&e),
        };
        self.deliver_to_hubs(&channel, &mut results, fresh).await;
        ok_json(&results)
    }

    /// Orders, stores and sends each event to the direct sockets. Returns the
    /// results and the newly stored events (with their index in `results`) for
    /// the hubs. The answer waits until the writes are durable.
    fn append_and_fan_out(
        &self,
        channel: &Channel,
        events: Vec<PublishEvent>,
    ) -> ApiResult<(Vec<PublishResult>, Vec<Fresh>)> {
        let store = self.store()?;
        let write = storage_failed(ErrorCode::InternalError, "the event could not be stored");
        let now = now_ms();
        let targets = self.targets();
        let mut results = Vec::with_capacity(events.len());
        let mut fresh: Vec<Fresh> = Vec::with_capacity(events.len());
        let mut merged_views: Vec<Value> = Vec::with_capacity(events.len());
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
            let merged_json = to_json(&merged);
            store
                .append(
                    seq,
                    event.id.as_deref(),
                    &event.kind,
                    &body,
                    &merged_json,
                    &op,
                    now,
                )
                .map_err(write)?;
            merged_views.push(merged);
            fresh.push((
                results.len(),
                Delivered {
                    seq,
                    kind: event.kind,
                    body,
                    merged: merged_json,
                },
            ));
            results.push(PublishResult {
                channel: channel.name().to_owned(),
                seq,
                delivered: 0,
                duplicate: false,
            });
        }
        // Sent after the loop, still without awaiting: the batch clients get
        // this request's events in one frame.
        let outgoing: Vec<Outgoing<'_>> = fresh
            .iter()
            .zip(&merged_views)
            .map(|((_, d), merged)| Outgoing {
                kind: &d.kind,
                merged,
                body: &d.body,
            })
            .collect();
        let counts = fan_out(&targets, &outgoing, &rfc3339_ms(now));
        for ((slot, _), n) in fresh.iter().zip(counts) {
            results[*slot].delivered = n;
        }
        if let Err(e) = store.prune(&self.config, now) {
            worker::console_error!("history prune failed: {e}");
        }
        Ok((results, fresh))
    }

    fn hub_stub(&self, name: &str) -> Option<Rc<Stub>> {
        if let Some(s) = self.hub_stubs.borrow().get(name) {
            return Some(Rc::clone(s));
        }
        let stub = Rc::new(
            self.env
                .durable_object(HUB_BINDING)
                .and_then(|ns| ns.get_by_name(name))
                .ok()?,
        );
        self.hub_stubs
            .borrow_mut()
            .insert(name.to_owned(), Rc::clone(&stub));
        Some(stub)
    }

    /// Sends the new events once to every registered hub, in parallel, and adds
    /// what each hub delivered. A hub that fails is logged, keeps its
    /// registration and gets a new stub; a hub without subscribers is forgotten.
    async fn deliver_to_hubs(
        &self,
        channel: &Channel,
        results: &mut [PublishResult],
        fresh: Vec<Fresh>,
    ) {
        if fresh.is_empty() {
            return;
        }
        let Ok(store) = self.store() else { return };
        let (hubs, dialect) = match store.hubs() {
            Ok((h, d)) if !h.is_empty() => (h, d),
            Ok(_) => return,
            Err(e) => {
                worker::console_error!("cannot list hubs: {e}");
                return;
            }
        };
        let (slots, events): (Vec<usize>, Vec<Delivered>) = fresh.into_iter().unzip();
        // The topic list is built once here, and only while a hub has
        // dialect subscribers; no hub or socket re-reads the snapshot.
        let list = if dialect && dialect::topic_of(channel.name()).is_some() {
            store
                .snapshot(now_ms())
                .map(|rows| dialect::list_from_bodies(rows.iter().map(|r| r.body.as_str())))
                .map_err(|e| worker::console_error!("cannot build the topic list: {e}"))
                .ok()
        } else {
            None
        };
        let body = to_json(&DeliverRequest {
            channel: channel.name().to_owned(),
            events,
            list,
        });
        let calls = hubs.iter().filter_map(|name| {
            let stub = self.hub_stub(name)?;
            let body = body.clone();
            Some(async move { (name, deliver(&stub, body).await) })
        });
        for (name, outcome) in join_all(calls).await {
            match outcome {
                Ok(answer) => {
                    for (slot, n) in slots.iter().zip(answer.delivered) {
                        results[*slot].delivered += n;
                    }
                    if !answer.registered {
                        if let Err(e) = store.unregister_hub(name) {
                            worker::console_error!("cannot forget hub {name}: {e}");
                        }
                    }
                }
                Err(e) => {
                    // A stub whose call threw may stay broken; the next publish
                    // gets a fresh one. The hub's sockets can resume with `since`.
                    self.hub_stubs.borrow_mut().remove(name.as_str());
                    worker::console_error!("delivery to {name} failed: {e}");
                }
            }
        }
    }
}

async fn deliver(stub: &Stub, body: String) -> Result<DeliverResponse> {
    let req = glue::internal_request("https://hub/deliver", None, Some(body))?;
    let mut resp = stub.fetch_with_request(req).await?;
    resp.json().await
}
