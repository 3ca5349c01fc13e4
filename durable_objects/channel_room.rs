//! The ChannelRoom Durable Object: one per channel. It owns the channel's
//! sequence, history and snapshot, holds its `/ws/{channel}` sockets with the
//! hibernation API, and hands each event once to every hub with subscribers.

use crate::telemetry::{self, log_error};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::join_all;
use serde_json::value::RawValue;
use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, State, Stub, WebSocket,
    WebSocketIncomingMessage, WebSocketPair,
};

use crate::calls;
use crate::commands::{self, Command};
use crate::core::auth::Claims;
use crate::core::channel::Channel;
use crate::core::config::Config;
use crate::core::dialect;
use crate::core::error::{to_json, ApiError, ErrorCode, ErrorFrame};
use crate::core::filter::Filters;
use crate::core::gather::{Arrival, Gather};
use crate::core::history;
use crate::core::internal::{
    AttachRequest, AttachResponse, DeliverRequest, DeliverResponse, DetachRequest, DirectoryRoute,
    HubRoute, MembersRequest, MembersResponse, PresenceChangeRequest, PresenceFrameRequest,
    RegisterResponse, Registration, ReplayRequest, ReplayResponse, RoomName, RoomRoute, RoomStats,
    SystemResponse, CHANNEL_HEADER, CLAIMS_HEADER, HUB_BINDING,
};
use crate::core::metrics::Route;
use crate::core::presence;
use crate::core::protocol::{
    presence_change_frame, ChannelOnly, ClientMessage, Empty, Member, PresenceChange, PresenceData,
    PublishEvent, PublishResult, ServerMessage, Who,
};
use crate::core::publish::{self, EventLog};
use crate::core::refusal::Refusal;
use crate::core::relay::{Relay, Round, Ticket, Turn};
use crate::core::session::{Conn, Session};
use crate::core::status::SystemStatus;
use crate::core::subscriptions::subscription_frames;
use crate::core::time::rfc3339_ms;
use crate::glue::{
    self, accept_claims, admit, await_auth, connection_id, error_response, fan_out, load, now_ms,
    now_rfc3339, ok_json, refuse, save, send, send_flush, send_str, storage_failed, wake_by,
    Outbox, Outgoing, SaveDue, Target, LAZY_SAVE_MS,
};
use crate::room_store::{HubLink, RoomStore};

type ApiResult<T> = std::result::Result<T, ApiError>;

/// How long a room waits before it repeats a failed push to a hub.
const HUB_RETRY_MS: i64 = 1_000;

#[durable_object]
pub struct ChannelRoom {
    state: State,
    env: Env,
    config: Rc<Config>,
    store: Option<RoomStore>,
    /// Receiving sockets, rebuilt from the attachments after any change; the
    /// publish path reads it instead of decoding every attachment per event.
    targets: RefCell<Option<Rc<Vec<Target>>>>,
    /// One stub per hub, reused so deliveries to a hub keep their order.
    hub_stubs: RefCell<HashMap<String, Rc<Stub>>>,
    /// Publish requests in progress, until their writes are durable and
    /// their hubs have answered (for load shedding and gathering).
    publishing: Cell<usize>,
    /// Publish requests gathered into one write while the room is busy.
    gather: RefCell<Gather<Gathered>>,
    /// Pushes to hubs so far (for the test-only dropped-delivery fault).
    pushes: Cell<u64>,
    /// Events waiting to go to `?batch=1` sockets in one frame.
    outbox: RefCell<Outbox>,
    /// Events on their way to the hubs, a bounded number of pushes in flight.
    relay: RefCell<Relay>,
    /// Requests waiting for a round in flight to finish.
    relay_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Registered with the directory (or on the way), so announcements reach
    /// this room's sockets.
    registered: Cell<bool>,
}

