//! Built-in component types, ported from KubeVela's CUE templates (`webservice`, `worker`, `task`,
//! `cron-task`, `daemon`, `statefulset`, `k8s-objects`): same parameters, defaults and outputs.
use serde_json::{Map, Value, json};

use super::error::RenderError;
use super::params::Params;
use super::pod::{ContainerParams, main_container, port_name};
use super::{ComponentContext, is_string_map};
use crate::names::{LABEL_APP_COMPONENT, LABEL_APP_NAME};

pub(crate) const BUILTIN_COMPONENT_TYPES: [&str; 9] = [
    "webservice",
    "worker",
    "task",
    "cron-task",
    "daemon",
    "statefulset",
    "k8s-objects",
    "ref-objects",
    "config-image-registry",
];

/// What a component renders before traits run: its main workload and auxiliary outputs.
pub(crate) struct ComponentOutput {
    pub workload: Value,
    /// `(outputs.<name>, object)`, labelled as `AuxiliaryWorkload`.
    pub auxiliaries: Vec<(String, Value)>,
}

/// KubeVela built-in component types oam-trust does not render, and why (a clear error instead
/// of "unknown type").
const UNRENDERED_BUILTINS: [(&str, &str); 5] = [
    (
        "helmchart",
        "it installs a Helm chart through KubeVela's FluxCD addon, and oam-trust renders no Helm charts",
    ),
    (
        "addon",
        "it installs a KubeVela addon from an addon registry, and oam-trust has no addon registry",
    ),
    (
        "module",
        "it fetches a module from a KubeVela module registry, and oam-trust has no registry",
    ),
    (
        "config-helm-repository",
        "KubeVela config components are not rendered by oam-trust",
    ),
    (
        "config-dex-connector",
        "KubeVela config components are not rendered by oam-trust",
    ),
];

/// Renders a built-in type; `None` when `type_` is not one.
pub(crate) fn render_builtin(
    type_: &str,
    ctx: &ComponentContext,
    properties: Option<&Value>,
) -> Option<Result<ComponentOutput, RenderError>> {
    let result = match type_ {
        "webservice" => pod_controller(ctx, properties, PodController::Deployment),
        "daemon" => pod_controller(ctx, properties, PodController::DaemonSet),
        "statefulset" => pod_controller(ctx, properties, PodController::StatefulSet),
        "worker" => worker(ctx, properties),
        "task" => task(ctx, properties),
        "cron-task" => cron_task(ctx, properties),
        "k8s-objects" => k8s_objects(ctx, properties),
        "config-image-registry" => config_image_registry(ctx, properties),
        other => {
            let (name, reason) = UNRENDERED_BUILTINS.iter().find(|(n, _)| *n == other)?;
            Err(RenderError::UnsupportedDefinition {
                scope: ctx.scope.clone(),
                kind: "KubeVela built-in component type".to_string(),
                name: name.to_string(),
                reason: reason.to_string(),
            })
        }
    };
    Some(result)
}

#[derive(Clone, Copy, PartialEq)]
enum PodController {
    Deployment,
    DaemonSet,
    StatefulSet,
}

