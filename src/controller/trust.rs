//! The GitLabTrust controller: loads each trust's verification keys into the process-wide
//! `oidc::KeyCaches` (the same caches the token-exchange service verifies with) and reports them in
//! status: key ids, count, last fetch, and a `Ready` condition naming the fetch error when there is one.
//!
//! Invariants: a failed fetch keeps the keys already held (the cache does that); every trust is
//! refreshed again after `REFRESH_INTERVAL` even without a change; unchanged status causes no write.
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::conditions::{self, Desired};
use crate::api::trust::{GitLabTrust, GitLabTrustStatus};
use crate::names;
use crate::oidc::{KeyCaches, KeySource};

/// Keys are refetched this often (and whenever the trust changes).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// Shared state of the GitLabTrust controller.
pub struct Context {
    pub client: Client,
    /// One key cache per trust, shared with the token-exchange service.
    pub keys: Arc<KeyCaches>,
    pub metrics: Arc<crate::runtime::metrics::Metrics>,
    /// Followers refresh keys (the exchange needs them) but leave status to the leader.
    pub gate: crate::runtime::leader::WriteGate,
    /// Whether the guard admission policies are installed (`AdmissionPoliciesReady`).
    pub world: crate::runtime::world::WorldStores,
}

/// How often a trust whose guard policies are missing is looked at again.
pub const GUARD_RECHECK: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status of GitLabTrust {trust}: {source}")]
    Status {
        trust: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("deleting namespace rights no trust selects: {source}")]
    Sweep {
        #[source]
        source: Box<kube::Error>,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        "ApiError"
    }
}

pub async fn reconcile(
    guard: Arc<DeserializeGuard<GitLabTrust>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    // A trust that does not decode was reported by the guard; there are no keys to fetch for it.
    let Some(trust) = crate::runtime::reflect::decoded(&guard) else {
        return Ok(Action::await_change());
    };
    let started = std::time::Instant::now();
    let result = reconcile_inner(trust, &ctx).await;
    ctx.metrics.observe_reconcile(
        "gitlabtrust",
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

async fn reconcile_inner(trust: &GitLabTrust, ctx: &Context) -> Result<Action, Error> {
    let old = trust.status.clone().unwrap_or_default();
    let (ready, key_ids, last_fetch) = match ctx.keys.get(trust) {
        Err(e) => (
            Desired::new("Ready", false, "InvalidKeySource", e.to_string()),
            Vec::new(),
            None,
        ),
        Ok(cache) => {
            let outcome = cache.refresh().await;
            let status = cache.status();
            let source = describe(cache.source());
            let ready = match outcome {
                Ok(set) if set.is_empty() => Desired::new(
                    "Ready",
                    false,
                    "NoKeys",
                    format!("{source} holds no usable signing key"),
                ),
                Ok(set) => Desired::new(
                    "Ready",
                    true,
                    "KeysLoaded",
                    format!("{} keys loaded from {source}", set.len()),
                ),
                Err(e) => {
                    let held = status.key_ids.len();
                    let kept = if held > 0 {
                        format!("; still using {held} keys fetched earlier")
                    } else {
                        String::new()
                    };
                    Desired::new(
                        "Ready",
                        false,
                        "KeyFetchFailed",
                        format!("{source}: {e}{kept}"),
                    )
                }
            };
            (ready, status.key_ids, status.last_fetch)
        }
    };
    // Grants that write get no token while a guard policy is missing: say so on the trust too.
    let missing = match tokio::time::timeout(Duration::from_secs(30), ctx.world.ready()).await {
        Ok(true) => ctx.world.missing_guards(),
        _ => return Ok(Action::requeue(Duration::from_secs(5))),
    };
    let guards = if missing.is_empty() {
        Desired::new(
            "AdmissionPoliciesReady",
            true,
            "Installed",
            format!("installed: {}", names::GUARD_BINDINGS.join(", ")),
        )
    } else {
        tracing::warn!(trust = %trust.name_any(), missing = ?missing, "guard admission policies missing");
        Desired::new(
            "AdmissionPoliciesReady",
            false,
            "Missing",
            format!(
                "not installed: {}; no token is issued for grants that write (deploy, manage) until they are",
                missing.join(", ")
            ),
        )
    };
    let generation = trust.metadata.generation;
    let last_key_fetch = last_fetch.map(to_time).or(old.last_key_fetch.clone());
    let status = GitLabTrustStatus {
        conditions: conditions::merge(
            &old.conditions,
            &[ready, guards.clone()],
            generation,
            Timestamp::now(),
        ),
        key_count: Some(key_ids.len() as i32),
        keys: key_ids,
        last_key_fetch,
        observed_generation: generation,
    };
    let unchanged = old.keys == status.keys
        && old.key_count == status.key_count
        && old.last_key_fetch == status.last_key_fetch
        && old.observed_generation == status.observed_generation
        && conditions::same_ignoring_time(&old.conditions, &status.conditions);
    if !unchanged && ctx.gate.is_open() {
        let patch = json!({
            "apiVersion": GitLabTrust::api_version(&()),
            "kind": GitLabTrust::kind(&()),
            "status": status,
        });
        Api::<GitLabTrust>::all(ctx.client.clone())
            .patch_status(
                &trust.name_any(),
                &PatchParams::apply(names::FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| Error::Status {
                trust: trust.name_any(),
                source: Box::new(e),
            })?;
    }
    if ctx.gate.is_open() {
        sweep_rights(ctx).await?;
    }
    Ok(Action::requeue(if guards.status {
        REFRESH_INTERVAL
    } else {
        GUARD_RECHECK
    }))
}

/// Deletes the operator's namespace rights (`access::rights`) that no trust justifies any more, so
/// a namespace no longer selected stops being writable by the controller and the exchange.
async fn sweep_rights(ctx: &Context) -> Result<(), Error> {
    let all = Api::<RoleBinding>::all(ctx.client.clone());
    let list = all
        .list(&ListParams::default().labels(names::LABEL_NAMESPACE_RIGHTS))
        .await
        .map_err(|e| Error::Sweep {
            source: Box::new(e),
        })?;
    let world = ctx.world.snapshot();
    for rb in crate::access::rights::stale(&list.items, &world.trusts, &world.namespaces) {
        let (ns, name) = (rb.namespace().unwrap_or_default(), rb.name_any());
        match Api::<RoleBinding>::namespaced(ctx.client.clone(), &ns)
            .delete(&name, &DeleteParams::background())
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = %ns, binding = %name, "deleted namespace rights no trust selects")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(Error::Sweep {
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(())
}

fn describe(source: &KeySource) -> String {
    match source {
        KeySource::Static { .. } => "the static JWKS".into(),
        KeySource::JwksUri { uri, .. } => format!("JWKS {uri}"),
        KeySource::Discovery { issuer, .. } => format!("OIDC discovery at {issuer}"),
    }
}

fn to_time(t: SystemTime) -> Time {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let ts = Timestamp::from_second(since.as_secs() as i64).unwrap_or(Timestamp::UNIX_EPOCH);
    Time(ts)
}

pub fn error_policy(
    trust: Arc<DeserializeGuard<GitLabTrust>>,
    err: &Error,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(trust = %trust.name_any(), error = %err, "trust reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}
