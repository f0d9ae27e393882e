//! PURE: Application + definitions -> desired Kubernetes objects. No client, no async, no IO.
//!
//! The output contract (`RenderedObject`) is shared with `access/` (grants are scoped to these
//! objects' names) and `controller/` (which applies and prunes them). Rendering is deterministic:
//! the same input gives the same objects in the same order (component order, then kind and name).
//! Nothing here panics on input: malformed properties of any shape are a `RenderError`.
mod component;
mod definition;
mod error;
mod json_patch;
mod kube;
mod params;
mod pod;
mod policy;
mod reference;
mod trait_;
pub mod workflow;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use definition::{
    Definitions, builtin_component_types, builtin_policy_types, builtin_trait_types,
};
pub use error::RenderError;
pub use policy::{
    ApplyOnce, ApplyOnceRule, GarbageCollectRule, GcStrategy, ObjectPolicy, ResourcePolicies,
    ResourceUpdateRule, RuleSelector,
};
pub use reference::{ObjectReference, Referenced, Target, cleaned, references};

use crate::api::oam::{Application, ApplicationComponent};
use crate::names::{
    AUXILIARY_WORKLOAD, GITLAB_ACCESS, LABEL_APP_COMPONENT, LABEL_APP_NAME, LABEL_APP_NAMESPACE,
    LABEL_MANAGED_BY, LABEL_RESOURCE_TYPE, LABEL_TRAIT_RESOURCE, LABEL_TRAIT_TYPE,
    LABEL_WORKLOAD_TYPE, MANAGED_BY, RESOURCE_TYPE_TRAIT, RESOURCE_TYPE_WORKLOAD,
};

/// One desired object, with the component (if any) it was rendered for.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedObject {
    /// Component name; `None` for objects a policy produced for the whole Application.
    pub component: Option<String>,
    /// The full object (apiVersion, kind, metadata, spec …), labels already set.
    pub object: Value,
}

impl RenderedObject {
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }
}

/// Something KubeVela accepts silently that the user most likely wants to know about: a property
/// the definition does not declare (ignored), or a trait on a workload its `appliesToWorkloads`
/// does not list (applied anyway). Never a reason to refuse the Application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderWarning {
    /// A bounded category for condition reasons and Event reasons: `UndeclaredParameter` or
    /// `TraitNotApplicable`.
    pub reason: &'static str,
    /// `component "api": trait "scaler"`: where the problem is.
    pub scope: String,
    pub message: String,
}

impl RenderWarning {
    pub(crate) fn undeclared(scope: &str, field: &str) -> Self {
        Self {
            reason: "UndeclaredParameter",
            scope: scope.to_string(),
            message: format!("field {field:?} is not declared by the definition and was ignored"),
        }
    }
}

impl std::fmt::Display for RenderWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.scope, self.message)
    }
}

/// Everything one render produces: the objects, the warnings, and the resource policies
/// (`garbage-collect`, `apply-once`, …) the applier must honour for those objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rendering {
    pub objects: Vec<RenderedObject>,
    pub warnings: Vec<RenderWarning>,
    pub policies: ResourcePolicies,
    /// Component name -> component type after overrides (what `componentTypes` selectors match).
    pub component_types: BTreeMap<String, String>,
    /// The Application's workflow (`None`: the default workflow, which applies every object).
    pub workflow: Option<workflow::Workflow>,
    /// Per object (in the order of `objects`): the workflow step that applies it (`None` for the
    /// default workflow). Two steps that render the same object (a canary and then the full
    /// rollout, in one namespace) each get their own copy: a step applies its own content.
    pub object_steps: Vec<Option<String>>,
}

/// What a component's templates may read (KubeVela's `context.*`).
pub(crate) struct ComponentContext<'a> {
    pub app_name: &'a str,
    /// The namespace objects are rendered into (the Application's, or a topology policy's).
    pub namespace: &'a str,
    pub component: &'a str,
    /// `component "api"`: the prefix of every error about this component.
    pub scope: String,
}

