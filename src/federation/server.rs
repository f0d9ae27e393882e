//! The exchange endpoint `POST /v1/token` (RFC 8693): limits, trust selection by issuer, verification,
//! the trust's `allow`/`require`, grant matching by the shared pure functions, issuance (binding
//! Secret and bound TokenRequest), the answer (RFC 8693 JSON plus a kubeconfig), and an audit record for every
//! issue and every denial. Served by every replica of `oam-trust run`.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use rand::RngCore;
use serde_json::Value;

use super::args::ExchangeArgs;
use super::audit::{AuditRecord, AuditSink, Auditor, ExchangeMetrics, Outcome};
use super::binding::{self, BindingRecord, IssueError};
use super::decision::{self, Denial, ErrorCode};
use super::grants::GrantIndex;
use super::kubeconfig::ClusterEndpoint;
use super::tls::{ExchangeListener, Peer, ReloadingCert};
use super::wire::{ExchangeErrorBody, ExchangeResponse, GrantSummary};
use crate::access::{GitLabClaims, match_token};
use crate::api::trust::GitLabTrust;
use crate::oidc::{KeyCaches, VerifyError};
use crate::runtime::metrics::Metrics;

/// Everything a request handler reads.
struct ExchangeState {
    client: Client,
    index: GrantIndex,
    ready: AtomicBool,
    key_caches: Arc<KeyCaches>,
    auditor: Auditor,
    recorder: Recorder,
    args: ExchangeArgs,
    endpoint: ClusterEndpoint,
    in_flight: Mutex<HashMap<IpAddr, usize>>,
}

