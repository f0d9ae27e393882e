//! Minting: GitLab-shaped CI ID token claims (defaults of a protected deploy job, overrides kept
//! consistent as GitLab would), signed with a current key, or deliberately badly for negative tests.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::DevIssuerError;
use super::keys::{KeyKind, Keyring, SigningKey};

/// Signature algorithm of a minted token, including deliberately bad ones for negative tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum MintAlgorithm {
    RS256,
    ES256,
    /// Unsigned (`alg: none`, empty signature).
    #[serde(rename = "none")]
    #[value(name = "none")]
    None,
    /// HS256 keyed with the chosen key's public key PEM: the classic key-confusion attack.
    #[serde(rename = "HS256-public-key")]
    #[value(name = "HS256-public-key")]
    Hs256PublicKey,
}

/// What to mint. Claims override the GitLab-shaped defaults; a `null` claim removes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MintRequest {
    pub claims: Map<String, Value>,
    /// `exp - iat`; default the issuer's lifetime (5 minutes, GitLab's default).
    pub lifetime_seconds: Option<u64>,
    /// `aud`: a string or an array of strings; default the issuer's audience.
    pub aud: Option<Value>,
    pub key: KeyKind,
    /// Default: RS256 for an RSA key, ES256 for an EC key.
    pub alg: Option<MintAlgorithm>,
    /// Header `kid` instead of the signing key's own.
    pub kid: Option<String>,
    /// Leave `kid` out of the header.
    pub omit_kid: bool,
}

impl MintRequest {
    pub fn new() -> Self {
        MintRequest::default()
    }

    /// Sets a claim to a string, the way GitLab types ids and booleans.
    pub fn claim(mut self, name: &str, value: impl Into<String>) -> Self {
        self.claims.insert(name.into(), Value::String(value.into()));
        self
    }

    /// Sets a claim to any JSON value (`Value::Null` removes the claim).
    pub fn claim_json(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.aud = Some(Value::String(aud.into()));
        self
    }

    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime_seconds = Some(lifetime.as_secs());
        self
    }

    pub fn key(mut self, key: KeyKind) -> Self {
        self.key = key;
        self
    }

    pub fn alg(mut self, alg: MintAlgorithm) -> Self {
        self.alg = Some(alg);
        self
    }

    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    pub fn omit_kid(mut self) -> Self {
        self.omit_kid = true;
        self
    }
}

/// Mints tokens of one issuer: its `iss`, default `aud` and lifetime, and a serial that makes job and
/// pipeline ids differ between tokens.
pub(super) struct Minter {
    pub(super) issuer: String,
    audience: String,
    lifetime: Duration,
    minted: AtomicU64,
}

impl Minter {
    pub(super) fn new(issuer: String, audience: String, lifetime: Duration) -> Minter {
        Minter {
            issuer,
            audience,
            lifetime,
            minted: AtomicU64::new(0),
        }
    }

    /// A compact JWT for `req`, signed with the current key of `req.key`.
    pub(super) fn mint(&self, keys: &Keyring, req: &MintRequest) -> Result<String, DevIssuerError> {
        let claims = self.claims(req);
        keys.with_key(req.key, |key| sign(claims, key, req))
    }

