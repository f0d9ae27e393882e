//! ID-token verification: pure and synchronous (token, trust, keys and clock in; claims or a refusal out).
//!
//! Rules: RS256 or ES256 only, and the algorithm must match the key's type; `kid` required when the set
//! holds several keys; `iss` equal to the trust's issuer; `aud` containing one of its audiences; `exp`,
//! `nbf` and `iat` checked with `CLOCK_LEEWAY`; `exp - iat` within the trust's `maxTokenAge` (else
//! `DEFAULT_MAX_TOKEN_AGE`); `jti` and the CI claims present. Refusals say what the pipeline author can fix.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::keys::{KeySet, KeyType, VerificationKey};
use super::peek::{JwtParts, PeekError};
use crate::api::trust::GitLabTrust;

/// Tokens longer than this are refused before parsing (GitLab's are about 1.5 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(30);
/// Longest `exp - iat` accepted when the trust sets no `require.maxTokenAge`: GitLab's default job
/// timeout, so a token minted for a job cannot outlive a normal job by much.
pub const DEFAULT_MAX_TOKEN_AGE: Duration = Duration::from_secs(3600);
/// Claims that only GitLab CI ID tokens carry.
pub const REQUIRED_CI_CLAIMS: [&str; 3] = ["project_id", "job_id", "pipeline_id"];

/// The accepted signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    RS256,
    ES256,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::RS256 => "RS256",
            SigningAlgorithm::ES256 => "ES256",
        }
    }

    fn key_type(self) -> KeyType {
        match self {
            SigningAlgorithm::RS256 => KeyType::Rsa,
            SigningAlgorithm::ES256 => KeyType::EcP256,
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            SigningAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// A token whose signature and standard claims checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub header_kid: Option<String>,
    pub alg: SigningAlgorithm,
    /// Every claim of the payload, as GitLab typed it (ids and booleans are strings).
    pub claims: Map<String, Value>,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    pub jti: String,
}

/// Why a token was refused. `error_code` maps to RFC 6749, `category` is a bounded metrics label, and the
/// message is meant for the pipeline author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "ID token is {size} bytes, more than the {limit}-byte limit; pass the ID token itself (e.g. $ID_TOKEN), not another value"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "ID token is not a compact JWT: {reason}; pass the variable named under the job's id_tokens:"
    )]
    Malformed { reason: String },
    #[error(
        "ID token is signed with {alg:?}; only RS256 and ES256 are accepted (GitLab signs ID tokens with RS256)"
    )]
    UnsupportedAlgorithm { alg: String },
    #[error(
        "ID token header has no kid, but trust {trust} has {key_count} keys; use an ID token minted by GitLab"
    )]
    MissingKeyId { trust: String, key_count: usize },
    #[error(
        "ID token was signed with key {kid:?}, which trust {trust} does not know (known: {known:?}); the issuer may have rotated keys, or the token comes from another GitLab instance"
    )]
    UnknownKey {
        trust: String,
        kid: String,
        known: Vec<String>,
    },
    #[error(
        "trust {trust} has no verification keys; see the GitLabTrust's status for the key fetch error"
    )]
    NoKeys { trust: String },
    #[error(
        "ID token uses {alg} but key {kid:?} is an {key_type} key; refusing the algorithm/key mismatch"
    )]
    KeyAlgorithmMismatch {
        alg: String,
        kid: String,
        key_type: &'static str,
    },
    #[error("ID token signature does not verify against key {kid:?} of trust {trust}")]
    BadSignature { trust: String, kid: String },
    #[error(
        "ID token issuer {found:?} is not the issuer of trust {trust} ({expected:?}); use a token from that GitLab instance"
    )]
    WrongIssuer {
        trust: String,
        found: String,
        expected: String,
    },
    #[error(
        "ID token audience {found:?} does not include any audience of trust {trust}: set `aud:` in the job's id_tokens to {suggested}"
    )]
    WrongAudience {
        trust: String,
        found: Vec<String>,
        suggested: String,
    },
    #[error("ID token has no {claim} claim")]
    MissingClaim { claim: &'static str },
    #[error("ID token claim {claim} is invalid: {reason}")]
    InvalidClaim { claim: &'static str, reason: String },
    #[error(
        "ID token expired at {exp} (now {now}, leeway {leeway}s); request a fresh token: GitLab mints one per job"
    )]
    Expired { exp: u64, now: u64, leeway: u64 },
    #[error(
        "ID token is not valid before {nbf} (now {now}, leeway {leeway}s); check the clocks of GitLab and the cluster"
    )]
    NotYetValid { nbf: u64, now: u64, leeway: u64 },
    #[error(
        "ID token was issued in the future (iat {iat}, now {now}, leeway {leeway}s); check the clocks of GitLab and the cluster"
    )]
    IssuedInFuture { iat: u64, now: u64, leeway: u64 },
    #[error(
        "ID token lives {lifetime_secs}s (exp - iat), longer than the {max_secs}s trust {trust} accepts; lower the job's timeout or raise the trust's require.maxTokenAge"
    )]
    LifetimeTooLong {
        trust: String,
        lifetime_secs: u64,
        max_secs: u64,
    },
    #[error(
        "ID token lacks the GitLab CI claims {missing:?}; only ID tokens from a GitLab CI job's id_tokens: are accepted"
    )]
    MissingCiClaims { missing: Vec<&'static str> },
    #[error("trust {trust} is misconfigured: {reason}")]
    TrustConfig { trust: String, reason: String },
}