/// A running exchange service. Dropping it stops it.
pub struct ExchangeServer {
    local_addr: SocketAddr,
    tls: bool,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for ExchangeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Optional parts of an exchange service.
#[derive(Default, Clone)]
pub struct ExchangeOptions {
    /// Receives every audit record after it is logged.
    pub audit_sink: Option<Arc<dyn AuditSink>>,
    /// Replica name in Events.
    pub instance: Option<String>,
    /// When set, the reaper (the backstop that deletes expired binding Secrets) runs only while this
    /// gate is open, i.e. on the leader. Each replica still revokes the tokens it issued at their TTL.
    pub reap_gate: Option<crate::runtime::leader::WriteGate>,
}

impl ExchangeServer {
    /// Binds and serves in the background (watches, reaper, certificate reload included).
    pub async fn start(
        client: Client,
        kube_config: &kube::Config,
        args: ExchangeArgs,
        metrics: &Metrics,
        key_caches: Arc<KeyCaches>,
        options: ExchangeOptions,
    ) -> anyhow::Result<ExchangeServer> {
        anyhow::ensure!(
            args.is_configured(),
            "the token exchange needs --exchange-tls-cert and --exchange-tls-key (or --exchange-insecure-http behind a TLS proxy)"
        );
        let endpoint = ClusterEndpoint::resolve(&args, kube_config)?;
        let tls = match (&args.exchange_tls_cert, &args.exchange_tls_key) {
            (Some(cert), Some(key)) if !args.exchange_insecure_http => {
                Some(ReloadingCert::load(cert, key).context("loading the exchange TLS pair")?)
            }
            _ => None,
        };
        let tls_config = match &tls {
            Some(cert) => Some(Arc::new(super::tls::server_config(cert.clone())?)),
            None => None,
        };
        let tcp = tokio::net::TcpListener::bind(args.exchange_listen)
            .await
            .with_context(|| format!("binding the token exchange on {}", args.exchange_listen))?;
        let listener = ExchangeListener::new(tcp, tls_config)?;
        let local_addr = axum::serve::Listener::local_addr(&listener)?;

        let (index, watches) = GrantIndex::start(&client);
        let reporter = Reporter {
            controller: "oam-trust-exchange".into(),
            instance: options.instance.clone(),
        };
        let state = Arc::new(ExchangeState {
            client: client.clone(),
            index: index.clone(),
            ready: AtomicBool::new(false),
            key_caches,
            auditor: Auditor::new(ExchangeMetrics::register(metrics), options.audit_sink),
            recorder: Recorder::new(client.clone(), reporter),
            endpoint,
            in_flight: Mutex::default(),
            args: args.clone(),
        });
        let router = router(state.clone());
        let reap_interval = Duration::from_secs(args.exchange_reap_interval_seconds.max(1));
        let options_reap_gate = options.reap_gate.clone();
        let secure = tls.is_some();
        let task = tokio::spawn(async move {
            let readiness = async {
                if index.ready().await {
                    state.ready.store(true, Ordering::Release);
                    tracing::info!("token exchange: caches synced; serving");
                }
                std::future::pending::<()>().await
            };
            let reload = async {
                match tls {
                    Some(cert) => cert.watch(Duration::from_secs(2)).await,
                    None => std::future::pending().await,
                }
            };
            let server = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<Peer>(),
            );
            tokio::select! {
                r = server => r.context("token exchange server failed"),
                _ = watches => anyhow::bail!("a token exchange watch ended"),
                _ = readiness => Ok(()),
                _ = reload => Ok(()),
                _ = super::reaper::reaper(client, reap_interval, options_reap_gate) => Ok(()),
            }
        });
        tracing::info!(addr = %local_addr, tls = secure, "token exchange listening");
        Ok(ExchangeServer {
            local_addr,
            tls: secure,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Base URL (`https://127.0.0.1:<port>` for a loopback listener).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let ip = match self.local_addr.ip() {
            ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        format!("{scheme}://{}", SocketAddr::new(ip, self.local_addr.port()))
    }

    /// Runs until the service fails.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        (&mut self.task)
            .await
            .context("token exchange task panicked")?
    }
}

/// `oam-trust run`'s exchange: serves until it fails. Without a TLS pair or `--exchange-insecure-http`
/// it logs why it is off and never returns.
pub async fn serve(
    client: Client,
    kube_config: kube::Config,
    args: ExchangeArgs,
    metrics: Arc<Metrics>,
    key_caches: Arc<KeyCaches>,
    options: ExchangeOptions,
    listening: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    if !args.is_configured() {
        tracing::warn!(
            "token exchange is off: pass --exchange-tls-cert/--exchange-tls-key (or --exchange-insecure-http behind a TLS proxy)"
        );
        listening.store(true, Ordering::Release);
        return std::future::pending().await;
    }
    let server =
        ExchangeServer::start(client, &kube_config, args, &metrics, key_caches, options).await?;
    listening.store(true, Ordering::Release);
    server.wait().await
}

fn router(state: Arc<ExchangeState>) -> Router {
    Router::new()
        .route("/v1/token", post(token))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// 200 once the trusts and Applications are read, 503 before.
async fn healthz(State(state): State<Arc<ExchangeState>>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

fn correlation_id() -> String {
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

/// Releases a source's concurrency slot when dropped.
struct SourceSlot<'a> {
    state: &'a ExchangeState,
    ip: IpAddr,
}

impl Drop for SourceSlot<'_> {
    fn drop(&mut self) {
        let mut map = self
            .state
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

fn take_slot(state: &ExchangeState, ip: IpAddr) -> Option<SourceSlot<'_>> {
    let mut map = state.in_flight.lock().unwrap_or_else(|e| e.into_inner());
    let n = map.entry(ip).or_insert(0);
    if *n >= state.args.exchange_max_concurrent_per_source {
        return None;
    }
    *n += 1;
    Some(SourceSlot { state, ip })
}

async fn token(
    State(state): State<Arc<ExchangeState>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let mut record = AuditRecord {
        correlation_id: correlation_id(),
        source: peer.ip().to_string(),
        ..Default::default()
    };
    let Some(_slot) = take_slot(&state, peer.ip()) else {
        let denial = Denial::new(
            ErrorCode::TemporarilyUnavailable,
            "concurrency_limit",
            format!(
                "more than {} concurrent requests from {}; retry with backoff",
                state.args.exchange_max_concurrent_per_source,
                peer.ip()
            ),
        );
        return deny(
            &state,
            &mut record,
            &denial,
            started,
            StatusCode::TOO_MANY_REQUESTS,
        );
    };
    let timeout = Duration::from_secs(state.args.exchange_request_timeout_seconds.max(1));
    let outcome =
        tokio::time::timeout(timeout, exchange(&state, &headers, body, &mut record)).await;
    match outcome {
        Ok(Ok(resp)) => issue_response(&state, &record, resp, started),
        Ok(Err(denial)) => {
            let status =
                StatusCode::from_u16(denial.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            let status = if denial.category == "body_too_large" {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                status
            };
            deny(&state, &mut record, &denial, started, status)
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
            deny(
                &state,
                &mut record,
                &denial,
                started,
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    }
}

fn deny(
    state: &ExchangeState,
    record: &mut AuditRecord,
    denial: &Denial,
    started: Instant,
    status: StatusCode,
) -> Response {
    record.outcome = Some(Outcome::Denied);
    record.reason = denial.category.to_string();
    record.error = denial.code.as_str().to_string();
    record.detail = denial.detail.clone();
    state
        .auditor
        .record(record, denial.category, started.elapsed());
    if record.verified && !record.application.is_empty() {
        publish_event(
            state,
            record,
            EventType::Warning,
            "TokenDenied",
            format!(
                "token exchange denied ({}) to job {} of project {} (pipeline {}, ref {}): {}; correlation id {}",
                denial.category,
                record.job_id,
                record.project_id,
                record.pipeline_id,
                record.ref_,
                truncate(&denial.detail, 600),
                record.correlation_id
            ),
        );
    }
    error_response(
        status,
        denial.code,
        &denial.description,
        &record.correlation_id,
    )
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn publish_event(
    state: &ExchangeState,
    record: &AuditRecord,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let Some(app) = state
        .index
        .application(&record.namespace, &record.application)
    else {
        return;
    };
    let reference = app.object_ref(&());
    let recorder = state.recorder.clone();
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(&note, 1000)),
        action: "TokenExchange".into(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "publishing a token exchange Event failed");
        }
    });
}

/// Request fields after parsing.
struct ExchangeRequest {
    subject_token: String,
    resource: Option<String>,
    requested_ttl: Option<Duration>,
}

impl std::fmt::Debug for ExchangeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("resource", &self.resource)
            .field("requested_ttl", &self.requested_ttl)
            .finish_non_exhaustive()
    }
}

fn invalid_request(category: &'static str, description: impl Into<String>) -> Denial {
    Denial::new(ErrorCode::InvalidRequest, category, description)
}

fn parse_request(body: &[u8]) -> Result<ExchangeRequest, Denial> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        invalid_request(
            "malformed_request",
            "the body is not application/x-www-form-urlencoded",
        )
    })?;
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for (k, v) in &pairs {
        if fields.insert(k.as_str(), v.as_str()).is_some() {
            return Err(invalid_request(
                "malformed_request",
                format!("parameter {k} is repeated; send each parameter once"),
            ));
        }
    }
    match fields.get("grant_type") {
        Some(&decision::GRANT_TYPE_TOKEN_EXCHANGE) => {}
        Some(other) => {
            return Err(invalid_request(
                "unsupported_grant_type",
                format!(
                    "grant_type {other:?} is not supported; use {}",
                    decision::GRANT_TYPE_TOKEN_EXCHANGE
                ),
            ));
        }
        None => {
            return Err(invalid_request(
                "malformed_request",
                format!(
                    "grant_type is missing; use {}",
                    decision::GRANT_TYPE_TOKEN_EXCHANGE
                ),
            ));
        }
    }
    match fields.get("subject_token_type") {
        Some(&(decision::TOKEN_TYPE_JWT | decision::TOKEN_TYPE_ID_TOKEN)) => {}
        _ => {
            return Err(invalid_request(
                "unsupported_token_type",
                format!(
                    "subject_token_type must be {} (or {})",
                    decision::TOKEN_TYPE_JWT,
                    decision::TOKEN_TYPE_ID_TOKEN
                ),
            ));
        }
    }
    let subject_token = fields
        .get("subject_token")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            invalid_request(
                "malformed_request",
                "subject_token is missing: pass the GitLab ID token from the job's id_tokens:",
            )
        })?;
    if subject_token.len() > crate::oidc::verify::MAX_TOKEN_BYTES {
        return Err(invalid_request(
            "too_large",
            format!(
                "subject_token is {} bytes, more than the {}-byte limit; pass the ID token itself",
                subject_token.len(),
                crate::oidc::verify::MAX_TOKEN_BYTES
            ),
        ));
    }
    let resource = match fields.get("resource") {
        None | Some(&"") => None,
        Some(r) => {
            let parts: Vec<&str> = r.split('/').collect();
            if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
                return Err(Denial::new(
                    ErrorCode::InvalidTarget,
                    "invalid_resource",
                    format!("resource {r:?} is not <namespace>/<application>[/<component>]"),
                ));
            }
            Some(r.to_string())
        }
    };
    let requested_ttl = match fields.get("requested_ttl") {
        None | Some(&"") => None,
        Some(t) => match t.parse::<u64>() {
            Ok(secs) if secs > 0 => Some(Duration::from_secs(secs)),
            _ => {
                return Err(invalid_request(
                    "malformed_request",
                    format!("requested_ttl {t:?} must be a positive number of seconds"),
                ));
            }
        },
    };
    Ok(ExchangeRequest {
        subject_token: subject_token.to_string(),
        resource,
        requested_ttl,
    })
}

