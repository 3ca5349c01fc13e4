//! JWT checks (HS256 via `jwt-compact`) and the `scope` / `channels` claim rules.

use chrono::{DateTime, TimeDelta, Utc};
use jwt_compact::alg::{Hs256, Hs256Key};
use jwt_compact::{
    AlgorithmExt, Claims as JwtClaims, Header, TimeOptions, UntrustedToken, ValidationError,
};
use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::error::{ApiError, ErrorCode};

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Scopes {
    pub subscribe: bool,
    pub publish: bool,
}

/// The claims the gateway reads, after the signature and times were checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Who holds the token (`sub`).
    pub sub: Option<String>,
    /// Expiry in seconds since the epoch (`exp`); `None` never expires.
    pub exp: Option<i64>,
    pub scopes: Scopes,
    /// Channel patterns (`channels`); `None` means the default set.
    pub channels: Option<Vec<String>>,
}

/// `scope` as a space-separated string or a list.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct CustomClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<ScopeClaim>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channels: Option<Vec<String>>,
}

fn failed(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::AuthFailed, message)
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Verifies an HS256 token at `now_s` with `leeway_s` seconds of clock skew.
///
/// Any token that is malformed, not HS256 (including `alg: none`), wrongly signed
/// or not yet valid is `AUTH_FAILED`; one past `exp` + leeway is `AUTH_EXPIRED`.
pub fn verify(token: &str, secret: &[u8], now_s: i64, leeway_s: i64) -> Result<Claims, ApiError> {
    if token.is_empty() {
        return Err(failed("no token given"));
    }
    if secret.is_empty() {
        return Err(ApiError::internal("JWT_SECRET is not configured"));
    }
    let untrusted =
        UntrustedToken::new(token).map_err(|e| failed(format!("malformed token: {e}")))?;
    let key = Hs256Key::new(secret);
    let token = Hs256
        .validator::<CustomClaims>(&key)
        .validate(&untrusted)
        .map_err(|e| match e {
            ValidationError::AlgorithmMismatch { actual, .. } => {
                failed(format!("algorithm '{actual}' is not accepted; use HS256"))
            }
            ValidationError::InvalidSignature | ValidationError::InvalidSignatureLen { .. } => {
                failed("invalid token signature")
            }
            other => failed(format!("invalid token: {other}")),
        })?;
    let claims = token.claims();
    let options = TimeOptions::new(TimeDelta::seconds(leeway_s), move || at(now_s));
    if claims.expiration.is_some() {
        claims
            .validate_expiration(&options)
            .map_err(|_| ApiError::new(ErrorCode::AuthExpired, "token has expired"))?;
    }
    if claims.not_before.is_some() {
        claims
            .validate_maturity(&options)
            .map_err(|_| failed("token is not valid yet (nbf)"))?;
    }
    let scopes = match &claims.custom.scope {
        None => Scopes {
            subscribe: true,
            publish: false,
        },
        Some(s) => {
            let words: Vec<&str> = match s {
                ScopeClaim::Text(t) => t.split_whitespace().collect(),
                ScopeClaim::List(l) => l.iter().map(String::as_str).collect(),
            };
            Scopes {
                subscribe: words.contains(&"subscribe"),
                publish: words.contains(&"publish"),
            }
        }
    };
    Ok(Claims {
        sub: claims.custom.sub.clone(),
        exp: claims.expiration.map(|d| d.timestamp()),
        scopes,
        channels: claims.custom.channels.clone(),
    })
}

impl Claims {
    /// Whether the `channels` claim covers `channel`. Without the claim a
    /// subscriber gets the known channels and a publisher every channel.
    pub fn allows(&self, channel: &Channel, for_publish: bool) -> bool {
        match &self.channels {
            Some(patterns) => patterns.iter().any(|p| glob_match(p, channel.name())),
            None => for_publish || channel.is_known(),
        }
    }

    /// The instant (ms) after which a live connection with this token must be closed.
    pub fn expires_at_ms(&self, leeway_s: i64) -> Option<i64> {
        self.exp
            .map(|e| e.saturating_add(leeway_s).saturating_mul(1000))
    }
}

/// `*` matches any run of characters (including none); everything else is literal.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// What a minted token says; used by the dev-token tool and the tests.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub sub: Option<String>,
    pub scope: Option<String>,
    pub channels: Option<Vec<String>>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
}

