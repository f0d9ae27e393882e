//! What every exchange request reads: the client, the grant index, the key caches, the audit and
//! Event sinks, the flags, where issued kubeconfigs point and the per-source limits. Built once by
//! `server`, shared as `Arc<Context>`.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;

use super::args::ExchangeArgs;
use super::audit::Auditor;
use super::decision::{Denial, ErrorCode};
use super::events::TokenEvents;
use super::grants::GrantIndex;
use super::kubeconfig::ClusterEndpoint;
use super::limits::SourceLimits;
use crate::oidc::KeyCaches;

pub struct Context {
    pub client: Client,
    pub index: GrantIndex,
    pub key_caches: Arc<KeyCaches>,
    pub auditor: Auditor,
    pub events: TokenEvents,
    pub args: ExchangeArgs,
    pub endpoint: ClusterEndpoint,
    pub limits: SourceLimits,
    /// Set once the trusts and Applications are read.
    ready: AtomicBool,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        index: GrantIndex,
        key_caches: Arc<KeyCaches>,
        auditor: Auditor,
        events: TokenEvents,
        args: ExchangeArgs,
        endpoint: ClusterEndpoint,
    ) -> Self {
        Context {
            limits: SourceLimits::new(
                args.exchange_max_concurrent_per_source,
                args.exchange_max_concurrent,
            ),
            client,
            index,
            key_caches,
            auditor,
            events,
            args,
            endpoint,
            ready: AtomicBool::new(false),
        }
    }

    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Refuses requests until the caches are synced: a grant missing from a half-read cache would be
    /// a wrong answer, not a slow one.
    pub fn ensure_ready(&self) -> Result<(), Denial> {
        if self.is_ready() {
            return Ok(());
        }
        Err(Denial::new(
            ErrorCode::TemporarilyUnavailable,
            "not_ready",
            "the exchange is starting and has not read the cluster's trusts and Applications yet; retry shortly",
        ))
    }
}
