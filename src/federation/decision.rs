//! The exchange decision as plain data: how a verification failure or a `match_token` outcome turns into
//! an RFC 6749 error, and what the caller is told. No client, no clock: the exchange service and
//! `oam-trust explain` both call these functions, so `explain` prints what the service decides.
//!
//! Disclosure rule: until a token's signature has verified against a trusted key, the caller is
//! anonymous, so every refusal before that point (unknown issuer, malformed token, unsupported or
//! mismatched algorithm, unknown key, bad signature) gets the same fixed description plus a
//! correlation id; the precise reason goes only to the audit log under that id. Once the signature
//! verified, the caller is a GitLab job of a trusted instance and gets a description it can act on
//! (expired, wrong audience, which grant condition failed, ...).
use serde::Serialize;

use crate::access::matcher::{MismatchReason, TokenRefusal};
use crate::access::{Grant, GrantSet, MatchOutcome};
use crate::oidc::VerifyError;

pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The fixed description of every refusal before the signature verified.
pub const UNAUTHENTICATED_DESCRIPTION: &str = "the ID token was not accepted: it is not a token signed by a GitLab instance this cluster trusts for token exchange (check the job's id_tokens: and the GitLabTrust's issuer); quote the correlation id to the cluster operators";

/// RFC 6749 §5.2 error codes (plus the two generic server answers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    InvalidGrant,
    InvalidTarget,
    AccessDenied,
    ServerError,
    TemporarilyUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// HTTP status of the error answer.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::InvalidGrant | ErrorCode::InvalidTarget => 400,
            ErrorCode::AccessDenied => 403,
            ErrorCode::ServerError => 500,
            ErrorCode::TemporarilyUnavailable => 503,
        }
    }
}

/// A refusal: the RFC code, a bounded category (metrics label, audit `reason`), the description the
/// caller sees and the detail only the audit log sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub code: ErrorCode,
    pub category: &'static str,
    pub description: String,
    /// The precise reason, for the audit log (never the token).
    pub detail: String,
}

impl Denial {
    pub fn new(code: ErrorCode, category: &'static str, description: impl Into<String>) -> Self {
        let description = description.into();
        Denial {
            code,
            category,
            detail: description.clone(),
            description,
        }
    }

    /// A refusal of an anonymous caller: generic description, precise detail for the audit log.
    pub fn unauthenticated(category: &'static str, detail: impl Into<String>) -> Self {
        Denial {
            code: ErrorCode::InvalidGrant,
            category,
            description: UNAUTHENTICATED_DESCRIPTION.into(),
            detail: detail.into(),
        }
    }
}

/// Whether `err` arises before the signature verified, or from the trust's own configuration (then the
/// caller learns nothing specific; the audit log has the detail).
pub fn before_signature(err: &VerifyError) -> bool {
    matches!(
        err,
        VerifyError::TooLarge { .. }
            | VerifyError::Malformed { .. }
            | VerifyError::UnsupportedAlgorithm { .. }
            | VerifyError::MissingKeyId { .. }
            | VerifyError::UnknownKey { .. }
            | VerifyError::NoKeys { .. }
            | VerifyError::KeyAlgorithmMismatch { .. }
            | VerifyError::BadSignature { .. }
            | VerifyError::TrustConfig { .. }
    )
}

/// The refusal for a failed verification.
pub fn verify_denial(err: &VerifyError) -> Denial {
    if before_signature(err) {
        return Denial::unauthenticated(err.category(), err.to_string());
    }
    let code = match err.error_code() {
        "invalid_request" => ErrorCode::InvalidRequest,
        _ => ErrorCode::InvalidGrant,
    };
    Denial::new(code, err.category(), err.to_string())
}

/// Of several verification failures (one per trust sharing the issuer), the one to report: a failure
/// after the signature verified says more than one before.
pub fn most_specific(errors: Vec<VerifyError>) -> Option<VerifyError> {
    let mut errors = errors;
    let pos = errors
        .iter()
        .position(|e| !before_signature(e))
        .unwrap_or(0);
    if errors.is_empty() {
        None
    } else {
        Some(errors.swap_remove(pos))
    }
}

/// The `resource` value that names a grant: `<namespace>/<application>[/<component>]`.
pub fn resource_of(grant: &Grant) -> String {
    match &grant.component {
        Some(c) => format!("{}/{}/{c}", grant.namespace, grant.application),
        None => format!("{}/{}", grant.namespace, grant.application),
    }
}

/// Cap on the mismatches listed in a description (the audit detail lists them all).
const LISTED_MISMATCHES: usize = 8;

