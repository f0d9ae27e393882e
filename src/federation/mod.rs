//! federation (see design.md).
