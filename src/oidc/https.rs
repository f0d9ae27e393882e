//! A small HTTPS client for discovery documents and JWKS: https only, no redirects, a total timeout and a
//! response size limit. With a CA bundle it trusts only that bundle (self-hosted GitLab with a private CA);
//! without one it trusts the system roots.
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why a fetch failed. Messages name the URL and say what to fix.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: only https:// URLs are fetched")]
    NotHttps { url: String },
    #[error("caBundle: {reason}")]
    CaBundle { reason: String },
    #[error("no system CA certificates found; set jwks.caBundle")]
    NoSystemRoots,
    #[error("{url}: invalid request: {reason}")]
    Request { url: String, reason: String },
    #[error("{url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: Box<hyper_util::client::legacy::Error>,
    },
    #[error("{url}: no response within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: String,
    },
    #[error("{url}: response body larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: reading the response: {reason}")]
    Body { url: String, reason: String },
}

/// HTTPS client with its own trust roots. Cheap to clone.
#[derive(Clone)]
pub struct HttpsClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    max_body_bytes: usize,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// Parses a PEM bundle into certificates; an empty or unreadable bundle is an error.
pub fn parse_ca_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>, FetchError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FetchError::CaBundle {
            reason: format!("not a PEM certificate bundle: {e}"),
        })?;
    if certs.is_empty() {
        return Err(FetchError::CaBundle {
            reason: "contains no PEM CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn system_roots() -> Result<Arc<RootCertStore>, FetchError> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        store.add_parsable_certificates(loaded.certs);
        Arc::new(store)
    });
    if roots.is_empty() {
        return Err(FetchError::NoSystemRoots);
    }
    Ok(roots.clone())
}

impl HttpsClient {
    /// A client trusting only `ca_bundle` when given, else the system roots.
    pub fn new(
        ca_bundle: Option<&str>,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Self, FetchError> {
        let roots = match ca_bundle {
            Some(pem) => {
                let mut store = RootCertStore::empty();
                for cert in parse_ca_bundle(pem)? {
                    store.add(cert).map_err(|e| FetchError::CaBundle {
                        reason: format!("unusable CA certificate: {e}"),
                    })?;
                }
                Arc::new(store)
            }
            None => system_roots()?,
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::CaBundle {
            reason: format!("TLS setup: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(HttpsClient {
            client,
            timeout,
            max_body_bytes,
        })
    }

    /// GET `url`, expecting 200; returns the body.
    pub async fn get(&self, url: &str) -> Result<Bytes, FetchError> {
        self.send(url, hyper::Method::GET, None).await
    }

    /// POST a JSON body to `url`, expecting 200; returns the body.
    pub async fn post_json(&self, url: &str, body: Vec<u8>) -> Result<Bytes, FetchError> {
        self.send(url, hyper::Method::POST, Some(body)).await
    }

    async fn send(
        &self,
        url: &str,
        method: hyper::Method,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, FetchError> {
        if !url.starts_with("https://") {
            return Err(FetchError::NotHttps { url: url.into() });
        }
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("oam-trust/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| FetchError::Request {
                url: url.into(),
                reason: e.to_string(),
            })?;
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|e| FetchError::Transport {
                        url: url.into(),
                        source: Box::new(e),
                    })?;
            let status = response.status();
            if status != hyper::StatusCode::OK {
                let hint = match response.headers().get(hyper::header::LOCATION) {
                    Some(loc) if status.is_redirection() => format!(
                        " (redirect to {}; redirects are not followed, configure the final URL)",
                        loc.to_str().unwrap_or("?")
                    ),
                    _ => String::new(),
                };
                return Err(FetchError::Status {
                    url: url.into(),
                    status: status.as_u16(),
                    hint,
                });
            }
            let limited = Limited::new(response.into_body(), self.max_body_bytes);
            match limited.collect().await {
                Ok(collected) => Ok(collected.to_bytes()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(FetchError::TooLarge {
                    url: url.into(),
                    limit: self.max_body_bytes,
                }),
                Err(e) => Err(FetchError::Body {
                    url: url.into(),
                    reason: e.to_string(),
                }),
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| FetchError::Timeout {
                url: url.into(),
                timeout: self.timeout,
            })?
    }
}
