//! The Application reconcile, in four steps:
//!
//! 1. **dereference** — every read the decision needs: a snapshot of the world (trusts, ceilings,
//!    namespace labels, definitions) from the shared stores;
//! 2. **build** — pure: render the Application and derive its grants ([`World::derive`]) into the
//!    objects that should exist ([`Built`]);
//! 3. **apply** — one applier ([`Applier`]) writes the grant objects as the operator and the rendered
//!    objects as the Application's applier, all-or-nothing for each set, prunes what left the set and
//!    observes the workloads' health ([`Outcome`]);
//! 4. **update status** — one function turns what build and apply returned into the status.
//!
//! Invariants: an Application that fails to render or apply gets a status condition and an Event, and
//! nothing of it is written; unchanged Applications cause no writes; objects are owned by the
//! Application (ownerReference) inside its namespace and cleaned up by a finalizer elsewhere.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::access::{self as grants, AccessReport};
use super::apply::{Applied, Applier, ApplyError, Identity, ObjectKey, Owner};
use super::conditions::{self, Desired};
use super::health;
use super::sharing;
use crate::access::{GrantSet, World};
use crate::api::oam::{
    Application, ApplicationComponentStatus, ApplicationStatus, ApplicationTraitStatus,
    ClusterObjectReference, WorkflowStatus, WorkloadGvk,
};
use crate::names::{self, FINALIZER};
use crate::render::{GcStrategy, RenderError, RenderedObject};
use crate::runtime::world::WorldStores;

/// How often an unhealthy Application is looked at again when no watch event arrives (for example
/// pods that stay unschedulable).
pub const UNHEALTHY_RECHECK: Duration = Duration::from_secs(20);
/// How often an Application that renders a Secret is looked at again: Secrets are not watched (the
/// operator holds no list/watch on them), so their drift is corrected on this schedule.
pub const SECRET_RECHECK: Duration = Duration::from_secs(60);

/// Shared state of the Application controller.
pub struct Context {
    pub client: Client,
    pub applier: Applier,
    pub recorder: Recorder,
    pub metrics: Arc<crate::runtime::metrics::Metrics>,
    /// Open while this replica leads; followers keep their caches warm and skip reconciles.
    pub gate: crate::runtime::leader::WriteGate,
    /// Every input of derivation besides the Application.
    pub world: WorldStores,
    /// Who is bound where grants live (`access::rights`).
    pub rights: crate::access::rights::Rights,
    /// How many ApplicationRevisions are kept per Application (`--revision-limit`).
    pub revision_limit: usize,
    /// Revisions created that no status names yet (`revision::Recent`).
    pub recent_revisions: super::revision::Recent,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying Application {app}: {source}")]
    Apply {
        app: String,
        #[source]
        source: ApplyError,
    },
    /// The status was computed from an older version of the Application (a cache that lags, another
    /// writer, a resume): nothing was written; the next reconcile reads the new version.
    #[error("Application {app} changed while its status was computed; reconciling again")]
    Conflict { app: String },
    #[error("{action} for Application {app}: {source}")]
    Kube {
        action: &'static str,
        app: String,
        #[source]
        source: Box<kube::Error>,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Apply { source, .. } => source.reason(),
            Error::Conflict { .. } => "Conflict",
            Error::Kube { .. } => "ApiError",
        }
    }
}

fn kube_err<'a>(action: &'static str, app: &'a str) -> impl FnOnce(kube::Error) -> Error + 'a {
    move |e| Error::Kube {
        action,
        app: app.to_string(),
        source: Box::new(e),
    }
}

/// What of an Application, when it changes, calls for a reconcile: its spec (generation), labels,
/// annotations (applier, rollback), finalizers, deletion, and a resume (`status.workflow.suspend`).
/// Any other change of the status is the operator's own write (or its shape), which the reconcile
/// that wrote it already acted on: reconciling again would only read everything once more. Objects
/// that do not decode are keyed by their resourceVersion, so each of their changes is reported.
pub fn trigger_key(guard: &DeserializeGuard<Application>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let meta = guard.meta();
    meta.uid.hash(&mut h);
    match &guard.0 {
        Ok(app) => {
            meta.generation.hash(&mut h);
            meta.labels.hash(&mut h);
            meta.annotations.hash(&mut h);
            meta.finalizers.hash(&mut h);
            meta.deletion_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .hash(&mut h);
            app.status
                .as_ref()
                .and_then(|s| s.workflow.as_ref())
                .map(|w| w.suspend)
                .hash(&mut h);
        }
        Err(_) => meta.resource_version.hash(&mut h),
    }
    Some(h.finish())
}

