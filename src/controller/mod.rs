//! IO: the operator's runtime. Watches, reconcile pipelines, server-side apply, status, events.
//!
//! `run` is the entry point of `oam-trust run`: it connects, checks that the CRDs are installed, starts
//! the watches and controllers, and serves `/livez`, `/readyz` (ready only once every watch has synced)
//! and `/metrics`.
pub mod access;
pub mod application;
pub mod apply;
pub mod conditions;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod trust;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, routing::get};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::oam::{Application, ComponentDefinition, PolicyDefinition, TraitDefinition};
use crate::api::trust::GitLabTrust;
use crate::names;

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
    /// Name of the leader-election Lease.
    #[arg(long, env = "OAM_TRUST_LEASE_NAME", default_value = "oam-trust")]
    pub lease_name: String,
    /// The token-exchange service (served by every replica).
    #[command(flatten)]
    pub exchange: crate::federation::ExchangeArgs,
}

/// Shared readiness: true once every watch has completed its initial list.
#[derive(Default)]
pub struct Readiness {
    synced: AtomicBool,
    /// The exchange listener is bound (or the exchange is switched off).
    exchange: Arc<AtomicBool>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Acquire) && self.exchange.load(Ordering::Acquire)
    }
}

struct Served {
    readiness: Arc<Readiness>,
    metrics: Arc<metrics::Metrics>,
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

/// As `run_with_config`, recording into `metrics` (benchmarks read the request counters from it).
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
    // On SIGTERM the elector closes the gate and releases the Lease, so a follower takes over at once;
    // the process waits for that before it exits.
    let leader_elect = args.leader_elect;
    let election = tokio::spawn(async move {
        if leader_elect {
            elector.run(shutdown_signal()).await;
        }
    });
    // Each time this replica becomes the leader, every Application is reconciled once.
    let became_leader = async_stream_of_leadership(&leadership);
    let readiness = Arc::new(Readiness::default());