impl DurableObject for ChannelRoom {
    fn new(state: State, env: Env) -> Self {
        telemetry::started("room");
        glue::set_ping_auto_response(&state);
        let store = match RoomStore::open(state.storage().sql()) {
            Ok(s) => Some(s),
            Err(e) => {
                log_error!("cannot open room storage: {e}");
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
            publishing: Cell::new(0),
            gather: RefCell::new(Gather::default()),
            pushes: Cell::new(0),
            outbox: RefCell::new(Outbox::default()),
            relay: RefCell::new(Relay::default()),
            relay_waiters: RefCell::new(Vec::new()),
            registered: Cell::new(false),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let Some(route) = RoomRoute::parse(&req.path()) else {
            return error_response(&ApiError::new(ErrorCode::NotFound, "unknown room path"));
        };
        match route {
            RoomRoute::Health => Response::ok("ok"),
            RoomRoute::Socket => self.accept(req).await,
            RoomRoute::Publish => self.publish(req).await,
            RoomRoute::Snapshot => answer(self.snapshot_json(&req)),
            RoomRoute::History => answer(self.history_json(&req)),
            RoomRoute::Attach => answer(self.attach(req).await),
            RoomRoute::Detach => answer(self.detach(req).await),
            RoomRoute::Replay => answer(self.replay(req).await),
            RoomRoute::Stats => answer(self.stats_json()),
            RoomRoute::Presence => match self.channel_of(&req) {
                Ok(channel) => answer(self.presence_json(&channel).await),
                Err(e) => error_response(&e),
            },
            RoomRoute::PresenceChange => answer(self.presence_change(req).await),
            RoomRoute::System => answer(self.announce(req).await),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        // What is queued goes out before any socket's state changes.
        self.flush_batches();
        self.on_message(&ws, message).await;
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        self.flush_batches();
        self.invalidate();
        glue::answer_close(&ws, code);
        if let Some(s) = load::<Session>(&ws) {
            telemetry::closed(Route::Direct, &s.conn.id, code);
        }
        self.gone(&ws).await;
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        self.flush_batches();
        self.invalidate();
        if let Some(s) = load::<Session>(&ws) {
            telemetry::closed(Route::Direct, &s.conn.id, 1006);
        }
        self.gone(&ws).await;
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        self.flush_batches();
        if let Ok(store) = self.store() {
            if let Err(e) = store.save_delivered() {
                log_error!("cannot count deliveries: {e}");
            }
        }
        let swept = glue::sweep::<Session>(&self.state, &self.config);
        self.invalidate();
        for ws in &swept.closed {
            self.gone(ws).await;
        }
        let sockets = swept.next;
        let hubs = self.nudge_lagging_hubs().await;
        let next = [sockets, hubs].into_iter().flatten().min();
        if let Some(t) = next {
            wake_by(&self.state.storage(), t).await;
        }
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
            ErrorCode::InternalError,
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
            catch_up: Vec::new(),
        })
    }

    async fn accept(&self, req: Request) -> Result<Response> {
        self.flush_batches();
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
        self.register(channel.name()).await;
        let pair = WebSocketPair::new()?;
        let ws = pair.server;
        self.state.accept_web_socket(&ws);
        let mut session = Session::new(
            Conn::new(connection_id("direct"), now_ms(), batch),
            channel.name().to_owned(),
        );
        telemetry::opened(Route::Direct, &session.conn.id);
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
        if let Some(refusal) = Refusal::of_claims(claims, Some(channel)) {
            return refuse(ws, refusal);
        }
        let first = !session.conn.is_authenticated();
        let status = self.store().ok().and_then(|s| s.status().ok().flatten());
        if !accept_claims(ws, session, claims, via_url, &self.config, status.as_ref()) {
            return;
        }
        if first {
            session.subscribed = true;
            session.joined_ms = now_ms();
            let since = session.resume_from.take();
            self.send_subscription(ws, session, since);
            save(ws, session);
            self.presence_changed(channel, PresenceChange::Join, session.conn.who())
                .await;
        }
        self.invalidate();
        wake_by(
            &self.state.storage(),
            session.conn.next_check_ms(None, &self.config),
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
            glue::lost_state(ws).ok();
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
                let verified = glue::verify(&self.env, &token, now).await;
                match (verified, Channel::parse(&session.channel, &self.config)) {
                    (Ok(claims), Ok(channel)) => {
                        return self
                            .authenticate(ws, &mut session, &claims, &channel, false)
                            .await;
                    }
                    (Err(e), _) => return refuse(ws, Refusal::BadToken(e)),
                    (_, Err(e)) => return refuse(ws, Refusal::ChannelNotFound(e)),
                }
            }
            Ok(
                ClientMessage::Subscribe { .. }
                | ClientMessage::Unsubscribe { .. }
                | ClientMessage::Publish(_)
                | ClientMessage::Command { .. }
                | ClientMessage::Presence { .. },
            ) if !session.conn.is_authenticated() => {
                send_str(ws, &glue::not_authenticated().frame(ErrorFrame::Error, &ts));
            }
            Ok(ClientMessage::Subscribe {
                channel,
                filters,
                since,
            }) => {
                let before = session.clone();
                match self.resubscribe(&mut session, &channel, filters.as_ref()) {
                    Ok(()) if save(ws, &session) => {
                        self.send_subscription(ws, &session, since);
                        self.invalidate();
                    }
                    Ok(()) => {
                        // The filters do not fit the socket's attachment: the
                        // old subscription stays as it was.
                        session = before;
                        let err = ApiError::new(
                            ErrorCode::SubscriptionFailed,
                            "these filters are too large for a direct socket; use fewer values or /ws",
                        )
                        .with("channel", channel.as_str());
                        send_str(ws, &err.frame(ErrorFrame::Error, &ts));
                    }
                    Err(e) => {
                        send_str(ws, &e.frame(ErrorFrame::Error, &ts));
                    }
                }
            }
            Ok(ClientMessage::Unsubscribe { channel }) => {
                if channel == session.channel && session.subscribed {
                    session.subscribed = false;
                    save(ws, &session);
                    self.invalidate();
                    if let Ok(parsed) = Channel::parse(&channel, &self.config) {
                        self.presence_changed(&parsed, PresenceChange::Leave, session.conn.who())
                            .await;
                    }
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
            Ok(ClientMessage::Publish(event)) => {
                save(ws, &session);
                let Some(identity) = &session.conn.identity else {
                    return;
                };
                let frame = self
                    .publish_sent(&identity.claims, &session.channel, event)
                    .await;
                send_str(ws, &frame);
                return;
            }
            Ok(ClientMessage::Presence { channel }) => {
                save(ws, &session);
                let Some(identity) = &session.conn.identity else {
                    return;
                };
                let frame = self
                    .presence_of(&identity.claims, &session.channel, &channel)
                    .await;
                send_str(ws, &frame);
                return;
            }
            Ok(ClientMessage::Command { name, message, id }) => {
                save(ws, &session);
                let Some(identity) = &session.conn.identity else {
                    return;
                };
                // Awaited here, the backend holds up nothing else: every
                // message of every socket is its own event.
                let command = Command { name, message, id };
                let frame = commands::run(
                    &self.env,
                    &self.config,
                    &session.conn.id,
                    &identity.claims,
                    &command,
                )
                .await;
                send_str(ws, &frame);
                return;
            }
        }
        save(ws, &session);
    }

    /// A socket's `publish`: checked like an HTTP publish, then stored here
    /// (the socket's own channel) or through the channel's room.
    async fn publish_sent(&self, claims: &Claims, own: &str, event: PublishEvent) -> String {
        let ts = now_rfc3339();
        let id = event.id.clone();
        let outcome = match publish::check_sent(claims, &event, &self.config) {
            Ok(channel) if channel.name() == own => {
                self.publish_events(&channel, vec![event]).await
            }
            Ok(channel) => calls::publish(&self.env, channel.name(), &[&event]).await,
            Err(e) => Err(e),
        };
        match outcome.as_deref() {
            Ok([result]) => publish::published_frame(result, id.as_deref(), &ts),
            Ok(_) => ApiError::internal("the channel answered a malformed result")
                .frame(ErrorFrame::Error, &ts),
            Err(e) => e.frame(ErrorFrame::Error, &ts),
        }
    }

    /// A socket's `presence`: this room's members, or another room's.
    async fn presence_of(&self, claims: &Claims, own: &str, name: &str) -> String {
        let ts = now_rfc3339();
        let members = match presence::channel_for(claims, name, &self.config) {
            Ok(channel) if channel.name() == own => self.members(&channel).await,
            Ok(channel) => calls::presence(&self.env, channel.name()).await,
            Err(e) => Err(e),
        };
        match members {
            Ok(members) => ServerMessage::Presence {
                timestamp: &ts,
                data: PresenceData {
                    channel: name,
                    members: &members,
                },
            }
            .to_json(),
            Err(e) => e.frame(ErrorFrame::Error, &ts),
        }
    }

    /// A socket that closed, broke or was closed here: if it was present, it
    /// leaves; if it was the last socket, the room leaves the directory.
    async fn gone(&self, ws: &WebSocket) {
        let Some(session) = load::<Session>(ws) else {
            return;
        };
        if session.receives() {
            let mut left = session.clone();
            left.subscribed = false;
            save(ws, &left);
            if let Ok(channel) = Channel::parse(&session.channel, &self.config) {
                self.presence_changed(&channel, PresenceChange::Leave, session.conn.who())
                    .await;
            }
        }
        if !self.holds_others(&session.conn.id) {
            self.unregister(&session.channel, &session.conn.id).await;
        }
    }

    /// Whether a socket other than `conn` is still here.
    fn holds_others(&self, conn: &str) -> bool {
        self.state
            .get_websockets()
            .iter()
            .filter_map(load::<Session>)
            .any(|s| s.conn.id != conn)
    }

    /// The last socket (`gone`) left: the room leaves the directory. A socket
    /// accepted meanwhile makes it register again.
    async fn unregister(&self, channel: &str, gone: &str) {
        let Ok(store) = self.store() else { return };
        if !self.registered.replace(false) && !store.registered().unwrap_or(false) {
            return;
        }
        if let Err(e) = store.clear_registered() {
            log_error!("cannot clear the registration: {e}");
        }
        let body = to_json(&RoomName {
            room: channel.to_owned(),
        });
        if let Err(e) =
            calls::to_directory::<Value>(&self.env, DirectoryRoute::Unregister, Some(body)).await
        {
            log_error!("cannot unregister {channel}: {}", e.message);
        }
        if self.holds_others(gone) {
            self.registered.set(false);
            self.register(channel).await;
        }
    }

    /// Registers with the directory once, so system announcements reach this
    /// room's sockets, and learns the current status.
    async fn register(&self, channel: &str) {
        if self.registered.replace(true) {
            return;
        }
        let Ok(store) = self.store() else { return };
        if store.registered().unwrap_or(false) {
            return;
        }
        let body = to_json(&RoomName {
            room: channel.to_owned(),
        });
        match calls::to_directory::<RegisterResponse>(
            &self.env,
            DirectoryRoute::Register,
            Some(body),
        )
        .await
        {
            Ok(answer) => {
                if let Err(e) = store
                    .set_status(&answer.status)
                    .and_then(|_| store.set_registered())
                {
                    log_error!("cannot store the registration: {e}");
                }
            }
            Err(e) => {
                self.registered.set(false);
                log_error!("cannot register {channel}: {}", e.message);
            }
        }
    }

    /// Worker → room: stores a system status and sends it to every
    /// authenticated socket here.
    async fn announce(&self, mut req: Request) -> ApiResult<String> {
        let status: SystemStatus = req
            .json()
            .await
            .map_err(|_| ApiError::internal("malformed status"))?;
        self.store()?.set_status(&status).map_err(storage_failed(
            ErrorCode::InternalError,
            "the status could not be stored",
        ))?;
        let delivered = glue::announce::<Session>(&self.state, &status);
        Ok(to_json(&SystemResponse { delivered }))
    }

    /// A join or leave on a presence channel: every other subscriber hears
    /// it, the direct ones from here and the hubs' through their hubs.
    async fn presence_changed(&self, channel: &Channel, change: PresenceChange, who: Who) {
        if !channel.has_presence(&self.config) {
            return;
        }
        let frame = presence_change_frame(change, channel.name(), &now_rfc3339(), &who);
        let js = JsValue::from_str(&frame);
        for ws in self.state.get_websockets() {
            if load::<Session>(&ws).is_some_and(|s| s.receives() && s.conn.id != who.connection_id)
            {
                send(&ws, &js);
            }
        }
        let Ok(hubs) = self.store().and_then(|s| {
            s.hubs()
                .map_err(|e| ApiError::internal(format!("cannot list hubs: {e}")))
        }) else {
            return;
        };
        let body = to_json(&PresenceFrameRequest {
            channel: channel.name().to_owned(),
            frame,
            except: who.connection_id,
        });
        let calls = hubs.iter().map(|hub| {
            let stub = self.hub_stub(&hub.name);
            let body = body.clone();
            async move {
                let req = glue::internal_request(&HubRoute::PresenceFrame.url(), None, Some(body))?;
                match stub {
                    Some(stub) => stub.fetch_with_request(req).await.map(|_| ()),
                    None => Err(worker::Error::RustError("no stub for the hub".into())),
                }
            }
        });
        for outcome in join_all(calls).await {
            if let Err(e) = outcome {
                log_error!("presence frame to a hub failed: {e}");
            }
        }
    }

    /// Hub → room: one of its sockets joined or left.
    async fn presence_change(&self, mut req: Request) -> ApiResult<String> {
        let channel = self.channel_of(&req)?;
        let body: PresenceChangeRequest = req
            .json()
            .await
            .map_err(|_| ApiError::internal("malformed presence change"))?;
        self.presence_changed(&channel, body.change, body.who).await;
        Ok("{}".into())
    }

    /// Members of this room's channel: its direct subscribers and every
    /// attached hub's live ones, by `joined_at`.
    async fn members(&self, channel: &Channel) -> ApiResult<Vec<Member>> {
        let mut members: Vec<(i64, Member)> = self
            .state
            .get_websockets()
            .iter()
            .filter_map(load::<Session>)
            .filter(Session::receives)
            .map(|s| {
                (
                    s.joined_ms,
                    Member {
                        sub: s.conn.identity.and_then(|i| i.claims.sub),
                        connection_id: s.conn.id,
                        joined_at: rfc3339_ms(s.joined_ms),
                    },
                )
            })
            .collect();
        let hubs = self.store()?.hubs().map_err(storage_failed(
            ErrorCode::InternalError,
            "the hubs could not be read",
        ))?;
        let body = to_json(&MembersRequest {
            channel: channel.name().to_owned(),
        });
        let calls = hubs.iter().map(|hub| {
            let stub = self.hub_stub(&hub.name);
            let body = body.clone();
            async move {
                let req = glue::internal_request(&HubRoute::Members.url(), None, Some(body))?;
                let stub = stub.ok_or_else(|| worker::Error::RustError("no stub".into()))?;
                let resp = stub.fetch_with_request(req).await?;
                glue::read_json::<MembersResponse>(resp).await
            }
        });
        for answer in join_all(calls).await {
            let answer = answer.map_err(|e| {
                log_error!("members of a hub could not be read: {e}");
                ApiError::internal("a hub could not be reached for presence; try again")
            })?;
            for m in answer.members {
                let at = crate::core::time::parse_rfc3339_ms(&m.joined_at).unwrap_or_default();
                members.push((at, m));
            }
        }
        members.sort_by_key(|a| a.0);
        Ok(members.into_iter().map(|(_, m)| m).collect())
    }

    /// `GET …/presence` and the hubs' presence requests: `{"channel","members"}`.
    async fn presence_json(&self, channel: &Channel) -> ApiResult<String> {
        let members = self.members(channel).await?;
        #[derive(serde::Serialize)]
        struct Body<'a> {
            channel: &'a str,
            members: &'a [Member],
        }
        Ok(to_json(&Body {
            channel: channel.name(),
            members: &members,
        }))
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
        Ok(to_json(&RoomStats {
            direct: self.targets().len() as u64,
            seq: store.head().map_err(read)?,
            delivered: store.delivered().map_err(read)?,
            counters: telemetry::counters(),
        }))
    }

    /// A hub with a new subscriber: register it, and answer the state that
    /// subscriber starts from, with what the hub has not applied yet.
    async fn attach(&self, mut req: Request) -> ApiResult<String> {
        let body: AttachRequest = req
            .json()
            .await
            .map_err(|_| ApiError::internal("malformed attach"))?;
        let store = self.store()?;
        let write = storage_failed(ErrorCode::InternalError, "the hub could not be registered");
        store
            .register_hub(&body.hub, body.registration, now_ms())
            .map_err(write)?;
        let mut state = self.subscription_state(body.since)?;
        if let Some(applied) = body.applied.filter(|a| *a < state.head) {
            state.catch_up = store
                .after(applied, state.head - applied)
                .map_err(storage_failed(
                    ErrorCode::InternalError,
                    "the channel history could not be read",
                ))?;
        }
        Ok(to_json(&state))
    }

    /// A hub whose last subscriber left.
    async fn detach(&self, mut req: Request) -> ApiResult<String> {
        let body: DetachRequest = req
            .json()
            .await
            .map_err(|_| ApiError::internal("malformed detach"))?;
        let write = storage_failed(
            ErrorCode::InternalError,
            "the hub could not be unregistered",
        );
        self.store()?
            .unregister_hub(&body.hub, None)
            .map_err(write)?;
        Ok("{}".into())
    }

    /// A hub filling a gap: the retained events it asked for and, for
    /// dialect subscribers, the topic's current list.
    async fn replay(&self, mut req: Request) -> ApiResult<String> {
        let channel = self.channel_of(&req)?;
        let body: ReplayRequest = req
            .json()
            .await
            .map_err(|_| ApiError::internal("malformed replay"))?;
        let store = self.store()?;
        let read = storage_failed(
            ErrorCode::InternalError,
            "the channel history could not be read",
        );
        let events = store
            .after(body.after, body.through.saturating_sub(body.after))
            .map_err(read)?;
        let list = if body.dialect && dialect::topic_of(channel.name()).is_some() {
            let rows = store.snapshot(now_ms()).map_err(read)?;
            Some(dialect::list_from_bodies(
                rows.iter().map(|r| r.body.as_str()),
            ))
        } else {
            None
        };
        Ok(to_json(&ReplayResponse { events, list }))
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
        match self.publish_events(&channel, events).await {
            Ok(results) => ok_json(&results),
            Err(e) => error_response(&e),
        }
    }

    /// Every publish of this channel, over HTTP or from a socket: sheds load
    /// past `PUBLISH_QUEUE_MAX`, stores and fans out, then hands the events
    /// to the hubs.
    async fn publish_events(
        &self,
        channel: &Channel,
        events: Vec<PublishEvent>,
    ) -> ApiResult<Vec<PublishResult>> {
        if self.publishing.get() >= self.config.publish_queue_max {
            return Err(ApiError::overloaded(1));
        }
        let _busy = InFlight::enter(&self.publishing);
        let started = now_ms();
        let (mut results, relayed, stored, seqs) = self.store_gathered(channel, events).await?;
        self.flush_batches_soon().await;
        // Counted as in progress until its writes are durable, so requests
        // arriving meanwhile gather into the next write (`core::gather`).
        if let Err(e) = self.state.storage().sync().await {
            log_error!("publish writes did not commit: {e}");
        }
        if let Some(ticket) = relayed {
            let mut hubbed = 0;
            for (slot, n) in self.relay_to_hubs(channel, ticket).await {
                results[slot].delivered += n;
                hubbed += n;
            }
            if self.store()?.add_delivered_later(hubbed) == SaveDue::Schedule {
                wake_by(&self.state.storage(), now_ms() + LAZY_SAVE_MS).await;
            }
        }
        let delivered = results.iter().map(|r| r.delivered).sum();
        let ms = (now_ms() - started) as f64;
        telemetry::published(channel.name(), seqs, stored, delivered, ms);
        Ok(results)
    }

    /// Whether a publish other than the caller's is in progress (each
    /// counts itself in `publishing`): the room is busy, so what arrives
    /// gathers.
    fn others_publishing(&self) -> bool {
        self.publishing.get() > 1
    }

    /// Stores a request's events: at once in an idle room; in a busy one,
    /// after one yield, together with every request that arrived meanwhile,
    /// so they share one commit (`core::gather`).
    async fn store_gathered(
        &self,
        channel: &Channel,
        events: Vec<PublishEvent>,
    ) -> ApiResult<Appended> {
        let (tx, rx) = oneshot::channel();
        let busy = self.others_publishing();
        let arrival = self.gather.borrow_mut().arrive((events, tx), busy);
        match arrival {
            Arrival::Now((events, _)) => {
                let appended = self.append_and_fan_out(channel, events);
                self.prune();
                return appended;
            }
            Arrival::Lead => {
                let gathering = Gathering {
                    room: self,
                    channel,
                };
                glue::yield_once().await;
                drop(gathering);
            }
            Arrival::Follow => {}
        }
        rx.await
            .unwrap_or_else(|_| Err(ApiError::internal("the gathered write was abandoned")))
    }

    /// Stores every gathered request in arrival order, in one synchronous
    /// pass (one implicit transaction), and answers each.
    fn write_gathered(&self, channel: &Channel) {
        let gathered = self.gather.borrow_mut().take();
        for (events, answer) in gathered {
            let _ = answer.send(self.append_and_fan_out(channel, events));
        }
        self.prune();
    }

    /// Drops what history and the idempotency window no longer keep: once
    /// per write, however many requests it stored.
    fn prune(&self) {
        if let Ok(store) = self.store() {
            if let Err(e) = store.prune(&self.config, now_ms()) {
                log_error!("history prune failed: {e}");
            }
        }
    }

    /// Orders and stores the events (`core::publish`), sends each to the
    /// plain direct sockets and queues them for the batch ones and for the
    /// hubs (in `seq` order, as they are stored), all without awaiting. The
    /// answer waits until the writes are durable. Answers the results so far,
    /// the relay ticket when hubs are registered, how many events were new
    /// and their first and last `seq`.
    fn append_and_fan_out(
        &self,
        channel: &Channel,
        events: Vec<PublishEvent>,
    ) -> ApiResult<Appended> {
        let store = self.store()?;
        let write = storage_failed(ErrorCode::InternalError, "the event could not be stored");
        let now = now_ms();
        let mut outcome = publish::append_all(store, channel, events, now).map_err(write)?;
        let outgoing: Vec<Outgoing<'_>> = outcome
            .fresh
            .iter()
            .map(|f| Outgoing {
                kind: &f.event.kind,
                merged: &f.merged,
                body: &f.event.body,
            })
            .collect();
        let targets = self.targets();
        let (batched, earlier) = self.outbox.borrow_mut().enqueue(&targets, &outgoing);
        send_flush(earlier);
        let plain = fan_out(&targets, &outgoing);
        for ((f, p), b) in outcome.fresh.iter().zip(plain).zip(batched) {
            outcome.results[f.slot].delivered = p + b;
        }
        let direct: u64 = outcome.results.iter().map(|r| r.delivered).sum();
        // Counted in the pass that stored the events: no commit of its own.
        if let Err(e) = store.add_delivered(direct) {
            log_error!("cannot count deliveries: {e}");
        }
        let stored = outcome.fresh.len() as u64;
        let seqs = outcome
            .fresh
            .first()
            .zip(outcome.fresh.last())
            .map(|(a, b)| (a.event.seq, b.event.seq));
        let hubs = store.hubs().unwrap_or_else(|e| {
            log_error!("cannot list hubs: {e}");
            Vec::new()
        });
        let relayed = (!outcome.fresh.is_empty() && !hubs.is_empty()).then(|| {
            self.relay
                .borrow_mut()
                .enqueue(outcome.fresh.into_iter().map(|f| (f.slot, f.event)))
        });
        Ok((outcome.results, relayed, stored, seqs))
    }

    /// Flushes the outbox after yielding once, so the events of publish
    /// requests that arrive meanwhile (while the object is busy) share the
    /// frame; an idle object flushes at once. A request that finds a flush
    /// already due leaves its events to it.
    async fn flush_batches_soon(&self) {
        if self.outbox.borrow_mut().schedule() {
            glue::yield_once().await;
            self.flush_batches();
        }
    }

    /// Sends everything queued for the batch clients, one frame per socket.
    fn flush_batches(&self) {
        let flush = self.outbox.borrow_mut().take();
        send_flush(flush);
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

    /// Waits until the hubs have the events of `ticket`, and answers the
    /// sockets they reached per slot of the request. Whoever finds a free
    /// slot sends everything queued so far (`core::relay`); the others wait,
    /// so a busy room makes one call per hub per round.
    async fn relay_to_hubs(&self, channel: &Channel, ticket: Ticket) -> Vec<(usize, u64)> {
        // A busy room yields once first, so the events that writes store
        // meanwhile join this round, as they join the room's own batch
        // frames: a hub's `?batch=1` frame carries one round, and every round
        // costs a call per hub. An idle room sends at once.
        if self.others_publishing() {
            glue::yield_once().await;
        }
        loop {
            let turn = self.relay.borrow_mut().turn(ticket);
            match turn {
                Turn::Answered(counts) => return counts,
                Turn::Wait => {
                    let (tx, rx) = oneshot::channel();
                    self.relay_waiters.borrow_mut().push(tx);
                    // A dropped sender (the round abandoned) also wakes us.
                    let _ = rx.await;
                }
                Turn::Send(round) => {
                    let mut sending = Sending {
                        room: self,
                        round: Some(round),
                    };
                    let delivered = match sending.round.as_ref() {
                        Some(round) => self.send_round(channel, round).await,
                        None => Vec::new(),
                    };
                    sending.finish(&delivered);
                }
            }
        }
    }

    /// Sends a round once to every registered hub, in parallel; answers the
    /// sockets each hub that answered reached per event. The topic list is
    /// built once here, and only while a hub has dialect subscribers; no hub
    /// or socket re-reads the snapshot.
    async fn send_round(&self, channel: &Channel, round: &Round) -> Vec<Vec<u64>> {
        let Ok(store) = self.store() else {
            return Vec::new();
        };
        let hubs = match store.hubs() {
            Ok(h) if !h.is_empty() => h,
            Ok(_) => return Vec::new(),
            Err(e) => {
                log_error!("cannot list hubs: {e}");
                return Vec::new();
            }
        };
        let dialect = hubs.iter().any(|h| h.registration == Registration::Dialect);
        let list = if dialect && dialect::topic_of(channel.name()).is_some() {
            store
                .snapshot(now_ms())
                .map(|rows| dialect::list_from_bodies(rows.iter().map(|r| r.body.as_str())))
                .map_err(|e| log_error!("cannot build the topic list: {e}"))
                .ok()
        } else {
            None
        };
        let head = store.head().unwrap_or_default();
        let body = to_json(&DeliverRequest {
            channel: channel.name().to_owned(),
            events: round.events.clone(),
            head,
            list,
        });
        self.push(channel.name(), &hubs, body)
            .await
            .into_iter()
            .flatten()
            .map(|answer| answer.delivered)
            .collect()
    }

    /// Sends one delivery to each hub, in parallel; answers per hub, `None`
    /// where the push failed. A failed hub is marked lagging (and the alarm
    /// set to nudge it), a recovered one unmarked, and one that answers it
    /// has no subscribers is forgotten unless it attached after the push left.
    async fn push(
        &self,
        channel: &str,
        hubs: &[HubLink],
        body: String,
    ) -> Vec<Option<DeliverResponse>> {
        let Ok(store) = self.store() else {
            return Vec::new();
        };
        let sent_at = now_ms();
        let calls = hubs.iter().map(|hub| {
            let stub = self.hub_stub(&hub.name);
            let dropped = self.drops_this_push();
            let body = body.clone();
            async move {
                match stub {
                    _ if dropped => Err(worker::Error::RustError(
                        "dropped by TEST_DROP_HUB_DELIVERY_EVERY".into(),
                    )),
                    Some(stub) => deliver(&stub, channel, body).await,
                    None => Err(worker::Error::RustError("no stub for the hub".into())),
                }
            }
        });
        let outcomes = join_all(calls).await;
        let mut answers = Vec::with_capacity(hubs.len());
        let mut failed = false;
        for (hub, outcome) in hubs.iter().zip(outcomes) {
            let noted = match &outcome {
                Ok(answer) if !answer.registered => store.unregister_hub(&hub.name, Some(sent_at)),
                Ok(_) if hub.lagging => store.set_lagging(&hub.name, false),
                Ok(_) => Ok(()),
                Err(e) => {
                    // A stub whose call threw may stay broken; the retry gets a fresh one.
                    self.hub_stubs.borrow_mut().remove(hub.name.as_str());
                    log_error!("delivery of {channel} to {} failed: {e}", hub.name);
                    failed = true;
                    store.set_lagging(&hub.name, true)
                }
            };
            if let Err(e) = noted {
                log_error!("cannot update hub {}: {e}", hub.name);
            }
            answers.push(outcome.ok());
        }
        if failed {
            if let Err(e) = store.set_channel(channel) {
                log_error!("cannot remember the channel name: {e}");
            }
            wake_by(&self.state.storage(), now_ms() + HUB_RETRY_MS).await;
        }
        answers
    }

    /// Whether the test-only fault drops the push about to be made.
    fn drops_this_push(&self) -> bool {
        let every = self.config.test_drop_hub_delivery_every;
        let n = self.pushes.get() + 1;
        self.pushes.set(n);
        every > 0 && n.is_multiple_of(every)
    }

    /// The alarm's part for hubs: an empty delivery carrying the head to each
    /// lagging hub, which makes it fill its gap from history. Returns when to
    /// try again while any is still lagging.
    async fn nudge_lagging_hubs(&self) -> Option<i64> {
        let store = self.store().ok()?;
        let lagging: Vec<HubLink> = store
            .hubs()
            .ok()?
            .into_iter()
            .filter(|h| h.lagging)
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let channel = store.channel().ok().flatten()?;
        let body = to_json(&DeliverRequest {
            channel: channel.clone(),
            events: Vec::new(),
            head: store.head().ok()?,
            list: None,
        });
        self.push(&channel, &lagging, body).await;
        let still = store.hubs().ok()?.iter().any(|h| h.lagging);
        still.then(|| now_ms() + HUB_RETRY_MS)
    }
}

/// A room's stored events, as `append_and_fan_out` answers them: the
/// results so far, the relay ticket when hubs are registered, how many events
/// were new and their first and last `seq`.
type Appended = (Vec<PublishResult>, Option<Ticket>, u64, Option<(u64, u64)>);

/// A publish request's events and where its answer goes, while gathered.
type Gathered = (Vec<PublishEvent>, oneshot::Sender<ApiResult<Appended>>);

/// The lead of a gathering. Dropped, after its yield or with its request
/// abandoned, it writes everything gathered, so no follower waits forever.
struct Gathering<'a> {
    room: &'a ChannelRoom,
    channel: &'a Channel,
}

impl Drop for Gathering<'_> {
    fn drop(&mut self) {
        self.room.write_gathered(self.channel);
    }
}

