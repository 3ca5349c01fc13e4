//! Shared test helpers: start `wrangler dev` (once per test binary, or privately
//! for a test that restarts it), mint tokens, connect clients, and await
//! messages with bounded waits.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uip_realtime::core::auth::{mint, TokenSpec};

/// The secret every test gateway signs with.
pub const SECRET: &str = "integration-test-secret";
/// Longest wait for one expected message.
pub const WAIT: Duration = Duration::from_secs(15);
/// Longest wait for a gateway to come up (the first start may build).
const START_WAIT: Duration = Duration::from_secs(180);

/// The project root. Read when the test runs (cargo sets it for every test
/// binary), not when it was built: a binary reused from a build of another
/// clone sharing the target cache would otherwise run that clone's gateway.
pub fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Seconds since the epoch.
pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A running `wrangler dev`.
pub struct Gateway {
    pub port: u16,
    child: Child,
    pub persist: PathBuf,
}

impl Gateway {
    /// Starts a gateway storing its state in `persist`, with extra `--var`s.
    /// A start that loses its free port to another process (wrangler exits
    /// with "Address already in use") is tried again on new ports.
    pub fn start(persist: &Path, vars: &[(&str, &str)]) -> Gateway {
        Gateway::start_logging(persist, vars, "warn")
    }

    /// [`Gateway::start`] with wrangler's `--log-level` (`log` shows the
    /// Worker's structured log lines in the gateway's log file).
    pub fn start_logging(persist: &Path, vars: &[(&str, &str)], level: &str) -> Gateway {
        for _ in 0..3 {
            if let Some(gw) = Gateway::try_start(persist, vars, level) {
                return gw;
            }
        }
        panic!(
            "wrangler dev exited three times before answering; see {}",
            persist.with_extension("log").display()
        );
    }

    /// The gateway's output so far (wrangler's and the Worker's logs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.persist.with_extension("log")).unwrap_or_default()
    }

    fn try_start(persist: &Path, vars: &[(&str, &str)], level: &str) -> Option<Gateway> {
        let port = free_port();
        let inspector = free_port();
        let root = root();
        let mut cmd = Command::new(root.join("tests/common/run-wrangler.sh"));
        cmd.arg(std::process::id().to_string())
            .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--inspector-port", &inspector.to_string()])
            .arg("--persist-to")
            .arg(persist)
            .args(["--var", &format!("JWT_SECRET:{SECRET}")])
            .args(["--show-interactive-dev-session=false", "--log-level", level]);
        // Presence is off unless a test turns it on: most tests use
        // `conversation:` channels and read exact frame sequences, which
        // presence joins would interleave.
        if !vars.iter().any(|(k, _)| *k == "PRESENCE_NAMESPACES") {
            cmd.args(["--var", "PRESENCE_NAMESPACES:"]);
        }
        for (k, v) in vars {
            cmd.args(["--var", &format!("{k}:{v}")]);
        }
        let path = format!(
            "{}:{}:{}",
            root.join(".tools/bin").display(),
            root.join("node_modules/.bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(persist.with_extension("log")).expect("log file");
        let child = cmd
            .current_dir(&root)
            .env("PATH", path)
            .env("UIP_SKIP_BUILD", "1")
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn wrangler dev");
        let mut gw = Gateway {
            port,
            child,
            persist: persist.to_owned(),
        };
        gw.wait_ready().then_some(gw)
    }

    /// Waits for `/healthz`; `false` when wrangler exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_WAIT;
        let url = format!("{}/healthz", self.http());
        loop {
            if let Ok(status) = probe(&url) {
                if status == 200 {
                    return true;
                }
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "wrangler dev did not answer /healthz within {START_WAIT:?}; see {}",
                self.persist.with_extension("log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the gateway (wrangler and workerd) and waits for it to exit.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory for a gateway's state under `tests/.state/`.
pub fn state_dir(name: &str) -> PathBuf {
    let dir = root()
        .join("tests/.state")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("state dir");
    dir
}

/// Settings of the shared gateway: a short auth timeout and JWT leeway, so the
/// timeout and expiry tests take seconds (the defaults are unit-tested).
/// History keeps 100 events so a test can outrun it.
pub const SHARED_VARS: &[(&str, &str)] = &[
    ("AUTH_TIMEOUT_S", "2"),
    ("JWT_LEEWAY_S", "2"),
    ("HISTORY_MAX_EVENTS", "100"),
];

/// The gateway shared by every test of this binary, started on first use.
pub fn gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| Gateway::start(&state_dir("shared"), SHARED_VARS))
}

/// A second shared gateway with a low minute limit (and a high burst limit so
/// the minute window is what trips).
pub fn limits_gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| {
        Gateway::start(
            &state_dir("limits"),
            &[("BURST_LIMIT", "1000"), ("MAX_MESSAGES_PER_MINUTE", "100")],
        )
    })
}

/// Liveness settings shortened 15-fold with their ratios kept: keep-alives
/// every 3 s (45 s), heartbeat timeout 6 s (90 s).
pub const KEEPALIVE_S: u64 = 3;
pub const HEARTBEAT_TIMEOUT_S: u64 = 6;

/// A shared gateway with the shortened liveness settings (and presence, for
/// leaves of sockets the sweep closes).
pub fn liveness_gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| {
        Gateway::start(
            &state_dir("liveness"),
            &[
                ("KEEPALIVE_S", "3"),
                ("HEARTBEAT_TIMEOUT_S", "6"),
                ("AUTH_TIMEOUT_S", "60"),
                ("PRESENCE_NAMESPACES", "conversation"),
            ],
        )
    })
}