    let health = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(Served {
            readiness: readiness.clone(),
            metrics: metrics.clone(),
        }));
    let listener = tokio::net::TcpListener::bind(args.health_addr)
        .await
        .with_context(|| format!("binding the health endpoint on {}", args.health_addr))?;
    tracing::info!(addr = %args.health_addr, version = crate::VERSION, "oam-trust running");

    let (trusts, trust_watch) = reflect::<GitLabTrust>(&client);
    let (component_defs, component_watch) = reflect::<ComponentDefinition>(&client);
    let (trait_defs, trait_watch) = reflect::<TraitDefinition>(&client);
    let (policy_defs, policy_watch) = reflect::<PolicyDefinition>(&client);

    let reporter = Reporter {
        controller: names::FIELD_MANAGER.into(),
        instance: args.instance.clone(),
    };
    let ctx = Arc::new(application::Context {
        client: client.clone(),
        applier: apply::Applier::new(
            client.clone(),
            config.clone(),
            metrics.clone(),
            gate.clone(),
        ),
        gate: gate.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        component_defs: component_defs.clone(),
        trait_defs: trait_defs.clone(),
        policy_defs: policy_defs.clone(),
        metrics: metrics.clone(),
        trusts: trusts.clone(),
    });
    let app_controller = application_controller(&client, args.concurrency, trusts.clone());
    let apps = app_controller.store();

    let ready = readiness.clone();
    let (t, c, tr, p, a) = (
        trusts.clone(),
        component_defs,
        trait_defs,
        policy_defs,
        apps.clone(),
    );
    let synced = async move {
        let all = futures::future::join5(
            t.wait_until_ready(),
            c.wait_until_ready(),
            tr.wait_until_ready(),
            p.wait_until_ready(),
            a.wait_until_ready(),
        );
        let (r1, r2, r3, r4, r5) = all.await;
        if r1.is_ok() && r2.is_ok() && r3.is_ok() && r4.is_ok() && r5.is_ok() {
            ready.synced.store(true, Ordering::Release);
            tracing::info!("all watches synced; ready");
        }
        std::future::pending::<()>().await
    };

    let app_loop = app_controller
        .reconcile_all_on(became_leader)
        .shutdown_on_signal()
        .run(application::reconcile, app_error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                match e {
                    controller::Error::ReconcilerFailed(err, obj) => {
                        tracing::warn!(app = %obj, error = %err, "reconcile failed; retrying")
                    }
                    other => tracing::debug!(error = %other, "controller event"),
                }
            }
        });

    // One key cache per trust for the whole process: the trust controller fills it, the token-exchange
    // service verifies with it.
    let keys = Arc::new(crate::oidc::KeyCaches::default());
    let trust_loop = Controller::new(
        Api::<GitLabTrust>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        trust::reconcile,
        trust::error_policy,
        Arc::new(trust::Context {
            client: client.clone(),
            keys: keys.clone(),
            metrics: metrics.clone(),
            gate: gate.clone(),
        }),
    )
    .for_each(|_| async {});

    let exchange = crate::federation::serve(
        ungated.clone(),
        config.clone(),
        args.exchange.clone(),
        metrics.clone(),
        keys.clone(),
        crate::federation::ExchangeOptions {
            audit_sink: None,
            instance: args.instance.clone(),
            reap_gate: Some(gate.clone()),
        },
        readiness.exchange.clone(),
    );

    tokio::select! {
        r = exchange => r.context("token exchange failed")?,
        _ = trust_loop => tracing::info!("trust controller stopped"),
        r = axum::serve(listener, health) => r.context("health server failed")?,
        _ = futures::future::join5(trust_watch, component_watch, trait_watch, policy_watch, synced) => anyhow::bail!("a watch ended unexpectedly"),
        _ = app_loop => tracing::info!("application controller stopped"),
    }
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
fn async_stream_of_leadership(
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

/// A reflector store of every `K` in the cluster and the future that keeps it filled (the controllers
/// and the token exchange each keep their own).
pub(crate) fn reflect<K>(client: &Client) -> (Store<K>, impl Future<Output = ()> + Send + use<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let watch = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .for_each(|ev| async move {
            if let Err(e) = ev {
                tracing::warn!(kind = %K::kind(&()), error = %e, "watch error; retrying");
            }
        });
    (store, watch)
}

/// The Application controller and its triggers: the Applications themselves, every object rendering
/// produced (by label, so drift is corrected at once, also across namespaces), and definitions.
fn application_controller(
    client: &Client,
    concurrency: u16,
    trusts: Store<GitLabTrust>,
) -> Controller<Application> {
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        names::LABEL_MANAGED_BY,
        names::MANAGED_BY
    ));
    let ctrl = Controller::new(
        Api::<Application>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(controller::Config::default().concurrency(concurrency));
    let ctrl = watch_rendered::<Deployment>(ctrl, client, &owned);
    let ctrl = watch_rendered::<StatefulSet>(ctrl, client, &owned);
    let ctrl = watch_rendered::<DaemonSet>(ctrl, client, &owned);
    let ctrl = watch_rendered::<Job>(ctrl, client, &owned);
    let ctrl = watch_rendered::<CronJob>(ctrl, client, &owned);
    let ctrl = watch_rendered::<Service>(ctrl, client, &owned);
    let ctrl = watch_rendered::<ConfigMap>(ctrl, client, &owned);
    let ctrl = watch_rendered::<ServiceAccount>(ctrl, client, &owned);
    let ctrl = watch_rendered::<PersistentVolumeClaim>(ctrl, client, &owned);
    let ctrl = watch_rendered::<Ingress>(ctrl, client, &owned);
    let ctrl = watch_rendered::<HorizontalPodAutoscaler>(ctrl, client, &owned);
    // Grant RBAC objects: an edit that widens a grant is reverted at once.
    let ctrl = watch_rendered::<Role>(ctrl, client, &owned);
    let ctrl = watch_rendered::<RoleBinding>(ctrl, client, &owned);
    let apps = ctrl.store();
    let uses = move |kind: &'static str, def: String| {
        apps.state()
            .into_iter()
            .filter(|app| match kind {
                "component" => app.spec.components.iter().any(|c| c.type_ == def),
                "trait" => app
                    .spec
                    .components
                    .iter()
                    .any(|c| c.traits.iter().any(|t| t.type_ == def)),
                _ => app.spec.policies.iter().any(|p| p.type_ == def),
            })
            .map(|app| ObjectRef::from_obj(&*app))
            .collect::<Vec<_>>()
    };
    let (u1, u2, u3) = (uses.clone(), uses.clone(), uses);
    let ctrl = access_triggers(ctrl, client, trusts);
    ctrl.watches(
        Api::<ComponentDefinition>::all(client.clone()),
        watcher::Config::default(),
        move |d| u1("component", d.name_any()),
    )
    .watches(
        Api::<TraitDefinition>::all(client.clone()),
        watcher::Config::default(),
        move |d| u2("trait", d.name_any()),
    )
    .watches(
        Api::<PolicyDefinition>::all(client.clone()),
        watcher::Config::default(),
        move |d| u3("policy", d.name_any()),
    )
}

