//! Why the dev issuer could not start, mint or rotate.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why the dev issuer could not start or mint.
#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("key: {0}")]
    Key(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("mint request: {0}")]
    BadRequest(String),
}

/// Maps an IO error on `path` to `DevIssuerError::Io`, naming the file.
pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DevIssuerError + '_ {
    move |source| DevIssuerError::Io {
        path: path.to_path_buf(),
        source,
    }
}
