//! The operator's own rights, one namespace at a time. Neither identity of the operator holds a
//! ceiling or the right to mint tokens cluster-wide: the controller binds them where grants live.
//!
//! - **ceiling**: a RoleBinding of the controller's ServiceAccount to each ceiling ClusterRole used by
//!   a grant in the namespace. Kubernetes lets a subject create a Role only within the permissions it
//!   holds, so the API server itself refuses a grant beyond the ceiling, whatever the code decided.
//! - **exchange**: a RoleBinding of the exchange's ServiceAccount to the exchange's namespace role
//!   (binding Secrets and `serviceaccounts/token`), so the exchange can mint tokens only where grants
//!   live.
//!
//! Both carry [`LABEL_NAMESPACE_RIGHTS`]; [`stale`] says which of them no trust selects any more.
//! The operator's admission policy (`charts/oam-trust/templates/operator-guard.yaml`) refuses any
//! other RoleBinding shape from the controller, and any of these in a system namespace.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::objects::NAME_HASH_HEX;
use crate::api::trust::GitLabTrust;
use crate::names::{
    CEILING_RIGHTS_PREFIX, EXCHANGE_RIGHTS_BINDING, LABEL_MANAGED_BY, LABEL_NAMESPACE_RIGHTS,
    MANAGED_BY,
};

/// Value of [`LABEL_NAMESPACE_RIGHTS`] on a ceiling binding.
pub const RIGHTS_CEILING: &str = "ceiling";
/// Value of [`LABEL_NAMESPACE_RIGHTS`] on the exchange's binding.
pub const RIGHTS_EXCHANGE: &str = "exchange";

/// Who receives namespace rights. Unset parts bind nothing (a local operator with admin
/// credentials needs no rights of its own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rights {
    /// The controller's ServiceAccount, bound to each ceiling where its grants live.
    pub controller: Option<ServiceAccountRef>,
    /// The exchange's ServiceAccount and the ClusterRole it is bound to where grants live.
    pub exchange: Option<(ServiceAccountRef, String)>,
}

/// A ServiceAccount, parsed from its username `system:serviceaccount:<namespace>:<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for ServiceAccountRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("system:serviceaccount:").ok_or_else(|| {
            format!(
                "{s:?} is not a ServiceAccount username (system:serviceaccount:<namespace>:<name>)"
            )
        })?;
        match rest.split_once(':') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains(':') => {
                Ok(ServiceAccountRef {
                    namespace: ns.into(),
                    name: name.into(),
                })
            }
            _ => Err(format!(
                "{s:?} is not a ServiceAccount username (system:serviceaccount:<namespace>:<name>)"
            )),
        }
    }
}

impl ServiceAccountRef {
    fn subject(&self) -> Subject {
        Subject {
            kind: "ServiceAccount".into(),
            name: self.name.clone(),
            namespace: Some(self.namespace.clone()),
            api_group: None,
        }
    }
}

/// Name of the controller's binding to `ceiling` (a hash keeps any ClusterRole name within 63).
pub fn ceiling_binding_name(ceiling: &str) -> String {
    let digest = Sha256::digest(ceiling.as_bytes());
    let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{CEILING_RIGHTS_PREFIX}{}", &hash[..NAME_HASH_HEX])
}

fn binding(
    namespace: &str,
    name: String,
    kind: &str,
    cluster_role: &str,
    to: &ServiceAccountRef,
) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                (LABEL_NAMESPACE_RIGHTS.to_string(), kind.to_string()),
                (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            ])),
            annotations: Some(BTreeMap::from([(
                "oam-trust.dev/cluster-role".to_string(),
                cluster_role.to_string(),
            )])),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: cluster_role.into(),
        },
        subjects: Some(vec![to.subject()]),
    }
}

impl Rights {
    /// The RoleBindings the operator needs in `namespace` to write grants within `ceilings` there
    /// and to exchange tokens for them. Applied before the grants (the Roles need the ceiling).
    pub fn bindings(&self, namespace: &str, ceilings: &BTreeSet<String>) -> Vec<RoleBinding> {
        let mut out = Vec::new();
        if let Some(controller) = &self.controller {
            for ceiling in ceilings {
                out.push(binding(
                    namespace,
                    ceiling_binding_name(ceiling),
                    RIGHTS_CEILING,
                    ceiling,
                    controller,
                ));
            }
        }
        if let Some((exchange, role)) = &self.exchange {
            out.push(binding(
                namespace,
                EXCHANGE_RIGHTS_BINDING.into(),
                RIGHTS_EXCHANGE,
                role,
                exchange,
            ));
        }
        out
    }
}