pub async fn reconcile(
    guard: Arc<DeserializeGuard<Application>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if !ctx.gate.is_open() {
        // Not the leader: the new leader reconciles every Application when it takes over.
        return Ok(Action::await_change());
    }
    // An Application that does not decode is reported by the guard and waits for its next change.
    let Some(app) = super::application(&guard) else {
        return Ok(Action::await_change());
    };
    // Derivation reads the world's stores: before they have listed, a trust would look absent and
    // every grant would be revoked (seen on each restart). Wait for them instead.
    if !matches!(
        tokio::time::timeout(Duration::from_secs(30), ctx.world.ready()).await,
        Ok(true)
    ) {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let started = std::time::Instant::now();
    let result = reconcile_app(app, &ctx).await;
    ctx.metrics.observe_reconcile(
        "application",
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

async fn reconcile_app(app: &Application, ctx: &Context) -> Result<Action, Error> {
    if app.metadata.deletion_timestamp.is_some() {
        return finalize(app, ctx).await;
    }
    let mut world = ctx.world.snapshot();
    world.referenced = read_references(ctx, app).await;
    super::revision::pin_definitions(&ctx.client, app, &mut world)
        .await
        .map_err(kube_err(
            "reading the rollback's ApplicationRevision",
            &app.name_any(),
        ))?;
    let mut built = build(app, &world);
    if built.rendered.is_ok() {
        let recorded = super::revision::record(
            &ctx.client,
            app,
            &world,
            ctx.revision_limit,
            &ctx.recent_revisions,
        )
        .await
        .map_err(kube_err(
            "recording the ApplicationRevision",
            &app.name_any(),
        ))?;
        let named = app.status.as_ref().and_then(|s| s.latest_revision.as_ref());
        if named != Some(&recorded) && crate::access::declaration::has_declarations(app) {
            // Grants read the revisions the status names (`access::rules::revision_rule`), and this
            // reconcile's status may not be written yet (it waits while workloads start): derived
            // again with the revision just recorded, so its grants may read it from the start.
            let mut recorded_app = app.clone();
            recorded_app
                .status
                .get_or_insert_with(Default::default)
                .latest_revision = Some(recorded.clone());
            built = build(&recorded_app, &world);
        }
        built.latest_revision = Some(recorded);
    }
    let outcome = apply(ctx, app, &built).await;
    update_status(ctx, app, &built, outcome).await
}

/// Step 1, for `ref-objects`: reads the objects its components name, as its applier. `None` when
/// it has none (or they do not parse: rendering says why).
async fn read_references(ctx: &Context, app: &Application) -> Option<crate::render::Referenced> {
    let references = crate::render::references(app).ok()?;
    if references.is_empty() {
        return None;
    }
    let user = Applier::applier_user(names::namespace_of(app), app.metadata.annotations.as_ref());
    let mut read = BTreeMap::new();
    for reference in references {
        let found = ctx
            .applier
            .read_reference(Identity::Applier(&user), &reference)
            .await;
        read.insert(reference, found);
    }
    Some(Arc::new(read))
}

/// What an Application should be: its rendered objects and its grants. Pure.
pub struct Built {
    /// The rendered objects, or why the Application cannot be rendered.
    pub rendered: Result<Vec<RenderedObject>, RenderError>,
    pub grants: GrantSet,
    /// The grant objects in apply order: the deploy guard's parameters, then each grant's
    /// ServiceAccount, Role and RoleBinding.
    pub grant_objects: Vec<Value>,
    /// Per component: what renders it (`built-in <type>` or `ComponentDefinition <ns>/<name>`).
    pub definitions: BTreeMap<String, String>,
    /// Guard admission policies that are not installed (`World::missing_guards`).
    pub missing_guards: Vec<String>,
    /// What rendering warned about (reported in `Parsed` and a Warning Event, never fatal).
    pub warnings: Vec<crate::render::RenderWarning>,
    /// The ceiling ClusterRoles of the trusts the grants use (bound to the controller in the
    /// namespace before the grants are written: `access::rights`).
    pub ceilings: std::collections::BTreeSet<String>,
    /// The Application's resource policies, and what they say about each rendered object (in the
    /// order of `rendered`).
    pub policies: crate::render::ResourcePolicies,
    pub object_policies: Vec<crate::render::ObjectPolicy>,
    /// Component name -> type, for matching the policies against objects no longer rendered.
    pub component_types: BTreeMap<String, String>,
    /// The workflow (`None`: the default one, which applies every rendered object at once), and per
    /// rendered object the step that applies it.
    pub workflow: Option<crate::render::workflow::Workflow>,
    pub object_steps: Vec<Option<String>>,
    /// The ApplicationRevision recording what rendered (`revision::record`, after build).
    pub latest_revision: Option<crate::api::oam::DefinitionRevisionRef>,
}

/// Step 2: renders and derives, with no IO.
pub fn build(app: &Application, world: &World) -> Built {
    let definitions = app
        .spec
        .components
        .iter()
        .map(|c| {
            let origin = world
                .definitions
                .component_origin(&c.type_, names::namespace_of(app));
            (c.name.clone(), origin)
        })
        .collect();
    match world.derive(app) {
        Ok(derived) => Built {
            object_policies: derived
                .rendered
                .iter()
                .map(|r| {
                    let type_ = r
                        .component
                        .as_ref()
                        .and_then(|c| derived.component_types.get(c));
                    let mut policy = derived.policies.for_object(r, type_.map(String::as_str));
                    // ref-objects name existing objects: the Application takes them over.
                    policy.take_over |= type_.is_some_and(|t| t == "ref-objects");
                    policy
                })
                .collect(),
            policies: derived.policies.clone(),
            component_types: derived.component_types.clone(),
            workflow: derived.workflow.clone(),
            object_steps: derived.object_steps.clone(),
            ceilings: derived
                .grants
                .grants
                .iter()
                .filter_map(|g| world.trusts.get(&g.trust)?.spec.ceiling.as_ref())
                .map(|c| c.cluster_role_ref.clone())
                .collect(),
            grant_objects: without_unguarded_groups(
                crate::access::objects::objects_of(app, &derived.grants, &derived.rendered),
                &derived.grants,
                &world.missing_guards,
            ),
            rendered: Ok(derived.rendered),
            grants: derived.grants,
            definitions,
            missing_guards: world.missing_guards.clone(),
            warnings: derived.warnings,
            latest_revision: None,
        },
        Err(e) => Built {
            rendered: Err(e),
            grants: GrantSet::default(),
            grant_objects: Vec::new(),
            definitions,
            missing_guards: world.missing_guards.clone(),
            warnings: Vec::new(),
            ceilings: Default::default(),
            policies: Default::default(),
            object_policies: Vec::new(),
            component_types: BTreeMap::new(),
            workflow: None,
            object_steps: Vec::new(),
            latest_revision: None,
        },
    }
}

/// While a guard admission policy is missing the exchange issues no token for a grant that writes;
/// the other two ways in (GitLab agent groups, the API server's grant groups) must fail closed the
/// same way, so the RoleBindings of such grants bind their ServiceAccount only.
fn without_unguarded_groups(
    mut objects: Vec<Value>,
    grants: &GrantSet,
    missing_guards: &[String],
) -> Vec<Value> {
    if missing_guards.is_empty() {
        return objects;
    }
    let writers: BTreeSet<&str> = grants
        .grants
        .iter()
        .filter(|g| g.writes())
        .map(|g| g.name.as_str())
        .collect();
    for object in &mut objects {
        if object["kind"] == "RoleBinding"
            && object["metadata"]["name"]
                .as_str()
                .is_some_and(|n| writers.contains(n))
            && let Some(subjects) = object["subjects"].as_array_mut()
        {
            subjects.retain(|s| s["kind"] != "Group");
        }
    }
    objects
}

/// What step 3 did.
pub struct Outcome {
    /// The grants' conditions (`None` when the Application could not be rendered: grants untouched).
    access: Option<AccessReport>,
    /// The rendered objects' apply, when they rendered.
    applied: Option<Result<Applied, ApplyError>>,
    /// Each component's health, when everything applied.
    services: Option<Vec<ApplicationComponentStatus>>,
    /// What `status.appliedResources` records when everything applied: the objects this
    /// Application deletes later (not the read-only or garbage-collect `never` ones), and those no
    /// longer rendered that a policy keeps until the Application goes (or, while a workflow runs,
    /// that its later steps have not replaced yet).
    tracked: Option<Vec<ObjectKey>>,
    /// The workflow's run (`None`: the default workflow).
    workflow: Option<WorkflowStatus>,
    /// How many of the rendered objects the workflow applied so far (all, without a workflow).
    selected: usize,
    /// Some unhealthy workloads, all of them still starting (`health::STARTING`): how long until
    /// the last of them is due.
    starting: Option<Duration>,
}

/// Whether `app`'s generation is newer than the one its status reports (`observedGeneration`): it
/// changed since it was last reconciled, or its status waits (`update_status`).
fn unreported_generation(app: &Application) -> bool {
    app.metadata.generation != app.status.as_ref().and_then(|s| s.observed_generation)
}

/// Step 3: writes what `built` says (grant objects first, so a removed declaration is revoked even
/// when the rendered objects cannot be applied), runs the workflow's steps (or applies every object
/// for the default workflow), prunes once the run has succeeded, and observes health.
async fn apply(ctx: &Context, app: &Application, built: &Built) -> Outcome {
    let Ok(rendered) = &built.rendered else {
        return Outcome {
            access: None,
            applied: None,
            services: None,
            tracked: None,
            workflow: None,
            selected: 0,
            starting: None,
        };
    };
    let access = grants::apply(ctx, app, built).await;
    let user = Applier::applier_user(names::namespace_of(app), app.metadata.annotations.as_ref());
    let owner = Owner {
        namespace: names::namespace_of(app).to_string(),
        reference: serde_json::to_value(app.controller_reference()).unwrap_or(Value::Null),
    };
    // The Application changed since it was last reconciled (apply-once `affect: onUpdate`).
    let updating = unreported_generation(app);
    let steps = Steps {
        ctx,
        built,
        rendered,
        user: &user,
        owner: &owner,
        updating,
    };
    let (selected, run, applied) = match &built.workflow {
        None => {
            let all: Vec<usize> = (0..rendered.len()).collect();
            let applied = steps.apply(&all).await;
            (all, None, applied)
        }
        Some(wf) => {
            let (selected, run, applied) = steps.run(app, wf).await;
            (selected, Some(run), applied)
        }
    };
    let Ok(done) = &applied else {
        return Outcome {
            access: Some(access),
            applied: Some(applied),
            services: None,
            tracked: None,
            workflow: run,
            selected: selected.len(),
            starting: None,
        };
    };
    if done.written > 0 {
        ctx.metrics.objects_applied(done.written);
    }
    let desired: BTreeSet<ObjectKey> = selected
        .iter()
        .map(|i| ObjectKey::of(&rendered[*i].object))
        .collect();
    let mut tracked: Vec<ObjectKey> = selected
        .iter()
        // `build` derives one policy per rendered object, in the same order.
        .filter(|i| {
            let p = &built.object_policies[**i];
            !p.read_only && p.gc != GcStrategy::Never
        })
        .map(|i| ObjectKey::of(&rendered[*i].object))
        .collect();
    let stale: Vec<ObjectKey> = previous_keys(app)
        .into_iter()
        .filter(|k| !desired.contains(k))
        .collect();
    // A workflow prunes only once its run has succeeded: until then the objects of steps it has not
    // reached yet (production, behind an approval) stay as the previous revision left them.
    let run_succeeded = run
        .as_ref()
        .is_none_or(|r| r.finished && r.status.as_deref() == Some(super::workflow::RUN_SUCCEEDED));
    let (kept, stale) = if built.policies.keep_legacy_resource || !run_succeeded {
        (stale, Vec::new())
    } else {
        retained(ctx, &user, &owner, built, stale).await
    };
    tracked.extend(kept);
    if !stale.is_empty() {
        match release_all(ctx, &user, &owner, &stale, Release::Prune).await {
            Ok(0) => {}
            Ok(n) => {
                publish(
                    ctx,
                    app,
                    EventType::Normal,
                    "Pruned",
                    "Prune",
                    &format!("deleted {n} objects no longer rendered"),
                )
                .await
            }
            Err(e) => {
                publish(
                    ctx,
                    app,
                    EventType::Warning,
                    "PruneFailed",
                    "Prune",
                    &e.to_string(),
                )
                .await
            }
        }
    }
    let applied_objects: Vec<RenderedObject> =
        selected.iter().map(|i| rendered[*i].clone()).collect();
    let (mut services, starting) =
        component_health(app, ctx, &user, &applied_objects, &done.live).await;
    if built.workflow.is_some() {
        // Only what the workflow deployed so far has a health to report.
        services.retain(|s| {
            applied_objects
                .iter()
                .any(|o| o.component.as_deref() == Some(s.name.as_str()))
        });
    }
    for service in &mut services {
        service.definition = built.definitions.get(&service.name).cloned();
    }
    Outcome {
        access: Some(access),
        applied: Some(applied),
        services: Some(services),
        tracked: Some(tracked),
        workflow: run,
        selected: selected.len(),
        starting,
    }
}

/// What applying some of an Application's rendered objects needs.
struct Steps<'a> {
    ctx: &'a Context,
    built: &'a Built,
    rendered: &'a [RenderedObject],
    user: &'a str,
    owner: &'a Owner,
    updating: bool,
}

impl Steps<'_> {
    /// Applies `rendered[i]` for each `i` of `selected`, all-or-nothing.
    async fn apply(&self, selected: &[usize]) -> Result<Applied, ApplyError> {
        let objects: Vec<Value> = selected
            .iter()
            .map(|i| self.rendered[*i].object.clone())
            .collect();
        let policies: Vec<crate::render::ObjectPolicy> = selected
            .iter()
            .map(|i| self.built.object_policies[*i].clone())
            .collect();
        self.ctx
            .applier
            .apply_rendered(self.user, &objects, self.owner, &policies, self.updating)
            .await
    }

    /// Runs the workflow from its recorded state: schedules, applies the objects of the apply
    /// steps that run or ran, settles each running one by its workloads' health, and goes on while
    /// steps finish. Returns the objects applied, the run, and the last apply's result.
    async fn run(
        &self,
        app: &Application,
        wf: &crate::render::workflow::Workflow,
    ) -> (Vec<usize>, WorkflowStatus, Result<Applied, ApplyError>) {
        let now = Timestamp::now();
        let previous = app.status.as_ref().and_then(|s| s.workflow.as_ref());
        // The run belongs to the revision recording this spec (a new one starts a new run).
        let revision = match &self.built.latest_revision {
            Some(r) => r.name.clone(),
            None => run_revision(app),
        };
        let mut run = super::workflow::begin(wf, previous, &revision, now);
        let mut total = Applied::default();
        let mut last: Option<Vec<usize>> = None;
        for _ in 0..=wf.all_steps().len() {
            super::workflow::schedule(wf, &mut run, now);
            let active = super::workflow::applying(wf, &run);
            let selected = self.selected(wf, &active);
            if last.as_ref() != Some(&selected) {
                match self.apply(&selected).await {
                    Ok(applied) => {
                        total.written += applied.written;
                        total
                            .outside_owner_namespace
                            .extend(applied.outside_owner_namespace);
                        total.live.extend(applied.live);
                    }
                    Err(e) => {
                        for step in super::workflow::running_apply_steps(wf, &run) {
                            super::workflow::settle_apply(&mut run, step, Err(e.to_string()), now);
                        }
                        return (selected, run, Err(e));
                    }
                }
                last = Some(selected);
            }
            let mut moved = false;
            for step in super::workflow::running_apply_steps(wf, &run) {
                let health = self.step_health(step, &total.live).await;
                moved |= health.is_ok();
                super::workflow::settle_apply(&mut run, step, health, now);
            }
            if !moved {
                break;
            }
        }
        (last.unwrap_or_default(), run, Ok(total))
    }

    /// The objects of the `active` steps; of an object two of them render, the later step's copy.
    fn selected(
        &self,
        wf: &crate::render::workflow::Workflow,
        active: &BTreeSet<&str>,
    ) -> Vec<usize> {
        let order: Vec<&str> = wf.all_steps().iter().map(|s| s.name.as_str()).collect();
        let rank = |step: &str| order.iter().position(|s| *s == step).unwrap_or(0);
        let mut chosen: BTreeMap<ObjectKey, usize> = BTreeMap::new();
        for (i, step) in self.built.object_steps.iter().enumerate() {
            let Some(step) = step.as_deref().filter(|s| active.contains(s)) else {
                continue;
            };
            let key = ObjectKey::of(&self.rendered[i].object);
            match chosen.get(&key) {
                Some(&j)
                    if rank(self.built.object_steps[j].as_deref().unwrap_or_default())
                        > rank(step) => {}
                _ => {
                    chosen.insert(key, i);
                }
            }
        }
        let mut out: Vec<usize> = chosen.into_values().collect();
        out.sort_unstable();
        out
    }

    /// `Ok` when every workload `step` applies is healthy, else what is not.
    async fn step_health(
        &self,
        step: &str,
        live: &std::collections::HashMap<ObjectKey, Value>,
    ) -> Result<(), String> {
        let mut waiting = Vec::new();
        for (i, object) in self.rendered.iter().enumerate() {
            if self.built.object_steps[i].as_deref() != Some(step)
                || object.object["metadata"]["labels"][names::LABEL_RESOURCE_TYPE]
                    != names::RESOURCE_TYPE_WORKLOAD
            {
                continue;
            }
            let key = ObjectKey::of(&object.object);
            let (health, _) = workload_health(self.ctx, self.user, &key, live.get(&key)).await;
            if !health.healthy {
                waiting.push(format!(
                    "{} {}/{}: {}",
                    key.kind,
                    key.namespace.as_deref().unwrap_or_default(),
                    key.name,
                    health.message
                ));
            }
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "waiting for healthy workloads: {}",
                waiting.join("; ")
            ))
        }
    }
}