impl VerifyError {
    /// RFC 6749 §5.2 error code.
    pub fn error_code(&self) -> &'static str {
        match self {
            VerifyError::TooLarge { .. } | VerifyError::Malformed { .. } => "invalid_request",
            _ => "invalid_grant",
        }
    }

    /// Bounded label for metrics and audit.
    pub fn category(&self) -> &'static str {
        match self {
            VerifyError::TooLarge { .. } => "too_large",
            VerifyError::Malformed { .. } => "malformed",
            VerifyError::UnsupportedAlgorithm { .. } => "unsupported_algorithm",
            VerifyError::MissingKeyId { .. } => "missing_kid",
            VerifyError::UnknownKey { .. } => "unknown_key",
            VerifyError::NoKeys { .. } => "no_keys",
            VerifyError::KeyAlgorithmMismatch { .. } => "key_algorithm_mismatch",
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::WrongIssuer { .. } => "wrong_issuer",
            VerifyError::WrongAudience { .. } => "wrong_audience",
            VerifyError::MissingClaim { .. } => "missing_claim",
            VerifyError::InvalidClaim { .. } => "invalid_claim",
            VerifyError::Expired { .. } => "expired",
            VerifyError::NotYetValid { .. } => "not_yet_valid",
            VerifyError::IssuedInFuture { .. } => "issued_in_future",
            VerifyError::LifetimeTooLong { .. } => "lifetime_too_long",
            VerifyError::MissingCiClaims { .. } => "missing_ci_claims",
            VerifyError::TrustConfig { .. } => "trust_config",
        }
    }
}

fn malformed(reason: impl Into<String>) -> VerifyError {
    VerifyError::Malformed {
        reason: reason.into(),
    }
}

impl From<PeekError> for VerifyError {
    fn from(err: PeekError) -> Self {
        malformed(err.to_string())
    }
}