/// `webservice`, `daemon` and `statefulset`: a pod controller plus a Service for exposed ports.
fn pod_controller(
    ctx: &ComponentContext,
    properties: Option<&Value>,
    controller: PodController,
) -> Result<ComponentOutput, RenderError> {
    let mut p = Params::root(&ctx.scope, properties)?;
    let parts = main_container(
        &mut p,
        ctx.component,
        ContainerParams {
            args: controller != PodController::DaemonSet,
            limit: controller == PodController::Deployment,
            volume_mounts: true,
            host_aliases: true,
            host_path_mount_options: controller == PodController::DaemonSet,
        },
    )?;
    let labels = p.opt_str_map("labels")?;
    let annotations = p.opt_str_map("annotations")?;
    if p.bool_or("addRevisionLabel", false)? {
        return Err(p.invalid(
            "addRevisionLabel",
            "component revisions are not supported by oam-trust; remove this parameter",
        ));
    }
    let expose_types: &[&str] = if controller == PodController::DaemonSet {
        &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]
    } else {
        &["ClusterIP", "NodePort", "LoadBalancer"]
    };
    let expose_type = p.enum_or("exposeType", expose_types, "ClusterIP")?;
    let legacy_port = p.int_in("port", 1, 65535, None)?;
    let mut container_ports = Vec::new();
    let mut service_ports = Vec::new();
    let daemon = controller == PodController::DaemonSet;
    if let Some(ports) = p.opt_list("ports")? {
        for mut port in ports {
            let number = port
                .int_in("port", 1, 65535, None)?
                .ok_or_else(|| port.missing("port"))?;
            // daemon.cue declares no containerPort, and names ports without a protocol suffix.
            let container_port = if daemon {
                None
            } else {
                port.int_in("containerPort", 1, 65535, None)?
            };
            let target = container_port.unwrap_or(number);
            let protocol = port.enum_or("protocol", &["TCP", "UDP", "SCTP"], "TCP")?;
            let name = match port.opt_str("name")? {
                Some(n) => n.to_string(),
                None if daemon => port_name(number, "TCP"),
                None => port_name(target, protocol),
            };
            let expose = port.bool_or("expose", false)?;
            let node_port = if daemon {
                None
            } else {
                port.int_in("nodePort", 1, 65535, None)?
            };
            port.finish()?;
            container_ports
                .push(json!({ "containerPort": target, "name": name, "protocol": protocol }));
            if expose {
                let mut sp = json!({ "name": name, "port": number, "targetPort": target });
                if !daemon {
                    sp["protocol"] = protocol.into();
                }
                if let (Some(np), "NodePort") = (node_port, expose_type) {
                    sp["nodePort"] = np.into();
                }
                service_ports.push(sp);
            }
        }
    } else if let Some(port) = legacy_port {
        container_ports.push(json!({ "containerPort": port }));
    }
    p.finish()?;

    let mut container = parts.container.clone();
    if !container_ports.is_empty() {
        container.insert("ports".into(), Value::Array(container_ports));
    }
    let mut pod_spec = Map::new();
    pod_spec.insert("containers".into(), json!([container]));
    parts.extend_pod_spec(&mut pod_spec);

    let kind = match controller {
        PodController::Deployment => "Deployment",
        PodController::DaemonSet => "DaemonSet",
        PodController::StatefulSet => "StatefulSet",
    };
    let workload = json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": { "name": ctx.component },
        "spec": {
            "selector": { "matchLabels": { LABEL_APP_COMPONENT: ctx.component } },
            "template": pod_template(ctx, labels, annotations, pod_spec),
        },
    });
    let mut auxiliaries = Vec::new();
    if !service_ports.is_empty() {
        let output = match controller {
            PodController::Deployment => "webserviceExpose",
            // daemon.cue reuses webservice's output name.
            PodController::DaemonSet => "webserviceExpose",
            PodController::StatefulSet => "statefulsetsExpose",
        };
        auxiliaries.push((
            output.to_string(),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": ctx.component },
                "spec": {
                    "selector": { LABEL_APP_COMPONENT: ctx.component },
                    "ports": service_ports,
                    "type": expose_type,
                },
            }),
        ));
    }
    Ok(ComponentOutput {
        workload,
        auxiliaries,
    })
}

/// Pod template metadata: user labels under the two OAM pod labels, optional annotations.
fn pod_template(
    ctx: &ComponentContext,
    labels: Option<Map<String, Value>>,
    annotations: Option<Map<String, Value>>,
    pod_spec: Map<String, Value>,
) -> Value {
    json!({ "metadata": pod_metadata(ctx, labels, annotations), "spec": pod_spec })
}

fn pod_metadata(
    ctx: &ComponentContext,
    labels: Option<Map<String, Value>>,
    annotations: Option<Map<String, Value>>,
) -> Value {
    let mut pod_labels = labels.unwrap_or_default();
    pod_labels.insert(LABEL_APP_NAME.into(), ctx.app_name.into());
    pod_labels.insert(LABEL_APP_COMPONENT.into(), ctx.component.into());
    let mut metadata = Map::new();
    metadata.insert("labels".into(), Value::Object(pod_labels));
    if let Some(a) = annotations {
        metadata.insert("annotations".into(), Value::Object(a));
    }
    Value::Object(metadata)
}

fn worker(
    ctx: &ComponentContext,
    properties: Option<&Value>,
) -> Result<ComponentOutput, RenderError> {
    let mut p = Params::root(&ctx.scope, properties)?;
    let parts = main_container(
        &mut p,
        ctx.component,
        ContainerParams {
            volume_mounts: true,
            ..ContainerParams::default()
        },
    )?;
    p.finish()?;
    let mut pod_spec = Map::new();
    pod_spec.insert("containers".into(), json!([parts.container.clone()]));
    parts.extend_pod_spec(&mut pod_spec);
    Ok(ComponentOutput {
        workload: json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": ctx.component },
            "spec": {
                "selector": { "matchLabels": { LABEL_APP_COMPONENT: ctx.component } },
                "template": pod_template(ctx, None, None, pod_spec),
            },
        }),
        auxiliaries: Vec::new(),
    })
}