/// The run a workflow's state belongs to when no revision was recorded: a spec change starts a
/// new run.
fn run_revision(app: &Application) -> String {
    format!(
        "{}-generation-{}",
        app.name_any(),
        app.metadata.generation.unwrap_or_default()
    )
}

/// Splits objects no longer rendered into those a `garbage-collect` rule keeps (`onAppDelete`:
/// kept and still tracked; `never`: left alone and forgotten) and those to release now. Each is
/// matched by its live labels, as KubeVela matches the recorded resources.
async fn retained(
    ctx: &Context,
    user: &str,
    owner: &Owner,
    built: &Built,
    stale: Vec<ObjectKey>,
) -> (Vec<ObjectKey>, Vec<ObjectKey>) {
    if built.policies.garbage_collect.is_empty() {
        return (Vec::new(), stale);
    }
    let (mut kept, mut release) = (Vec::new(), Vec::new());
    for key in stale {
        let live = match ctx.applier.get(Identity::Applier(user), &key).await {
            Ok(Some(live)) => live,
            // Gone already, or unreadable: releasing it says why.
            _ => {
                release.push(key);
                continue;
            }
        };
        let component = live["metadata"]["labels"][names::LABEL_APP_COMPONENT]
            .as_str()
            .map(str::to_string);
        let type_ = component
            .as_ref()
            .and_then(|c| built.component_types.get(c))
            .cloned();
        let object = RenderedObject {
            component,
            object: live,
        };
        match built.policies.for_object(&object, type_.as_deref()).gc {
            GcStrategy::OnAppUpdate => release.push(key),
            GcStrategy::OnAppDelete => kept.push(key),
            GcStrategy::Never => {
                tracing::info!(app = %owner.key(), object = %key.name, "kept by garbage-collect never; no longer tracked");
            }
        }
    }
    (kept, release)
}

