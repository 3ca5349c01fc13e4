//! The Hub Durable Object: one of N shards holding multiplexed `/ws` sockets
//! (hibernation API). It registers with a ChannelRoom while it has subscribers
//! for that channel, receives each event once from the room, and applies every
//! socket's filters locally. `001_…` dialect sockets subscribe to topics, which
//! are channels seen as whole lists.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use futures::future::join_all;
use futures::lock::Mutex;
use serde::Deserialize;
use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, SqlStorageValue,
    State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::core::auth::{self, Claims};
use crate::core::config::Config;
use crate::core::dialect::{self, TopicFrame};
use crate::core::error::{to_json, ApiError, CloseCode, ErrorCode, ErrorFrame};
use crate::core::filter::Filters;
use crate::core::protocol::{
    ChannelOnly, ClientMessage, Empty, ServerMessage, PING_REQUEST, PING_RESPONSE,
};
use crate::core::session::{Conn, HubSession};
use crate::core::subscriptions::{
    check_subscribe, subscription_frames, AttachRequest, AttachResponse, DeliverRequest,
    DeliverResponse, Delivered, Subscriptions,
};
use crate::glue::{
    self, accept_claims, admit, await_auth, connection_id, error_response, fan_out, load, now_ms,
    now_rfc3339, refuse, save, send, send_str, storage_failed, sweep, wake_by, Outgoing, Target,
};
use crate::router::{CLAIMS_HEADER, HUB_HEADER, ROOM_BINDING};

type ApiResult<T> = std::result::Result<T, ApiError>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS subs (conn TEXT NOT NULL, channel TEXT NOT NULL, filters TEXT NOT NULL,
  PRIMARY KEY (conn, channel));
CREATE TABLE IF NOT EXISTS topics (conn TEXT NOT NULL, channel TEXT NOT NULL, PRIMARY KEY (conn, channel));
";

/// Channel subscriptions and dialect topic subscriptions of this hub's sockets.
#[derive(Default)]
struct Index {
    channels: Subscriptions,
    topics: Subscriptions,
}

impl Index {
    fn wanted(&self, channel: &str) -> bool {
        !self.channels.subscribers(channel).is_empty()
            || !self.topics.subscribers(channel).is_empty()
    }
}

/// What a subscription in the middle of its attach has missed so far.
#[derive(Default)]
struct Pending {
    events: Vec<Delivered>,
    /// The newest topic list seen, with the `seq` it is current at.
    list: Option<(u64, String)>,
}

/// Which subscription an attach is for: connection, channel, and whether it
/// is a dialect topic.
type PendingKey = (String, String, bool);

#[durable_object]
pub struct Hub {
    state: State,
    env: Env,
    config: Config,
    sql: SqlStorage,
    /// Loaded from storage after a wake.
    index: RefCell<Option<Index>>,
    /// Open sockets by connection id; rebuilt from the attachments after a change.
    sockets: RefCell<Option<HashMap<String, (WebSocket, bool)>>>,
    /// Receiving sockets per channel, rebuilt after any change, so the
    /// delivery path neither looks up nor clones a socket per event.
    targets: RefCell<HashMap<String, Rc<Vec<Target>>>>,
    /// Events arriving for subscriptions whose room is still answering the
    /// attach, so none falls between the snapshot and live delivery.
    pending: RefCell<HashMap<PendingKey, Pending>>,
    /// Handles one client message at a time, so a socket's messages are
    /// answered in the order they came even across the awaits of an attach.
    turn: Mutex<()>,
}

fn text(v: &str) -> SqlStorageValue {
    SqlStorageValue::String(v.to_owned())
}

