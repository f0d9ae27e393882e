//! IO: the controllers. The Application controller (render, grants, apply, status) and the GitLabTrust
//! controller (key status), with their watches. Started by `runtime::run`; uses `runtime`'s clients,
//! stores and write gate, never the exchange (`federation`).
pub mod access;
pub mod application;
pub mod apply;
pub mod authn;
pub mod conditions;
pub mod health;
pub mod revision;
pub mod sharing;
pub mod trust;
pub mod workflow;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::access::declaration;
use crate::api::oam::Application;
use crate::api::trust::GitLabTrust;
use crate::names;
use crate::runtime::leader::WriteGate;
use crate::runtime::metrics::Metrics;
use crate::runtime::reflect::decoded;
use crate::runtime::world::{WorldStores, WorldStreams};

/// What the controllers take from the process.
pub struct Controllers {
    /// The gated client: writes fail unless this replica leads.
    pub client: Client,
    /// The configuration `client` was built from (the applier impersonates with it).
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub gate: WriteGate,
    /// Shared with the exchange: the trust controller fills it.
    pub keys: Arc<crate::oidc::KeyCaches>,
    /// Emits each time this replica becomes the leader: every Application is reconciled then.
    pub became_leader: Pin<Box<dyn Stream<Item = ()> + Send>>,
    pub concurrency: u16,
    pub instance: Option<String>,
    /// The system definitions namespace (`--definitions-namespace`).
    pub definitions_namespace: String,
    /// Who the controller binds where grants live (`--controller-identity`, `--exchange-identity`).
    pub rights: crate::access::rights::Rights,
    /// Where the API server's authentication config goes (`--authn-config-out`, `--authn-config-map`).
    pub authn: authn::AuthnArgs,
    /// Set once every store has listed its objects.
    pub synced: Arc<AtomicBool>,
    /// How many ApplicationRevisions are kept per Application (`--revision-limit`).
    pub revision_limit: usize,
}

/// Runs the Application and GitLabTrust controllers until SIGINT/SIGTERM.
pub async fn run(c: Controllers) -> anyhow::Result<()> {
    let (world, streams) = WorldStores::start(&c.client, &c.definitions_namespace);
    let reporter = Reporter {
        controller: names::FIELD_MANAGER.into(),
        instance: c.instance.clone(),
    };
    let ctx = Arc::new(application::Context {
        client: c.client.clone(),
        applier: apply::Applier::new(
            c.client.clone(),
            c.config.clone(),
            c.metrics.clone(),
            c.gate.clone(),
        ),
        gate: c.gate.clone(),
        recorder: Recorder::new(c.client.clone(), reporter),
        metrics: c.metrics.clone(),
        world: world.clone(),
        rights: c.rights.clone(),
        revision_limit: c.revision_limit,
        recent_revisions: Default::default(),
    });
    let app_controller = application_controller(&c.client, c.concurrency, &world, streams);
    let apps = app_controller.store();
    let authn_loop = authn::run(
        c.authn.clone(),
        c.client.clone(),
        world.clone(),
        apps.clone(),
    );

    let synced = {
        let world = world.clone();
        let flag = c.synced.clone();
        async move {
            if world.ready().await && apps.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
                tracing::info!("all watches synced; ready");
            }
            std::future::pending::<()>().await
        }
    };

    let app_loop = app_controller
        .reconcile_all_on(c.became_leader)
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

    let trust_loop = Controller::new(
        Api::<DeserializeGuard<GitLabTrust>>::all(c.client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        trust::reconcile,
        trust::error_policy,
        Arc::new(trust::Context {
            client: c.client.clone(),
            keys: c.keys.clone(),
            metrics: c.metrics.clone(),
            gate: c.gate.clone(),
            world: world.clone(),
        }),
    )
    .for_each(|_| async {});

    tokio::select! {
        _ = trust_loop => tracing::info!("trust controller stopped"),
        _ = authn_loop => {}
        _ = synced => {}
        _ = app_loop => tracing::info!("application controller stopped"),
    }
    Ok(())
}

