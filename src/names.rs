//! Every name the operator writes into the cluster, in one place: API groups, label keys, the field
//! manager, finalizers. Anything that another module compares or writes comes from here.

/// API group of the operator's own kinds (GitLabTrust).
pub const TRUST_GROUP: &str = "oam-trust.dev";
pub const TRUST_VERSION: &str = "v1alpha1";
/// API group of OAM kinds, as KubeVela serves them.
pub const OAM_GROUP: &str = "core.oam.dev";
pub const OAM_VERSION: &str = "v1beta1";

/// Server-side apply field manager for every object the operator writes.
pub const FIELD_MANAGER: &str = "oam-trust";
/// `app.kubernetes.io/managed-by` value on every rendered object.
pub const MANAGED_BY: &str = "oam-trust";

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_APP_NAME: &str = "app.oam.dev/name";
pub const LABEL_APP_NAMESPACE: &str = "app.oam.dev/namespace";
pub const LABEL_APP_COMPONENT: &str = "app.oam.dev/component";
pub const LABEL_RESOURCE_TYPE: &str = "app.oam.dev/resourceType";
pub const LABEL_WORKLOAD_TYPE: &str = "workload.oam.dev/type";
pub const LABEL_TRAIT_TYPE: &str = "trait.oam.dev/type";
/// `trait.oam.dev/resource`: the `outputs.<name>` key an auxiliary object was rendered from.
pub const LABEL_TRAIT_RESOURCE: &str = "trait.oam.dev/resource";
/// `app.oam.dev/resourceType` values.
pub const RESOURCE_TYPE_WORKLOAD: &str = "WORKLOAD";
pub const RESOURCE_TYPE_TRAIT: &str = "TRAIT";
/// `trait.oam.dev/type` of a component's own auxiliary outputs (e.g. webservice's Service).
pub const AUXILIARY_WORKLOAD: &str = "AuxiliaryWorkload";
/// Trait and policy type of access declarations: rendering accepts and skips them.
pub const GITLAB_ACCESS: &str = "gitlab-access";

/// Where system definitions live (KubeVela's): visible to Applications of every namespace.
pub const DEFAULT_DEFINITIONS_NAMESPACE: &str = "vela-system";

