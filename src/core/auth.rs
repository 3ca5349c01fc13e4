//! JWT checks (HS256, RS256 and ES256 via `jwt-compact`) and the `scope` /
//! `channels` claim rules.

use chrono::{DateTime, TimeDelta, Utc};
use jwt_compact::alg::{Es256, Hs256, Hs256Key, Rsa};
use jwt_compact::{
    AlgorithmExt, Claims as JwtClaims, Header, TimeOptions, Token, UntrustedToken, ValidationError,
};
use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::error::{ApiError, ErrorCode};
use super::keys::{KeySet, PublicKey};

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Scopes {
    pub subscribe: bool,
    pub publish: bool,
    /// Operator endpoints (`POST /v1/system/status`, `/metrics`).
    #[serde(default)]
    pub admin: bool,
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

/// The keys tokens are checked with.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    /// The HS256 secret (`JWT_SECRET`); empty when unset.
    pub secret: &'a [u8],
    /// RS256/ES256 public keys, in the order they are tried.
    pub public: &'a [&'a KeySet],
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// The token is refused (`AUTH_FAILED`, `AUTH_EXPIRED`, or `INTERNAL_ERROR`
    /// when no key at all is configured).
    Refused(ApiError),
    /// Signed with a `kid` no configured key has: a fresher key set may know it.
    UnknownKid(String),
}

impl From<ApiError> for Rejection {
    fn from(e: ApiError) -> Self {
        Rejection::Refused(e)
    }
}

impl Rejection {
    /// The client's error, once no refresh can help.
    pub fn into_error(self) -> ApiError {
        match self {
            Rejection::Refused(e) => e,
            Rejection::UnknownKid(kid) => {
                failed(format!("no key is known for the token's kid '{kid}'")).with("kid", kid)
            }
        }
    }
}

/// Verifies an HS256 token at `now_s` with `leeway_s` seconds of clock skew.
///
/// Any token that is malformed, not HS256 (including `alg: none`), wrongly signed
/// or not yet valid is `AUTH_FAILED`; one past `exp` + leeway is `AUTH_EXPIRED`.
pub fn verify(token: &str, secret: &[u8], now_s: i64, leeway_s: i64) -> Result<Claims, ApiError> {
    let keys = Keys {
        secret,
        public: &[],
    };
    verify_with(token, keys, now_s, leeway_s).map_err(Rejection::into_error)
}

/// Verifies a token signed with HS256 (the secret), RS256 or ES256 (a public
/// key picked by `kid`). Any other `alg`, `none` included, is `AUTH_FAILED`,
/// and so is an HS256 token whose `kid` names a public key (algorithm
/// confusion).
pub fn verify_with(
    token: &str,
    keys: Keys<'_>,
    now_s: i64,
    leeway_s: i64,
) -> Result<Claims, Rejection> {
    if token.is_empty() {
        return Err(failed("no token given").into());
    }
    let no_public = keys.public.iter().all(|s| s.is_empty());
    if keys.secret.is_empty() && no_public {
        return Err(ApiError::internal("no JWT_SECRET or public keys are configured").into());
    }
    let untrusted =
        UntrustedToken::new(token).map_err(|e| failed(format!("malformed token: {e}")))?;
    let kid = untrusted.header().key_id.clone();
    let token = match untrusted.algorithm() {
        "HS256" => {
            if let Some(k) = kid
                .as_deref()
                .filter(|k| keys.public.iter().any(|s| s.has_kid(k)))
            {
                return Err(
                    failed(format!("an HS256 token cannot name the public key '{k}'")).into(),
                );
            }
            if keys.secret.is_empty() {
                return Err(failed("HS256 tokens are not accepted here").into());
            }
            Hs256
                .validator::<CustomClaims>(&Hs256Key::new(keys.secret))
                .validate(&untrusted)
                .map_err(invalid)?
        }
        alg @ ("RS256" | "ES256") => {
            let candidates: Vec<&PublicKey> = keys
                .public
                .iter()
                .flat_map(|s| s.candidates(kid.as_deref()))
                .filter(|k| {
                    matches!(
                        (alg, k),
                        ("RS256", PublicKey::Rsa(_)) | ("ES256", PublicKey::P256(_))
                    )
                })
                .collect();
            if candidates.is_empty() {
                return Err(match kid {
                    Some(kid) if !keys.public.iter().any(|s| s.has_kid(&kid)) => {
                        Rejection::UnknownKid(kid)
                    }
                    Some(kid) => failed(format!("the key '{kid}' is not an {alg} key")).into(),
                    None => failed(format!("no {alg} key is configured")).into(),
                });
            }
            let mut last = failed("invalid token signature");
            let mut valid = None;
            for key in candidates {
                let checked = match key {
                    PublicKey::Rsa(k) => Rsa::rs256()
                        .validator::<CustomClaims>(k)
                        .validate(&untrusted),
                    PublicKey::P256(k) => Es256.validator::<CustomClaims>(k).validate(&untrusted),
                };
                match checked {
                    Ok(t) => {
                        valid = Some(t);
                        break;
                    }
                    Err(e) => last = invalid(e),
                }
            }
            valid.ok_or(last)?
        }
        other => {
            return Err(failed(format!(
                "algorithm '{other}' is not accepted; use HS256, RS256 or ES256"
            ))
            .into())
        }
    };
    Ok(claims_of(&token, now_s, leeway_s)?)
}

