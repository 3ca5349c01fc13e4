//! The stateless Worker: parses the URL, checks the token, validates publishes,
//! and forwards to the channel's Durable Object.

use crate::telemetry::{self, log_error};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use futures::future::join_all;
use worker::{event, Context, Env, Headers, Method, Request, RequestInit, Response, Result};

use crate::calls::{self, room};
use crate::core::auth::Claims;
use crate::core::channel::Channel;
use crate::core::config::Config;
use crate::core::error::{to_json, ApiError, ErrorCode};
use crate::core::internal::{
    hub_name, DirectoryRoute, HubRoute, HubStats, RoomRoute, RoomStats, RoomsResponse,
    SystemResponse, CHANNEL_HEADER, CLAIMS_HEADER, HUB_BINDING, HUB_HEADER, HUB_SOCKETS_HEADER,
};
use crate::core::metrics::{self, ChannelCounts, Counters, Gauges};
use crate::core::placement::Placement;
use crate::core::protocol::{parse_publish, PublishEvent, PublishResult, MAX_FRAME_BYTES};
use crate::core::publish;
use crate::core::refusal::Refusal;
use crate::core::status::SystemStatus;
use crate::glue::{self, error_response, json_response, now_ms, refuse_upgrade};
/// Room name used by `/healthz`; never a valid channel name.
const HEALTH_ROOM: &str = "__healthz";

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let result = route(req, &env).await;
    match result {
        Ok(resp) => Ok(resp),
        Err(err) => {
            log_error!("request failed: {err}");
            error_response(&ApiError::internal(
                "the gateway could not complete the request",
            ))
        }
    }
}

/// What a path names, before the method is checked.
enum Route<'a> {
    Health,
    Publish,
    Stats,
    HubWs,
    ChannelWs(&'a str),
    Snapshot(&'a str),
    History(&'a str),
    Presence(&'a str),
    SystemStatus,
    Metrics,
    NotFound,
}

fn parse_path(path: &str) -> Route<'_> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] => Route::Health,
        ["v1", "publish"] => Route::Publish,
        ["v1", "stats"] => Route::Stats,
        ["ws"] => Route::HubWs,
        ["ws", channel] if !channel.is_empty() => Route::ChannelWs(channel),
        ["v1", "channels", channel, "snapshot"] => Route::Snapshot(channel),
        ["v1", "channels", channel, "history"] => Route::History(channel),
        ["v1", "channels", channel, "presence"] => Route::Presence(channel),
        ["v1", "system", "status"] => Route::SystemStatus,
        ["metrics"] => Route::Metrics,
        _ => Route::NotFound,
    }
}

fn method_not_allowed(allow: &str) -> Result<Response> {
    let err = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("this path only answers {allow}"),
    );
    let resp = error_response(&err)?;
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set("allow", allow)?;
    Ok(resp.with_headers(headers))
}