/// The Application controller and its triggers: the Applications themselves, every object rendering
/// produced (by label, so drift is corrected at once, also across namespaces), definitions, and the
/// inputs of grant derivation.
fn application_controller(
    client: &Client,
    concurrency: u16,
    world: &WorldStores,
    streams: WorldStreams,
) -> Controller<DeserializeGuard<Application>> {
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        names::LABEL_MANAGED_BY,
        names::MANAGED_BY
    ));
    let (reader, writer) = kube::runtime::reflector::store();
    let apps = watcher(
        Api::<DeserializeGuard<Application>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(application::trigger_key, Default::default());
    let ctrl = Controller::for_stream(apps, reader)
        .with_config(
            controller::Config::default()
                .concurrency(concurrency)
                .debounce(RECONCILE_DEBOUNCE),
        )
        .trigger_backoff(Pause(TRIGGER_PAUSE));
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
    // RBAC, rendered and of grants: an edit that widens a grant is reverted at once.
    let ctrl = watch_rendered::<Role>(ctrl, client, &owned);
    let ctrl = watch_rendered::<RoleBinding>(ctrl, client, &owned);
    let ctrl = watch_rendered::<ClusterRoleBinding>(ctrl, client, &owned);
    // Secrets are not watched: that needs list/watch on every Secret, and the operator reads none.
    // Applications that render one are rechecked periodically instead (`application::SECRET_RECHECK`).
    let apps = ctrl.store();
    let users = move |pick: &dyn Fn(&Application) -> bool| {
        apps.state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|app| pick(app))
            .map(|app| ObjectRef::new(&app.name_any()).within(names::namespace_of(app)))
            .collect::<Vec<ObjectRef<DeserializeGuard<Application>>>>()
    };
    let (by_component, by_trait, by_policy, by_trust, by_role, by_namespace) = (
        users.clone(),
        users.clone(),
        users.clone(),
        users.clone(),
        users.clone(),
        users.clone(),
    );
    let (by_guard, by_guard_binding) = (users.clone(), users);
    let trusts = world.trusts.clone();
    // The inputs of derivation come from the world's own streams: each item reaches the trigger only
    // after its store holds it, so the reconcile it causes reads the new version.
    ctrl.watches_stream(streams.component_defs, move |d| {
        let name = d.name_any();
        by_component(&|app| app.spec.components.iter().any(|c| c.type_ == name))
    })
    .watches_stream(streams.trait_defs, move |d| {
        let name = d.name_any();
        by_trait(&|app| {
            app.spec
                .components
                .iter()
                .any(|c| c.traits.iter().any(|t| t.type_ == name))
        })
    })
    .watches_stream(streams.policy_defs, move |d| {
        let name = d.name_any();
        by_policy(&|app| app.spec.policies.iter().any(|p| p.type_ == name))
    })
    .watches_stream(streams.trusts, move |t| {
        let name = t.name_any();
        by_trust(&|app| declaration::may_use_trust(app, &name))
    })
    .watches_stream(streams.cluster_roles, move |role| {
        // A rendered ClusterRole (drift) or a ceiling (grants of the trusts naming it).
        let mut out: Vec<_> = application::owner_of(role.labels()).into_iter().collect();
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
        if !names.is_empty() {
            out.extend(by_role(&|app| {
                names.iter().any(|n| declaration::may_use_trust(app, n))
            }));
        }
        out
    })
    .watches_stream(streams.guards, move |_| {
        by_guard(&declaration::has_declarations)
    })
    .watches_stream(streams.guard_bindings, move |_| {
        by_guard_binding(&declaration::has_declarations)
    })
    .watches_stream(streams.namespaces, move |ns| {
        let name = ns.name_any();
        by_namespace(&|app| {
            app.namespace().as_deref() == Some(name.as_str()) && declaration::has_declarations(app)
        })
    })
}

/// How long an Application's reconcile waits for more of its triggers to arrive (trailing edge).
/// A new Application's objects change several times within a second (created, their controllers'
/// first status, pods scheduled, ready): each change would cost a reconcile (reads, a status write)
/// that the next one repeats. Short enough that a change is acted on at once to a person.
const RECONCILE_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(300);

/// The pause after an error from any watch of the Application controller, before it reads any of
/// them again. kube's default is one exponential backoff (0.8 s up to 30 s) shared by every watch
/// of a controller: after an API server restart each of its fifteen watches fails once or twice,
/// and the growing shared pauses left the controller deaf to all of them for minutes (a deleted
/// Deployment not restored, a new Application not reconciled). Each watch backs off on its own
/// errors instead (`default_backoff`), and the shared pause stays short.
const TRIGGER_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// A backoff that is always the same pause.
struct Pause(std::time::Duration);

impl Iterator for Pause {
    type Item = std::time::Duration;
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.0)
    }
}

impl kube::runtime::utils::Backoff for Pause {
    fn reset(&mut self) {}
}

/// A trigger on one rendered kind: each change of an object labelled as rendered reconciles the
/// Application its labels name. A watch of the objects' metadata, not of the objects: only the
/// labels are read, and every status update of every Deployment would otherwise be encoded whole,
/// as JSON for this watch alone, by the API server (the controller manager watches in protobuf).
fn watch_rendered<K>(
    ctrl: Controller<DeserializeGuard<Application>>,
    client: &Client,
    wc: &watcher::Config,
) -> Controller<DeserializeGuard<Application>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let watch = watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), wc.clone())
        .default_backoff()
        .touched_objects();
    ctrl.watches_stream(watch, |obj| application::owner_of(obj.labels()))
}

fn app_error_policy(
    _app: Arc<DeserializeGuard<Application>>,
    err: &application::Error,
    _ctx: Arc<application::Context>,
) -> Action {
    if let application::Error::Conflict { .. } = err {
        tracing::debug!(error = %err, "status conflict");
        return Action::requeue(std::time::Duration::from_secs(1));
    }
    tracing::warn!(error = %err, "reconcile error");
    Action::requeue(std::time::Duration::from_secs(10))
}

/// The Application inside a guard, or `None` (reported) when it does not decode.
pub(crate) fn application(guard: &DeserializeGuard<Application>) -> Option<&Application> {
    decoded(guard)
}