/// A gateway of its own with one hub shard and default liveness settings,
/// for tests that leave it idle long enough for workerd to hibernate its
/// objects (10 s without an event).
pub fn quiet_gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| Gateway::start(&state_dir("quiet"), &[("HUB_SHARDS", "1")]))
}

/// A shared gateway whose rooms drop every third push to a hub, as if the
/// call had failed (the test-only fault `TEST_DROP_HUB_DELIVERY_EVERY`), with
/// sockets spread at random over two hubs.
pub fn faulty_gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| {
        Gateway::start(
            &state_dir("faulty"),
            &[
                ("TEST_DROP_HUB_DELIVERY_EVERY", "3"),
                ("HUB_SHARDS", "2"),
                ("HUB_FILL", "0"),
            ],
        )
    })
}

/// A channel name no other test uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}{}-{}-{}",
        std::process::id(),
        now_s(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---- tokens ----

/// A token signed with [`SECRET`].
pub fn token(spec: TokenSpec) -> String {
    mint(&spec, SECRET.as_bytes())
}

/// A subscriber token for every channel, valid for an hour.
pub fn sub_token() -> String {
    token(TokenSpec {
        sub: Some("tester".into()),
        scope: Some("subscribe".into()),
        channels: Some(vec!["*".into()]),
        exp: Some(now_s() + 3600),
        ..TokenSpec::default()
    })
}

/// A publisher token, valid for an hour.
pub fn pub_token() -> String {
    token(TokenSpec {
        sub: Some("producer".into()),
        scope: Some("publish".into()),
        exp: Some(now_s() + 3600),
        ..TokenSpec::default()
    })
}

// ---- HTTP ----

/// `POST /v1/publish` with the publisher token; returns status and JSON body.
pub async fn publish(gw: &Gateway, body: &Value) -> (u16, Value) {
    publish_raw(gw, &body.to_string(), Some(&pub_token())).await
}

/// `POST /v1/publish` with a raw body and an optional bearer token.
pub async fn publish_raw(gw: &Gateway, body: &str, bearer: Option<&str>) -> (u16, Value) {
    publish_to(&gw.http(), body, bearer)
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"))
}

/// `POST {base}/v1/publish`; `Err` when no answer came (refused, reset, timeout).
pub async fn publish_to(
    base: &str,
    body: &str,
    bearer: Option<&str>,
) -> Result<(u16, Value), String> {
    let mut req = http()
        .post(format!("{base}/v1/publish"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = tokio::time::timeout(WAIT, req.send())
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Publishes one event and returns its `seq`, asserting a 200.
pub async fn publish_ok(gw: &Gateway, channel: &str, kind: &str, data: Value) -> u64 {
    let (status, body) =
        publish(gw, &json!({"channel": channel, "type": kind, "data": data})).await;
    assert_eq!(status, 200, "publish failed: {body}");
    body["results"][0]["seq"].as_u64().expect("seq")
}

/// `GET` with a bearer token; returns status and JSON body.
pub async fn get(gw: &Gateway, path: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut req = http().get(format!("{}{}", gw.http(), path));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = tokio::time::timeout(WAIT, req.send())
        .await
        .expect("GET timed out")
        .expect("GET request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A client per request: each `#[tokio::test]` has its own runtime, and a
/// pooled connection must not outlive the runtime that opened it.
fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// The status of `GET url` over a plain TCP connection: the readiness probe,
/// which runs before any async runtime exists.
fn probe(url: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))
}

// ---- WebSocket clients ----

/// A test WebSocket client with bounded waits.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// From `auth.success`, once read by a connect helper.
    pub connection_id: Option<String>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl Client {
    /// Opens `path` (e.g. `/ws/accidents?token=…`) on `gw`.
    pub async fn connect(gw: &Gateway, path: &str) -> Client {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(gw.ws(path)))
            .await
            .unwrap_or_else(|_| panic!("connect {path} timed out"))
            .unwrap_or_else(|e| panic!("connect {path}: {e}"));
        Client {
            ws,
            connection_id: None,
        }
    }

    /// Connects to `/ws/{channel}` with a token and reads the connect sequence
    /// up to the `snapshot`, which it returns.
    pub async fn subscribed(gw: &Gateway, channel: &str, token: &str) -> (Client, Value) {
        let mut c = Client::connect(gw, &format!("/ws/{channel}?token={token}")).await;
        c.expect("auth.success").await;
        c.expect("rate_limit_info").await;
        c.expect("subscribed").await;
        let snap = c.expect("snapshot").await;
        (c, snap)
    }

    /// Connects to `/ws?token=…` and reads `auth.success` and `rate_limit_info`.
    pub async fn multiplexed(gw: &Gateway, token: &str) -> Client {
        let mut c = Client::connect(gw, &format!("/ws?token={token}")).await;
        let ok = c.expect("auth.success").await;
        c.connection_id = ok["data"]["connection_id"].as_str().map(str::to_owned);
        c.expect("rate_limit_info").await;
        c
    }

    /// The hub shard holding this socket, from its connection id.
    pub fn hub(&self) -> Option<&str> {
        self.connection_id
            .as_deref()
            .and_then(|id| id.split_once('.'))
            .map(|(hub, _)| hub)
    }

    /// Subscribes to `channel` with `filters` and returns the `snapshot` (or
    /// the `subscribed` message when the subscription resumed with `since`).
    pub async fn subscribe(&mut self, channel: &str, filters: Value) -> Value {
        self.send_json(json!({"type": "subscribe", "channel": channel, "filters": filters}))
            .await;
        self.expect_reply("subscribed").await;
        self.expect_reply("snapshot").await
    }

    pub async fn send_text(&mut self, text: &str) {
        tokio::time::timeout(WAIT, self.ws.send(Message::text(text)))
            .await
            .expect("send timed out")
            .expect("send");
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// The next frame, whatever it is; `None` when the wait ran out.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Message> {
        match tokio::time::timeout(wait, self.ws.next()).await {
            Ok(Some(Ok(m))) => Some(m),
            Ok(Some(Err(e))) => panic!("socket error: {e}"),
            Ok(None) => None,
            Err(_) => None,
        }
    }

    /// The next JSON text message, or `None` once the connection is gone (closed,
    /// reset) or nothing came within `wait`.
    pub async fn try_next_json(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(wait, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                _ => return None,
            }
        }
    }

    /// The next JSON text message (pings and pongs skipped). Panics on timeout
    /// or on a close frame.
    pub async fn next_json(&mut self) -> Value {
        loop {
            match self.next_frame(WAIT).await {
                Some(Message::Text(t)) => {
                    return serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
                }
                Some(Message::Ping(_) | Message::Pong(_)) => continue,
                Some(other) => panic!("expected a text message, got {other:?}"),
                None => panic!("no message within {WAIT:?}"),
            }
        }
    }

    /// Reads the next message and asserts its `type`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let m = self.next_json().await;
        assert_eq!(m["type"], kind, "expected a '{kind}' message, got {m}");
        m
    }

    /// Like [`Client::expect`], but skips the pushes (channel events, dialect
    /// `UPDATE`/`ALERT`) that other tests' publishes may have caused first.
    pub async fn expect_reply(&mut self, kind: &str) -> Value {
        loop {
            let m = self.next_json().await;
            let pushed = (m.get("seq").is_some() && m.get("channel").is_some())
                || m["type"] == "UPDATE"
                || m["type"] == "ALERT";
            if !pushed {
                assert_eq!(m["type"], kind, "expected a '{kind}' message, got {m}");
                return m;
            }
        }
    }

    /// Reads the next reply (skipping other tests' pushes) and asserts it is
    /// an error with `code`.
    pub async fn expect_error(&mut self, kind: &str, code: &str) -> Value {
        let m = self.expect_reply(kind).await;
        assert_eq!(m["error"]["code"], code, "got {m}");
        m
    }

    /// Reads until the server's close frame and returns it.
    pub async fn expect_close(&mut self) -> Closed {
        loop {
            match self.next_frame(WAIT).await {
                Some(Message::Close(Some(f))) => {
                    return Closed {
                        code: u16::from(f.code),
                        reason: f.reason.to_string(),
                    }
                }
                Some(Message::Close(None)) => {
                    return Closed {
                        code: u16::from(CloseCode::Status),
                        reason: String::new(),
                    }
                }
                Some(Message::Text(t)) => panic!("expected a close, got {t}"),
                Some(_) => continue,
                None => panic!("no close within {WAIT:?}"),
            }
        }
    }

    /// Reads until the server's close frame, then asserts the connection is
    /// over (the server ended TCP after the closing handshake) within 1 s,
    /// as a client with default settings sees it.
    pub async fn expect_prompt_close(&mut self) -> Closed {
        let closed = self.expect_close().await;
        self.expect_over_after(&closed).await;
        closed
    }

    /// Asserts the connection is over within 1 s of the close frame just
    /// read (`closed`), as a client with default settings sees it.
    pub async fn expect_over_after(&mut self, closed: &Closed) {
        let since = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(3), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
        let took = since.elapsed();
        assert!(
            ended.is_ok() && took <= Duration::from_secs(1),
            "the connection outlived its close frame ({closed:?}) by {took:?}"
        );
    }

    /// Every JSON frame that arrives within `wait`, with its arrival time,
    /// and the close frame if the connection ended meanwhile.
    pub async fn frames_for(&mut self, wait: Duration) -> (Vec<(Instant, Value)>, Option<Closed>) {
        let until = tokio::time::Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return (frames, None),
                Ok(Some(Ok(Message::Text(t)))) => frames.push((
                    Instant::now(),
                    serde_json::from_str(&t).unwrap_or(Value::Null),
                )),
                Ok(Some(Ok(Message::Close(f)))) => {
                    let closed = f.map_or(
                        Closed {
                            code: u16::from(CloseCode::Status),
                            reason: String::new(),
                        },
                        |f| Closed {
                            code: u16::from(f.code),
                            reason: f.reason.to_string(),
                        },
                    );
                    return (frames, Some(closed));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("socket error: {e}"),
                Ok(None) => panic!("the connection ended without a close frame"),
            }
        }
    }

    /// Reads until a message for which `pick` is true, skipping the others.
    pub async fn expect_where(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let m = self
                .try_next_json(left)
                .await
                .unwrap_or_else(|| panic!("no {what} within {WAIT:?}"));
            if pick(&m) {
                return m;
            }
        }
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(WAIT, self.ws.close(None)).await;
    }

    /// Ends the TCP connection without a close frame, as a killed client does.
    pub fn kill(self) {
        drop(self);
    }
}

