//! ApplicationRevisions: what an Application was, recorded once per change, so `oam-trust rollback`
//! can restore it.
//!
//! A revision (`<app>-v<N>`, owned by the Application) records the spec and the definitions it
//! rendered with: those visible in the Application's namespace whose names its components, traits,
//! policies and override policies use as types, each as `apiVersion`, `kind`, `metadata.name`,
//! `metadata.namespace` and `spec` (what rendering reads; server fields would make every status
//! update of a definition a change). Its hash is the sha256 of the canonical JSON of both.
//!
//! Invariants:
//! - an unchanged Application (same spec, same definitions) writes nothing: the hash in
//!   `status.latestRevision` decides without a request;
//! - a change creates `<app>-v<N+1>`, N the highest existing, unless the newest one already records
//!   it (a reconcile that created it but did not get to write the status, or whose status waits for
//!   starting workloads: [`Recent`] remembers it without a request, a new process finds it by name);
//! - beyond `--revision-limit`, the oldest go; never the one just recorded, the one the status named
//!   before (still deployed until this change is applied), nor the one the workflow deployed last;
//! - while the Application carries `oam-trust.dev/rollback-revision: "<N>"` and its spec equals
//!   revision N's, it renders with the definitions N recorded (a type N did not record renders as a
//!   built-in), so a definition changed since does not change what a rollback restores. Once the
//!   spec differs, the annotation is ignored.
//!
//! The pure parts (content, hash, retention, the recorded catalog) take plain data; [`pin_definitions`]
//! and [`record`] are the reconcile's two requests-making steps, around `build`.
use std::collections::{BTreeMap, BTreeSet};

use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::access::{DefinitionCatalog, World};
use crate::api::oam::{
    Application, ApplicationSpec, ComponentDefinition, DefinitionRevisionRef, PolicyDefinition,
    TraitDefinition, WorkloadDefinition,
};
use crate::api::revision::{
    ApplicationRevision, ApplicationRevisionSpec, RevisionApplication, RevisionMetadata,
};
use crate::names;

/// Hex digits of the sha256 kept as the revision hash: a label value holds at most 63 characters.
const HASH_HEX_DIGITS: usize = 32;
/// Annotation not copied into a revision's metadata: a second copy of the Application.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What a revision records besides its number.
#[derive(Clone, Debug, PartialEq)]
pub struct Content {
    pub spec: ApplicationSpec,
    pub component_definitions: BTreeMap<String, Value>,
    pub trait_definitions: BTreeMap<String, Value>,
    pub policy_definitions: BTreeMap<String, Value>,
    pub workload_definitions: BTreeMap<String, Value>,
    /// [`HASH_HEX_DIGITS`] hex digits of the sha256 of all the above, canonical JSON.
    pub hash: String,
}

/// The type names a spec renders with (gitlab-access is no definition of rendering).
#[derive(Default)]
struct UsedTypes {
    components: BTreeSet<String>,
    traits: BTreeSet<String>,
    policies: BTreeSet<String>,
}

impl UsedTypes {
    fn of(spec: &ApplicationSpec) -> Self {
        let mut used = UsedTypes::default();
        for c in &spec.components {
            used.components.insert(c.type_.clone());
            used.traits.extend(c.traits.iter().map(|t| t.type_.clone()));
        }
        for p in &spec.policies {
            used.policies.insert(p.type_.clone());
            if p.type_ != "override" {
                continue;
            }
            // An override may give a component another type, or add traits.
            let patches = p
                .properties
                .as_ref()
                .and_then(|v| v["components"].as_array());
            for patch in patches.into_iter().flatten() {
                if let Some(t) = patch["type"].as_str() {
                    used.components.insert(t.to_string());
                }
                let traits = patch["traits"].as_array().into_iter().flatten();
                used.traits
                    .extend(traits.filter_map(|t| t["type"].as_str().map(str::to_string)));
            }
        }
        for set in [&mut used.components, &mut used.traits, &mut used.policies] {
            set.remove(names::GITLAB_ACCESS);
        }
        used
    }
}

