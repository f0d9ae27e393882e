//! federation: the token-exchange service (GitLab CI ID token in, scoped expiring Kubernetes token out),
//! token issuance (TokenIssuance record + the binding Secret it owns + bound TokenRequest, reaper),
//! audit (its own log), and the job-side client
//! (`login`). Uses `runtime`'s clients, stores and metrics; never imports `controller`.
//!
//! One exchange is `exchange::exchange`: parse (`request`) → verify (`verify`) → decide (`decision`,
//! over `grants`) → cap TTL (`ttl`) → issue (`issuance`, over `binding`) → respond (`wire`,
//! `kubeconfig`). Around it: the HTTP service (`http`: per-source `limits`, timeout, audit, `events`),
//! its `context`, and the lifecycle (`server`: `args`, `tls`, watches, `reaper`).
//!
//! Invariants: the grants come from the one derivation (`access::World::derive`) and the decision from
//! the pure `access::match_token` through `decision`, shared with `explain`; no token leaves the process before its
//! TokenIssuance and binding Secret exist and its audit line is written; tokens are never logged or put into errors.
pub mod args;
pub mod audit;
pub mod binding;
pub mod client;
mod context;
pub mod decision;
/// Public for the load harness (`benches/exchange_load.rs`), not an API.
#[doc(hidden)]
pub mod events;
mod exchange;
pub mod grants;
mod http;
mod issuance;
pub mod kubeconfig;
/// Public for the fuzz targets (`fuzz/`), not an API.
#[doc(hidden)]
pub mod limits;
pub mod reaper;
/// Public for the fuzz targets (`fuzz/`), not an API.
#[doc(hidden)]
pub mod request;
pub mod server;
pub mod tls;
mod ttl;
mod verify;
pub mod wire;

pub use args::ExchangeArgs;
pub use audit::{
    AUDIT_TARGET, AuditRecord, AuditSink, JsonLinesAuditSink, MemoryAuditSink, Outcome,
};
pub use server::{ExchangeOptions, ExchangeServer, serve};
pub use wire::{ExchangeResponse, GrantSummary};