/// The pod spec of a Job (task, cron-task): main container and `restartPolicy`.
fn job_pod_spec(
    p: &mut Params,
    ctx: &ComponentContext,
    opts: ContainerParams,
) -> Result<Map<String, Value>, RenderError> {
    let parts = main_container(p, ctx.component, opts)?;
    let restart = p.enum_or("restart", &["Never", "OnFailure"], "Never")?;
    let mut pod_spec = Map::new();
    pod_spec.insert("containers".into(), json!([parts.container.clone()]));
    pod_spec.insert("restartPolicy".into(), restart.into());
    parts.extend_pod_spec(&mut pod_spec);
    Ok(pod_spec)
}

fn task(
    ctx: &ComponentContext,
    properties: Option<&Value>,
) -> Result<ComponentOutput, RenderError> {
    let mut p = Params::root(&ctx.scope, properties)?;
    let pod_spec = job_pod_spec(&mut p, ctx, ContainerParams::default())?;
    let count = p
        .int_in("count", 1, i64::from(i32::MAX), Some(1))?
        .unwrap_or(1);
    let labels = p.opt_str_map("labels")?;
    let annotations = p.opt_str_map("annotations")?;
    p.finish()?;
    Ok(ComponentOutput {
        // task.cue names the Job `<application>-<component>` (KubeVela v1.10.3 and later).
        workload: json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": { "name": format!("{}-{}", ctx.app_name, ctx.component) },
            "spec": {
                "parallelism": count,
                "completions": count,
                "template": pod_template(ctx, labels, annotations, pod_spec),
            },
        }),
        auxiliaries: Vec::new(),
    })
}

/// `cron-task` renders a `batch/v1` CronJob: offline there is no cluster version to pick
/// `batch/v1beta1` for (Kubernetes < 1.25 is out of support).
fn cron_task(
    ctx: &ComponentContext,
    properties: Option<&Value>,
) -> Result<ComponentOutput, RenderError> {
    let mut p = Params::root(&ctx.scope, properties)?;
    let pod_spec = job_pod_spec(
        &mut p,
        ctx,
        ContainerParams {
            volume_mounts: true,
            host_aliases: true,
            ..ContainerParams::default()
        },
    )?;
    let schedule = p.str("schedule")?;
    let count = p
        .int_in("count", 1, i64::from(i32::MAX), Some(1))?
        .unwrap_or(1);
    let labels = p.opt_str_map("labels")?;
    let annotations = p.opt_str_map("annotations")?;
    let concurrency = p.enum_or(
        "concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
        "Allow",
    )?;
    let suspend = p.bool_or("suspend", false)?;
    let successful = p.int_in(
        "successfulJobsHistoryLimit",
        0,
        i64::from(i32::MAX),
        Some(3),
    )?;
    let failed = p.int_in("failedJobsHistoryLimit", 0, i64::from(i32::MAX), Some(1))?;
    let backoff = p.int_in("backoffLimit", 0, i64::from(i32::MAX), Some(6))?;
    let starting_deadline = p.int_in("startingDeadlineSeconds", 0, i64::MAX, None)?;
    let ttl = p.int_in("ttlSecondsAfterFinished", 0, i64::from(i32::MAX), None)?;
    let active_deadline = p.int_in("activeDeadlineSeconds", 1, i64::MAX, None)?;
    p.finish()?;

    let mut job_spec = json!({
        "parallelism": count,
        "completions": count,
        "backoffLimit": backoff,
        "template": pod_template(ctx, labels.clone(), annotations.clone(), pod_spec),
    });
    if let Some(ttl) = ttl {
        job_spec["ttlSecondsAfterFinished"] = ttl.into();
    }
    if let Some(d) = active_deadline {
        job_spec["activeDeadlineSeconds"] = d.into();
    }
    let job_metadata = pod_metadata(ctx, labels, annotations);
    let mut spec = json!({
        "schedule": schedule,
        "concurrencyPolicy": concurrency,
        "suspend": suspend,
        "successfulJobsHistoryLimit": successful,
        "failedJobsHistoryLimit": failed,
        "jobTemplate": { "metadata": job_metadata, "spec": job_spec },
    });
    if let Some(d) = starting_deadline {
        spec["startingDeadlineSeconds"] = d.into();
    }
    Ok(ComponentOutput {
        workload: json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": { "name": ctx.component },
            "spec": spec,
        }),
        auxiliaries: Vec::new(),
    })
}