/// Percent-decodes a path segment (channel names may carry `:` and `@`).
fn decode_segment(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn route(req: Request, env: &Env) -> Result<Response> {
    let url = req.url()?;
    let method = req.method();
    match parse_path(url.path()) {
        Route::Health => match method {
            Method::Get | Method::Head => health(env).await,
            _ => method_not_allowed("GET"),
        },
        Route::Publish => match method {
            Method::Post => publish(req, env).await,
            _ => method_not_allowed("POST"),
        },
        Route::Stats => match method {
            Method::Get => stats(req, env).await,
            _ => method_not_allowed("GET"),
        },
        Route::HubWs => match method {
            Method::Get => hub_socket(req, env).await,
            _ => method_not_allowed("GET"),
        },
        Route::ChannelWs(raw) => match method {
            Method::Get => channel_socket(req, env, raw).await,
            _ => method_not_allowed("GET"),
        },
        Route::Snapshot(raw) => match method {
            Method::Get => channel_read(req, env, raw, RoomRoute::Snapshot).await,
            _ => method_not_allowed("GET"),
        },
        Route::History(raw) => match method {
            Method::Get => channel_read(req, env, raw, RoomRoute::History).await,
            _ => method_not_allowed("GET"),
        },
        Route::Presence(raw) => match method {
            Method::Get => channel_read(req, env, raw, RoomRoute::Presence).await,
            _ => method_not_allowed("GET"),
        },
        Route::Metrics => match method {
            Method::Get => metrics(req, env).await,
            _ => method_not_allowed("GET"),
        },
        Route::SystemStatus => match method {
            Method::Get => current_status(req, env).await,
            Method::Post => set_status(req, env).await,
            _ => method_not_allowed("GET, POST"),
        },
        Route::NotFound => error_response(
            &ApiError::new(ErrorCode::NotFound, format!("no route for {}", url.path()))
                .with("path", url.path()),
        ),
    }
}

async fn health(env: &Env) -> Result<Response> {
    let resp = room(env, HEALTH_ROOM)?
        .fetch_with_str(&RoomRoute::Health.url())
        .await;
    match resp {
        Ok(r) if r.status_code() == 200 => json_response(r#"{"status":"ok"}"#.into(), 200),
        _ => error_response(&ApiError::new(
            ErrorCode::Overloaded,
            "the Durable Objects cannot be reached",
        )),
    }
}

/// Verifies `Authorization: Bearer` for the HTTP API.
async fn bearer(req: &Request, env: &Env) -> std::result::Result<Claims, ApiError> {
    let header = req.headers().get("authorization").ok().flatten();
    let token = header
        .as_deref()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::AuthFailed,
                "missing 'Authorization: Bearer <token>'",
            )
        })?;
    glue::verify(env, token, now_ms()).await
}

fn channel_from_path(raw: &str, config: &Config) -> std::result::Result<Channel, ApiError> {
    let name = decode_segment(raw).ok_or_else(|| ApiError::channel_not_found(raw))?;
    Channel::parse(&name, config)
}

fn is_upgrade(req: &Request) -> bool {
    req.headers()
        .get("upgrade")
        .ok()
        .flatten()
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
}

fn upgrade_required() -> Result<Response> {
    error_response(&ApiError::new(
        ErrorCode::UpgradeRequired,
        "this path takes a WebSocket upgrade",
    ))
}

/// Builds the request forwarded to a Durable Object for an upgrade: the
/// original query, `headers`, and the claims of a `?token=` verified here.
/// `Err` is the in-band refusal to answer instead. Every refusal a `?token=`
/// can earn at connect time is made here: a socket the Worker refuses is over
/// at once, while one a Durable Object accepts with the hibernation API and
/// closes before answering the upgrade outlives its close frame until the
/// object hibernates.
async fn forward_upgrade(
    req: &Request,
    env: &Env,
    headers: Headers,
    channel: Option<&Channel>,
) -> Result<std::result::Result<Request, Response>> {
    let mut url = req.url()?;
    headers.set("upgrade", "websocket")?;
    if let Some((_, token)) = url.query_pairs().find(|(k, _)| k == "token") {
        let claims = match glue::verify(env, &token, now_ms()).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(refuse_upgrade(Refusal::BadToken(e))?)),
        };
        if let Some(refusal) = Refusal::of_claims(&claims, channel) {
            return Ok(Err(refuse_upgrade(refusal)?));
        }
        headers.set(CLAIMS_HEADER, &to_json(&claims))?;
    }
    url.set_path("/ws");
    let mut init = RequestInit::new();
    init.with_headers(headers);
    Ok(Ok(Request::new_with_init(url.as_str(), &init)?))
}

async fn channel_socket(req: Request, env: &Env, raw: &str) -> Result<Response> {
    if !is_upgrade(&req) {
        return upgrade_required();
    }
    let config = glue::config(env);
    let channel = match channel_from_path(raw, &config) {
        Ok(c) => c,
        Err(e) => return refuse_upgrade(Refusal::ChannelNotFound(e)),
    };
    let headers = Headers::new();
    headers.set(CHANNEL_HEADER, channel.name())?;
    match forward_upgrade(&req, env, headers, Some(&channel)).await? {
        Ok(forwarded) => {
            room(env, channel.name())?
                .fetch_with_request(forwarded)
                .await
        }
        Err(refusal) => Ok(refusal),
    }
}

