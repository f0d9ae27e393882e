//! The RBAC rules of a declaration: preset rules scoped with resourceNames to the Application's own
//! objects, or explicit rules; then the trust's ceiling (all-or-nothing for explicit rules, trimmed
//! verb by verb for `manage`). Only `deploy` writes the Application: an explicit rule that would is
//! refused, `manage` only reads it.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::ceiling;
use super::grant::{GrantInput, RefusalReason, list};
use super::kinds;
use crate::api::access::{Access, AccessRule, Preset};
use crate::api::trust::GitLabTrust;
use crate::names;

const READ_VERBS: &[&str] = &["get", "list", "watch"];
const APPLICATIONS: &str = "applications";
const APPLICATIONS_STATUS: &str = "applications/status";
/// Verbs that change an object (or many): never granted on the Application except through `deploy`.
const WRITE_VERBS: &[&str] = &[
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
];

/// (group, resource) -> names of the objects a preset may cover.
pub type ObjectNames = BTreeMap<(String, String), BTreeSet<String>>;

/// The rendered objects in this declaration's scope that a preset may name.
pub(super) fn scoped_objects(
    input: &GrantInput,
    component: Option<&str>,
    warnings: &mut Vec<String>,
) -> ObjectNames {
    let namespace = names::namespace_of(input.application);
    let mut out = ObjectNames::new();
    for object in input.rendered {
        if component.is_some() && object.component.as_deref() != component {
            continue;
        }
        let rk = kinds::resource_kind(object.api_version(), object.kind());
        let what = format!("{} {:?}", object.kind(), object.name());
        if !rk.namespaced {
            warnings.push(format!(
                "{what} is cluster-scoped; presets never grant cluster-scoped objects"
            ));
            continue;
        }
        if let Some(reason) = kinds::preset_forbidden(&rk.group, &rk.resource) {
            warnings.push(format!("{what} is not granted: {reason}"));
            continue;
        }
        if object.namespace().is_some_and(|ns| ns != namespace) {
            warnings.push(format!(
                "{what} is in another namespace than the Application; a Role cannot reach it"
            ));
            continue;
        }
        if object.name().is_empty() {
            continue;
        }
        out.entry((rk.group, rk.resource))
            .or_default()
            .insert(object.name().to_string());
    }
    out
}

fn rule(group: &str, resource: &str, verbs: &[&str], names: Option<Vec<String>>) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(vec![resource.to_string()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        resource_names: names,
        non_resource_urls: None,
    }
}

/// The rules of a preset, before any ceiling.
pub fn preset_rules(preset: Preset, application: &str, objects: &ObjectNames) -> Vec<PolicyRule> {
    let names = |set: &BTreeSet<String>| Some(set.iter().cloned().collect::<Vec<_>>());
    let mut rules = Vec::new();
    if preset == Preset::Approve {
        // Reads its Application and writes its status, which the approve guard narrows to a resume.
        let app = Some(vec![application.to_string()]);
        rules.push(rule(
            names::OAM_GROUP,
            APPLICATIONS,
            READ_VERBS,
            app.clone(),
        ));
        rules.push(rule(
            names::OAM_GROUP,
            APPLICATIONS_STATUS,
            &["get", "patch"],
            app,
        ));
        return rules;
    }
    for ((group, resource), set) in objects {
        rules.push(rule(group, resource, READ_VERBS, names(set)));
        if preset == Preset::Manage {
            rules.push(rule(
                group,
                resource,
                &["update", "patch", "delete"],
                names(set),
            ));
            rules.push(rule(group, resource, &["create"], None));
        }
    }
    // Only `deploy` writes the Application, and only through the deploy guard (images of its
    // components); `manage` operates the rendered objects but never edits the declarations behind them.
    let app_verbs: &[&str] = match preset {
        Preset::Read | Preset::Manage | Preset::Approve => READ_VERBS,
        Preset::Deploy => &["get", "list", "watch", "patch", "update"],
    };
    rules.push(rule(
        names::OAM_GROUP,
        APPLICATIONS,
        app_verbs,
        Some(vec![application.to_string()]),
    ));
    rules
}

