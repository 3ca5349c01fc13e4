//! Where token keys come from: `JWT_SECRET` (HS256), `JWT_PUBLIC_KEYS` (read
//! once per isolate) and the JWK set at `JWT_JWKS_URL`, fetched on first need,
//! kept, refreshed when a token names an unknown `kid` (at most once per
//! `JWKS_REFRESH_S`) and when it grows old. No verification waits on the
//! JWKS for more than 2 s; a JWKS that is down, slow or garbage leaves the
//! cached keys in force.

use crate::telemetry::log_error;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};
use jwt_compact::UntrustedToken;
use worker::{Delay, Env, Fetch, Url};

use crate::core::auth::{self, Claims, Keys, Rejection};
use crate::core::error::ApiError;
use crate::core::keys::KeySet;

/// Longest wait for the JWKS.
const FETCH_DEADLINE: Duration = Duration::from_secs(2);
/// A cached key set older than this many refresh intervals is fetched again.
const MAX_AGE_INTERVALS: i64 = 10;

/// The keys of `JWT_PUBLIC_KEYS`, for the text they were read from.
struct Configured {
    text: String,
    keys: Rc<KeySet>,
    problem: Option<String>,
}

/// The JWKS as last fetched.
#[derive(Default)]
struct Jwks {
    url: String,
    keys: Rc<KeySet>,
    /// When a fetch was last tried (ms), 0 before the first.
    tried_ms: i64,
    /// When the keys were last fetched successfully (ms).
    fetched_ms: i64,
    /// What went wrong with the last fetch, for refusal messages.
    problem: Option<String>,
}

thread_local! {
    static CONFIGURED: RefCell<Option<Configured>> = const { RefCell::new(None) };
    static JWKS: RefCell<Jwks> = RefCell::new(Jwks::default());
}

fn var(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// The keys of `JWT_PUBLIC_KEYS`; a value that cannot be read counts as no
/// keys, and its problem is named in refusals.
fn configured(env: &Env) -> (Rc<KeySet>, Option<String>) {
    let text = var(env, "JWT_PUBLIC_KEYS").unwrap_or_default();
    CONFIGURED.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.as_ref().is_none_or(|c| c.text != text) {
            let (keys, problem) = match KeySet::parse(&text) {
                Ok(k) => (k, None),
                Err(e) => {
                    log_error!("JWT_PUBLIC_KEYS cannot be read: {e}");
                    (
                        KeySet::default(),
                        Some(format!("JWT_PUBLIC_KEYS cannot be read: {e}")),
                    )
                }
            };
            *slot = Some(Configured {
                text,
                keys: Rc::new(keys),
                problem,
            });
        }
        let c = slot.as_ref().expect("just filled");
        (Rc::clone(&c.keys), c.problem.clone())
    })
}

/// Fetches the JWKS at `url` within [`FETCH_DEADLINE`]; the cached keys stay
/// when it fails.
async fn refresh(url: &str, now_ms: i64) {
    JWKS.with(|j| {
        let mut j = j.borrow_mut();
        if j.url != url {
            *j = Jwks {
                url: url.to_owned(),
                ..Jwks::default()
            };
        }
        j.tried_ms = now_ms;
    });
    let outcome = fetch_jwks(url).await;
    JWKS.with(|j| {
        let mut j = j.borrow_mut();
        match outcome {
            Ok(keys) => {
                j.keys = Rc::new(keys);
                j.fetched_ms = now_ms;
                j.problem = None;
            }
            Err(problem) => {
                log_error!("JWT_JWKS_URL: {problem}");
                j.problem = Some(problem);
            }
        }
    });
}

async fn fetch_jwks(url: &str) -> Result<KeySet, String> {
    let parsed = Url::parse(url).map_err(|_| "JWT_JWKS_URL is not a URL".to_owned())?;
    let call = async {
        let resp = Fetch::Url(parsed)
            .send()
            .await
            .map_err(|_| "the key set could not be reached".to_owned())?;
        if resp.status_code() != 200 {
            return Err(format!("the key set answered HTTP {}", resp.status_code()));
        }
        let (_, body) = crate::glue::read_text(resp)
            .await
            .map_err(|_| "the key set's body could not be read".to_owned())?;
        KeySet::from_jwks(&body)
    };
    match select(Box::pin(call), Delay::from(FETCH_DEADLINE)).await {
        Either::Left((outcome, _)) => outcome,
        Either::Right(_) => Err(format!(
            "the key set did not answer within {} s",
            FETCH_DEADLINE.as_secs()
        )),
    }
}

/// What the JWKS cache holds now: its keys, the last problem, and whether a
/// fetch may be tried (`fresh_kid`: for an unknown `kid`).
fn jwks_state(
    url: &str,
    now_ms: i64,
    interval_ms: i64,
    fresh_kid: bool,
) -> (Rc<KeySet>, Option<String>, bool) {
    JWKS.with(|j| {
        let j = j.borrow();
        if j.url != url || j.tried_ms == 0 {
            return (Rc::new(KeySet::default()), None, true);
        }
        let may_retry = now_ms - j.tried_ms >= interval_ms;
        let stale = now_ms - j.fetched_ms >= interval_ms * MAX_AGE_INTERVALS;
        (
            Rc::clone(&j.keys),
            j.problem.clone(),
            may_retry && (fresh_kid || stale),
        )
    })
}

/// Verifies a client's or producer's token with every configured key.
pub async fn verify(
    env: &Env,
    token: &str,
    now_ms: i64,
    leeway_s: i64,
) -> Result<Claims, ApiError> {
    let secret = var(env, "JWT_SECRET").unwrap_or_default().into_bytes();
    let (configured, configured_problem) = configured(env);
    let url = var(env, "JWT_JWKS_URL");
    let interval_ms = var(env, "JWKS_REFRESH_S")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(60)
        .max(1)
        * 1000;
    let asymmetric = UntrustedToken::new(token).is_ok_and(|t| t.algorithm() != "HS256");
    let mut refreshed = false;
    loop {
        let (jwks, jwks_problem, may_fetch) = match &url {
            Some(u) => jwks_state(u, now_ms, interval_ms, false),
            None => (Rc::new(KeySet::default()), None, false),
        };
        if let (Some(u), true, true, false) = (&url, asymmetric, may_fetch, refreshed) {
            refresh(u, now_ms).await;
            refreshed = true;
            continue;
        }
        let sets = [configured.as_ref(), jwks.as_ref()];
        let keys = Keys {
            secret: &secret,
            public: &sets,
        };
        match auth::verify_with(token, keys, now_ms / 1000, leeway_s) {
            Ok(claims) => return Ok(claims),
            Err(Rejection::UnknownKid(kid)) => {
                let can_retry = url
                    .as_deref()
                    .is_some_and(|u| jwks_state(u, now_ms, interval_ms, true).2);
                if let (Some(u), true, false) = (&url, can_retry, refreshed) {
                    refresh(u, now_ms).await;
                    refreshed = true;
                    continue;
                }
                let mut err = Rejection::UnknownKid(kid).into_error();
                if let Some(p) = jwks_problem.or(configured_problem) {
                    err = err.with("key_problem", p.as_str());
                    err.message = format!("{} ({p})", err.message);
                }
                return Err(err);
            }
            Err(Rejection::Refused(e)) => return Err(e),
        }
    }
}
