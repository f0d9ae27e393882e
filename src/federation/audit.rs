//! Audit of every exchange, issued or denied: one JSON log line (tracing target `oam_trust::audit`),
//! an optional in-process sink (tests, forwarding), Prometheus counters with bounded labels and a
//! latency histogram. Never the token, only its claims' identifiers.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::Serialize;

use crate::runtime::metrics::Metrics;

/// Tracing target of audit lines.
pub const AUDIT_TARGET: &str = "oam_trust::audit";

/// `issued` or `denied`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Issued,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::Denied => "denied",
        }
    }
}

/// One audit record. Fields the request never reached stay empty.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct AuditRecord {
    pub correlation_id: String,
    pub outcome: Option<Outcome>,
    /// Bounded category (`ok`, `expired`, `bad_signature`, `replayed`, ...).
    pub reason: String,
    /// RFC 6749 error code, empty when issued.
    pub error: String,
    /// The precise reason (for denials before the signature verified, this is what the caller did not see).
    pub detail: String,
    pub source: String,
    pub trust: String,
    pub issuer: String,
    pub namespace: String,
    pub application: String,
    pub grant: String,
    pub service_account: String,
    pub binding_secret: String,
    pub jti: String,
    pub project_id: String,
    pub project_path: String,
    pub pipeline_id: String,
    pub job_id: String,
    pub user: String,
    pub ref_: String,
    pub environment: String,
    pub resource: String,
    pub ttl_seconds: u64,
    /// Whether the ID token's signature verified (false: the claims above are unverified or absent).
    pub verified: bool,
    /// The verified token also passed the trust's `allow` and `require`: only then may the
    /// application team be told of a denial (an Event); outsiders are in the audit log alone.
    #[serde(skip)]
    pub within_trust: bool,
}

/// Receives every audit record, after it was logged.
pub trait AuditSink: Send + Sync {
    fn record(&self, record: &AuditRecord);
}

/// Keeps records in memory (tests, `oam-trust` embedding).
#[derive(Default)]
pub struct MemoryAuditSink {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemoryAuditSink {
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The record with this correlation id.
    pub fn find(&self, correlation_id: &str) -> Option<AuditRecord> {
        self.records()
            .into_iter()
            .find(|r| r.correlation_id == correlation_id)
    }
}

impl AuditSink for MemoryAuditSink {
    fn record(&self, record: &AuditRecord) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record.clone());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The exchange's metrics, registered into the process registry.
#[derive(Clone)]
pub struct ExchangeMetrics {
    exchanges: Family<ExchangeLabels, Counter>,
    duration: Family<OutcomeLabel, Histogram>,
}

impl ExchangeMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let exchanges = Family::<ExchangeLabels, Counter>::default();
        let duration = Family::<OutcomeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        metrics.with_registry(|r| {
            r.register(
                "token_exchanges",
                "Token exchanges by outcome and bounded reason",
                exchanges.clone(),
            );
            r.register(
                "token_exchange_duration_seconds",
                "Token exchange latency by outcome",
                duration.clone(),
            );
        });
        ExchangeMetrics {
            exchanges,
            duration,
        }
    }

    fn observe(&self, outcome: Outcome, reason: &'static str, took: Duration) {
        self.exchanges
            .get_or_create(&ExchangeLabels {
                outcome: outcome.as_str(),
                reason,
            })
            .inc();
        self.duration
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .observe(took.as_secs_f64());
    }
}

/// Logs, forwards and counts audit records.
#[derive(Clone)]
pub struct Auditor {
    metrics: ExchangeMetrics,
    sink: Option<Arc<dyn AuditSink>>,
}

impl Auditor {
    pub fn new(metrics: ExchangeMetrics, sink: Option<Arc<dyn AuditSink>>) -> Self {
        Auditor { metrics, sink }
    }

    /// Records one exchange. `reason` must be a bounded category.
    pub fn record(&self, record: &AuditRecord, reason: &'static str, took: Duration) {
        let outcome = record.outcome.unwrap_or(Outcome::Denied);
        tracing::info!(
            target: AUDIT_TARGET,
            correlation_id = %record.correlation_id,
            outcome = outcome.as_str(),
            reason = %record.reason,
            error = %record.error,
            detail = %record.detail,
            source = %record.source,
            trust = %record.trust,
            issuer = %record.issuer,
            namespace = %record.namespace,
            application = %record.application,
            grant = %record.grant,
            service_account = %record.service_account,
            binding_secret = %record.binding_secret,
            jti = %record.jti,
            project_id = %record.project_id,
            project_path = %record.project_path,
            pipeline_id = %record.pipeline_id,
            job_id = %record.job_id,
            user = %record.user,
            ref_ = %record.ref_,
            environment = %record.environment,
            resource = %record.resource,
            ttl_seconds = record.ttl_seconds,
            verified = record.verified,
            "token exchange {}",
            outcome.as_str()
        );
        if let Some(sink) = &self.sink {
            sink.record(record);
        }
        self.metrics.observe(outcome, reason, took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_are_counted_by_bounded_labels() {
        let metrics = Metrics::default();
        let sink = Arc::new(MemoryAuditSink::default());
        let auditor = Auditor::new(ExchangeMetrics::register(&metrics), Some(sink.clone()));
        let record = AuditRecord {
            correlation_id: "c1".into(),
            outcome: Some(Outcome::Denied),
            reason: "expired".into(),
            ..Default::default()
        };
        auditor.record(&record, "expired", Duration::from_millis(3));
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"oam_trust_token_exchanges_total{outcome="denied",reason="expired"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("oam_trust_token_exchange_duration_seconds"),
            "{text}"
        );
        assert_eq!(sink.find("c1").unwrap().reason, "expired");
    }
}