/// `GET /ws`: a multiplexed socket, held by the hub shard `core::placement`
/// picks (shards fill in order, so a small deployment's channels reach one hub).
async fn hub_socket(req: Request, env: &Env) -> Result<Response> {
    if !is_upgrade(&req) {
        return upgrade_required();
    }
    let config = glue::config(env);
    let headers = Headers::new();
    let forwarded = match forward_upgrade(&req, env, headers, None).await? {
        Ok(forwarded) => forwarded,
        Err(refusal) => return Ok(refusal),
    };
    let mut placed = Placed::new(config);
    let name = hub_name(placed.shard);
    forwarded.headers().set(HUB_HEADER, &name)?;
    let answer = env
        .durable_object(HUB_BINDING)?
        .get_by_name(&name)?
        .fetch_with_request(forwarded)
        .await?;
    placed.sockets = answer
        .headers()
        .get(HUB_SOCKETS_HEADER)?
        .and_then(|n| n.parse().ok());
    Ok(answer)
}

/// A socket placed on a hub shard. Dropped, it tells the placement what the
/// hub answered: its socket count, or nothing when the upgrade failed or was
/// abandoned, so no upgrade stays pending.
struct Placed {
    config: Rc<Config>,
    shard: u32,
    sockets: Option<u32>,
}

impl Placed {
    fn new(config: Rc<Config>) -> Self {
        let shard = with_placement(&config, |p| p.pick(now_ms(), js_sys::Math::random()));
        Placed {
            config,
            shard,
            sockets: None,
        }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        with_placement(&self.config, |p| {
            p.answered(self.shard, self.sockets, now_ms())
        });
    }
}

/// This isolate's view of the hub shards (`core::placement`), made on first
/// use from the isolate's settings, which never change while it lives.
fn with_placement<T>(config: &Config, f: impl FnOnce(&mut Placement) -> T) -> T {
    thread_local! {
        static PLACEMENT: RefCell<Option<Placement>> = const { RefCell::new(None) };
    }
    PLACEMENT.with(|cell| {
        let mut slot = cell.borrow_mut();
        f(slot.get_or_insert_with(|| Placement::new(config.hub_shards, config.hub_fill)))
    })
}

/// What `/v1/stats` and `/metrics` report, gathered from every hub and from
/// the rooms of the known channels, of every channel a hub has subscribers
/// for and of every room registered with the directory.
struct Gathered {
    hub_connections: u64,
    direct_connections: u64,
    channels: BTreeMap<String, ChannelCounts>,
    /// The counters of every object's isolate (one isolate may appear more
    /// than once).
    counters: Vec<Counters>,
}

async fn gather(env: &Env) -> Result<Gathered> {
    let config = glue::config(env);
    let hubs = env.durable_object(HUB_BINDING)?;
    let hub_calls = (0..config.hub_shards).map(|i| {
        let stub = hubs.get_by_name(&hub_name(i));
        async move {
            let mut resp = stub?.fetch_with_str(&HubRoute::Stats.url()).await?;
            resp.json::<HubStats>().await
        }
    });
    let mut gathered = Gathered {
        hub_connections: 0,
        direct_connections: 0,
        channels: BTreeMap::new(),
        counters: vec![telemetry::counters()],
    };
    let mut hub_subs: BTreeMap<String, u64> = crate::core::channel::Known::ALL
        .iter()
        .map(|k| (k.name().to_owned(), 0))
        .collect();
    for answer in join_all(hub_calls).await {
        let h = answer?;
        gathered.hub_connections += h.connections;
        gathered.counters.push(h.counters);
        for (channel, n) in h.channels {
            *hub_subs.entry(channel).or_default() += n;
        }
    }
    // Rooms holding direct sockets, namespaced ones included.
    match calls::to_directory::<RoomsResponse>(env, DirectoryRoute::Rooms, None).await {
        Ok(r) => {
            for room in r.rooms {
                hub_subs.entry(room).or_default();
            }
        }
        Err(e) => log_error!("stats without the directory: {}", e.message),
    }
    let room_calls = hub_subs.iter().map(|(channel, n)| async move {
        let req = glue::internal_request(&RoomRoute::Stats.url(), Some(channel), None)?;
        let resp = room(env, channel)?.fetch_with_request(req).await?;
        let r: RoomStats = glue::read_json(resp).await?;
        Ok::<_, worker::Error>((channel.clone(), *n, r))
    });
    for answer in join_all(room_calls).await {
        let (channel, hub_subscribers, r) = answer?;
        gathered.direct_connections += r.direct;
        gathered.channels.insert(
            channel,
            ChannelCounts {
                subscribers: hub_subscribers + r.direct,
                seq: r.seq,
                delivered: r.delivered,
            },
        );
        gathered.counters.push(r.counters);
    }
    Ok(gathered)
}

