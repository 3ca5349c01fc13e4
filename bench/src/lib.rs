//! The load generator: opens N subscriber sockets, publishes M events at a rate
//! (or flat out) over `POST /v1/publish`, and reports connect time, deliveries
//! per second, end-to-end latency (the send time rides in each event), loss and
//! duplicates counted per socket against acknowledged publishes, and CPU / RSS
//! of the server processes and of itself. Every phase is bounded in time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// How subscribers connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Route {
    /// `/ws` then `{"type":"subscribe","channel":…}` (gateway hubs, the Node baseline).
    Multiplexed,
    /// `/ws/{channel}` (gateway rooms, the JavaScript Durable Object baseline).
    Direct,
}

/// One run's settings.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub route: Route,
    pub channel: String,
    pub sockets: usize,
    pub events: u64,
    /// Events per second offered; 0 means as fast as possible.
    pub rate: u64,
    /// Events per publish request (`{"events":[…]}` when > 1).
    pub publish_batch: usize,
    /// Clients ask for batched frames (`?batch=1`).
    pub client_batch: bool,
    /// Subscriber token, appended as `?token=`.
    pub token: String,
    /// Publisher token, sent as `Authorization: Bearer`.
    pub publish_token: String,
    /// Processes whose CPU and RSS are reported (workerd, node).
    pub server_pids: Vec<u32>,
    /// Upper bound on each phase.
    pub phase_timeout: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sockets: usize,
    pub connected: usize,
    pub connect_s: f64,
    pub published: u64,
    pub acknowledged: u64,
    pub publish_errors: u64,
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    /// Deliveries per frame that carried any (1 for plain clients; how much
    /// `?batch=1` gathered).
    pub events_per_frame: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub server_cpu_pct: f64,
    pub server_rss_mib: f64,
    pub server_rss_mib_per_1000: f64,
    pub loadgen_cpu_pct: f64,
    pub wall_s: f64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// CPU ticks (user + system) of a process, from `/proc/PID/stat`.
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(after) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Clock ticks per second for `/proc` CPU times (100 on Linux).
const TICKS: f64 = 100.0;

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    events: HashSet<u64>,
    duplicates: u64,
}

struct Shared {
    latency: Mutex<Histogram<u64>>,
    deliveries: AtomicU64,
    /// Frames that carried at least one new event of the run's channel.
    frames: AtomicU64,
}

fn ws_url(cfg: &RunConfig) -> String {
    let base = cfg.base.replacen("http", "ws", 1);
    let mut url = match cfg.route {
        Route::Multiplexed => format!("{base}/ws?token={}", cfg.token),
        Route::Direct => format!("{base}/ws/{}?token={}", cfg.channel, cfg.token),
    };
    if cfg.client_batch {
        url.push_str("&batch=1");
    }
    url
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects one subscriber and waits for its `subscribed`.
async fn connect(cfg: &RunConfig) -> Result<Socket, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(cfg))
        .await
        .map_err(|e| e.to_string())?;
    if cfg.route == Route::Multiplexed {
        let sub = json!({"type": "subscribe", "channel": cfg.channel}).to_string();
        ws.send(Message::text(sub))
            .await
            .map_err(|e| e.to_string())?;
    }
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg.map_err(|e| e.to_string())? {
            if serde_json::from_str::<Value>(&t).is_ok_and(|v| v["type"] == "subscribed") {
                return Ok(ws);
            }
        }
    }
    Err("closed before subscribed".into())
}

