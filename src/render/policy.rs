//! Policies: `topology` (where objects go: one namespace of the local cluster) and `override`
//! (per-placement patches of component properties and traits), combined the way KubeVela's
//! default workflow or the Application's `deploy` and `apply-component` steps combine them; and the resource policies
//! (`garbage-collect`, `apply-once`, `shared-resource`, `take-over`, `read-only`,
//! `resource-update`), parsed and validated here and honoured by whoever applies the objects.
use serde_json::{Map, Value};

use super::RenderedObject;
use super::error::RenderError;
use super::params::Params;
use crate::api::oam::{AppPolicy, Application, ApplicationComponent, ApplicationTrait};
use crate::names::{GITLAB_ACCESS, LABEL_APP_COMPONENT, LABEL_RESOURCE_TYPE, LABEL_TRAIT_TYPE};

pub(crate) const BUILTIN_POLICY_TYPES: [&str; 8] = [
    "topology",
    "override",
    "garbage-collect",
    "apply-once",
    "shared-resource",
    "take-over",
    "read-only",
    "resource-update",
];

/// One target of the Application: a namespace and the overrides that apply there.
#[derive(Debug)]
pub(crate) struct Placement {
    pub namespace: String,
    /// A topology policy named the namespace: it replaces any `metadata.namespace` of the objects.
    pub forced: bool,
    pub overrides: Vec<Override>,
    /// The workflow step that applies this placement (`None`: the default workflow).
    pub step: Option<String>,
    /// An `apply-component` step's one component (`None`: every component).
    pub component: Option<String>,
}

/// Which rendered objects a resource-policy rule applies to (KubeVela's
/// `ResourcePolicyRuleSelector`): every field that is set must match; an empty selector matches
/// everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSelector {
    pub component_names: Option<Vec<String>>,
    pub component_types: Option<Vec<String>>,
    /// `COMPONENT` (the workload and its auxiliary outputs) or `TRAIT`.
    pub oam_types: Option<Vec<String>>,
    pub trait_types: Option<Vec<String>>,
    /// Kinds, such as `Deployment`.
    pub resource_types: Option<Vec<String>>,
    pub resource_names: Option<Vec<String>>,
}

impl RuleSelector {
    /// Whether `object` is selected; `component_type` is the type of the component it came from
    /// (`Rendering::component_types`).
    pub fn matches(&self, object: &RenderedObject, component_type: Option<&str>) -> bool {
        let labels = &object.object["metadata"]["labels"];
        let label = |key: &str| labels[key].as_str();
        let oam_type = match label(LABEL_RESOURCE_TYPE) {
            Some("TRAIT") if label(LABEL_TRAIT_TYPE) != Some(super::AUXILIARY_WORKLOAD) => "TRAIT",
            _ => "COMPONENT",
        };
        let trait_type = if oam_type == "TRAIT" {
            label(LABEL_TRAIT_TYPE)
        } else {
            None
        };
        let check = |list: &Option<Vec<String>>, value: Option<&str>| {
            list.as_ref()
                .is_none_or(|l| value.is_some_and(|v| l.iter().any(|x| x == v)))
        };
        check(&self.component_names, label(LABEL_APP_COMPONENT))
            && check(&self.component_types, component_type)
            && check(&self.oam_types, Some(oam_type))
            && check(&self.trait_types, trait_type)
            && check(&self.resource_types, Some(object.kind()))
            && check(&self.resource_names, Some(object.name()))
    }
}

/// `garbage-collect` rule: what happens to the selected objects once they leave the desired set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarbageCollectRule {
    /// Any of these selects the object (KubeVela accepts one selector or a list).
    pub selectors: Vec<RuleSelector>,
    /// `onAppUpdate` (default), `onAppDelete` or `never`.
    pub strategy: String,
}

/// `apply-once` rule: the selected objects' `paths` (`*` = the whole object) are applied once and
/// then left to whoever changes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOnceRule {
    pub selector: RuleSelector,
    pub paths: Vec<String>,
    /// `onUpdate` / `onStateKeep`, when given.
    pub affect: Option<String>,
}

/// `resource-update` rule: how the selected objects are updated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceUpdateRule {
    pub selector: RuleSelector,
    /// `patch` (default) or `replace`.
    pub op: String,
    /// A change of one of these fields recreates the object instead of updating it.
    pub recreate_fields: Vec<String>,
}

