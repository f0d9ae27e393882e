//! The one applier: server-side apply of an Application's objects, as an [`Identity`].
//!
//! Invariants:
//! - Rendered objects are written through a client that impersonates the Application's applier
//!   ServiceAccount, so the API server's RBAC bounds what an Application can create (no escalation
//!   through the operator). Grant objects (ServiceAccount, Role, RoleBinding, guard parameters) are
//!   the operator's own and written as the operator, whose RBAC bounds them in turn.
//! - Rendered objects are all-or-nothing: before the first changed object is written, every other
//!   changed one has passed a dry run, and the first is checked by its own write; so a forbidden or
//!   invalid object leaves the cluster untouched (no partial apply), and no object is sent twice
//!   when one changes.
//! - An object whose desired fields already hold in the live object is not written at all: a resync of
//!   an unchanged Application sends zero write requests.
use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Api, Client, Config};
use serde_json::Value;

use super::sharing::{self, Managed};
use crate::names;
use crate::names::{APPLIER_ANNOTATION, DEFAULT_APPLIER};
use crate::render::{ApplyOnce, GcStrategy, ObjectPolicy};

/// Why applying failed. Messages tell the user what to grant or fix.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "{kind} is not served by this cluster ({api_version}): install its CRD or fix apiVersion/kind"
    )]
    UnknownKind { api_version: String, kind: String },
    #[error("{who} may not {verb} {kind} {target}: {message}")]
    Forbidden {
        /// `the applier ServiceAccount <ns>/<name>` or `the operator`.
        who: String,
        verb: &'static str,
        kind: String,
        target: String,
        message: String,
    },
    #[error(
        "{kind} {target} belongs to {owner}; an object is never taken over from another owner: rename the component (or the declaration), or delete the object"
    )]
    NameConflict {
        kind: String,
        target: String,
        owner: String,
    },
    #[error(
        "{kind} {target} exists and no Application manages it: add a take-over policy selecting it (type take-over), or delete it"
    )]
    NotManaged { kind: String, target: String },
    #[error(
        "{kind} {target} is read-only for this Application (policy read-only) and does not exist: create it, or remove it from the read-only rules"
    )]
    ReadOnlyMissing { kind: String, target: String },
    #[error("the API server refused {kind} {target}: {message}")]
    Invalid {
        kind: String,
        target: String,
        message: String,
    },
    #[error("talking to the API server about {kind} {target}: {source}")]
    Api {
        kind: String,
        target: String,
        #[source]
        source: Box<kube::Error>,
    },
}

impl ApplyError {
    /// Bounded metric/reason label.
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::UnknownKind { .. } => "UnknownKind",
            ApplyError::Forbidden { .. } => "Forbidden",
            ApplyError::NameConflict { .. } => "NameConflict",
            ApplyError::NotManaged { .. } => "NotManaged",
            ApplyError::ReadOnlyMissing { .. } => "ReadOnlyMissing",
            ApplyError::Invalid { .. } => "Invalid",
            ApplyError::Api { .. } => "ApiError",
        }
    }
    /// True when retrying cannot help until someone changes the Application or its permissions. A
    /// name conflict is retried: the other owner may be on its way out (garbage collection).
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            ApplyError::Api { .. } | ApplyError::NameConflict { .. }
        )
    }
}

/// Who a write is made as.
#[derive(Clone, Copy, Debug)]
pub enum Identity<'a> {
    /// The Application's applier (`system:serviceaccount:<ns>:<name>`), impersonated.
    Applier(&'a str),
    /// The operator itself (grant objects).
    Operator,
}

impl Identity<'_> {
    fn describe(&self) -> (String, &'static str) {
        match self {
            Identity::Applier(user) => (
                format!(
                    "the applier ServiceAccount {}",
                    user.strip_prefix("system:serviceaccount:")
                        .unwrap_or(user)
                        .replacen(':', "/", 1)
                ),
                "Bind it a Role that allows this (see README: Applier identity)",
            ),
            Identity::Operator => (
                "the operator".to_string(),
                "Check the Helm chart's RBAC and the trust's ceiling (see README: Security model)",
            ),
        }
    }
}