/// Re-reconciles the Applications whose grants depend on a changed GitLabTrust (by name), ceiling
/// ClusterRole (through the trusts naming it) or namespace labels (every declaring Application there).
fn access_triggers(
    ctrl: Controller<Application>,
    client: &Client,
    trusts: Store<GitLabTrust>,
) -> Controller<Application> {
    let apps = ctrl.store();
    let using = move |trust_names: Vec<String>, namespace: Option<String>| {
        apps.state()
            .into_iter()
            .filter(|app| access::has_declarations(app))
            .filter(|app| namespace.is_none() || app.namespace() == namespace)
            .filter(|app| namespace.is_some() || refers_to_trust(app, &trust_names))
            .map(|app| ObjectRef::from_obj(&*app))
            .collect::<Vec<_>>()
    };
    let (by_trust, by_ceiling, by_namespace) = (using.clone(), using.clone(), using);
    ctrl.watches(
        Api::<GitLabTrust>::all(client.clone()),
        watcher::Config::default(),
        move |t| by_trust(vec![t.name_any()], None),
    )
    .watches(
        Api::<ClusterRole>::all(client.clone()),
        watcher::Config::default(),
        move |role| {
            let names: Vec<String> = trusts
                .state()
                .iter()
                .filter(|t| {
                    t.spec
                        .ceiling
                        .as_ref()
                        .is_some_and(|c| c.cluster_role_ref == role.name_any())
                })
                .map(|t| t.name_any())
                .collect();
            if names.is_empty() {
                Vec::new()
            } else {
                by_ceiling(names, None)
            }
        },
    )
    .watches(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        move |ns| by_namespace(Vec::new(), Some(ns.name_any())),
    )
}

/// Whether an Application's declarations name one of `trusts` (or cannot be read, to be safe).
fn refers_to_trust(app: &Application, trusts: &[String]) -> bool {
    let props = app
        .spec
        .policies
        .iter()
        .filter(|p| p.type_ == crate::api::access::GITLAB_ACCESS)
        .map(|p| &p.properties)
        .chain(app.spec.components.iter().flat_map(|c| {
            c.traits
                .iter()
                .filter(|t| t.type_ == crate::api::access::GITLAB_ACCESS)
                .map(|t| &t.properties)
        }));
    props
        .into_iter()
        .any(|p| match p.as_ref().and_then(|v| v["trust"].as_str()) {
            Some(name) => trusts.iter().any(|t| t == name),
            None => true,
        })
}

fn watch_rendered<K>(
    ctrl: Controller<Application>,
    client: &Client,
    wc: &watcher::Config,
) -> Controller<Application>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    ctrl.watches(Api::<K>::all(client.clone()), wc.clone(), |obj| {
        application::owner_of(obj.labels())
    })
}

fn app_error_policy(
    _app: Arc<Application>,
    err: &application::Error,
    _ctx: Arc<application::Context>,
) -> Action {
    tracing::warn!(error = %err, "reconcile error");
    Action::requeue(std::time::Duration::from_secs(10))
}

async fn readyz(State(s): State<Arc<Served>>) -> (StatusCode, &'static str) {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced")
    }
}

async fn metrics_text(
    State(s): State<Arc<Served>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(),
    )
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
