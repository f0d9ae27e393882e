//! RBAC rule coverage, as the API server's escalation check does it (`validation.Covers`): a grant
//! is within a ceiling only if every atomic permission it holds, one (apiGroup, resource, verb,
//! resourceName) at a time, is allowed by some single ceiling rule.
//!
//! Wildcards follow RBAC: a ceiling `*` covers anything in that position, `*/<sub>` covers that
//! subresource of every resource; a requested `*` is only covered by a ceiling `*` (it means "all,
//! including kinds added later"). A ceiling rule with `resourceNames` covers only requests that name
//! one of them; a requested rule without names needs a ceiling rule without names.
use std::fmt;

use k8s_openapi::api::rbac::v1::PolicyRule;

/// One atomic permission.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleAtom {
    pub api_group: String,
    pub resource: String,
    pub verb: String,
    pub resource_name: Option<String>,
}

impl fmt::Display for RuleAtom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.api_group.is_empty() {
            "core"
        } else {
            &self.api_group
        };
        write!(f, "{} {}.{}", self.verb, self.resource, group)?;
        if let Some(name) = &self.resource_name {
            write!(f, " {name:?}")?;
        }
        Ok(())
    }
}

/// Splits rules into atoms (resource rules only; `nonResourceURLs` are not atoms of a Role).
pub fn atoms(rules: &[PolicyRule]) -> Vec<RuleAtom> {
    let mut out = Vec::new();
    for rule in rules {
        let names: Vec<Option<String>> = match rule.resource_names.as_deref() {
            Some(names) if !names.is_empty() => names.iter().cloned().map(Some).collect(),
            _ => vec![None],
        };
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                for verb in &rule.verbs {
                    for name in &names {
                        out.push(RuleAtom {
                            api_group: group.clone(),
                            resource: resource.clone(),
                            verb: verb.clone(),
                            resource_name: name.clone(),
                        });
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn has(list: Option<&[String]>, wanted: &str) -> bool {
    list.unwrap_or_default()
        .iter()
        .any(|item| item == "*" || item == wanted)
}

fn resource_covered(ceiling: &[String], resource: &str) -> bool {
    ceiling.iter().any(|r| {
        r == "*"
            || r == resource
            || match (r.strip_prefix("*/"), resource.split_once('/')) {
                (Some(any_sub), Some((_, sub))) => any_sub == sub,
                _ => false,
            }
    })
}

/// Whether one ceiling rule allows the atom.
pub fn rule_covers(ceiling: &PolicyRule, atom: &RuleAtom) -> bool {
    let names = ceiling.resource_names.as_deref().unwrap_or_default();
    has(Some(&ceiling.verbs), &atom.verb)
        && has(ceiling.api_groups.as_deref(), &atom.api_group)
        && resource_covered(
            ceiling.resources.as_deref().unwrap_or_default(),
            &atom.resource,
        )
        && (names.is_empty()
            || atom
                .resource_name
                .as_ref()
                .is_some_and(|n| names.contains(n)))
}

/// Whether some ceiling rule allows the atom.
pub fn covered(ceiling: &[PolicyRule], atom: &RuleAtom) -> bool {
    ceiling.iter().any(|rule| rule_covers(rule, atom))
}

/// The atoms of `requested` that no ceiling rule allows; empty means `requested` is within `ceiling`.
pub fn uncovered(requested: &[PolicyRule], ceiling: &[PolicyRule]) -> Vec<RuleAtom> {
    atoms(requested)
        .into_iter()
        .filter(|atom| !covered(ceiling, atom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PolicyRule {
            api_groups: Some(v(groups)),
            resources: Some(v(resources)),
            verbs: v(verbs),
            resource_names: (!names.is_empty()).then(|| v(names)),
            non_resource_urls: None,
        }
    }

    #[test]
    fn subresource_wildcards_do_not_cover_the_parent() {
        let ceiling = [rule(&["apps"], &["*/scale"], &["update"], &[])];
        assert!(
            uncovered(
                &[rule(&["apps"], &["deployments/scale"], &["update"], &[])],
                &ceiling
            )
            .is_empty()
        );
        assert_eq!(
            uncovered(
                &[rule(&["apps"], &["deployments"], &["update"], &[])],
                &ceiling
            )
            .len(),
            1
        );
    }

    #[test]
    fn requested_wildcards_need_ceiling_wildcards() {
        let ceiling = [rule(
            &["apps"],
            &["deployments", "statefulsets"],
            &["get", "list"],
            &[],
        )];
        assert_eq!(
            uncovered(&[rule(&["apps"], &["*"], &["get"], &[])], &ceiling),
            vec![RuleAtom {
                api_group: "apps".into(),
                resource: "*".into(),
                verb: "get".into(),
                resource_name: None,
            }]
        );
        assert_eq!(
            uncovered(&[rule(&["*"], &["deployments"], &["get"], &[])], &ceiling).len(),
            1
        );
    }

    #[test]
    fn named_ceiling_covers_only_named_requests() {
        let ceiling = [rule(&[""], &["configmaps"], &["get"], &["a"])];
        assert!(uncovered(&[rule(&[""], &["configmaps"], &["get"], &["a"])], &ceiling).is_empty());
        assert_eq!(
            uncovered(&[rule(&[""], &["configmaps"], &["get"], &[])], &ceiling).len(),
            1
        );
        assert_eq!(
            uncovered(
                &[rule(&[""], &["configmaps"], &["get"], &["a", "b"])],
                &ceiling
            )
            .len(),
            1
        );
    }
}