/// Renders `app` against the built-ins and `defs`. The Application's namespace is
/// `metadata.namespace` (default `default`); ownerReferences are left to the controller.
/// The objects only; `render` also returns warnings and resource policies.
pub fn render_application(
    app: &Application,
    defs: &Definitions,
) -> Result<Vec<RenderedObject>, RenderError> {
    render(app, defs).map(|r| r.objects)
}

/// Renders `app` and reports what it ignored (`warnings`) and the resource policies it declares.
pub fn render(app: &Application, defs: &Definitions) -> Result<Rendering, RenderError> {
    let (result, warnings) = params::collect_warnings(|| render_objects(app, defs));
    let parts = result?;
    Ok(Rendering {
        objects: parts.objects,
        warnings,
        policies: parts.policies,
        component_types: parts.component_types,
        workflow: workflow::parse(app.spec.workflow.as_ref())?,
        object_steps: parts.object_steps,
    })
}

struct RenderedParts {
    objects: Vec<RenderedObject>,
    policies: ResourcePolicies,
    component_types: BTreeMap<String, String>,
    object_steps: Vec<Option<String>>,
}

fn render_objects(app: &Application, defs: &Definitions) -> Result<RenderedParts, RenderError> {
    let app_name = app
        .metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| RenderError::InvalidApplication {
            scope: "application".to_string(),
            message: "metadata.name is required".to_string(),
        })?;
    let app_namespace = app
        .metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    for (i, c) in app.spec.components.iter().enumerate() {
        if c.name.is_empty() {
            return Err(RenderError::InvalidApplication {
                scope: format!("spec.components[{i}]"),
                message: "component name is required".to_string(),
            });
        }
        if app.spec.components[..i].iter().any(|o| o.name == c.name) {
            return Err(RenderError::InvalidApplication {
                scope: format!("component {:?}", c.name),
                message: "component name is used twice".to_string(),
            });
        }
    }
    let common = CommonMetadata::of(app, app_name, app_namespace);
    let (placements, resource_policies) = policy::plan(app, defs, app_namespace)?;
    let mut component_types = BTreeMap::new();

    struct Entry {
        order: usize,
        placement: usize,
        object: RenderedObject,
        step: Option<String>,
    }
    type Key = (Option<String>, (String, String, String, String));
    let mut objects: BTreeMap<Key, Entry> = BTreeMap::new();
    for (placement_index, placement) in placements.iter().enumerate() {
        let components = policy::apply_overrides(&app.spec.components, &placement.overrides)?;
        for (position, component) in components.iter().enumerate() {
            if placement
                .component
                .as_ref()
                .is_some_and(|only| *only != component.name)
            {
                continue;
            }
            let order = app
                .spec
                .components
                .iter()
                .position(|c| c.name == component.name)
                .unwrap_or(app.spec.components.len() + position);
            component_types.insert(component.name.clone(), component.type_.clone());
            for object in render_component(&common, component, placement, defs)? {
                let key = (placement.step.clone(), object_key(&object.object));
                if let Some(existing) = objects.get(&key)
                    && existing.placement == placement_index
                {
                    return Err(RenderError::DuplicateObject {
                        scope: format!("component {:?}", component.name),
                        kind: object.kind().to_string(),
                        name: object.name().to_string(),
                        namespace: object.namespace().unwrap_or_default().to_string(),
                        other: match &existing.object.component {
                            Some(c) => format!("component {c:?}"),
                            None => "a policy".to_string(),
                        },
                    });
                }
                // Rendered again by a later placement of the same step: the later one wins.
                objects.insert(
                    key,
                    Entry {
                        order,
                        placement: placement_index,
                        object,
                        step: placement.step.clone(),
                    },
                );
            }
        }
    }
    let mut out: Vec<Entry> = objects.into_values().collect();
    out.sort_by(|a, b| {
        (
            a.order,
            a.object.kind(),
            a.object.name(),
            a.object.namespace(),
        )
            .cmp(&(
                b.order,
                b.object.kind(),
                b.object.name(),
                b.object.namespace(),
            ))
    });
    let object_steps = out.iter().map(|e| e.step.clone()).collect();
    Ok(RenderedParts {
        objects: out.into_iter().map(|e| e.object).collect(),
        policies: resource_policies,
        component_types,
        object_steps,
    })
}

