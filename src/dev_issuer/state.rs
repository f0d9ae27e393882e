//! The state directory (`--state-dir`): keys and CA kept across restarts. Private keys are written
//! owner-only (0600 on Unix) and atomically, so a crash never leaves half a key behind.
use std::path::Path;

use super::error::{DevIssuerError, io_err};

/// The file's text, or `None` when it does not exist yet.
pub(super) fn read_if_present(path: &Path) -> Result<Option<String>, DevIssuerError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes a secret: to a temporary file only the owner can read, then renamed into place.
pub(super) fn write_private(path: &Path, contents: &str) -> Result<(), DevIssuerError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}