// ---- public keys and a JWKS server ----

/// Keys the tests sign RS256/ES256 tokens with, made once per test binary.
pub struct TestKeys {
    /// Configured as PEM in `JWT_PUBLIC_KEYS`, without a `kid`.
    pub pem_rsa: rsa::RsaPrivateKey,
    /// Published in the JWKS as `rsa-j`.
    pub jwks_rsa: rsa::RsaPrivateKey,
    /// Published in the JWKS as `ec-a` and `ec-b`.
    pub ec_a: p256::ecdsa::SigningKey,
    pub ec_b: p256::ecdsa::SigningKey,
}

pub fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rsa::rand_core::OsRng;
        TestKeys {
            pem_rsa: rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA key"),
            jwks_rsa: rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA key"),
            ec_a: p256::ecdsa::SigningKey::random(&mut rng),
            ec_b: p256::ecdsa::SigningKey::random(&mut rng),
        }
    })
}

/// A public JWK with its `kid`.
pub fn jwk(key: jwt_compact::jwk::JsonWebKey<'_>, kid: &str) -> Value {
    let mut v = serde_json::to_value(key).expect("JWK");
    v["kid"] = kid.into();
    v
}

/// What the test JWKS server answers.
#[derive(Debug, Clone)]
pub enum JwksAnswer {
    /// 200 with this body.
    Body(String),
    /// 500.
    Down,
    /// Waits this long, then 200 with an empty key set.
    Slow(Duration),
}

