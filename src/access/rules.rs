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
const APPLICATION_REVISIONS: &str = "applicationrevisions";
/// How many of an Application's most recent ApplicationRevisions a preset reads (`get`, by name):
/// `<app>-v<N-K+1>` to `<app>-v<N>`, N of `status.latestRevision`. It bounds the size of the Role; a
/// `--revision-limit` above it keeps older revisions that only people (not grants) read.
pub const READABLE_REVISIONS: i64 = 100;
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

/// `get` on the Application's recent revisions ([`READABLE_REVISIONS`]), what `oam-trust rollback`
/// reads; `None` before the first revision is recorded. Granted to `read`, `deploy` and `manage`
/// (not `approve`, which only resumes), and left out (without refusing the grant) where the
/// trust's ceiling does not allow it.
pub fn revision_rule(application: &crate::api::oam::Application) -> Option<PolicyRule> {
    let latest = application
        .status
        .as_ref()?
        .latest_revision
        .as_ref()?
        .revision;
    if latest < 1 {
        return None;
    }
    let app = super::grant::app_name(application);
    let first = latest.saturating_sub(READABLE_REVISIONS - 1).max(1);
    let names = (first..=latest)
        .map(|n| names::revision_name(&app, n))
        .collect();
    Some(rule(
        names::OAM_GROUP,
        APPLICATION_REVISIONS,
        &["get"],
        Some(names),
    ))
}

/// `rules` plus a preset's [`revision_rule`], when the trust's ceiling (if any) allows it: a ceiling
/// written before revisions existed keeps its grants, without rollback.
pub(super) fn with_revision_rule(
    mut rules: Vec<PolicyRule>,
    trust: &GitLabTrust,
    input: &GrantInput,
    access: &Access,
) -> Vec<PolicyRule> {
    let reads = matches!(
        access,
        Access::Preset(Preset::Read | Preset::Deploy | Preset::Manage)
    );
    let Some(rule) = reads.then(|| revision_rule(input.application)).flatten() else {
        return rules;
    };
    let allowed = match &trust.spec.ceiling {
        None => true,
        Some(c) => input.ceilings.get(&c.cluster_role_ref).is_some_and(|role| {
            let within = role.rules.as_deref().unwrap_or_default();
            ceiling::uncovered(std::slice::from_ref(&rule), within).is_empty()
        }),
    };
    if allowed {
        rules.push(rule);
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::rbac::v1::ClusterRole;
    use serde_json::json;

    use super::*;
    use crate::access::{GrantInput, derive_grants};
    use crate::api::oam::Application;

    /// Application `shop` with one `access` policy of trust `t`, at revision `latest` (if any).
    fn app(access: serde_json::Value, latest: Option<i64>) -> Application {
        let mut app = json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "shop", "namespace": "team"},
            "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx"}}],
                     "policies": [{"name": "ci", "type": "gitlab-access", "properties": {
                         "trust": "t", "subjects": [{"projectId": "1"}], "access": access}}]}
        });
        if let Some(n) = latest {
            app["status"] =
                json!({"latestRevision": {"name": format!("shop-v{n}"), "revision": n}});
        }
        serde_json::from_value(app).unwrap()
    }

    fn trust(ceiling: bool) -> GitLabTrust {
        let mut spec = json!({"issuer": "https://gitlab.example.com", "audiences": ["a"],
                              "namespaceSelector": {"matchLabels": {"ci": "yes"}},
                              "allow": [{"projectId": "1"}]});
        if ceiling {
            spec["ceiling"] = json!({"clusterRoleRef": "c"});
        }
        serde_json::from_value(
            json!({"apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust",
                                      "metadata": {"name": "t"}, "spec": spec}),
        )
        .unwrap()
    }

    /// The rules granted on applicationrevisions (empty: none) to the one grant, which must be granted
    /// without warnings.
    fn revision_rules(app: &Application, ceiling: Option<serde_json::Value>) -> Vec<PolicyRule> {
        let trusts = BTreeMap::from([("t".to_string(), trust(ceiling.is_some()))]);
        let ceilings: BTreeMap<String, ClusterRole> = ceiling
            .map(|rules| {
                let role = json!({"metadata": {"name": "c"}, "rules": rules});
                ("c".to_string(), serde_json::from_value(role).unwrap())
            })
            .into_iter()
            .collect();
        let set = derive_grants(&GrantInput {
            application: app,
            namespace_labels: Some(&BTreeMap::from([("ci".to_string(), "yes".to_string())])),
            trusts: &trusts,
            ceilings: &ceilings,
            rendered: &[],
        });
        assert_eq!(set.refusals, [], "granted");
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        set.grants[0]
            .role
            .rules
            .iter()
            .flatten()
            .filter(|r| r.resources.as_deref() == Some(&[APPLICATION_REVISIONS.to_string()]))
            .cloned()
            .collect()
    }

    fn names_of(n: std::ops::RangeInclusive<i64>) -> Option<Vec<String>> {
        Some(n.map(|i| format!("shop-v{i}")).collect())
    }

    #[test]
    fn read_deploy_and_manage_read_the_recent_revisions_by_name() {
        let all = json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]);
        for preset in ["read", "deploy", "manage"] {
            let rules = revision_rules(&app(json!(preset), Some(3)), Some(all.clone()));
            assert_eq!(
                rules,
                [rule(
                    names::OAM_GROUP,
                    APPLICATION_REVISIONS,
                    &["get"],
                    names_of(1..=3)
                )],
                "{preset}"
            );
        }
        // At most READABLE_REVISIONS, the newest.
        let rules = revision_rules(&app(json!("deploy"), Some(250)), None);
        assert_eq!(rules[0].resource_names, names_of(151..=250));
    }

    #[test]
    fn no_revision_yet_no_rule_and_explicit_rules_get_none() {
        assert_eq!(revision_rules(&app(json!("deploy"), None), None), []);
        assert_eq!(revision_rules(&app(json!("read"), Some(0)), None), []);
        // approve only resumes a workflow: it reads no revision.
        assert_eq!(revision_rules(&app(json!("approve"), Some(3)), None), []);
        let explicit = json!({"rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]});
        let all = json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]);
        assert_eq!(revision_rules(&app(explicit, Some(3)), Some(all)), []);
    }

    #[test]
    fn a_ceiling_without_revisions_keeps_the_grant_without_them() {
        let apps_only = json!([{"apiGroups": ["core.oam.dev"], "resources": ["applications"],
                                "verbs": ["get", "list", "watch", "patch", "update"]}]);
        assert_eq!(
            revision_rules(&app(json!("deploy"), Some(3)), Some(apps_only.clone())),
            []
        );
        let mut with_revisions = apps_only;
        with_revisions.as_array_mut().unwrap().push(
            json!({"apiGroups": ["core.oam.dev"], "resources": ["applicationrevisions"], "verbs": ["get"]}),
        );
        assert_eq!(
            revision_rules(&app(json!("deploy"), Some(3)), Some(with_revisions))[0].resource_names,
            names_of(1..=3)
        );
    }
}
