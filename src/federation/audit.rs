//! Audit of every exchange, issued or denied: one JSON line in the audit log (its own sink, stdout or
//! `--audit-log FILE`, written whatever the log level), an optional in-process sink (tests,
//! forwarding), Prometheus counters with bounded labels and a latency histogram. Never the token, only
//! its claims' identifiers. The durable in-cluster record is the TokenIssuance (`binding`), created
//! before the token leaves the process; this is the record of every attempt.
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::Serialize;

use crate::runtime::metrics::Metrics;

/// `target` of audit lines (the tracing target of the same record at debug level).
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
    /// The TokenIssuance of the exchange (empty when nothing was issued).
    pub issuance: String,
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

/// Receives every audit record.
pub trait AuditSink: Send + Sync {
    fn record(&self, record: &AuditRecord);
}

/// One line of the audit log: the record, when it was written, and the target that tells it apart
/// from log lines sharing stdout.
#[derive(Serialize)]
struct AuditLine<'a> {
    timestamp: String,
    target: &'static str,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

enum AuditOutput {
    Stdout,
    File(std::fs::File),
}

/// The audit log: one JSON object per line, flushed per record, on stdout or appended to a file.
/// Independent of tracing, so no log level or filter can drop it.
pub struct JsonLinesAuditSink {
    out: Mutex<AuditOutput>,
}

impl JsonLinesAuditSink {
    pub fn stdout() -> Self {
        JsonLinesAuditSink {
            out: Mutex::new(AuditOutput::Stdout),
        }
    }

    /// Appends to `path` (created if absent, mode 0600 on Unix: records name users and projects).
    pub fn append(path: &Path) -> std::io::Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        Ok(JsonLinesAuditSink {
            out: Mutex::new(AuditOutput::File(options.open(path)?)),
        })
    }

    /// `--audit-log`: a file when given, else stdout.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        match path {
            Some(p) => Self::append(p),
            None => Ok(Self::stdout()),
        }
    }
}

/// The JSON line of `record` at `at`, newline included.
fn audit_line(record: &AuditRecord, at: SystemTime) -> String {
    let line = AuditLine {
        timestamp: super::binding::rfc3339(at),
        target: AUDIT_TARGET,
        record,
    };
    let mut text = serde_json::to_string(&line).unwrap_or_else(|e| {
        format!(r#"{{"target":"{AUDIT_TARGET}","error":"audit record did not serialize: {e}"}}"#)
    });
    text.push('\n');
    text
}

impl AuditSink for JsonLinesAuditSink {
    fn record(&self, record: &AuditRecord) {
        let line = audit_line(record, SystemTime::now());
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let written = match &mut *out {
            AuditOutput::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(line.as_bytes())
                    .and_then(|()| stdout.flush())
            }
            AuditOutput::File(file) => file.write_all(line.as_bytes()).and_then(|()| file.flush()),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, correlation_id = %record.correlation_id, "writing the audit log failed");
        }
    }
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

/// Writes (audit log), forwards and counts audit records.
#[derive(Clone)]
pub struct Auditor {
    metrics: ExchangeMetrics,
    log: Arc<dyn AuditSink>,
    sink: Option<Arc<dyn AuditSink>>,
}

impl Auditor {
    /// `log` is the audit log every record goes to; `sink` an extra receiver (tests, embedding).
    pub fn new(
        metrics: ExchangeMetrics,
        log: Arc<dyn AuditSink>,
        sink: Option<Arc<dyn AuditSink>>,
    ) -> Self {
        Auditor { metrics, log, sink }
    }

    /// Records one exchange. `reason` must be a bounded category.
    pub fn record(&self, record: &AuditRecord, reason: &'static str, took: Duration) {
        let outcome = record.outcome.unwrap_or(Outcome::Denied);
        self.log.record(record);
        tracing::debug!(
            target: AUDIT_TARGET,
            correlation_id = %record.correlation_id,
            outcome = outcome.as_str(),
            reason = %record.reason,
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
        let log = Arc::new(MemoryAuditSink::default());
        let auditor = Auditor::new(
            ExchangeMetrics::register(&metrics),
            log.clone(),
            Some(sink.clone()),
        );
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
        assert_eq!(log.records(), vec![record]);
    }

    #[test]
    fn the_audit_log_is_json_lines_whatever_the_log_level() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = Arc::new(JsonLinesAuditSink::append(&path).unwrap());
        let auditor = Auditor::new(ExchangeMetrics::register(&Metrics::default()), log, None);
        // A subscriber that keeps only errors: tracing drops everything below, the audit log does not.
        let quiet = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::ERROR)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(quiet, || {
            for (id, outcome) in [("c1", Outcome::Issued), ("c2", Outcome::Denied)] {
                let record = AuditRecord {
                    correlation_id: id.into(),
                    outcome: Some(outcome),
                    user: "alice".into(),
                    ..Default::default()
                };
                auditor.record(&record, "ok", Duration::ZERO);
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let seen: Vec<(&str, &str, &str, &str)> = lines
            .iter()
            .map(|l| {
                (
                    l["correlation_id"].as_str().unwrap(),
                    l["outcome"].as_str().unwrap(),
                    l["target"].as_str().unwrap(),
                    l["user"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("c1", "issued", AUDIT_TARGET, "alice"),
                ("c2", "denied", AUDIT_TARGET, "alice")
            ]
        );
        assert!(
            lines
                .iter()
                .all(|l| l["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')))
        );
    }
}
