//! Verification keys: the `KeySet` parsed from one JWKS document, keeping only keys that can verify RS256
//! or ES256 and noting why the others were skipped.
//!
//! Pure: bytes in, keys out. Fetching and caching them is `cache`'s job.
use jsonwebtoken::DecodingKey;
use serde_json::Value;

/// Most keys read from one JWKS document; GitLab publishes two.
pub const MAX_KEYS: usize = 32;

/// Key type, which fixes the one algorithm the key verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA, verifies RS256.
    Rsa,
    /// EC on P-256, verifies ES256.
    EcP256,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "RSA",
            KeyType::EcP256 => "EC P-256",
        }
    }
}

/// One usable verification key.
#[derive(Clone)]
pub struct VerificationKey {
    pub kid: Option<String>,
    /// `alg` as published, if any (always RS256 or ES256 for a kept key).
    pub alg: Option<String>,
    /// `use` as published, if any (always `sig` for a kept key).
    pub key_use: Option<String>,
    pub key_type: KeyType,
    pub(crate) decoding: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("key_use", &self.key_use)
            .field("key_type", &self.key_type)
            .finish()
    }
}

/// Why a JWKS document gave no key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    #[error("JWKS is not valid JSON: {0}")]
    Json(String),
    #[error("JWKS has no \"keys\" array")]
    NoKeysArray,
    #[error("JWKS has no usable RS256 or ES256 signing key{}", skipped_note(.skipped))]
    NoUsableKeys { skipped: Vec<String> },
}

fn skipped_note(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (skipped: {})", skipped.join("; "))
    }
}

/// The keys of one JWKS document that can verify RS256 or ES256 signatures.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
    skipped: Vec<String>,
}

impl KeySet {
    /// An empty set (nothing verifies against it).
    pub fn empty() -> Self {
        KeySet::default()
    }

    /// Parses a JWKS document; keys that cannot verify RS256/ES256 are skipped with a note.
    pub fn from_jwks_json(json: &[u8]) -> Result<KeySet, KeySetError> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| KeySetError::Json(e.to_string()))?;
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(KeySetError::NoKeysArray)?;
        let mut set = KeySet::default();
        for (index, entry) in entries.iter().enumerate() {
            let kid = entry.get("kid").and_then(Value::as_str).map(str::to_string);
            let label = match &kid {
                Some(kid) => format!("kid {kid:?}"),
                None => format!("key #{index}"),
            };
            if set.keys.len() >= MAX_KEYS {
                set.skipped
                    .push(format!("{label}: more than {MAX_KEYS} keys"));
                continue;
            }
            match parse_jwk(entry, kid) {
                Ok(key) => set.keys.push(key),
                Err(reason) => set.skipped.push(format!("{label}: {reason}")),
            }
        }
        if set.keys.is_empty() {
            return Err(KeySetError::NoUsableKeys {
                skipped: set.skipped,
            });
        }
        Ok(set)
    }

    pub fn keys(&self) -> &[VerificationKey] {
        &self.keys
    }

    /// Notes on keys that were skipped and why.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Key ids of the usable keys (keys without a `kid` are listed as `-`).
    pub fn key_ids(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.kid.clone().unwrap_or_else(|| "-".into()))
            .collect()
    }

    pub fn find(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn parse_jwk(entry: &Value, kid: Option<String>) -> Result<VerificationKey, String> {
    let field = |name: &str| entry.get(name).and_then(Value::as_str);
    let alg = field("alg").map(str::to_string);
    let key_use = field("use").map(str::to_string);
    if let Some(u) = &key_use
        && u != "sig"
    {
        return Err(format!("use {u:?} is not \"sig\""));
    }
    let (key_type, decoding) = match field("kty") {
        Some("RSA") => {
            let (n, e) = field("n")
                .zip(field("e"))
                .ok_or("RSA key without n and e")?;
            let n_bytes = b64url(n).ok_or("n is not base64url")?;
            b64url(e).ok_or("e is not base64url")?;
            if n_bytes.len() < 256 {
                return Err(format!(
                    "RSA modulus of {} bits is too short (need 2048)",
                    n_bytes.len() * 8
                ));
            }
            let key =
                DecodingKey::from_rsa_components(n, e).map_err(|e| format!("bad RSA key: {e}"))?;
            (KeyType::Rsa, key)
        }
        Some("EC") => {
            match field("crv") {
                Some("P-256") => {}
                other => return Err(format!("EC curve {other:?} is not supported (only P-256)")),
            }
            let (x, y) = field("x").zip(field("y")).ok_or("EC key without x and y")?;
            let ok = |c: &str| b64url(c).is_some_and(|b| b.len() == 32);
            if !ok(x) || !ok(y) {
                return Err("x and y must be 32-byte base64url coordinates".into());
            }
            let key =
                DecodingKey::from_ec_components(x, y).map_err(|e| format!("bad EC key: {e}"))?;
            (KeyType::EcP256, key)
        }
        Some(other) => return Err(format!("key type {other:?} is not supported")),
        None => return Err("no kty".into()),
    };
    let expected_alg = match key_type {
        KeyType::Rsa => "RS256",
        KeyType::EcP256 => "ES256",
    };
    if let Some(a) = &alg
        && a != expected_alg
    {
        return Err(format!(
            "alg {a:?} is not accepted (only {expected_alg} for this key type)"
        ));
    }
    Ok(VerificationKey {
        kid,
        alg,
        key_use,
        key_type,
        decoding,
    })
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}