/// Why objects are released.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Release {
    /// No longer rendered: every one goes (or is unshared).
    Prune,
    /// The Application is being deleted: the garbage collector takes what carries its
    /// ownerReference; the rest (other namespaces, cluster scope, shared) is ours.
    Finalize,
}

/// Releases each of `keys`: an object other Applications still share is only unshared (and handed
/// to the next sharer when this one owned it); any other is deleted. Returns how many were deleted.
async fn release_all(
    ctx: &Context,
    user: &str,
    owner: &Owner,
    keys: &[ObjectKey],
    why: Release,
) -> Result<usize, ApplyError> {
    let me = owner.key();
    let mut delete = Vec::new();
    for key in keys {
        let live = match ctx.applier.get(Identity::Applier(user), key).await {
            Ok(Some(live)) => live,
            Ok(None) => continue,
            // Let the delete say what is wrong (forbidden, unknown kind).
            Err(_) => {
                delete.push(key.clone());
                continue;
            }
        };
        let sharers = sharing::sharers(&live);
        let others = sharing::without_sharer(&sharers, &me);
        if !sharers.is_empty() && !others.is_empty() {
            ctx.applier
                .unshare(Identity::Applier(user), key, &live, &others)
                .await?;
            continue;
        }
        let owned_by_reference = live["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner.reference["uid"]));
        if why == Release::Finalize && owned_by_reference {
            continue;
        }
        delete.push(key.clone());
    }
    ctx.applier
        .delete_all(Identity::Applier(user), &delete)
        .await
}

/// Step 4: the status (and Events) from what build and apply returned; the finalizer when objects
/// live outside the Application's namespace.
async fn update_status(
    ctx: &Context,
    app: &Application,
    built: &Built,
    outcome: Outcome,
) -> Result<Action, Error> {
    let apps: Api<Application> = Api::namespaced(ctx.client.clone(), names::namespace_of(app));
    let name = app.name_any();
    let rendered = match &built.rendered {
        Ok(rendered) => rendered,
        Err(e) => {
            let message = e.to_string();
            publish(
                ctx,
                app,
                EventType::Warning,
                "RenderFailed",
                "Render",
                &message,
            )
            .await;
            let status = next_status(
                app,
                "rendering",
                &[Desired::new("Parsed", false, "RenderError", message)],
                None,
            );
            write_status(&apps, app, status).await?;
            // A referenced object may appear (or become readable) without any event of ours.
            return Ok(match e {
                RenderError::Reference { .. } => Action::requeue(Duration::from_secs(30)),
                _ => Action::await_change(),
            });
        }
    };
    let access = outcome.access.unwrap_or_default();
    let parsed = match built.warnings.first() {
        None => Desired::new(
            "Parsed",
            true,
            "Rendered",
            format!("rendered {} objects", rendered.len()),
        ),
        // KubeVela ignores what a definition does not declare; so do we, but say so (typos).
        Some(first) => {
            let listed: Vec<String> = built.warnings.iter().map(ToString::to_string).collect();
            let message = format!(
                "rendered {} objects; ignored: {}",
                rendered.len(),
                listed.join("; ")
            );
            let said = app
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Parsed"))
                .is_some_and(|c| c.message == message);
            if !said {
                publish(
                    ctx,
                    app,
                    EventType::Warning,
                    first.reason,
                    "Render",
                    &message,
                )
                .await;
            }
            Desired::new("Parsed", true, first.reason, message)
        }
    };
    let applied = match outcome.applied {
        Some(Ok(applied)) => applied,
        Some(Err(e)) => {
            let message = e.to_string();
            publish(
                ctx,
                app,
                EventType::Warning,
                "ApplyFailed",
                "Apply",
                &message,
            )
            .await;
            let desired: Vec<Desired> =
                [parsed, Desired::new("Applied", false, e.reason(), message)]
                    .into_iter()
                    .chain(access.conditions)
                    .collect();
            let mut status = next_status(app, "rendering", &desired, None);
            status.latest_revision = built.latest_revision.clone().or(status.latest_revision);
            status
                .conditions
                .retain(|c| !access.cleared.contains(&c.type_.as_str()));
            if outcome.workflow.is_some() {
                status.workflow = outcome.workflow;
            }
            write_status(&apps, app, status).await?;
            return if e.is_permanent() {
                Ok(Action::requeue(Duration::from_secs(300)))
            } else {
                Err(Error::Apply {
                    app: format!("{}/{name}", names::namespace_of(app)),
                    source: e,
                })
            };
        }
        None => Applied::default(),
    };

    // Objects outside the namespace need the finalizer before anything else can leave them behind.
    if !applied.outside_owner_namespace.is_empty()
        && !app.finalizers().iter().any(|f| f == FINALIZER)
    {
        let mut finalizers = app.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        set_finalizers(&apps, app, &finalizers)
            .await
            .map_err(kube_err("adding the cleanup finalizer", &name))?;
    }

    let services = outcome.services.unwrap_or_default();
    let healthy = services.iter().all(|s| s.healthy);
    // A new generation applied, its workloads starting: its status waits for their next change
    // (usually readiness, which wakes this controller through their watch) and is written once,
    // instead of "unhealthy" now and "running" a moment later. Until then the status still names
    // the previous generation (`observedGeneration`), which is how Kubernetes says "not yet
    // reported". A workload still starting at the end of the grace is reported then. A workflow's
    // run, failed grants and warnings are written at once.
    if let Some(left) = outcome.starting
        && outcome.workflow.is_none()
        && !access.failed
        && built.warnings.is_empty()
        && unreported_generation(app)
    {
        tracing::debug!(app = %name, ?left, "workloads starting; status waits");
        return Ok(Action::requeue(left));
    }
    let run = outcome.workflow;
    let phase = match run.as_ref() {
        Some(r) if r.status.as_deref() == Some(super::workflow::RUN_SUSPENDING) => {
            "workflowSuspending"
        }
        Some(r) if r.status.as_deref() == Some(super::workflow::RUN_FAILED) => "workflowFailed",
        Some(r) if !r.finished => "runningWorkflow",
        _ if healthy => "running",
        _ => "unhealthy",
    };
    if let Some(r) = &run {
        announce_workflow(ctx, app, r).await;
    }
    let unhealthy: Vec<String> = services
        .iter()
        .filter(|s| !s.healthy)
        .map(|s| {
            format!(
                "{}: {}",
                s.name,
                s.message.as_deref().unwrap_or("not ready")
            )
        })
        .collect();
    let conditions = [
        parsed,
        Desired::new(
            "Applied",
            true,
            "Applied",
            match &run {
                None => format!("{} objects applied", rendered.len()),
                Some(r) => format!(
                    "{} of {} objects applied (workflow {})",
                    outcome.selected,
                    rendered.len(),
                    r.status.as_deref().unwrap_or("executing")
                ),
            },
        ),
        if healthy {
            Desired::new("Healthy", true, "AllHealthy", "all components are healthy")
        } else {
            Desired::new(
                "Healthy",
                false,
                "ComponentsUnhealthy",
                unhealthy.join("; "),
            )
        },
    ];
    let conditions: Vec<Desired> = conditions.into_iter().chain(access.conditions).collect();
    let mut status = next_status(app, phase, &conditions, Some(services));
    status.latest_revision = built.latest_revision.clone().or(status.latest_revision);
    status
        .conditions
        .retain(|c| !access.cleared.contains(&c.type_.as_str()));
    let tracked: BTreeSet<ObjectKey> = match outcome.tracked {
        Some(tracked) => tracked.into_iter().collect(),
        None => rendered.iter().map(|r| ObjectKey::of(&r.object)).collect(),
    };
    status.applied_resources = tracked.iter().map(ref_of_key).collect();
    let next_step = match (&built.workflow, &run) {
        (Some(wf), Some(r)) => super::workflow::next_check(wf, r, Timestamp::now()),
        _ => None,
    };
    status.workflow = run;
    write_status(&apps, app, status).await?;
    if access.failed {
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let recheck = if !healthy {
        Some(UNHEALTHY_RECHECK)
    } else if rendered.iter().any(|r| r.kind() == "Secret") {
        Some(SECRET_RECHECK)
    } else {
        None
    };
    Ok(match (recheck, next_step) {
        (Some(a), Some(b)) => Action::requeue(a.min(b)),
        (Some(d), None) | (None, Some(d)) => Action::requeue(d),
        (None, None) => Action::await_change(),
    })
}

/// An Event when the run suspends, resumes, succeeds or fails (compared with the recorded run).
async fn announce_workflow(ctx: &Context, app: &Application, run: &WorkflowStatus) {
    let before = app.status.as_ref().and_then(|s| s.workflow.as_ref());
    let same_run = before.is_some_and(|b| b.app_revision == run.app_revision);
    let was =
        |status: &str| same_run && before.is_some_and(|b| b.status.as_deref() == Some(status));
    let now = run.status.as_deref().unwrap_or_default();
    let (type_, reason, note) = match now {
        super::workflow::RUN_SUSPENDING if !was(super::workflow::RUN_SUSPENDING) => (
            EventType::Normal,
            "WorkflowSuspended",
            run.message.clone().unwrap_or_default(),
        ),
        super::workflow::RUN_SUCCEEDED if !was(super::workflow::RUN_SUCCEEDED) => (
            EventType::Normal,
            "WorkflowSucceeded",
            "every workflow step succeeded".to_string(),
        ),
        super::workflow::RUN_FAILED if !was(super::workflow::RUN_FAILED) => (
            EventType::Warning,
            "WorkflowFailed",
            run.message.clone().unwrap_or_default(),
        ),
        super::workflow::RUN_EXECUTING if was(super::workflow::RUN_SUSPENDING) => (
            EventType::Normal,
            "WorkflowResumed",
            "the workflow was resumed".to_string(),
        ),
        _ => return,
    };
    publish(ctx, app, type_, reason, "Workflow", &note).await;
}

/// The objects an earlier reconcile applied (`status.appliedResources`).
fn previous_keys(app: &Application) -> Vec<ObjectKey> {
    app.status
        .as_ref()
        .map(|s| s.applied_resources.iter().map(key_of_ref).collect())
        .unwrap_or_default()
}

/// Replaces the finalizers, on the version of the Application this reconcile read: a concurrent
/// change makes the API server answer 409 and the reconcile runs again on the new version.
async fn set_finalizers(
    apps: &Api<Application>,
    app: &Application,
    finalizers: &[impl serde::Serialize],
) -> Result<Application, kube::Error> {
    apps.patch(
        &app.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": app.resource_version(),
        }})),
    )
    .await
}

