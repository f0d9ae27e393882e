//! IO: the operator's runtime. Watches, reconcile pipelines, server-side apply, status, events.
//!
//! `run` is the entry point of `oam-trust run`: it connects, checks that the CRDs are installed, starts
//! the watches and serves `/livez` and `/readyz` (ready only once every watch has synced).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, routing::get};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};

use crate::api::trust::GitLabTrust;

/// Flags and environment of `oam-trust run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the health endpoints (`/livez`, `/readyz`).
    #[arg(long, env = "OAM_TRUST_HEALTH_ADDR", default_value = "127.0.0.1:8081")]
    pub health_addr: SocketAddr,
}

/// Shared readiness: every watch flips its flag once its first list has completed.
#[derive(Default)]
pub struct Readiness {
    trusts_synced: AtomicBool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.trusts_synced.load(Ordering::Acquire)
    }
}

/// Runs until SIGINT/SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default().await.context(
        "connecting to Kubernetes (set KUBECONFIG, or run in a pod with a ServiceAccount)",
    )?;
    check_crds_installed(&client).await?;
    let readiness = Arc::new(Readiness::default());

    let health = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(readiness.clone());
    let listener = tokio::net::TcpListener::bind(args.health_addr)
        .await
        .with_context(|| format!("binding the health endpoint on {}", args.health_addr))?;
    tracing::info!(addr = %args.health_addr, version = crate::VERSION, "oam-trust running");

    let trusts: Api<GitLabTrust> = Api::all(client.clone());
    let (store, writer) = reflector::store();
    let ready = readiness.clone();
    // The store is ready once the watcher's initial list has completed (also when it is empty).
    let synced = async move {
        if store.wait_until_ready().await.is_ok() {
            ready.trusts_synced.store(true, Ordering::Release);
        }
        std::future::pending::<()>().await
    };
    let trust_watch = watcher(trusts, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .for_each(|ev| async move {
            match ev {
                Ok(t) => tracing::debug!(
                    trust = t.metadata.name.as_deref().unwrap_or(""),
                    "trust seen"
                ),
                Err(e) => tracing::warn!(error = %e, "GitLabTrust watch error; retrying"),
            }
        });

    tokio::select! {
        r = axum::serve(listener, health) => r.context("health server failed")?,
        _ = trust_watch => anyhow::bail!("GitLabTrust watch ended unexpectedly"),
        _ = synced => {}
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

async fn readyz(State(r): State<Arc<Readiness>>) -> (StatusCode, &'static str) {
    if r.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced")
    }
}

async fn check_crds_installed(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::all_crds() {
        let name = crd.metadata.name.unwrap_or_default();
        if crds
            .get_opt(&name)
            .await
            .with_context(|| format!("reading CRD {name}"))?
            .is_none()
        {
            anyhow::bail!(
                "CRD {name} is not installed: run `oam-trust crd | kubectl apply --server-side -f -` (or install the Helm chart)"
            );
        }
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
