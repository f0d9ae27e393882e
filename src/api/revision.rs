//! `ApplicationRevision` (`core.oam.dev/v1beta1`, KubeVela's kind): one per change of an
//! Application's spec, named `<app>-v<N>`, holding that spec and the definitions it rendered with, so
//! a rollback restores both. Written by the controller, owned by the Application (deleted with it),
//! kept up to `--revision-limit` (never the one deployed).
use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::oam::{ApplicationSpec, WorkflowStatus};

/// A recorded revision of an Application. Immutable once written, apart from its status.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "core.oam.dev",
    version = "v1beta1",
    kind = "ApplicationRevision",
    namespaced,
    shortname = "apprev",
    category = "oam",
    status = "ApplicationRevisionStatus",
    printcolumn = r#"{"name":"Application","type":"string","jsonPath":".spec.application.metadata.name"}"#,
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".spec.revision"}"#,
    printcolumn = r#"{"name":"Hash","type":"string","jsonPath":".spec.revisionHash"}"#,
    printcolumn = r#"{"name":"Succeeded","type":"boolean","jsonPath":".status.succeeded"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationRevisionSpec {
    /// The Application as it was: its name, namespace, labels, annotations and spec.
    pub application: RevisionApplication,
    /// N of `<app>-v<N>`.
    pub revision: i64,
    /// Hash of the spec and the definitions (what makes two revisions the same).
    pub revision_hash: String,
    /// The definitions the spec rendered with, by name (full objects); a type absent from every map
    /// rendered with oam-trust's built-in of that name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::api::schema::preserve_object_map")]
    pub component_definitions: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::api::schema::preserve_object_map")]
    pub trait_definitions: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::api::schema::preserve_object_map")]
    pub policy_definitions: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::api::schema::preserve_object_map")]
    pub workload_definitions: BTreeMap<String, Value>,
}

/// `spec.application`: the parts of the Application a revision keeps.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionApplication {
    pub metadata: RevisionMetadata,
    pub spec: ApplicationSpec,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionMetadata {
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationRevisionStatus {
    /// The revision's workflow ran to its end (`status.workflow.finished` of the Application).
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowStatus>,
}
