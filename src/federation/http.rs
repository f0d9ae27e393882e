//! The HTTP service: `POST /v1/token` and `/healthz`. Around each exchange it enforces the per-source
//! limit and the request timeout, then audits the outcome (log line, sink, metric, Event) before any
//! answer leaves: RFC 8693 JSON on success, RFC 6749 error JSON with a correlation id on refusal,
//! never cached.
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::RngCore;

use super::audit::{AuditRecord, Outcome};
use super::context::Context;
use super::decision::{Denial, ErrorCode};
use super::exchange::exchange;
use super::limits;
use super::tls::Peer;
use super::wire::{ExchangeErrorBody, ExchangeResponse};

pub fn router(cx: Arc<Context>) -> Router {
    Router::new()
        .route("/v1/token", post(token))
        .route("/healthz", get(healthz))
        .with_state(cx)
}

/// 200 once the trusts and Applications are read, 503 before.
async fn healthz(State(cx): State<Arc<Context>>) -> (StatusCode, &'static str) {
    if cx.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

async fn token(
    State(cx): State<Arc<Context>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let client = limits::client_address(peer.ip(), &headers, &cx.args.exchange_trusted_proxies);
    let mut record = AuditRecord {
        correlation_id: correlation_id(),
        source: client.to_string(),
        ..Default::default()
    };
    let _slot = match cx.limits.take(client) {
        Ok(slot) => slot,
        Err(denial) => {
            return denied(
                &cx,
                &mut record,
                &denial,
                started,
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
    };
    let timeout = Duration::from_secs(cx.args.exchange_request_timeout_seconds.max(1));
    match tokio::time::timeout(timeout, exchange(&cx, &headers, body, &mut record)).await {
        Ok(Ok(response)) => issued(&cx, &record, response, started),
        Ok(Err(denial)) => {
            let status = status_of(&denial);
            denied(&cx, &mut record, &denial, started, status)
        }
        Err(_) => {
            let denial = Denial::new(
                ErrorCode::TemporarilyUnavailable,
                "timeout",
                format!(
                    "the exchange took longer than {}s; retry",
                    timeout.as_secs()
                ),
            );
            denied(
                &cx,
                &mut record,
                &denial,
                started,
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    }
}

/// The HTTP status of a refusal: the RFC code's, except 413 for a body over the limit.
fn status_of(denial: &Denial) -> StatusCode {
    if denial.category == "body_too_large" {
        return StatusCode::PAYLOAD_TOO_LARGE;
    }
    StatusCode::from_u16(denial.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
}

/// Audits the issue, then answers with the token. Audited before the token leaves the process.
fn issued(
    cx: &Context,
    record: &AuditRecord,
    response: ExchangeResponse,
    started: Instant,
) -> Response {
    cx.auditor.record(record, "ok", started.elapsed());
    cx.events.issued(record);
    let mut resp = (StatusCode::OK, axum::Json(response)).into_response();
    no_store(resp.headers_mut());
    resp
}

/// Audits the refusal, then answers with the RFC 6749 error.
fn denied(
    cx: &Context,
    record: &mut AuditRecord,
    denial: &Denial,
    started: Instant,
    status: StatusCode,
) -> Response {
    record.outcome = Some(Outcome::Denied);
    record.reason = denial.category.to_string();
    record.error = denial.code.as_str().to_string();
    record.detail = denial.detail.clone();
    cx.auditor
        .record(record, denial.category, started.elapsed());
    cx.events.denied(record, denial);
    error_response(
        status,
        denial.code,
        &denial.description,
        &record.correlation_id,
    )
}

fn error_response(status: StatusCode, code: ErrorCode, description: &str, cid: &str) -> Response {
    let body = ExchangeErrorBody {
        error: code.as_str().to_string(),
        error_description: description.to_string(),
        correlation_id: cid.to_string(),
    };
    let mut resp = (status, axum::Json(body)).into_response();
    no_store(resp.headers_mut());
    resp
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn correlation_id() -> String {
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_rfc_status_and_an_oversized_body_is_413() {
        let status = |code, category| status_of(&Denial::new(code, category, "d"));
        assert_eq!(status(ErrorCode::InvalidRequest, "malformed_request"), 400);
        assert_eq!(status(ErrorCode::InvalidRequest, "body_too_large"), 413);
        assert_eq!(status(ErrorCode::AccessDenied, "no_matching_grant"), 403);
        assert_eq!(status(ErrorCode::ServerError, "trust_config"), 500);
        assert_eq!(status(ErrorCode::TemporarilyUnavailable, "not_ready"), 503);
    }

    #[tokio::test]
    async fn error_answers_are_rfc_6749_json_and_never_cached() {
        let resp = error_response(StatusCode::BAD_REQUEST, ErrorCode::InvalidGrant, "no", "c1");
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(resp.headers()[header::PRAGMA], "no-cache");
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"error":"invalid_grant","error_description":"no","correlation_id":"c1"}"#
        );
    }
}