/// Labels and annotations every object of the Application gets.
struct CommonMetadata<'a> {
    app_name: &'a str,
    app_namespace: &'a str,
    /// The Application's own labels and annotations, minus the filtered keys (KubeVela copies them).
    app_labels: Map<String, Value>,
    app_annotations: Map<String, Value>,
    /// Annotation keys removed from every object, its own included (as KubeVela does).
    filtered_annotations: Vec<String>,
}

impl<'a> CommonMetadata<'a> {
    fn of(app: &'a Application, app_name: &'a str, app_namespace: &'a str) -> Self {
        let annotations = app.metadata.annotations.clone().unwrap_or_default();
        let listed = |key: &str| -> Vec<String> {
            annotations
                .get(key)
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default()
        };
        let filtered_labels = listed("filter.oam.dev/label-keys");
        let mut filtered_annotations = listed("filter.oam.dev/annotation-keys");
        filtered_annotations.extend(
            [
                "filter.oam.dev/annotation-keys",
                "filter.oam.dev/label-keys",
                "app.oam.dev/inplace-upgrade",
                "kubectl.kubernetes.io/last-applied-configuration",
            ]
            .map(String::from),
        );
        let app_labels = app
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !filtered_labels.contains(k))
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let app_annotations = annotations
            .iter()
            .filter(|(k, _)| !k.starts_with("filter.oam.dev/") && !filtered_annotations.contains(k))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Self {
            app_name,
            app_namespace,
            app_labels,
            app_annotations,
            filtered_annotations,
        }
    }
}

