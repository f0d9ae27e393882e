//! The exchange service's lifecycle: resolve where issued kubeconfigs point, load the TLS pair, bind,
//! then serve the HTTP service (`http`) beside the watches that fill the grant index, the readiness
//! flip once they synced, certificate reloads and the reaper; the first of them to end ends the
//! service. Served by every replica of `oam-trust run`.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube::runtime::events::Reporter;

use super::args::ExchangeArgs;
use super::audit::{AuditSink, Auditor, ExchangeMetrics, JsonLinesAuditSink};
use super::context::Context;
use super::events::TokenEvents;
use super::grants::GrantIndex;
use super::http;
use super::kubeconfig::ClusterEndpoint;
use super::reaper;
use super::tls::{self, ExchangeListener, Peer, ReloadingCert};
use crate::oidc::KeyCaches;
use crate::runtime::metrics::Metrics;

/// A running exchange service. Dropping it stops it.
pub struct ExchangeServer {
    local_addr: SocketAddr,
    tls: bool,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for ExchangeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Optional parts of an exchange service.
#[derive(Default, Clone)]
pub struct ExchangeOptions {
    /// Receives every audit record, beside the audit log (`--audit-log`, default stdout).
    pub audit_sink: Option<Arc<dyn AuditSink>>,
    /// Replica name in Events.
    pub instance: Option<String>,
    /// When set, the reaper (the backstop that deletes expired TokenIssuances) runs only while this
    /// gate is open, i.e. on the leader. Each replica still revokes the tokens it issued at their TTL.
    pub reap_gate: Option<crate::runtime::leader::WriteGate>,
    /// The system definitions namespace (`--definitions-namespace`).
    pub definitions_namespace: String,
    /// Guard policies that must be installed before a grant that writes gets a token; `None` for
    /// `names::GUARD_BINDINGS` (tests name others).
    pub required_guards: Option<Vec<String>>,
}

impl ExchangeServer {
    /// Binds and serves in the background (watches, reaper, certificate reload included).
    pub async fn start(
        client: Client,
        kube_config: &kube::Config,
        args: ExchangeArgs,
        metrics: &Metrics,
        key_caches: Arc<KeyCaches>,
        options: ExchangeOptions,
    ) -> anyhow::Result<ExchangeServer> {
        anyhow::ensure!(
            args.is_configured(),
            "the token exchange needs --exchange-tls-cert and --exchange-tls-key (or --exchange-insecure-http behind a TLS proxy)"
        );
        let endpoint = ClusterEndpoint::resolve(&args, kube_config)?;
        let tls = match (&args.exchange_tls_cert, &args.exchange_tls_key) {
            (Some(cert), Some(key)) if !args.exchange_insecure_http => {
                Some(ReloadingCert::load(cert, key).context("loading the exchange TLS pair")?)
            }
            _ => None,
        };
        let tls_config = match &tls {
            Some(cert) => Some(Arc::new(tls::server_config(cert.clone())?)),
            None => None,
        };
        let tcp = tokio::net::TcpListener::bind(args.exchange_listen)
            .await
            .with_context(|| format!("binding the token exchange on {}", args.exchange_listen))?;
        let listener = ExchangeListener::new(tcp, tls_config)?;
        let local_addr = axum::serve::Listener::local_addr(&listener)?;

        let audit_log = JsonLinesAuditSink::open(args.audit_log.as_deref()).with_context(|| {
            format!(
                "opening the audit log {}",
                args.audit_log.as_deref().unwrap_or("-".as_ref()).display()
            )
        })?;
        let (mut index, watches) = GrantIndex::start(&client, &options.definitions_namespace);
        if let Some(guards) = &options.required_guards {
            index.world.required_guards = guards.clone();
        }
        let reporter = Reporter {
            controller: "oam-trust-exchange".into(),
            instance: options.instance.clone(),
        };
        let cx = Arc::new(Context::new(
            client.clone(),
            index.clone(),
            key_caches,
            Auditor::new(
                ExchangeMetrics::register(metrics),
                Arc::new(audit_log),
                options.audit_sink,
            ),
            TokenEvents::new(client.clone(), reporter, index.clone()),
            args.clone(),
            endpoint,
        ));
        let router = http::router(cx.clone());
        let reap_interval = Duration::from_secs(args.exchange_reap_interval_seconds.max(1));
        let options_reap_gate = options.reap_gate.clone();
        let reap_index = index.clone();
        let secure = tls.is_some();
        let task = tokio::spawn(async move {
            let readiness = async {
                if index.ready().await {
                    cx.mark_ready();
                    tracing::info!("token exchange: caches synced; serving");
                }
                std::future::pending::<()>().await
            };
            let reload = async {
                match tls {
                    Some(cert) => cert.watch(Duration::from_secs(2)).await,
                    None => std::future::pending().await,
                }
            };
            let server = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<Peer>(),
            );
            tokio::select! {
                r = server => r.context("token exchange server failed"),
                _ = watches => anyhow::bail!("a token exchange watch ended"),
                _ = readiness => Ok(()),
                _ = reload => Ok(()),
                _ = reaper::reaper(client, reap_interval, options_reap_gate, reap_index) => Ok(()),
            }
        });
        tracing::info!(addr = %local_addr, tls = secure, "token exchange listening");
        Ok(ExchangeServer {
            local_addr,
            tls: secure,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Base URL (`https://127.0.0.1:<port>` for a loopback listener).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let ip = match self.local_addr.ip() {
            ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        format!("{scheme}://{}", SocketAddr::new(ip, self.local_addr.port()))
    }

    /// Runs until the service fails.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        (&mut self.task)
            .await
            .context("token exchange task panicked")?
    }
}

/// `oam-trust run`'s exchange: serves until it fails. Without a TLS pair or `--exchange-insecure-http`
/// it logs why it is off and never returns.
pub async fn serve(
    client: Client,
    kube_config: kube::Config,
    args: ExchangeArgs,
    metrics: Arc<Metrics>,
    key_caches: Arc<KeyCaches>,
    options: ExchangeOptions,
    listening: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    if !args.is_configured() {
        tracing::warn!(
            "token exchange is off: pass --exchange-tls-cert/--exchange-tls-key (or --exchange-insecure-http behind a TLS proxy)"
        );
        listening.store(true, Ordering::Release);
        return std::future::pending().await;
    }
    let server =
        ExchangeServer::start(client, &kube_config, args, &metrics, key_caches, options).await?;
    listening.store(true, Ordering::Release);
    server.wait().await
}
