//! Policies: `topology` (where objects go: one namespace of the local cluster) and `override`
//! (per-placement patches of component properties and traits), combined the way KubeVela's
//! default workflow or the Application's `deploy` steps combine them.
use serde_json::{Map, Value};

use super::error::RenderError;
use super::params::Params;
use crate::api::oam::{AppPolicy, Application, ApplicationComponent, ApplicationTrait};
use crate::names::GITLAB_ACCESS;

pub(crate) const BUILTIN_POLICY_TYPES: [&str; 2] = ["topology", "override"];

/// One target of the Application: a namespace and the overrides that apply there.
#[derive(Debug)]
pub(crate) struct Placement {
    pub namespace: String,
    pub overrides: Vec<Override>,
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
    Topology(String),
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
) -> Result<Vec<Placement>, RenderError> {
    let mut parsed = Vec::with_capacity(app.spec.policies.len());
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
            "topology" => Parsed::Topology(topology(&scope, policy, app_namespace)?),
            "override" => Parsed::Override(override_policy(&scope, policy)?),
            GITLAB_ACCESS => Parsed::Ignored,
            other if defs.policy(other).is_some() => {
                return Err(RenderError::UnsupportedDefinition {
                    scope,
                    kind: "PolicyDefinition".to_string(),
                    name: other.to_string(),
                    reason: "only the built-in topology and override policies are applied"
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

    let steps = deploy_steps(app.spec.workflow.as_ref())?;
    if steps.is_empty() {
        let overrides: Vec<Override> = parsed
            .iter()
            .filter_map(|(_, p)| match p {
                Parsed::Override(o) => Some(o.clone()),
                _ => None,
            })
            .collect();
        let namespaces: Vec<String> = parsed
            .iter()
            .filter_map(|(_, p)| match p {
                Parsed::Topology(ns) => Some(ns.clone()),
                _ => None,
            })
            .collect();
        return Ok(placements(namespaces, overrides, app_namespace));
    }
    let mut out = Vec::new();
    for (step, policy_names) in steps {
        let mut namespaces = Vec::new();
        let mut overrides = Vec::new();
        for name in policy_names {
            match parsed.iter().find(|(n, _)| *n == Some(name.as_str())) {
                Some((_, Parsed::Topology(ns))) => namespaces.push(ns.clone()),
                Some((_, Parsed::Override(o))) => overrides.push(o.clone()),
                Some((_, Parsed::Ignored)) => {}
                None => {
                    return Err(RenderError::InvalidApplication {
                        scope: format!("workflow step {step:?}"),
                        message: format!("policy {name:?} is not defined in spec.policies"),
                    });
                }
            }
        }
        out.extend(placements(namespaces, overrides, app_namespace));
    }
    Ok(out)
}

fn placements(
    namespaces: Vec<String>,
    overrides: Vec<Override>,
    app_namespace: &str,
) -> Vec<Placement> {
    let namespaces = if namespaces.is_empty() {
        vec![app_namespace.to_string()]
    } else {
        namespaces
    };
    namespaces
        .into_iter()
        .map(|namespace| Placement {
            namespace,
            overrides: overrides.clone(),
        })
        .collect()
}

/// `topology`: only the local cluster; the namespace defaults to the Application's.
fn topology(scope: &str, policy: &AppPolicy, app_namespace: &str) -> Result<String, RenderError> {
    let mut p = Params::root(scope, policy.properties.as_ref())?;
    if let Some(clusters) = p.opt_str_list("clusters")?
        && let Some(other) = clusters.iter().find(|c| c.as_str() != "local")
    {
        return Err(p.invalid(
            "clusters",
            format!(
                "cluster {other:?} is not supported: oam-trust deploys to the local cluster only"
            ),
        ));
    }
    for key in ["clusterLabelSelector", "clusterSelector"] {
        if p.opt(key).is_some() {
            return Err(p.invalid(
                key,
                "cluster selection is not supported: oam-trust deploys to the local cluster only",
            ));
        }
    }
    p.opt_bool("allowEmpty")?;
    let namespace = p.str_or("namespace", app_namespace)?;
    if !is_dns_label(namespace) {
        return Err(p.invalid(
            "namespace",
            format!("{namespace:?} is not a valid namespace name"),
        ));
    }
    let namespace = namespace.to_string();
    p.finish()?;
    Ok(namespace)
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

/// The workflow's `deploy` steps (also inside step groups) and the policies each names.
fn deploy_steps(workflow: Option<&Value>) -> Result<Vec<(String, Vec<String>)>, RenderError> {
    let mut out = Vec::new();
    let Some(workflow) = workflow else {
        return Ok(out);
    };
    let mut p = Params::root("workflow", Some(workflow))?;
    collect_deploy_steps(p.opt_list("steps")?.unwrap_or_default(), &mut out)?;
    Ok(out)
}

fn collect_deploy_steps(
    steps: Vec<Params>,
    out: &mut Vec<(String, Vec<String>)>,
) -> Result<(), RenderError> {
    for mut step in steps {
        let name = step.opt_str("name")?.unwrap_or_default().to_string();
        if step.opt_str("type")? == Some("deploy") {
            let policies = match step.opt_object("properties")? {
                Some(mut props) => props.opt_str_list("policies")?.unwrap_or_default(),
                None => Vec::new(),
            };
            out.push((name, policies));
        }
        collect_deploy_steps(step.opt_list("subSteps")?.unwrap_or_default(), out)?;
    }
    Ok(())
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
                None => {
                    for c in out
                        .iter_mut()
                        .filter(|c| patch.type_.as_ref().is_none_or(|t| *t == c.type_))
                    {
                        merge_component(c, patch);
                    }
                }
                Some(pattern) => {
                    let mut matched = false;
                    for c in out.iter_mut().filter(|c| glob_match(pattern, &c.name)) {
                        merge_component(c, patch);
                        matched = true;
                    }
                    if !matched && !pattern.contains('*') {
                        // KubeVela adds a component an override names but the Application lacks.
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
                            type_: type_.clone(),
                            ..ApplicationComponent::default()
                        };
                        merge_component(&mut added, patch);
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

fn merge_component(base: &mut ApplicationComponent, patch: &ComponentPatch) {
    match &patch.type_ {
        Some(t) if *t != base.type_ => {
            base.type_ = t.clone();
            base.properties = patch.properties.clone();
        }
        _ => {
            if let Some(props) = &patch.properties {
                let target = base
                    .properties
                    .get_or_insert_with(|| Value::Object(Map::new()));
                merge_patch(target, props);
            }
        }
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

/// Anchored glob with `*` only (component names cannot contain other metacharacters).
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn glob_is_anchored() {
        assert!(glob_match("api", "api"));
        assert!(!glob_match("api", "api-2"));
        assert!(glob_match("api-*", "api-2"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(!glob_match("ab*ba", "aba"));
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
