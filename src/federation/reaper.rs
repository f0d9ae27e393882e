//! The reaper: the backstop that deletes expired binding Secrets (revoking their tokens) across
//! restarts and replicas. Each replica also revokes what it issued at the TTL (`issuance`); the
//! reaper catches what a restart or a crash left behind. Runs on the leader only when gated.
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client};

use super::binding::{delete_secret, parse_rfc3339};
use crate::names::{ANNOTATION_EXPIRES, LABEL_BINDING};

/// Deletes every binding Secret whose expiry has passed; returns how many it deleted.
pub async fn reap_once(client: &Client, now: SystemTime) -> Result<usize, kube::Error> {
    let secrets: Api<Secret> = Api::all(client.clone());
    let list = secrets
        .list_metadata(&ListParams::default().labels(&format!("{LABEL_BINDING}=true")))
        .await?;
    let mut deleted = 0;
    for s in list.items {
        let expires = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_EXPIRES))
            .and_then(|v| parse_rfc3339(v));
        // A binding Secret without a readable expiry is expired: better to revoke than to keep.
        if expires.is_none_or(|t| t <= now)
            && let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name)
        {
            delete_secret(client, ns, name, s.metadata.uid.clone()).await;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Scans every `interval` for expired binding Secrets and deletes them (run on every replica: deletes
/// are idempotent and guarded by uid).
pub async fn reaper(
    client: Client,
    interval: Duration,
    gate: Option<crate::runtime::leader::WriteGate>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if gate.as_ref().is_some_and(|g| !g.is_open()) {
            continue; // only the leader reaps
        }
        match reap_once(&client, SystemTime::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "reaper: expired binding Secrets deleted"),
            Err(e) => tracing::warn!(error = %e, "reaper: listing binding Secrets failed"),
        }
    }
}