    fn claims(&self, req: &MintRequest) -> Map<String, Value> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lifetime = req.lifetime_seconds.unwrap_or(self.lifetime.as_secs());
        let serial = self.minted.fetch_add(1, Ordering::Relaxed);
        let mut claims = gitlab_claims(&self.issuer, serial);
        claims.insert(
            "aud".into(),
            req.aud
                .clone()
                .unwrap_or_else(|| self.audience.clone().into()),
        );
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.saturating_sub(5).into());
        claims.insert("exp".into(), (now + lifetime).into());
        let overridden = |name: &str| req.claims.contains_key(name);
        // Keep derived claims consistent with overridden ones, as GitLab would.
        if !overridden("namespace_path")
            && let Some(Value::String(path)) = req.claims.get("project_path")
        {
            let ns = path.rsplit_once('/').map_or("", |(ns, _)| ns).to_string();
            claims.insert("namespace_path".into(), ns.clone().into());
            claims.insert("job_namespace_path".into(), ns.into());
            claims.insert("job_project_path".into(), path.clone().into());
        }
        for (name, value) in &req.claims {
            if value.is_null() {
                claims.remove(name);
            } else {
                claims.insert(name.clone(), value.clone());
            }
        }
        let text = |claims: &Map<String, Value>, name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if !overridden("ref_path") && claims.contains_key("ref_path") {
            let prefix = if text(&claims, "ref_type") == "tag" {
                "refs/tags/"
            } else {
                "refs/heads/"
            };
            let ref_path = format!("{prefix}{}", text(&claims, "ref"));
            claims.insert("ref_path".into(), ref_path.into());
        }
        if !overridden("sub") {
            let sub = format!(
                "project_path:{}:ref_type:{}:ref:{}",
                text(&claims, "project_path"),
                text(&claims, "ref_type"),
                text(&claims, "ref")
            );
            claims.insert("sub".into(), sub.into());
        }
        claims
    }
}

/// Header and signature for `req` (algorithm, `kid` override or omission) over `claims`.
fn sign(
    claims: Map<String, Value>,
    key: &SigningKey,
    req: &MintRequest,
) -> Result<String, DevIssuerError> {
    let alg = req.alg.unwrap_or(match key.kind {
        KeyKind::Rsa => MintAlgorithm::RS256,
        KeyKind::Ec => MintAlgorithm::ES256,
    });
    let alg_name = match alg {
        MintAlgorithm::RS256 => "RS256",
        MintAlgorithm::ES256 => "ES256",
        MintAlgorithm::None => "none",
        MintAlgorithm::Hs256PublicKey => "HS256",
    };
    let mut header = Map::new();
    header.insert("alg".into(), alg_name.into());
    header.insert("typ".into(), "JWT".into());
    if !req.omit_kid {
        header.insert(
            "kid".into(),
            req.kid.clone().unwrap_or_else(|| key.kid.clone()).into(),
        );
    }
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
        URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
    );
    let signature = match alg {
        MintAlgorithm::None => String::new(),
        MintAlgorithm::Hs256PublicKey => jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(key.public_pem.as_bytes()),
            Algorithm::HS256,
        )
        .map_err(|e| DevIssuerError::Key(e.to_string()))?,
        MintAlgorithm::RS256 | MintAlgorithm::ES256 => {
            let jwt_alg = if alg == MintAlgorithm::RS256 {
                Algorithm::RS256
            } else {
                Algorithm::ES256
            };
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key.encoding, jwt_alg).map_err(
                |e| {
                    DevIssuerError::BadRequest(format!(
                        "cannot sign {alg_name} with the {:?} key: {e}",
                        key.kind
                    ))
                },
            )?
        }
    };
    Ok(format!("{signing_input}.{signature}"))
}

/// Every claim GitLab puts in a CI ID token (reference §1.3), for discovery's `claims_supported`.
pub(super) const GITLAB_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "namespace_id",
    "namespace_path",
    "project_id",
    "project_path",
    "job_namespace_id",
    "job_namespace_path",
    "job_project_id",
    "job_project_path",
    "user_id",
    "user_login",
    "user_email",
    "user_access_level",
    "pipeline_id",
    "pipeline_source",
    "job_id",
    "ref",
    "ref_type",
    "ref_path",
    "ref_protected",
    "environment",
    "environment_protected",
    "deployment_tier",
    "environment_action",
    "runner_id",
    "runner_environment",
    "sha",
    "project_visibility",
    "ci_config_ref_uri",
    "ci_config_sha",
];

