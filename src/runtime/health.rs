//! `/livez`, `/readyz` and `/metrics`: ready only once every store has listed and the exchange
//! listens.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::{Router, extract::State, http::StatusCode, routing::get};

use super::metrics::Metrics;

/// Shared readiness: each part sets its flag once it can serve.
#[derive(Default)]
pub struct Readiness {
    /// Every controller store has completed its initial list.
    pub controllers: Arc<AtomicBool>,
    /// The exchange listener is bound (or the exchange is switched off).
    pub exchange: Arc<AtomicBool>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.controllers.load(Ordering::Acquire) && self.exchange.load(Ordering::Acquire)
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
    if s.readiness.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced")
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