impl DurableObject for Hub {
    fn new(state: State, env: Env) -> Self {
        if let Ok(pair) =
            worker::worker_sys::WebSocketRequestResponsePair::new(PING_REQUEST, PING_RESPONSE)
        {
            state.set_websocket_auto_response(&pair);
        }
        let sql = state.storage().sql();
        if let Err(e) = sql.exec(SCHEMA, None) {
            worker::console_error!("cannot open hub storage: {e}");
        }
        let config = glue::config(&env);
        Hub {
            state,
            env,
            config,
            sql,
            index: RefCell::new(None),
            sockets: RefCell::new(None),
            targets: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            turn: Mutex::new(()),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match req.path().as_str() {
            "/ws" => self.accept(req).await,
            "/deliver" => self.deliver(req).await,
            "/stats" => glue::json_response(self.stats_json(), 200),
            _ => error_response(&ApiError::new(ErrorCode::NotFound, "unknown hub path")),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let _turn = self.turn.lock().await;
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
        let _ = ws.close(
            Some(CloseCode::Normal.code()),
            Some(CloseCode::Normal.reason()),
        );
        self.forget(&ws).await;
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        self.forget(&ws).await;
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        sweep::<HubSession>(&self.state, &self.config).await?;
        Response::ok("")
    }
}

impl Hub {
    /// This hub's name, as the Worker addressed it (kept for after a wake).
    fn name(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Row {
            v: String,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT v FROM meta WHERE k = 'name'", None)
            .and_then(|c| c.to_array())
            .ok()?;
        rows.into_iter().next().map(|r| r.v)
    }

    fn with_index<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        let mut slot = self.index.borrow_mut();
        let index = slot.get_or_insert_with(|| self.load_index());
        f(index)
    }

    fn load_index(&self) -> Index {
        #[derive(Deserialize)]
        struct Row {
            conn: String,
            channel: String,
            #[serde(default)]
            filters: Option<String>,
        }
        let rows = |q: &str| -> Vec<Row> {
            self.sql
                .exec(q, None)
                .and_then(|c| c.to_array())
                .unwrap_or_default()
        };
        let mut index = Index::default();
        for r in rows("SELECT conn, channel, filters FROM subs") {
            let filters = r
                .filters
                .and_then(|f| serde_json::from_str(&f).ok())
                .unwrap_or_default();
            index.channels.insert(&r.conn, &r.channel, filters);
        }
        for r in rows("SELECT conn, channel FROM topics") {
            index.topics.insert(&r.conn, &r.channel, Filters::default());
        }
        index
    }

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

    /// Forgets the socket and target caches after sockets or subscriptions changed.
    fn invalidate(&self) {
        self.sockets.replace(None);
        self.targets.borrow_mut().clear();
    }

    fn targets(&self, channel: &str) -> Rc<Vec<Target>> {
        if let Some(t) = self.targets.borrow().get(channel) {
            return Rc::clone(t);
        }
        let subscribers: Vec<(String, Filters)> =
            self.with_index(|i| i.channels.subscribers(channel).to_vec());
        let list: Rc<Vec<Target>> = Rc::new(
            subscribers
                .into_iter()
                .filter_map(|(conn, filters)| {
                    self.socket(&conn)
                        .map(|(ws, batch)| Target { ws, filters, batch })
                })
                .collect(),
        );
        self.targets
            .borrow_mut()
            .insert(channel.to_owned(), Rc::clone(&list));
        list
    }

    /// Whether anything here still needs `channel`'s events.
    fn wants(&self, channel: &str) -> bool {
        self.pending.borrow().keys().any(|(_, ch, _)| ch == channel)
            || self.with_index(|i| i.wanted(channel))
    }

    async fn accept(&self, req: Request) -> Result<Response> {
        let headers = req.headers();
        if let Some(name) = headers.get(HUB_HEADER)? {
            self.sql.exec(
                "INSERT OR REPLACE INTO meta (k, v) VALUES ('name', ?)",
                vec![text(&name)],
            )?;
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
            conn: Conn::new(connection_id(), now_ms(), batch),
            dialect,
        };
        self.invalidate();
        match claims {
            Some(claims) => self.authenticate(&ws, &mut session, &claims, true).await,
            None => await_auth(&self.state, &ws, &session, &self.config).await,
        }
        Response::from_websocket(pair.client)
    }

    async fn authenticate(
        &self,
        ws: &WebSocket,
        session: &mut HubSession,
        claims: &Claims,
        via_url: bool,
    ) {
        let first = !session.conn.is_authenticated();
        if !accept_claims(ws, session, claims, via_url, &self.config) {
            return;
        }
        wake_by(
            &self.state.storage(),
            session.conn.next_check_ms(&self.config),
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
        let heartbeat_ms = u64::from(self.config.heartbeat_timeout_s) * 1000 / 3;
        send_str(ws, &dialect::connection(&now_rfc3339(), heartbeat_ms));
    }

    async fn on_message(&self, ws: &WebSocket, message: WebSocketIncomingMessage) {
        let Some(mut session) = load::<HubSession>(ws) else {
            let _ = ws.close(Some(1011), Some("lost connection state"));
            return;
        };
        let now = now_ms();
        let Some(parsed) = admit(ws, &mut session.conn, message, now, &self.config) else {
            return;
        };
        // Saved before any await: a message handled meanwhile must see these counters.
        save(ws, &session);
        let ts = now_rfc3339();
        let needs_auth = matches!(
            parsed,
            Ok(ClientMessage::Subscribe { .. }
                | ClientMessage::Unsubscribe { .. }
                | ClientMessage::Topics { .. })
        );
        if needs_auth && !session.conn.is_authenticated() {
            let err = ApiError::new(
                ErrorCode::AuthFailed,
                "authenticate first: send {\"type\":\"auth\",\"token\":…}",
            );
            send_str(ws, &err.frame(ErrorFrame::Error, &ts));
            return;
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
            Ok(ClientMessage::Auth { token }) => {
                match auth::verify(
                    &token,
                    &glue::jwt_secret(&self.env),
                    now / 1000,
                    i64::from(self.config.jwt_leeway_s),
                ) {
                    Ok(claims) => self.authenticate(ws, &mut session, &claims, false).await,
                    Err(e) => refuse(ws, &e, ErrorFrame::AuthFailed, CloseCode::AuthFailed),
                }
            }
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
                self.drop_subscription(&session.conn.id, &channel, false)
                    .await;
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
                let Some(identity) = &session.conn.identity else {
                    return;
                };
                let (channels, _) = dialect::resolve(&topics, &identity.claims, &self.config);
                for channel in channels {
                    self.drop_subscription(&session.conn.id, channel, true)
                        .await;
                }
            }
        }
    }

    /// Subscribes (or re-subscribes with new filters): registers with the room,
    /// sends `subscribed` and the snapshot or replay, then what arrived meanwhile.
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
            .ok_or_else(|| ApiError::new(ErrorCode::AuthFailed, "not authenticated"))?;
        let conn = session.conn.id.as_str();
        let (parsed, filters) = self.with_index(|i| {
            check_subscribe(identity, &i.channels, conn, channel, filters, &self.config)
        })?;
        let channel = parsed.name();
        let key = (conn.to_owned(), channel.to_owned(), false);
        // A repeat subscribe stops live delivery until its new state is sent,
        // so no event reaches the socket twice.
        self.with_index(|i| i.channels.remove(conn, channel));
        self.invalidate();
        self.pending
            .borrow_mut()
            .insert(key.clone(), Pending::default());
        let attached = self.attach(channel, since, false).await;
        let missed = self.pending.borrow_mut().remove(&key).unwrap_or_default();
        let state = match attached {
            Ok(s) => s,
            Err(e) => {
                self.drop_subscription(conn, channel, false).await;
                return Err(e);
            }
        };
        for frame in subscription_frames(channel, &filters, &state, &now_rfc3339()) {
            send_str(ws, &frame);
        }
        for ev in missed
            .events
            .iter()
            .filter(|e| e.seq > state.head && e.passes(&filters))
        {
            send_str(ws, &ev.body);
        }
        let filters_json = to_json(&filters);
        self.with_index(|i| i.channels.insert(conn, channel, filters));
        self.invalidate();
        self.sql
            .exec(
                "INSERT OR REPLACE INTO subs (conn, channel, filters) VALUES (?, ?, ?)",
                vec![text(conn), text(channel), text(&filters_json)],
            )
            .map_err(storage_failed(
                ErrorCode::SubscriptionFailed,
                "the subscription could not be stored",
            ))?;
        Ok(())
    }

    /// A dialect `subscribe`: adds the topics, then answers one `SNAPSHOT` of
    /// every topic the socket has, followed by what changed meanwhile.
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
        let mut channels: Vec<String> = self.with_index(|i| i.topics.channels_of(conn).to_vec());
        for ch in requested {
            if !channels.iter().any(|c| c == ch) {
                channels.push(ch.to_owned());
            }
        }
        // Live delivery pauses while the lists are fetched; what arrives
        // meanwhile is buffered and sent after the SNAPSHOT.
        for ch in &channels {
            self.with_index(|i| i.topics.remove(conn, ch));
            self.pending
                .borrow_mut()
                .insert((conn.to_owned(), ch.clone(), true), Pending::default());
        }
        let states = join_all(channels.iter().map(|ch| self.attach(ch, None, true))).await;
        let mut lists: Vec<(&str, String)> = Vec::new();
        let mut follow_ups: Vec<String> = Vec::new();
        for (ch, state) in channels.iter().zip(states) {
            let missed = self
                .pending
                .borrow_mut()
                .remove(&(conn.to_owned(), ch.clone(), true))
                .unwrap_or_default();
            let (Some(topic), Ok(state)) = (dialect::topic_of(ch), state) else {
                send_str(
                    ws,
                    &ApiError::new(
                        ErrorCode::SubscriptionFailed,
                        format!("channel '{ch}' could not be reached"),
                    )
                    .frame(ErrorFrame::Error, &ts),
                );
                self.drop_subscription(conn, ch, true).await;
                continue;
            };
            lists.push((
                topic,
                dialect::list_from_bodies(state.events.iter().map(|e| e.body.as_str())),
            ));
            for ev in missed
                .events
                .iter()
                .filter(|e| e.seq > state.head && dialect::is_alert(&e.kind))
            {
                follow_ups.push(dialect::topic_frame(
                    TopicFrame::Alert,
                    topic,
                    &dialect::data_of(&ev.body),
                    &ts,
                ));
            }
            if let Some((_, list)) = missed.list.filter(|(seq, _)| *seq > state.head) {
                follow_ups.push(dialect::topic_frame(TopicFrame::Update, topic, &list, &ts));
            }
            self.with_index(|i| i.topics.insert(conn, ch, Filters::default()));
            if let Err(e) = self.sql.exec(
                "INSERT OR IGNORE INTO topics (conn, channel) VALUES (?, ?)",
                vec![text(conn), text(ch)],
            ) {
                worker::console_error!("cannot store topic: {e}");
            }
        }
        send_str(ws, &dialect::snapshot(&ts, &lists));
        for frame in follow_ups {
            send_str(ws, &frame);
        }
    }