/// The resource policies of an Application, parsed and validated. Rendering does not act on
/// them; the applier does (garbage collection, drift, adoption, update strategy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourcePolicies {
    /// `garbage-collect.keepLegacyResource`: objects of older revisions are never pruned.
    pub keep_legacy_resource: bool,
    /// `garbage-collect.continueOnFailure`: prune even when the apply failed.
    pub gc_continue_on_failure: bool,
    /// `garbage-collect.order`: `dependency` deletes in reverse dependency order.
    pub gc_order: Option<String>,
    pub garbage_collect: Vec<GarbageCollectRule>,
    /// `apply-once.enable`: the policy is on. With no rules every object is applied once and never
    /// corrected for drift; with rules, the objects a rule selects keep its paths as they are live.
    pub apply_once_all: bool,
    pub apply_once: Vec<ApplyOnceRule>,
    /// Objects other Applications may also render (the first writer owns them).
    pub shared: Vec<RuleSelector>,
    /// Objects this Application may adopt when no Application owns them.
    pub take_over: Vec<RuleSelector>,
    /// Objects this Application only reads (never creates, updates or deletes).
    pub read_only: Vec<RuleSelector>,
    pub resource_update: Vec<ResourceUpdateRule>,
}

/// What the resource policies say about one rendered object, for the applier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectPolicy {
    /// `read-only`: never created, updated or deleted; it must exist.
    pub read_only: bool,
    /// `take-over`: an existing object no Application manages may be adopted.
    pub take_over: bool,
    /// `shared-resource`: other Applications may render it too; the first writer owns it, the
    /// others only add themselves to `app.oam.dev/shared-by`, and the last one deletes it.
    pub shared: bool,
    /// `apply-once`: what is left as it is live once the object exists.
    pub apply_once: ApplyOnce,
    /// `garbage-collect`: when the object is deleted.
    pub gc: GcStrategy,
    /// `resource-update` `op: replace`: written whole (PUT), dropping fields others set.
    pub replace: bool,
    /// `resource-update` `recreateFields`: a change of one of these deletes and re-creates it.
    pub recreate_fields: Vec<String>,
}

/// `apply-once` for one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ApplyOnce {
    #[default]
    Off,
    /// Created when absent, never written again.
    Whole,
    /// These paths (`spec.replicas`, `spec.template.spec.containers[0].image`) keep their live
    /// values; `affect` limits it to `onUpdate` (the Application changed) or `onStateKeep` (drift).
    Paths {
        paths: Vec<String>,
        affect: Option<String>,
    },
}

/// `garbage-collect` strategy for one object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GcStrategy {
    /// Deleted once no longer rendered (and with the Application).
    #[default]
    OnAppUpdate,
    /// Kept while the Application lives, deleted with it.
    OnAppDelete,
    /// Never deleted by the operator, not even with the Application.
    Never,
}

impl ResourcePolicies {
    /// Whether any policy changes how objects are applied or collected.
    pub fn is_empty(&self) -> bool {
        *self == ResourcePolicies::default()
    }

