//! access (see design.md).
