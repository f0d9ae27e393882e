//! One token exchange, as a pipeline of named steps:
//! parse (`request`) → verify (`verify`) → decide (`decision`) → cap TTL (`ttl`) → issue (`issuance`)
//! → respond. Each step either hands the next what it needs or refuses with a `Denial`, and writes
//! what it learned into the audit record, so a refusal at any step is recorded with everything known
//! up to it. The HTTP service around it (`http`) audits and answers.
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::HeaderMap;

use super::audit::{AuditRecord, Outcome};
use super::binding::{self, Issued};
use super::context::Context;
use super::decision::{self, Denial, ErrorCode};
use super::issuance;
use super::request;
use super::ttl::{self, Lifetime};
use super::verify::{self, VerifiedJob};
use super::wire::{ExchangeResponse, GrantSummary};
use crate::access::matcher::check_token;
use crate::access::{Grant, GrantSet, MatchOutcome, match_token};

/// Exchanges the request's ID token for a token of the one grant it may have.
pub async fn exchange(
    cx: &Context,
    headers: &HeaderMap,
    body: Body,
    record: &mut AuditRecord,
) -> Result<ExchangeResponse, Denial> {
    let request = request::read(headers, body, cx.args.exchange_max_body_bytes).await?;
    record.resource = request.resource.clone().unwrap_or_default();
    cx.ensure_ready()?;
    let now = SystemTime::now();
    let job = verify::verify(cx, &request.subject_token, now, record).await?;
    let grant = decide(cx, &job, request.resource.as_deref(), record).await?;
    let life = ttl::cap(
        grant.ttl,
        &job.trust,
        job.token.expires_at,
        request.requested_ttl,
        now,
    )?;
    record.ttl_seconds = life.ttl.as_secs();
    let issued = issuance::issue(cx, &job, &grant, life, record).await?;
    Ok(respond(cx, &job, &grant, issued, life, record))
}

/// Longest a decision (deriving the trust's grants and matching the claims, CEL included) may take.
/// It runs on a blocking thread, so it never holds an async worker; the static bounds on conditions
/// keep it far below this.
pub const DECISION_DEADLINE: Duration = Duration::from_secs(2);

/// The grant the verified job gets under its trust (and the requested resource, if any).
async fn decide(
    cx: &Context,
    job: &VerifiedJob,
    resource: Option<&str>,
    record: &mut AuditRecord,
) -> Result<Grant, Denial> {
    // A refusal of a named resource is reported on that Application.
    if let Some(r) = resource {
        let mut parts = r.split('/');
        record.namespace = parts.next().unwrap_or_default().to_string();
        record.application = parts.next().unwrap_or_default().to_string();
    }
    // The trust's own bounds first: a token outside them costs no grant lookup and no Event.
    if let Err(refusal) = check_token(&job.claims, &job.trust) {
        return Err(decision::decide(
            MatchOutcome::TokenRefused(refusal),
            &job.trust_name,
            &GrantSet::default(),
            resource,
        )
        .unwrap_err());
    }
    record.within_trust = true;
    let (index, claims, trust, name) = (
        cx.index.clone(),
        job.claims.clone(),
        job.trust.clone(),
        job.trust_name.clone(),
    );
    let wanted = resource.map(str::to_string);
    let decided = tokio::task::spawn_blocking(move || {
        let grants = index.grants_for_trust(&name);
        let outcome = match_token(&claims, &trust, &grants, wanted.as_deref());
        decision::decide(outcome, &name, &grants, wanted.as_deref()).cloned()
    });
    let grant = match tokio::time::timeout(DECISION_DEADLINE, decided).await {
        Ok(Ok(decided)) => decided?,
        Ok(Err(_)) | Err(_) => {
            return Err(Denial::new(
                ErrorCode::TemporarilyUnavailable,
                "decision_timeout",
                format!(
                    "deciding the grant took longer than {}s; retry",
                    DECISION_DEADLINE.as_secs()
                ),
            ));
        }
    };
    record.namespace = grant.namespace.clone();
    record.application = grant.application.clone();
    record.grant = grant.id.clone();
    // Fail closed: a grant that writes is bounded by admission policies as well as RBAC.
    let missing = cx.index.world.missing_guards();
    if grant.writes() && !missing.is_empty() {
        tracing::warn!(grant = %grant.id, missing = ?missing, "refusing a token: a guard admission policy is missing");
        return Err(Denial::new(
            ErrorCode::TemporarilyUnavailable,
            "guard_missing",
            format!(
                "the admission policies that bound this grant ({}) are not installed in the cluster; no token is issued for a grant that writes until they are (ask the cluster operators)",
                missing.join(", ")
            ),
        ));
    }
    Ok(grant)
}

/// The answer: the token, a kubeconfig for it, and what it grants.
fn respond(
    cx: &Context,
    job: &VerifiedJob,
    grant: &Grant,
    issued: Issued,
    life: Lifetime,
    record: &mut AuditRecord,
) -> ExchangeResponse {
    let user = format!("{}-{}", grant.namespace, issued.service_account);
    let response = ExchangeResponse {
        kubeconfig: cx.endpoint.kubeconfig(grant, &user, &issued.token),
        access_token: issued.token,
        issued_token_type: decision::TOKEN_TYPE_ACCESS_TOKEN.into(),
        token_type: "Bearer".into(),
        expires_in: life.ttl.as_secs(),
        grant: GrantSummary {
            application: grant.application.clone(),
            namespace: grant.namespace.clone(),
            component: grant.component.clone(),
            grant: grant.id.clone(),
            service_account: issued.service_account,
            trust: job.trust_name.clone(),
            rules: grant.role.rules.clone().unwrap_or_default(),
            expires_at: binding::rfc3339(life.expires_at),
        },
        correlation_id: record.correlation_id.clone(),
    };
    record.outcome = Some(Outcome::Issued);
    record.reason = "ok".into();
    response
}