/// Resolves kinds to API resources once, through discovery, and hands out impersonating clients.
pub struct Applier {
    gate: crate::runtime::leader::WriteGate,
    metrics: std::sync::Arc<crate::runtime::metrics::Metrics>,
    client: Client,
    config: Config,
    kinds: Mutex<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>,
    impersonated: Mutex<HashMap<String, Client>>,
}

/// The Application that owns what is applied.
pub struct Owner {
    pub namespace: String,
    /// A controller ownerReference (`controller: true`, `blockOwnerDeletion: true`).
    pub reference: serde_json::Value,
}

impl Owner {
    fn name(&self) -> &str {
        self.reference["name"].as_str().unwrap_or_default()
    }
    fn uid(&self) -> &str {
        self.reference["uid"].as_str().unwrap_or_default()
    }
    /// `ns/name`, as in `app.oam.dev/shared-by`.
    pub fn key(&self) -> String {
        sharing::app_key(&self.namespace, self.name())
    }
}

/// How one object is written.
enum Write {
    /// Server-side apply of the desired fields.
    Apply,
    /// PUT of the whole object at the live resourceVersion (`resource-update` `op: replace`).
    Replace(String),
    /// Delete, wait until gone, apply (`resource-update` `recreateFields` changed).
    Recreate,
    /// Another Application owns it: only add this one to `app.oam.dev/shared-by`.
    Share(String),
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Objects written (0 when everything already matched).
    pub written: usize,
    /// Objects no ownerReference can reach (other namespaces, cluster scope): cleaned up by finalizer.
    pub outside_owner_namespace: Vec<ObjectKey>,
    /// Each object as the API server last showed it: the answer to its write, or the live object
    /// read when it needed none. Health is judged from these, not from another read.
    pub live: HashMap<ObjectKey, Value>,
}