fn invalid(e: ValidationError) -> ApiError {
    match e {
        ValidationError::AlgorithmMismatch { actual, .. } => {
            failed(format!("algorithm '{actual}' is not accepted"))
        }
        ValidationError::InvalidSignature | ValidationError::InvalidSignatureLen { .. } => {
            failed("invalid token signature")
        }
        other => failed(format!("invalid token: {other}")),
    }
}

/// The time checks and the claims the gateway reads, of a token whose
/// signature was verified.
fn claims_of(token: &Token<CustomClaims>, now_s: i64, leeway_s: i64) -> Result<Claims, ApiError> {
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
            admin: false,
        },
        Some(s) => {
            let words: Vec<&str> = match s {
                ScopeClaim::Text(t) => t.split_whitespace().collect(),
                ScopeClaim::List(l) => l.iter().map(String::as_str).collect(),
            };
            Scopes {
                subscribe: words.contains(&"subscribe"),
                publish: words.contains(&"publish"),
                admin: words.contains(&"admin"),
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

/// A key to sign a token with (the dev-token tool and the tests).
#[derive(Debug, Clone, Copy)]
pub enum Signer<'a> {
    Hs256(&'a [u8]),
    Rs256(&'a rsa::RsaPrivateKey),
    Es256(&'a p256::ecdsa::SigningKey),
}

/// Signs an HS256 token.
pub fn mint(spec: &TokenSpec, secret: &[u8]) -> String {
    mint_signed(spec, Signer::Hs256(secret), None)
}

/// Signs a token with `signer`, naming `kid` in its header.
pub fn mint_signed(spec: &TokenSpec, signer: Signer<'_>, kid: Option<&str>) -> String {
    let mut claims = JwtClaims::new(CustomClaims {
        sub: spec.sub.clone(),
        scope: spec.scope.clone().map(ScopeClaim::Text),
        channels: spec.channels.clone(),
    });
    claims.expiration = spec.exp.map(at);
    claims.not_before = spec.nbf.map(at);
    let header = match kid {
        Some(k) => Header::empty().with_key_id(k),
        None => Header::empty(),
    };
    // Signing serializable claims has no failure mode but serde's.
    match signer {
        Signer::Hs256(secret) => Hs256.token(&header, &claims, &Hs256Key::new(secret)),
        Signer::Rs256(key) => Rsa::rs256().token(&header, &claims, key),
        Signer::Es256(key) => Es256.token(&header, &claims, key),
    }
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
                publish: false,
                admin: false,
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

    mod public_keys {
        use std::sync::OnceLock;

        use super::*;
        use crate::core::keys::KeySet;
        use jwt_compact::jwk::JsonWebKey;

        fn rsa_key() -> &'static rsa::RsaPrivateKey {
            static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
            KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap())
        }

        fn ec_key(seed: u8) -> p256::ecdsa::SigningKey {
            p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap()
        }

        fn jwks() -> KeySet {
            let rsa_pub = rsa_key().to_public_key();
            let mut r = serde_json::to_value(JsonWebKey::from(&rsa_pub)).unwrap();
            r["kid"] = "rsa-1".into();
            let mut e = serde_json::to_value(JsonWebKey::from(ec_key(7).verifying_key())).unwrap();
            e["kid"] = "ec-1".into();
            KeySet::from_jwks(&serde_json::json!({"keys": [r, e]}).to_string()).unwrap()
        }

        fn check(token: &str, set: &KeySet) -> Result<Claims, Rejection> {
            let sets = [set];
            let keys = Keys {
                secret: SECRET,
                public: &sets,
            };
            verify_with(token, keys, NOW, 30)
        }

        fn refused(r: Result<Claims, Rejection>) -> ApiError {
            match r {
                Err(Rejection::Refused(e)) => e,
                other => panic!("expected a refusal, got {other:?}"),
            }
        }

        #[test]
        fn rs256_and_es256_tokens_verify_with_the_key_their_kid_names() {
            let set = jwks();
            let t = mint_signed(&spec(), Signer::Rs256(rsa_key()), Some("rsa-1"));
            assert_eq!(check(&t, &set).unwrap().sub.as_deref(), Some("u1"));
            let t = mint_signed(&spec(), Signer::Es256(&ec_key(7)), Some("ec-1"));
            assert_eq!(check(&t, &set).unwrap().sub.as_deref(), Some("u1"));
        }

        #[test]
        fn hs256_keeps_working_beside_public_keys() {
            assert!(check(&mint(&spec(), SECRET), &jwks()).is_ok());
        }

        #[test]
        fn an_hs256_token_naming_a_public_key_is_refused() {
            let t = mint_signed(&spec(), Signer::Hs256(SECRET), Some("rsa-1"));
            let e = refused(check(&t, &jwks()));
            assert_eq!(e.code, ErrorCode::AuthFailed);
            assert!(e.message.contains("rsa-1"), "{}", e.message);
        }

        #[test]
        fn a_wrong_key_for_the_kid_is_refused() {
            let t = mint_signed(&spec(), Signer::Es256(&ec_key(8)), Some("ec-1"));
            assert_eq!(
                refused(check(&t, &jwks())).message,
                "invalid token signature"
            );
        }

        #[test]
        fn an_algorithm_that_does_not_fit_the_kid_is_refused() {
            let t = mint_signed(&spec(), Signer::Es256(&ec_key(7)), Some("rsa-1"));
            assert!(refused(check(&t, &jwks()))
                .message
                .contains("not an ES256 key"));
        }

        #[test]
        fn an_unknown_kid_asks_for_a_fresher_key_set() {
            let t = mint_signed(&spec(), Signer::Es256(&ec_key(7)), Some("ec-2"));
            assert_eq!(
                check(&t, &jwks()),
                Err(Rejection::UnknownKid("ec-2".into()))
            );
            let e = Rejection::UnknownKid("ec-2".into()).into_error();
            assert_eq!(e.code, ErrorCode::AuthFailed);
        }

        #[test]
        fn expiry_applies_to_public_key_tokens_too() {
            let mut s = spec();
            s.exp = Some(NOW - 60);
            let t = mint_signed(&s, Signer::Es256(&ec_key(7)), Some("ec-1"));
            assert_eq!(refused(check(&t, &jwks())).code, ErrorCode::AuthExpired);
        }

        #[test]
        fn other_algorithms_are_refused() {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let t = format!(
                "{}.{}.c2ln",
                b64.encode(r#"{"alg":"HS512","kid":"rsa-1"}"#),
                b64.encode(r#"{"sub":"x"}"#)
            );
            assert!(refused(check(&t, &jwks())).message.contains("HS512"));
        }
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