/// A JWK set document of these keys.
pub fn jwks_doc(keys: Vec<Value>) -> String {
    json!({ "keys": keys }).to_string()
}

/// An HTTP server on loopback answering every request with the current
/// [`JwksAnswer`]; it lives as long as the test binary.
pub struct JwksServer {
    pub url: String,
    answer: std::sync::Arc<std::sync::Mutex<JwksAnswer>>,
}

impl JwksServer {
    pub fn start(first: JwksAnswer) -> JwksServer {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("JWKS listener");
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let answer = std::sync::Arc::new(std::sync::Mutex::new(first));
        let shared = answer.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let answer = shared.lock().unwrap().clone();
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf);
                    let (status, body) = match answer {
                        JwksAnswer::Body(b) => ("200 OK", b),
                        JwksAnswer::Down => ("500 Internal Server Error", "{}".to_owned()),
                        JwksAnswer::Slow(d) => {
                            std::thread::sleep(d);
                            ("200 OK", jwks_doc(vec![]))
                        }
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        JwksServer { url, answer }
    }

    pub fn answer(&self, a: JwksAnswer) {
        *self.answer.lock().unwrap() = a;
    }
}

/// The JWKS every public-key test may rely on: `rsa-j` and `ec-a`.
pub fn standard_jwks() -> String {
    let k = test_keys();
    jwks_doc(vec![
        jwk((&k.jwks_rsa.to_public_key()).into(), "rsa-j"),
        jwk(k.ec_a.verifying_key().into(), "ec-a"),
    ])
}

