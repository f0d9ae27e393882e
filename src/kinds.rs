//! The Kubernetes kinds oam-trust knows: kind -> plural resource and scope, one table for `render`
//! (which objects carry no namespace) and `access` (what a Role rule names). Pure.
//!
//! Any other kind is guessed the way the API server's `UnsafeGuessKindToResource` does (lower-case,
//! English plural) and assumed namespaced, which is harmless for grants: a Role rule naming a
//! cluster-scoped resource grants nothing; the applier finds the real scope through discovery.

/// The RBAC view of a kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceKind {
    pub group: String,
    pub resource: String,
    pub namespaced: bool,
}

const KNOWN: &[(&str, &str, &str, bool)] = &[
    // (group, kind, resource, namespaced)
    ("", "Pod", "pods", true),
    ("", "Service", "services", true),
    ("", "ConfigMap", "configmaps", true),
    ("", "Secret", "secrets", true),
    ("", "ServiceAccount", "serviceaccounts", true),
    ("", "PersistentVolumeClaim", "persistentvolumeclaims", true),
    ("", "Endpoints", "endpoints", true),
    ("", "Event", "events", true),
    ("", "LimitRange", "limitranges", true),
    ("", "ResourceQuota", "resourcequotas", true),
    ("", "ReplicationController", "replicationcontrollers", true),
    ("", "Namespace", "namespaces", false),
    ("", "Node", "nodes", false),
    ("", "PersistentVolume", "persistentvolumes", false),
    ("apps", "Deployment", "deployments", true),
    ("apps", "StatefulSet", "statefulsets", true),
    ("apps", "DaemonSet", "daemonsets", true),
    ("apps", "ReplicaSet", "replicasets", true),
    ("apps", "ControllerRevision", "controllerrevisions", true),
    ("batch", "Job", "jobs", true),
    ("batch", "CronJob", "cronjobs", true),
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    ),
    ("networking.k8s.io", "Ingress", "ingresses", true),
    (
        "networking.k8s.io",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    ("networking.k8s.io", "IngressClass", "ingressclasses", false),
    (
        "policy",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    ("gateway.networking.k8s.io", "HTTPRoute", "httproutes", true),
    ("gateway.networking.k8s.io", "GRPCRoute", "grpcroutes", true),
    ("gateway.networking.k8s.io", "Gateway", "gateways", true),
    (
        "gateway.networking.k8s.io",
        "GatewayClass",
        "gatewayclasses",
        false,
    ),
    ("rbac.authorization.k8s.io", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    (
        "rbac.authorization.k8s.io",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    ("storage.k8s.io", "StorageClass", "storageclasses", false),
    ("storage.k8s.io", "CSIDriver", "csidrivers", false),
    (
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        false,
    ),
    (
        "scheduling.k8s.io",
        "PriorityClass",
        "priorityclasses",
        false,
    ),
    ("node.k8s.io", "RuntimeClass", "runtimeclasses", false),
    ("apiregistration.k8s.io", "APIService", "apiservices", false),
    ("core.oam.dev", "Application", "applications", true),
    ("oam-trust.dev", "GitLabTrust", "gitlabtrusts", false),
    ("storage.k8s.io", "CSINode", "csinodes", false),
    (
        "storage.k8s.io",
        "VolumeAttachment",
        "volumeattachments",
        false,
    ),
    (
        "flowcontrol.apiserver.k8s.io",
        "FlowSchema",
        "flowschemas",
        false,
    ),
    (
        "flowcontrol.apiserver.k8s.io",
        "PriorityLevelConfiguration",
        "prioritylevelconfigurations",
        false,
    ),
    (
        "certificates.k8s.io",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        false,
    ),
];

/// The group of an `apiVersion` (`apps/v1` -> `apps`, `v1` -> ``).
pub fn group_of(api_version: &str) -> &str {
    api_version
        .rsplit_once('/')
        .map(|(group, _)| group)
        .unwrap_or("")
}

fn guess_plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with('s')
        || lower.ends_with('x')
        || lower.ends_with('z')
        || lower.ends_with("ch")
        || lower.ends_with("sh")
    {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

/// The resource of `kind` in `api_version`.
pub fn resource_kind(api_version: &str, kind: &str) -> ResourceKind {
    let group = group_of(api_version);
    match KNOWN.iter().find(|(g, k, _, _)| *g == group && *k == kind) {
        Some((_, _, resource, namespaced)) => ResourceKind {
            group: group.to_string(),
            resource: resource.to_string(),
            namespaced: *namespaced,
        },
        None => ResourceKind {
            group: group.to_string(),
            resource: guess_plural(kind),
            namespaced: true,
        },
    }
}

/// Whether a resource (possibly `resource/subresource`) of `group` is known to be cluster-scoped.
pub fn is_cluster_scoped(group: &str, resource: &str) -> bool {
    let base = resource.split('/').next().unwrap_or(resource);
    KNOWN
        .iter()
        .any(|(g, _, r, namespaced)| *g == group && *r == base && !namespaced)
}

/// The API group of a manifest (`apps` for `apiVersion: apps/v1`, `` for `v1` or none).
pub fn group_of_manifest(doc: &serde_json::Value) -> &str {
    group_of(doc["apiVersion"].as_str().unwrap_or_default())
}
