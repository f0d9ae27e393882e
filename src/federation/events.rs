//! Kubernetes Events on the Application for every issue and every denial a verified job can be told
//! about: what the application team sees with `kubectl describe app`. Published in the background; a
//! failed publish is logged, never fails the exchange. Notes carry claims' identifiers, never a token.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Resource;

use crate::runtime::events::{MAX_NOTE_BYTES, truncate};
use kube::runtime::events::{Event, EventType, Recorder};

use super::audit::AuditRecord;
use super::decision::Denial;
use super::grants::GrantIndex;

/// Shortest interval between two `TokenDenied` Events of one Application and reason.
pub const DENIAL_EVENT_INTERVAL: Duration = Duration::from_secs(60);

/// Publishes exchange Events on the Application a record names.
pub struct TokenEvents {
    recorder: Recorder,
    index: GrantIndex,
    /// When each (namespace, application, reason) was last told of a denial.
    last_denied: Mutex<HashMap<(String, String, &'static str), Instant>>,
}

impl TokenEvents {
    pub fn new(recorder: Recorder, index: GrantIndex) -> Self {
        TokenEvents {
            recorder,
            index,
            last_denied: Mutex::default(),
        }
    }

    /// `TokenIssued`: which token went to which job.
    pub fn issued(&self, record: &AuditRecord) {
        self.publish(
            record,
            EventType::Normal,
            "TokenIssued",
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