/// A definition as a revision records it: what rendering reads of it.
fn recorded<K>(definition: &K) -> Value
where
    K: Resource<DynamicType = ()> + serde::Serialize,
{
    let full = serde_json::to_value(definition).unwrap_or(Value::Null);
    json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": full["metadata"]["name"], "namespace": full["metadata"]["namespace"]},
        "spec": full["spec"],
    })
}

/// What `app` records when it renders with `catalog` (the cluster's, or a rollback's recorded one).
pub fn content(app: &Application, catalog: &DefinitionCatalog) -> Content {
    let defs = catalog.visible_in(names::namespace_of(app));
    let used = UsedTypes::of(&app.spec);
    fn pick<'a, K: Resource<DynamicType = ()> + serde::Serialize + 'a>(
        names: &BTreeSet<String>,
        get: impl Fn(&str) -> Option<&'a K>,
    ) -> BTreeMap<String, Value> {
        names
            .iter()
            .filter_map(|n| Some((n.clone(), recorded(get(n)?))))
            .collect()
    }
    let component_definitions =
        pick::<ComponentDefinition>(&used.components, |n| defs.component(n));
    let trait_definitions = pick::<TraitDefinition>(&used.traits, |n| defs.trait_(n));
    let policy_definitions = pick::<PolicyDefinition>(&used.policies, |n| defs.policy(n));
    // A component type without a ComponentDefinition falls back to a WorkloadDefinition.
    let workload_definitions = pick::<WorkloadDefinition>(&used.components, |n| {
        defs.component(n)
            .is_none()
            .then(|| defs.workload(n))
            .flatten()
    });
    let hashed = json!({
        "spec": app.spec,
        "componentDefinitions": component_definitions,
        "traitDefinitions": trait_definitions,
        "policyDefinitions": policy_definitions,
        "workloadDefinitions": workload_definitions,
    });
    let mut text = String::new();
    canonical_json(&hashed, &mut text);
    let digest = Sha256::digest(text.as_bytes());
    let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Content {
        spec: app.spec.clone(),
        component_definitions,
        trait_definitions,
        policy_definitions,
        workload_definitions,
        hash: hash[..HASH_HEX_DIGITS].to_string(),
    }
}

/// JSON with object keys sorted at every level, whatever order the maps keep.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                canonical_json(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The catalog a rollback renders with: the definitions `revision` recorded, nothing else. A
/// recorded definition that no longer parses is left out (and logged): its type then renders as a
/// built-in or fails as unknown, which the status reports.
pub fn recorded_catalog(
    revision: &ApplicationRevision,
    system_namespace: &str,
) -> DefinitionCatalog {
    let mut catalog = DefinitionCatalog::new(system_namespace);
    let spec = &revision.spec;
    let all = spec
        .component_definitions
        .values()
        .chain(spec.trait_definitions.values())
        .chain(spec.policy_definitions.values())
        .chain(spec.workload_definitions.values());
    for doc in all {
        if let Err(e) = catalog.insert_document(doc) {
            tracing::warn!(revision = %revision.name_any(), error = %e, "a recorded definition does not parse; left out");
        }
    }
    catalog
}