/// The rights bindings no trust justifies any more: in a namespace no trust selects, or (for a
/// ceiling) naming a ceiling no trust selecting the namespace has. A namespace that is gone, a
/// selector that does not parse, or a label value not ours counts as not selected.
pub fn stale<'a>(
    bindings: &'a [RoleBinding],
    trusts: &BTreeMap<String, GitLabTrust>,
    namespaces: &BTreeMap<String, std::sync::Arc<Namespace>>,
) -> Vec<&'a RoleBinding> {
    bindings
        .iter()
        .filter(|rb| {
            let ns = rb.namespace().unwrap_or_default();
            let Some(labels) = namespaces.get(&ns).map(|n| n.labels().clone()) else {
                return true;
            };
            let selecting = trusts.values().filter(|t| {
                super::selector::selects(t.spec.namespace_selector.as_ref(), &labels)
                    .unwrap_or(false)
            });
            let kind = rb.labels().get(LABEL_NAMESPACE_RIGHTS).map(String::as_str);
            let keep = match kind {
                Some(RIGHTS_EXCHANGE) => selecting.count() > 0,
                Some(RIGHTS_CEILING) => selecting
                    .filter_map(|t| t.spec.ceiling.as_ref())
                    .any(|c| c.cluster_role_ref == rb.role_ref.name),
                _ => false,
            };
            !keep
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sa(s: &str) -> ServiceAccountRef {
        s.parse().unwrap()
    }

    fn rights() -> Rights {
        Rights {
            controller: Some(sa("system:serviceaccount:oam-trust:ctl")),
            exchange: Some((
                sa("system:serviceaccount:oam-trust:xch"),
                "oam-trust-exchange-namespace".into(),
            )),
        }
    }

    #[test]
    fn usernames_that_are_not_service_accounts_are_refused() {
        for bad in [
            "admin",
            "system:serviceaccount:ns",
            "system:serviceaccount::name",
            "system:serviceaccount:ns:",
            "system:serviceaccount:a:b:c",
        ] {
            assert!(bad.parse::<ServiceAccountRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn one_ceiling_binding_per_ceiling_and_one_for_the_exchange() {
        let ceilings = BTreeSet::from(["deployer".to_string(), "reader".to_string()]);
        let rbs = rights().bindings("shop", &ceilings);
        assert_eq!(rbs.len(), 3);
        assert_eq!(rbs[0].role_ref.name, "deployer");
        assert_eq!(rbs[0].subjects.as_ref().unwrap()[0].name, "ctl");
        assert_eq!(
            rbs[2].metadata.name.as_deref(),
            Some(EXCHANGE_RIGHTS_BINDING)
        );
        assert_eq!(rbs[2].role_ref.name, "oam-trust-exchange-namespace");
        let name = rbs[0].metadata.name.clone().unwrap();
        assert!(
            name.starts_with(CEILING_RIGHTS_PREFIX) && name.len() <= 63,
            "{name}"
        );
        assert_ne!(rbs[0].metadata.name, rbs[1].metadata.name);
        assert!(Rights::default().bindings("shop", &ceilings).is_empty());
    }

    #[test]
    fn bindings_in_namespaces_no_trust_selects_are_stale() {
        let trust: GitLabTrust = serde_json::from_value(json!({
            "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust", "metadata": {"name": "t"},
            "spec": {"issuer": "https://gitlab.example.com", "audiences": ["a"],
                     "jwks": {"static": "{\"keys\":[]}"},
                     "namespaceSelector": {"matchLabels": {"team": "shop"}},
                     "ceiling": {"clusterRoleRef": "deployer"}}
        }))
        .unwrap();
        let trusts = BTreeMap::from([("t".to_string(), trust)]);
        let ns = |name: &str, team: &str| {
            let n: Namespace = serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {"team": team}}}),
            )
            .unwrap();
            (name.to_string(), std::sync::Arc::new(n))
        };
        let namespaces = BTreeMap::from([ns("shop", "shop"), ns("other", "other")]);
        let ceilings = BTreeSet::from(["deployer".to_string(), "gone".to_string()]);
        let mut all = rights().bindings("shop", &ceilings);
        all.extend(rights().bindings("other", &ceilings));
        all.extend(rights().bindings("deleted", &ceilings));
        let stale: Vec<String> = stale(&all, &trusts, &namespaces)
            .iter()
            .map(|rb| format!("{}/{}", rb.namespace().unwrap(), rb.role_ref.name))
            .collect();
        assert_eq!(
            stale,
            [
                "shop/gone",
                "other/deployer",
                "other/gone",
                "other/oam-trust-exchange-namespace",
                "deleted/deployer",
                "deleted/gone",
                "deleted/oam-trust-exchange-namespace",
            ]
        );
    }
}
