//! Kubernetes Events on the Application for every issue and every denial a verified job can be told
//! about: what the application team sees with `kubectl describe app`. Published in the background; a
//! failed publish is logged, never fails the exchange. Notes carry claims' identifiers, never a token.
//!
//! A `TokenIssued` Event is created for each token, its own object (named after the exchange's
//! correlation id, `related` to its TokenIssuance), not through kube's `Recorder`: the Recorder folds
//! Events of one object and reason into one series whatever their note, so every issue PATCHed the same
//! Event (keeping the first job's note), and concurrent issues made the API server retry those
//! patches on conflict (some 90 etcd updates an issue at 50 concurrent exchanges). Denials, rate-limited
//! with a note that does not vary, stay a Recorder series.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use crate::names::{ISSUANCE_KIND, TRUST_GROUP, TRUST_VERSION};
use crate::runtime::events::{MAX_NOTE_BYTES, truncate};

use super::audit::AuditRecord;
use super::decision::Denial;
use super::grants::GrantIndex;

/// Shortest interval between two `TokenDenied` Events of one Application and reason.
pub const DENIAL_EVENT_INTERVAL: Duration = Duration::from_secs(60);

/// Publishes exchange Events on the Application a record names.
pub struct TokenEvents {
    client: Client,
    reporter: Reporter,
    recorder: Recorder,
    index: GrantIndex,
    /// When each (namespace, application, reason) was last told of a denial.
    last_denied: Mutex<HashMap<(String, String, &'static str), Instant>>,
}

impl TokenEvents {
    pub fn new(client: Client, reporter: Reporter, index: GrantIndex) -> Self {
        TokenEvents {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
            index,
            last_denied: Mutex::default(),
        }
    }

    /// `TokenIssued`: which token went to which job; an Event of its own for each token.
    pub fn issued(&self, record: &AuditRecord) {
        let Some(app) = self
            .index
            .application(&record.namespace, &record.application)
        else {
            return;
        };
        let event = issued_event(
            &self.reporter,
            app.object_ref(&()),
            record,
            format!(
                "issued a {}s token for ServiceAccount {} (grant {}) to job {} of project {} {} (pipeline {}, ref {}, environment {}, user {}); binding Secret {}",
                record.ttl_seconds,
                record.service_account,
                record.grant,
                record.job_id,
                record.project_id,
                record.project_path,
                record.pipeline_id,
                record.ref_,
                if record.environment.is_empty() {
                    "-"
                } else {
                    &record.environment
                },
                record.user,
                record.binding_secret
            ),
        );
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &record.namespace);
        tokio::spawn(async move {
            if let Err(e) = events.create(&PostParams::default(), &event).await {
                tracing::warn!(error = %e, "publishing a token exchange Event failed");
            }
        });
    }

    /// `TokenDenied`, only for a job within the trust's bounds (signature verified, `allow` and
    /// `require` passed) that names an Application; at most one per Application and reason every
    /// [`DENIAL_EVENT_INTERVAL`], with a note that does not vary between requests, so a flood is one
    /// Event series. Each request is in the audit log under its correlation id.
    pub fn denied(&self, record: &AuditRecord, denial: &Denial) {
        if !record.verified || !record.within_trust || record.application.is_empty() {
            return;
        }
        let key = (
            record.namespace.clone(),
            record.application.clone(),
            denial.category,
        );
        {
            let mut last = self.last_denied.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if last
                .get(&key)
                .is_some_and(|at| now.duration_since(*at) < DENIAL_EVENT_INTERVAL)
            {
                return;
            }
            last.retain(|_, at| now.duration_since(*at) < DENIAL_EVENT_INTERVAL);
            last.insert(key, now);
        }
        self.publish(
            record,
            EventType::Warning,
            "TokenDenied",
            format!(
                "token exchange denied ({}): {}; every request is in the exchange's audit log",
                denial.category,
                truncate(&denial.description, 400),
            ),
        );
    }

    fn publish(&self, record: &AuditRecord, type_: EventType, reason: &str, note: String) {
        let Some(app) = self
            .index
            .application(&record.namespace, &record.application)
        else {
            return;
        };
        let reference = app.object_ref(&());
        let recorder = self.recorder.clone();
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(&note, MAX_NOTE_BYTES)),
            action: "TokenExchange".into(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, "publishing a token exchange Event failed");
            }
        });
    }
}

/// The `TokenIssued` Event of one issue, as `Recorder` would write a new Event, named after the
/// exchange's correlation id (unique) and `related` to its TokenIssuance.
pub fn issued_event(
    reporter: &Reporter,
    regarding: ObjectReference,
    record: &AuditRecord,
    note: String,
) -> K8sEvent {
    let related = (!record.issuance.is_empty()).then(|| ObjectReference {
        api_version: Some(format!("{TRUST_GROUP}/{TRUST_VERSION}")),
        kind: Some(ISSUANCE_KIND.into()),
        name: Some(record.issuance.clone()),
        ..Default::default()
    });
    let name = format!(
        "{}.{}",
        regarding.name.as_deref().unwrap_or(&reporter.controller),
        record.correlation_id
    );
    K8sEvent {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: regarding.namespace.clone(),
            ..Default::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        action: Some("TokenExchange".into()),
        reason: Some("TokenIssued".into()),
        note: Some(truncate(&note, MAX_NOTE_BYTES)),
        regarding: Some(regarding),
        related,
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        type_: Some("Normal".into()),
        ..Default::default()
    }
}