/// The grant a verified token gets, or the refusal. `outcome` is `match_token`'s answer for the same
/// token, trust, grants and resource.
pub fn decide<'a>(
    outcome: MatchOutcome<'a>,
    trust: &str,
    grants: &GrantSet,
    resource: Option<&str>,
) -> Result<&'a Grant, Denial> {
    match outcome {
        MatchOutcome::Matched { grant, .. } => Ok(grant),
        MatchOutcome::TokenRefused(refusal) => Err(token_refusal(&refusal, trust)),
        MatchOutcome::Ambiguous(candidates) => {
            let mut names: Vec<String> = candidates.iter().map(|g| resource_of(g)).collect();
            names.sort();
            names.dedup();
            Err(Denial::new(
                ErrorCode::InvalidTarget,
                "ambiguous",
                format!(
                    "the ID token matches {} grants; choose one with resource= (oam-trust login --resource): {}",
                    candidates.len(),
                    names.join(", ")
                ),
            ))
        }
        MatchOutcome::NoMatch(mismatches) => {
            let relevant: Vec<_> = mismatches
                .iter()
                .filter(|m| matches!(m.reason, MismatchReason::Subjects(_)))
                .collect();
            if grants.grants.iter().all(|g| g.trust != trust) {
                return Err(Denial::new(
                    ErrorCode::AccessDenied,
                    "no_grant",
                    format!(
                        "no Application declares gitlab-access under GitLabTrust {trust:?}; add a gitlab-access policy or trait naming this project"
                    ),
                ));
            }
            if let Some(resource) = resource
                && relevant.is_empty()
            {
                return Err(Denial::new(
                    ErrorCode::InvalidTarget,
                    "unknown_resource",
                    format!(
                        "no grant under GitLabTrust {trust:?} covers resource {resource:?}; use <namespace>/<application>[/<component>] of an Application that declares gitlab-access"
                    ),
                ));
            }
            let all: Vec<String> = relevant.iter().map(ToString::to_string).collect();
            // The caller is told only about subjects that name its own project or group (they
            // failed on a later field); other teams' subjects and conditions stay in the audit log.
            let own: Vec<String> = relevant.iter().filter_map(|m| own_subjects(m)).collect();
            let mut listed: Vec<String> = own.iter().take(LISTED_MISMATCHES).cloned().collect();
            if own.len() > LISTED_MISMATCHES {
                listed.push(format!("and {} more", own.len() - LISTED_MISMATCHES));
            }
            let description = if listed.is_empty() {
                format!(
                    "no grant under GitLabTrust {trust:?} names this job's project or group; add a gitlab-access subject for it"
                )
            } else {
                format!("no grant matches this job: {}", listed.join(" | "))
            };
            Err(Denial {
                code: ErrorCode::AccessDenied,
                category: "no_matching_grant",
                description,
                detail: format!("no grant matches this job: {}", all.join(" | ")),
            })
        }
    }
}

/// Fields that say whose a subject is: a subject that fails on one of them is another project's.
const IDENTITY_FIELDS: [&str; 4] = ["projectId", "namespaceId", "projectPath", "namespacePath"];

/// A grant's mismatch reduced to the subjects that name the caller's project or group, as text.
fn own_subjects(m: &crate::access::matcher::GrantMismatch) -> Option<String> {
    let MismatchReason::Subjects(subjects) = &m.reason else {
        return None;
    };
    let own: Vec<_> = subjects
        .iter()
        .filter(|s| !IDENTITY_FIELDS.contains(&s.field))
        .cloned()
        .collect();
    if own.is_empty() {
        return None;
    }
    let reduced = crate::access::matcher::GrantMismatch {
        reason: MismatchReason::Subjects(own),
        ..m.clone()
    };
    Some(reduced.to_string())
}

fn token_refusal(refusal: &TokenRefusal, trust: &str) -> Denial {
    let (code, category) = match refusal {
        TokenRefusal::MissingCiClaim { .. } => (ErrorCode::InvalidGrant, "missing_ci_claims"),
        TokenRefusal::ForkPipeline { .. } | TokenRefusal::UnverifiableMergeRequestPipeline => {
            (ErrorCode::AccessDenied, "fork_pipeline")
        }
        TokenRefusal::NotAllowed { .. } => (ErrorCode::AccessDenied, "not_allowed"),
        TokenRefusal::RefNotProtected { .. } => (ErrorCode::AccessDenied, "ref_not_protected"),
        TokenRefusal::EnvironmentNotProtected => {
            (ErrorCode::AccessDenied, "environment_not_protected")
        }
        TokenRefusal::TokenTooOld { .. } => (ErrorCode::InvalidGrant, "lifetime_too_long"),
        TokenRefusal::InvalidRequirement(_) => (ErrorCode::ServerError, "trust_config"),
        TokenRefusal::InvalidResource(_) => (ErrorCode::InvalidTarget, "invalid_resource"),
    };
    Denial::new(code, category, format!("GitLabTrust {trust:?}: {refusal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_before_the_signature_say_nothing_specific() {
        let bad = VerifyError::BadSignature {
            trust: "t".into(),
            kid: "k".into(),
        };
        let unknown = VerifyError::UnknownKey {
            trust: "t".into(),
            kid: "k".into(),
            known: vec!["a".into()],
        };
        let (a, b) = (verify_denial(&bad), verify_denial(&unknown));
        assert_eq!(a.description, b.description);
        assert_eq!(a.description, UNAUTHENTICATED_DESCRIPTION);
        assert_ne!(a.category, b.category);
        assert!(a.detail.contains("signature"));
        let expired = verify_denial(&VerifyError::Expired {
            exp: 1,
            now: 100,
            leeway: 30,
        });
        assert!(expired.description.contains("expired"), "{expired:?}");
        assert_eq!(expired.code, ErrorCode::InvalidGrant);
    }

    #[test]
    fn the_post_signature_error_is_reported_among_several() {
        let chosen = most_specific(vec![
            VerifyError::BadSignature {
                trust: "a".into(),
                kid: "k".into(),
            },
            VerifyError::WrongAudience {
                trust: "b".into(),
                found: vec![],
                suggested: "x".into(),
            },
        ])
        .unwrap();
        assert_eq!(chosen.category(), "wrong_audience");
        assert!(most_specific(vec![]).is_none());
    }
}
