//! The exchange service's flags (part of `oam-trust run`). Plain data: no client, no IO.
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of the exchange service (part of `oam-trust run`).
#[derive(clap::Args, Debug, Clone)]
pub struct ExchangeArgs {
    /// Address of the token-exchange endpoint (`POST /v1/token`).
    #[arg(
        long,
        env = "OAM_TRUST_EXCHANGE_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub exchange_listen: SocketAddr,
    /// PEM certificate (chain) of the exchange endpoint; reloaded when the file changes.
    #[arg(
        long,
        env = "OAM_TRUST_EXCHANGE_TLS_CERT",
        requires = "exchange_tls_key"
    )]
    pub exchange_tls_cert: Option<PathBuf>,
    /// PEM private key of the exchange endpoint; reloaded when the file changes.
    #[arg(
        long,
        env = "OAM_TRUST_EXCHANGE_TLS_KEY",
        requires = "exchange_tls_cert"
    )]
    pub exchange_tls_key: Option<PathBuf>,
    /// Serve the exchange over plain HTTP (only behind a TLS-terminating proxy, or for local tests).
    #[arg(
        long,
        env = "OAM_TRUST_EXCHANGE_INSECURE_HTTP",
        conflicts_with = "exchange_tls_cert"
    )]
    pub exchange_insecure_http: bool,
    /// API server URL written into issued kubeconfigs (default: the URL the operator itself uses).
    #[arg(long, env = "OAM_TRUST_EXCHANGE_API_SERVER")]
    pub exchange_api_server: Option<String>,
    /// PEM CA bundle of the API server written into issued kubeconfigs (default: the operator's own).
    #[arg(long, env = "OAM_TRUST_EXCHANGE_API_SERVER_CA")]
    pub exchange_api_server_ca: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "OAM_TRUST_EXCHANGE_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub exchange_max_body_bytes: usize,
    /// Requests taking longer than this many seconds are answered 503.
    #[arg(long, env = "OAM_TRUST_EXCHANGE_REQUEST_TIMEOUT", default_value_t = 10)]
    pub exchange_request_timeout_seconds: u64,
    /// Concurrent requests allowed from one source IP; more are answered 429.
    #[arg(
        long,
        env = "OAM_TRUST_EXCHANGE_MAX_CONCURRENT_PER_SOURCE",
        default_value_t = 64
    )]
    pub exchange_max_concurrent_per_source: usize,
    /// Concurrent requests allowed in all; more are answered 429.
    #[arg(long, env = "OAM_TRUST_EXCHANGE_MAX_CONCURRENT", default_value_t = 256)]
    pub exchange_max_concurrent: usize,
    /// Address ranges of the proxies in front of the exchange (e.g. the Ingress controller's pods),
    /// comma-separated CIDRs: behind one of them, a request counts against the client address in
    /// `X-Forwarded-For` instead of the proxy's.
    #[arg(
        long,
        env = "OAM_TRUST_EXCHANGE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = clap::value_parser!(super::limits::Cidr)
    )]
    pub exchange_trusted_proxies: Vec<super::limits::Cidr>,
    /// How often expired TokenIssuance records are looked for and deleted, in seconds.
    #[arg(long, env = "OAM_TRUST_EXCHANGE_REAP_INTERVAL", default_value_t = 5)]
    pub exchange_reap_interval_seconds: u64,
    /// Append audit records (one JSON object per line, every issue and refusal) to this file instead
    /// of stdout. Written whatever the log level.
    #[arg(long, env = "OAM_TRUST_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
}

impl Default for ExchangeArgs {
    fn default() -> Self {
        ExchangeArgs {
            exchange_listen: ([0, 0, 0, 0], 8443).into(),
            exchange_tls_cert: None,
            exchange_tls_key: None,
            exchange_insecure_http: false,
            exchange_api_server: None,
            exchange_api_server_ca: None,
            exchange_max_body_bytes: 64 * 1024,
            exchange_request_timeout_seconds: 10,
            exchange_max_concurrent_per_source: 64,
            exchange_max_concurrent: 256,
            exchange_trusted_proxies: Vec::new(),
            exchange_reap_interval_seconds: 5,
            audit_log: None,
        }
    }
}

impl ExchangeArgs {
    /// Whether the flags say how to serve (TLS pair, or plain HTTP asked for).
    pub fn is_configured(&self) -> bool {
        self.exchange_insecure_http
            || (self.exchange_tls_cert.is_some() && self.exchange_tls_key.is_some())
    }
}
