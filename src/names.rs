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
pub const ACCESS_DECLARATION_TYPE: &str = "gitlab-access";
