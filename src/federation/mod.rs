//! federation: the token-exchange service (GitLab CI ID token in, scoped expiring Kubernetes token out),
//! token issuance (binding Secret + bound TokenRequest, reaper), audit, and the job-side client
//! (`login`). Uses `runtime`'s clients, stores and metrics; never imports `controller`.
//!
//! Invariants: the grants come from the one derivation (`access::World::derive`) and the decision from
//! the pure `access::match_token` through `decision`, shared with `explain`; no token leaves the process before its binding Secret
//! exists and its audit line is written; tokens are never logged or put into errors.
pub mod args;
pub mod audit;
pub mod binding;
pub mod client;
pub mod decision;
pub mod grants;
pub mod kubeconfig;
pub mod reaper;
pub mod server;
pub mod tls;
pub mod wire;

pub use args::ExchangeArgs;
pub use audit::{AUDIT_TARGET, AuditRecord, AuditSink, MemoryAuditSink, Outcome};
pub use server::{ExchangeOptions, ExchangeServer, serve};
pub use wire::{ExchangeResponse, GrantSummary};
