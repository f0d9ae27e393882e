//! The verify step of an exchange: route the ID token to the trusts of its (unverified) issuer, verify
//! it with `oidc` against each until one accepts, and read its claims as GitLab's. Until the signature
//! verified every refusal is anonymous (`Denial::unauthenticated`: one fixed answer, the reason only in
//! the audit record).
use std::time::SystemTime;

use serde_json::Value;

use super::audit::AuditRecord;
use super::context::Context;
use super::decision::{self, Denial, ErrorCode};
use crate::access::GitLabClaims;
use crate::api::trust::GitLabTrust;
use crate::oidc::{JwtParts, KeyCaches, VerifiedToken, VerifyError};

/// An ID token whose signature verified under one of its issuer's trusts.
pub struct VerifiedJob {
    pub issuer: String,
    pub trust: GitLabTrust,
    pub trust_name: String,
    pub token: VerifiedToken,
    pub claims: GitLabClaims,
}

/// Verifies `subject_token` at `now` and records who the job is.
pub async fn verify(
    cx: &Context,
    subject_token: &str,
    now: SystemTime,
    record: &mut AuditRecord,
) -> Result<VerifiedJob, Denial> {
    let Some(issuer) = unverified_issuer(subject_token) else {
        return Err(Denial::unauthenticated(
            "malformed",
            "the subject_token is not a JWT with an iss claim",
        ));
    };
    let trusts = cx.index.trusts_for_issuer(&issuer);
    if trusts.is_empty() {
        return Err(Denial::unauthenticated(
            "unknown_issuer",
            format!("no GitLabTrust with token exchange has issuer {issuer:?}"),
        ));
    }
    let (trust, token) = verify_with_trusts(&cx.key_caches, subject_token, &trusts, now).await?;
    let trust_name = trust.metadata.name.clone().unwrap_or_default();
    record.verified = true;
    record.trust = trust_name.clone();
    record.issuer = issuer.clone();
    record.jti = token.jti.clone();
    let claims = GitLabClaims::from_json(Value::Object(token.claims.clone())).map_err(|e| {
        Denial::new(
            ErrorCode::InvalidGrant,
            "invalid_claim",
            format!("the ID token's claims are not GitLab-shaped: {e}"),
        )
    })?;
    fill_claims(record, &claims);
    Ok(VerifiedJob {
        issuer,
        trust,
        trust_name,
        token,
        claims,
    })
}