    /// Removes one subscription (a channel, or a dialect topic) and
    /// unregisters from the room when nothing here needs it any more.
    async fn drop_subscription(&self, conn: &str, channel: &str, topic: bool) {
        self.invalidate();
        self.with_index(|i| {
            if topic {
                i.topics.remove(conn, channel)
            } else {
                i.channels.remove(conn, channel)
            }
        });
        let q = if topic {
            "DELETE FROM topics WHERE conn = ? AND channel = ?"
        } else {
            "DELETE FROM subs WHERE conn = ? AND channel = ?"
        };
        if let Err(e) = self.sql.exec(q, vec![text(conn), text(channel)]) {
            worker::console_error!("cannot delete subscription: {e}");
        }
        if !self.wants(channel) {
            self.detach(channel).await;
        }
    }

    /// A socket closed: its subscriptions go, and rooms left without a
    /// subscriber here are told.
    async fn forget(&self, ws: &WebSocket) {
        self.invalidate();
        let Some(session) = load::<HubSession>(ws) else {
            return;
        };
        let conn = session.conn.id;
        let mut emptied = self.with_index(|i| {
            let mut e = i.channels.remove_conn(&conn);
            e.extend(i.topics.remove_conn(&conn));
            e
        });
        emptied.sort_unstable();
        emptied.dedup();
        for q in [
            "DELETE FROM subs WHERE conn = ?",
            "DELETE FROM topics WHERE conn = ?",
        ] {
            if let Err(e) = self.sql.exec(q, vec![text(&conn)]) {
                worker::console_error!("cannot delete subscriptions: {e}");
            }
        }
        for channel in emptied {
            if !self.wants(&channel) {
                self.detach(&channel).await;
            }
        }
    }

