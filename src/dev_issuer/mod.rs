//! dev-issuer: a local OIDC issuer that mints GitLab-shaped CI ID tokens, for tests, demos and trying a
//! GitLabTrust before going live. It serves HTTPS with its own CA (written out for the trust's
//! `jwks.caBundle`), GitLab's discovery and JWKS paths, and `POST /mint` / `POST /rotate`.
//!
//! Never for production: anyone who reaches `/mint` gets a token. It listens on loopback by default.
//!
//! Layers, each importing only those before it: `error` → `state` (the state directory) → `keys`
//! (signing keys and the JWKS) → `mint` (claims and signatures); `tls` (CA and serving certificate);
//! `server` (HTTPS endpoints and the `DevIssuer` handle) → `cli` (the subcommand). This file only
//! re-exports.
mod cli;
mod error;
mod keys;
mod mint;
mod server;
mod state;
mod tls;

pub use cli::{ClientArgs, DevIssuerArgs, DevIssuerCommand, MintArgs, RotateArgs, ServeArgs, run};
pub use error::DevIssuerError;
pub use keys::KeyKind;
pub use mint::{MintAlgorithm, MintRequest};
pub use server::{DevIssuer, DevIssuerOptions};