fn pem_of(key: &rsa::RsaPrivateKey) -> String {
    use rsa::pkcs8::EncodePublicKey;
    key.to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .expect("PEM")
}

/// A gateway that takes HS256, the PEM key and the standard JWKS.
pub fn keys_gateway() -> &'static Gateway {
    static GW: OnceLock<(JwksServer, Gateway)> = OnceLock::new();
    &GW.get_or_init(|| {
        let server = JwksServer::start(JwksAnswer::Body(standard_jwks()));
        let pem = pem_of(&test_keys().pem_rsa);
        let gw = Gateway::start(
            &state_dir("keys"),
            &[
                ("JWT_PUBLIC_KEYS", pem.as_str()),
                ("JWT_JWKS_URL", server.url.as_str()),
            ],
        );
        (server, gw)
    })
    .1
}

/// A gateway whose JWKS the test changes, refreshed at most once a second.
pub fn rotating_keys_gateway() -> &'static (JwksServer, Gateway) {
    static GW: OnceLock<(JwksServer, Gateway)> = OnceLock::new();
    GW.get_or_init(|| {
        let server = JwksServer::start(JwksAnswer::Body(standard_jwks()));
        let gw = Gateway::start(
            &state_dir("rotating"),
            &[
                ("JWT_JWKS_URL", server.url.as_str()),
                ("JWKS_REFRESH_S", "1"),
            ],
        );
        (server, gw)
    })
}

// ---- two-way: publish tokens for sockets, a command backend ----

/// A token that may subscribe to and publish on every channel, as `sub`.
pub fn talker_token(sub: &str) -> String {
    token(TokenSpec {
        sub: Some(sub.into()),
        scope: Some("subscribe publish".into()),
        channels: Some(vec!["*".into()]),
        exp: Some(now_s() + 3600),
        ..TokenSpec::default()
    })
}

/// An operator token (scope `admin`).
pub fn admin_token() -> String {
    token(TokenSpec {
        sub: Some("operator".into()),
        scope: Some("admin".into()),
        exp: Some(now_s() + 3600),
        ..TokenSpec::default()
    })
}