    async fn room_call(
        &self,
        path: &str,
        channel: &str,
        since: Option<u64>,
        dialect: bool,
    ) -> ApiResult<String> {
        let unreachable = |e: worker::Error| {
            worker::console_error!("room call {path} for {channel} failed: {e}");
            ApiError::new(
                ErrorCode::SubscriptionFailed,
                format!("channel '{channel}' could not be reached; try again"),
            )
        };
        let hub = self
            .name()
            .ok_or_else(|| ApiError::internal("hub has no name"))?;
        let body = to_json(&AttachRequest {
            hub,
            since,
            dialect,
        });
        let req = glue::internal_request(&format!("https://room{path}"), Some(channel), Some(body))
            .map_err(unreachable)?;
        let stub = self
            .env
            .durable_object(ROOM_BINDING)
            .and_then(|ns| ns.get_by_name(channel))
            .map_err(unreachable)?;
        let mut resp = stub.fetch_with_request(req).await.map_err(unreachable)?;
        let body = resp.text().await.map_err(unreachable)?;
        if resp.status_code() != 200 {
            return Err(ApiError::new(
                ErrorCode::SubscriptionFailed,
                format!("channel '{channel}' refused the subscription"),
            ));
        }
        Ok(body)
    }

    async fn attach(
        &self,
        channel: &str,
        since: Option<u64>,
        dialect: bool,
    ) -> ApiResult<AttachResponse> {
        let body = self.room_call("/attach", channel, since, dialect).await?;
        serde_json::from_str(&body).map_err(|_| ApiError::internal("malformed attach answer"))
    }

