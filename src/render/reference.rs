//! `ref-objects`: a component made of objects that already exist, named by `resource` (+ `group`)
//! and `name` or `labelSelector`, or by `apiVersion`/`kind`/`metadata.name`. Rendering stays pure:
//! whoever renders in a cluster reads the referenced objects first (the controller does, with the
//! Application's applier rights) and hands them in as [`Referenced`]; offline, the component
//! renders nothing and says so in a warning.
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::component::ComponentOutput;
use super::error::RenderError;
use super::params::{self, Params};
use super::{ComponentContext, RenderWarning};
use crate::api::oam::Application;

/// What a `ref-objects` entry selects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// `resource: deployment` (singular, plural or kind, as KubeVela's REST mapper), `group`.
    Resource { resource: String, group: String },
    /// `apiVersion: v1`, `kind: ConfigMap`.
    Kind { api_version: String, kind: String },
}

/// One referenced set of objects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectReference {
    pub target: Target,
    /// The Application's namespace unless the entry names one (ignored for cluster-scoped kinds).
    pub namespace: String,
    /// One object by name, or every object matching `label_selector`.
    pub name: Option<String>,
    pub label_selector: BTreeMap<String, String>,
}

impl std::fmt::Display for ObjectReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Resource { resource, group } if group.is_empty() => write!(f, "{resource}")?,
            Target::Resource { resource, group } => write!(f, "{resource}.{group}")?,
            Target::Kind { api_version, kind } => write!(f, "{api_version} {kind}")?,
        }
        match &self.name {
            Some(name) => write!(f, " {}/{name}", self.namespace),
            None => {
                let selector: Vec<String> = self
                    .label_selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                write!(
                    f,
                    " in {} with labels {}",
                    self.namespace,
                    selector.join(",")
                )
            }
        }
    }
}

/// The objects read for each reference, or why they could not be read (the controller's reads).
pub type Referenced = Arc<BTreeMap<ObjectReference, Result<Vec<Value>, String>>>;

/// Parses one entry of `objects`.
fn entry(
    p: &Params,
    field: &str,
    value: &Value,
    app_namespace: &str,
) -> Result<ObjectReference, RenderError> {
    let Value::Object(map) = value else {
        return Err(p.type_error(field, "object", value));
    };
    let string = |key: &str| -> Result<Option<String>, RenderError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(p.type_error(&format!("{field}.{key}"), "string", other)),
        }
    };
    let meta = map.get("metadata").and_then(Value::as_object);
    let meta_string = |key: &str| {
        meta.and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let target = match (string("resource")?, string("apiVersion")?, string("kind")?) {
        (Some(resource), _, _) => Target::Resource {
            resource: resource.to_ascii_lowercase(),
            group: string("group")?.unwrap_or_default(),
        },
        (None, Some(api_version), Some(kind)) => Target::Kind { api_version, kind },
        _ => {
            return Err(p.invalid(
                field,
                "name the objects with resource (and group), or with apiVersion and kind",
            ));
        }
    };
    if string("cluster")?.is_some_and(|c| !c.is_empty() && c != "local") {
        return Err(p.invalid(
            &format!("{field}.cluster"),
            "only the local cluster is supported (multi-cluster is not implemented)",
        ));
    }
    let name = string("name")?.or_else(|| meta_string("name"));
    let namespace = string("namespace")?
        .or_else(|| meta_string("namespace"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| app_namespace.to_string());
    let label_selector = match map.get("labelSelector") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) if super::is_string_map(v) => serde_json::from_value(v.clone()).unwrap_or_default(),
        Some(other) => {
            return Err(p.type_error(&format!("{field}.labelSelector"), "map of strings", other));
        }
    };
    if name.is_none() && label_selector.is_empty() {
        return Err(p.invalid(field, "name one object (name) or select by labelSelector"));
    }
    Ok(ObjectReference {
        target,
        namespace,
        name,
        label_selector,
    })
}

fn entries(p: &mut Params, app_namespace: &str) -> Result<Vec<ObjectReference>, RenderError> {
    let items = match p.opt("objects") {
        None => return Err(p.missing("objects")),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(p.invalid("objects", "at least one object is required"));
        }
        Some(Value::Array(items)) => items.clone(),
        Some(other) => return Err(p.type_error("objects", "array of objects", other)),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| entry(p, &format!("objects[{i}]"), v, app_namespace))
        .collect()
}

/// Every reference of `app`'s `ref-objects` components: what must be read before it renders.
pub fn references(app: &Application) -> Result<Vec<ObjectReference>, RenderError> {
    let app_namespace = crate::names::namespace_of(app);
    let mut out = Vec::new();
    for c in app
        .spec
        .components
        .iter()
        .filter(|c| c.type_ == "ref-objects")
    {
        let scope = format!("component {:?}", c.name);
        let (result, _) = params::collect_warnings(|| -> Result<_, RenderError> {
            let mut p = Params::root(&scope, c.properties.as_ref())?;
            entries(&mut p, app_namespace)
        });
        out.extend(result?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A live object made fit to apply again: what the API server set is dropped.
pub fn cleaned(live: &Value) -> Value {
    let mut object = live.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = object["metadata"].as_object_mut() {
        for key in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "ownerReferences",
            "selfLink",
            "finalizers",
            "generateName",
        ] {
            meta.remove(key);
        }
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    // A Service's allocated addresses belong to the API server.
    if object["kind"] == "Service"
        && let Some(spec) = object["spec"].as_object_mut()
    {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    object
}

/// `ref-objects`: the referenced objects (the first is the workload, the others `objects-<i>`).
pub(crate) fn render(
    ctx: &ComponentContext,
    properties: Option<&Value>,
    referenced: Option<&Referenced>,
    app_namespace: &str,
) -> Result<ComponentOutput, RenderError> {
    let mut p = Params::root(&ctx.scope, properties)?;
    let refs = entries(&mut p, app_namespace)?;
    p.finish()?;
    let Some(referenced) = referenced else {
        params::warn(RenderWarning {
            reason: "UnresolvedReference",
            scope: ctx.scope.clone(),
            message: format!(
                "ref-objects are read from the cluster when the operator reconciles; rendered offline, {} renders nothing",
                ctx.scope
            ),
        });
        return Ok(ComponentOutput {
            workload: Value::Object(Map::new()),
            auxiliaries: Vec::new(),
        });
    };
    let mut objects = Vec::new();
    for reference in &refs {
        match referenced.get(reference) {
            Some(Ok(found)) if found.is_empty() => {
                return Err(RenderError::Reference {
                    scope: ctx.scope.clone(),
                    message: format!("{reference}: no object matches"),
                });
            }
            Some(Ok(found)) => objects.extend(found.iter().map(cleaned)),
            Some(Err(e)) => {
                return Err(RenderError::Reference {
                    scope: ctx.scope.clone(),
                    message: format!("{reference}: {e}"),
                });
            }
            None => {
                return Err(RenderError::Reference {
                    scope: ctx.scope.clone(),
                    message: format!("{reference}: was not read"),
                });
            }
        }
    }
    let mut iter = objects.into_iter();
    let workload = iter.next().unwrap_or_default();
    Ok(ComponentOutput {
        workload,
        auxiliaries: iter
            .enumerate()
            .map(|(i, o)| (format!("objects-{}", i + 1), o))
            .collect(),
    })
}
