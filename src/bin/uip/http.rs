//! HTTP to the gateway: URLs, errors as one line each, and the publish call
//! that retries timeouts and 503s with the same body (the same event ids).

use std::time::Duration;

use serde_json::Value;

use crate::Failure;

/// Longest wait for one answer; the gateway answers every publish within 10 s.
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// Tries of one publish request before giving up.
const TRIES: u32 = 6;

/// The base URL, checked: `http(s)://host[:port]`, without a trailing slash.
pub fn base(url: &str) -> Result<String, Failure> {
    let trimmed = url.trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed)
        .map_err(|e| Failure::Usage(format!("bad --url '{url}': {e}")))?;
    match parsed.scheme() {
        "http" | "https" if parsed.host().is_some() => Ok(trimmed.to_owned()),
        _ => Err(Failure::Usage(format!(
            "bad --url '{url}': expected http://host:port or https://host"
        ))),
    }
}

/// The WebSocket URL of `path` on the gateway at `base`.
pub fn ws_url(base: &str, path: &str) -> String {
    let ws = base
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    format!("{ws}{path}")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(ANSWER_WAIT)
        .build()
        .unwrap_or_default()
}

/// The gateway's error object of a body, as `CODE: message {details}`.
fn error_text(body: &Value) -> String {
    let e = &body["error"];
    let mut text = e["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    if let Some(code) = e["code"].as_str() {
        text = format!("{code}: {text}");
    }
    if let Some(details) = e.get("details") {
        text = format!("{text} {details}");
    }
    text
}

/// Maps a non-2xx answer to the failure it means.
pub fn refused(status: u16, body: &Value) -> Failure {
    let text = error_text(body);
    match status {
        401 | 403 => Failure::Rejected(format!("the gateway refused the token ({status} {text})")),
        400..=499 => Failure::Usage(format!("the gateway answered {status} {text}")),
        _ => Failure::Gateway(format!("the gateway answered {status} {text}")),
    }
}

fn unreachable(base: &str, e: &reqwest::Error) -> Failure {
    Failure::Gateway(format!("cannot reach the gateway at {base}: {e}"))
}

/// `GET path` with the token; the JSON body of a 2xx answer.
pub async fn get(base: &str, path: &str, token: &str) -> Result<Value, Failure> {
    let resp = client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| unreachable(base, &e))?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        return Err(refused(status, &body));
    }
    Ok(body)
}

/// What one publish request came to.
pub struct Published {
    /// The gateway's `results`.
    pub results: Vec<Value>,
    /// Tries after the first.
    pub retries: u32,
}

/// `POST /v1/publish` of `body`, retried with the same body after a timeout,
/// a lost connection or a 503 (waiting its `Retry-After`): the events carry
/// ids, so a retry of a publish that was stored is answered as a duplicate.
/// A refused connection before any answer is a failure at once.
pub async fn publish(base: &str, token: &str, body: &Value) -> Result<Published, Failure> {
    let http = client();
    let mut retries = 0;
    let mut answered_once = false;
    loop {
        let attempt = http
            .post(format!("{base}/v1/publish"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await;
        let wait = match attempt {
            Ok(resp) => {
                answered_once = true;
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                let answer: Value = resp.json().await.unwrap_or(Value::Null);
                match status {
                    200 => {
                        let results = answer["results"].as_array().cloned().unwrap_or_default();
                        return Ok(Published { results, retries });
                    }
                    503 => Duration::from_secs(retry_after.max(1)),
                    _ => return Err(refused(status, &answer)),
                }
            }
            Err(e) if e.is_connect() && !answered_once && retries == 0 => {
                return Err(unreachable(base, &e))
            }
            Err(_) => Duration::from_millis(500 << retries.min(4)),
        };
        retries += 1;
        if retries >= TRIES {
            return Err(Failure::Gateway(format!(
                "the gateway did not take the publish after {TRIES} tries"
            )));
        }
        tokio::time::sleep(wait).await;
    }
}