async fn finalize(app: &Application, ctx: &Context) -> Result<Action, Error> {
    if !app.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let ns = names::namespace_of(app);
    let apps: Api<Application> = Api::namespaced(ctx.client.clone(), ns);
    let user = Applier::applier_user(ns, app.metadata.annotations.as_ref());
    if app.status.as_ref().and_then(|s| s.status.as_deref()) != Some("deleting") {
        let status = next_status(app, "deleting", &[], None);
        write_status(&apps, app, status).await?;
    }
    // Inside the namespace the garbage collector follows ownerReferences; the rest (other
    // namespaces, cluster scope, shared objects) is ours to delete or unshare.
    let owner = Owner {
        namespace: ns.to_string(),
        reference: serde_json::to_value(app.controller_reference()).unwrap_or(Value::Null),
    };
    if let Err(e) = release_all(ctx, &user, &owner, &previous_keys(app), Release::Finalize).await {
        publish(
            ctx,
            app,
            EventType::Warning,
            "CleanupFailed",
            "Delete",
            &e.to_string(),
        )
        .await;
        return Err(Error::Apply {
            app: format!("{ns}/{}", app.name_any()),
            source: e,
        });
    }
    let finalizers: Vec<&String> = app
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    set_finalizers(&apps, app, &finalizers)
        .await
        .map_err(kube_err("removing the cleanup finalizer", &app.name_any()))?;
    Ok(Action::await_change())
}