/// Signs an HS256 token.
pub fn mint(spec: &TokenSpec, secret: &[u8]) -> String {
    let mut claims = JwtClaims::new(CustomClaims {
        sub: spec.sub.clone(),
        scope: spec.scope.clone().map(ScopeClaim::Text),
        channels: spec.channels.clone(),
    });
    claims.expiration = spec.exp.map(at);
    claims.not_before = spec.nbf.map(at);
    let key = Hs256Key::new(secret);
    // Signing HMAC over serializable claims has no failure mode but serde's.
    Hs256
        .token(&Header::empty(), &claims, &key)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::channel::Channel;
    use crate::core::config::Config;
    use base64::Engine;

    const SECRET: &[u8] = b"test-secret";
    const NOW: i64 = 1_800_000_000;

    fn spec() -> TokenSpec {
        TokenSpec {
            sub: Some("u1".into()),
            exp: Some(NOW + 3600),
            ..TokenSpec::default()
        }
    }

    fn code(r: Result<Claims, ApiError>) -> ErrorCode {
        r.unwrap_err().code
    }

    #[test]
    fn a_valid_token_yields_its_claims_with_subscribe_by_default() {
        let c = verify(&mint(&spec(), SECRET), SECRET, NOW, 30).unwrap();
        assert_eq!(c.sub.as_deref(), Some("u1"));
        assert_eq!(c.exp, Some(NOW + 3600));
        assert_eq!(
            c.scopes,
            Scopes {
                subscribe: true,
                publish: false
            }
        );
    }

    #[test]
    fn scope_may_be_a_string_or_a_list() {
        let mut s = spec();
        s.scope = Some("publish subscribe".into());
        let c = verify(&mint(&s, SECRET), SECRET, NOW, 30).unwrap();
        assert!(c.scopes.publish && c.scopes.subscribe);

        let claims = serde_json::json!({"sub":"x","scope":["publish"]});
        let t = Hs256
            .token(
                &Header::empty(),
                &JwtClaims::new(claims),
                &Hs256Key::new(SECRET),
            )
            .unwrap();
        let c = verify(&t, SECRET, NOW, 30).unwrap();
        assert!(c.scopes.publish && !c.scopes.subscribe);
    }

    #[test]
    fn wrong_signature_is_auth_failed() {
        assert_eq!(
            code(verify(&mint(&spec(), b"other"), SECRET, NOW, 30)),
            ErrorCode::AuthFailed
        );
    }

    #[test]
    fn alg_none_is_auth_failed() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let t = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(r#"{"sub":"evil"}"#)
        );
        assert_eq!(code(verify(&t, SECRET, NOW, 30)), ErrorCode::AuthFailed);
    }

    #[test]
    fn garbage_and_empty_tokens_are_auth_failed() {
        assert_eq!(
            code(verify("not-a-jwt", SECRET, NOW, 30)),
            ErrorCode::AuthFailed
        );
        assert_eq!(code(verify("", SECRET, NOW, 30)), ErrorCode::AuthFailed);
    }

    #[test]
    fn expiry_honours_the_leeway() {
        let mut s = spec();
        s.exp = Some(NOW - 20);
        assert!(verify(&mint(&s, SECRET), SECRET, NOW, 30).is_ok());
        s.exp = Some(NOW - 31);
        assert_eq!(
            code(verify(&mint(&s, SECRET), SECRET, NOW, 30)),
            ErrorCode::AuthExpired
        );
    }

    #[test]
    fn future_nbf_is_auth_failed_beyond_the_leeway() {
        let mut s = spec();
        s.nbf = Some(NOW + 20);
        assert!(verify(&mint(&s, SECRET), SECRET, NOW, 30).is_ok());
        s.nbf = Some(NOW + 120);
        assert_eq!(
            code(verify(&mint(&s, SECRET), SECRET, NOW, 30)),
            ErrorCode::AuthFailed
        );
    }

    #[test]
    fn glob_matches_runs_of_characters() {
        assert!(glob_match("conversation:*", "conversation:conv-1"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("traffic.*", "traffic.flow"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("traffic.flow", "traffic.flows"));
        assert!(!glob_match("conversation:*", "accidents"));
    }

    #[test]
    fn absent_channels_claim_means_known_channels_for_subscribers_and_all_for_publishers() {
        let cfg = Config::default();
        let c = verify(&mint(&spec(), SECRET), SECRET, NOW, 30).unwrap();
        let known = Channel::parse("accidents", &cfg).unwrap();
        let ns = Channel::parse("conversation:c1", &cfg).unwrap();
        assert!(c.allows(&known, false));
        assert!(!c.allows(&ns, false));
        assert!(c.allows(&ns, true));
    }

    #[test]
    fn channels_claim_restricts() {
        let cfg = Config::default();
        let mut s = spec();
        s.channels = Some(vec!["traffic.flow".into(), "conversation:*".into()]);
        let c = verify(&mint(&s, SECRET), SECRET, NOW, 30).unwrap();
        assert!(c.allows(&Channel::parse("conversation:x", &cfg).unwrap(), false));
        assert!(!c.allows(&Channel::parse("accidents", &cfg).unwrap(), true));
    }
}