/// N of the `oam-trust.dev/rollback-revision` annotation, when it holds a revision number.
pub fn rollback_target(app: &Application) -> Option<i64> {
    app.annotations()
        .get(names::ANNOTATION_ROLLBACK_REVISION)?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

/// Names of the revisions to delete: the oldest beyond `limit`, skipping `protected` (which count
/// towards the limit while they are kept).
pub fn beyond_limit(
    revisions: &[(i64, String)],
    limit: usize,
    protected: &BTreeSet<String>,
) -> Vec<String> {
    let mut sorted = revisions.to_vec();
    sorted.sort();
    let excess = sorted.len().saturating_sub(limit);
    sorted
        .into_iter()
        .filter(|(_, name)| !protected.contains(name))
        .take(excess)
        .map(|(_, name)| name)
        .collect()
}

/// The revisions retention never deletes: the one just recorded, the one the status named so far
/// (what runs until the new one is applied) and the one the workflow deployed last.
fn protected(app: &Application, latest: &str) -> BTreeSet<String> {
    let status = app.status.as_ref();
    [
        Some(latest.to_string()),
        status.and_then(|s| s.latest_revision.as_ref().map(|r| r.name.clone())),
        status.and_then(|s| s.workflow.as_ref()?.app_revision.clone()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn owned_by(revision: &ApplicationRevision, app: &Application) -> bool {
    let uid = app.metadata.uid.as_deref();
    uid.is_some()
        && revision
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

fn reference_of(revision: &ApplicationRevision) -> DefinitionRevisionRef {
    DefinitionRevisionRef {
        name: revision.name_any(),
        revision: revision.spec.revision,
        revision_hash: Some(revision.spec.revision_hash.clone()),
    }
}

/// Revision `n` of `app` recording `content`.
pub fn revision_object(app: &Application, n: i64, content: Content) -> ApplicationRevision {
    let name = app.name_any();
    let mut revision = ApplicationRevision::new(
        &names::revision_name(&name, n),
        ApplicationRevisionSpec {
            application: RevisionApplication {
                metadata: RevisionMetadata {
                    name: name.clone(),
                    namespace: names::namespace_of(app).to_string(),
                    labels: app.labels().clone(),
                    annotations: app
                        .annotations()
                        .iter()
                        .filter(|(k, _)| k.as_str() != LAST_APPLIED)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                },
                spec: content.spec,
            },
            revision: n,
            revision_hash: content.hash.clone(),
            component_definitions: content.component_definitions,
            trait_definitions: content.trait_definitions,
            policy_definitions: content.policy_definitions,
            workload_definitions: content.workload_definitions,
        },
    );
    revision.metadata.namespace = Some(names::namespace_of(app).to_string());
    revision.metadata.labels = Some(BTreeMap::from([
        (names::LABEL_APP_NAME.to_string(), name),
        (names::LABEL_APP_REVISION_HASH.to_string(), content.hash),
    ]));
    // Owned, so the garbage collector deletes it with the Application; without
    // blockOwnerDeletion, which needs `update` on applications/finalizers where
    // OwnerReferencesPermissionEnforcement is on, and the controller only patches Applications.
    revision.metadata.owner_references = app.controller_reference().map(|mut owner| {
        owner.block_owner_deletion = None;
        vec![owner]
    });
    revision
}

/// Before `build`: while a rollback holds (annotation, and the spec equals that revision's), the
/// world's definitions become the ones the revision recorded. One read per reconcile of such an
/// Application, none for any other.
pub async fn pin_definitions(
    client: &Client,
    app: &Application,
    world: &mut World,
) -> Result<(), kube::Error> {
    let Some(n) = rollback_target(app) else {
        return Ok(());
    };
    let revisions: Api<ApplicationRevision> =
        Api::namespaced(client.clone(), names::namespace_of(app));
    let name = names::revision_name(&app.name_any(), n);
    match revisions.get_opt(&name).await? {
        Some(revision)
            if owned_by(&revision, app) && revision.spec.application.spec == app.spec =>
        {
            world.definitions = recorded_catalog(&revision, &world.definitions.system_namespace);
        }
        Some(_) => {}
        None => {
            tracing::info!(app = %app.name_any(), revision = %name, "the rollback's revision is gone; rendering with the cluster's definitions");
        }
    }
    Ok(())
}

/// The revisions this process created that their Application's status does not name yet (it waits
/// while the new generation's workloads start): the next reconcile takes them from here, with no
/// request, instead of trying the same name again. Keyed by the Application's uid; an entry goes
/// once the status names its revision, or [`Recent::TTL`] after it was made (an Application deleted
/// meanwhile, a status write failing for long: then the name is read again, below).
#[derive(Default)]
pub struct Recent(
    std::sync::Mutex<
        std::collections::HashMap<String, (DefinitionRevisionRef, std::time::Instant)>,
    >,
);

impl Recent {
    /// Far longer than a status waits (`health::STARTING`).
    const TTL: std::time::Duration = std::time::Duration::from_secs(600);

    fn entries(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, (DefinitionRevisionRef, std::time::Instant)>,
    > {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn remember(&self, app: &Application, recorded: &DefinitionRevisionRef) {
        self.remember_at(app, recorded, std::time::Instant::now());
    }
    fn remember_at(
        &self,
        app: &Application,
        recorded: &DefinitionRevisionRef,
        now: std::time::Instant,
    ) {
        let Some(uid) = &app.metadata.uid else {
            return;
        };
        let mut entries = self.entries();
        entries.retain(|_, (_, made)| now.duration_since(*made) < Self::TTL);
        entries.insert(uid.clone(), (recorded.clone(), now));
    }
    fn forget(&self, app: &Application) {
        if let Some(uid) = &app.metadata.uid {
            self.entries().remove(uid);
        }
    }
    fn recorded(&self, app: &Application, hash: &str) -> Option<DefinitionRevisionRef> {
        self.recorded_at(app, hash, std::time::Instant::now())
    }
    fn recorded_at(
        &self,
        app: &Application,
        hash: &str,
        now: std::time::Instant,
    ) -> Option<DefinitionRevisionRef> {
        let uid = app.metadata.uid.as_ref()?;
        self.entries()
            .get(uid)
            .filter(|(r, made)| {
                r.revision_hash.as_deref() == Some(hash) && now.duration_since(*made) < Self::TTL
            })
            .map(|(r, _)| r.clone())
    }
}

/// After `build` rendered: the revision that records what `app` renders with `world`, created when
/// it is new (then retention runs). Returns what `status.latestRevision` names.
pub async fn record(
    client: &Client,
    app: &Application,
    world: &World,
    limit: usize,
    recent: &Recent,
) -> Result<DefinitionRevisionRef, kube::Error> {
    let content = content(app, &world.definitions);
    let latest = app.status.as_ref().and_then(|s| s.latest_revision.as_ref());
    if let Some(latest) = latest
        && latest.revision_hash.as_deref() == Some(content.hash.as_str())
    {
        recent.forget(app);
        return Ok(latest.clone());
    }
    if let Some(recorded) = recent.recorded(app, &content.hash) {
        return Ok(recorded);
    }
    let recorded = create_or_find(client, app, content, latest, limit).await?;
    recent.remember(app, &recorded);
    Ok(recorded)
}

/// The revision recording `content` for `app`, whose status names `latest`: created, or found
/// already made (by an earlier reconcile whose status is not written).
async fn create_or_find(
    client: &Client,
    app: &Application,
    content: Content,
    latest: Option<&DefinitionRevisionRef>,
    limit: usize,
) -> Result<DefinitionRevisionRef, kube::Error> {
    let name = app.name_any();
    let api: Api<ApplicationRevision> = Api::namespaced(client.clone(), names::namespace_of(app));
    let params = PostParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    };
    // The next number after the one the status names, created at once: no list of every revision
    // of the namespace (a label-selected list is read from etcd in full, per Application). While
    // the number is within the limit nothing can be beyond it. A name already taken is read: it is
    // this content when an earlier reconcile (of another process) created it and the status does
    // not say so yet. Otherwise (a deleted namesake's revisions not yet collected, a revision
    // deleted by hand) the list decides.
    let next = latest.map_or(1, |l| l.revision + 1);
    if usize::try_from(next).is_ok_and(|n| n <= limit) {
        match api
            .create(&params, &revision_object(app, next, content.clone()))
            .await
        {
            Ok(created) => {
                tracing::info!(app = %name, revision = %created.name_any(), "recorded a new ApplicationRevision");
                return Ok(reference_of(&created));
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                if let Some(taken) = api.get_opt(&names::revision_name(&name, next)).await?
                    && owned_by(&taken, app)
                    && taken.spec.revision_hash == content.hash
                {
                    return Ok(reference_of(&taken));
                }
            }
            Err(e) => return Err(e),
        }
    }
    let listed = api
        .list(&ListParams::default().labels(&format!("{}={name}", names::LABEL_APP_NAME)))
        .await?
        .items;
    // Every name taken counts, also a deleted Application's revisions the collector has yet to remove.
    let highest = listed
        .iter()
        .filter(|r| r.name_any() == names::revision_name(&name, r.spec.revision))
        .map(|r| r.spec.revision)
        .max()
        .unwrap_or(0);
    let mut owned: Vec<&ApplicationRevision> = listed.iter().filter(|r| owned_by(r, app)).collect();
    owned.sort_by_key(|r| r.spec.revision);
    if let Some(newest) = owned.last()
        && newest.spec.revision_hash == content.hash
    {
        return Ok(reference_of(newest));
    }
    let created = api
        .create(&params, &revision_object(app, highest + 1, content))
        .await?;
    tracing::info!(app = %name, revision = %created.name_any(), "recorded a new ApplicationRevision");
    let kept: Vec<(i64, String)> = owned
        .iter()
        .map(|r| (r.spec.revision, r.name_any()))
        .chain([(created.spec.revision, created.name_any())])
        .collect();
    for old in beyond_limit(&kept, limit, &protected(app, &created.name_any())) {
        match api.delete(&old, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(reference_of(&created))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(spec: Value) -> Application {
        serde_json::from_value(json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "shop", "namespace": "team", "uid": "u-1"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_revision_created_is_remembered_for_its_application_and_content_until_a_status_names_it() {
        let recent = Recent::default();
        let shop = app(json!({"components": []}));
        let v1 = DefinitionRevisionRef {
            name: "shop-v1".into(),
            revision: 1,
            revision_hash: Some("aaaa".into()),
        };
        recent.remember(&shop, &v1);
        assert_eq!(recent.recorded(&shop, "aaaa"), Some(v1.clone()));
        assert_eq!(recent.recorded(&shop, "bbbb"), None, "other content");
        let mut namesake = shop.clone();
        namesake.metadata.uid = Some("u-2".into());
        assert_eq!(
            recent.recorded(&namesake, "aaaa"),
            None,
            "a namesake created anew"
        );
        recent.forget(&shop);
        assert_eq!(recent.recorded(&shop, "aaaa"), None);
        // Old entries go when the next is made.
        let t0 = std::time::Instant::now();
        recent.remember_at(&shop, &v1, t0);
        let later = t0 + Recent::TTL;
        assert_eq!(recent.recorded_at(&shop, "aaaa", later), None, "expired");
        recent.remember_at(&namesake, &v1, later);
        assert_eq!(recent.entries().len(), 1);
    }

    fn greeting(namespace: &str, text: &str) -> Value {
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "ComponentDefinition",
               "metadata": {"name": "greeting", "namespace": namespace, "resourceVersion": "7",
                            "uid": "d-1", "annotations": {"note": "x"}},
               "spec": {"workload": {"definition": {"apiVersion": "v1", "kind": "ConfigMap"}},
                        "schematic": {"kube": {"template": {"apiVersion": "v1", "kind": "ConfigMap",
                                                            "data": {"text": text}}}}},
               "status": {"latestRevision": {"name": "greeting-v3", "revision": 3}}})
    }

    fn catalog(docs: &[Value]) -> DefinitionCatalog {
        let mut catalog = DefinitionCatalog::new("vela-system");
        for doc in docs {
            assert!(catalog.insert_document(doc).unwrap());
        }
        catalog
    }

    fn web(image: &str) -> Value {
        json!({"components": [{"name": "web", "type": "webservice", "properties": {"image": image}}]})
    }

    #[test]
    fn records_only_the_definitions_the_spec_uses_with_what_rendering_reads() {
        let spec = json!({"components": [
            {"name": "card", "type": "greeting", "traits": [{"type": "scaler"}, {"type": "gitlab-access"}]},
            {"name": "web", "type": "webservice"}]});
        let unused = json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "TraitDefinition",
                            "metadata": {"name": "unused", "namespace": "team"}, "spec": {}});
        let content = content(&app(spec), &catalog(&[greeting("team", "hello"), unused]));
        assert_eq!(
            content.component_definitions,
            BTreeMap::from([(
                "greeting".to_string(),
                json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "ComponentDefinition",
                       "metadata": {"name": "greeting", "namespace": "team"},
                       "spec": {"workload": {"definition": {"apiVersion": "v1", "kind": "ConfigMap"}},
                                "schematic": {"kube": {"template": {"apiVersion": "v1", "kind": "ConfigMap",
                                                                    "data": {"text": "hello"}}}}}})
            )])
        );
        assert!(content.trait_definitions.is_empty());
        assert!(content.policy_definitions.is_empty());
        assert_eq!(content.hash.len(), HASH_HEX_DIGITS);
        assert!(content.hash.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn an_override_policys_types_are_recorded_too() {
        let spec = json!({"components": [{"name": "web", "type": "webservice"}],
            "policies": [{"name": "o", "type": "override", "properties": {"components": [
                {"name": "web", "type": "greeting"}]}}]});
        let content = content(&app(spec), &catalog(&[greeting("vela-system", "hi")]));
        assert_eq!(
            content.component_definitions.keys().collect::<Vec<_>>(),
            ["greeting"]
        );
    }

    #[test]
    fn the_hash_changes_with_the_spec_and_a_used_definition_only() {
        let defs = catalog(&[greeting("team", "hello")]);
        let with = |spec: Value, defs: &DefinitionCatalog| content(&app(spec), defs).hash;
        let card = json!({"components": [{"name": "card", "type": "greeting"}]});
        let base = with(card.clone(), &defs);
        assert_eq!(base, with(card.clone(), &defs), "deterministic");
        assert_ne!(base, with(web("nginx"), &defs), "another spec");
        assert_ne!(
            base,
            with(card.clone(), &catalog(&[greeting("team", "bye")])),
            "the definition changed"
        );
        // Server fields and status of a definition are not what it renders with.
        let mut touched = greeting("team", "hello");
        touched["metadata"]["resourceVersion"] = json!("8");
        touched["status"] = json!({});
        assert_eq!(base, with(card, &catalog(&[touched])));
        // An unused definition changes nothing.
        assert_eq!(
            with(web("nginx"), &defs),
            with(web("nginx"), &DefinitionCatalog::new("vela-system"))
        );
    }

    #[test]
    fn the_hash_does_not_depend_on_key_order() {
        let a = app(json!({"components": [{"name": "web", "type": "webservice",
                                           "properties": {"image": "nginx", "cpu": "1"}}]}));
        let b = app(
            json!({"components": [{"properties": {"cpu": "1", "image": "nginx"},
                                           "type": "webservice", "name": "web"}]}),
        );
        let defs = DefinitionCatalog::new("vela-system");
        assert_eq!(content(&a, &defs).hash, content(&b, &defs).hash);
        let mut text = String::new();
        canonical_json(&json!({"b": [1, {"d": 1, "c": "x"}], "a": null}), &mut text);
        assert_eq!(text, r#"{"a":null,"b":[1,{"c":"x","d":1}]}"#);
    }

    #[test]
    fn a_revision_is_named_numbered_labelled_and_owned() {
        let app = app(web("nginx"));
        let content = content(&app, &DefinitionCatalog::new("vela-system"));
        let hash = content.hash.clone();
        let revision = revision_object(&app, 3, content);
        assert_eq!(revision.name_any(), "shop-v3");
        assert_eq!(revision.namespace().as_deref(), Some("team"));
        assert_eq!(revision.spec.revision, 3);
        assert_eq!(revision.spec.application.spec, app.spec);
        assert_eq!(
            revision.labels(),
            &BTreeMap::from([
                ("app.oam.dev/name".to_string(), "shop".to_string()),
                ("app.oam.dev/app-revision-hash".to_string(), hash),
            ])
        );
        let owners = revision.owner_references();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (
                owners[0].kind.as_str(),
                owners[0].uid.as_str(),
                owners[0].controller
            ),
            ("Application", "u-1", Some(true))
        );
        assert!(owned_by(&revision, &app));
    }

    #[test]
    fn a_recorded_catalog_renders_what_the_revision_recorded_and_nothing_else() {
        let app = app(json!({"components": [{"name": "card", "type": "greeting"}]}));
        let recorded = content(&app, &catalog(&[greeting("team", "hello")]));
        let revision = revision_object(&app, 1, recorded.clone());
        let pinned = recorded_catalog(&revision, "vela-system");
        // Recording again from the recorded catalog gives the same revision: a rollback's new
        // revision has the hash of the one it restored.
        assert_eq!(content(&app, &pinned), recorded);
        let rendered = crate::render::render_application(&app, &pinned.visible_in("team")).unwrap();
        assert_eq!(rendered[0].object["data"]["text"], "hello");
        // A type it did not record is a built-in (or unknown), never the cluster's current one.
        let empty = revision_object(
            &app,
            2,
            content(&app, &DefinitionCatalog::new("vela-system")),
        );
        assert!(
            crate::render::render_application(
                &app,
                &recorded_catalog(&empty, "vela-system").visible_in("team")
            )
            .is_err()
        );
    }

    #[test]
    fn the_rollback_annotation_holds_a_revision_number() {
        let mut a = app(web("nginx"));
        assert_eq!(rollback_target(&a), None);
        for (value, want) in [
            ("2", Some(2)),
            ("0", None),
            ("-1", None),
            ("v2", None),
            ("", None),
        ] {
            a.metadata.annotations = Some(BTreeMap::from([(
                names::ANNOTATION_ROLLBACK_REVISION.to_string(),
                value.to_string(),
            )]));
            assert_eq!(rollback_target(&a), want, "{value:?}");
        }
    }

    #[test]
    fn retention_deletes_the_oldest_beyond_the_limit_but_never_a_protected_one() {
        let revisions: Vec<(i64, String)> = (1..=5).map(|n| (n, format!("shop-v{n}"))).collect();
        let none = BTreeSet::new();
        assert_eq!(beyond_limit(&revisions, 10, &none), Vec::<String>::new());
        assert_eq!(beyond_limit(&revisions, 3, &none), ["shop-v1", "shop-v2"]);
        // Numbers, not names, order them (v10 is newer than v9).
        let many: Vec<(i64, String)> = (8..=11).rev().map(|n| (n, format!("shop-v{n}"))).collect();
        assert_eq!(beyond_limit(&many, 2, &none), ["shop-v8", "shop-v9"]);
        // The deployed v1 stays and counts: v2 and v3 go instead, three remain.
        let deployed = BTreeSet::from(["shop-v1".to_string(), "shop-v5".to_string()]);
        assert_eq!(
            beyond_limit(&revisions, 3, &deployed),
            ["shop-v2", "shop-v3"]
        );
        // Protected ones are kept even when only they remain over the limit.
        let all: BTreeSet<String> = revisions.iter().map(|(_, n)| n.clone()).collect();
        assert_eq!(beyond_limit(&revisions, 1, &all), Vec::<String>::new());
    }

    #[test]
    fn retention_protects_the_new_the_previous_and_the_workflows_revision() {
        let mut a = app(web("nginx"));
        a.status = Some(
            serde_json::from_value(json!({
                "latestRevision": {"name": "shop-v4", "revision": 4, "revisionHash": "x"},
                "workflow": {"appRevision": "shop-v2"}
            }))
            .unwrap(),
        );
        assert_eq!(
            protected(&a, "shop-v5"),
            BTreeSet::from(["shop-v2", "shop-v4", "shop-v5"].map(String::from))
        );
        assert_eq!(
            protected(&app(web("nginx")), "shop-v1"),
            BTreeSet::from(["shop-v1".to_string()])
        );
    }
}
