//! The job side of the exchange: a client of `POST /v1/token`, and `oam-trust login` (exchange the
//! job's ID token, write a kubeconfig, print what was granted).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::decision::{self};
pub use super::wire::ExchangeErrorBody;
use super::wire::ExchangeResponse;

/// Why an exchange call failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeCallError {
    #[error("the token exchange refused ({}, HTTP {status}): {} (correlation id {})", body.error, body.error_description, body.correlation_id)]
    Refused {
        status: u16,
        body: ExchangeErrorBody,
    },
    #[error("calling the token exchange at {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("the token exchange at {url} answered HTTP {status} with an unreadable body")]
    Unreadable { url: String, status: u16 },
}

/// A client of `POST /v1/token`. Cheap to clone.
#[derive(Clone)]
pub struct ExchangeClient {
    url: String,
    client: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ExchangeClient {
    /// A client for the exchange at `url` (`https://…`; `http://` only for a local or proxied service),
    /// trusting `ca_pem` when given, else the system roots.
    pub fn new(url: &str, ca_pem: Option<&str>) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_pem {
            Some(pem) => {
                for cert in crate::oidc::https::parse_ca_bundle(pem)? {
                    roots.add(cert).context("unusable CA certificate")?;
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(ExchangeClient {
            url: url.trim_end_matches('/').to_string(),
            client: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Exchanges `id_token`; `resource` and `requested_ttl` are optional.
    pub async fn exchange(
        &self,
        id_token: &str,
        resource: Option<&str>,
        requested_ttl: Option<Duration>,
    ) -> Result<ExchangeResponse, ExchangeCallError> {
        let ttl = requested_ttl.map(|t| t.as_secs().max(1).to_string());
        let mut form = vec![
            ("grant_type", decision::GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", id_token),
            ("subject_token_type", decision::TOKEN_TYPE_JWT),
        ];
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        if let Some(t) = &ttl {
            form.push(("requested_ttl", t));
        }
        let body = serde_urlencoded::to_string(&form).map_err(|e| self.transport(e))?;
        self.post_form(body.into_bytes()).await
    }

    /// Posts a raw form body (tests send malformed ones).
    pub async fn post_form(&self, body: Vec<u8>) -> Result<ExchangeResponse, ExchangeCallError> {
        let url = format!("{}/v1/token", self.url);
        let request = hyper::Request::post(&url)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.transport(e))?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| self.transport(e))?;
            let status = response.status().as_u16();
            let bytes = Limited::new(response.into_body(), 1024 * 1024)
                .collect()
                .await
                .map_err(|e| self.transport(e))?
                .to_bytes();
            Ok::<_, ExchangeCallError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .map_err(|_| self.transport("no answer within 60s"))??;
        if status == 200 {
            return serde_json::from_slice(&bytes).map_err(|_| ExchangeCallError::Unreadable {
                url: url.clone(),
                status,
            });
        }
        match serde_json::from_slice::<ExchangeErrorBody>(&bytes) {
            Ok(body) => Err(ExchangeCallError::Refused { status, body }),
            Err(_) => Err(ExchangeCallError::Unreadable { url, status }),
        }
    }

    fn transport(&self, e: impl std::fmt::Display) -> ExchangeCallError {
        ExchangeCallError::Transport {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// login

/// `oam-trust login`: inside a GitLab job, exchange the ID token for a kubeconfig.
#[derive(clap::Args, Debug, Clone)]
pub struct LoginArgs {
    /// Base URL of the token exchange (e.g. https://oam-trust.example.com).
    #[arg(long, env = "OAM_TRUST_URL")]
    pub url: String,
    /// Environment variable holding the ID token (the name under the job's `id_tokens:`).
    #[arg(long, default_value = "ID_TOKEN")]
    pub token_env: String,
    /// `<namespace>/<application>[/<component>]`, when the job matches several grants.
    #[arg(long, env = "OAM_TRUST_RESOURCE")]
    pub resource: Option<String>,
    /// Requested lifetime (e.g. 10m); the grant's TTL and the ID token's own expiry cap it.
    #[arg(long, value_parser = crate::duration::parse)]
    pub ttl: Option<Duration>,
    /// Where to write the kubeconfig (mode 0600).
    #[arg(
        long,
        env = "OAM_TRUST_KUBECONFIG_OUT",
        default_value = "oam-trust.kubeconfig"
    )]
    pub kubeconfig_out: PathBuf,
    /// PEM CA bundle of the exchange's certificate (default: system roots).
    #[arg(long, env = "OAM_TRUST_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Runs `oam-trust login`.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let token = std::env::var(&args.token_env).map_err(|_| {
        anyhow::anyhow!(
            "environment variable {} is not set: declare it under the job's id_tokens: (with aud: set to the GitLabTrust's audience) or pass --token-env",
            args.token_env
        )
    })?;
    let ca = match &args.ca_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading --ca-file {}", p.display()))?,
        ),
        None => None,
    };
    if args.url.starts_with("http://") {
        eprintln!(
            "warning: {} is plain HTTP; the ID token and the issued token travel unencrypted",
            args.url
        );
    }
    let client = ExchangeClient::new(&args.url, ca.as_deref())?;
    let answer = client
        .exchange(token.trim(), args.resource.as_deref(), args.ttl)
        .await?;
    write_private(&args.kubeconfig_out, answer.kubeconfig.as_bytes())?;
    let g = &answer.grant;
    println!(
        "oam-trust: granted {} on Application {}/{}{}",
        g.grant,
        g.namespace,
        g.application,
        g.component
            .as_deref()
            .map(|c| format!(" (component {c})"))
            .unwrap_or_default()
    );
    println!("  ServiceAccount: {}/{}", g.namespace, g.service_account);
    for line in crate::access::rules::describe(&g.rules) {
        println!("  may: {line}");
    }
    println!("  expires: {} (in {}s)", g.expires_at, answer.expires_in);
    println!(
        "  kubeconfig: {} (export KUBECONFIG={})",
        args.kubeconfig_out.display(),
        args.kubeconfig_out.display()
    );
    println!("  correlation id: {}", answer.correlation_id);
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing the kubeconfig to {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing the kubeconfig to {}", path.display()))?;
    Ok(())
}