/// Identity of one object: (apiVersion, kind, namespace, name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn of(obj: &Value) -> ObjectKey {
        ObjectKey {
            api_version: obj["apiVersion"].as_str().unwrap_or_default().to_string(),
            kind: obj["kind"].as_str().unwrap_or_default().to_string(),
            namespace: obj["metadata"]["namespace"].as_str().map(str::to_string),
            name: obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        }
    }
    pub fn gvk(&self) -> GroupVersionKind {
        let (group, version) = match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        };
        GroupVersionKind::gvk(group, version, &self.kind)
    }
    fn target(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl Applier {
    pub fn new(
        client: Client,
        config: Config,
        metrics: std::sync::Arc<crate::runtime::metrics::Metrics>,
        gate: crate::runtime::leader::WriteGate,
    ) -> Self {
        Applier {
            gate,
            metrics,
            client,
            config,
            kinds: Mutex::default(),
            impersonated: Mutex::default(),
        }
    }

    /// `system:serviceaccount:<ns>:<applier>` for an Application.
    pub fn applier_user(
        namespace: &str,
        annotations: Option<&std::collections::BTreeMap<String, String>>,
    ) -> String {
        let sa = annotations
            .and_then(|a| a.get(APPLIER_ANNOTATION))
            .map(String::as_str)
            .unwrap_or(DEFAULT_APPLIER);
        format!("system:serviceaccount:{namespace}:{sa}")
    }

    /// A client impersonating `user`, built once per user and reused.
    fn client_as(&self, user: &str) -> Result<Client, ApplyError> {
        let mut cache = self
            .impersonated
            .lock()
            .expect("applier client cache poisoned");
        if let Some(c) = cache.get(user) {
            return Ok(c.clone());
        }
        let mut cfg = self.config.clone();
        cfg.auth_info.impersonate = Some(user.to_string());
        cfg.auth_info.impersonate_groups = None;
        let client = self
            .metrics
            .gated_client(cfg, self.gate.clone())
            .map_err(|e| ApplyError::Api {
                kind: "client".into(),
                target: user.into(),
                source: Box::new(e),
            })?;
        cache.insert(user.to_string(), client.clone());
        Ok(client)
    }

    async fn resolve(&self, key: &ObjectKey) -> Result<(ApiResource, ApiCapabilities), ApplyError> {
        let gvk = key.gvk();
        if let Some(found) = self.kinds.lock().expect("kind cache poisoned").get(&gvk) {
            return Ok(found.clone());
        }
        let found = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| match e {
                kube::Error::Api(ref s) if s.code == 404 => ApplyError::UnknownKind {
                    api_version: key.api_version.clone(),
                    kind: key.kind.clone(),
                },
                kube::Error::Discovery(_) => ApplyError::UnknownKind {
                    api_version: key.api_version.clone(),
                    kind: key.kind.clone(),
                },
                other => ApplyError::Api {
                    kind: key.kind.clone(),
                    target: key.target(),
                    source: Box::new(other),
                },
            })?;
        self.kinds
            .lock()
            .expect("kind cache poisoned")
            .insert(gvk, found.clone());
        Ok(found)
    }

    fn api(
        &self,
        client: Client,
        key: &ObjectKey,
        ar: &ApiResource,
        caps: &ApiCapabilities,
    ) -> Api<DynamicObject> {
        match (&caps.scope, &key.namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client, ns, ar),
            (Scope::Namespaced, None) => Api::default_namespaced_with(client, ar),
            (Scope::Cluster, _) => Api::all_with(client, ar),
        }
    }

    fn client_for(&self, identity: Identity) -> Result<Client, ApplyError> {
        match identity {
            Identity::Applier(user) => self.client_as(user),
            Identity::Operator => Ok(self.client.clone()),
        }
    }

    /// Applies `objects` as `identity`: reads each live object (as the same identity) and writes the
    /// ones that differ; as the applier, every one is dry-run first and nothing is written unless all
    /// pass. `owner`, when given, is set as the
    /// controller ownerReference of every object in its namespace. Returns how many were written.
    pub async fn apply_all(
        &self,
        identity: Identity<'_>,
        objects: &[Value],
        owner: Option<&Owner>,
    ) -> Result<Applied, ApplyError> {
        self.apply_with(identity, objects, owner, &[], false).await
    }

    /// As `apply_all`, for an Application's rendered objects: `policies[i]` (the resource
    /// policies' say on `objects[i]`) decides ownership, adoption, sharing, apply-once and how it is
    /// updated. `updating`: the Application changed since its last reconcile (apply-once `affect`).
    pub async fn apply_rendered(
        &self,
        user: &str,
        objects: &[Value],
        owner: &Owner,
        policies: &[ObjectPolicy],
        updating: bool,
    ) -> Result<Applied, ApplyError> {
        self.apply_with(
            Identity::Applier(user),
            objects,
            Some(owner),
            policies,
            updating,
        )
        .await
    }

    async fn apply_with(
        &self,
        identity: Identity<'_>,
        objects: &[Value],
        owner: Option<&Owner>,
        policies: &[ObjectPolicy],
        updating: bool,
    ) -> Result<Applied, ApplyError> {
        let as_applier = self.client_for(identity)?;
        let mut pending = Vec::new();
        let mut outside = Vec::new();
        let mut seen = HashMap::new();
        let default_policy = ObjectPolicy::default();
        for (i, obj) in objects.iter().enumerate() {
            let policy = policies.get(i).unwrap_or(&default_policy);
            let mut obj = obj.clone();
            let key = ObjectKey::of(&obj);
            let (ar, caps) = self.resolve(&key).await?;
            if let Some(meta) = obj["metadata"].as_object_mut()
                && caps.scope == Scope::Cluster
            {
                meta.remove("namespace");
            }
            if let Some(owner) = owner
                && !policy.read_only
            {
                let in_owner_namespace = caps.scope == Scope::Namespaced
                    && key.namespace.as_deref().unwrap_or(&owner.namespace) == owner.namespace;
                // Never across namespaces or onto cluster-scoped objects: the garbage collector would
                // treat the owner as missing and delete the object. Nor onto objects that must outlive
                // this Application (shared, or garbage-collect `never`).
                if in_owner_namespace && !policy.shared && policy.gc != GcStrategy::Never {
                    obj["metadata"]["ownerReferences"] = serde_json::json!([owner.reference]);
                } else if policy.gc != GcStrategy::Never {
                    outside.push(ObjectKey::of(&obj));
                }
            }
            // Read as the applier too: the operator needs no read access of its own to arbitrary kinds.
            let live = self
                .api(as_applier.clone(), &key, &ar, &caps)
                .get_opt(&key.name)
                .await
                .map_err(|e| classify(identity, "get", &key, e))?;
            let live = live.and_then(|l| serde_json::to_value(l).ok());
            if policy.read_only {
                if live.is_none() {
                    return Err(ApplyError::ReadOnlyMissing {
                        kind: key.kind.clone(),
                        target: key.target(),
                    });
                }
                continue;
            }
            let mut write = Write::Apply;
            match (owner, &live) {
                (Some(owner), Some(live)) => {
                    let me = owner.key();
                    if policy.shared {
                        let list = sharing::sharers(live);
                        obj["metadata"]["annotations"][sharing::ANNOTATION_SHARED_BY] =
                            sharing::with_sharer(&list, &me).into();
                    }
                    match sharing::managed_by(live, &owner.namespace, owner.name(), owner.uid()) {
                        Managed::Us => {}
                        Managed::Other(_) if policy.shared => {
                            let list = sharing::sharers(live);
                            if !list.contains(&me) {
                                let api = self.api(as_applier.clone(), &key, &ar, &caps);
                                pending.push((
                                    key,
                                    api,
                                    obj,
                                    Write::Share(sharing::with_sharer(&list, &me)),
                                ));
                            }
                            continue;
                        }
                        Managed::Other(theirs) => {
                            return Err(ApplyError::NameConflict {
                                kind: key.kind.clone(),
                                target: key.target(),
                                owner: theirs,
                            });
                        }
                        Managed::Nobody if policy.take_over || policy.shared => {}
                        Managed::Nobody => {
                            return Err(ApplyError::NotManaged {
                                kind: key.kind.clone(),
                                target: key.target(),
                            });
                        }
                    }
                    match &policy.apply_once {
                        ApplyOnce::Whole => continue,
                        ApplyOnce::Paths { paths, affect } => {
                            let applies = match affect.as_deref() {
                                Some("onUpdate") => updating,
                                Some("onStateKeep") => !updating,
                                _ => true,
                            };
                            if applies {
                                for path in paths {
                                    sharing::keep_live(&mut obj, live, path);
                                }
                            }
                        }
                        ApplyOnce::Off => {}
                    }
                    if policy
                        .recreate_fields
                        .iter()
                        .any(|f| sharing::get_path(&obj, f) != sharing::get_path(live, f))
                    {
                        write = Write::Recreate;
                    } else if policy.replace {
                        let rv = live["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or_default();
                        write = Write::Replace(rv.to_string());
                    }
                }
                (Some(owner), None) if policy.shared => {
                    obj["metadata"]["annotations"][sharing::ANNOTATION_SHARED_BY] =
                        owner.key().into();
                }
                // Never adopt an object another owner controls: its name was taken first.
                (None, Some(live)) => {
                    if let Some(theirs) = sharing::controller_of(live)
                        && sharing::controller_of(&obj).is_some_and(|ours| ours.0 != theirs.0)
                    {
                        return Err(ApplyError::NameConflict {
                            kind: key.kind.clone(),
                            target: key.target(),
                            owner: format!("{} {}", theirs.1, theirs.2),
                        });
                    }
                }
                _ => {}
            }
            let up_to_date = live.as_ref().is_some_and(|l| is_subset(&obj, l));
            if up_to_date && let Some(live) = live {
                seen.insert(key.clone(), live);
            } else {
                tracing::debug!(kind = %key.kind, object = %key.target(), "object differs from the live one; applying");
                let api = self.api(as_applier.clone(), &ObjectKey::of(&obj), &ar, &caps);
                pending.push((key, api, obj, write));
            }
        }
        // Rendered objects are all-or-nothing: before the first is written, every other one has
        // passed a dry run. The first needs none: its own write is its check, and when it fails
        // nothing has been written (so a change of one object is one request, not two). Grant
        // objects are written in dependency order instead (guard parameters, ServiceAccount, Role,
        // RoleBinding): the API server's escalation check of a RoleBinding reads its Role, which a dry
        // run of the Role does not create.
        if let Identity::Applier(_) = identity {
            for (key, api, obj, write) in pending.iter().skip(unchecked_first(&pending)) {
                write_object(api, key, obj, write, true)
                    .await
                    .map_err(|e| classify(identity, "apply", key, e))?;
            }
        }
        for (key, api, obj, write) in &pending {
            let answer = write_object(api, key, obj, write, false)
                .await
                .map_err(|e| classify(identity, "apply", key, e))?;
            if let Some(answer) = answer {
                seen.insert(key.clone(), answer);
            }
        }
        Ok(Applied {
            written: pending.len(),
            outside_owner_namespace: outside,
            live: seen,
        })
    }

    /// Deletes objects that left the desired set, as `identity`. Already-gone objects are fine.
    pub async fn delete_all(
        &self,
        identity: Identity<'_>,
        keys: &[ObjectKey],
    ) -> Result<usize, ApplyError> {
        let as_applier = self.client_for(identity)?;
        let mut deleted = 0;
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        for key in keys {
            let (ar, caps) = match self.resolve(key).await {
                Ok(found) => found,
                Err(ApplyError::UnknownKind { .. }) => continue, // its CRD is gone, so is the object
                Err(e) => return Err(e),
            };
            match self
                .api(as_applier.clone(), key, &ar, &caps)
                .delete(&key.name, &dp)
                .await
            {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(classify(identity, "delete", key, e)),
            }
        }
        Ok(deleted)
    }

    /// Removes this Application from a shared object's `app.oam.dev/shared-by`, leaving `others`;
    /// when it owned the object (its labels), the first of `others` owns it now.
    pub async fn unshare(
        &self,
        identity: Identity<'_>,
        key: &ObjectKey,
        live: &Value,
        others: &[String],
    ) -> Result<(), ApplyError> {
        let (ar, caps) = self.resolve(key).await?;
        let api = self.api(self.client_for(identity)?, key, &ar, &caps);
        let mut patch = serde_json::json!({"metadata": {"annotations": {
            sharing::ANNOTATION_SHARED_BY: others.join(",")
        }}});
        let labels = &live["metadata"]["labels"];
        if let Some((ns, name)) = others.first().and_then(|o| o.split_once('/'))
            && labels[names::LABEL_APP_NAME].is_string()
        {
            patch["metadata"]["labels"] = serde_json::json!({
                names::LABEL_APP_NAME: name,
                names::LABEL_APP_NAMESPACE: ns,
            });
        }
        api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| classify(identity, "unshare", key, e))?;
        Ok(())
    }

    /// Reads the objects a `ref-objects` entry names, as `identity` (the applier: an Application
    /// sees only what its applier may read). The message of an error says what to grant.
    pub async fn read_reference(
        &self,
        identity: Identity<'_>,
        reference: &crate::render::ObjectReference,
    ) -> Result<Vec<Value>, String> {
        use crate::render::Target;
        let (ar, caps) = match &reference.target {
            Target::Kind { api_version, kind } => {
                let key = ObjectKey {
                    api_version: api_version.clone(),
                    kind: kind.clone(),
                    namespace: Some(reference.namespace.clone()),
                    name: reference.name.clone().unwrap_or_default(),
                };
                self.resolve(&key).await.map_err(|e| e.to_string())?
            }
            Target::Resource { resource, group } => {
                let discovery = kube::discovery::Discovery::new(self.client.clone())
                    .filter(&[group.as_str()])
                    .run()
                    .await
                    .map_err(|e| format!("discovering the API group {group:?}: {e}"))?;
                discovery
                    .groups()
                    .flat_map(|g| g.recommended_resources())
                    .find(|(ar, _)| {
                        ar.plural == *resource || ar.kind.to_ascii_lowercase() == *resource
                    })
                    .ok_or_else(|| {
                        format!("resource {resource:?} is not served in API group {group:?}")
                    })?
            }
        };
        let key = ObjectKey {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
            namespace: Some(reference.namespace.clone()),
            name: reference.name.clone().unwrap_or_default(),
        };
        let api = self.api(
            self.client_for(identity).map_err(|e| e.to_string())?,
            &key,
            &ar,
            &caps,
        );
        let found = match &reference.name {
            Some(name) => api
                .get_opt(name)
                .await
                .map(|o| o.into_iter().collect::<Vec<_>>()),
            None => {
                let selector: Vec<String> = reference
                    .label_selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                api.list(&kube::api::ListParams::default().labels(&selector.join(",")))
                    .await
                    .map(|l| l.items)
            }
        };
        let found = found.map_err(|e| classify(identity, "read", &key, e).to_string())?;
        Ok(found
            .into_iter()
            .filter_map(|o| {
                let mut v = serde_json::to_value(o).ok()?;
                v["apiVersion"] = ar.api_version.clone().into();
                v["kind"] = ar.kind.clone().into();
                Some(v)
            })
            .collect())
    }

    /// Reads a live object as `user` (health checks): the applier can read what it applied, so the
    /// operator needs no read access of its own to arbitrary kinds.
    pub async fn get(
        &self,
        identity: Identity<'_>,
        key: &ObjectKey,
    ) -> Result<Option<Value>, ApplyError> {
        let (ar, caps) = self.resolve(key).await?;
        let as_applier = self.client_for(identity)?;
        let live = self
            .api(as_applier, key, &ar, &caps)
            .get_opt(&key.name)
            .await
            .map_err(|e| ApplyError::Api {
                kind: key.kind.clone(),
                target: key.target(),
                source: Box::new(e),
            })?;
        Ok(live.and_then(|l| serde_json::to_value(l).ok()))
    }
}

