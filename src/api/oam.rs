//! `core.oam.dev/v1beta1` kinds, schema-compatible with KubeVela's CRDs: the same field names and
//! shapes, free-form `properties` preserved, so one manifest works with both.
use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An OAM Application: components with traits, and application-wide policies.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "core.oam.dev",
    version = "v1beta1",
    kind = "Application",
    namespaced,
    shortname = "app",
    shortname = "velaapp",
    category = "oam",
    status = "ApplicationStatus",
    printcolumn = r#"{"name":"Component","type":"string","jsonPath":".spec.components[*].name"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.components[*].type"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.status"}"#,
    printcolumn = r#"{"name":"Healthy","type":"boolean","jsonPath":".status.services[*].healthy"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.services[*].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    pub components: Vec<ApplicationComponent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<AppPolicy>,
    /// KubeVela's workflow (`steps`, `mode`); none given: the default workflow (apply every
    /// component, in every placement the policies name). Parsed by `render::workflow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::preserve_object")]
    pub workflow: Option<Value>,
}

/// One component: a workload of a definition `type`, with `properties` and ordered `traits`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationComponent {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::preserve_object")]
    pub properties: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::preserve_object_list")]
    pub inputs: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::preserve_object_list")]
    pub outputs: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traits: Vec<ApplicationTrait>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<BTreeMap<String, String>>,
}

/// A trait attached to a component.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ApplicationTrait {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::preserve_object")]
    pub properties: Option<Value>,
}

/// An application-wide policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct AppPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::preserve_object")]
    pub properties: Option<Value>,
}

/// Observed state, in KubeVela's shape (`status.status` is the phase).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Phase: `rendering`, `running`, `unhealthy`, `deleting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ApplicationComponentStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_resources: Vec<ClusterObjectReference>,
    /// The workflow's run for the latest revision (absent for the default workflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowStatus>,
    /// The ApplicationRevision (`<app>-v<N>`) the current spec is recorded in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<DefinitionRevisionRef>,
}

/// `status.workflow`, in KubeVela's shape: the run of the Application's workflow for one revision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    /// The revision this run deploys; a new revision starts a new run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_revision: Option<String>,
    /// `<steps mode>-<subSteps mode>`: `StepByStep-DAG` unless `spec.workflow.mode` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `executing`, `suspending`, `succeeded` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// True while a `suspend` step waits. Setting it to false resumes the run (what
    /// `oam-trust resume` and `vela workflow resume` do); always written, never absent.
    #[serde(default)]
    pub suspend: bool,
    #[serde(default)]
    pub terminated: bool,
    #[serde(default)]
    pub finished: bool,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<WorkflowStepStatus>,
}

/// One step's state (`status.workflow.steps[]`, and `subSteps` of a `step-group`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStepStatus {
    /// Stable for the run: `<name>` (KubeVela uses a random id; a name is unique in a workflow).
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// `pending`, `running`, `suspending`, `succeeded`, `failed` or `skipped`.
    pub phase: String,
    /// A bounded category: `Timeout`, `Skip`, `Suspended`, `Resumed`, `Wait`, `Execute`, `Apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the step started running (RFC 3339): what `timeout` and a suspend's `duration` count from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_execute_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_execute_time: Option<String>,
    /// A `step-group`'s steps (KubeVela's `WorkflowSubStepStatus`: groups do not nest, so its
    /// schema has no `subSteps` of its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::api::schema::workflow_sub_steps")]
    pub sub_steps: Vec<WorkflowStepStatus>,
}

/// Health of one component.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationComponentStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_definition: Option<WorkloadGvk>,
    /// What rendered the component: `built-in <type>`, or `ComponentDefinition <namespace>/<name>`
    /// (the Application's own namespace, or the system definitions namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traits: Vec<ApplicationTraitStatus>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadGvk {
    pub api_version: String,
    pub kind: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ApplicationTraitStatus {
    #[serde(rename = "type")]
    pub type_: String,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An object the Application applied.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Which kind of object a component renders as its main workload.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct WorkloadTypeDescriptor {
    /// A WorkloadDefinition name, or `autodetects.core.oam.dev`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<WorkloadGvk>,
}

/// Reference to the CRD behind a definition (`deployments.apps`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct DefinitionReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// How a definition renders: KubeVela's `cue` and `terraform`, plus the `kube` variant KubeVela
/// dropped in v1.9 (and `helm`, kept only so such manifests are not pruned).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Schematic {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cue: Option<CueSchematic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeSchematic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::preserve_object")]
    pub helm: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::preserve_object")]
    pub terraform: Option<Value>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CueSchematic {
    pub template: String,
}

/// A full Kubernetes object as template, and the flat parameters that are written into it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct KubeSchematic {
    #[schemars(schema_with = "crate::api::schema::preserve_object")]
    pub template: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<KubeParameter>,
}

/// One parameter of a `kube` schematic: `properties.<name>` is written at every field path.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeParameter {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: KubeParameterType,
    /// JSON field paths without a leading dot: `spec.template.spec.containers[0].image`.
    pub field_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KubeParameterType {
    #[default]
    String,
    Number,
    Boolean,
}

/// CUE snippets evaluated against live objects (kept as written; see reference §2.7).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionStatusPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChildResourceKind {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
}