/// The token's `iss`, read without verification (only to pick the trust that will verify it).
pub fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.trim().split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_string)
}

fn fill_claims(record: &mut AuditRecord, claims: &GitLabClaims) {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    record.project_id = s(&claims.project_id);
    record.project_path = s(&claims.project_path);
    record.pipeline_id = s(&claims.pipeline_id);
    record.job_id = s(&claims.job_id);
    record.user = s(&claims.user_login);
    record.ref_ = s(&claims.ref_);
    record.environment = s(&claims.environment);
    record.jti = s(&claims.jti);
}

/// Verifies against every trust of the issuer; the first that accepts wins.
async fn verify_with_trusts(
    state: &ExchangeState,
    token: &str,
    trusts: &[GitLabTrust],
    now: SystemTime,
) -> Result<(GitLabTrust, crate::oidc::VerifiedToken), Denial> {
    let mut errors = Vec::new();
    for trust in trusts {
        let cache = match state.key_caches.get(trust) {
            Ok(c) => c,
            Err(e) => {
                errors.push(VerifyError::TrustConfig {
                    trust: trust.metadata.name.clone().unwrap_or_default(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        match cache.verify(token, trust, now).await {
            Ok(verified) => return Ok((trust.clone(), verified)),
            Err(e) => errors.push(e),
        }
    }
    Err(decision::most_specific(errors)
        .map(|e| decision::verify_denial(&e))
        .unwrap_or_else(|| Denial::unauthenticated("unknown_issuer", "no trust to verify with")))
}

fn max_ttl(trust: &GitLabTrust) -> Duration {
    trust
        .spec
        .tokens
        .as_ref()
        .and_then(|t| t.max_ttl.as_deref())
        .and_then(|m| crate::duration::parse(m).ok())
        .unwrap_or(crate::access::grant::DEFAULT_MAX_TTL)
}

async fn exchange(
    state: &ExchangeState,
    headers: &HeaderMap,
    body: Body,
    record: &mut AuditRecord,
) -> Result<ExchangeResponse, Denial> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        return Err(invalid_request(
            "malformed_request",
            "Content-Type must be application/x-www-form-urlencoded (RFC 8693 form fields)",
        ));
    }
    let limit = state.args.exchange_max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        invalid_request(
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    })?;
    let request = parse_request(&bytes)?;
    record.resource = request.resource.clone().unwrap_or_default();
    if !state.ready.load(Ordering::Acquire) {
        return Err(Denial::new(
            ErrorCode::TemporarilyUnavailable,
            "not_ready",
            "the exchange is starting and has not read the cluster's trusts and Applications yet; retry shortly",
        ));
    }

    let Some(issuer) = unverified_issuer(&request.subject_token) else {
        return Err(Denial::unauthenticated(
            "malformed",
            "the subject_token is not a JWT with an iss claim",
        ));
    };
    let trusts = state.index.trusts_for_issuer(&issuer);
    if trusts.is_empty() {
        return Err(Denial::unauthenticated(
            "unknown_issuer",
            format!("no GitLabTrust with token exchange has issuer {issuer:?}"),
        ));
    }
    let now = SystemTime::now();
    let (trust, verified) = verify_with_trusts(state, &request.subject_token, &trusts, now).await?;
    let trust_name = trust.metadata.name.clone().unwrap_or_default();
    record.verified = true;
    record.trust = trust_name.clone();
    record.issuer = issuer.clone();
    record.jti = verified.jti.clone();
    let claims = GitLabClaims::from_json(Value::Object(verified.claims.clone())).map_err(|e| {
        Denial::new(
            ErrorCode::InvalidGrant,
            "invalid_claim",
            format!("the ID token's claims are not GitLab-shaped: {e}"),
        )
    })?;
    fill_claims(record, &claims);

    let grants = state.index.grants_for_trust(&trust_name);
    let outcome = match_token(&claims, &trust, &grants, request.resource.as_deref());
    if let Some(r) = &request.resource {
        let mut parts = r.split('/');
        record.namespace = parts.next().unwrap_or_default().to_string();
        record.application = parts.next().unwrap_or_default().to_string();
    }
    let grant = decision::decide(outcome, &trust_name, &grants, request.resource.as_deref())?;
    record.namespace = grant.namespace.clone();
    record.application = grant.application.clone();
    record.grant = grant.id.clone();

    let remaining = verified
        .expires_at
        .duration_since(now)
        .unwrap_or(Duration::ZERO);
    let mut ttl = grant.ttl.min(max_ttl(&trust)).min(remaining);
    if let Some(requested) = request.requested_ttl {
        ttl = ttl.min(requested);
    }
    // Whole seconds, never rounded up past the ID token's exp.
    let ttl = Duration::from_secs(ttl.as_secs());
    if ttl.is_zero() {
        return Err(Denial::new(
            ErrorCode::InvalidGrant,
            "expired",
            "the ID token expires in less than a second; request a fresh token",
        ));
    }
    record.ttl_seconds = ttl.as_secs();
    let expires_at = now + ttl;
    let application = state
        .index
        .application(&grant.namespace, &grant.application);
    let binding_record = BindingRecord {
        issuer: &issuer,
        jti: &verified.jti,
        trust: &trust_name,
        grant,
        application: application.as_deref(),
        project_id: &record.project_id,
        pipeline_id: &record.pipeline_id,
        job_id: &record.job_id,
        expires_at,
        id_token_expires_at: verified.expires_at,
        correlation_id: &record.correlation_id,
    };
    let issued = binding::issue(&state.client, &binding_record, ttl)
        .await
        .map_err(|e| {
            let code = match &e {
                IssueError::Replayed { .. } => ErrorCode::InvalidGrant,
                IssueError::ServiceAccountMissing { .. } => ErrorCode::TemporarilyUnavailable,
                _ => ErrorCode::ServerError,
            };
            let denial = Denial::new(code, e.category(), e.to_string());
            if code == ErrorCode::ServerError {
                // API errors may name internals; the caller gets the correlation id instead.
                Denial {
                    description: "the cluster refused to issue the token; quote the correlation id to the cluster operators".into(),
                    ..denial
                }
            } else {
                denial
            }
        })?;
    record.service_account = issued.service_account.clone();
    record.binding_secret = issued.secret.clone();

    // Revoke at the TTL precisely; the reaper is the backstop across restarts and replicas.
    {
        let client = state.client.clone();
        let (ns, name) = (issued.namespace.clone(), issued.secret.clone());
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            binding::delete_secret(&client, &ns, &name, None).await;
        });
    }

    let expires_at_text = k8s_openapi::jiff::Timestamp::from_second(
        expires_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as i64,
    )
    .map(|t| t.to_string())
    .unwrap_or_default();
    let user = format!("{}-{}", grant.namespace, issued.service_account);
    let response = ExchangeResponse {
        kubeconfig: state.endpoint.kubeconfig(grant, &user, &issued.token),
        access_token: issued.token,
        issued_token_type: decision::TOKEN_TYPE_ACCESS_TOKEN.into(),
        token_type: "Bearer".into(),
        expires_in: ttl.as_secs(),
        grant: GrantSummary {
            application: grant.application.clone(),
            namespace: grant.namespace.clone(),
            component: grant.component.clone(),
            grant: grant.id.clone(),
            service_account: issued.service_account.clone(),
            trust: trust_name.clone(),
            rules: grant.role.rules.clone().unwrap_or_default(),
            expires_at: expires_at_text,
        },
        correlation_id: record.correlation_id.clone(),
    };
    record.outcome = Some(Outcome::Issued);
    record.reason = "ok".into();
    Ok(response)
}

