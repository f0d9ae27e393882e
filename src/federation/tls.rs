//! Serving transport of the exchange: TLS from a cert/key PEM pair that is reloaded when either file
//! changes (polled by mtime; a bad new pair is logged and the old one kept), or plain HTTP when asked
//! for explicitly. Handshakes run off the accept loop, so a slow client cannot stall others.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Config(String),
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| TlsError::Pem {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::Config(format!("certificate and key do not match: {e}")))?;
    Ok(Arc::new(certified))
}

/// Modification times of the certificate and key files.
type Stamp = (SystemTime, SystemTime);

fn mtimes(cert: &Path, key: &Path) -> Option<Stamp> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

/// Serves the current certificate; `watch` swaps it when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Option<Stamp>, Arc<CertifiedKey>)>,
}

impl ReloadingCert {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
        let stamp = mtimes(cert, key);
        let certified = load(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((stamp, certified)),
        }))
    }

    /// Reloads if either file's mtime changed; returns whether a new pair is served.
    pub fn reload_if_changed(&self) -> bool {
        let stamp = mtimes(&self.cert, &self.key);
        if stamp.is_none() || self.current.read().unwrap_or_else(|e| e.into_inner()).0 == stamp {
            return false;
        }
        match load(&self.cert, &self.key) {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (stamp, certified);
                tracing::info!(cert = %self.cert.display(), "exchange: TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "exchange: new TLS certificate not usable; keeping the old one");
                false
            }
        }
    }

    /// Polls the files every `interval`.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            self.reload_if_changed();
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .clone(),
        )
    }
}

/// A TLS server config serving `cert`'s current pair.
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A connection, TLS or plain.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// Peer address as the handler sees it.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Accepted (and, with TLS, handshaken) connections for `axum::serve`.
pub struct ExchangeListener {
    local: SocketAddr,
    rx: tokio::sync::mpsc::Receiver<(Box<dyn Connection>, SocketAddr)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for ExchangeListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl ExchangeListener {
    /// Accepts on `listener`; with `tls`, each handshake runs in its own task with a 10 s limit.
    pub fn new(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel::<(Box<dyn Connection>, SocketAddr)>(256);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "exchange: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let tx = tx.clone();
                match &acceptor {
                    None => {
                        if tx.send((Box::new(stream), peer)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let handshake = tokio::time::timeout(
                                Duration::from_secs(10),
                                acceptor.accept(stream),
                            );
                            if let Ok(Ok(tls)) = handshake.await {
                                let _ = tx.send((Box::new(tls), peer)).await;
                            }
                        });
                    }
                }
            }
        });
        Ok(ExchangeListener {
            local,
            rx,
            accept_task,
        })
    }
}

impl axum::serve::Listener for ExchangeListener {
    type Io = Box<dyn Connection>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task ended (runtime shutting down): never yield again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, ExchangeListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, ExchangeListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> Vec<u8> {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        std::fs::write(dir.join("tls.crt"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
        cert.cert.der().to_vec()
    }

    fn served(cert: &ReloadingCert) -> Vec<u8> {
        cert.current.read().unwrap().1.cert[0].to_vec()
    }

    #[test]
    fn a_changed_pair_is_served_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let first = write_pair(dir.path(), "first.example");
        let cert = ReloadingCert::load(&crt, &key).unwrap();
        assert_eq!(served(&cert), first);
        assert!(
            !cert.reload_if_changed(),
            "unchanged files are not reloaded"
        );

        let second = write_pair(dir.path(), "second.example");
        let later = SystemTime::now() + Duration::from_secs(5);
        for p in [&crt, &key] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        assert!(cert.reload_if_changed());
        assert_eq!(served(&cert), second);

        std::fs::write(&key, "not a key").unwrap();
        let latest = later + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&key)
            .unwrap()
            .set_modified(latest)
            .unwrap();
        assert!(!cert.reload_if_changed(), "a broken pair is not served");
        assert_eq!(served(&cert), second);
    }
}