/// `POST {path}` with a JSON body and an optional bearer token.
pub async fn post(gw: &Gateway, path: &str, body: &Value, bearer: Option<&str>) -> (u16, Value) {
    let mut req = http()
        .post(format!("{}{}", gw.http(), path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = tokio::time::timeout(WAIT, req.send())
        .await
        .expect("POST timed out")
        .expect("POST request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The secret the command backend expects.
pub const COMMAND_SECRET: &str = "command-test-secret";
/// The command timeout of the two-way gateway.
pub const COMMAND_TIMEOUT_MS: u64 = 1000;

/// A command backend on loopback: it records every request and answers by
/// the client message's `action`: `fail` → 500, `garbage` → a body that is
/// not JSON, `hang` → an answer only after twice the timeout, `drop` → the
/// connection closed unanswered, anything else → 200 with the message echoed.
/// A request without `Authorization: Bearer COMMAND_SECRET` gets 401.
pub struct CommandBackend {
    pub url: String,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<SeenCommand>>>,
}

/// A request the command backend got: its `Authorization` header and body.
pub type SeenCommand = (Option<String>, Value);

impl CommandBackend {
    pub fn start() -> CommandBackend {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("backend listener");
        let url = format!("http://{}/commands", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                    let (mut length, mut auth) = (0usize, None);
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        let l = line.trim_end().to_owned();
                        line.clear();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            match k.to_ascii_lowercase().as_str() {
                                "content-length" => length = v.trim().parse().unwrap_or(0),
                                "authorization" => auth = Some(v.trim().to_owned()),
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0u8; length];
                    let _ = reader.read_exact(&mut body);
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    log.lock().unwrap().push((auth.clone(), body.clone()));
                    let action = body["message"]["action"].as_str().unwrap_or("").to_owned();
                    let (status, text) = if auth.as_deref()
                        != Some(&format!("Bearer {COMMAND_SECRET}"))
                    {
                        ("401 Unauthorized", r#"{"error":"bad secret"}"#.to_owned())
                    } else {
                        match action.as_str() {
                            "fail" => (
                                "500 Internal Server Error",
                                r#"{"error":"boom"}"#.to_owned(),
                            ),
                            "garbage" => ("200 OK", "<html>not json".to_owned()),
                            "drop" => return,
                            "hang" => {
                                std::thread::sleep(Duration::from_millis(2 * COMMAND_TIMEOUT_MS));
                                ("200 OK", r#"{"late":true}"#.to_owned())
                            }
                            _ => (
                                "200 OK",
                                json!({"ok": true, "echo": body["message"]}).to_string(),
                            ),
                        }
                    };
                    let mut conn = conn;
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    );
                });
            }
        });
        CommandBackend { url, seen }
    }
}

/// A gateway with a command backend, a 1 s command timeout, two hubs that
/// sockets spread over at random (so presence spans hubs) and presence for
/// `conversation:` channels.
pub fn two_way_gateway() -> &'static (CommandBackend, Gateway) {
    static GW: OnceLock<(CommandBackend, Gateway)> = OnceLock::new();
    GW.get_or_init(|| {
        let backend = CommandBackend::start();
        let timeout = COMMAND_TIMEOUT_MS.to_string();
        let gw = Gateway::start(
            &state_dir("two-way"),
            &[
                ("COMMAND_URL", backend.url.as_str()),
                ("COMMAND_SECRET", COMMAND_SECRET),
                ("COMMAND_TIMEOUT_MS", timeout.as_str()),
                ("HUB_SHARDS", "2"),
                ("HUB_FILL", "0"),
                ("PRESENCE_NAMESPACES", "conversation"),
            ],
        );
        (backend, gw)
    })
}

/// `/ws` sockets until one sits on a hub other than `other`'s.
pub async fn multiplexed_on_another_hub(gw: &Gateway, token: &str, other: &Client) -> Client {
    for _ in 0..40 {
        let c = Client::multiplexed(gw, token).await;
        if c.hub() != other.hub() {
            return c;
        }
        c.close().await;
    }
    panic!("40 sockets all landed on {:?}", other.hub());
}

/// Parses Prometheus text (format 0.0.4): every sample belongs to a family
/// declared by `# HELP` and `# TYPE` before it, and has a numeric value.
/// Returns `name{labels}` → value.
pub fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            families.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let name = series.split('{').next().unwrap();
        let family = families
            .keys()
            .find(|f| {
                name == f.as_str()
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{f}{s}"))
            })
            .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
        assert!(!family.is_empty());
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.insert(series.to_owned(), v);
    }
    samples
}

pub async fn scrape(gw: &Gateway) -> BTreeMap<String, f64> {
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", gw.http()))
        .bearer_auth(admin_token())
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    parse_exposition(&resp.text().await.unwrap())
}

pub fn at(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}
