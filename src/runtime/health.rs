//! `/livez`, `/readyz` and `/metrics`: ready only once every store has listed and the exchange
//! listens, and only while the API server answers (an operator that cannot reach it can neither
//! reconcile nor issue a token; `/livez` stays up, so it is not restarted for it).
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::{Router, extract::State, http::StatusCode, routing::get};

use super::metrics::Metrics;

/// Shared readiness: each part sets its flag once it can serve.
#[derive(Default)]
pub struct Readiness {
    /// Every controller store has completed its initial list.
    pub controllers: Arc<AtomicBool>,
    /// The exchange listener is bound (or the exchange is switched off).
    pub exchange: Arc<AtomicBool>,
    /// The API server answered its `/readyz` lately (`probe_api_server`).
    pub api_server: Arc<AtomicBool>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Why it is not ready, if it is not.
    fn not_ready(&self) -> Option<&'static str> {
        if !self.controllers.load(Ordering::Acquire) || !self.exchange.load(Ordering::Acquire) {
            Some("watches not synced")
        } else if !self.api_server.load(Ordering::Acquire) {
            Some("the API server is not answering")
        } else {
            None
        }
    }
}

/// How often the API server is asked whether it is ready, and how long an answer may take.
pub const API_PROBE_EVERY: Duration = Duration::from_secs(1);
pub const API_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the API server's `/readyz` every `every` ([`API_PROBE_EVERY`]) and keeps
/// `readiness.api_server` current: false after two answers in a row that failed or took longer than
/// `timeout` ([`API_PROBE_TIMEOUT`]; one slow answer on a loaded machine is no outage), true again
/// after one good answer. Runs forever.
pub async fn probe_api_server(
    client: kube::Client,
    readiness: Arc<Readiness>,
    every: Duration,
    timeout: Duration,
) {
    let mut failures = 0u32;
    loop {
        let request = axum::http::Request::get("/readyz")
            .body(Vec::new())
            .expect("a static request is valid");
        let answered = tokio::time::timeout(timeout, client.request_text(request))
            .await
            .is_ok_and(|r| r.is_ok());
        failures = if answered { 0 } else { failures + 1 };
        let reachable = failures < 2;
        if readiness.api_server.swap(reachable, Ordering::AcqRel) != reachable {
            match reachable {
                true => tracing::info!("the API server answers again; ready"),
                false => tracing::warn!("the API server is not answering; not ready until it does"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

struct Served {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

/// The health and metrics routes.
pub fn router(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(Served { readiness, metrics }))
}

async fn readyz(State(s): State<Arc<Served>>) -> (StatusCode, &'static str) {
    match s.readiness.not_ready() {
        None => (StatusCode::OK, "ok"),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics_text(
    State(s): State<Arc<Served>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::mock_api::{self, Reply};
    use std::sync::atomic::AtomicUsize;

    /// An API server whose `/readyz` answers while `up` holds, and hangs otherwise (SIGSTOP).
    fn api_server(up: Arc<AtomicBool>, calls: Arc<AtomicUsize>) -> kube::Client {
        mock_api::client(move |req| {
            assert_eq!(req.uri().path(), "/readyz");
            calls.fetch_add(1, Ordering::SeqCst);
            match up.load(Ordering::SeqCst) {
                true => Reply::Json(200, "ok"),
                false => Reply::Hang,
            }
        })
    }

    #[tokio::test]
    async fn ready_only_while_the_api_server_answers() {
        let readiness = Arc::new(Readiness::default());
        readiness.controllers.store(true, Ordering::SeqCst);
        readiness.exchange.store(true, Ordering::SeqCst);
        assert_eq!(
            readiness.not_ready(),
            Some("the API server is not answering")
        );
        let (up, calls) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicUsize::new(0)),
        );
        let probe = tokio::spawn(probe_api_server(
            api_server(up.clone(), calls.clone()),
            readiness.clone(),
            Duration::from_millis(10),
            Duration::from_millis(50),
        ));
        let until = |want: bool| {
            let readiness = readiness.clone();
            async move {
                for _ in 0..300 {
                    if readiness.is_ready() == want {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        assert!(until(true).await, "ready once the API server answers");
        up.store(false, Ordering::SeqCst);
        let asked = calls.load(Ordering::SeqCst);
        assert!(until(false).await, "not ready while it hangs");
        assert!(
            calls.load(Ordering::SeqCst) >= asked + 2,
            "one late answer is not enough"
        );
        up.store(true, Ordering::SeqCst);
        assert!(until(true).await, "ready again once it answers");
        probe.abort();
    }
}
