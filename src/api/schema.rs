//! Schema overrides for fields whose Rust type does not map to a structural Kubernetes schema.
use schemars::{Schema, SchemaGenerator, json_schema};

/// Free-form object whose unknown fields the API server must keep (`properties` of components,
/// traits and policies; templates of definitions).
pub fn preserve_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// Any JSON value, kept as written.
pub fn preserve_any(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"x-kubernetes-preserve-unknown-fields": true})
}

/// A list of free-form objects.
pub fn preserve_object_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}})
}

/// A Go-style duration string (`15m`, `1h30m`), the format CEL's `duration()` reads.
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "pattern": crate::duration::PATTERN})
}

/// A map of free-form objects (the definitions an ApplicationRevision records, by name).
pub fn preserve_object_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "additionalProperties": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}})
}

/// `status.workflow.steps[].subSteps`: the step schema without `subSteps` (a CRD schema cannot
/// recurse, and step groups do not nest).
pub fn workflow_sub_steps(_: &mut SchemaGenerator) -> Schema {
    let string = json_schema!({"type": "string"});
    json_schema!({"type": "array", "items": {
        "type": "object",
        "required": ["id", "name", "type", "phase"],
        "properties": {
            "id": string, "name": string, "type": string, "phase": string, "reason": string,
            "message": string, "firstExecuteTime": string, "lastExecuteTime": string
        }
    }})
}