/// A round on its way to the hubs. Finished, it answers its requests; dropped
/// unfinished (its request abandoned), it puts the events back at the front of
/// the queue. Either way the waiting requests wake and look again.
struct Sending<'a> {
    room: &'a ChannelRoom,
    round: Option<Round>,
}

impl Sending<'_> {
    fn finish(&mut self, delivered: &[Vec<u64>]) {
        if let Some(round) = self.round.take() {
            self.room.relay.borrow_mut().finish(round, delivered);
        }
        self.wake();
    }

    fn wake(&self) {
        for waiter in self.room.relay_waiters.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if let Some(round) = self.round.take() {
            self.room.relay.borrow_mut().abandon(round);
            self.wake();
        }
    }
}

/// Counts a publish request in progress for as long as it lives.
struct InFlight<'a>(&'a Cell<usize>);

impl<'a> InFlight<'a> {
    fn enter(count: &'a Cell<usize>) -> Self {
        count.set(count.get() + 1);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// One delivery to one hub; the channel rides in a header too, so the hub
/// can take the channel's turn before it reads the body.
async fn deliver(stub: &Stub, channel: &str, body: String) -> Result<DeliverResponse> {
    let req = glue::internal_request(&HubRoute::Deliver.url(), Some(channel), Some(body))?;
    let (status, text) = glue::read_text(stub.fetch_with_request(req).await?).await?;
    if status != 200 {
        return Err(worker::Error::RustError(format!("hub answered {status}")));
    }
    Ok(serde_json::from_str(&text)?)
}
