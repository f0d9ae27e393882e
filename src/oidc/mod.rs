//! oidc (see design.md).