/// `GET /v1/stats`: connections and subscribers per channel.
async fn stats(req: Request, env: &Env) -> Result<Response> {
    let config = glue::config(env);
    if let Err(e) = bearer(&req, env).await {
        return error_response(&e);
    }
    #[derive(serde::Serialize)]
    struct Stats {
        connections: u64,
        hubs: u32,
        channels: BTreeMap<String, ChannelCounts>,
    }
    let g = gather(env).await?;
    glue::ok_json(&Stats {
        connections: g.hub_connections + g.direct_connections,
        hubs: config.hub_shards,
        channels: g.channels,
    })
}

/// `GET /metrics`: Prometheus text, for a token of scope `admin`, or for
/// anyone when `METRICS_PUBLIC` is set.
async fn metrics(req: Request, env: &Env) -> Result<Response> {
    if !glue::config(env).metrics_public {
        match bearer(&req, env).await {
            Ok(c) if c.scopes.admin => {}
            Ok(_) => {
                return error_response(&ApiError::new(
                    ErrorCode::Forbidden,
                    "metrics need a token with scope 'admin' (or METRICS_PUBLIC)",
                ))
            }
            Err(e) => return error_response(&e),
        }
    }
    let g = gather(env).await?;
    let mut gauges = Gauges::default();
    gauges.connections.insert("hub", g.hub_connections);
    gauges.connections.insert("direct", g.direct_connections);
    gauges.channels = g.channels;
    let text = metrics::render(&gauges, &metrics::sum_isolates(&g.counters));
    let headers = Headers::new();
    headers.set("content-type", "text/plain; version=0.0.4; charset=utf-8")?;
    Ok(Response::ok(text)?.with_headers(headers))
}

/// `GET /v1/channels/{channel}/snapshot|history|presence`: any scope, within the
/// token's `channels` claim; a history query is validated here.
async fn channel_read(req: Request, env: &Env, raw: &str, what: RoomRoute) -> Result<Response> {
    let config = glue::config(env);
    let claims = match bearer(&req, env).await {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let channel = match channel_from_path(raw, &config) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    if !claims.allows(&channel, false) {
        return error_response(&ApiError::forbidden_channel(channel.name()));
    }
    if what == RoomRoute::Presence {
        if let Err(e) = crate::core::presence::channel_for(&claims, channel.name(), &config) {
            return error_response(&e);
        }
    }
    let mut target = what.url();
    if what == RoomRoute::History {
        match glue::history_query(&req.url()?) {
            Ok(q) => target = format!("{target}?since={}&limit={}", q.since, q.limit),
            Err(e) => return error_response(&e),
        }
    }
    let req = glue::internal_request(&target, Some(channel.name()), None)?;
    room(env, channel.name())?.fetch_with_request(req).await
}

async fn publish(mut req: Request, env: &Env) -> Result<Response> {
    let config = glue::config(env);
    let claims = match bearer(&req, env).await {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    if !claims.scopes.publish {
        return error_response(&publish::needs_publish_scope());
    }
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_FRAME_BYTES) {
        return error_response(&ApiError::new(
            ErrorCode::MessageTooLarge,
            "publish body is over 1 MiB",
        ));
    }
    let body = match req.text().await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ApiError::new(
                ErrorCode::InvalidMessage,
                "the body must be UTF-8 JSON",
            ))
        }
    };
    let events = match parse_publish(&body, &config) {
        Ok(e) => e,
        Err(e) => return error_response(&e),
    };
    for (i, ev) in events.iter().enumerate() {
        // parse_publish validated every name; Channel::parse cannot fail here.
        let Ok(channel) = Channel::parse(&ev.channel, &config) else {
            continue;
        };
        if let Err(mut err) = publish::authorize(&claims, &channel) {
            if events.len() > 1 {
                err = err.with("index", i);
            }
            return error_response(&err);
        }
    }

    // One room call per channel, in parallel; order within a channel is kept.
    let mut groups: BTreeMap<&str, Vec<(usize, &PublishEvent)>> = BTreeMap::new();
    for (i, ev) in events.iter().enumerate() {
        groups.entry(ev.channel.as_str()).or_default().push((i, ev));
    }
    let calls = groups.iter().map(|(channel, items)| async move {
        let batch: Vec<&PublishEvent> = items.iter().map(|(_, e)| *e).collect();
        (items, calls::publish(env, channel, &batch).await)
    });
    let mut results: Vec<Option<PublishResult>> = vec![None; events.len()];
    for (items, outcome) in join_all(calls).await {
        match outcome {
            Ok(list) if list.len() == items.len() => {
                for ((i, _), r) in items.iter().zip(list) {
                    results[*i] = Some(r);
                }
            }
            Ok(_) => {
                return error_response(&ApiError::internal("a channel answered a malformed result"))
            }
            Err(err) => return error_response(&err),
        }
    }
    #[derive(serde::Serialize)]
    struct Answer {
        results: Vec<PublishResult>,
    }
    glue::ok_json(&Answer {
        results: results.into_iter().flatten().collect(),
    })
}