    async fn detach(&self, channel: &str) {
        if let Err(e) = self.room_call("/detach", channel, None, false).await {
            worker::console_error!("detach from {channel} failed: {e}");
        }
    }

    /// Events from a room: each is sent once per matching socket; dialect
    /// sockets get `ALERT`s and one `UPDATE` with the list; subscriptions whose
    /// attach is in flight buffer them.
    async fn deliver(&self, mut req: Request) -> Result<Response> {
        let batch: DeliverRequest = match req.json().await {
            Ok(b) => b,
            Err(_) => return error_response(&ApiError::internal("malformed delivery")),
        };
        let topic_targets: Vec<String> = self.with_index(|i| {
            i.topics
                .subscribers(&batch.channel)
                .iter()
                .map(|(c, _)| c.clone())
                .collect()
        });
        let merged: Vec<Value> = batch
            .events
            .iter()
            .map(|e| serde_json::from_str(&e.merged).unwrap_or(Value::Null))
            .collect();
        let outgoing: Vec<Outgoing<'_>> = batch
            .events
            .iter()
            .zip(&merged)
            .map(|(e, merged)| Outgoing {
                kind: &e.kind,
                merged,
                body: &e.body,
            })
            .collect();
        let mut delivered = fan_out(&self.targets(&batch.channel), &outgoing, &now_rfc3339());
        if let Some(topic) = dialect::topic_of(&batch.channel).filter(|_| !topic_targets.is_empty())
        {
            let ts = now_rfc3339();
            let mut frames: Vec<JsValue> = batch
                .events
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
            if let Some(list) = &batch.list {
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
        }
        let last_seq = batch.events.last().map_or(0, |e| e.seq);
        for ((_, channel, _), missed) in self.pending.borrow_mut().iter_mut() {
            if *channel == batch.channel {
                missed.events.extend(batch.events.iter().cloned());
                if let Some(list) = &batch.list {
                    missed.list = Some((last_seq, list.clone()));
                }
            }
        }
        let registered = self.wants(&batch.channel);
        glue::ok_json(&DeliverResponse {
            delivered,
            registered,
        })
    }

    fn stats_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Body {
            connections: usize,
            channels: HashMap<String, usize>,
        }
        let channels = self.with_index(|i| {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for (c, n) in i.channels.counts().chain(i.topics.counts()) {
                *counts.entry(c.to_owned()).or_default() += n;
            }
            counts
        });
        to_json(&Body {
            connections: self.state.get_websockets().len(),
            channels,
        })
    }
}
