//! Which resources presets never touch. The kind -> resource table itself is `crate::kinds`, shared
//! with `render` (one table of scopes).
pub use crate::kinds::{ResourceKind, group_of, is_cluster_scoped, resource_kind};

/// API groups whose objects presets never grant: RBAC (escalation), admission, CRDs, certificates,
/// authn/authz reviews and the operator's own trust kind.
const FORBIDDEN_GROUPS: &[&str] = &[
    "rbac.authorization.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "certificates.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "oam-trust.dev",
];

/// Core resources presets never grant: credentials.
const FORBIDDEN_CORE: &[&str] = &["secrets", "serviceaccounts/token"];

/// Why presets never grant this resource, if they don't.
pub fn preset_forbidden(group: &str, resource: &str) -> Option<&'static str> {
    if FORBIDDEN_GROUPS.contains(&group) {
        Some("RBAC, admission and credential APIs are never part of a preset")
    } else if group.is_empty() && FORBIDDEN_CORE.contains(&resource) {
        Some("Secrets and ServiceAccount tokens are never part of a preset")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_known_and_unknown_kinds() {
        assert_eq!(
            resource_kind("apps/v1", "Deployment").resource,
            "deployments"
        );
        assert_eq!(resource_kind("v1", "Service").group, "");
        assert_eq!(
            resource_kind("networking.k8s.io/v1", "Ingress").resource,
            "ingresses"
        );
        assert_eq!(
            resource_kind("example.com/v1", "Policy").resource,
            "policies"
        );
        assert_eq!(
            resource_kind("example.com/v1", "Gateway").resource,
            "gateways"
        );
        assert_eq!(resource_kind("example.com/v1", "Box").resource, "boxes");
        assert!(!resource_kind("v1", "Namespace").namespaced);
        assert!(is_cluster_scoped(
            "rbac.authorization.k8s.io",
            "clusterroles"
        ));
        assert!(!is_cluster_scoped("apps", "deployments/scale"));
    }
}