/// The token's `iss`, read without verification, only to pick the trusts that will verify it. The
/// header is left to `oidc::verify`, which refuses a bad one under the trust.
fn unverified_issuer(token: &str) -> Option<String> {
    let claims = JwtParts::split(token)
        .and_then(|parts| parts.claims())
        .ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

/// Verifies against every trust of the issuer; the first that accepts wins.
async fn verify_with_trusts(
    key_caches: &KeyCaches,
    token: &str,
    trusts: &[GitLabTrust],
    now: SystemTime,
) -> Result<(GitLabTrust, VerifiedToken), Denial> {
    let mut errors = Vec::new();
    for trust in trusts {
        let cache = match key_caches.get(trust) {
            Ok(c) => c,
            Err(e) => {
                errors.push(VerifyError::TrustConfig {
                    trust: trust.metadata.name.clone().unwrap_or_default(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        match cache.verify(token, trust, now).await {
            Ok(verified) => return Ok((trust.clone(), verified)),
            Err(e) => errors.push(e),
        }
    }
    Err(decision::most_specific(errors)
        .map(|e| decision::verify_denial(&e))
        .unwrap_or_else(|| Denial::unauthenticated("unknown_issuer", "no trust to verify with")))
}

fn fill_claims(record: &mut AuditRecord, claims: &GitLabClaims) {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    record.project_id = s(&claims.project_id);
    record.project_path = s(&claims.project_path);
    record.pipeline_id = s(&claims.pipeline_id);
    record.job_id = s(&claims.job_id);
    record.user = s(&claims.user_login);
    record.ref_ = s(&claims.ref_);
    record.environment = s(&claims.environment);
    record.jti = s(&claims.jti);
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn the_issuer_is_peeked_without_verification() {
        let payload = b64(r#"{"iss":"https://gitlab.example.com"}"#);
        assert_eq!(
            unverified_issuer(&format!("e30.{payload}.sig")).as_deref(),
            Some("https://gitlab.example.com")
        );
        // The header is not the router's business: verify refuses it under the trust.
        assert_eq!(
            unverified_issuer(&format!("!!.{payload}.sig")).as_deref(),
            Some("https://gitlab.example.com")
        );
        assert_eq!(unverified_issuer("garbage"), None);
    }

    #[test]
    fn what_is_not_a_jwt_with_an_iss_has_no_issuer() {
        let payload = b64(r#"{"iss":"https://gitlab.example.com"}"#);
        for token in [
            String::new(),
            "garbage".into(),
            "a.b.c".into(),
            format!("e30.{payload}"),
            format!("e30.{payload}.sig.extra"),
            format!("e30.{payload}=.sig"),
            format!("e30.{}.sig", b64(r#"["https://gitlab.example.com"]"#)),
            format!("e30.{}.sig", b64(r#"{"iss":42}"#)),
            format!("e30.{}.sig", b64(r#"{"sub":"x"}"#)),
        ] {
            assert_eq!(unverified_issuer(&token), None, "{token:?}");
        }
    }

    /// A context whose index never learns a trust (its watches are not driven): no API calls.
    fn offline_context() -> Context {
        use super::super::audit::{Auditor, ExchangeMetrics};
        use super::super::events::TokenEvents;
        use super::super::grants::GrantIndex;
        use super::super::kubeconfig::ClusterEndpoint;
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let (index, _watches) =
            GrantIndex::start(&client, crate::names::DEFAULT_DEFINITIONS_NAMESPACE);
        let reporter = kube::runtime::events::Reporter {
            controller: "test".into(),
            instance: None,
        };
        let metrics = crate::runtime::metrics::Metrics::default();
        Context::new(
            client.clone(),
            index.clone(),
            std::sync::Arc::default(),
            Auditor::new(
                ExchangeMetrics::register(&metrics),
                std::sync::Arc::new(crate::federation::MemoryAuditSink::default()),
                None,
            ),
            TokenEvents::new(client, reporter, index),
            Default::default(),
            ClusterEndpoint {
                server: "https://127.0.0.1:6443".into(),
                ca_pem: None,
            },
        )
    }

    #[tokio::test]
    async fn a_token_that_is_not_a_jwt_gets_the_same_anonymous_answer_as_an_unknown_issuer() {
        let cx = offline_context();
        let now = SystemTime::now();
        let payload = b64(r#"{"iss":"https://gitlab.example.com"}"#);
        let mut record = AuditRecord::default();
        let routed = format!("e30.{payload}.sig");
        let unknown = verify(&cx, &routed, now, &mut record).await.err().unwrap();
        assert_eq!(unknown.category, "unknown_issuer");
        assert_eq!(unknown.description, decision::UNAUTHENTICATED_DESCRIPTION);
        for token in [
            "garbage".to_string(),
            format!("e30.{payload}"),
            format!("e30.{payload}.sig.extra"),
            format!("e30.{}.sig", b64(r#"{"iss":42}"#)),
        ] {
            let mut record = AuditRecord::default();
            let refusal = verify(&cx, &token, now, &mut record).await.err().unwrap();
            assert_eq!(refusal.category, "malformed", "{token:?}");
            assert_eq!(
                (refusal.code, &refusal.description),
                (unknown.code, &unknown.description),
                "{token:?}: the caller cannot tell a malformed token from an unknown issuer"
            );
            assert_eq!(
                record,
                AuditRecord::default(),
                "nothing about the job is recorded"
            );
        }
    }
}