async fn component_health(
    app: &Application,
    ctx: &Context,
    user: &str,
    rendered: &[RenderedObject],
    live: &std::collections::HashMap<ObjectKey, Value>,
) -> (Vec<ApplicationComponentStatus>, Option<Duration>) {
    let mut out = Vec::new();
    // Some(left) while every unhealthy workload is still starting; None once one is not.
    let mut starting = Some(Duration::ZERO);
    for component in &app.spec.components {
        let workload = rendered.iter().find(|r| {
            r.component.as_deref() == Some(component.name.as_str())
                && r.object["metadata"]["labels"][names::LABEL_RESOURCE_TYPE] == "WORKLOAD"
        });
        let traits = component
            .traits
            .iter()
            .filter(|t| t.type_ != names::GITLAB_ACCESS)
            .map(|t| ApplicationTraitStatus {
                type_: t.type_.clone(),
                healthy: true,
                message: None,
            })
            .collect();
        let (health, gvk, namespace) = match workload {
            None => (
                health::Health {
                    healthy: true,
                    message: String::new(),
                },
                None,
                None,
            ),
            Some(w) => {
                let key = ObjectKey::of(&w.object);
                let gvk = WorkloadGvk {
                    api_version: key.api_version.clone(),
                    kind: key.kind.clone(),
                };
                let (h, left) = workload_health(ctx, user, &key, live.get(&key)).await;
                if !h.healthy {
                    starting = starting.zip(left).map(|(a, b)| a.max(b));
                }
                (h, Some(gvk), key.namespace)
            }
        };
        out.push(ApplicationComponentStatus {
            name: component.name.clone(),
            namespace,
            cluster: Some("local".into()),
            workload_definition: gvk,
            definition: None,
            healthy: health.healthy,
            workload_healthy: Some(health.healthy),
            message: Some(health.message),
            traits,
        });
    }
    (out, starting.filter(|left| !left.is_zero()))
}

