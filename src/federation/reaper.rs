//! The reaper: the backstop that deletes expired TokenIssuance records (and so, through the garbage
//! collector, their binding Secrets, revoking the tokens) across restarts and replicas. Each replica
//! also revokes what it issued at the TTL (`issuance`); the reaper catches what a restart or a crash
//! left behind, and the records of Applications that are gone (a cluster-scoped record cannot be
//! owned by a namespaced Application). It lists records, never Secrets. Runs on the leader only when
//! gated.
use std::time::{Duration, SystemTime};

use kube::api::ListParams;
use kube::{Api, Client};

use super::binding::{delete_issuance, parse_rfc3339};
use super::grants::GrantIndex;
use crate::api::issuance::TokenIssuance;

/// Why a record goes now, if it does.
fn reason_to_reap(
    record: &TokenIssuance,
    now: SystemTime,
    index: Option<&GrantIndex>,
) -> Option<&'static str> {
    // A record without a readable expiry is expired: better to revoke than to keep.
    if parse_rfc3339(&record.spec.expires_at).is_none_or(|t| t <= now) {
        return Some("expired");
    }
    // A binding record goes with its guard; only guards are checked against their Application.
    let spec = &record.spec;
    if record.metadata.owner_references.is_none()
        && !spec.application_uid.is_empty()
        && let Some(index) = index
    {
        let live = index
            .application(&spec.namespace, &spec.application)
            .and_then(|a| a.metadata.uid.clone());
        if live.as_deref() != Some(spec.application_uid.as_str()) {
            return Some("application_gone");
        }
    }
    None
}

/// Records read a page at a time: the live records of a busy exchange number its issues per second
/// times the ID tokens' life (36,000 at 120/s and GitLab's 5 minutes), and one list of all of them
/// would be held in memory whole every pass.
const REAP_PAGE: u32 = 500;

/// Deletes every TokenIssuance whose expiry has passed, and (given a synced `index`) every one whose
/// Application is gone; returns how many it deleted.
pub async fn reap_once(
    client: &Client,
    now: SystemTime,
    index: Option<&GrantIndex>,
) -> Result<usize, kube::Error> {
    let records: Api<TokenIssuance> = Api::all(client.clone());
    let mut params = ListParams::default().limit(REAP_PAGE);
    let mut deleted = 0;
    loop {
        let page = records.list(&params).await?;
        for record in &page.items {
            if let (Some(reason), Some(name)) = (
                reason_to_reap(record, now, index),
                record.metadata.name.as_deref(),
            ) {
                tracing::debug!(record = name, reason, "reaper: deleting TokenIssuance");
                delete_issuance(client, name, record.metadata.uid.clone()).await;
                deleted += 1;
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(deleted),
        }
    }
}

/// Scans every `interval` for expired records and deletes them (run on every replica unless gated:
/// deletes are idempotent and guarded by uid). Records of vanished Applications are reaped only once
/// `index` has synced, so a half-read cache never revokes a live grant's token.
pub async fn reaper(
    client: Client,
    interval: Duration,
    gate: Option<crate::runtime::leader::WriteGate>,
    index: GrantIndex,
) {
    let synced = index.ready().await;
    let index = synced.then_some(&index);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if gate.as_ref().is_some_and(|g| !g.is_open()) {
            continue; // only the leader reaps
        }
        match reap_once(&client, SystemTime::now(), index).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "reaper: TokenIssuances deleted"),
            Err(e) => tracing::warn!(error = %e, "reaper: listing TokenIssuances failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::issuance::TokenIssuanceSpec;
    use std::time::UNIX_EPOCH;

    fn record(expires_at: &str) -> TokenIssuance {
        TokenIssuance::new(
            "oam-trust-issuance-x",
            TokenIssuanceSpec {
                expires_at: expires_at.into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn expired_and_unreadable_records_go_live_ones_stay() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |secs| super::super::binding::rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        let cases = [
            (at(1_799_999_999), Some("expired")),
            (at(1_800_000_000), Some("expired")),
            (at(1_800_000_001), None),
            ("next tuesday".to_string(), Some("expired")),
            (String::new(), Some("expired")),
        ];
        for (expires_at, want) in cases {
            assert_eq!(
                reason_to_reap(&record(&expires_at), now, None),
                want,
                "{expires_at:?}"
            );
        }
    }
}
