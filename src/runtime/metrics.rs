//! Prometheus metrics of the operator, served as text at `/metrics`. Labels are bounded: controller
//! name, result category, exchange outcome; never an object name or a message.
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    /// `ok` or a bounded error category.
    pub result: &'static str,
}

/// HTTP method of a request the operator sent to the API server (bounded: five values).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

/// Log target of the line traced for every request sent to the API server.
pub const API_REQUESTS_TARGET: &str = "oam_trust::api_requests";

/// Every metric of the process, registered once.
pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_seconds: Family<ControllerLabel, Histogram>,
    objects_applied: Counter,
    api_requests: Family<MethodLabel, Counter>,
    /// `METHOD path?query` of every write, when asked for (`Metrics::recording_writes`): lets a test say
    /// which object a write touched. Never exported.
    writes: Option<std::sync::Arc<Mutex<Vec<String>>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("oam_trust");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_seconds = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let objects_applied = Counter::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and result category",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile_seconds.clone(),
        );
        registry.register(
            "objects_applied",
            "Objects written by server-side apply",
            objects_applied.clone(),
        );
        let api_requests = Family::<MethodLabel, Counter>::default();
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API server, by method",
            api_requests.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            reconciles,
            reconcile_seconds,
            objects_applied,
            api_requests,
            writes: None,
        }
    }
}

impl Metrics {
    pub fn observe_reconcile(
        &self,
        controller: &'static str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller,
                result: error.unwrap_or("ok"),
            })
            .inc();
        self.reconcile_seconds
            .get_or_create(&ControllerLabel { controller })
            .observe(took.as_secs_f64());
    }

    pub fn objects_applied(&self, n: usize) {
        self.objects_applied.inc_by(n as u64);
    }

    /// Metrics that also keep `METHOD path?query` of every write request (`written`), for tests.
    pub fn recording_writes() -> Self {
        Metrics {
            writes: Some(Default::default()),
            ..Metrics::default()
        }
    }

    /// `METHOD path?query` of every write so far (empty unless built with `recording_writes`).
    pub fn written(&self) -> Vec<String> {
        self.writes
            .as_ref()
            .map(|w| w.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// The layer that counts each request by method (and records writes when asked to).
    fn count_layer(
        &self,
    ) -> tower::util::MapRequestLayer<
        impl Fn(axum::http::Request<kube::client::Body>) -> axum::http::Request<kube::client::Body>
        + Clone
        + use<>,
    > {
        let counter = self.api_requests.clone();
        let writes = self.writes.clone();
        tower::util::MapRequestLayer::new(move |req: axum::http::Request<kube::client::Body>| {
            let method = method_label(req.method());
            counter.get_or_create(&MethodLabel { method }).inc();
            // Off unless asked for (`RUST_LOG=oam_trust::api_requests=trace`): which replica sent
            // what, and when, e.g. to check that a replica that lost its lease wrote nothing after.
            let path = req.uri().path_and_query().map_or("", |p| p.as_str());
            tracing::trace!(target: API_REQUESTS_TARGET, method, path, "API request sent");
            if let Some(writes) = &writes
                && req.method() != axum::http::Method::GET
            {
                writes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{} {path}", req.method()));
            }
            req
        })
    }

    /// A client for `config` whose every request is counted by method in `oam_trust_api_requests_total`.
    pub fn counted_client(&self, config: kube::Config) -> kube::Result<kube::Client> {
        Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&self.count_layer())
            .build())
    }

    /// As `counted_client`, but every write (any method but GET) fails with `NotLeader` while `gate`
    /// is closed: the controllers' client, so a replica that is not the leader cannot write.
    pub fn gated_client(
        &self,
        config: kube::Config,
        gate: super::leader::WriteGate,
    ) -> kube::Result<kube::Client> {
        let count = self.count_layer();
        let guard =
            tower::filter::FilterLayer::new(move |req: axum::http::Request<kube::client::Body>| {
                if req.method() == axum::http::Method::GET || gate.is_open() {
                    Ok(req)
                } else {
                    Err(super::leader::NotLeader)
                }
            });
        Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&count)
            .with_layer(&guard)
            .build())
    }

    /// Write requests (POST, PUT, PATCH, DELETE; dry runs included) sent so far.
    pub fn api_writes(&self) -> u64 {
        ["POST", "PUT", "PATCH", "DELETE"]
            .into_iter()
            .map(|method| {
                self.api_requests
                    .get_or_create(&MethodLabel { method })
                    .get()
            })
            .sum()
    }

    /// Reconciles counted so far for `controller`, whatever their result.
    pub fn reconciles(&self, controller: &'static str) -> u64 {
        let registry = self.encode();
        let prefix = format!("oam_trust_reconciles_total{{controller=\"{controller}\"");
        registry
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Lets other modules (token exchange, key cache) register their metrics in the same registry.
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock().expect("metrics registry poisoned"))
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(
            &mut out,
            &self.registry.lock().expect("metrics registry poisoned"),
        )
        .expect("encoding metrics into a String cannot fail");
        out
    }
}

fn method_label(m: &axum::http::Method) -> &'static str {
    match *m {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_bounded_labels() {
        let m = Metrics::default();
        m.observe_reconcile("application", Duration::from_millis(5), None);
        m.observe_reconcile("application", Duration::from_millis(5), Some("Forbidden"));
        m.objects_applied(3);
        let text = m.encode();
        assert!(
            text.contains(r#"oam_trust_reconciles_total{controller="application",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"oam_trust_reconciles_total{controller="application",result="Forbidden"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("oam_trust_objects_applied_total 3"), "{text}");
    }
}