fn render_component(
    common: &CommonMetadata,
    component: &ApplicationComponent,
    placement: &policy::Placement,
    defs: &Definitions,
) -> Result<Vec<RenderedObject>, RenderError> {
    let namespace = placement.namespace.as_str();
    let scope = format!("component {:?}", component.name);
    let ctx = ComponentContext {
        app_name: common.app_name,
        namespace,
        component: &component.name,
        scope: scope.clone(),
    };
    let type_ = component.type_.as_str();
    if type_.contains('@') {
        return Err(RenderError::InvalidApplication {
            scope,
            message: format!(
                "type {type_:?}: pinned definition revisions (name@vN) are not supported"
            ),
        });
    }
    let properties = component.properties.as_ref();
    let output = match defs.component(type_) {
        // Objects read from the cluster (by the controller), not a template.
        None if type_ == "ref-objects" => {
            reference::render(&ctx, properties, defs.referenced(), common.app_namespace)?
        }
        Some(def) => match def.spec.schematic.as_ref().and_then(|s| s.kube.as_ref()) {
            Some(kube) => kube::render(&ctx, type_, kube, properties)?,
            None => match component::render_builtin(type_, &ctx, properties) {
                Some(result) => result?,
                None => {
                    return Err(RenderError::UnsupportedDefinition {
                        scope,
                        kind: "ComponentDefinition".to_string(),
                        name: type_.to_string(),
                        reason: "it has no kube schematic (cue, helm and terraform schematics are not evaluated)".to_string(),
                    });
                }
            },
        },
        None => match component::render_builtin(type_, &ctx, properties) {
            Some(result) => result?,
            None if defs.workload(type_).is_some() => {
                return Err(RenderError::UnsupportedDefinition {
                    scope,
                    kind: "WorkloadDefinition".to_string(),
                    name: type_.to_string(),
                    reason: "a WorkloadDefinition has no template to render".to_string(),
                });
            }
            None => {
                return Err(RenderError::UnknownComponentType {
                    scope,
                    type_: type_.to_string(),
                });
            }
        },
    };

    // Only ref-objects rendered offline produce nothing (they said so in a warning).
    if output.workload.as_object().is_some_and(Map::is_empty) && output.auxiliaries.is_empty() {
        return Ok(Vec::new());
    }
    let mut workload = output.workload;
    if workload["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        if !workload["metadata"].is_object() {
            workload["metadata"] = Value::Object(Map::new());
        }
        workload["metadata"]["name"] = Value::from(component.name.as_str());
    }
    let resource = workload_resource(&workload);
    let mut trait_objects = Vec::new();
    for t in &component.traits {
        let trait_scope = format!("{scope}: trait {:?}", t.type_);
        if t.type_ == GITLAB_ACCESS {
            continue;
        }
        let Some(applies) = trait_::applies_to(&t.type_) else {
            if let Some(reason) = trait_::unrendered_reason(&t.type_) {
                return Err(RenderError::UnsupportedDefinition {
                    scope: trait_scope,
                    kind: "KubeVela built-in trait".to_string(),
                    name: t.type_.clone(),
                    reason: reason.to_string(),
                });
            }
            return Err(match defs.trait_(&t.type_) {
                Some(_) => RenderError::UnsupportedDefinition {
                    scope: trait_scope,
                    kind: "TraitDefinition".to_string(),
                    name: t.type_.clone(),
                    reason: "only built-in traits are rendered (cue schematics are not evaluated)"
                        .to_string(),
                },
                None => RenderError::UnknownTraitType {
                    scope,
                    type_: t.type_.clone(),
                },
            });
        };
        if !applies.iter().any(|a| *a == "*" || *a == resource) {
            // KubeVela does not enforce appliesToWorkloads when rendering (its own daemon example
            // puts `expose` on a DaemonSet): apply the trait, and say so.
            params::warn(RenderWarning {
                reason: "TraitNotApplicable",
                scope: trait_scope.clone(),
                message: format!(
                    "applied to workload {resource:?}, which the trait does not list (applies to: {})",
                    applies.join(", ")
                ),
            });
        }
        let outputs = match trait_::render_builtin(
            &t.type_,
            &trait_scope,
            &ctx,
            &mut workload,
            t.properties.as_ref(),
        ) {
            Some(result) => result?,
            None => {
                return Err(RenderError::UnknownTraitType {
                    scope,
                    type_: t.type_.clone(),
                });
            }
        };
        trait_objects.extend(
            outputs
                .into_iter()
                .map(|(name, object)| (t.type_.clone(), name, object)),
        );
    }

    let mut out = Vec::with_capacity(1 + output.auxiliaries.len() + trait_objects.len());
    let labelled =
        |mut object: Value, extra: &[(&str, &str)]| -> Result<RenderedObject, RenderError> {
            name_unnamed(&mut object, &component.name, extra);
            let object = finalize(object, common, &component.name, placement, extra, &scope)?;
            Ok(RenderedObject {
                component: Some(component.name.clone()),
                object,
            })
        };
    out.push(labelled(
        workload,
        &[
            (LABEL_RESOURCE_TYPE, RESOURCE_TYPE_WORKLOAD),
            (LABEL_WORKLOAD_TYPE, type_),
        ],
    )?);
    for (name, object) in output.auxiliaries {
        out.push(labelled(
            object,
            &[
                (LABEL_RESOURCE_TYPE, RESOURCE_TYPE_TRAIT),
                (LABEL_TRAIT_TYPE, AUXILIARY_WORKLOAD),
                (LABEL_TRAIT_RESOURCE, &name),
            ],
        )?);
    }
    for (trait_type, name, object) in trait_objects {
        out.push(labelled(
            object,
            &[
                (LABEL_RESOURCE_TYPE, RESOURCE_TYPE_TRAIT),
                (LABEL_TRAIT_TYPE, &trait_type),
                (LABEL_TRAIT_RESOURCE, &name),
            ],
        )?);
    }
    Ok(out)
}