fn issue_response(
    state: &ExchangeState,
    record: &AuditRecord,
    response: ExchangeResponse,
    started: Instant,
) -> Response {
    // Audited before the token leaves the process.
    state.auditor.record(record, "ok", started.elapsed());
    publish_event(
        state,
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
    let mut resp = (StatusCode::OK, axum::Json(response)).into_response();
    no_store(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        serde_urlencoded::to_string(pairs).unwrap().into_bytes()
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let ok = form(&[
            ("grant_type", decision::GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", "a.b.c"),
            ("subject_token_type", decision::TOKEN_TYPE_ID_TOKEN),
            ("resource", "team/shop/web"),
            ("requested_ttl", "120"),
        ]);
        let r = parse_request(&ok).unwrap();
        assert_eq!(r.resource.as_deref(), Some("team/shop/web"));
        assert_eq!(r.requested_ttl, Some(Duration::from_secs(120)));

        let wrong_grant = form(&[("grant_type", "password"), ("subject_token", "x")]);
        assert_eq!(
            parse_request(&wrong_grant).unwrap_err().category,
            "unsupported_grant_type"
        );
        let repeated = form(&[
            ("grant_type", decision::GRANT_TYPE_TOKEN_EXCHANGE),
            ("grant_type", decision::GRANT_TYPE_TOKEN_EXCHANGE),
        ]);
        assert_eq!(
            parse_request(&repeated).unwrap_err().category,
            "malformed_request"
        );
        let bad_resource = form(&[
            ("grant_type", decision::GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", "a.b.c"),
            ("subject_token_type", decision::TOKEN_TYPE_JWT),
            ("resource", "only-namespace"),
        ]);
        assert_eq!(
            parse_request(&bad_resource).unwrap_err().code,
            ErrorCode::InvalidTarget
        );
        let big = "x".repeat(crate::oidc::verify::MAX_TOKEN_BYTES + 1);
        let too_large = form(&[
            ("grant_type", decision::GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", &big),
            ("subject_token_type", decision::TOKEN_TYPE_JWT),
        ]);
        assert_eq!(parse_request(&too_large).unwrap_err().category, "too_large");
    }

    #[test]
    fn the_issuer_is_peeked_without_verification() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://gitlab.example.com"}"#);
        assert_eq!(
            unverified_issuer(&format!("e30.{payload}.sig")).as_deref(),
            Some("https://gitlab.example.com")
        );
        assert_eq!(unverified_issuer("garbage"), None);
    }
}