/// `config-image-registry`: a Secret carrying an image registry's credentials, as KubeVela's CUE
/// writes it (`.dockerconfigjson` when `auth` is given, the `config.oam.dev/*` labels).
fn config_image_registry(
    ctx: &ComponentContext,
    properties: Option<&Value>,
) -> Result<ComponentOutput, RenderError> {
    use base64::Engine as _;
    let mut p = Params::root(&ctx.scope, properties)?;
    let registry = p.str("registry")?.to_string();
    let auth = p.opt_object("auth")?;
    let insecure = p.opt_bool("insecure")?;
    let use_http = p.opt_bool("useHTTP")?;
    let mut string_data = Map::new();
    let has_auth = auth.is_some();
    if let Some(mut a) = auth {
        let username = a.str("username")?.to_string();
        let password = a.str("password")?.to_string();
        let email = a.opt_str("email")?.map(str::to_string);
        a.finish()?;
        // CUE's json.Marshal keeps the declaration order (username, password, email, auth); a
        // serde_json map would sort the keys, so the document is written out here.
        let quote = |v: &str| Value::from(v).to_string();
        let mut fields = vec![
            format!("\"username\":{}", quote(&username)),
            format!("\"password\":{}", quote(&password)),
        ];
        if let Some(email) = email {
            fields.push(format!("\"email\":{}", quote(&email)));
        }
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        fields.push(format!("\"auth\":{}", quote(&basic)));
        let doc = format!(
            "{{\"auths\":{{{}:{{{}}}}}}}",
            quote(&registry),
            fields.join(",")
        );
        string_data.insert(".dockerconfigjson".into(), doc.into());
    }
    if let Some(b) = insecure {
        string_data.insert("insecure-skip-verify".into(), b.to_string().into());
    }
    if let Some(b) = use_http {
        string_data.insert("protocol-use-http".into(), b.to_string().into());
    }
    p.finish()?;
    Ok(ComponentOutput {
        workload: json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": ctx.component,
                "namespace": ctx.namespace,
                "labels": {
                    "config.oam.dev/catalog": "velacore-config",
                    "config.oam.dev/type": "image-registry",
                    "config.oam.dev/multi-cluster": "true",
                    "config.oam.dev/identifier": registry,
                    "config.oam.dev/sub-type": "auth",
                }
            },
            "type": if has_auth { "kubernetes.io/dockerconfigjson" } else { "Opaque" },
            "stringData": string_data,
        }),
        auxiliaries: Vec::new(),
    })
}

/// `k8s-objects`: `objects[0]` is the workload, `objects[i]` the output `objects-<i>`. The workload
/// without a name is named after the component; a later object without one gets KubeVela's
/// generated name (see `name_unnamed`). An object's own `metadata.namespace` is kept.
fn k8s_objects(
    ctx: &ComponentContext,
    properties: Option<&Value>,
) -> Result<ComponentOutput, RenderError> {
    let mut p = Params::root(&ctx.scope, properties)?;
    let objects = match p.opt("objects") {
        None => return Err(p.missing("objects")),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(p.invalid("objects", "at least one object is required"));
        }
        Some(Value::Array(items)) => items,
        Some(other) => return Err(p.type_error("objects", "array of objects", other)),
    };
    let mut rendered = Vec::with_capacity(objects.len());
    for (i, object) in objects.iter().enumerate() {
        let field = format!("objects[{i}]");
        check_object(&p, &field, object)?;
        rendered.push(object.clone());
    }
    p.finish()?;
    let mut iter = rendered.into_iter();
    let workload = iter.next().unwrap_or_default();
    let auxiliaries = iter
        .enumerate()
        .map(|(i, o)| (format!("objects-{}", i + 1), o))
        .collect();
    Ok(ComponentOutput {
        workload,
        auxiliaries,
    })
}

/// A raw Kubernetes object: `apiVersion` and `kind` strings, and an object `metadata` whose
/// `name`, if any, is a string.
pub(crate) fn check_object(p: &Params, field: &str, object: &Value) -> Result<(), RenderError> {
    let Value::Object(map) = object else {
        return Err(p.type_error(field, "object", object));
    };
    for key in ["apiVersion", "kind"] {
        match map.get(key) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(other) => return Err(p.type_error(&format!("{field}.{key}"), "string", other)),
            None => return Err(p.missing(&format!("{field}.{key}"))),
        }
    }
    match map.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(meta)) => match meta.get("name") {
            Some(Value::String(_)) | None | Some(Value::Null) => {}
            Some(other) => {
                return Err(p.type_error(&format!("{field}.metadata.name"), "string", other));
            }
        },
        Some(other) => return Err(p.type_error(&format!("{field}.metadata"), "object", other)),
    }
    for key in ["labels", "annotations"] {
        if let Some(v) = map.get("metadata").and_then(|m| m.get(key))
            && !is_string_map(v)
        {
            return Err(p.type_error(&format!("{field}.metadata.{key}"), "map of strings", v));
        }
    }
    Ok(())
}