/// An output without `metadata.name` gets KubeVela's generated form
/// `<component>-<trait type, lowercased>-<hash of the object>` (`GenTraitNameCompatible`). The
/// hash is ours (FNV-32a of the object's canonical JSON, encoded with KubeVela's safe alphabet):
/// stable across renders, but not byte-equal to KubeVela's spew-based hash.
fn name_unnamed(object: &mut Value, component: &str, extra: &[(&str, &str)]) {
    if object["metadata"]["name"]
        .as_str()
        .is_some_and(|n| !n.is_empty())
    {
        return;
    }
    let trait_type = extra
        .iter()
        .find(|(k, _)| *k == LABEL_TRAIT_TYPE)
        .map(|(_, v)| v.to_lowercase())
        .unwrap_or_else(|| "trait".to_string());
    let canonical = serde_json::to_string(object).unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    for byte in canonical.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let encoded: String = hash
        .to_string()
        .bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect();
    if !object["metadata"].is_object() {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"]["name"] = Value::from(format!("{component}-{trait_type}-{encoded}"));
}

/// Sets namespace, labels and annotations on a rendered object, the way KubeVela's appfile does:
/// an explicit `metadata.namespace` is kept unless a topology policy names the namespace; the
/// Application's labels and annotations win over the object's own, and the OAM labels over both.
fn finalize(
    mut object: Value,
    common: &CommonMetadata,
    component: &str,
    placement: &policy::Placement,
    extra: &[(&str, &str)],
    scope: &str,
) -> Result<Value, RenderError> {
    let namespace = placement.namespace.as_str();
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let cluster_scoped =
        is_cluster_scoped(object["apiVersion"].as_str().unwrap_or_default(), &kind);
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Err(RenderError::InvalidApplication {
            scope: scope.to_string(),
            message: format!("rendered {kind} has no metadata"),
        });
    };
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if cluster_scoped {
        metadata.remove("namespace");
    } else {
        match metadata.get("namespace") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(other) => {
                return Err(RenderError::InvalidApplication {
                    scope: scope.to_string(),
                    message: format!(
                        "{kind} {name:?}: metadata.namespace must be a string, got {other}"
                    ),
                });
            }
        }
        let explicit = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty() && !placement.forced)
            .map(str::to_string);
        metadata.insert(
            "namespace".into(),
            explicit.unwrap_or_else(|| namespace.to_string()).into(),
        );
    }
    let mut labels = match metadata.get("labels") {
        Some(Value::Object(own)) => own.clone(),
        _ => Map::new(),
    };
    labels.extend(common.app_labels.clone());
    for (k, v) in [
        (LABEL_APP_NAME, common.app_name),
        (LABEL_APP_NAMESPACE, common.app_namespace),
        (LABEL_APP_COMPONENT, component),
        (LABEL_MANAGED_BY, MANAGED_BY),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        labels.insert(k.to_string(), v.into());
    }
    metadata.insert("labels".into(), Value::Object(labels));
    let own_annotations = match metadata.get("annotations") {
        Some(Value::Object(own)) => Some(own.clone()),
        _ => None,
    };
    if own_annotations.is_some() || !common.app_annotations.is_empty() {
        let mut annotations = own_annotations.unwrap_or_default();
        annotations.extend(common.app_annotations.clone());
        annotations.retain(|k, _| !common.filtered_annotations.contains(k));
        if annotations.is_empty() {
            metadata.remove("annotations");
        } else {
            metadata.insert("annotations".into(), Value::Object(annotations));
        }
    }
    Ok(object)
}

/// Identity used to detect two renders of the same object: (group, kind, namespace, name).
fn object_key(object: &Value) -> (String, String, String, String) {
    let group = crate::kinds::group_of(object["apiVersion"].as_str().unwrap_or_default());
    (
        group.to_string(),
        object["kind"].as_str().unwrap_or_default().to_string(),
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// `deployments.apps`, `jobs.batch`, `services`: the form `appliesToWorkloads` uses.
pub(crate) fn workload_resource(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or_default().to_lowercase();
    let plural = if kind.ends_with('s')
        || kind.ends_with('x')
        || kind.ends_with("ch")
        || kind.ends_with("sh")
    {
        format!("{kind}es")
    } else if let Some(stem) = kind.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        format!("{stem}ies")
    } else {
        format!("{kind}s")
    };
    match crate::kinds::group_of(object["apiVersion"].as_str().unwrap_or_default()) {
        "" => plural,
        group => format!("{plural}.{group}"),
    }
}

/// Built-in cluster-scoped kinds (`crate::kinds`): rendered without `metadata.namespace`.
fn is_cluster_scoped(api_version: &str, kind: &str) -> bool {
    !crate::kinds::resource_kind(api_version, kind).namespaced
}

/// A `{string: string}` object (labels, annotations).
pub(crate) fn is_string_map(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|m| m.values().all(Value::is_string))
}