/// The namespace of an object that names none (what the API server defaults it to).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The namespace an object lives in: its own, or [`DEFAULT_NAMESPACE`].
pub fn namespace_of<K: kube::Resource>(object: &K) -> &str {
    object
        .meta()
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// Finalizer on an Application, present only while it has objects outside its namespace.
pub const FINALIZER: &str = "oam-trust.dev/cleanup";

/// Annotation on an Application naming the ServiceAccount (in its namespace) whose permissions bound
/// what the Application may create. KubeVela's name for the same idea.
pub const APPLIER_ANNOTATION: &str = "app.oam.dev/service-account-name";
/// The applier ServiceAccount used when the annotation is absent.
pub const DEFAULT_APPLIER: &str = "oam-trust-applier";

// ApplicationRevisions (`controller::revision`).
/// Label on an ApplicationRevision: the hash of what it records (KubeVela's name).
pub const LABEL_APP_REVISION_HASH: &str = "app.oam.dev/app-revision-hash";
/// Annotation `oam-trust rollback` sets on an Application with the restored spec: `"<N>"`, the
/// revision restored. While the spec equals that revision's, the Application renders with the
/// definitions the revision recorded. The one annotation a deploy identity may change
/// (`config/admission/deploy-guard.yaml`).
pub const ANNOTATION_ROLLBACK_REVISION: &str = "oam-trust.dev/rollback-revision";
/// Default of `--revision-limit`: how many ApplicationRevisions are kept per Application.
pub const DEFAULT_REVISION_LIMIT: usize = 10;

/// Name of revision `n` of Application `app`: `<app>-v<n>`, KubeVela's.
pub fn revision_name(app: &str, n: i64) -> String {
    format!("{app}-v{n}")
}

// Grant objects (ServiceAccount, Role, RoleBinding of a `gitlab-access` declaration).
/// Label on every object of a grant; its value is the grant's object name.
pub const LABEL_GRANT: &str = "oam-trust.dev/grant";
/// Annotation carrying the grant id (`policy/<name>`, `component/<c>/trait/<i>`).
pub const ANNOTATION_GRANT_ID: &str = "oam-trust.dev/grant-id";
/// Annotation carrying the GitLabTrust name.
pub const ANNOTATION_TRUST: &str = "oam-trust.dev/trust";
/// Label on the RoleBindings that give the operator's own identities their rights in one namespace
/// (`access::rights`): `ceiling` (the controller holds a ceiling there) or `exchange` (the exchange may
/// create binding Secrets and tokens there). Nothing outside such a namespace is theirs to write.
pub const LABEL_NAMESPACE_RIGHTS: &str = "oam-trust.dev/namespace-rights";
/// Name of the RoleBinding of the exchange's namespace rights.
pub const EXCHANGE_RIGHTS_BINDING: &str = "oam-trust-exchange";
/// Prefix of the RoleBinding names binding the controller to a ceiling in a namespace.
pub const CEILING_RIGHTS_PREFIX: &str = "oam-trust-ceiling-";
/// Label selecting the deploy guard's parameter ConfigMaps (`config/admission/deploy-guard.yaml`).
pub const LABEL_DEPLOY_GUARD: &str = "oam-trust.dev/deploy-guard";
/// The ValidatingAdmissionPolicyBindings (`config/admission/`) that bound grant identities beyond RBAC;
/// each counts as installed when it and the policy it binds exist. While one is missing, no token is
/// issued for a grant that writes (`deploy`, `manage`, explicit rules with write verbs), and the
/// Application and the trust say why.
pub const GUARD_BINDINGS: &[&str] = &[
    "oam-trust-deploy-guard",
    "oam-trust-deploy-guard-base",
    "oam-trust-grant-guard",
    "oam-trust-grant-guard-params",
    "oam-trust-approve-guard",
];
/// Deploy-guard ConfigMap key holding the Application name the parameters are about.
pub const GUARD_KEY_APPLICATION: &str = "application";

// Binding Secrets of issued tokens.
/// Label on every binding Secret (for people: the reaper lists TokenIssuances, not Secrets).
pub const LABEL_BINDING: &str = "oam-trust.dev/token-binding";
pub const LABEL_PROJECT_ID: &str = "oam-trust.dev/gitlab-project-id";
pub const LABEL_PIPELINE_ID: &str = "oam-trust.dev/gitlab-pipeline-id";
pub const LABEL_JOB_ID: &str = "oam-trust.dev/gitlab-job-id";
pub const LABEL_APPLICATION: &str = "oam-trust.dev/application";
/// Annotation: RFC 3339 time at which the token ends (its TokenIssuance is deleted, and so the Secret).
pub const ANNOTATION_EXPIRES: &str = "oam-trust.dev/expires-at";
/// Annotation: the grant's object name (the ServiceAccount the token is of).
pub const ANNOTATION_GRANT: &str = "oam-trust.dev/grant";
pub const ANNOTATION_ISSUER: &str = "oam-trust.dev/issuer";
pub const ANNOTATION_JTI: &str = "oam-trust.dev/jti";
pub const ANNOTATION_CORRELATION: &str = "oam-trust.dev/correlation-id";
/// Annotation: `replay-guard`, `token-binding`, or `replay-guard,token-binding`.
pub const ANNOTATION_ROLE: &str = "oam-trust.dev/binding-role";
/// Annotation on a binding Secret: the TokenIssuance that owns it (and the record of its exchange).
pub const ANNOTATION_ISSUANCE: &str = "oam-trust.dev/issuance";
/// Kind of the operator's issuance records.
pub const ISSUANCE_KIND: &str = "TokenIssuance";
/// `spec.role` of a TokenIssuance (and the binding-role annotation of its Secret).
pub const ROLE_GUARD_AND_BINDING: &str = "replay-guard,token-binding";
pub const ROLE_GUARD: &str = "replay-guard";
pub const ROLE_BINDING: &str = "token-binding";
/// Secret type of binding Secrets.
pub const SECRET_TYPE: &str = "oam-trust.dev/token-binding";

// API-server OIDC mode (`access::authn`): identities the API server maps a GitLab CI ID token to.
/// Username prefix of a GitLab CI job the API server authenticates itself (`gitlab:ci_job:<job id>`):
/// the GitLab agent's `ci_job` username, so the guard admission policies (`config/admission/`), which
/// treat `gitlab:ci_job:*` as a grant identity, judge such a job as they judge the agent's.
pub const CI_JOB_USERNAME_PREFIX: &str = "gitlab:ci_job:";
/// Prefix of the group a grant's RoleBinding names in API-server mode:
/// `oam-trust:grant:<namespace>:<grant object name>` ([`grant_group`]).
pub const GRANT_GROUP_PREFIX: &str = "oam-trust:grant:";
/// User extra keys of a job the API server authenticates: where it came from, for audit logs.
pub const EXTRA_PROJECT_PATH: &str = "oam-trust.dev/project-path";
pub const EXTRA_PROJECT_ID: &str = "oam-trust.dev/project-id";
pub const EXTRA_PIPELINE_ID: &str = "oam-trust.dev/pipeline-id";
pub const EXTRA_REF: &str = "oam-trust.dev/ref";

/// The API-server-mode group of the grant whose objects are named `grant` in `namespace`.
pub fn grant_group(namespace: &str, grant: &str) -> String {
    format!("{GRANT_GROUP_PREFIX}{namespace}:{grant}")
}
