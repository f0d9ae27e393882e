//! oidc: verification of GitLab CI ID tokens and the keys behind it.
//!
//! Invariants: `verify::verify` is pure (token, trust, key set and clock in; claims or a typed refusal out);
//! `keys::KeyCache` is the only IO, over HTTPS only. Tokens are never logged.
pub mod https;
pub mod keys;
pub mod registry;
pub mod verify;

pub use keys::{
    KeyCache, KeyCacheConfig, KeyCacheError, KeyCacheStatus, KeySet, KeySetError, KeySource,
};
pub use registry::KeyCaches;
pub use verify::{SigningAlgorithm, VerifiedToken, VerifyError, verify};
