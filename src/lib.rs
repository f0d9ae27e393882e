//! oam-trust: an operator that reconciles OAM Applications and federates GitLab CI identity into scoped,
//! expiring Kubernetes access.
//!
//! `render` and `access` are pure (plain data in, plain data out); `runtime` composes the process and
//! holds what `controller` and `federation` share; only those three talk to the API server; `oidc` is
//! the one place that verifies a GitLab ID token. `explain`, `set_image`, `rollback` (with `rollout`,
//! what those two share), `status`, `authn_config` and `manifest` are CLI commands beside the rooms
//! they use.
pub mod access;
pub mod api;
pub mod authn_config;
pub mod cli;
pub mod controller;
pub mod dev_issuer;
pub mod duration;
pub mod explain;
pub mod federation;
pub mod kinds;
pub mod manifest;
pub mod names;
pub mod oidc;
pub mod render;
pub mod resume;
pub mod rollback;
pub mod rollout;
pub mod runtime;
pub mod set_image;
pub mod status;
pub mod telemetry;

/// The crate version and the git revision it was built from, as `--version` prints it.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("OAM_TRUST_GIT_REVISION"),
    ")"
);