/// Default claims of a protected deploy job, typed as GitLab types them (ids and booleans as strings,
/// `runner_id` a number). `serial` makes job and pipeline ids differ between tokens.
fn gitlab_claims(issuer: &str, serial: u64) -> Map<String, Value> {
    let host = issuer.trim_start_matches("https://");
    let sha = "714a629c0b401fdce83e847fc9589983fc6f46bc";
    let claims = json!({
        "iss": issuer,
        "jti": uuid_v4(),
        "namespace_id": "72",
        "namespace_path": "platform",
        "project_id": "1450",
        "project_path": "platform/payments-api",
        "job_namespace_id": "72",
        "job_namespace_path": "platform",
        "job_project_id": "1450",
        "job_project_path": "platform/payments-api",
        "user_id": "311",
        "user_login": "alice",
        "user_email": "alice@example.com",
        "user_access_level": "maintainer",
        "pipeline_id": (98012 + serial).to_string(),
        "pipeline_source": "push",
        "job_id": (771234 + serial).to_string(),
        "ref": "main",
        "ref_type": "branch",
        "ref_path": "refs/heads/main",
        "ref_protected": "true",
        "environment": "production",
        "environment_protected": "true",
        "deployment_tier": "production",
        "environment_action": "start",
        "runner_id": 55,
        "runner_environment": "self-hosted",
        "sha": sha,
        "project_visibility": "private",
        "ci_config_ref_uri": format!("{host}/platform/payments-api//.gitlab-ci.yml@refs/heads/main"),
        "ci_config_sha": sha,
    });
    match claims {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::{JwtParts, peek};

    fn minter() -> (Minter, Keyring) {
        let minter = Minter::new(
            "https://issuer.test".into(),
            "https://aud.test".into(),
            Duration::from_secs(300),
        );
        (minter, Keyring::load(None).expect("keys"))
    }

    #[test]
    fn headers_say_what_the_negative_tests_ask_for() {
        let (minter, keys) = minter();
        let plain = peek(&minter.mint(&keys, &MintRequest::new()).unwrap()).unwrap();
        assert_eq!(plain.header.get("alg"), Some(&"RS256".into()));
        assert_eq!(
            plain.header.get("kid"),
            Some(&keys.kid(KeyKind::Rsa).into())
        );

        let ec = peek(
            &minter
                .mint(&keys, &MintRequest::new().key(KeyKind::Ec))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(ec.header.get("alg"), Some(&"ES256".into()));
        assert_eq!(ec.header.get("kid"), Some(&keys.kid(KeyKind::Ec).into()));

        let unsigned = minter
            .mint(
                &keys,
                &MintRequest::new().alg(MintAlgorithm::None).omit_kid(),
            )
            .unwrap();
        let parts = JwtParts::split(&unsigned).unwrap();
        assert_eq!(parts.signature, "");
        let header = parts.header().unwrap();
        assert_eq!(header.get("alg"), Some(&"none".into()));
        assert!(!header.contains_key("kid"));

        let confused = minter
            .mint(
                &keys,
                &MintRequest::new()
                    .alg(MintAlgorithm::Hs256PublicKey)
                    .kid("other"),
            )
            .unwrap();
        let confused = peek(&confused).unwrap();
        assert_eq!(confused.header.get("alg"), Some(&"HS256".into()));
        assert_eq!(confused.header.get("kid"), Some(&"other".into()));
    }

    #[test]
    fn every_token_is_a_new_job_of_its_issuer() {
        let (minter, keys) = minter();
        let first = peek(&minter.mint(&keys, &MintRequest::new()).unwrap()).unwrap();
        let second = peek(&minter.mint(&keys, &MintRequest::new()).unwrap()).unwrap();
        assert_eq!(first.issuer(), Some("https://issuer.test"));
        assert_eq!(first.claims.get("aud"), Some(&"https://aud.test".into()));
        for claim in ["jti", "job_id", "pipeline_id"] {
            assert_ne!(first.claims.get(claim), second.claims.get(claim), "{claim}");
        }
    }

    #[test]
    fn signing_with_the_wrong_key_type_is_a_bad_request() {
        let (minter, keys) = minter();
        let err = minter
            .mint(
                &keys,
                &MintRequest::new()
                    .key(KeyKind::Ec)
                    .alg(MintAlgorithm::RS256),
            )
            .unwrap_err();
        assert!(matches!(err, DevIssuerError::BadRequest(_)), "{err}");
    }
}