/// Status shared by every definition kind.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<DefinitionRevisionRef>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionRevisionRef {
    pub name: String,
    pub revision: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_hash: Option<String>,
}

/// A component type: the workload it renders and how.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "core.oam.dev",
    version = "v1beta1",
    kind = "ComponentDefinition",
    namespaced,
    shortname = "comp",
    category = "oam",
    status = "DefinitionStatus",
    printcolumn = r#"{"name":"Workload-Kind","type":"string","jsonPath":".spec.workload.definition.kind"}"#,
    printcolumn = r#"{"name":"Description","type":"string","jsonPath":".metadata.annotations.definition\\.oam\\.dev/description"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ComponentDefinitionSpec {
    pub workload: WorkloadTypeDescriptor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schematic: Option<Schematic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DefinitionStatusPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub child_resource_kinds: Vec<ChildResourceKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_spec_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::preserve_object")]
    pub extension: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A trait type: what it patches or adds, and which workloads it applies to.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "core.oam.dev",
    version = "v1beta1",
    kind = "TraitDefinition",
    namespaced,
    shortname = "trait",
    category = "oam",
    status = "DefinitionStatus",
    printcolumn = r#"{"name":"Applies-To","type":"string","jsonPath":".spec.appliesToWorkloads"}"#,
    printcolumn = r#"{"name":"Description","type":"string","jsonPath":".metadata.annotations.definition\\.oam\\.dev/description"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TraitDefinitionSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applies_to_workloads: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts_with: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruptive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_ref: Option<DefinitionReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schematic: Option<Schematic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DefinitionStatusPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manage_workload: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_only: Option<bool>,
    /// `PreDispatch`, `DefaultDispatch` or `PostDispatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::preserve_object")]
    pub extension: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A policy type.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "core.oam.dev",
    version = "v1beta1",
    kind = "PolicyDefinition",
    namespaced,
    shortname = "def-policy",
    category = "oam",
    status = "DefinitionStatus",
    printcolumn = r#"{"name":"Description","type":"string","jsonPath":".metadata.annotations.definition\\.oam\\.dev/description"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDefinitionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_ref: Option<DefinitionReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schematic: Option<Schematic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manage_health_check: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `""` (output policy) or `Application` (transforms the Application before parsing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// A workload type backed by a CRD; the fallback for component types.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "core.oam.dev",
    version = "v1beta1",
    kind = "WorkloadDefinition",
    namespaced,
    shortname = "workload",
    category = "oam",
    status = "DefinitionStatus",
    printcolumn = r#"{"name":"Definition-Name","type":"string","jsonPath":".spec.definitionRef.name"}"#,
    printcolumn = r#"{"name":"Description","type":"string","jsonPath":".metadata.annotations.definition\\.oam\\.dev/description"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadDefinitionSpec {
    pub definition_ref: DefinitionReference,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub child_resource_kinds: Vec<ChildResourceKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_spec_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DefinitionStatusPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schematic: Option<Schematic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::preserve_object")]
    pub extension: Option<Value>,
}

/// The OAM CRDs: Application and the definition kinds.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Application::crd(),
        ComponentDefinition::crd(),
        TraitDefinition::crd(),
        PolicyDefinition::crd(),
        WorkloadDefinition::crd(),
        super::revision::ApplicationRevision::crd(),
    ]
}

impl Application {
    /// The ownerReference every object the Application owns carries: its controller, blocking its
    /// deletion until the garbage collector has removed them. `None` before the API server gave it a uid.
    pub fn controller_reference(
        &self,
    ) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
        Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                controller: Some(true),
                block_owner_deletion: Some(true),
                ..kube::Resource::owner_ref(self, &())?
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written sub-step schema (`schema::workflow_sub_steps`) lists exactly the step's
    /// fields but `subSteps`.
    #[test]
    fn sub_step_schema_matches_the_step_fields() {
        let crd = serde_json::to_value(Application::crd()).unwrap();
        let step = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["workflow"]["properties"]["steps"]["items"];
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            k.sort();
            k
        };
        let mut expected = keys(step);
        expected.retain(|k| k != "subSteps");
        assert_eq!(keys(&step["properties"]["subSteps"]["items"]), expected);
    }

    /// The approve guard (config/admission/deploy-guard.yaml) keeps every field of the status but
    /// `status.workflow.suspend` as it was: a field added to the status must be added there too,
    /// or an approver could write it.
    #[test]
    fn the_approve_guard_pins_every_other_status_field() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/admission/deploy-guard.yaml"
        ))
        .unwrap();
        let guard = text
            .split("\n---\n")
            .find(|d| {
                d.contains("name: oam-trust-approve-guard")
                    && d.contains("kind: ValidatingAdmissionPolicy\n")
            })
            .expect("the approve guard policy");
        let crd = serde_json::to_value(Application::crd()).unwrap();
        let status =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
        let pinned = |path: &str| guard.contains(&format!("object.{path} == oldObject.{path}"));
        for field in status["properties"].as_object().unwrap().keys() {
            if field != "workflow" {
                assert!(
                    pinned(&format!("status.{field}")),
                    "status.{field} is not pinned"
                );
            }
        }
        for field in status["properties"]["workflow"]["properties"]
            .as_object()
            .unwrap()
            .keys()
        {
            if field != "suspend" {
                assert!(
                    pinned(&format!("status.workflow.{field}")),
                    "status.workflow.{field} is not pinned"
                );
            }
        }
    }
}