/// Writes one object as `write` says (dry-run: the API server checks, nothing is stored).
async fn write_object(
    api: &Api<DynamicObject>,
    key: &ObjectKey,
    obj: &Value,
    write: &Write,
    dry_run: bool,
) -> Result<Option<Value>, kube::Error> {
    let mut apply = PatchParams::apply(names::FIELD_MANAGER).force();
    apply.dry_run = dry_run;
    let post = PostParams {
        dry_run,
        field_manager: Some(names::FIELD_MANAGER.into()),
    };
    let answer = match write {
        Write::Apply => api.patch(&key.name, &apply, &Patch::Apply(obj)).await?,
        Write::Replace(resource_version) => {
            let mut whole = obj.clone();
            whole["metadata"]["resourceVersion"] = resource_version.clone().into();
            let whole: DynamicObject =
                serde_json::from_value(whole).map_err(kube::Error::SerdeError)?;
            api.replace(&key.name, &post, &whole).await?
        }
        // A recreate cannot be dry-run as one step: the delete is the point of it.
        Write::Recreate if dry_run => return Ok(None),
        Write::Recreate => {
            match api.delete(&key.name, &DeleteParams::foreground()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
            for _ in 0..150 {
                if api.get_opt(&key.name).await?.is_none() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            api.patch(&key.name, &apply, &Patch::Apply(obj)).await?
        }
        Write::Share(sharers) => {
            let merge = PatchParams {
                dry_run,
                ..Default::default()
            };
            let patch = serde_json::json!({"metadata": {"annotations": {sharing::ANNOTATION_SHARED_BY: sharers}}});
            api.patch(&key.name, &merge, &Patch::Merge(&patch)).await?
        }
    };
    Ok(match dry_run {
        true => None,
        false => serde_json::to_value(answer).ok(),
    })
}

/// How many of the pending writes, from the first, need no dry run before anything is written:
/// the first, unless it is a recreate (whose delete cannot be undone) — then every one is checked.
fn unchecked_first<T>(pending: &[(ObjectKey, T, Value, Write)]) -> usize {
    match pending.first() {
        Some((_, _, _, Write::Recreate)) | None => 0,
        Some(_) => 1,
    }
}

/// How the API server's answer to an apply of an ill-typed object begins.
const TYPED_PATCH_FAILED: &str = "failed to create typed patch object";

fn classify(
    identity: Identity,
    verb: &'static str,
    key: &ObjectKey,
    err: kube::Error,
) -> ApplyError {
    match err {
        kube::Error::Api(s) if s.code == 403 => ApplyError::Forbidden {
            who: identity.describe().0,
            verb,
            kind: format!("{} {}", key.api_version, key.kind),
            target: key.target(),
            // The API server's reason, then what to change so the write is allowed.
            message: format!("{}. {}", s.message, identity.describe().1),
        },
        kube::Error::Api(s)
            if s.code == 422
                || s.code == 400
                // Server-side apply answers a field of the wrong type (a number for a string) with
                // a 500, although retrying cannot help: the object itself is invalid.
                || (s.code == 500 && s.message.starts_with(TYPED_PATCH_FAILED)) =>
        {
            ApplyError::Invalid {
                kind: key.kind.clone(),
                target: key.target(),
                message: s.message,
            }
        }
        kube::Error::Api(s) if s.code == 404 && s.message.contains("namespaces") => {
            ApplyError::Invalid {
                kind: key.kind.clone(),
                target: key.target(),
                message: s.message,
            }
        }
        other => ApplyError::Api {
            kind: key.kind.clone(),
            target: key.target(),
            source: Box::new(other),
        },
    }
}

/// True when every field of `desired` holds in `live`: maps by key (extra live keys are defaults or
/// other managers' fields), lists element-wise with equal length, scalars by value (numbers compared
/// numerically, and a number equal to its string form, as the API server normalises some fields).
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_subset(dv, lv),
            None => {
                dv.is_null()
                    || dv.as_object().is_some_and(|o| o.is_empty())
                    || dv.as_array().is_some_and(|a| a.is_empty())
            }
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (Value::Number(d), Value::String(l)) | (Value::String(l), Value::Number(d)) => {
            d.to_string() == *l
        }
        (d, l) => d == l,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_defaults_but_sees_drift() {
        let desired = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        let live = json!({"spec": {"replicas": 3, "revisionHistoryLimit": 10,
            "template": {"spec": {"containers": [{"name": "a", "image": "x:1", "imagePullPolicy": "IfNotPresent"}]}}}});
        assert!(is_subset(&desired, &live));
        let drifted = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        assert!(!is_subset(&desired, &drifted));
        let extra_container = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b"}]}}}});
        assert!(!is_subset(&desired, &extra_container));
    }

    #[test]
    fn missing_labels_are_drift_but_empty_desired_fields_are_not() {
        assert!(!is_subset(
            &json!({"metadata": {"labels": {"a": "1"}}}),
            &json!({"metadata": {}})
        ));
        assert!(is_subset(
            &json!({"metadata": {"annotations": {}}}),
            &json!({"metadata": {}})
        ));
        assert!(is_subset(&json!({"port": 80}), &json!({"port": 80.0})));
    }

    #[test]
    fn applier_defaults_and_annotation() {
        assert_eq!(
            Applier::applier_user("team", None),
            "system:serviceaccount:team:oam-trust-applier"
        );
        let ann = [(APPLIER_ANNOTATION.to_string(), "deployer".to_string())].into();
        assert_eq!(
            Applier::applier_user("team", Some(&ann)),
            "system:serviceaccount:team:deployer"
        );
    }

    #[test]
    fn object_keys_split_group_and_version() {
        let k = ObjectKey::of(
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "n"}}),
        );
        assert_eq!(k.gvk(), GroupVersionKind::gvk("apps", "v1", "Deployment"));
        let core = ObjectKey::of(
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}}),
        );
        assert_eq!(core.gvk(), GroupVersionKind::gvk("", "v1", "Service"));
    }
}