/// `GET /v1/system/status`: the current status, for any token.
async fn current_status(req: Request, env: &Env) -> Result<Response> {
    if let Err(e) = bearer(&req, env).await {
        return error_response(&e);
    }
    match calls::to_directory::<SystemStatus>(env, DirectoryRoute::Status, None).await {
        Ok(status) => json_response(status.current_json(), 200),
        Err(e) => error_response(&e),
    }
}

/// `POST /v1/system/status` (scope `admin`): stores the status, then
/// announces it to every socket on every hub and every room holding sockets.
async fn set_status(mut req: Request, env: &Env) -> Result<Response> {
    let claims = match bearer(&req, env).await {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    if !claims.scopes.admin {
        return error_response(&ApiError::new(
            ErrorCode::Forbidden,
            "setting the system status needs a token with scope 'admin'",
        ));
    }
    let body = req.text().await.unwrap_or_default();
    let status = match SystemStatus::parse(&body, now_ms() / 1000) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let stored = to_json(&status);
    let rooms = match calls::to_directory::<RoomsResponse>(
        env,
        DirectoryRoute::SetStatus,
        Some(stored.clone()),
    )
    .await
    {
        Ok(r) => r.rooms,
        Err(e) => return error_response(&e),
    };
    let config = glue::config(env);
    let hubs = env.durable_object(HUB_BINDING)?;
    let hub_calls = (0..config.hub_shards).map(|i| {
        let stub = hubs.get_by_name(&hub_name(i));
        let body = stored.clone();
        async move {
            let req = glue::internal_request(&HubRoute::System.url(), None, Some(body))?;
            let resp = stub?.fetch_with_request(req).await?;
            glue::read_json::<SystemResponse>(resp).await
        }
    });
    let room_calls = rooms.iter().map(|name| {
        let body = stored.clone();
        async move {
            let req = glue::internal_request(&RoomRoute::System.url(), Some(name), Some(body))?;
            let resp = room(env, name)?.fetch_with_request(req).await?;
            glue::read_json::<SystemResponse>(resp).await
        }
    });
    let (hub_answers, room_answers) = futures::join!(join_all(hub_calls), join_all(room_calls));
    let mut delivered = 0;
    for answer in hub_answers.into_iter().chain(room_answers) {
        match answer {
            Ok(a) => delivered += a.delivered,
            Err(e) => log_error!("system status announcement failed: {e}"),
        }
    }
    #[derive(serde::Serialize)]
    struct Answer {
        status: crate::core::status::Level,
        delivered: u64,
    }
    glue::ok_json(&Answer {
        status: status.status,
        delivered,
    })
}
