//! The Hub Durable Object: one of N shards holding multiplexed `/ws` sockets
//! (hibernation API). It registers with a ChannelRoom while it has subscribers
//! for that channel, receives each event once from the room, and applies every
//! socket's filters locally. `001_…` dialect sockets subscribe to topics, which
//! are channels seen as whole lists.
//!
//! Ordering: each socket's messages are handled in order (a lock per
//! connection); each channel's deliveries, attaches and detaches run in order
//! (a lock per channel), so an attach sees no delivery in flight and a detach
//! never overtakes the next attach. Deliveries are applied by `seq` through
//! the channel's cursor (`core::gap`): a lost or late push is repaired from the
//! room's history before anything newer goes out.

use crate::telemetry::{self, log_error};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use futures::future::join_all;
use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair,
};

use crate::calls;
use crate::commands::{self, Command};
use crate::core::attach_memo::AttachMemo;
use crate::core::auth::Claims;
use crate::core::channel::Channel;
use crate::core::config::Config;
use crate::core::dialect::{self, TopicFrame};
use crate::core::error::{to_json, ApiError, ErrorCode, ErrorFrame};
use crate::core::filter::Filters;
use crate::core::gap::{self, Step};
use crate::core::internal::{
    AttachRequest, AttachResponse, DeliverRequest, DeliverResponse, Delivered, DetachRequest,
    HubRoute, HubStats, MembersRequest, MembersResponse, PresenceChangeRequest,
    PresenceFrameRequest, Registration, ReplayRequest, ReplayResponse, RoomRoute, SystemResponse,
    CHANNEL_HEADER, CLAIMS_HEADER, HUB_HEADER, HUB_SOCKETS_HEADER, ROOM_BINDING,
};
use crate::core::metrics::Route;
use crate::core::presence;
use crate::core::protocol::{
    ChannelOnly, ClientMessage, Empty, Member, PresenceChange, PresenceData, PublishEvent,
    ServerMessage, Who,
};
use crate::core::publish;
use crate::core::refusal::Refusal;
use crate::core::session::{Conn, HubSession};
use crate::core::status::SystemStatus;
use crate::core::subscriptions::{check_subscribe, subscription_frames};
use crate::core::time::rfc3339_ms;
use crate::glue::{
    self, accept_claims, admit, await_auth, connection_id, error_response, fan_out, load, now_ms,
    now_rfc3339, refuse, save, send, send_flush, send_str, storage_failed, Outbox, Outgoing,
    SaveDue, Target, LAZY_SAVE_MS,
};
use crate::hub_store::{HubStore, MemberRow, SubKind};
use crate::locks::KeyedLocks;

type ApiResult<T> = std::result::Result<T, ApiError>;

/// Receiving sockets per channel, and the store version they were built at.
type TargetCache = (u64, HashMap<String, Rc<Vec<Target>>>);

#[durable_object]
pub struct Hub {
    state: State,
    env: Env,
    config: Rc<Config>,
    store: HubStore,
    /// Open sockets by connection id; rebuilt from the attachments after a change.
    sockets: RefCell<Option<HashMap<String, (WebSocket, bool)>>>,
    /// Receiving sockets per channel, for the store version they were built
    /// at, so the delivery path neither looks up nor clones a socket per event.
    targets: RefCell<TargetCache>,
    /// One socket's messages run one at a time, in arrival order.
    turns: KeyedLocks,
    /// One channel's deliveries, attaches and detaches run one at a time.
    channels: KeyedLocks,
    /// Connections that closed while one of their messages was in flight, so
    /// a subscribe that finishes later stores nothing for them.
    closed: RefCell<HashSet<String>>,
    /// Per channel, events waiting for the `?batch=1` sockets.
    outboxes: RefCell<HashMap<String, Outbox>>,
    /// Per channel, the last attach answer, which later subscribers of a
    /// burst reuse while it still holds.
    attaches: RefCell<AttachMemo>,
}