/// The health of workload `key` as the applier reads it (or as this reconcile's apply just saw it,
/// `live`), with the scheduler's reason when its pods cannot be scheduled; and, when it is unready
/// but still starting (`health::STARTING`), how long it has left.
async fn workload_health(
    ctx: &Context,
    user: &str,
    key: &ObjectKey,
    live: Option<&Value>,
) -> (health::Health, Option<Duration>) {
    let read = match live {
        Some(live) => Ok(Some(live.clone())),
        None => ctx.applier.get(Identity::Applier(user), key).await,
    };
    match read {
        Ok(Some(live)) => {
            let mut h = health::of_workload(&live);
            if h.healthy {
                return (h, None);
            }
            let starting = health::starting(&live, Timestamp::now());
            if starting.is_none()
                && let Some(reason) = pending_reason(ctx, &live).await
            {
                h.message = format!("{} ({reason})", h.message);
            }
            (h, starting)
        }
        Ok(None) => (
            health::Health {
                healthy: false,
                message: "workload not found".into(),
            },
            None,
        ),
        Err(e) => (
            health::Health {
                healthy: false,
                message: format!("reading workload: {e}"),
            },
            None,
        ),
    }
}

/// Why a workload's pods are not ready, when the scheduler says so.
async fn pending_reason(ctx: &Context, live: &Value) -> Option<String> {
    let labels = live["spec"]["selector"]["matchLabels"].as_object()?;
    let ns = live["metadata"]["namespace"].as_str()?;
    let selector: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
        .collect();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    // From the API server's watch cache (any resourceVersion): the scheduler's reason needs no
    // quorum read, and a selected list read from etcd reads every pod of the namespace.
    let list = pods
        .list(
            &ListParams::default()
                .labels(&selector.join(","))
                .limit(20)
                .match_any(),
        )
        .await
        .ok()?;
    let values: Vec<Value> = list
        .items
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    health::unschedulable_reason(&values).map(|m| format!("pods cannot be scheduled: {m}"))
}

