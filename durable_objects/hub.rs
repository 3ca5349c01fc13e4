//! The Hub Durable Object: one of N shards holding multiplexed `/ws` sockets
//! (hibernation API). It registers with a ChannelRoom while it has subscribers
//! for that channel, receives each event once from the room, and applies every
//! socket's filters locally.

use std::cell::RefCell;
use std::collections::HashMap;

use futures::lock::Mutex;
use serde::Deserialize;
use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::{
    durable_object, DurableObject, Env, Headers, Method, Request, RequestInit, Response, Result,
    SqlStorage, SqlStorageValue, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::core::auth::{self, Claims};
use crate::core::config::Config;
use crate::core::error::{to_json, ApiError, CloseCode, ErrorCode, ErrorFrame};
use crate::core::filter::Filters;
use crate::core::protocol::{
    ChannelOnly, ClientMessage, Empty, ServerMessage, MAX_FRAME_BYTES, PING_REQUEST, PING_RESPONSE,
};
use crate::core::session::{Conn, HubSession};
use crate::core::subscriptions::{
    check_subscribe, subscription_frames, AttachRequest, AttachResponse, DeliverRequest,
    DeliverResponse, Delivered, Subscriptions,
};
use crate::core::time::rfc3339_ms;
use crate::glue::{
    self, auth_success, connection_id, enforce_deadline, error_response, load, now_ms, now_rfc3339,
    rate_limit_info, rate_limited, rearm, refuse, save, send, send_str, storage_failed, too_large,
    wake_by,
};
use crate::router::{CHANNEL_HEADER, CLAIMS_HEADER, HUB_HEADER, ROOM_BINDING};

type ApiResult<T> = std::result::Result<T, ApiError>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS subs (conn TEXT NOT NULL, channel TEXT NOT NULL, filters TEXT NOT NULL,
  PRIMARY KEY (conn, channel));
";

#[durable_object]
pub struct Hub {
    state: State,
    env: Env,
    config: Config,
    sql: SqlStorage,
    /// Subscriptions of this hub's sockets; loaded from storage after a wake.
    subs: RefCell<Option<Subscriptions>>,
    /// Open sockets by connection id; rebuilt from the attachments after a change.
    sockets: RefCell<Option<HashMap<String, WebSocket>>>,
    /// Events that arrive for a subscription while its room is still answering
    /// the attach, so none falls between the snapshot and live delivery.
    pending: RefCell<HashMap<(String, String), Vec<Delivered>>>,
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
            subs: RefCell::new(None),
            sockets: RefCell::new(None),
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
        let now = now_ms();
        let next = self
            .state
            .get_websockets()
            .iter()
            .filter_map(|ws| {
                let session: HubSession = load(ws)?;
                enforce_deadline(&self.state, ws, &session.conn, now, &self.config)
            })
            .min();
        rearm(&self.state.storage(), next).await?;
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

    fn with_subs<T>(&self, f: impl FnOnce(&mut Subscriptions) -> T) -> T {
        let mut slot = self.subs.borrow_mut();
        let subs = slot.get_or_insert_with(|| self.load_subs());
        f(subs)
    }

    fn load_subs(&self) -> Subscriptions {
        #[derive(Deserialize)]
        struct Row {
            conn: String,
            channel: String,
            filters: String,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT conn, channel, filters FROM subs", None)
            .and_then(|c| c.to_array())
            .unwrap_or_default();
        let mut subs = Subscriptions::default();
        for r in rows {
            subs.insert(
                &r.conn,
                &r.channel,
                serde_json::from_str(&r.filters).unwrap_or_default(),
            );
        }
        subs
    }

    fn socket(&self, conn: &str) -> Option<WebSocket> {
        let mut slot = self.sockets.borrow_mut();
        let map = slot.get_or_insert_with(|| {
            self.state
                .get_websockets()
                .into_iter()
                .filter_map(|ws| load::<HubSession>(&ws).map(|s| (s.conn.id, ws)))
                .collect()
        });
        map.get(conn).cloned()
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
        let pair = WebSocketPair::new()?;
        let ws = pair.server;
        self.state.accept_web_socket(&ws);
        let mut session = HubSession {
            conn: Conn::new(connection_id(), now_ms(), batch),
            dialect: false,
        };
        self.sockets.replace(None);
        match claims {
            Some(claims) => self.authenticate(&ws, &mut session, &claims, true).await,
            None => {
                send_str(&ws, &rate_limit_info(&self.config));
                save(&ws, &session);
                wake_by(
                    &self.state.storage(),
                    session.conn.next_check_ms(&self.config),
                )
                .await;
            }
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
        if !claims.scopes.subscribe {
            let err = ApiError::new(ErrorCode::Forbidden, "the token lacks scope 'subscribe'");
            return refuse(ws, &err, ErrorFrame::Error, CloseCode::Forbidden);
        }
        session.conn.authenticate(claims, &self.config);
        if !save(ws, session) {
            let err = ApiError::new(
                ErrorCode::AuthFailed,
                "the token's claims are too large for a connection",
            );
            return refuse(ws, &err, ErrorFrame::AuthFailed, CloseCode::AuthFailed);
        }
        send_str(ws, &auth_success(claims, &session.conn.id));
        if via_url {
            send_str(ws, &rate_limit_info(&self.config));
        }
        wake_by(
            &self.state.storage(),
            session.conn.next_check_ms(&self.config),
        )
        .await;
    }

    async fn on_message(&self, ws: &WebSocket, message: WebSocketIncomingMessage) {
        let Some(mut session) = load::<HubSession>(ws) else {
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
        session.conn.last_seen_ms = now;
        if session.conn.limiter.hit(now, &self.config).is_err() {
            return refuse(
                ws,
                &rate_limited(&self.config),
                ErrorFrame::Error,
                CloseCode::RateLimited,
            );
        }
        // Saved before any await: a message handled meanwhile must see these counters.
        save(ws, &session);
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
            }) => {
                if let Err(e) = self
                    .subscribe(ws, &session, &channel, filters.as_ref(), since)
                    .await
                {
                    send_str(ws, &e.frame(ErrorFrame::Error, &rfc3339_ms(now_ms())));
                }
            }
            Ok(ClientMessage::Unsubscribe { channel }) => {
                self.unsubscribe(&session.conn.id, &channel).await;
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
        let (parsed, filters) = self.with_subs(|subs| {
            check_subscribe(identity, subs, conn, channel, filters, &self.config)
        })?;
        let key = (conn.to_owned(), parsed.name().to_owned());
        // A repeat subscribe stops live delivery until its new state is sent, so
        // no event reaches the socket twice.
        self.with_subs(|subs| subs.remove(conn, parsed.name()));
        self.pending.borrow_mut().insert(key.clone(), Vec::new());
        let attached = self.attach(parsed.name(), since).await;
        let buffered = self.pending.borrow_mut().remove(&key).unwrap_or_default();
        let state = match attached {
            Ok(s) => s,
            Err(e) => {
                self.drop_subscription(conn, parsed.name()).await;
                return Err(e);
            }
        };
        for frame in subscription_frames(parsed.name(), &filters, &state, &now_rfc3339()) {
            send_str(ws, &frame);
        }
        for ev in buffered
            .iter()
            .filter(|e| e.seq > state.head && e.passes(&filters))
        {
            send_str(ws, &ev.body);
        }
        let filters_json = to_json(&filters);
        self.with_subs(|subs| subs.insert(conn, parsed.name(), filters));
        let write = storage_failed(
            ErrorCode::SubscriptionFailed,
            "the subscription could not be stored",
        );
        self.sql
            .exec(
                "INSERT OR REPLACE INTO subs (conn, channel, filters) VALUES (?, ?, ?)",
                vec![text(conn), text(parsed.name()), text(&filters_json)],
            )
            .map_err(write)?;
        Ok(())
    }

    async fn unsubscribe(&self, conn: &str, channel: &str) {
        if self.with_subs(|subs| subs.contains(conn, channel)) {
            self.drop_subscription(conn, channel).await;
        }
    }

    /// Removes one subscription and unregisters from the room when it was the
    /// hub's last for that channel.
    async fn drop_subscription(&self, conn: &str, channel: &str) {
        self.with_subs(|subs| subs.remove(conn, channel));
        if let Err(e) = self.sql.exec(
            "DELETE FROM subs WHERE conn = ? AND channel = ?",
            vec![text(conn), text(channel)],
        ) {
            worker::console_error!("cannot delete subscription: {e}");
        }
        let attaching = self.pending.borrow().keys().any(|(_, ch)| ch == channel);
        if !attaching && self.with_subs(|subs| subs.subscribers(channel).is_empty()) {
            self.detach(channel).await;
        }
    }

    /// A socket closed: its subscriptions go, and rooms left without a
    /// subscriber here are told.
    async fn forget(&self, ws: &WebSocket) {
        self.sockets.replace(None);
        let Some(session) = load::<HubSession>(ws) else {
            return;
        };
        let conn = session.conn.id;
        let emptied = self.with_subs(|subs| subs.remove_conn(&conn));
        if let Err(e) = self
            .sql
            .exec("DELETE FROM subs WHERE conn = ?", vec![text(&conn)])
        {
            worker::console_error!("cannot delete subscriptions: {e}");
        }
        for channel in emptied {
            self.detach(&channel).await;
        }
    }

    async fn room_call(&self, path: &str, channel: &str, since: Option<u64>) -> ApiResult<String> {
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
        let headers = Headers::new();
        headers.set(CHANNEL_HEADER, channel).map_err(unreachable)?;
        headers
            .set("content-type", "application/json")
            .map_err(unreachable)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(JsValue::from_str(&to_json(&AttachRequest {
                hub,
                since,
            }))));
        let req =
            Request::new_with_init(&format!("https://room{path}"), &init).map_err(unreachable)?;
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

    async fn attach(&self, channel: &str, since: Option<u64>) -> ApiResult<AttachResponse> {
        let body = self.room_call("/attach", channel, since).await?;
        serde_json::from_str(&body).map_err(|_| ApiError::internal("malformed attach answer"))
    }

    async fn detach(&self, channel: &str) {
        if let Err(e) = self.room_call("/detach", channel, None).await {
            worker::console_error!("detach from {channel} failed: {e}");
        }
    }

    /// Events from a room: each is sent once per matching socket, and buffered
    /// for subscriptions whose attach is still in flight.
    async fn deliver(&self, mut req: Request) -> Result<Response> {
        let batch: DeliverRequest = match req.json().await {
            Ok(b) => b,
            Err(_) => return error_response(&ApiError::internal("malformed delivery")),
        };
        let mut delivered = Vec::with_capacity(batch.events.len());
        let targets: Vec<(String, Filters)> =
            self.with_subs(|subs| subs.subscribers(&batch.channel).to_vec());
        for ev in &batch.events {
            let merged: Value = serde_json::from_str(&ev.merged).unwrap_or(Value::Null);
            let frame = JsValue::from_str(&ev.body);
            let mut n = 0;
            for (conn, filters) in &targets {
                if filters.matches(&ev.kind, &merged)
                    && self.socket(conn).is_some_and(|ws| send(&ws, &frame))
                {
                    n += 1;
                }
            }
            delivered.push(n);
        }
        let mut pending = self.pending.borrow_mut();
        let mut waiting = false;
        for ((_, channel), buffer) in pending.iter_mut() {
            if *channel == batch.channel {
                buffer.extend(batch.events.iter().cloned());
                waiting = true;
            }
        }
        drop(pending);
        let registered = waiting || !targets.is_empty();
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
        let channels =
            self.with_subs(|subs| subs.counts().map(|(c, n)| (c.to_owned(), n)).collect());
        to_json(&Body {
            connections: self.state.get_websockets().len(),
            channels,
        })
    }
}