impl DurableObject for Hub {
    fn new(state: State, env: Env) -> Self {
        telemetry::started("hub");
        glue::set_ping_auto_response(&state);
        let store = HubStore::open(state.storage().sql())
            .unwrap_or_else(|e| panic!("cannot open hub storage: {e}"));
        let config = glue::config(&env);
        Hub {
            state,
            env,
            config,
            store,
            sockets: RefCell::new(None),
            targets: RefCell::new((u64::MAX, HashMap::new())),
            turns: KeyedLocks::default(),
            channels: KeyedLocks::default(),
            closed: RefCell::new(HashSet::new()),
            outboxes: RefCell::new(HashMap::new()),
            attaches: RefCell::new(AttachMemo::default()),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match HubRoute::parse(&req.path()) {
            Some(HubRoute::Socket) => self.accept(req).await,
            Some(HubRoute::Deliver) => self.deliver(req).await,
            Some(HubRoute::Stats) => glue::json_response(self.stats_json(), 200),
            Some(HubRoute::Members) => self.members(req).await,
            Some(HubRoute::PresenceFrame) => self.presence_frame(req).await,
            Some(HubRoute::System) => self.announce(req).await,
            None => error_response(&ApiError::new(ErrorCode::NotFound, "unknown hub path")),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let Some(session) = load::<HubSession>(&ws) else {
            return glue::lost_state(&ws);
        };
        let id = session.conn.id;
        let command = {
            let _turn = self.turns.lock(&id).await;
            if self.closed.borrow().contains(&id) {
                None
            } else {
                self.on_message(&ws, message).await
            }
        };
        if !self.turns.is_busy(&id) {
            self.closed.borrow_mut().remove(&id);
        }
        // A command waits for its backend outside the socket's turn, so a
        // slow backend holds up no other message of this socket.
        if let Some((command, claims)) = command {
            let frame = commands::run(&self.env, &self.config, &id, &claims, &command).await;
            send_str(&ws, &frame);
        }
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        glue::answer_close(&ws, code);
        if let Some(s) = load::<HubSession>(&ws) {
            telemetry::closed(Route::Hub, &s.conn.id, code);
        }
        self.forget(&ws).await;
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        if let Some(s) = load::<HubSession>(&ws) {
            telemetry::closed(Route::Hub, &s.conn.id, 1006);
        }
        self.forget(&ws).await;
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        if let Err(e) = self.store.save_cursors() {
            log_error!("cannot store cursors: {e}");
        }
        let swept = glue::sweep::<HubSession>(&self.state, &self.config);
        for ws in &swept.closed {
            self.forget(ws).await;
        }
        if let Some(t) = swept.next {
            glue::wake_by(&self.state.storage(), t).await;
        }
        Response::ok("")
    }
}

impl Hub {
    /// The open socket of a connection, and whether it takes batched frames.
    fn socket(&self, conn: &str) -> Option<(WebSocket, bool)> {
        let mut slot = self.sockets.borrow_mut();
        let map = slot.get_or_insert_with(|| {
            self.state
                .get_websockets()
                .into_iter()
                .filter_map(|ws| load::<HubSession>(&ws).map(|s| (s.conn.id, (ws, s.conn.batch))))
                .collect()
        });
        map.get(conn).cloned()
    }

    /// Forgets the socket and target caches after sockets changed.
    fn invalidate(&self) {
        self.sockets.replace(None);
        self.targets.borrow_mut().1.clear();
    }

    fn targets(&self, channel: &str) -> Rc<Vec<Target>> {
        let version = self.store.version();
        {
            let mut cache = self.targets.borrow_mut();
            if cache.0 != version {
                *cache = (version, HashMap::new());
            }
            if let Some(t) = cache.1.get(channel) {
                return Rc::clone(t);
            }
        }
        let list: Rc<Vec<Target>> = Rc::new(
            self.store
                .channel_subscribers(channel)
                .into_iter()
                .filter_map(|(conn, filters)| {
                    self.socket(&conn)
                        .map(|(ws, batch)| Target { ws, filters, batch })
                })
                .collect(),
        );
        self.targets
            .borrow_mut()
            .1
            .insert(channel.to_owned(), Rc::clone(&list));
        list
    }

    async fn accept(&self, req: Request) -> Result<Response> {
        let headers = req.headers();
        if let Some(name) = headers.get(HUB_HEADER)? {
            self.store.set_name(&name)?;
        }
        let claims: Option<Claims> = headers
            .get(CLAIMS_HEADER)?
            .and_then(|c| serde_json::from_str(&c).ok());
        let url = req.url()?;
        let batch = url.query_pairs().any(|(k, v)| k == "batch" && v == "1");
        let dialect = url.query_pairs().any(|(k, v)| k == "dialect" && v == "001");
        let pair = WebSocketPair::new()?;
        let ws = pair.server;
        self.state.accept_web_socket(&ws);
        let mut session = HubSession {
            conn: Conn::new(
                connection_id(&self.store.name().unwrap_or_else(|| "hub".into())),
                now_ms(),
                batch,
            ),
            dialect,
        };
        telemetry::opened(Route::Hub, &session.conn.id);
        self.invalidate();
        match claims {
            Some(claims) => self.authenticate(&ws, &mut session, &claims, true).await,
            None => await_auth(&self.state, &ws, &session, &self.config).await,
        }
        let mut answer = Response::from_websocket(pair.client)?;
        answer.headers_mut().set(
            HUB_SOCKETS_HEADER,
            &glue::socket_count(&self.state).to_string(),
        )?;
        Ok(answer)
    }

    async fn authenticate(
        &self,
        ws: &WebSocket,
        session: &mut HubSession,
        claims: &Claims,
        via_url: bool,
    ) {
        let first = !session.conn.is_authenticated();
        let status = self.store.status();
        if !accept_claims(ws, session, claims, via_url, &self.config, status.as_ref()) {
            return;
        }
        glue::wake_by(
            &self.state.storage(),
            session.conn.next_check_ms(None, &self.config),
        )
        .await;
        if first && session.dialect {
            // `001_…`'s broadcast: every allowed topic, without asking.
            self.start_dialect(ws, session);
            self.subscribe_topics(ws, session, &["all".to_owned()])
                .await;
        }
    }

    fn start_dialect(&self, ws: &WebSocket, session: &mut HubSession) {
        session.dialect = true;
        save(ws, session);
        let heartbeat_ms = u64::from(self.config.keepalive_s) * 1000;
        send_str(ws, &dialect::connection(&now_rfc3339(), heartbeat_ms));
    }

    /// Handles one message in the socket's turn; a command is handed back
    /// with the claims it runs under, to wait for its backend outside it.
    async fn on_message(
        &self,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Option<(Command, Claims)> {
        let Some(mut session) = load::<HubSession>(ws) else {
            glue::lost_state(ws).ok();
            return None;
        };
        let now = now_ms();
        let parsed = admit(ws, &mut session.conn, message, now, &self.config)?;
        // Saved before any await: a message handled meanwhile must see these counters.
        save(ws, &session);
        let ts = now_rfc3339();
        let needs_auth = matches!(
            parsed,
            Ok(ClientMessage::Subscribe { .. }
                | ClientMessage::Unsubscribe { .. }
                | ClientMessage::Topics { .. }
                | ClientMessage::Publish(_)
                | ClientMessage::Command { .. }
                | ClientMessage::Presence { .. })
        );
        if needs_auth && !session.conn.is_authenticated() {
            send_str(ws, &glue::not_authenticated().frame(ErrorFrame::Error, &ts));
            return None;
        }
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
            Ok(ClientMessage::Auth { token }) => match glue::verify(&self.env, &token, now).await {
                Ok(claims) => self.authenticate(ws, &mut session, &claims, false).await,
                Err(e) => refuse(ws, Refusal::BadToken(e)),
            },
            Ok(ClientMessage::Subscribe {
                channel,
                filters,
                since,
            }) => {
                if let Err(e) = self
                    .subscribe(ws, &session, &channel, filters.as_ref(), since)
                    .await
                {
                    send_str(ws, &e.frame(ErrorFrame::Error, &now_rfc3339()));
                }
            }
            Ok(ClientMessage::Unsubscribe { channel }) => {
                self.drop_subscription(SubKind::Channel, &session.conn.id, &channel)
                    .await;
                self.leave(&session, &channel).await;
                send_str(
                    ws,
                    &ServerMessage::Unsubscribed {
                        timestamp: &ts,
                        data: ChannelOnly { channel: &channel },
                    }
                    .to_json(),
                );
            }
            Ok(ClientMessage::Topics {
                subscribe: true,
                topics,
            }) => {
                if !session.dialect {
                    self.start_dialect(ws, &mut session);
                }
                self.subscribe_topics(ws, &session, &topics).await;
            }
            Ok(ClientMessage::Topics {
                subscribe: false,
                topics,
            }) => {
                let identity = session.conn.identity.as_ref()?;
                let (channels, _) = dialect::resolve(&topics, &identity.claims, &self.config);
                for channel in channels {
                    self.drop_subscription(SubKind::Topic, &session.conn.id, channel)
                        .await;
                }
            }
            Ok(ClientMessage::Publish(event)) => {
                let claims = &session.conn.identity.as_ref()?.claims;
                send_str(ws, &self.publish_sent(claims, &event).await);
            }
            Ok(ClientMessage::Presence { channel }) => {
                let claims = &session.conn.identity.as_ref()?.claims;
                send_str(ws, &self.presence_of(claims, &channel).await);
            }
            Ok(ClientMessage::Command { name, message, id }) => {
                let claims = session.conn.identity.as_ref()?.claims.clone();
                return Some((Command { name, message, id }, claims));
            }
        }
        None
    }

    /// A socket's `publish`: checked like an HTTP publish, then published
    /// through the channel's room; answers `published` or the error.
    async fn publish_sent(&self, claims: &Claims, event: &PublishEvent) -> String {
        let ts = now_rfc3339();
        let outcome = match publish::check_sent(claims, event, &self.config) {
            Ok(channel) => calls::publish(&self.env, channel.name(), &[event]).await,
            Err(e) => Err(e),
        };
        match outcome.as_deref() {
            Ok([result]) => publish::published_frame(result, event.id.as_deref(), &ts),
            Ok(_) => ApiError::internal("the channel answered a malformed result")
                .frame(ErrorFrame::Error, &ts),
            Err(e) => e.frame(ErrorFrame::Error, &ts),
        }
    }

    /// A socket's `presence`: the channel's members over every route.
    async fn presence_of(&self, claims: &Claims, channel: &str) -> String {
        let ts = now_rfc3339();
        let members = match presence::channel_for(claims, channel, &self.config) {
            Ok(channel) => calls::presence(&self.env, channel.name()).await,
            Err(e) => Err(e),
        };
        match members {
            Ok(members) => ServerMessage::Presence {
                timestamp: &ts,
                data: PresenceData {
                    channel,
                    members: &members,
                },
            }
            .to_json(),
            Err(e) => e.frame(ErrorFrame::Error, &ts),
        }
    }

    /// After a subscribe to a presence channel: records the member and has
    /// the room tell every other subscriber (a repeat subscribe is no join).
    async fn join(&self, session: &HubSession, channel: &Channel) {
        if !channel.has_presence(&self.config) {
            return;
        }
        let who = session.conn.who();
        match self.store.join(
            &who.connection_id,
            channel.name(),
            who.sub.as_deref(),
            now_ms(),
        ) {
            Ok(true) => {
                self.tell_room(channel.name(), PresenceChange::Join, who)
                    .await;
            }
            Ok(false) => {}
            Err(e) => log_error!("cannot record presence: {e}"),
        }
    }

    /// After an unsubscribe: the member leaves, if it was present.
    async fn leave(&self, session: &HubSession, channel: &str) {
        match self.store.leave(&session.conn.id, channel) {
            Ok(true) => {
                self.tell_room(channel, PresenceChange::Leave, session.conn.who())
                    .await;
            }
            Ok(false) => {}
            Err(e) => log_error!("cannot record presence: {e}"),
        }
    }

    /// Has the channel's room send a join or leave to every other subscriber.
    async fn tell_room(&self, channel: &str, change: PresenceChange, who: Who) {
        let body = to_json(&PresenceChangeRequest { change, who });
        if let Err(e) = self
            .room_text(RoomRoute::PresenceChange, channel, body)
            .await
        {
            log_error!("presence change of {channel} failed: {}", e.message);
        }
    }

    /// Room → hub: this hub's live members of a channel; rows of sockets
    /// that are gone (a restart, a lost close) are dropped.
    async fn members(&self, mut req: Request) -> Result<Response> {
        let Ok(body) = req.json::<MembersRequest>().await else {
            return error_response(&ApiError::internal("malformed members request"));
        };
        let rows = self.store.members(&body.channel).unwrap_or_default();
        let mut members = Vec::with_capacity(rows.len());
        for row in rows {
            if self.socket(&row.conn).is_some() {
                members.push(member_of(row));
            } else if let Err(e) = self.store.leave(&row.conn, &row.channel) {
                log_error!("cannot drop a stale member: {e}");
            }
        }
        glue::ok_json(&MembersResponse { members })
    }

    /// Room → hub: a presence frame for the channel's subscribers here.
    async fn presence_frame(&self, mut req: Request) -> Result<Response> {
        let Ok(body) = req.json::<PresenceFrameRequest>().await else {
            return error_response(&ApiError::internal("malformed presence frame"));
        };
        let frame = JsValue::from_str(&body.frame);
        let mut delivered = 0u64;
        for (conn, _) in self.store.channel_subscribers(&body.channel) {
            if conn == body.except {
                continue;
            }
            if let Some((ws, _)) = self.socket(&conn) {
                delivered += u64::from(send(&ws, &frame));
            }
        }
        glue::ok_json(&SystemResponse { delivered })
    }

    /// Worker → hub: stores a system status and sends it to every
    /// authenticated socket here.
    async fn announce(&self, mut req: Request) -> Result<Response> {
        let Ok(status) = req.json::<SystemStatus>().await else {
            return error_response(&ApiError::internal("malformed status"));
        };
        if let Err(e) = self.store.set_status(&status) {
            log_error!("cannot store the system status: {e}");
        }
        let delivered = glue::announce::<HubSession>(&self.state, &status);
        glue::ok_json(&SystemResponse { delivered })
    }

    /// Subscribes (or re-subscribes with new filters): attaches to the room
    /// with the channel's deliveries held, stores the subscription, then sends
    /// `subscribed` and the snapshot or replay. Live events follow in order.
    async fn subscribe(
        &self,
        ws: &WebSocket,
        session: &HubSession,
        channel: &str,
        filters: Option<&Value>,
        since: Option<u64>,
    ) -> ApiResult<()> {
        let identity = session
            .conn
            .identity
            .as_ref()
            .ok_or_else(glue::not_authenticated)?;
        let conn = session.conn.id.as_str();
        let (parsed, filters) = self.store.read_channels(|subs| {
            check_subscribe(identity, subs, conn, channel, filters, &self.config)
        })?;
        let channel = parsed.name();
        let held = self.hold(channel).await;
        // A repeat subscribe stops the old one first, so no event reaches the
        // socket both live and in the new state.
        self.store
            .unsubscribe(SubKind::Channel, conn, channel)
            .map_err(stored_failed)?;
        let state = match self.attach(channel, since, Registration::Plain).await {
            Ok(s) => s,
            Err(e) => {
                self.release(channel).await;
                return Err(e);
            }
        };
        if self.closed.borrow().contains(conn) {
            self.release(channel).await;
            return Ok(());
        }
        self.store
            .subscribe(SubKind::Channel, conn, channel, filters.clone())
            .map_err(stored_failed)?;
        for frame in subscription_frames(channel, &filters, &state, &now_rfc3339()) {
            send_str(ws, &frame);
        }
        drop(held);
        self.join(session, &parsed).await;
        Ok(())
    }

    /// A dialect `subscribe`: adds the topics, then answers one `SNAPSHOT` of
    /// every topic the socket has. The channels' deliveries are held until the
    /// `SNAPSHOT` is out, so no `UPDATE` can overtake it.
    async fn subscribe_topics(&self, ws: &WebSocket, session: &HubSession, topics: &[String]) {
        let Some(identity) = session.conn.identity.as_ref() else {
            return;
        };
        let conn = session.conn.id.as_str();
        let (requested, errors) = dialect::resolve(topics, &identity.claims, &self.config);
        let ts = now_rfc3339();
        for e in errors {
            send_str(ws, &e.frame(ErrorFrame::Error, &ts));
        }
        let mut channels: Vec<String> = self.store.topics_of(conn);
        for ch in requested {
            if !channels.iter().any(|c| c == ch) {
                channels.push(ch.to_owned());
            }
        }
        channels.sort_unstable();
        // Locks are taken in name order so two sockets never wait on each other.
        let mut held = Vec::with_capacity(channels.len());
        for ch in &channels {
            held.push(self.hold(ch).await);
        }
        let states = join_all(
            channels
                .iter()
                .map(|ch| self.attach(ch, None, Registration::Dialect)),
        )
        .await;
        let mut lists: Vec<(&str, String)> = Vec::new();
        for (ch, state) in channels.iter().zip(states) {
            let (Some(topic), Ok(state)) = (dialect::topic_of(ch), state) else {
                let err = ApiError::new(
                    ErrorCode::InternalError,
                    format!("topic channel '{ch}' could not be reached; subscribe again"),
                )
                .with("channel", ch.as_str());
                send_str(ws, &err.frame(ErrorFrame::Error, &ts));
                if let Err(e) = self.store.unsubscribe(SubKind::Topic, conn, ch) {
                    log_error!("cannot drop topic: {e}");
                }
                self.release(ch).await;
                continue;
            };
            if self.closed.borrow().contains(conn) {
                self.release(ch).await;
                continue;
            }
            if let Err(e) = self
                .store
                .subscribe(SubKind::Topic, conn, ch, Filters::default())
            {
                log_error!("cannot store topic: {e}");
            }
            lists.push((
                topic,
                dialect::list_from_bodies(state.events.iter().map(|e| e.body.as_str())),
            ));
        }
        send_str(ws, &dialect::snapshot(&ts, &lists));
        drop(held);
    }

    /// Removes one subscription and unregisters from the room when nothing
    /// here needs the channel any more.
    async fn drop_subscription(&self, kind: SubKind, conn: &str, channel: &str) {
        let _held = self.hold(channel).await;
        if let Err(e) = self.store.unsubscribe(kind, conn, channel) {
            log_error!("cannot delete subscription: {e}");
        }
        self.release(channel).await;
    }

    /// A socket closed: its subscriptions go, and rooms left without a
    /// subscriber here are told.
    async fn forget(&self, ws: &WebSocket) {
        self.invalidate();
        let Some(session) = load::<HubSession>(ws) else {
            return;
        };
        let conn = session.conn.id;
        if self.turns.is_busy(&conn) {
            self.closed.borrow_mut().insert(conn.clone());
        }
        let channels = match self.store.remove_conn(&conn) {
            Ok(c) => c,
            Err(e) => {
                log_error!("cannot delete subscriptions: {e}");
                return;
            }
        };
        for channel in channels {
            let _held = self.hold(&channel).await;
            self.release(&channel).await;
        }
        match self.store.leave_all(&conn) {
            Ok(rows) => {
                for row in rows {
                    let who = Who {
                        sub: row.sub,
                        connection_id: conn.clone(),
                    };
                    self.tell_room(&row.channel, PresenceChange::Leave, who)
                        .await;
                }
            }
            Err(e) => log_error!("cannot drop presence: {e}"),
        }
    }

    /// Takes the channel's lock and sends what its batch clients still have
    /// queued, so nothing queued goes out after a subscription change.
    async fn hold(&self, channel: &str) -> crate::locks::KeyGuard<'_> {
        let guard = self.channels.lock(channel).await;
        self.flush(channel);
        guard
    }

    /// Sends what is queued for `channel`'s batch clients.
    fn flush(&self, channel: &str) {
        let flush = self
            .outboxes
            .borrow_mut()
            .get_mut(channel)
            .and_then(Outbox::take);
        send_flush(flush);
    }

    /// With the channel's lock held: detaches from the room when no socket
    /// here subscribes to `channel` any more.
    async fn release(&self, channel: &str) {
        if self.store.wants(channel) {
            return;
        }
        self.attaches.borrow_mut().forget(channel);
        if let Err(e) = self.store.clear_applied(channel) {
            log_error!("cannot clear cursor of {channel}: {e}");
        }
        let Some(hub) = self.store.name() else { return };
        if let Err(e) = self
            .room_text(RoomRoute::Detach, channel, to_json(&DetachRequest { hub }))
            .await
        {
            log_error!("detach from {channel} failed: {}", e.message);
        }
    }

    /// A typed call to a channel's room; any failure is `INTERNAL_ERROR`.
    async fn room_call<T: serde::de::DeserializeOwned>(
        &self,
        route: RoomRoute,
        channel: &str,
        body: String,
    ) -> ApiResult<T> {
        let text = self.room_text(route, channel, body).await?;
        serde_json::from_str(&text).map_err(|_| ApiError::internal("malformed room answer"))
    }

    /// A call to a channel's room answering its body.
    async fn room_text(&self, route: RoomRoute, channel: &str, body: String) -> ApiResult<String> {
        let unreachable = |e: worker::Error| {
            log_error!("room call {} for {channel} failed: {e}", route.path());
            ApiError::new(
                ErrorCode::InternalError,
                format!("channel '{channel}' could not be reached; try again"),
            )
            .with("channel", channel)
        };
        let req =
            glue::internal_request(&route.url(), Some(channel), Some(body)).map_err(unreachable)?;
        let stub = self
            .env
            .durable_object(ROOM_BINDING)
            .and_then(|ns| ns.get_by_name(channel))
            .map_err(unreachable)?;
        let resp = stub.fetch_with_request(req).await.map_err(unreachable)?;
        let (status, text) = glue::read_text(resp).await.map_err(unreachable)?;
        if status != 200 {
            log_error!("room call {} for {channel} answered {status}", route.path());
            return Err(ApiError::new(
                ErrorCode::InternalError,
                format!("channel '{channel}' could not serve the subscription; try again"),
            )
            .with("channel", channel));
        }
        Ok(text)
    }

    /// With the channel's lock held: registers with the room and gets a new
    /// subscriber's starting state. When this hub already receives the
    /// channel, the answer also carries what it has not applied yet; that goes
    /// to the existing subscribers first, so the cursor stands at the head the
    /// new subscriber starts from. A fresh subscriber reuses the last answer
    /// while it holds (`core::attach_memo`), without a room call.
    async fn attach(
        &self,
        channel: &str,
        since: Option<u64>,
        registration: Registration,
    ) -> ApiResult<AttachResponse> {
        let hub = self
            .store
            .name()
            .ok_or_else(|| ApiError::internal("hub has no name"))?;
        let applied = self.store.applied(channel);
        if since.is_none() {
            let memo = self.attaches.borrow();
            if let Some(state) = memo.reuse(channel, applied, registration, now_ms()) {
                telemetry::attached("reused");
                return Ok(state);
            }
        }
        let request = AttachRequest {
            hub,
            since,
            registration,
            applied,
        };
        let state: AttachResponse = self
            .room_call(RoomRoute::Attach, channel, to_json(&request))
            .await?;
        telemetry::attached("called");
        if let Some(after) = applied.filter(|a| *a < state.head) {
            let (got, lost) = gap::repaired(&state.catch_up, after, state.head);
            if lost > 0 {
                log_error!("{lost} events of {channel} left history before hub caught up");
            }
            let list = (registration == Registration::Dialect && since.is_none())
                .then(|| dialect::list_from_bodies(state.events.iter().map(|e| e.body.as_str())));
            self.apply(channel, got, list.as_deref());
            self.flush(channel);
        }
        self.store
            .set_applied(channel, state.head)
            .map_err(stored_failed)?;
        if since.is_none() {
            self.attaches
                .borrow_mut()
                .remember(channel, &state, registration, now_ms());
        }
        Ok(state)
    }

    /// Events from a room, applied through the channel's cursor: a gap is
    /// filled from the room's history first, and events applied before are
    /// skipped. Answers 503 when a gap cannot be filled now; the room repeats.
    async fn deliver(&self, mut req: Request) -> Result<Response> {
        let malformed = || error_response(&ApiError::internal("malformed delivery"));
        let Some(named) = req.headers().get(CHANNEL_HEADER).ok().flatten() else {
            return malformed();
        };
        // Locked before the body is read: a room's rounds reach this hub in
        // the order it sent them, and are applied in that order without a
        // repair (a later round taking the lock first would look like a gap).
        let held = self.channels.lock(&named).await;
        let batch = match req.json::<DeliverRequest>().await {
            Ok(b) if b.channel == named => b,
            _ => return malformed(),
        };
        let channel = batch.channel.as_str();
        let mut delivered = vec![0u64; batch.events.len()];
        let Some(mut applied) = self.store.applied(channel) else {
            self.attaches.borrow_mut().forget(channel);
            return glue::ok_json(&DeliverResponse {
                delivered,
                registered: self.store.wants(channel),
            });
        };
        loop {
            match gap::plan(applied, &batch.events, batch.head) {
                Step::Repair { after, through } => {
                    let Ok(replay) = self.replay(channel, after, through).await else {
                        return error_response(&ApiError::new(
                            ErrorCode::Overloaded,
                            "gap repair failed; deliver again",
                        ));
                    };
                    let (got, lost) = gap::repaired(&replay.events, after, through);
                    if lost > 0 {
                        log_error!("{lost} events of {channel} left history before hub caught up");
                    }
                    self.apply(channel, got, replay.list.as_deref());
                    applied = through;
                }
                Step::Apply(events) => {
                    let offset = batch.events.len() - events.len();
                    let counts = self.apply(channel, events, batch.list.as_deref());
                    for (slot, n) in delivered[offset..].iter_mut().zip(counts) {
                        *slot = n;
                    }
                    if let Some(last) = events.last() {
                        applied = last.seq;
                    }
                    break;
                }
            }
        }
        let save = self.store.advance(channel, applied);
        let registered = self.store.wants(channel);
        if !registered {
            // The room drops this hub on this answer; the next subscriber
            // must register again.
            self.attaches.borrow_mut().forget(channel);
        }
        drop(held);
        if save == SaveDue::Schedule {
            glue::wake_by(&self.state.storage(), now_ms() + LAZY_SAVE_MS).await;
        }
        // Deliveries that arrive meanwhile join this one's batch frames.
        let due = self
            .outboxes
            .borrow_mut()
            .get_mut(channel)
            .is_some_and(Outbox::schedule);
        if due {
            glue::yield_once().await;
            self.flush(channel);
        }
        glue::ok_json(&DeliverResponse {
            delivered,
            registered,
        })
    }

    /// Fetches the retained events of a gap from the room.
    async fn replay(&self, channel: &str, after: u64, through: u64) -> ApiResult<ReplayResponse> {
        let dialect = !self.store.topic_subscribers(channel).is_empty();
        let body = to_json(&ReplayRequest {
            after,
            through,
            dialect,
        });
        self.room_call(RoomRoute::Replay, channel, body).await
    }

    /// Sends events (in `seq` order, past the cursor) to this hub's
    /// subscribers: each once per matching socket, and for dialect sockets
    /// `ALERT`s and one `UPDATE` with the list. Returns sockets reached per event.
    fn apply(&self, channel: &str, events: &[Delivered], list: Option<&str>) -> Vec<u64> {
        if events.is_empty() {
            return Vec::new();
        }
        let merged: Vec<Value> = events
            .iter()
            .map(|e| serde_json::from_str(&e.merged).unwrap_or(Value::Null))
            .collect();
        let outgoing: Vec<Outgoing<'_>> = events
            .iter()
            .zip(&merged)
            .map(|(e, merged)| Outgoing {
                kind: &e.kind,
                merged,
                body: &e.body,
            })
            .collect();
        let targets = self.targets(channel);
        let (batched, earlier) = self
            .outboxes
            .borrow_mut()
            .entry(channel.to_owned())
            .or_default()
            .enqueue(&targets, &outgoing);
        send_flush(earlier);
        let plain = fan_out(&targets, &outgoing);
        let mut delivered: Vec<u64> = plain.iter().zip(&batched).map(|(p, b)| p + b).collect();
        let topic_targets = self.store.topic_subscribers(channel);
        let Some(topic) = dialect::topic_of(channel).filter(|_| !topic_targets.is_empty()) else {
            return delivered;
        };
        let ts = now_rfc3339();
        let mut frames: Vec<JsValue> = events
            .iter()
            .filter(|e| dialect::is_alert(&e.kind))
            .map(|e| {
                JsValue::from_str(&dialect::topic_frame(
                    TopicFrame::Alert,
                    topic,
                    &dialect::data_of(&e.body),
                    &ts,
                ))
            })
            .collect();
        if let Some(list) = list {
            frames.push(JsValue::from_str(&dialect::topic_frame(
                TopicFrame::Update,
                topic,
                list,
                &ts,
            )));
        }
        let reached = topic_targets
            .iter()
            .filter_map(|conn| self.socket(conn))
            .filter(|(ws, _)| frames.iter().all(|f| send(ws, f)))
            .count() as u64;
        for d in &mut delivered {
            *d += reached;
        }
        delivered
    }

    fn stats_json(&self) -> String {
        to_json(&HubStats {
            connections: self.state.get_websockets().len() as u64,
            channels: self
                .store
                .counts()
                .into_iter()
                .map(|(c, n)| (c, n as u64))
                .collect(),
            counters: telemetry::counters(),
        })
    }
}

/// A subscription that could not be written.
fn stored_failed(e: worker::Error) -> ApiError {
    storage_failed(
        ErrorCode::InternalError,
        "the subscription could not be stored",
    )(e)
}

/// A member as the presence answer lists it.
fn member_of(row: MemberRow) -> Member {
    Member {
        sub: row.sub,
        connection_id: row.conn,
        joined_at: rfc3339_ms(row.joined_ms),
    }
}