fn next_status(
    app: &Application,
    phase: &str,
    desired: &[Desired],
    services: Option<Vec<ApplicationComponentStatus>>,
) -> ApplicationStatus {
    let old = app.status.clone().unwrap_or_default();
    let generation = app.metadata.generation;
    ApplicationStatus {
        observed_generation: generation,
        status: Some(phase.to_string()),
        conditions: conditions::merge(&old.conditions, desired, generation, Timestamp::now()),
        services: services.unwrap_or(old.services),
        applied_resources: old.applied_resources,
        workflow: old.workflow,
        latest_revision: old.latest_revision,
    }
}

async fn write_status(
    apps: &Api<Application>,
    app: &Application,
    status: ApplicationStatus,
) -> Result<(), Error> {
    let old = app.status.clone().unwrap_or_default();
    let unchanged = old.observed_generation == status.observed_generation
        && old.status == status.status
        && old.services == status.services
        && old.applied_resources == status.applied_resources
        && old.workflow == status.workflow
        && old.latest_revision == status.latest_revision
        && conditions::same_ignoring_time(&old.conditions, &status.conditions);
    if unchanged {
        return Ok(());
    }
    tracing::debug!(app = %app.name_any(), phase = ?status.status, "writing status");
    let mut patch = json!({"apiVersion": Application::api_version(&()), "kind": Application::kind(&()), "status": status});
    // A workflow's state lives in this status: one computed from an older read (a lagging cache,
    // or a resume — `status.workflow.suspend: false` — written since) must not overwrite it. Written
    // on the version read; a conflict makes the reconcile run again on the new one.
    if old.workflow.is_some() || status.workflow.is_some() {
        patch["metadata"] = json!({"resourceVersion": app.resource_version()});
    }
    match apps
        .patch_status(
            &app.name_any(),
            &PatchParams::apply(names::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Conflict {
            app: format!("{}/{}", names::namespace_of(app), app.name_any()),
        }),
        Err(e) => Err(kube_err("writing status", &app.name_any())(e)),
    }
}

async fn publish(
    ctx: &Context,
    app: &Application,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(crate::runtime::events::truncate(
            note,
            crate::runtime::events::MAX_NOTE_BYTES,
        )),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &app.object_ref(&())).await {
        tracing::warn!(error = %e, app = %app.name_any(), "publishing an Event failed");
    }
}

fn key_of_ref(r: &ClusterObjectReference) -> ObjectKey {
    ObjectKey {
        api_version: r.api_version.clone(),
        kind: r.kind.clone(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
    }
}

fn ref_of_key(k: &ObjectKey) -> ClusterObjectReference {
    ClusterObjectReference {
        cluster: None,
        creator: Some("workflow".into()),
        api_version: k.api_version.clone(),
        kind: k.kind.clone(),
        name: k.name.clone(),
        namespace: k.namespace.clone(),
        uid: None,
    }
}

/// Maps a watched object back to its Application through the labels rendering put on it.
pub fn owner_of(
    labels: &BTreeMap<String, String>,
) -> Option<kube::runtime::reflector::ObjectRef<DeserializeGuard<Application>>> {
    if labels.get(names::LABEL_MANAGED_BY).map(String::as_str) != Some(names::MANAGED_BY) {
        return None;
    }
    let name = labels.get(names::LABEL_APP_NAME)?;
    let ns = labels.get(names::LABEL_APP_NAMESPACE)?;
    Some(kube::runtime::reflector::ObjectRef::new(name).within(ns))
}