/// Records the channel events of one frame (plain or `batch`).
fn record(text: &str, channel: &str, seen: &mut Seen, shared: &Shared) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let events: Vec<&Value> = match v["type"].as_str() {
        Some("batch") => v["events"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => vec![&v],
    };
    let now = now_us();
    let mut fresh = false;
    for e in events {
        if e["channel"] != channel {
            continue;
        }
        let (Some(n), Some(sent)) = (e["data"]["n"].as_u64(), e["data"]["t"].as_u64()) else {
            continue;
        };
        if !seen.events.insert(n) {
            seen.duplicates += 1;
            continue;
        }
        fresh = true;
        shared.deliveries.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut h) = shared.latency.lock() {
            let _ = h.record(now.saturating_sub(sent).max(1));
        }
    }
    if fresh {
        shared.frames.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs one benchmark and returns what it measured.
pub async fn run(cfg: RunConfig) -> Result<Report, String> {
    let started = Instant::now();
    let own_cpu0 = cpu_ticks("self");
    let cfg = Arc::new(cfg);
    let shared = Arc::new(Shared {
        latency: Mutex::new(
            Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?,
        ),
        deliveries: AtomicU64::new(0),
        frames: AtomicU64::new(0),
    });

    // Phase 1: connect, 64 handshakes in flight at a time. Each subscriber
    // reads (and pings, like a real client, with an exact ping answered by the
    // runtime) from the moment it is subscribed, so a long connect phase never
    // leaves early sockets silent past the server's heartbeat timeout.
    let gate = Arc::new(Semaphore::new(64));
    let connect_start = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let readers: Vec<_> = (0..cfg.sockets)
        .map(|_| {
            let (cfg, gate, shared) = (Arc::clone(&cfg), Arc::clone(&gate), Arc::clone(&shared));
            let (ready, mut stop) = (ready_tx.clone(), stop_rx.clone());
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let connected = match gate.acquire().await {
                    Ok(_permit) => tokio::time::timeout(cfg.phase_timeout, connect(&cfg)).await.ok().and_then(Result::ok),
                    Err(_) => None,
                };
                let _ = ready.send(connected.is_some());
                drop(ready);
                let Some(mut ws) = connected else { return seen };
                let mut ping = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = ping.tick() => {
                            if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
                                break;
                            }
                        }
                        msg = ws.next() => match msg {
                            Some(Ok(Message::Text(t))) => record(&t, &cfg.channel, &mut seen, &shared),
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                    }
                }
                seen
            })
        })
        .collect();
    drop(ready_tx);
    let mut connected = 0;
    let connect_deadline = tokio::time::Instant::now() + cfg.phase_timeout + Duration::from_secs(5);
    for _ in 0..cfg.sockets {
        match tokio::time::timeout_at(connect_deadline, ready_rx.recv()).await {
            Ok(Some(ok)) => connected += usize::from(ok),
            _ => break,
        }
    }
    let connect_s = connect_start.elapsed().as_secs_f64();

    let server_cpu0: u64 = cfg
        .server_pids
        .iter()
        .map(|p| cpu_ticks(&p.to_string()))
        .sum();
    let publish_start = Instant::now();

    // Phase 2: publish, at most 16 requests in flight.
    let client = reqwest::Client::new();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let inflight = Arc::new(Semaphore::new(16));
    let batch = cfg.publish_batch.max(1) as u64;
    let mut handles = Vec::new();
    let mut n = 0;
    while n < cfg.events && publish_start.elapsed() < cfg.phase_timeout {
        if cfg.rate > 0 {
            let due = publish_start + Duration::from_secs_f64(n as f64 / cfg.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let ids: Vec<u64> = (n..(n + batch).min(cfg.events)).collect();
        n += ids.len() as u64;
        let permit = Arc::clone(&inflight)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (client, cfg, acked, errors) = (
            client.clone(),
            Arc::clone(&cfg),
            Arc::clone(&acked),
            Arc::clone(&errors),
        );
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            let t = now_us();
            let events: Vec<Value> = ids
                .iter()
                .map(|i| json!({"channel": cfg.channel, "type": "tick", "id": format!("b{i}"), "data": {"n": i, "t": t}}))
                .collect();
            let body = if events.len() == 1 { events[0].clone() } else { json!({ "events": events }) };
            let sent = client
                .post(format!("{}/v1/publish", cfg.base))
                .bearer_auth(&cfg.publish_token)
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    if let Ok(mut a) = acked.lock() {
                        a.extend(ids);
                    }
                }
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let acked: HashSet<u64> = acked.lock().map(|a| a.clone()).unwrap_or_default();

    // Phase 3: drain until every socket has every acknowledged event, or timeout.
    let want = acked.len() as u64 * connected as u64;
    let drain_deadline = Instant::now() + cfg.phase_timeout;
    while shared.deliveries.load(Ordering::Relaxed) < want && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deliver_s = publish_start.elapsed().as_secs_f64();
    let server_cpu1: u64 = cfg
        .server_pids
        .iter()
        .map(|p| cpu_ticks(&p.to_string()))
        .sum();
    let server_rss_kib: u64 = cfg.server_pids.iter().map(|p| rss_kib(*p)).sum();
    let _ = stop_tx.send(true);
    let mut lost = 0;
    let mut duplicated = 0;
    for r in readers {
        if let Ok(seen) = r.await {
            lost += acked.iter().filter(|n| !seen.events.contains(n)).count() as u64;
            duplicated += seen.duplicates;
        }
    }
    // Sockets that never connected lost everything acknowledged.
    lost += (cfg.sockets - connected) as u64 * acked.len() as u64;
    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    let h = shared.latency.lock().map_err(|e| e.to_string())?;
    let ms = |us: u64| us as f64 / 1000.0;
    let wall_s = started.elapsed().as_secs_f64();
    let rss_mib = server_rss_kib as f64 / 1024.0;
    Ok(Report {
        sockets: cfg.sockets,
        connected,
        connect_s,
        published: n,
        acknowledged: acked.len() as u64,
        publish_errors: errors.load(Ordering::Relaxed),
        deliveries,
        deliveries_per_s: deliveries as f64 / deliver_s.max(1e-9),
        events_per_frame: deliveries as f64 / shared.frames.load(Ordering::Relaxed).max(1) as f64,
        lost,
        duplicated,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
        server_cpu_pct: (server_cpu1 - server_cpu0) as f64 / TICKS / deliver_s.max(1e-9) * 100.0,
        server_rss_mib: rss_mib,
        server_rss_mib_per_1000: rss_mib / (connected.max(1) as f64 / 1000.0),
        loadgen_cpu_pct: (cpu_ticks("self") - own_cpu0) as f64 / TICKS / wall_s.max(1e-9) * 100.0,
        wall_s,
    })
}
