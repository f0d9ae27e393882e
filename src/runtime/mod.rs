//! The composition root of `oam-trust run`, and what the controllers and the exchange share.
//!
//! `run` connects, checks that the CRDs are installed, builds the two clients (one counted, one also
//! gated by leadership), starts the leader elector, the controllers (`crate::controller`) and the
//! token exchange (`crate::federation`), and serves `/livez`, `/readyz` (which also follows whether the
//! API server answers) and `/metrics`. Every task is
//! part of one `select!`: when any of them ends, the process ends.
//!
//! The submodules are the pieces both sides use, and import neither side: the client layers and the
//! metrics registry (`metrics`), leader election and the write gate (`leader`), and reflector stores
//! that survive malformed objects (`reflect`). `controller` and `federation` use them and never import
//! each other.
pub mod events;
pub mod health;
pub mod leader;
pub mod metrics;
#[cfg(test)]
pub(crate) mod mock_api;
pub mod reflect;
pub mod world;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, Config};

pub use health::Readiness;
pub use reflect::{reflect, reflect_with};

/// Flags and environment of `oam-trust run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the health and metrics endpoints (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "OAM_TRUST_HEALTH_ADDR", default_value = "127.0.0.1:8081")]
    pub health_addr: SocketAddr,
    /// How many Applications are reconciled at once.
    #[arg(long, env = "OAM_TRUST_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Name of this replica in Events and leases (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Elect a leader on a Lease: only the leader reconciles and reaps; every replica serves exchanges.
    /// Off only for a single replica that must write without a Lease.
    #[arg(long, env = "OAM_TRUST_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "OAM_TRUST_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// The system definitions namespace: its ComponentDefinitions, TraitDefinitions and
    /// PolicyDefinitions are visible to Applications of every namespace (KubeVela's `vela-system`).
    /// Definitions in any other namespace apply to that namespace's Applications only.
    #[arg(long, env = "OAM_TRUST_DEFINITIONS_NAMESPACE", default_value = crate::names::DEFAULT_DEFINITIONS_NAMESPACE)]
    pub definitions_namespace: String,
    /// How many ApplicationRevisions (`<app>-v<N>`) are kept per Application: the oldest beyond it
    /// are deleted when a new one is recorded, never the one deployed.
    #[arg(long, env = "OAM_TRUST_REVISION_LIMIT", default_value_t = crate::names::DEFAULT_REVISION_LIMIT,
          value_parser = parse_revision_limit)]
    pub revision_limit: usize,
    /// Name of the leader-election Lease.
    #[arg(long, env = "OAM_TRUST_LEASE_NAME", default_value = "oam-trust")]
    pub lease_name: String,
    /// Which parts this process runs: `controller` (the reconcilers, under leader election),
    /// `exchange` (the token exchange and its reaper, every replica alike) or `all` (both, for local
    /// use). In a cluster the two run as separate Deployments with separate ServiceAccounts, so a
    /// compromised exchange holds none of the controller's rights.
    #[arg(long, env = "OAM_TRUST_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// Rights the controller grants the operator's identities in each namespace where grants live.
    #[command(flatten)]
    pub rights: RightsArgs,
    /// Where the controller keeps the API server's authentication config (`federation.apiServer`).
    #[command(flatten)]
    pub authn: crate::controller::authn::AuthnArgs,
    /// The token-exchange service (served by every replica).
    #[command(flatten)]
    pub exchange: crate::federation::ExchangeArgs,
}

fn parse_revision_limit(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a number of revisions of at least 1")),
    }
}

/// The parts of the operator one process runs (`--role`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// The Application and GitLabTrust controllers, with leader election.
    Controller,
    /// The token exchange and the reaper of expired TokenIssuances.
    Exchange,
    /// Both (one process, one identity: local use and tests).
    #[default]
    All,
}

impl Role {
    fn runs_controllers(self) -> bool {
        matches!(self, Role::Controller | Role::All)
    }
    fn runs_exchange(self) -> bool {
        matches!(self, Role::Exchange | Role::All)
    }
}

/// Who the controller binds where grants live (`access::rights`). Unset: nothing is bound, for an
/// operator whose own credentials already hold the ceilings (a local admin).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RightsArgs {
    /// The controller's own ServiceAccount (`system:serviceaccount:<ns>:<name>`): bound to each
    /// ceiling ClusterRole in each namespace where it writes grants, so the API server refuses any
    /// Role beyond the ceiling.
    #[arg(long, env = "OAM_TRUST_CONTROLLER_IDENTITY")]
    pub controller_identity: Option<crate::access::rights::ServiceAccountRef>,
    /// The exchange's ServiceAccount (`system:serviceaccount:<ns>:<name>`): bound to
    /// `--exchange-namespace-role` in each namespace where grants live.
    #[arg(
        long,
        env = "OAM_TRUST_EXCHANGE_IDENTITY",
        requires = "exchange_namespace_role"
    )]
    pub exchange_identity: Option<crate::access::rights::ServiceAccountRef>,
    /// The ClusterRole holding the exchange's rights in one namespace (create binding Secrets and
    /// `serviceaccounts/token`).
    #[arg(
        long,
        env = "OAM_TRUST_EXCHANGE_NAMESPACE_ROLE",
        requires = "exchange_identity"
    )]
    pub exchange_namespace_role: Option<String>,
}

impl RightsArgs {
    pub fn rights(&self) -> crate::access::rights::Rights {
        crate::access::rights::Rights {
            controller: self.controller_identity.clone(),
            exchange: self
                .exchange_identity
                .clone()
                .zip(self.exchange_namespace_role.clone()),
        }
    }
}