    /// The policies that apply to `object` (`component_type`: the type of its component).
    pub fn for_object(
        &self,
        object: &RenderedObject,
        component_type: Option<&str>,
    ) -> ObjectPolicy {
        let any = |selectors: &[RuleSelector]| {
            selectors.iter().any(|s| s.matches(object, component_type))
        };
        let apply_once = if !self.apply_once_all {
            ApplyOnce::Off
        } else if self.apply_once.is_empty() {
            ApplyOnce::Whole
        } else {
            match self
                .apply_once
                .iter()
                .find(|r| r.selector.matches(object, component_type))
            {
                None => ApplyOnce::Off,
                Some(rule) if rule.paths.iter().any(|p| p == "*") => ApplyOnce::Whole,
                Some(rule) => ApplyOnce::Paths {
                    paths: rule.paths.clone(),
                    affect: rule.affect.clone(),
                },
            }
        };
        let gc = self
            .garbage_collect
            .iter()
            .find(|r| any(&r.selectors))
            .map(|r| match r.strategy.as_str() {
                "never" => GcStrategy::Never,
                "onAppDelete" => GcStrategy::OnAppDelete,
                _ => GcStrategy::OnAppUpdate,
            })
            .unwrap_or_default();
        let update = self
            .resource_update
            .iter()
            .find(|r| r.selector.matches(object, component_type));
        ObjectPolicy {
            read_only: any(&self.read_only),
            take_over: any(&self.take_over),
            shared: any(&self.shared),
            apply_once,
            gc,
            replace: update.is_some_and(|u| u.op == "replace"),
            recreate_fields: update
                .map(|u| u.recreate_fields.clone())
                .unwrap_or_default(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Override {
    scope: String,
    components: Vec<ComponentPatch>,
    selector: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
struct ComponentPatch {
    name: Option<String>,
    type_: Option<String>,
    properties: Option<Value>,
    traits: Vec<TraitPatch>,
}

#[derive(Clone, Debug)]
struct TraitPatch {
    type_: String,
    properties: Option<Value>,
    disable: bool,
}

enum Parsed {
    /// The namespace, and whether the policy named it.
    Topology(String, bool),
    Override(Override),
    Ignored,
}

fn policy_scope(index: usize, policy: &AppPolicy) -> String {
    match &policy.name {
        Some(name) => format!("policy {name:?}"),
        None => format!("policies[{index}]"),
    }
}

/// Validates every policy and works out the placements.
pub(crate) fn plan(
    app: &Application,
    defs: &super::Definitions,
    app_namespace: &str,
) -> Result<(Vec<Placement>, ResourcePolicies), RenderError> {
    let mut parsed = Vec::with_capacity(app.spec.policies.len());
    let mut resource_policies = ResourcePolicies::default();
    for (i, policy) in app.spec.policies.iter().enumerate() {
        let scope = policy_scope(i, policy);
        if let Some(name) = &policy.name
            && app.spec.policies[..i]
                .iter()
                .any(|p| p.name.as_ref() == Some(name))
        {
            return Err(RenderError::InvalidApplication {
                scope,
                message: "policy name is used twice".to_string(),
            });
        }
        let entry = match policy.type_.as_str() {
            "topology" => {
                let (namespace, forced) = topology(&scope, policy, app_namespace)?;
                Parsed::Topology(namespace, forced)
            }
            "override" => Parsed::Override(override_policy(&scope, policy)?),
            "garbage-collect" | "apply-once" | "shared-resource" | "take-over" | "read-only"
            | "resource-update" => {
                resource_policy(&scope, policy, &mut resource_policies)?;
                Parsed::Ignored
            }
            GITLAB_ACCESS => Parsed::Ignored,
            "replication" => {
                return Err(RenderError::UnsupportedDefinition {
                    scope,
                    kind: "KubeVela built-in policy".to_string(),
                    name: "replication".to_string(),
                    reason: "it replicates components per key for multi-cluster deploy steps, which oam-trust does not run".to_string(),
                });
            }
            other if defs.policy(other).is_some() => {
                return Err(RenderError::UnsupportedDefinition {
                    scope,
                    kind: "PolicyDefinition".to_string(),
                    name: other.to_string(),
                    reason: "only built-in policies are applied (cue schematics are not evaluated)"
                        .to_string(),
                });
            }
            other => {
                return Err(RenderError::UnknownPolicyType {
                    scope,
                    type_: other.to_string(),
                    supported: BUILTIN_POLICY_TYPES.join(", "),
                });
            }
        };
        parsed.push((policy.name.as_deref(), entry));
    }

    let Some(workflow) = super::workflow::parse(app.spec.workflow.as_ref())? else {
        // The default workflow: every component, in every topology's namespace (or the
        // Application's), with every override.
        let overrides: Vec<Override> = parsed
            .iter()
            .filter_map(|(_, p)| match p {
                Parsed::Override(o) => Some(o.clone()),
                _ => None,
            })
            .collect();
        let namespaces: Vec<(String, bool)> = parsed
            .iter()
            .filter_map(|(_, p)| match p {
                Parsed::Topology(ns, forced) => Some((ns.clone(), *forced)),
                _ => None,
            })
            .collect();
        return Ok((
            placements(namespaces, overrides, app_namespace, None, None),
            resource_policies,
        ));
    };
    // A workflow: only what its `deploy` and `apply-component` steps apply is rendered, each
    // placement tagged with its step.
    let mut out = Vec::new();
    for step in workflow.all_steps() {
        match &step.kind {
            super::workflow::StepKind::Deploy { policies } => {
                let mut namespaces = Vec::new();
                let mut overrides = Vec::new();
                for name in policies {
                    match parsed.iter().find(|(n, _)| *n == Some(name.as_str())) {
                        Some((_, Parsed::Topology(ns, forced))) => {
                            namespaces.push((ns.clone(), *forced))
                        }
                        Some((_, Parsed::Override(o))) => overrides.push(o.clone()),
                        Some((_, Parsed::Ignored)) => {}
                        None => {
                            return Err(RenderError::InvalidApplication {
                                scope: format!("workflow step {:?}", step.name),
                                message: format!("policy {name:?} is not defined in spec.policies"),
                            });
                        }
                    }
                }
                out.extend(placements(
                    namespaces,
                    overrides,
                    app_namespace,
                    Some(&step.name),
                    None,
                ));
            }
            super::workflow::StepKind::ApplyComponent {
                component,
                namespace,
            } => {
                if !app.spec.components.iter().any(|c| &c.name == component) {
                    return Err(RenderError::InvalidApplication {
                        scope: format!("workflow step {:?}", step.name),
                        message: format!(
                            "properties.component {component:?} is not a component of the Application"
                        ),
                    });
                }
                let namespaces = namespace.iter().map(|n| (n.clone(), true)).collect();
                out.extend(placements(
                    namespaces,
                    Vec::new(),
                    app_namespace,
                    Some(&step.name),
                    Some(component),
                ));
            }
            _ => {}
        }
    }
    Ok((out, resource_policies))
}

fn placements(
    namespaces: Vec<(String, bool)>,
    overrides: Vec<Override>,
    app_namespace: &str,
    step: Option<&str>,
    component: Option<&str>,
) -> Vec<Placement> {
    let namespaces = if namespaces.is_empty() {
        vec![(app_namespace.to_string(), false)]
    } else {
        namespaces
    };
    namespaces
        .into_iter()
        .map(|(namespace, forced)| Placement {
            namespace,
            forced,
            overrides: overrides.clone(),
            step: step.map(str::to_string),
            component: component.map(str::to_string),
        })
        .collect()
}

/// `topology`: only the local cluster; the namespace defaults to the Application's. Returns the
/// namespace and whether the policy named it.
fn topology(
    scope: &str,
    policy: &AppPolicy,
    app_namespace: &str,
) -> Result<(String, bool), RenderError> {
    let mut p = Params::root(scope, policy.properties.as_ref())?;
    if let Some(clusters) = p.opt_str_list("clusters")?
        && let Some(other) = clusters.iter().find(|c| c.as_str() != "local")
    {
        return Err(p.invalid(
            "clusters",
            format!(
                "cluster {other:?} is not supported: oam-trust deploys to the local cluster only (multi-cluster topology is not implemented)"
            ),
        ));
    }
    for key in ["clusterLabelSelector", "clusterSelector"] {
        if p.opt(key).is_some() {
            return Err(p.invalid(
                key,
                "cluster selection is not supported: oam-trust deploys to the local cluster only (multi-cluster topology is not implemented)",
            ));
        }
    }
    p.opt_bool("allowEmpty")?;
    let forced = p.opt_str("namespace")?.is_some_and(|ns| !ns.is_empty());
    let namespace = match p.opt_str("namespace")? {
        Some(ns) if !ns.is_empty() => ns,
        _ => app_namespace,
    };
    if !is_dns_label(namespace) {
        return Err(p.invalid(
            "namespace",
            format!("{namespace:?} is not a valid namespace name"),
        ));
    }
    let namespace = namespace.to_string();
    p.finish()?;
    Ok((namespace, forced))
}

/// One `ResourcePolicyRuleSelector` object.
fn rule_selector(mut p: Params) -> Result<RuleSelector, RenderError> {
    let selector = RuleSelector {
        component_names: p.opt_str_list("componentNames")?,
        component_types: p.opt_str_list("componentTypes")?,
        oam_types: p.opt_str_list("oamTypes")?,
        trait_types: p.opt_str_list("traitTypes")?,
        resource_types: p.opt_str_list("resourceTypes")?,
        resource_names: p.opt_str_list("resourceNames")?,
    };
    if let Some(types) = &selector.oam_types
        && let Some(bad) = types.iter().find(|t| *t != "COMPONENT" && *t != "TRAIT")
    {
        return Err(p.invalid(
            "oamTypes",
            format!("{bad:?} is not one of COMPONENT, TRAIT"),
        ));
    }
    p.finish()?;
    Ok(selector)
}

/// A rule's `selector`: one object, or (as the CUE schemas of some policies declare) a list whose
/// entries are alternatives. Absent means every object.
fn rule_selectors<'a>(p: &mut Params<'a>) -> Result<Vec<RuleSelector>, RenderError> {
    match p.opt("selector") {
        None => Ok(vec![RuleSelector::default()]),
        Some(Value::Array(_)) => p
            .opt_list("selector")?
            .unwrap_or_default()
            .into_iter()
            .map(rule_selector)
            .collect(),
        Some(_) => match p.opt_object("selector")? {
            Some(selector) => Ok(vec![rule_selector(selector)?]),
            None => Ok(vec![RuleSelector::default()]),
        },
    }
}

/// Parses one resource policy into `out`; every selected object is matched later by the applier.
fn resource_policy(
    scope: &str,
    policy: &AppPolicy,
    out: &mut ResourcePolicies,
) -> Result<(), RenderError> {
    let mut p = Params::root(scope, policy.properties.as_ref())?;
    match policy.type_.as_str() {
        "garbage-collect" => {
            out.keep_legacy_resource |= p.bool_or("keepLegacyResource", false)?;
            out.gc_continue_on_failure |= p.bool_or("continueOnFailure", false)?;
            if let Some(order) = p.opt_str("order")? {
                if order != "dependency" {
                    return Err(p.invalid("order", format!("{order:?} is not one of dependency")));
                }
                out.gc_order = Some(order.to_string());
            }
            for mut rule in p.list_or_empty("rules")? {
                let selectors = rule_selectors(&mut rule)?;
                let strategy = rule.enum_or(
                    "strategy",
                    &["onAppUpdate", "onAppDelete", "never"],
                    "onAppUpdate",
                )?;
                rule.finish()?;
                out.garbage_collect.push(GarbageCollectRule {
                    selectors,
                    strategy: strategy.to_string(),
                });
            }
        }
        "apply-once" => {
            out.apply_once_all |= p.bool_or("enable", false)?;
            for mut rule in p.list_or_empty("rules")? {
                let selector = single_selector(&mut rule)?;
                let mut strategy = rule
                    .opt_object("strategy")?
                    .ok_or_else(|| rule.missing("strategy"))?;
                let paths = strategy
                    .opt_str_list("path")?
                    .ok_or_else(|| strategy.missing("path"))?;
                let affect = strategy.opt_str("affect")?.map(str::to_string);
                if let Some(a) = &affect
                    && !["onUpdate", "onStateKeep"].contains(&a.as_str())
                {
                    return Err(strategy.invalid(
                        "affect",
                        format!("{a:?} is not one of onUpdate, onStateKeep"),
                    ));
                }
                strategy.finish()?;
                rule.finish()?;
                out.apply_once.push(ApplyOnceRule {
                    selector,
                    paths,
                    affect,
                });
            }
        }
        "shared-resource" | "take-over" | "read-only" => {
            let mut selected = Vec::new();
            for mut rule in p.list_or_empty("rules")? {
                selected.extend(rule_selectors(&mut rule)?);
                rule.finish()?;
            }
            match policy.type_.as_str() {
                "shared-resource" => out.shared.extend(selected),
                "take-over" => out.take_over.extend(selected),
                _ => out.read_only.extend(selected),
            }
        }
        _ => {
            for mut rule in p.list_or_empty("rules")? {
                let selector = single_selector(&mut rule)?;
                let mut strategy = rule
                    .opt_object("strategy")?
                    .ok_or_else(|| rule.missing("strategy"))?;
                let op = strategy.enum_or("op", &["patch", "replace"], "patch")?;
                let recreate_fields = strategy.opt_str_list("recreateFields")?.unwrap_or_default();
                strategy.finish()?;
                rule.finish()?;
                out.resource_update.push(ResourceUpdateRule {
                    selector,
                    op: op.to_string(),
                    recreate_fields,
                });
            }
        }
    }
    p.finish()
}

/// A `selector` that must be one object (apply-once, resource-update).
fn single_selector(p: &mut Params) -> Result<RuleSelector, RenderError> {
    let mut selectors = rule_selectors(p)?;
    if selectors.len() != 1 {
        return Err(p.invalid("selector", "expected one selector object"));
    }
    Ok(selectors.remove(0))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn raw_object<'a>(p: &mut Params<'a>, key: &'a str) -> Result<Option<Value>, RenderError> {
    Ok(p.opt_raw_object(key)?.cloned())
}

/// `override{components[{name?, type?, properties?, traits?}], selector?}`.
fn override_policy(scope: &str, policy: &AppPolicy) -> Result<Override, RenderError> {
    let mut p = Params::root(scope, policy.properties.as_ref())?;
    let items = p
        .opt_list("components")?
        .ok_or_else(|| p.missing("components"))?;
    let mut components = Vec::with_capacity(items.len());
    for mut item in items {
        let name = item.opt_str("name")?.map(str::to_string);
        let type_ = item.opt_str("type")?.map(str::to_string);
        let properties = raw_object(&mut item, "properties")?;
        let mut traits = Vec::new();
        for mut t in item.list_or_empty("traits")? {
            traits.push(TraitPatch {
                type_: t.str("type")?.to_string(),
                properties: raw_object(&mut t, "properties")?,
                disable: t.bool_or("disable", false)?,
            });
            t.finish()?;
        }
        item.finish()?;
        components.push(ComponentPatch {
            name,
            type_,
            properties,
            traits,
        });
    }
    let selector = p.opt_str_list("selector")?;
    p.finish()?;
    Ok(Override {
        scope: scope.to_string(),
        components,
        selector,
    })
}

/// The components of one placement after its overrides, each with its position for ordering.
pub(crate) fn apply_overrides(
    components: &[ApplicationComponent],
    overrides: &[Override],
) -> Result<Vec<ApplicationComponent>, RenderError> {
    let mut out = components.to_vec();
    for o in overrides {
        for patch in &o.components {
            match &patch.name {
                // No name: merge into every component (of the given type, if any); never replace.
                None => {
                    for c in out
                        .iter_mut()
                        .filter(|c| patch.type_.as_ref().is_none_or(|t| *t == c.type_))
                    {
                        merge_component(c, patch);
                    }
                }
                // A name is an unanchored regular expression with `*` read as `.*`, as in
                // KubeVela's `PatchComponents`.
                Some(pattern) => {
                    let regex =
                        name_pattern::Regex::compile(&pattern.replace('*', ".*")).map_err(|e| {
                            RenderError::InvalidApplication {
                                scope: o.scope.clone(),
                                message: format!("component name pattern {pattern:?}: {e}"),
                            }
                        })?;
                    let mut matched = false;
                    for c in out.iter_mut().filter(|c| regex.is_match(&c.name)) {
                        matched = true;
                        match &patch.type_ {
                            Some(t) if *t != c.type_ => replace_component(c, t, patch),
                            _ => merge_component(c, patch),
                        }
                    }
                    // KubeVela adds a component a pattern names when nothing matches and the
                    // pattern contains a lowercase letter (its own, unanchored check).
                    if !matched && pattern.bytes().any(|b| b.is_ascii_lowercase()) {
                        if !is_dns_label(pattern) {
                            return Err(RenderError::InvalidApplication {
                                scope: o.scope.clone(),
                                message: format!(
                                    "component pattern {pattern:?} matches no component and is not a valid name for a component to add"
                                ),
                            });
                        }
                        let Some(type_) = &patch.type_ else {
                            return Err(RenderError::InvalidApplication {
                                scope: o.scope.clone(),
                                message: format!(
                                    "component {pattern:?} does not exist; to add it, the override must give its type"
                                ),
                            });
                        };
                        let mut added = ApplicationComponent {
                            name: pattern.clone(),
                            ..ApplicationComponent::default()
                        };
                        replace_component(&mut added, type_, patch);
                        out.push(added);
                    }
                }
            }
        }
        if let Some(selector) = &o.selector {
            out.retain(|c| selector.contains(&c.name));
        }
    }
    Ok(out)
}

/// A patch whose type differs replaces the component: its type, properties and traits are the
/// patch's alone (the name is kept).
fn replace_component(base: &mut ApplicationComponent, type_: &str, patch: &ComponentPatch) {
    base.type_ = type_.to_string();
    base.properties = patch.properties.clone();
    base.traits = patch
        .traits
        .iter()
        .filter(|t| !t.disable)
        .map(|t| ApplicationTrait {
            type_: t.type_.clone(),
            properties: t.properties.clone(),
        })
        .collect();
}

fn merge_component(base: &mut ApplicationComponent, patch: &ComponentPatch) {
    if let Some(props) = &patch.properties {
        let target = base
            .properties
            .get_or_insert_with(|| Value::Object(Map::new()));
        merge_patch(target, props);
    }
    for t in &patch.traits {
        match base.traits.iter().position(|bt| bt.type_ == t.type_) {
            Some(i) if t.disable => {
                base.traits.remove(i);
            }
            Some(i) => {
                if let Some(props) = &t.properties {
                    let target = base.traits[i]
                        .properties
                        .get_or_insert_with(|| Value::Object(Map::new()));
                    merge_patch(target, props);
                }
            }
            None if t.disable => {}
            None => base.traits.push(ApplicationTrait {
                type_: t.type_.clone(),
                properties: t.properties.clone(),
            }),
        }
    }
}

/// RFC 7386 JSON merge patch: objects merge, `null` removes, everything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_map) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                target_map.remove(k);
            } else {
                merge_patch(target_map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The part of Go's regular-expression syntax component names need: literals, `.`, classes
/// (`[a-z]`, `[^-]`, `\\d`, `\\w`), the quantifiers `*`, `+`, `?`, alternation `|`, and `^`/`$`
/// at the ends of a branch. Groups and counted repetition are refused with a clear error rather
/// than guessed at. Matching is unanchored, as Go's `MatchString` is.
mod name_pattern {
    #[derive(Debug)]
    enum Atom {
        Char(char),
        Any,
        Class {
            ranges: Vec<(char, char)>,
            negated: bool,
        },
    }

    #[derive(Debug)]
    struct Piece {
        atom: Atom,
        min: usize,
        many: bool,
    }

    #[derive(Debug)]
    struct Branch {
        anchored_start: bool,
        anchored_end: bool,
        pieces: Vec<Piece>,
    }

    #[derive(Debug)]
    pub struct Regex(Vec<Branch>);

    impl Atom {
        fn matches(&self, c: char) -> bool {
            match self {
                Atom::Char(x) => *x == c,
                Atom::Any => c != '\n',
                Atom::Class { ranges, negated } => {
                    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
                }
            }
        }
    }

    fn escape_class(c: char) -> Option<Vec<(char, char)>> {
        match c {
            'd' => Some(vec![('0', '9')]),
            'w' => Some(vec![('0', '9'), ('a', 'z'), ('A', 'Z'), ('_', '_')]),
            's' => Some(vec![(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r')]),
            _ => None,
        }
    }

    impl Regex {
        pub fn compile(pattern: &str) -> Result<Self, String> {
            let mut branches = Vec::new();
            for source in pattern.split('|') {
                let chars: Vec<char> = source.chars().collect();
                let mut i = 0;
                let mut branch = Branch {
                    anchored_start: false,
                    anchored_end: false,
                    pieces: Vec::new(),
                };
                if chars.first() == Some(&'^') {
                    branch.anchored_start = true;
                    i = 1;
                }
                while i < chars.len() {
                    let c = chars[i];
                    i += 1;
                    let atom = match c {
                        '$' if i == chars.len() => {
                            branch.anchored_end = true;
                            continue;
                        }
                        '.' => Atom::Any,
                        '\\' => {
                            let Some(&e) = chars.get(i) else {
                                return Err("trailing backslash".to_string());
                            };
                            i += 1;
                            match escape_class(e) {
                                Some(ranges) => Atom::Class {
                                    ranges,
                                    negated: false,
                                },
                                None => Atom::Char(e),
                            }
                        }
                        '[' => {
                            let negated = chars.get(i) == Some(&'^');
                            if negated {
                                i += 1;
                            }
                            let mut ranges = Vec::new();
                            let mut closed = false;
                            while i < chars.len() {
                                let lo = chars[i];
                                i += 1;
                                if lo == ']' && !ranges.is_empty() {
                                    closed = true;
                                    break;
                                }
                                if chars.get(i) == Some(&'-')
                                    && chars.get(i + 1).is_some_and(|c| *c != ']')
                                {
                                    ranges.push((lo, chars[i + 1]));
                                    i += 2;
                                } else {
                                    ranges.push((lo, lo));
                                }
                            }
                            if !closed {
                                return Err("unterminated character class".to_string());
                            }
                            Atom::Class { ranges, negated }
                        }
                        '(' | ')' | '{' | '}' | '^' | '$' => {
                            return Err(format!(
                                "{c:?} (groups, counted repetition, inner anchors) is not supported in component name patterns"
                            ));
                        }
                        '*' | '+' | '?' => return Err(format!("{c:?} follows nothing")),
                        other => Atom::Char(other),
                    };
                    let (min, many) = match chars.get(i) {
                        Some('*') => (0, true),
                        Some('+') => (1, true),
                        Some('?') => (0, false),
                        _ => (1, false),
                    };
                    if min != 1 || many {
                        i += 1;
                    }
                    branch.pieces.push(Piece { atom, min, many });
                }
                branches.push(branch);
            }
            Ok(Self(branches))
        }

        pub fn is_match(&self, text: &str) -> bool {
            let chars: Vec<char> = text.chars().collect();
            self.0.iter().any(|b| {
                let from = matches_from(&b.pieces, &chars, b.anchored_end);
                if b.anchored_start {
                    from[0]
                } else {
                    from.into_iter().any(|m| m)
                }
            })
        }
    }

    /// For each start position, whether `pieces` match there. Dynamic programming over (piece,
    /// position): time linear in pattern length times text length, so no pattern an
    /// Application author writes can make matching backtrack exponentially.
    fn matches_from(pieces: &[Piece], text: &[char], anchored_end: bool) -> Vec<bool> {
        let n = text.len();
        // `next[j]`: the pieces after the current one match `text[j..]`.
        let mut next: Vec<bool> = (0..=n).map(|j| !anchored_end || j == n).collect();
        for piece in pieces.iter().rev() {
            let mut cur = vec![false; n + 1];
            for j in (0..=n).rev() {
                let here = j < n && piece.atom.matches(text[j]);
                cur[j] = match (piece.min, piece.many) {
                    (0, true) => next[j] || (here && cur[j + 1]),
                    (1, true) => here && (cur[j + 1] || next[j + 1]),
                    (0, false) => next[j] || (here && next[j + 1]),
                    _ => here && next[j + 1],
                };
            }
            next = cur;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matches(pattern: &str, name: &str) -> bool {
        name_pattern::Regex::compile(&pattern.replace('*', ".*"))
            .expect("pattern compiles")
            .is_match(name)
    }

    #[test]
    fn component_patterns_are_unanchored_regular_expressions() {
        assert!(matches("api", "api"));
        assert!(matches("api", "api-2"), "unanchored, as Go's MatchString");
        assert!(matches("api", "my-api"));
        assert!(matches("api-*", "api-2"));
        assert!(matches("*", "anything"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("^api$", "api"));
        assert!(!matches("^api$", "api-2"));
        assert!(matches("web|api", "api-2"));
        assert!(matches("^api-[0-9]+$", "api-12"));
        assert!(!matches("^api-[0-9]+$", "api-x"));
        assert!(matches("ap.", "apx"));
        assert!(!matches("^[^a]", "abc"));
        assert!(name_pattern::Regex::compile("(api)").is_err());
        assert!(matches("a+b?c", "xaaac"));
        assert!(!matches("^a+$", ""));
        assert!(matches("^a+$", "aaa"));
        // Linear time: a pattern made to backtrack answers at once.
        let evil = "a*".repeat(40) + "b";
        assert!(!matches(&evil, &"a".repeat(250)));
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge_patch(
            &mut v,
            &json!({"b": {"c": null, "e": 4}, "l": [3], "n": "x"}),
        );
        assert_eq!(
            v,
            json!({"a": 1, "b": {"d": 3, "e": 4}, "l": [3], "n": "x"})
        );
    }
}