/// Verifies a compact JWT against `keys` for `trust` at time `now`.
pub fn verify(
    token: &str,
    trust: &GitLabTrust,
    keys: &KeySet,
    now: SystemTime,
) -> Result<VerifiedToken, VerifyError> {
    let trust_name = trust.metadata.name.clone().unwrap_or_default();
    let spec = &trust.spec;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::TooLarge {
            size: token.len(),
            limit: MAX_TOKEN_BYTES,
        });
    }
    let parts = JwtParts::split(token)?;

    let header = parts.header()?;
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => SigningAlgorithm::RS256,
        Some("ES256") => SigningAlgorithm::ES256,
        Some(other) => {
            return Err(VerifyError::UnsupportedAlgorithm {
                alg: other.to_string(),
            });
        }
        None => return Err(malformed("header has no alg")),
    };
    if header.contains_key("crit") {
        return Err(malformed(
            "header has crit extensions, which are not supported",
        ));
    }
    let header_kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(malformed("header kid is not a string")),
    };

    let key = select_key(keys, header_kid.as_deref(), &trust_name)?;
    let key_label = key.kid.clone().unwrap_or_else(|| "-".into());
    if key.key_type != alg.key_type() || key.alg.as_deref().is_some_and(|a| a != alg.as_str()) {
        return Err(VerifyError::KeyAlgorithmMismatch {
            alg: alg.as_str().into(),
            kid: key_label,
            key_type: key.key_type.as_str(),
        });
    }
    let valid = jsonwebtoken::crypto::verify(
        parts.signature,
        parts.signing_input().as_bytes(),
        &key.decoding,
        alg.jwt(),
    )
    .unwrap_or(false);
    if !valid {
        return Err(VerifyError::BadSignature {
            trust: trust_name,
            kid: key_label,
        });
    }

    // Only now, with the signature checked, do the claims mean anything.
    let claims = parts.claims()?;

    let issuer = claims.get("iss").and_then(Value::as_str);
    if issuer != Some(spec.issuer.as_str()) {
        return Err(VerifyError::WrongIssuer {
            trust: trust_name,
            found: issuer.unwrap_or_default().into(),
            expected: spec.issuer.clone(),
        });
    }

    let audiences: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    if !audiences.iter().any(|a| spec.audiences.contains(a)) {
        return Err(VerifyError::WrongAudience {
            trust: trust_name,
            found: audiences,
            suggested: spec.audiences.first().cloned().unwrap_or_default(),
        });
    }

    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let leeway = CLOCK_LEEWAY.as_secs();
    let exp = numeric_date(&claims, "exp")?.ok_or(VerifyError::MissingClaim { claim: "exp" })?;
    let iat = numeric_date(&claims, "iat")?.ok_or(VerifyError::MissingClaim { claim: "iat" })?;
    if exp.saturating_add(leeway) <= now_secs {
        return Err(VerifyError::Expired {
            exp,
            now: now_secs,
            leeway,
        });
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")?
        && nbf > now_secs.saturating_add(leeway)
    {
        return Err(VerifyError::NotYetValid {
            nbf,
            now: now_secs,
            leeway,
        });
    }
    if iat > now_secs.saturating_add(leeway) {
        return Err(VerifyError::IssuedInFuture {
            iat,
            now: now_secs,
            leeway,
        });
    }
    if exp <= iat {
        return Err(VerifyError::InvalidClaim {
            claim: "exp",
            reason: format!("exp {exp} is not after iat {iat}"),
        });
    }
    let max_age = match spec
        .require
        .as_ref()
        .and_then(|r| r.max_token_age.as_deref())
    {
        Some(text) => crate::duration::parse(text).map_err(|e| VerifyError::TrustConfig {
            trust: trust_name.clone(),
            reason: format!("require.maxTokenAge: {e}"),
        })?,
        None => DEFAULT_MAX_TOKEN_AGE,
    };
    let lifetime = exp - iat;
    if lifetime > max_age.as_secs() {
        return Err(VerifyError::LifetimeTooLong {
            trust: trust_name,
            lifetime_secs: lifetime,
            max_secs: max_age.as_secs(),
        });
    }

    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() => j.clone(),
        None | Some(Value::Null) => return Err(VerifyError::MissingClaim { claim: "jti" }),
        Some(_) => {
            return Err(VerifyError::InvalidClaim {
                claim: "jti",
                reason: "must be a non-empty string".into(),
            });
        }
    };

    let mut missing = Vec::new();
    for claim in REQUIRED_CI_CLAIMS {
        match claims.get(claim) {
            Some(Value::String(v)) if !v.is_empty() => {}
            None | Some(Value::Null) => missing.push(claim),
            Some(Value::String(_)) => missing.push(claim),
            Some(_) => {
                return Err(VerifyError::InvalidClaim {
                    claim,
                    reason: "must be a string, as GitLab sends it".into(),
                });
            }
        }
    }
    if !missing.is_empty() {
        return Err(VerifyError::MissingCiClaims { missing });
    }

    Ok(VerifiedToken {
        header_kid,
        alg,
        claims,
        issued_at: UNIX_EPOCH + Duration::from_secs(iat),
        expires_at: UNIX_EPOCH + Duration::from_secs(exp),
        jti,
    })
}

fn select_key<'k>(
    keys: &'k KeySet,
    kid: Option<&str>,
    trust: &str,
) -> Result<&'k VerificationKey, VerifyError> {
    if keys.is_empty() {
        return Err(VerifyError::NoKeys {
            trust: trust.into(),
        });
    }
    match kid {
        Some(kid) => keys.find(kid).ok_or_else(|| VerifyError::UnknownKey {
            trust: trust.into(),
            kid: kid.into(),
            known: keys.key_ids(),
        }),
        None if keys.len() == 1 => Ok(&keys.keys()[0]),
        None => Err(VerifyError::MissingKeyId {
            trust: trust.into(),
            key_count: keys.len(),
        }),
    }
}

/// A NumericDate claim as whole seconds; fractional values are truncated.
fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<u64>, VerifyError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else if let Some(f) = n
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e15)
            {
                Ok(Some(f as u64))
            } else {
                Err(VerifyError::InvalidClaim {
                    claim,
                    reason: format!("{n} is not a non-negative NumericDate"),
                })
            }
        }
        Some(_) => Err(VerifyError::InvalidClaim {
            claim,
            reason: "must be a number of seconds since 1970".into(),
        }),
    }
}
