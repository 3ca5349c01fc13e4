//! Public keys for RS256 and ES256 tokens: read from `JWT_PUBLIC_KEYS` (PEM,
//! a JWK, a JWK set, or a JSON object of `kid` → PEM) or from the JWK set at
//! `JWT_JWKS_URL`, and picked by the token's `kid`.

use jwt_compact::jwk::JsonWebKey;
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey as _;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::RsaPublicKey;
use serde_json::Value;

/// A key that verifies one algorithm.
#[derive(Debug, Clone, PartialEq)]
pub enum PublicKey {
    /// RS256.
    Rsa(RsaPublicKey),
    /// ES256 (P-256).
    P256(VerifyingKey),
}

/// A key and the `kid` it is published under, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedKey {
    pub kid: Option<String>,
    pub key: PublicKey,
}

/// A set of public keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeySet {
    keys: Vec<NamedKey>,
    /// Entries of a JWK set that were skipped (another key type or curve).
    pub skipped: usize,
}

impl KeySet {
    /// Reads `JWT_PUBLIC_KEYS`: a JWK set, one JWK, a JSON object mapping
    /// `kid` to PEM, or one or more PEM blocks (keys without a `kid`).
    pub fn parse(text: &str) -> Result<KeySet, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(KeySet::default());
        }
        if !text.starts_with('{') {
            return pem_blocks(text, None);
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON and not PEM: {e}"))?;
        if value.get("keys").is_some() || value.get("kty").is_some() {
            return KeySet::from_jwks_value(&value);
        }
        let Value::Object(map) = value else {
            return Err("expected a JWK set, a JWK or an object of kid → PEM".into());
        };
        let mut set = KeySet::default();
        for (kid, pem) in map {
            let pem = pem
                .as_str()
                .ok_or_else(|| format!("the key for kid '{kid}' must be a PEM string"))?;
            set.keys.extend(pem_blocks(pem, Some(&kid))?.keys);
        }
        Ok(set)
    }

    /// Reads a JWK set document (`{"keys":[…]}`), as served at a JWKS URL.
    pub fn from_jwks(text: &str) -> Result<KeySet, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|_| "the key set is not JSON".to_owned())?;
        if value.get("keys").is_none() {
            return Err("the key set has no 'keys' list".into());
        }
        KeySet::from_jwks_value(&value)
    }

    fn from_jwks_value(value: &Value) -> Result<KeySet, String> {
        let entries: Vec<&Value> = match value.get("keys") {
            Some(Value::Array(list)) => list.iter().collect(),
            Some(_) => return Err("'keys' must be a list".into()),
            None => vec![value],
        };
        let mut set = KeySet::default();
        for entry in entries {
            match jwk_key(entry) {
                Some(key) => set.keys.push(NamedKey {
                    kid: entry.get("kid").and_then(Value::as_str).map(str::to_owned),
                    key,
                }),
                None => set.skipped += 1,
            }
        }
        Ok(set)
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether some key is published under `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The keys a token with `kid` may be signed with: the one under that
    /// `kid`, else (or without a `kid`) the keys published without one.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a PublicKey> + 'a {
        let named = kid.filter(|k| self.has_kid(k));
        self.keys
            .iter()
            .filter(move |k| match named {
                Some(kid) => k.kid.as_deref() == Some(kid),
                None => k.kid.is_none(),
            })
            .map(|k| &k.key)
    }
}

/// An RSA or P-256 public key from a JWK; `None` for any other kind.
fn jwk_key(entry: &Value) -> Option<PublicKey> {
    let jwk: JsonWebKey<'_> = serde_json::from_value(entry.clone()).ok()?;
    match &jwk {
        JsonWebKey::Rsa { .. } => RsaPublicKey::try_from(&jwk.to_verifying_key())
            .ok()
            .map(PublicKey::Rsa),
        JsonWebKey::EllipticCurve { curve, .. } if curve == "P-256" => {
            VerifyingKey::try_from(&jwk.to_verifying_key())
                .ok()
                .map(PublicKey::P256)
        }
        _ => None,
    }
}

/// Every PEM public key in `text`, each under `kid`.
fn pem_blocks(text: &str, kid: Option<&str>) -> Result<KeySet, String> {
    let mut set = KeySet::default();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start..];
        let end_marker = after
            .find("-----END ")
            .ok_or("a PEM block has no END line")?;
        let close = after[end_marker + 9..]
            .find("-----")
            .ok_or("a PEM block's END line is cut off")?;
        let block = &after[..end_marker + 9 + close + 5];
        set.keys.push(NamedKey {
            kid: kid.map(str::to_owned),
            key: pem_key(block)?,
        });
        rest = &after[block.len()..];
    }
    if set.keys.is_empty() {
        return Err("no PEM public key found".into());
    }
    Ok(set)
}

fn pem_key(block: &str) -> Result<PublicKey, String> {
    if block.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        return RsaPublicKey::from_pkcs1_pem(block)
            .map(PublicKey::Rsa)
            .map_err(|e| format!("bad RSA public key: {e}"));
    }
    if let Ok(k) = RsaPublicKey::from_public_key_pem(block) {
        return Ok(PublicKey::Rsa(k));
    }
    VerifyingKey::from_public_key_pem(block)
        .map(PublicKey::P256)
        .map_err(|_| "a PEM key is neither RSA nor P-256".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    fn ec_key(seed: u8) -> VerifyingKey {
        let secret = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
        *secret.verifying_key()
    }

    fn ec_jwk(key: &VerifyingKey, kid: &str) -> Value {
        let mut v = serde_json::to_value(JsonWebKey::from(key)).unwrap();
        v["kid"] = kid.into();
        v
    }

    #[test]
    fn a_jwk_set_is_read_by_kid_and_other_key_types_are_skipped() {
        let doc = serde_json::json!({"keys": [
            ec_jwk(&ec_key(1), "a"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            ec_jwk(&ec_key(2), "b"),
        ]});
        let set = KeySet::from_jwks(&doc.to_string()).unwrap();
        assert_eq!(set.skipped, 1);
        assert!(set.has_kid("a") && set.has_kid("b") && !set.has_kid("sym"));
        let picked: Vec<&PublicKey> = set.candidates(Some("b")).collect();
        assert_eq!(picked, vec![&PublicKey::P256(ec_key(2))]);
    }

    #[test]
    fn pem_keys_without_a_kid_serve_tokens_with_an_unpublished_kid() {
        let pem = ec_key(3).to_public_key_pem(LineEnding::LF).unwrap();
        let set = KeySet::parse(&pem).unwrap();
        assert_eq!(set.candidates(None).count(), 1);
        assert_eq!(set.candidates(Some("whatever")).count(), 1);
    }

    #[test]
    fn an_object_of_kid_to_pem_names_each_key() {
        let pem = ec_key(4).to_public_key_pem(LineEnding::LF).unwrap();
        let set = KeySet::parse(&serde_json::json!({"k1": pem}).to_string()).unwrap();
        assert!(set.has_kid("k1"));
        assert_eq!(set.candidates(Some("other")).count(), 0);
    }

    #[test]
    fn garbage_is_an_error_naming_the_problem() {
        assert!(KeySet::parse("hello").unwrap_err().contains("PEM"));
        assert!(KeySet::from_jwks("<html>")
            .unwrap_err()
            .contains("not JSON"));
        assert!(KeySet::from_jwks("{}").unwrap_err().contains("keys"));
        assert!(KeySet::parse("").unwrap().is_empty());
    }
}