/// Runs until SIGINT/SIGTERM, with the credentials of KUBECONFIG or the pod's ServiceAccount.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Config::infer().await.context(
        "finding Kubernetes credentials (set KUBECONFIG, or run in a pod with a ServiceAccount)",
    )?;
    run_with_config(config, args).await
}

/// Runs until SIGINT/SIGTERM with the given client configuration (tests pass their own).
pub async fn run_with_config(config: Config, args: RunArgs) -> anyhow::Result<()> {
    run_with_metrics(config, args, Arc::new(metrics::Metrics::default())).await
}

/// As `run_with_config`, recording into `metrics` (tests and benchmarks read the request counters).
pub async fn run_with_metrics(
    config: Config,
    args: RunArgs,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<()> {
    // Two clients: the controllers' one refuses writes unless this replica leads (WriteGate); the
    // exchange and the election itself write on every replica.
    let ungated = metrics
        .counted_client(config.clone())
        .context("building the Kubernetes client")?;
    check_crds_installed(&ungated).await?;
    if args.role == Role::Exchange && !args.exchange.is_configured() {
        anyhow::bail!(
            "--role exchange runs only the token exchange, which is off: pass --exchange-tls-cert and --exchange-tls-key (or --exchange-insecure-http behind a TLS proxy)"
        );
    }
    let gate = if args.leader_elect {
        leader::WriteGate::default()
    } else {
        leader::WriteGate::always_open()
    };
    let client = metrics
        .gated_client(config.clone(), gate.clone())
        .context("building the Kubernetes client")?;
    let identity = args.instance.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "oam-trust".into()),
            std::process::id()
        )
    });
    let (elector, leadership) = leader::Elector::new(
        ungated.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        leader::Timings::default(),
        gate.clone(),
    );
    // On SIGTERM the elector closes the gate and releases the Lease, so a follower takes over at once.
    // An exchange alone elects no leader: every replica serves alike, and it may not write Leases.
    let leader_elect = args.leader_elect && args.role.runs_controllers();
    let mut election = tokio::spawn(async move {
        if leader_elect {
            elector.run(shutdown_signal()).await;
        } else {
            std::future::pending::<()>().await;
        }
    });
    let readiness = Arc::new(Readiness::default());
    let listener = tokio::net::TcpListener::bind(args.health_addr)
        .await
        .with_context(|| format!("binding the health endpoint on {}", args.health_addr))?;
    tracing::info!(addr = %args.health_addr, role = ?args.role, version = crate::VERSION, "oam-trust running");

    // One key cache per trust for the whole process: the trust controller fills it, the token-exchange
    // service verifies with it (and fetches on demand when no trust controller runs here).
    let keys = Arc::new(crate::oidc::KeyCaches::default());
    let controllers = async {
        if !args.role.runs_controllers() {
            readiness
                .controllers
                .store(true, std::sync::atomic::Ordering::Release);
            return std::future::pending().await;
        }
        crate::controller::run(crate::controller::Controllers {
            client: client.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
            gate: gate.clone(),
            keys: keys.clone(),
            // Each time this replica becomes the leader, every Application is reconciled once.
            became_leader: Box::pin(leadership_gained(&leadership)),
            concurrency: args.concurrency,
            instance: args.instance.clone(),
            definitions_namespace: args.definitions_namespace.clone(),
            rights: args.rights.rights(),
            authn: args.authn.clone(),
            synced: readiness.controllers.clone(),
            revision_limit: args.revision_limit,
        })
        .await
    };
    let exchange = async {
        if !args.role.runs_exchange() {
            readiness
                .exchange
                .store(true, std::sync::atomic::Ordering::Release);
            return std::future::pending().await;
        }
        crate::federation::serve(
            ungated.clone(),
            config.clone(),
            args.exchange.clone(),
            metrics.clone(),
            keys.clone(),
            crate::federation::ExchangeOptions {
                audit_sink: None,
                instance: args.instance.clone(),
                // Alone, every exchange replica reaps (deleting an expired record twice is harmless);
                // beside the controllers, the leader does.
                reap_gate: args.role.runs_controllers().then(|| gate.clone()),
                definitions_namespace: args.definitions_namespace.clone(),
                required_guards: None,
            },
            readiness.exchange.clone(),
        )
        .await
    };

    // Its own client: the probe's requests are not the operator's work, and are not counted.
    let probe = health::probe_api_server(
        Client::try_from(config.clone()).context("building the Kubernetes client")?,
        readiness.clone(),
        health::API_PROBE_EVERY,
        health::API_PROBE_TIMEOUT,
    );
    tokio::select! {
        r = exchange => r.context("token exchange failed")?,
        _ = probe => {}
        r = controllers => r?,
        r = axum::serve(listener, health::router(readiness.clone(), metrics.clone())) => r.context("health server failed")?,
        _ = shutdown_signal(), if !args.role.runs_controllers() => {
            tracing::info!("stopping on signal");
            return Ok(());
        }
        r = &mut election => {
            r.context("leader election failed")?;
            tracing::info!("leader election stopped");
            return Ok(());
        }
    }
    // The controllers stopped on a signal: give the elector the moment it needs to release the Lease.
    if leader_elect
        && tokio::time::timeout(std::time::Duration::from_secs(5), election)
            .await
            .is_err()
    {
        tracing::warn!(
            "the Lease was not released in time; another replica takes over when it expires"
        );
    }
    Ok(())
}

/// Emits `()` each time `leadership` turns true (including when it already is at the start).
fn leadership_gained(
    leadership: &tokio::sync::watch::Receiver<bool>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    let rx = leadership.clone();
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    })
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
