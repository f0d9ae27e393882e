//! oidc: verification of GitLab CI ID tokens and the keys behind it.
//!
//! Layers, each importing only those before it: `peek` (a JWT read unverified) and `keys` (a JWKS parsed
//! into a `KeySet`) → `verify` (pure: token, trust, key set and clock in; claims or a typed refusal out)
//! → `https` and `cache` (`KeyCache`, the only IO, over HTTPS only) → `registry` (one cache per trust).
//! Tokens are never logged.
pub mod cache;
pub mod https;
pub mod keys;
pub mod peek;
pub mod registry;
pub mod verify;

pub use cache::{KeyCache, KeyCacheConfig, KeyCacheError, KeyCacheStatus, KeySource};
pub use keys::{KeySet, KeySetError};
pub use peek::{JwtParts, PeekError, UnverifiedJwt, peek};
pub use registry::KeyCaches;
pub use verify::{SigningAlgorithm, VerifiedToken, VerifyError, verify};