fn explicit_rules(rules: &[AccessRule]) -> Result<Vec<PolicyRule>, RefusalReason> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let invalid = |what: &str| RefusalReason::InvalidProperties {
            error: format!("access.rules[{i}]: {what} must not be empty"),
        };
        if r.api_groups.is_empty() {
            return Err(invalid("apiGroups (use [\"\"] for the core group)"));
        }
        if r.resources.is_empty() || r.resources.iter().any(String::is_empty) {
            return Err(invalid("resources"));
        }
        if r.verbs.is_empty() || r.verbs.iter().any(String::is_empty) {
            return Err(invalid("verbs"));
        }
        if let Some(verb) = r.verbs.iter().find(|v| WRITE_VERBS.contains(&v.as_str()))
            && let Some(resource) = r.resources.iter().find(|res| covers_applications(res))
            && r.api_groups
                .iter()
                .any(|g| g == names::OAM_GROUP || g == "*")
        {
            return Err(RefusalReason::ApplicationWrite {
                rule: i,
                verb: verb.clone(),
                resource: resource.clone(),
            });
        }
        for group in &r.api_groups {
            for resource in &r.resources {
                if kinds::is_cluster_scoped(group, resource) {
                    return Err(RefusalReason::ClusterScopedRule {
                        rule: i,
                        resource: resource.clone(),
                    });
                }
            }
        }
        out.push(PolicyRule {
            api_groups: Some(r.api_groups.clone()),
            resources: Some(r.resources.clone()),
            verbs: r.verbs.clone(),
            resource_names: (!r.resource_names.is_empty()).then(|| r.resource_names.clone()),
            non_resource_urls: None,
        });
    }
    if out.is_empty() {
        return Err(RefusalReason::InvalidProperties {
            error: "access.rules must list at least one rule".into(),
        });
    }
    Ok(out)
}

/// Whether an RBAC resource names the Application or one of its subresources (`*`, `*/status`, …).
fn covers_applications(resource: &str) -> bool {
    let base = resource.split('/').next().unwrap_or(resource);
    base == APPLICATIONS || base == "*"
}

pub(super) fn granted_rules(
    trust_name: &str,
    trust: &GitLabTrust,
    input: &GrantInput,
    access: &Access,
    objects: &ObjectNames,
    warnings: &mut Vec<String>,
) -> Result<Vec<PolicyRule>, RefusalReason> {
    let application = super::grant::app_name(input.application);
    let (requested, trim) = match access {
        Access::Preset(preset) => (
            preset_rules(*preset, &application, objects),
            *preset == Preset::Manage,
        ),
        Access::Rules(explicit) => (explicit_rules(&explicit.rules)?, false),
    };
    let needs_ceiling = matches!(access, Access::Rules(_) | Access::Preset(Preset::Manage));
    let Some(ceiling_ref) = trust.spec.ceiling.as_ref() else {
        if needs_ceiling {
            return Err(RefusalReason::NoCeiling {
                trust: trust_name.to_string(),
                access: match access {
                    Access::Rules(_) => "explicit rules".into(),
                    _ => "manage".into(),
                },
            });
        }
        return Ok(requested);
    };
    let cluster_role = ceiling_ref.cluster_role_ref.clone();
    let ceiling_rules = input
        .ceilings
        .get(&cluster_role)
        .ok_or_else(|| RefusalReason::CeilingNotFound {
            trust: trust_name.to_string(),
            cluster_role: cluster_role.clone(),
        })?
        .rules
        .clone()
        .unwrap_or_default();
    if !trim {
        let uncovered = ceiling::uncovered(&requested, &ceiling_rules);
        if !uncovered.is_empty() {
            return Err(RefusalReason::BeyondCeiling {
                cluster_role,
                uncovered,
            });
        }
        return Ok(requested);
    }
    // manage: keep each (rule, verb) whose every atom the ceiling covers.
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for r in requested {
        let (inside, outside): (Vec<String>, Vec<String>) =
            r.verbs.iter().cloned().partition(|verb| {
                let one = PolicyRule {
                    verbs: vec![verb.clone()],
                    ..r.clone()
                };
                ceiling::uncovered(&[one], &ceiling_rules).is_empty()
            });
        for verb in outside {
            let one = PolicyRule {
                verbs: vec![verb],
                ..r.clone()
            };
            dropped.extend(ceiling::uncovered(&[one], &ceiling_rules));
        }
        if !inside.is_empty() {
            kept.push(PolicyRule { verbs: inside, ..r });
        }
    }
    if kept.is_empty() {
        return Err(RefusalReason::BeyondCeiling {
            cluster_role,
            uncovered: dropped,
        });
    }
    if !dropped.is_empty() {
        warnings.push(format!(
            "manage trimmed to ceiling ClusterRole {cluster_role:?}; not granted: {}",
            list(&dropped)
        ));
    }
    Ok(kept)
}

/// Each rule as one line a person reads: `get,list on deployments (apps) named web`.
pub fn describe(rules: &[PolicyRule]) -> Vec<String> {
    rules
        .iter()
        .map(|r| {
            let groups: Vec<String> = r
                .api_groups
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|g| if g.is_empty() { "core".into() } else { g })
                .collect();
            let mut line = format!(
                "{} on {} ({})",
                r.verbs.join(","),
                r.resources.clone().unwrap_or_default().join(","),
                groups.join(",")
            );
            if let Some(names) = r.resource_names.as_ref().filter(|n| !n.is_empty()) {
                line.push_str(&format!(" named {}", names.join(",")));
            }
            line
        })
        .collect()
}
