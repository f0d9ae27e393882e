//! The running issuer: binds, serves HTTPS with GitLab's discovery and JWKS paths plus `POST /mint` and
//! `POST /rotate`, and hands tests a `DevIssuer` to mint, rotate, and switch the JWKS off or slow it
//! down directly.
//!
//! Anyone who reaches `/mint` gets a token: loopback by default, never for production.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{DevIssuerError, io_err};
use super::keys::{KeyKind, Keyring};
use super::mint::{GITLAB_CLAIMS, MintRequest, Minter};
use super::tls::{serving_sans, tls_material};

/// How to run a dev issuer.
#[derive(Debug, Clone)]
pub struct DevIssuerOptions {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `iss` and base URL; default `https://<listen address>`.
    pub issuer_url: Option<String>,
    /// Keys and CA are kept here so a restart keeps them.
    pub state_dir: Option<PathBuf>,
    /// Default `aud`.
    pub audience: String,
    /// Default `exp - iat`.
    pub lifetime: Duration,
    /// Extra DNS names or IPs for the serving certificate.
    pub extra_sans: Vec<String>,
}

impl Default for DevIssuerOptions {
    fn default() -> Self {
        DevIssuerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            issuer_url: None,
            state_dir: None,
            audience: "https://oam-trust.example".into(),
            lifetime: Duration::from_secs(300),
            extra_sans: Vec::new(),
        }
    }
}

struct Shared {
    minter: Minter,
    keys: Keyring,
    jwks_available: AtomicBool,
    /// Milliseconds the JWKS endpoint waits before answering.
    jwks_delay_ms: AtomicU64,
    jwks_requests: AtomicU64,
    discovery_requests: AtomicU64,
}

impl Shared {
    fn issuer(&self) -> &str {
        &self.minter.issuer
    }

    fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer(),
            "jwks_uri": format!("{}/oauth/discovery/keys", self.issuer()),
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public", "pairwise"],
            "scopes_supported": ["openid"],
            "claims_supported": GITLAB_CLAIMS,
        })
    }
}

/// A running dev issuer. Dropping it stops the server.
pub struct DevIssuer {
    shared: Arc<Shared>,
    ca_pem: String,
    local_addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("url", &self.shared.issuer())
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl DevIssuer {
    /// Loads or creates keys and CA, binds, and serves in the background on the current tokio runtime.
    pub async fn start(opts: DevIssuerOptions) -> Result<DevIssuer, DevIssuerError> {
        if let Some(dir) = &opts.state_dir {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| DevIssuerError::Bind {
                addr: opts.listen,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| DevIssuerError::Bind {
                addr: opts.listen,
                source,
            })?;
        let issuer = opts
            .issuer_url
            .clone()
            .unwrap_or_else(|| format!("https://{local_addr}"))
            .trim_end_matches('/')
            .to_string();
        let sans = serving_sans(&issuer, &opts.extra_sans);

        let dir = opts.state_dir.clone();
        let (tls, keys) = tokio::task::spawn_blocking(move || {
            let tls = tls_material(dir.as_deref(), sans)?;
            let keys = Keyring::load(dir)?;
            Ok::<_, DevIssuerError>((tls, keys))
        })
        .await
        .map_err(|e| DevIssuerError::Key(e.to_string()))??;

        let shared = Arc::new(Shared {
            minter: Minter::new(issuer, opts.audience, opts.lifetime),
            keys,
            jwks_available: AtomicBool::new(true),
            jwks_delay_ms: AtomicU64::new(0),
            jwks_requests: AtomicU64::new(0),
            discovery_requests: AtomicU64::new(0),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.server));
        let server = tokio::spawn(serve(listener, acceptor, router(shared.clone())));
        Ok(DevIssuer {
            shared,
            ca_pem: tls.ca_pem,
            local_addr,
            server,
        })
    }

    /// The issuer URL (`iss` of minted tokens), e.g. `https://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        self.shared.issuer()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// PEM of the CA that signed the serving certificate: the trust's `jwks.caBundle`.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Mints a compact JWT.
    pub fn mint(&self, req: &MintRequest) -> Result<String, DevIssuerError> {
        self.shared.minter.mint(&self.shared.keys, req)
    }

    /// Replaces the key of `kind` with a new one (no overlap, as GitLab does); returns the new `kid`.
    pub fn rotate_key(&self, kind: KeyKind) -> Result<String, DevIssuerError> {
        self.shared.keys.rotate(kind)
    }

    /// The `kid` of the current key of `kind`.
    pub fn kid(&self, kind: KeyKind) -> String {
        self.shared.keys.kid(kind)
    }

    /// The published JWKS document.
    pub fn jwks_json(&self) -> String {
        self.shared.keys.jwks().to_string()
    }

    /// While false, the JWKS endpoint answers 503 (to test fetch failures).
    pub fn set_jwks_available(&self, available: bool) {
        self.shared
            .jwks_available
            .store(available, Ordering::SeqCst);
    }

    /// The JWKS endpoint waits this long before answering (to test a slow issuer); zero by default.
    pub fn set_jwks_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.jwks_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Requests served on the JWKS endpoint so far.
    pub fn jwks_requests(&self) -> u64 {
        self.shared.jwks_requests.load(Ordering::SeqCst)
    }

    /// Requests served on the discovery endpoint so far.
    pub fn discovery_requests(&self) -> u64 {
        self.shared.discovery_requests.load(Ordering::SeqCst)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oauth/discovery/keys", get(jwks))
        .route("/-/jwks", get(jwks))
        .route("/mint", post(mint))
        .route("/rotate", post(rotate))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_requests.fetch_add(1, Ordering::SeqCst);
    axum::Json(shared.discovery()).into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_requests.fetch_add(1, Ordering::SeqCst);
    let delay = shared.jwks_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if !shared.jwks_available.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "JWKS switched off\n").into_response();
    }
    (
        [(
            header::CACHE_CONTROL,
            "max-age=86400, public, must-revalidate",
        )],
        axum::Json(shared.keys.jwks()),
    )
        .into_response()
}

async fn mint(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let req: MintRequest = if body.iter().all(u8::is_ascii_whitespace) {
        MintRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(req) => req,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("mint request: {e}\n")).into_response();
            }
        }
    };
    match shared.minter.mint(&shared.keys, &req) {
        Ok(token) => ([(header::CONTENT_TYPE, "application/jwt")], token).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RotateRequest {
    key: KeyKind,
}

async fn rotate(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let req: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(req) => req,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("rotate request: {e}\n")).into_response();
            }
        }
    };
    let outcome = tokio::task::spawn_blocking(move || shared.keys.rotate(req.key)).await;
    match outcome {
        Ok(Ok(kid)) => axum::Json(json!({ "kid": kid })).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
) {
    // Connections live in this set, so aborting the server task ends them too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "dev-issuer: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}
