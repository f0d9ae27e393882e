//! Built-in traits, ported from KubeVela's CUE templates: each either patches the component's
//! workload in place, adds objects (`outputs`), or both. Traits run in the order written.
use serde_json::{Map, Value, json};

use super::ComponentContext;
use super::error::RenderError;
use super::params::Params;
use super::pod::{check_pull_policy, env_list, health_probe, port_name};
use crate::names::LABEL_APP_COMPONENT;

const D: &str = "deployments.apps";
const S: &str = "statefulsets.apps";
const DS: &str = "daemonsets.apps";
const J: &str = "jobs.batch";

/// Built-in traits and the workloads they apply to (KubeVela's `appliesToWorkloads`; `*` = all).
/// A trait on another workload is applied all the same, with a warning, as KubeVela does.
pub(crate) const BUILTIN_TRAITS: [(&str, &[&str]); 26] = [
    ("scaler", &[D, S]),
    ("labels", &["*"]),
    ("annotations", &["*"]),
    ("env", &[D, S, DS, J]),
    ("expose", &[D, S]),
    ("gateway", &[D, S]),
    ("sidecar", &[D, S, DS, J]),
    ("init-container", &[D, S, DS, J]),
    ("storage", &[D, S, DS, J]),
    ("hpa", &[D, S]),
    ("cpuscaler", &[D, S]),
    ("command", &[D, S, DS, J]),
    ("container-image", &[D, S, DS, J]),
    ("resource", &[D, S, DS, J]),
    ("service-account", &[D, S, DS, J]),
    ("affinity", &[D, S, DS, J]),
    ("topologyspreadconstraints", &[D, S, DS, J]),
    ("securitycontext", &[D, S, DS, J]),
    ("podsecuritycontext", &[D, S, DS, J]),
    ("startup-probe", &[D, S, DS, J]),
    ("lifecycle", &[D, S, DS, J]),
    ("hostalias", &[D, S, DS, J]),
    ("container-ports", &[D, S, DS, J]),
    ("k8s-update-strategy", &[D, S, DS]),
    ("json-patch", &["*"]),
    ("json-merge-patch", &["*"]),
];

/// KubeVela built-in traits oam-trust does not render, and why.
const UNRENDERED_BUILTINS: [(&str, &str); 5] = [
    (
        "nocalhost",
        "it configures the Nocalhost development tool, which oam-trust does not integrate",
    ),
    (
        "service-binding",
        "it is deprecated in KubeVela; use env valueFrom.secretKeyRef on the component instead",
    ),
    (
        "pure-ingress",
        "it is deprecated in KubeVela; use the gateway trait",
    ),
    (
        "rollout",
        "it needs KubeVela's rollout controller, which oam-trust does not run",
    ),
    (
        "kruise-rollout",
        "it needs the OpenKruise Rollout addon, which oam-trust does not install",
    ),
];

/// Why a KubeVela built-in trait is not rendered; `None` for every other type.
pub(crate) fn unrendered_reason(type_: &str) -> Option<&'static str> {
    UNRENDERED_BUILTINS
        .iter()
        .find(|(name, _)| *name == type_)
        .map(|(_, reason)| *reason)
}

pub(crate) fn applies_to(type_: &str) -> Option<&'static [&'static str]> {
    BUILTIN_TRAITS
        .iter()
        .find(|(name, _)| *name == type_)
        .map(|(_, applies)| *applies)
}

/// Objects a trait adds: `(outputs.<name>, object)`.
pub(crate) type TraitOutputs = Vec<(String, Value)>;

/// Applies built-in trait `type_` to `workload`; `None` when it is not a built-in.
pub(crate) fn render_builtin(
    type_: &str,
    scope: &str,
    ctx: &ComponentContext,
    workload: &mut Value,
    properties: Option<&Value>,
) -> Option<Result<TraitOutputs, RenderError>> {
    let mut run = || -> Result<TraitOutputs, RenderError> {
        let mut p = Params::root(scope, properties)?;
        let outputs = match type_ {
            "scaler" => scaler(&mut p, workload)?,
            "labels" => metadata_map(&mut p, workload, "labels")?,
            "annotations" => metadata_map(&mut p, workload, "annotations")?,
            "env" => env(&mut p, ctx, workload)?,
            "expose" => expose(&mut p, ctx)?,
            "gateway" => gateway(&mut p, ctx)?,
            "sidecar" => sidecar(&mut p, workload)?,
            "init-container" => init_container(&mut p, ctx, workload)?,
            "storage" => storage(&mut p, workload)?,
            "hpa" => hpa(&mut p, ctx)?,
            "cpuscaler" => cpuscaler(&mut p, ctx)?,
            "command" => command(&mut p, ctx, workload)?,
            "container-image" => container_image(&mut p, ctx, workload)?,
            "resource" => resource(&mut p, workload)?,
            "service-account" => service_account(&mut p, ctx, workload)?,
            "affinity" => affinity(&mut p, workload)?,
            "topologyspreadconstraints" => topology_spread_constraints(&mut p, workload)?,
            "securitycontext" => security_context(&mut p, ctx, workload)?,
            "podsecuritycontext" => pod_security_context(&mut p, workload)?,
            "startup-probe" => startup_probe(&mut p, ctx, workload)?,
            "lifecycle" => lifecycle(&mut p, workload)?,
            "hostalias" => hostalias(&mut p, workload)?,
            "container-ports" => container_ports(&mut p, ctx, workload)?,
            "k8s-update-strategy" => update_strategy(&mut p, workload)?,
            "json-patch" => json_patch(&mut p, workload)?,
            "json-merge-patch" => json_merge_patch(&mut p, workload)?,
            _ => unreachable_type(scope, type_)?,
        };
        p.finish()?;
        Ok(outputs)
    };
    applies_to(type_)?;
    Some(run())
}

fn unreachable_type(scope: &str, type_: &str) -> Result<TraitOutputs, RenderError> {
    Err(RenderError::UnknownTraitType {
        scope: scope.to_string(),
        type_: type_.to_string(),
    })
}

fn workload_error(p: &Params, message: &str) -> RenderError {
    RenderError::InvalidApplication {
        scope: p.scope().to_string(),
        message: message.to_string(),
    }
}

/// The pod spec of a pod controller, a Job, or a CronJob's job template.
fn pod_spec<'w>(
    p: &Params,
    workload: &'w mut Value,
) -> Result<&'w mut Map<String, Value>, RenderError> {
    let is_cron = workload["kind"] == "CronJob";
    let spec = if is_cron {
        workload.pointer_mut("/spec/jobTemplate/spec/template/spec")
    } else {
        workload.pointer_mut("/spec/template/spec")
    };
    match spec {
        Some(Value::Object(map)) => Ok(map),
        _ => Err(workload_error(
            p,
            "the workload has no pod template spec to patch",
        )),
    }
}

fn containers<'w>(
    p: &Params,
    pod: &'w mut Map<String, Value>,
    key: &str,
) -> Result<&'w mut Vec<Value>, RenderError> {
    let entry = pod.entry(key.to_string()).or_insert_with(|| json!([]));
    if entry.is_null() {
        *entry = json!([]);
    }
    match entry {
        Value::Array(items) => Ok(items),
        _ => Err(workload_error(
            p,
            &format!("the workload's pod spec {key} is not a list"),
        )),
    }
}

fn first_container<'w>(
    p: &Params,
    pod: &'w mut Map<String, Value>,
) -> Result<&'w mut Map<String, Value>, RenderError> {
    match containers(p, pod, "containers")?.first_mut() {
        Some(Value::Object(c)) => Ok(c),
        _ => Err(workload_error(p, "the workload has no container to patch")),
    }
}

/// Appends to a list field of `map`, replacing an item with the same `key` (`+patchKey`).
fn upsert_by(map: &mut Map<String, Value>, list: &str, key: &str, item: Value) {
    let entry = map.entry(list.to_string()).or_insert_with(|| json!([]));
    if !entry.is_array() {
        *entry = json!([]);
    }
    if let Value::Array(items) = entry {
        match items
            .iter_mut()
            .find(|i| i.get(key).is_some() && i[key] == item[key])
        {
            Some(existing) => *existing = item,
            None => items.push(item),
        }
    }
}

/// `+patchKey`: the item with the same `key` gets `item`'s fields (its other fields stay);
/// otherwise `item` is appended.
fn merge_by(items: &mut Vec<Value>, key: &str, item: Value) {
    match items
        .iter_mut()
        .find(|i| i.get(key).is_some() && i[key] == item[key])
    {
        Some(Value::Object(existing)) => {
            if let Value::Object(fields) = item {
                existing.extend(fields);
            }
        }
        Some(other) => *other = item,
        None => items.push(item),
    }
}

fn scaler(p: &mut Params, workload: &mut Value) -> Result<TraitOutputs, RenderError> {
    let replicas = p
        .int_in("replicas", 0, i64::from(i32::MAX), Some(1))?
        .unwrap_or(1);
    match workload.get_mut("spec") {
        Some(Value::Object(spec)) => {
            spec.insert("replicas".into(), replicas.into());
        }
        _ => workload["spec"] = json!({ "replicas": replicas }),
    }
    Ok(Vec::new())
}

/// `labels` / `annotations`: `{key: value|null}` merged into the workload (null removes) and into
/// its pod template; `annotations` also reaches a CronJob's job template.
fn metadata_map(
    p: &mut Params,
    workload: &mut Value,
    key: &str,
) -> Result<TraitOutputs, RenderError> {
    let mut patch = Vec::new();
    for (k, v) in p.entries() {
        match v {
            Value::String(_) | Value::Null => patch.push((k.clone(), v.clone())),
            other => return Err(p.type_error(k, "string or null", other)),
        }
    }
    // Objects whose `metadata` gets the patch: the workload, its pod template and, for
    // annotations, a CronJob's job template and its pod template (only those that exist).
    let mut owners = vec![""];
    if key == "annotations" {
        owners.extend(["/spec/jobTemplate", "/spec/jobTemplate/spec/template"]);
    }
    owners.insert(1, "/spec/template");
    for owner in owners {
        let Some(Value::Object(owner)) = workload.pointer_mut(owner) else {
            continue;
        };
        let meta = owner.entry("metadata").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        let target = &mut meta[key];
        if !target.is_object() {
            *target = json!({});
        }
        if let Value::Object(target) = target {
            for (k, v) in &patch {
                match v {
                    Value::Null => target.remove(k),
                    v => target.insert(k.clone(), v.clone()),
                };
            }
        }
    }
    Ok(Vec::new())
}

/// `{containerName, …}` or `{containers: [{containerName, …}]}`: `patch` runs once per target
/// container; an empty container name means the component's own container.
fn each_container<'a>(
    p: &mut Params<'a>,
    ctx: &ComponentContext,
    workload: &mut Value,
    patch: impl FnMut(&mut Params<'a>, &mut Map<String, Value>) -> Result<(), RenderError>,
) -> Result<(), RenderError> {
    each_container_in(p, ctx, workload, "containers", patch)
}

/// `each_container` with the list under `list_key` (`startup-probe` calls it `probes`).
fn each_container_in<'a>(
    p: &mut Params<'a>,
    ctx: &ComponentContext,
    workload: &mut Value,
    list_key: &'a str,
    mut patch: impl FnMut(&mut Params<'a>, &mut Map<String, Value>) -> Result<(), RenderError>,
) -> Result<(), RenderError> {
    let mut targets = if p.has(list_key) {
        p.opt_list(list_key)?.unwrap_or_default()
    } else {
        Vec::new()
    };
    let single = targets.is_empty();
    let pod = pod_spec(p, workload)?;
    let mut run = |item: &mut Params<'a>, in_list: bool| -> Result<(), RenderError> {
        let name = item.str_or("containerName", "")?;
        if in_list && name.is_empty() {
            return Err(item.missing("containerName"));
        }
        let name = if name.is_empty() { ctx.component } else { name };
        let list = containers(item, pod, "containers")?;
        let container = list
            .iter_mut()
            .find_map(|c| match c {
                Value::Object(m) if m.get("name").and_then(Value::as_str) == Some(name) => Some(m),
                _ => None,
            })
            .ok_or_else(|| {
                item.invalid(
                    "containerName",
                    format!("container {name:?} not found in the workload"),
                )
            })?;
        patch(item, container)
    };
    if single {
        run(p, false)
    } else {
        for item in &mut targets {
            run(item, true)?;
        }
        targets.into_iter().try_for_each(Params::finish)
    }
}

/// `env`: merge (or with `replace`, set) variables; `unset` removes them.
fn env(
    p: &mut Params,
    ctx: &ComponentContext,
    workload: &mut Value,
) -> Result<TraitOutputs, RenderError> {
    each_container(p, ctx, workload, |item, container| {
        let replace = item.bool_or("replace", false)?;
        let vars = item.opt_str_map("env")?.unwrap_or_default();
        let unset = item.opt_str_list("unset")?.unwrap_or_default();
        let base = match container.get("env") {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        let mut env = Vec::new();
        if !replace {
            for var in &base {
                let Some(name) = var.get("name").and_then(Value::as_str) else {
                    continue;
                };
                if unset.iter().any(|u| u == name) {
                    continue;
                }
                match vars.get(name) {
                    Some(value) => env.push(json!({ "name": name, "value": value })),
                    None => env.push(var.clone()),
                }
            }
        }
        let base_has = |k: &str| {
            base.iter()
                .any(|v| v.get("name").and_then(Value::as_str) == Some(k))
        };
        for (k, v) in &vars {
            if unset.iter().any(|u| u == k) || (!replace && base_has(k)) {
                continue;
            }
            env.push(json!({ "name": k, "value": v }));
        }
        container.insert("env".into(), Value::Array(env));
        Ok(())
    })?;
    Ok(Vec::new())
}

/// `expose`: a Service named after the component selecting its pods.
fn expose(p: &mut Params, ctx: &ComponentContext) -> Result<TraitOutputs, RenderError> {
    let type_ = p.enum_or(
        "type",
        &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
        "ClusterIP",
    )?;
    let annotations = p.opt_str_map("annotations")?.unwrap_or_default();
    let selector = p.opt_str_map("matchLabels")?.unwrap_or_else(|| {
        Map::from_iter([(LABEL_APP_COMPONENT.to_string(), Value::from(ctx.component))])
    });
    let legacy = p.opt_int_list("port")?;
    let mut ports = Vec::new();
    if let Some(list) = p.opt_list("ports")? {
        for mut port in list {
            let number = port
                .int_in("port", 1, 65535, None)?
                .ok_or_else(|| port.missing("port"))?;
            let protocol = port.enum_or("protocol", &["TCP", "UDP", "SCTP"], "TCP")?;
            let name = match port.opt_str("name")? {
                Some(n) => n.to_string(),
                None => port_name(number, protocol),
            };
            let mut sp =
                json!({ "name": name, "port": number, "protocol": protocol, "targetPort": number });
            if let Some(np) = port.int_in("nodePort", 1, 65535, None)?
                && type_ == "NodePort"
            {
                sp["nodePort"] = np.into();
            }
            port.finish()?;
            ports.push(sp);
        }
    } else if let Some(legacy) = legacy {
        for (i, number) in legacy.into_iter().enumerate() {
            if !(1..=65535).contains(&number) {
                return Err(p.invalid(
                    &format!("port[{i}]"),
                    format!("{number} is out of range 1..=65535"),
                ));
            }
            ports.push(
                json!({ "name": port_name(number, "TCP"), "port": number, "targetPort": number }),
            );
        }
    }
    if ports.is_empty() {
        return Err(p.invalid("ports", "at least one port is required"));
    }
    let mut metadata = json!({ "name": ctx.component });
    if !annotations.is_empty() {
        metadata["annotations"] = Value::Object(annotations);
    }
    Ok(vec![(
        "service".to_string(),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": { "selector": selector, "ports": ports, "type": type_ },
        }),
    )])
}

/// `gateway`: an Ingress (and a Service unless `existingServiceName`) for `http: {path: port}`.
fn gateway(p: &mut Params, ctx: &ComponentContext) -> Result<TraitOutputs, RenderError> {
    let domain = p.opt_str("domain")?;
    let class = p.str_or("class", "nginx")?;
    let class_in_spec = p.bool_or("classInSpec", false)?;
    let secret_name = p.opt_str("secretName")?;
    let gateway_host = p.opt_str("gatewayHost")?;
    let suffix = p.opt_str("name")?;
    let path_type = p.enum_or(
        "pathType",
        &["ImplementationSpecific", "Prefix", "Exact"],
        "ImplementationSpecific",
    )?;
    let annotations = p.opt_str_map("annotations")?;
    let labels = p.opt_str_map("labels")?;
    let existing_service = p.opt_str("existingServiceName")?;
    let http = match p.opt("http") {
        None => return Err(p.missing("http")),
        Some(Value::Object(map)) if !map.is_empty() => map,
        Some(Value::Object(_)) => return Err(p.invalid("http", "at least one path is required")),
        Some(other) => return Err(p.type_error("http", "map of path to port", other)),
    };
    let mut routes = Vec::new();
    for (path, port) in http {
        let number = super::params::as_int(port)
            .filter(|n| (1..=65535).contains(n))
            .ok_or_else(|| p.type_error(&format!("http.{path}"), "port number", port))?;
        routes.push((path.clone(), number));
    }
    let name = match suffix {
        Some(s) => format!("{}-{s}", ctx.component),
        None => ctx.component.to_string(),
    };
    let service_name = existing_service.unwrap_or(&name).to_string();
    let mut outputs = Vec::new();
    let output_suffix = suffix.map(|s| format!("-{s}")).unwrap_or_default();
    if existing_service.is_none() {
        // gateway.cue lists one Service port per path, even when two paths share a port.
        let ports: Vec<Value> = routes
            .iter()
            .map(|(_, port)| {
                json!({ "name": port_name(*port, "TCP"), "port": port, "targetPort": port })
            })
            .collect();
        outputs.push((
            format!("service{output_suffix}"),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": name },
                "spec": { "selector": { LABEL_APP_COMPONENT: ctx.component }, "ports": ports },
            }),
        ));
    }
    let mut ingress_annotations = Map::new();
    if !class_in_spec {
        ingress_annotations.insert("kubernetes.io/ingress.class".into(), class.into());
    }
    if let Some(host) = gateway_host {
        ingress_annotations.insert("ingress.controller/host".into(), host.into());
    }
    ingress_annotations.extend(annotations.unwrap_or_default());
    let mut metadata = json!({ "name": name });
    if !ingress_annotations.is_empty() {
        metadata["annotations"] = Value::Object(ingress_annotations);
    }
    if let Some(labels) = labels {
        metadata["labels"] = Value::Object(labels);
    }
    let paths: Vec<Value> = routes
        .iter()
        .map(|(path, port)| {
            json!({
                "path": path,
                "pathType": path_type,
                "backend": { "service": { "name": service_name, "port": { "number": port } } },
            })
        })
        .collect();
    let mut rule = json!({ "http": { "paths": paths } });
    if let Some(domain) = domain {
        rule["host"] = domain.into();
    }
    let mut spec = json!({ "rules": [rule] });
    if class_in_spec {
        spec["ingressClassName"] = class.into();
    }
    if let Some(secret) = secret_name {
        let hosts: Vec<&str> = domain.into_iter().collect();
        spec["tls"] = json!([{ "hosts": hosts, "secretName": secret }]);
    }
    outputs.push((
        format!("ingress{output_suffix}"),
        json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec }),
    ));
    Ok(outputs)
}

/// `sidecar`: one more container (replacing one of the same name).
fn sidecar(p: &mut Params, workload: &mut Value) -> Result<TraitOutputs, RenderError> {
    let mut c = Map::new();
    c.insert("name".into(), p.str("name")?.into());
    c.insert("image".into(), p.str("image")?.into());
    if let Some(cmd) = p.opt_str_list("cmd")? {
        c.insert("command".into(), json!(cmd));
    }
    if let Some(args) = p.opt_str_list("args")? {
        c.insert("args".into(), json!(args));
    }
    if let Some(env) = env_list(p, "env", true)? {
        c.insert("env".into(), Value::Array(env));
    }
    if let Some(volumes) = p.opt_list("volumes")? {
        let mut mounts = Vec::new();
        for mut v in volumes {
            mounts.push(json!({ "name": v.str("name")?, "mountPath": v.str("path")? }));
            v.finish()?;
        }
        c.insert("volumeMounts".into(), Value::Array(mounts));
    }
    if let Some(ports) = p.opt_list("ports")? {
        let mut out = Vec::new();
        for mut port in ports {
            let mut sp = Map::new();
            let number = port
                .int_in("containerPort", 1, 65535, None)?
                .ok_or_else(|| port.missing("containerPort"))?;
            sp.insert("containerPort".into(), number.into());
            sp.insert(
                "protocol".into(),
                port.enum_or("protocol", &["TCP", "UDP", "SCTP"], "TCP")?
                    .into(),
            );
            if let Some(name) = port.opt_str("name")? {
                sp.insert("name".into(), name.into());
            }
            if let Some(host_port) = port.int_in("hostPort", 1, 65535, None)? {
                sp.insert("hostPort".into(), host_port.into());
            }
            if let Some(ip) = port.opt_str("hostIP")? {
                sp.insert("hostIP".into(), ip.into());
            }
            port.finish()?;
            out.push(Value::Object(sp));
        }
        c.insert("ports".into(), Value::Array(out));
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        if let Some(pp) = p.opt_object(probe)? {
            c.insert(probe.into(), health_probe(pp)?);
        }
    }
    let pod = pod_spec(p, workload)?;
    // `+patchKey=name`: a container of the same name is merged with the sidecar, not replaced.
    merge_by(containers(p, pod, "containers")?, "name", Value::Object(c));
    Ok(Vec::new())
}

/// `init-container`: an init container sharing an emptyDir with the main container.
fn init_container(
    p: &mut Params,
    ctx: &ComponentContext,
    workload: &mut Value,
) -> Result<TraitOutputs, RenderError> {
    let name = p.str("name")?;
    let image = p.str("image")?;
    let pull = p.str_or("imagePullPolicy", "IfNotPresent")?;
    check_pull_policy(p, "imagePullPolicy", pull)?;
    let cmd = p.opt_str_list("cmd")?;
    let args = p.opt_str_list("args")?;
    let env = env_list(p, "env", false)?;
    let mount_name = p.str_or("mountName", "workdir")?;
    let app_mount = p.str("appMountPath")?;
    let init_mount = p.str("initMountPath")?;
    let mut init_mounts = vec![json!({ "name": mount_name, "mountPath": init_mount })];
    for mut extra in p.list_or_empty("extraVolumeMounts")? {
        init_mounts
            .push(json!({ "name": extra.str("name")?, "mountPath": extra.str("mountPath")? }));
        extra.finish()?;
    }
    let mut init = json!({ "name": name, "image": image, "imagePullPolicy": pull, "volumeMounts": init_mounts });
    if let Some(cmd) = cmd {
        init["command"] = json!(cmd);
    }
    if let Some(args) = args {
        init["args"] = json!(args);
    }
    if let Some(env) = env {
        init["env"] = Value::Array(env);
    }
    let pod = pod_spec(p, workload)?;
    // init-container.cue patches the container named after the component, not the first one.
    let main = containers(p, pod, "containers")?
        .iter_mut()
        .find_map(|c| match c {
            Value::Object(m) if m.get("name").and_then(Value::as_str) == Some(ctx.component) => {
                Some(m)
            }
            _ => None,
        })
        .ok_or_else(|| {
            workload_error(
                p,
                &format!("the workload has no container named {:?}", ctx.component),
            )
        })?;
    upsert_by(
        main,
        "volumeMounts",
        "name",
        json!({ "name": mount_name, "mountPath": app_mount }),
    );
    merge_by(containers(p, pod, "initContainers")?, "name", init);
    upsert_by(
        pod,
        "volumes",
        "name",
        json!({ "name": mount_name, "emptyDir": {} }),
    );
    Ok(Vec::new())
}

/// `storage`: volumes and mounts on the main container, plus PVC / ConfigMap / Secret outputs.
fn storage(p: &mut Params, workload: &mut Value) -> Result<TraitOutputs, RenderError> {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut devices = Vec::new();
    let mut env = Vec::new();
    let mut outputs = Vec::new();
    let mount = |v: &mut Params, volume: &str, path: &str| -> Result<Value, RenderError> {
        let mut m = json!({ "name": volume, "mountPath": path });
        if let Some(sub) = v.opt_str("subPath")? {
            m["subPath"] = sub.into();
        }
        Ok(m)
    };
    for mut v in p.list_or_empty("pvc")? {
        let name = v.str("name")?;
        let volume = format!("pvc-{name}");
        let path = v.str("mountPath")?;
        let mode = v.enum_or("volumeMode", &["Filesystem", "Block"], "Filesystem")?;
        if mode == "Block" {
            devices.push(json!({ "name": volume, "devicePath": path }));
        } else {
            mounts.push(mount(&mut v, &volume, path)?);
        }
        volumes.push(json!({ "name": volume, "persistentVolumeClaim": { "claimName": name } }));
        let mount_only = v.bool_or("mountOnly", false)?;
        let access_modes = v
            .opt_str_list("accessModes")?
            .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
        let mut spec = json!({
            "accessModes": access_modes,
            "volumeMode": mode,
            "resources": { "requests": { "storage": "8Gi" } },
        });
        for key in ["volumeName", "storageClassName"] {
            if let Some(s) = v.opt_str(key)? {
                spec[key] = s.into();
            }
        }
        if let Some(mut r) = v.opt_object("resources")? {
            let mut resources = Map::new();
            for key in ["requests", "limits"] {
                if let Some(mut q) = r.opt_object(key)? {
                    let storage = q
                        .opt_quantity("storage")?
                        .ok_or_else(|| q.missing("storage"))?;
                    q.finish()?;
                    resources.insert(key.into(), json!({ "storage": storage }));
                }
            }
            r.finish()?;
            if !resources.contains_key("requests") {
                return Err(v.missing("resources.requests"));
            }
            spec["resources"] = Value::Object(resources);
        }
        for key in ["dataSourceRef", "dataSource", "selector"] {
            if let Some(raw) = v.opt_raw_object(key)? {
                // storage.cue writes `selector` to spec.dataSource (a KubeVela bug, kept).
                let target = if key == "selector" { "dataSource" } else { key };
                spec[target] = raw.clone();
            }
        }
        v.finish()?;
        if !mount_only {
            outputs.push((
                format!("pvc-{name}"),
                json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": { "name": name }, "spec": spec }),
            ));
        }
    }
    for (kind, prefix, name_key, ref_key, key_key) in [
        (
            "configMap",
            "configmap",
            "name",
            "configMapKeyRef",
            "configMapKey",
        ),
        (
            "secret",
            "secret",
            "secretName",
            "secretKeyRef",
            "secretKey",
        ),
    ] {
        let mut env_single = Vec::new();
        let mut env_multi = Vec::new();
        for mut v in p.list_or_empty(kind)? {
            let name = v.str("name")?;
            let volume = format!("{prefix}-{name}");
            let mount_only = v.bool_or("mountOnly", false)?;
            let default_mode = v.int_or("defaultMode", 420)?;
            let read_only = v.bool_or("readOnly", false)?;
            if let Some(path) = v.opt_str("mountPath")? {
                let mut m = mount(&mut v, &volume, path)?;
                if read_only {
                    m["readOnly"] = true.into();
                }
                mounts.push(m);
                let mut source = json!({ "defaultMode": default_mode });
                source[name_key] = name.into();
                if let Some(items) = v.opt_list("items")? {
                    let mut out = Vec::new();
                    for mut item in items {
                        out.push(json!({ "key": item.str("key")?, "path": item.str("path")?, "mode": item.int_or("mode", 511)? }));
                        item.finish()?;
                    }
                    source["items"] = Value::Array(out);
                }
                volumes.push(json!({ "name": volume, kind: source }));
            }
            // storage.cue lists every item's mountToEnv first, then every item's mountToEnvs.
            let to_env = |e: &mut Params| -> Result<Value, RenderError> {
                let env_name = e.str("envName")?;
                let key = e.str(key_key)?;
                Ok(
                    json!({ "name": env_name, "valueFrom": { ref_key: { "name": name, "key": key } } }),
                )
            };
            if let Some(mut single) = v.opt_object("mountToEnv")? {
                env_single.push(to_env(&mut single)?);
                single.finish()?;
            }
            for mut e in v.list_or_empty("mountToEnvs")? {
                env_multi.push(to_env(&mut e)?);
                e.finish()?;
            }
            let data = v.opt_str_map("data")?;
            let string_data = if kind == "secret" {
                v.opt_str_map("stringData")?
            } else {
                None
            };
            v.finish()?;
            // An output whenever mountOnly is false, with or without data.
            if !mount_only {
                let mut object = json!({
                    "apiVersion": "v1",
                    "kind": if kind == "secret" { "Secret" } else { "ConfigMap" },
                    "metadata": { "name": name },
                });
                if let Some(d) = data {
                    object["data"] = Value::Object(d);
                }
                if let Some(d) = string_data {
                    object["stringData"] = Value::Object(d);
                }
                outputs.push((format!("{prefix}-{name}"), object));
            }
        }
        env.extend(env_single);
        env.extend(env_multi);
    }
    for mut v in p.list_or_empty("emptyDir")? {
        let name = v.str("name")?;
        let volume = format!("emptydir-{name}");
        let path = v.str("mountPath")?;
        mounts.push(mount(&mut v, &volume, path)?);
        let medium = v.enum_or("medium", &["", "Memory"], "")?;
        v.finish()?;
        volumes.push(json!({ "name": volume, "emptyDir": { "medium": medium } }));
    }
    for mut v in p.list_or_empty("hostPath")? {
        let name = v.str("name")?;
        let volume = format!("hostpath-{name}");
        let path = v.str("mountPath")?;
        mounts.push(mount(&mut v, &volume, path)?);
        let host = v.str("path")?;
        let type_ = v.str_or("type", "Directory")?;
        v.finish()?;
        volumes.push(json!({ "name": volume, "hostPath": { "path": host, "type": type_ } }));
    }
    let pod = pod_spec(p, workload)?;
    // The patch always carries these lists, so they exist (maybe empty) after the trait.
    containers(p, pod, "volumes")?;
    {
        let main = first_container(p, pod)?;
        for key in ["env", "volumeDevices", "volumeMounts"] {
            let entry = main.entry(key.to_string()).or_insert_with(|| json!([]));
            if !entry.is_array() {
                *entry = json!([]);
            }
        }
        for m in mounts {
            upsert_by(main, "volumeMounts", "name", m);
        }
        for d in devices {
            upsert_by(main, "volumeDevices", "devicePath", d);
        }
        for e in env {
            upsert_by(main, "env", "name", e);
        }
    }
    for v in volumes {
        upsert_by(pod, "volumes", "name", v);
    }
    Ok(outputs)
}

fn scale_target(p: &mut Params, ctx: &ComponentContext) -> Result<Value, RenderError> {
    Ok(json!({
        "apiVersion": p.str_or("targetAPIVersion", "apps/v1")?,
        "kind": p.str_or("targetKind", "Deployment")?,
        "name": ctx.component,
    }))
}

/// `min`/`max` of the autoscaler traits (`hpa`, `cpuscaler`): defaults 1 and 10, `max >= min`.
fn replica_bounds(p: &mut Params) -> Result<(i64, i64), RenderError> {
    let min = p
        .int_in("min", 1, i64::from(i32::MAX), Some(1))?
        .unwrap_or(1);
    let max = p
        .int_in("max", 1, i64::from(i32::MAX), Some(10))?
        .unwrap_or(10);
    if max < min {
        return Err(p.invalid("max", format!("{max} is below min {min}")));
    }
    Ok((min, max))
}

/// `hpa`: an `autoscaling/v2` HorizontalPodAutoscaler on cpu (and optionally memory, pod metrics).
/// `value` defaults to 50 whatever the type (hpa.cue), so `{type: AverageValue}` targets 50.
fn hpa(p: &mut Params, ctx: &ComponentContext) -> Result<TraitOutputs, RenderError> {
    let (min, max) = replica_bounds(p)?;
    let target = scale_target(p, ctx)?;
    let mut metrics = Vec::new();
    let resource_metric = |name: &str, q: Option<Params>| -> Result<Value, RenderError> {
        let (type_, value) = match q {
            None => ("Utilization".to_string(), json!(50)),
            Some(mut q) => {
                let type_ = q
                    .enum_or("type", &["Utilization", "AverageValue"], "Utilization")?
                    .to_string();
                let value = q.opt_quantity("value")?.unwrap_or(json!(50));
                q.finish()?;
                (type_, value)
            }
        };
        let value_key = if type_ == "Utilization" {
            "averageUtilization"
        } else {
            "averageValue"
        };
        Ok(json!({
            "type": "Resource",
            "resource": { "name": name, "target": { "type": type_, value_key: value } },
        }))
    };
    metrics.push(resource_metric("cpu", p.opt_object("cpu")?)?);
    if let Some(mem) = p.opt_object("mem")? {
        metrics.push(resource_metric("memory", Some(mem))?);
    }
    for mut m in p.list_or_empty("podCustomMetrics")? {
        let name = m.str("name")?;
        let value = m.opt_quantity("value")?.ok_or_else(|| m.missing("value"))?;
        m.finish()?;
        metrics.push(json!({
            "type": "Pods",
            "pods": { "metric": { "name": name }, "target": { "type": "AverageValue", "averageValue": value } },
        }));
    }
    Ok(vec![(
        "hpa".to_string(),
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": ctx.component },
            "spec": { "scaleTargetRef": target, "minReplicas": min, "maxReplicas": max, "metrics": metrics },
        }),
    )])
}

/// `cpuscaler`: an `autoscaling/v1` HorizontalPodAutoscaler on cpu utilization.
fn cpuscaler(p: &mut Params, ctx: &ComponentContext) -> Result<TraitOutputs, RenderError> {
    let (min, max) = replica_bounds(p)?;
    let util = p
        .int_in("cpuUtil", 1, i64::from(i32::MAX), Some(50))?
        .unwrap_or(50);
    let target = scale_target(p, ctx)?;
    Ok(vec![(
        "cpuscaler".to_string(),
        json!({
            "apiVersion": "autoscaling/v1",
            "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": ctx.component },
            "spec": {
                "scaleTargetRef": target,
                "minReplicas": min,
                "maxReplicas": max,
                "targetCPUUtilizationPercentage": util,
            },
        }),
    )])
}

/// `command`: replace `command`/`args`, or edit the existing args with `addArgs`/`delArgs`. As in
/// command.cue the target's `args` is always rewritten: `args`, else the existing args minus
/// `delArgs`, followed by the `addArgs` not already there (so `[]` when there were none).
fn command(
    p: &mut Params,
    ctx: &ComponentContext,
    workload: &mut Value,
) -> Result<TraitOutputs, RenderError> {
    each_container(p, ctx, workload, |item, container| {
        let command = item.opt_str_list("command")?;
        let args = item.opt_str_list("args")?;
        let add = item.opt_str_list("addArgs")?;
        let del = item.opt_str_list("delArgs")?;
        if args.is_some() && (add.is_some() || del.is_some()) {
            return Err(item.invalid(
                "args",
                "cannot set addArgs/delArgs and args at the same time",
            ));
        }
        if let Some(command) = command {
            container.insert("command".into(), json!(command));
        }
        let del = del.unwrap_or_default();
        let base: Vec<String> = match args {
            Some(args) => args,
            None => match container.get("args") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            },
        };
        let mut out: Vec<String> = base.iter().filter(|a| !del.contains(a)).cloned().collect();
        out.extend(
            add.unwrap_or_default()
                .into_iter()
                .filter(|a| !del.contains(a) && !base.contains(a)),
        );
        container.insert("args".into(), json!(out));
        Ok(())
    })?;
    Ok(Vec::new())
}

/// `container-image`: set a container's image (and pull policy).
fn container_image(
    p: &mut Params,
    ctx: &ComponentContext,
    workload: &mut Value,
) -> Result<TraitOutputs, RenderError> {
    each_container(p, ctx, workload, |item, container| {
        let image = item.str("image")?;
        let pull = item.enum_or(
            "imagePullPolicy",
            &["", "IfNotPresent", "Always", "Never"],
            "",
        )?;
        container.insert("image".into(), image.into());
        if !pull.is_empty() {
            container.insert("imagePullPolicy".into(), pull.into());
        }
        Ok(())
    })?;
    Ok(Vec::new())
}

/// `resource`: requests and limits on every container. Top-level `cpu` and `memory` apply only
/// when both are set and neither `requests` nor `limits` is; `requests`/`limits` (each defaulting
/// to cpu 1, memory 2048Mi) replace the container's maps (`retainKeys`).
fn resource(p: &mut Params, workload: &mut Value) -> Result<TraitOutputs, RenderError> {
    let cpu = p.opt_quantity("cpu")?;
    let memory = p.opt_quantity("memory")?;
    let section = |key: &'static str, p: &mut Params| -> Result<Option<Value>, RenderError> {
        let Some(mut q) = p.opt_object(key)? else {
            return Ok(None);
        };
        let cpu = q.opt_quantity("cpu")?.unwrap_or(json!(1));
        let memory = q.opt_quantity("memory")?.unwrap_or(json!("2048Mi"));
        q.finish()?;
        Ok(Some(json!({ "cpu": cpu, "memory": memory })))
    };
    let requests = section("requests", p)?;
    let limits = section("limits", p)?;
    let (requests, limits) = match (cpu, memory) {
        (Some(cpu), Some(memory)) if requests.is_none() && limits.is_none() => {
            let both = json!({ "cpu": cpu, "memory": memory });
            (Some(both.clone()), Some(both))
        }
        _ => (requests, limits),
    };
    let pod = pod_spec(p, workload)?;
    for container in containers(p, pod, "containers")? {
        let Value::Object(c) = container else {
            continue;
        };
        let resources = c
            .entry("resources".to_string())
            .or_insert_with(|| json!({}));
        if !resources.is_object() {
            *resources = json!({});
        }
        for (key, values) in [("requests", &requests), ("limits", &limits)] {
            if let Some(values) = values {
                resources[key] = values.clone();
            }
        }
    }
    Ok(Vec::new())
}

/// `service-account`: run the pods as `name`; optionally create it and its Role/ClusterRole.
fn service_account(
    p: &mut Params,
    ctx: &ComponentContext,
    workload: &mut Value,
) -> Result<TraitOutputs, RenderError> {
    let name = p.str("name")?;
    let create = p.bool_or("create", false)?;
    let mut namespace_rules = Vec::new();
    let mut cluster_rules = Vec::new();
    for mut privilege in p.list_or_empty("privileges")? {
        let verbs = privilege
            .opt_str_list("verbs")?
            .ok_or_else(|| privilege.missing("verbs"))?;
        let mut rule = json!({ "verbs": verbs });
        for key in ["apiGroups", "resources", "resourceNames", "nonResourceURLs"] {
            if let Some(list) = privilege.opt_str_list(key)? {
                rule[key] = json!(list);
            }
        }
        let scope = privilege.enum_or("scope", &["namespace", "cluster"], "namespace")?;
        if scope == "namespace" && rule.get("nonResourceURLs").is_some() {
            return Err(
                privilege.invalid("nonResourceURLs", "nonResourceURLs need scope \"cluster\"")
            );
        }
        privilege.finish()?;
        if scope == "cluster" {
            cluster_rules.push(rule);
        } else {
            namespace_rules.push(rule);
        }
    }
    let pod = pod_spec(p, workload)?;
    pod.insert("serviceAccountName".into(), name.into());
    let subject = json!([{ "kind": "ServiceAccount", "name": name, "namespace": ctx.namespace }]);
    let mut outputs = Vec::new();
    if create {
        outputs.push((
            "service-account".to_string(),
            json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": name } }),
        ));
    }
    let rbac = "rbac.authorization.k8s.io/v1";
    if !namespace_rules.is_empty() {
        outputs.push((
            "role".to_string(),
            json!({ "apiVersion": rbac, "kind": "Role", "metadata": { "name": name }, "rules": namespace_rules }),
        ));
        outputs.push((
            "role-binding".to_string(),
            json!({
                "apiVersion": rbac, "kind": "RoleBinding", "metadata": { "name": name },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
                // service-account.cue gives the RoleBinding's subject no namespace.
                "subjects": [{ "kind": "ServiceAccount", "name": name }],
            }),
        ));
    }
    if !cluster_rules.is_empty() {
        let cluster_name = format!("{}:{name}", ctx.namespace);
        outputs.push((
            "cluster-role".to_string(),
            json!({ "apiVersion": rbac, "kind": "ClusterRole", "metadata": { "name": cluster_name }, "rules": cluster_rules }),
        ));
        outputs.push((
            "cluster-role-binding".to_string(),
            json!({
                "apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": { "name": cluster_name },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name },
                "subjects": subject,
            }),
        ));
    }
    Ok(outputs)
}

// ---------------------------------------------------------------------------------------------
// Scheduling, security, probes and raw patches (affinity.cue, securitycontext.cue, …).

/// Inserts `fields` into the object at `key` of `map` (created if absent): a CUE patch unifies
/// into what the workload already has.
fn merge_into(map: &mut Map<String, Value>, key: &str, fields: Map<String, Value>) {
    let entry = map.entry(key.to_string()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    if let Value::Object(target) = entry {
        target.extend(fields);
    }
}

/// `#labelSelector`: `matchLabels`, `matchExpressions[{key, operator=In, values?}]`.
fn label_selector(mut p: Params, operators: &[&str]) -> Result<Value, RenderError> {
    let mut out = Map::new();
    if let Some(labels) = p.opt_str_map("matchLabels")? {
        out.insert("matchLabels".into(), Value::Object(labels));
    }
    if let Some(exprs) = p.opt_list("matchExpressions")? {
        let mut list = Vec::new();
        for mut e in exprs {
            let mut expr = json!({ "key": e.str("key")?, "operator": e.enum_or("operator", operators, "In")? });
            if let Some(values) = e.opt_str_list("values")? {
                expr["values"] = json!(values);
            }
            e.finish()?;
            list.push(expr);
        }
        out.insert("matchExpressions".into(), Value::Array(list));
    }
    p.finish()?;
    Ok(Value::Object(out))
}

const SELECTOR_OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];
const NODE_OPERATORS: [&str; 6] = ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"];

/// `#podAffinityTerm`: `labelSelector`, `namespaces`, `topologyKey`, `namespaceSelector`.
fn pod_affinity_term(mut p: Params) -> Result<Value, RenderError> {
    let mut out = Map::new();
    if let Some(sel) = p.opt_object("labelSelector")? {
        out.insert(
            "labelSelector".into(),
            label_selector(sel, &SELECTOR_OPERATORS)?,
        );
    }
    if let Some(ns) = p.opt_str_list("namespaces")? {
        out.insert("namespaces".into(), json!(ns));
    }
    out.insert("topologyKey".into(), p.str("topologyKey")?.into());
    if let Some(sel) = p.opt_object("namespaceSelector")? {
        out.insert(
            "namespaceSelector".into(),
            label_selector(sel, &SELECTOR_OPERATORS)?,
        );
    }
    p.finish()?;
    Ok(Value::Object(out))
}

fn weight(p: &mut Params) -> Result<i64, RenderError> {
    p.int_in("weight", 1, 100, None)?
        .ok_or_else(|| p.missing("weight"))
}

fn pod_affinity(mut p: Params) -> Result<Value, RenderError> {
    let mut out = Map::new();
    if let Some(required) = p.opt_list("required")? {
        let terms = required
            .into_iter()
            .map(pod_affinity_term)
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(
            "requiredDuringSchedulingIgnoredDuringExecution".into(),
            Value::Array(terms),
        );
    }
    if let Some(preferred) = p.opt_list("preferred")? {
        let mut terms = Vec::new();
        for mut t in preferred {
            let w = weight(&mut t)?;
            let term = t
                .opt_object("podAffinityTerm")?
                .ok_or_else(|| t.missing("podAffinityTerm"))?;
            terms.push(json!({ "weight": w, "podAffinityTerm": pod_affinity_term(term)? }));
            t.finish()?;
        }
        out.insert(
            "preferredDuringSchedulingIgnoredDuringExecution".into(),
            Value::Array(terms),
        );
    }
    p.finish()?;
    Ok(Value::Object(out))
}

/// `#nodeSelectorTerm`: `matchExpressions` / `matchFields`, operator default `In`.
fn node_selector_term(mut p: Params) -> Result<Value, RenderError> {
    let mut out = Map::new();
    for key in ["matchExpressions", "matchFields"] {
        if let Some(items) = p.opt_list(key)? {
            let mut list = Vec::new();
            for mut e in items {
                let mut expr = json!({ "key": e.str("key")?, "operator": e.enum_or("operator", &NODE_OPERATORS, "In")? });
                if let Some(values) = e.opt_str_list("values")? {
                    expr["values"] = json!(values);
                }
                e.finish()?;
                list.push(expr);
            }
            out.insert(key.into(), Value::Array(list));
        }
    }
    p.finish()?;
    Ok(Value::Object(out))
}

/// `affinity`: pod (anti-)affinity, node affinity and tolerations on the pod spec.
fn affinity(p: &mut Params, workload: &mut Value) -> Result<TraitOutputs, RenderError> {
    let mut affinity = Map::new();
    for key in ["podAffinity", "podAntiAffinity"] {
        if let Some(a) = p.opt_object(key)? {
            affinity.insert(key.into(), pod_affinity(a)?);
        }
    }
    if let Some(mut node) = p.opt_object("nodeAffinity")? {
        let mut out = Map::new();
        if let Some(mut required) = node.opt_object("required")? {
            let terms = required
                .opt_list("nodeSelectorTerms")?
                .ok_or_else(|| required.missing("nodeSelectorTerms"))?
                .into_iter()
                .map(node_selector_term)
                .collect::<Result<Vec<_>, _>>()?;
            required.finish()?;
            out.insert(
                "requiredDuringSchedulingIgnoredDuringExecution".into(),
                json!({ "nodeSelectorTerms": terms }),
            );
        }
        if let Some(preferred) = node.opt_list("preferred")? {
            let mut terms = Vec::new();
            for mut t in preferred {
                let w = weight(&mut t)?;
                let pref = t
                    .opt_object("preference")?
                    .ok_or_else(|| t.missing("preference"))?;
                terms.push(json!({ "weight": w, "preference": node_selector_term(pref)? }));
                t.finish()?;
            }
            out.insert(
                "preferredDuringSchedulingIgnoredDuringExecution".into(),
                Value::Array(terms),
            );
        }
        node.finish()?;
        affinity.insert("nodeAffinity".into(), Value::Object(out));
    }
    let mut tolerations = None;
    if let Some(items) = p.opt_list("tolerations")? {
        let mut list = Vec::new();
        for mut t in items {
            let mut out = Map::new();
            if let Some(key) = t.opt_str("key")? {
                out.insert("key".into(), key.into());
            }
            if let Some(effect) = t.opt_str("effect")? {
                let effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
                if !effects.contains(&effect) {
                    return Err(t.invalid(
                        "effect",
                        format!("{effect:?} is not one of {}", effects.join(", ")),
                    ));
                }
                out.insert("effect".into(), effect.into());
            }
            if let Some(value) = t.opt_str("value")? {
                out.insert("value".into(), value.into());
            }
            out.insert(
                "operator".into(),
                t.enum_or("operator", &["Equal", "Exists"], "Equal")?.into(),
            );
            if let Some(secs) = t.opt_int("tolerationSeconds")? {
                out.insert("tolerationSeconds".into(), secs.into());
            }
            t.finish()?;
            list.push(Value::Object(out));
        }
        tolerations = Some(list);
    }
    let pod = pod_spec(p, workload)?;
    if !affinity.is_empty() {
        merge_into(pod, "affinity", affinity);
    }
    if let Some(t) = tolerations {
        pod.insert("tolerations".into(), Value::Array(t));
    }
    Ok(Vec::new())
}

/// `topologyspreadconstraints`: the pod spec's `topologySpreadConstraints`.
fn topology_spread_constraints(
    p: &mut Params,
    workload: &mut Value,
) -> Result<TraitOutputs, RenderError> {
    let mut constraints = Vec::new();
    for mut c in p
        .opt_list("constraints")?
        .ok_or_else(|| p.missing("constraints"))?
    {
        let mut out = Map::new();
        let skew = c.opt_int("maxSkew")?.ok_or_else(|| c.missing("maxSkew"))?;
        out.insert("maxSkew".into(), skew.into());
        out.insert("topologyKey".into(), c.str("topologyKey")?.into());
        out.insert(
            "whenUnsatisfiable".into(),
            c.enum_or(
                "whenUnsatisfiable",
                &["DoNotSchedule", "ScheduleAnyway"],
                "DoNotSchedule",
            )?
            .into(),
        );
        let selector = c
            .opt_object("labelSelector")?
            .ok_or_else(|| c.missing("labelSelector"))?;
        out.insert(
            "labelSelector".into(),
            label_selector(selector, &SELECTOR_OPERATORS)?,
        );
        for key in ["nodeAffinityPolicy", "nodeTaintsPolicy"] {
            if c.has(key) {
                out.insert(
                    key.into(),
                    c.enum_or(key, &["Honor", "Ignore"], "Honor")?.into(),
                );
            }
        }
        if let Some(min) = c.opt_int("minDomains")? {
            out.insert("minDomains".into(), min.into());
        }
        if let Some(keys) = c.opt_str_list("matchLabelKeys")? {
            out.insert("matchLabelKeys".into(), json!(keys));
        }
        c.finish()?;
        constraints.push(Value::Object(out));
    }
    pod_spec(p, workload)?.insert(
        "topologySpreadConstraints".into(),
        Value::Array(constraints),
    );
    Ok(Vec::new())
}

/// `securitycontext`: a container's `securityContext` (non-root and unprivileged by default).
fn security_context(
    p: &mut Params,
    ctx: &ComponentContext,
    workload: &mut Value,
) -> Result<TraitOutputs, RenderError> {
    each_container(p, ctx, workload, |item, container| {
        let mut capabilities = Map::new();
        if let Some(add) = item.opt_str_list("addCapabilities")? {
            capabilities.insert("add".into(), json!(add));
        }
        if let Some(drop) = item.opt_str_list("dropCapabilities")? {
            capabilities.insert("drop".into(), json!(drop));
        }
        let mut sc = Map::new();
        sc.insert("capabilities".into(), Value::Object(capabilities));
        for key in ["runAsUser", "runAsGroup"] {
            if let Some(id) = item.opt_int(key)? {
                sc.insert(key.into(), id.into());
            }
        }
        for (key, default) in [
            ("allowPrivilegeEscalation", false),
            ("readOnlyRootFilesystem", false),
            ("privileged", false),
            ("runAsNonRoot", true),
        ] {
            sc.insert(key.into(), item.bool_or(key, default)?.into());
        }
        merge_into(container, "securityContext", sc);
        Ok(())
    })?;
    Ok(Vec::new())
}

/// `{type: RuntimeDefault|Unconfined|Localhost, localhostProfile?}`.
fn security_profile(mut p: Params) -> Result<Value, RenderError> {
    let types = ["RuntimeDefault", "Unconfined", "Localhost"];
    let type_ = p.str("type")?;
    if !types.contains(&type_) {
        return Err(p.invalid(
            "type",
            format!("{type_:?} is not one of {}", types.join(", ")),
        ));
    }
    let mut out = json!({ "type": type_ });
    if let Some(profile) = p.opt_str("localhostProfile")? {
        out["localhostProfile"] = profile.into();
    }
    p.finish()?;
    Ok(out)
}

/// `podsecuritycontext`: the pod's `securityContext` (`runAsNonRoot` defaults to true).
fn pod_security_context(p: &mut Params, workload: &mut Value) -> Result<TraitOutputs, RenderError> {
    let mut sc = Map::new();
    for key in ["appArmorProfile", "seccompProfile"] {
        if let Some(profile) = p.opt_object(key)? {
            sc.insert(key.into(), security_profile(profile)?);
        }
    }
    for key in ["fsGroup", "runAsGroup", "runAsUser"] {
        if let Some(id) = p.opt_int(key)? {
            sc.insert(key.into(), id.into());
        }
    }
    sc.insert(
        "runAsNonRoot".into(),
        p.bool_or("runAsNonRoot", true)?.into(),
    );
    merge_into(pod_spec(p, workload)?, "securityContext", sc);
    Ok(Vec::new())
}

/// `httpGet` of a probe or lifecycle handler; `scheme` gets `default_scheme` when given.
fn http_get(mut p: Params, default_scheme: Option<&'static str>) -> Result<Value, RenderError> {
    let mut out = Map::new();
    if let Some(path) = p.opt_str("path")? {
        out.insert("path".into(), path.into());
    }
    let port = p
        .int_in("port", 1, 65535, None)?
        .ok_or_else(|| p.missing("port"))?;
    out.insert("port".into(), port.into());
    if let Some(host) = p.opt_str("host")? {
        out.insert("host".into(), host.into());
    }
    let scheme = match default_scheme {
        Some(d) => Some(p.enum_or("scheme", &["HTTP", "HTTPS"], d)?),
        None if p.has("scheme") => Some(p.enum_or("scheme", &["HTTP", "HTTPS"], "HTTP")?),
        None => None,
    };
    if let Some(scheme) = scheme {
        out.insert("scheme".into(), scheme.into());
    }
    if let Some(headers) = p.opt_list("httpHeaders")? {
        let mut list = Vec::new();
        for mut h in headers {
            list.push(json!({ "name": h.str("name")?, "value": h.str("value")? }));
            h.finish()?;
        }
        out.insert("httpHeaders".into(), Value::Array(list));
    }
    p.finish()?;
    Ok(Value::Object(out))
}

fn exec_handler(mut p: Params) -> Result<Value, RenderError> {
    let command = p
        .opt_str_list("command")?
        .ok_or_else(|| p.missing("command"))?;
    p.finish()?;
    Ok(json!({ "command": command }))
}

fn tcp_socket(mut p: Params) -> Result<Value, RenderError> {
    let port = p
        .opt_int_or_string("port")?
        .ok_or_else(|| p.missing("port"))?;
    let mut out = json!({ "port": port });
    if let Some(host) = p.opt_str("host")? {
        out["host"] = host.into();
    }
    p.finish()?;
    Ok(out)
}

/// `startup-probe`: a container's `startupProbe` (one container, or several under `probes`).
fn startup_probe(
    p: &mut Params,
    ctx: &ComponentContext,
    workload: &mut Value,
) -> Result<TraitOutputs, RenderError> {
    each_container_in(p, ctx, workload, "probes", |item, container| {
        let mut probe = Map::new();
        if let Some(exec) = item.opt_object("exec")? {
            probe.insert("exec".into(), exec_handler(exec)?);
        }
        if let Some(get) = item.opt_object("httpGet")? {
            probe.insert("httpGet".into(), http_get(get, None)?);
        }
        if let Some(mut grpc) = item.opt_object("grpc")? {
            let port = grpc.opt_int("port")?.ok_or_else(|| grpc.missing("port"))?;
            let mut g = json!({ "port": port });
            if let Some(service) = grpc.opt_str("service")? {
                g["service"] = service.into();
            }
            grpc.finish()?;
            probe.insert("grpc".into(), g);
        }
        if let Some(tcp) = item.opt_object("tcpSocket")? {
            probe.insert("tcpSocket".into(), tcp_socket(tcp)?);
        }
        for (key, default) in [
            ("initialDelaySeconds", 0),
            ("periodSeconds", 10),
            ("timeoutSeconds", 1),
            ("successThreshold", 1),
            ("failureThreshold", 3),
        ] {
            probe.insert(key.into(), item.int_or(key, default)?.into());
        }
        if let Some(grace) = item.opt_int("terminationGracePeriodSeconds")? {
            probe.insert("terminationGracePeriodSeconds".into(), grace.into());
        }
        container.insert("startupProbe".into(), Value::Object(probe));
        Ok(())
    })?;
    Ok(Vec::new())
}

/// `lifecycle`: `postStart` / `preStop` handlers on every container of the pod.
fn lifecycle(p: &mut Params, workload: &mut Value) -> Result<TraitOutputs, RenderError> {
    let mut hooks = Map::new();
    for key in ["postStart", "preStop"] {
        let Some(mut h) = p.opt_object(key)? else {
            continue;
        };
        let mut handler = Map::new();
        if let Some(exec) = h.opt_object("exec")? {
            handler.insert("exec".into(), exec_handler(exec)?);
        }
        if let Some(get) = h.opt_object("httpGet")? {
            handler.insert("httpGet".into(), http_get(get, Some("HTTP"))?);
        }
        if let Some(tcp) = h.opt_object("tcpSocket")? {
            handler.insert("tcpSocket".into(), tcp_socket(tcp)?);
        }
        h.finish()?;
        hooks.insert(key.into(), Value::Object(handler));
    }
    let pod = pod_spec(p, workload)?;
    for container in containers(p, pod, "containers")? {
        if let Value::Object(c) = container {
            merge_into(c, "lifecycle", hooks.clone());
        }
    }
    Ok(Vec::new())
}

/// `hostalias`: host aliases on the pod, merged by `ip`: an IP the pod (or an earlier entry)
/// already has gains the new hostnames, each listed once.
fn hostalias(p: &mut Params, workload: &mut Value) -> Result<TraitOutputs, RenderError> {
    let mut aliases: Vec<(String, Vec<String>)> = Vec::new();
    for mut a in p
        .opt_list("hostAliases")?
        .ok_or_else(|| p.missing("hostAliases"))?
    {
        let hostnames = a.opt_str_list("hostnames")?.unwrap_or_default();
        let Some(ip) = a.opt_str("ip")? else {
            return Err(a.invalid(
                "ip",
                format!("a host alias needs an ip: {}", hostnames.join(", ")),
            ));
        };
        a.finish()?;
        aliases.push((ip.to_string(), hostnames));
    }
    let pod = pod_spec(p, workload)?;
    let list = containers(p, pod, "hostAliases")?;
    for (ip, hostnames) in aliases {
        let index = match list
            .iter()
            .position(|e| e["ip"].as_str() == Some(ip.as_str()))
        {
            Some(i) => i,
            None => {
                list.push(json!({ "ip": ip, "hostnames": [] }));
                list.len() - 1
            }
        };
        let entry = &mut list[index];
        if !entry["hostnames"].is_array() {
            entry["hostnames"] = json!([]);
        }
        if let Some(names) = entry["hostnames"].as_array_mut() {
            for h in hostnames {
                if !names.iter().any(|n| n.as_str() == Some(h.as_str())) {
                    names.push(h.into());
                }
            }
        }
    }
    Ok(Vec::new())
}

/// `container-ports`: host ports on a container's ports, matched by protocol and containerPort;
/// ports the container lacks are added (container-ports.cue rebuilds the list).
fn container_ports(
    p: &mut Params,
    ctx: &ComponentContext,
    workload: &mut Value,
) -> Result<TraitOutputs, RenderError> {
    each_container(p, ctx, workload, |item, container| {
        let mut wanted = Vec::new();
        for mut port in item.list_or_empty("ports")? {
            let number = port
                .int_in("containerPort", 1, 65535, None)?
                .ok_or_else(|| port.missing("containerPort"))?;
            let protocol = port.enum_or("protocol", &["TCP", "UDP", "SCTP"], "TCP")?;
            let host_port = port.int_in("hostPort", 1, 65535, None)?;
            let host_ip = port.opt_str("hostIP")?;
            port.finish()?;
            wanted.push((number, protocol, host_port, host_ip));
        }
        let key = |protocol: &str, number: i64| format!("{}{number}", protocol.to_lowercase());
        let host = |out: &mut Map<String, Value>, host_port: Option<i64>, host_ip: Option<&str>| {
            if let Some(hp) = host_port {
                out.insert("hostPort".into(), hp.into());
            }
            if let Some(ip) = host_ip {
                out.insert("hostIP".into(), ip.into());
            }
        };
        let base: Option<Vec<Value>> = match container.get("ports") {
            Some(Value::Array(ports)) => Some(ports.clone()),
            _ => None,
        };
        let mut ports = Vec::new();
        let mut base_keys = Vec::new();
        for b in base.iter().flatten() {
            let number = b["containerPort"].as_i64().unwrap_or_default();
            // A port without a protocol is matched as TCP and left without one.
            let protocol = b["protocol"].as_str().unwrap_or("TCP");
            let k = key(protocol, number);
            let mut out = Map::new();
            out.insert("containerPort".into(), number.into());
            if let Some(p) = b.get("protocol") {
                out.insert("protocol".into(), p.clone());
            }
            if let Some(name) = b.get("name") {
                out.insert("name".into(), name.clone());
            }
            if let Some((_, _, hp, ip)) = wanted.iter().find(|(n, pr, _, _)| key(pr, *n) == k) {
                host(&mut out, *hp, *ip);
            }
            base_keys.push(k);
            ports.push(Value::Object(out));
        }
        for (number, protocol, hp, ip) in &wanted {
            if base_keys.contains(&key(protocol, *number)) {
                continue;
            }
            let mut out = Map::new();
            out.insert("containerPort".into(), (*number).into());
            out.insert("protocol".into(), (*protocol).into());
            host(&mut out, *hp, *ip);
            ports.push(Value::Object(out));
        }
        container.insert("ports".into(), Value::Array(ports));
        Ok(())
    })?;
    Ok(Vec::new())
}

/// `k8s-update-strategy`: the Deployment's `strategy` or the StatefulSet's / DaemonSet's
/// `updateStrategy`, chosen by `targetKind` as in the CUE (not by the workload's kind).
fn update_strategy(p: &mut Params, workload: &mut Value) -> Result<TraitOutputs, RenderError> {
    p.str_or("targetAPIVersion", "apps/v1")?;
    let kind = p.enum_or(
        "targetKind",
        &["Deployment", "StatefulSet", "DaemonSet"],
        "Deployment",
    )?;
    let (type_, rolling) = match p.opt_object("strategy")? {
        None => ("RollingUpdate", None),
        Some(mut s) => {
            let type_ = s.enum_or(
                "type",
                &["RollingUpdate", "Recreate", "OnDelete"],
                "RollingUpdate",
            )?;
            let rolling = match s.opt_object("rollingStrategy")? {
                Some(mut r) => {
                    let v = (
                        r.str_or("maxSurge", "25%")?.to_string(),
                        r.str_or("maxUnavailable", "25%")?.to_string(),
                        r.int_or("partition", 0)?,
                    );
                    r.finish()?;
                    Some(v)
                }
                None => None,
            };
            s.finish()?;
            (type_, rolling)
        }
    };
    let (key, skipped) = match kind {
        "Deployment" => ("strategy", "OnDelete"),
        _ => ("updateStrategy", "Recreate"),
    };
    if type_ == skipped {
        return Ok(Vec::new());
    }
    let mut strategy = json!({ "type": type_ });
    if type_ == "RollingUpdate" {
        let (surge, unavailable, partition) =
            rolling.unwrap_or_else(|| ("25%".to_string(), "25%".to_string(), 0));
        strategy["rollingUpdate"] = if kind == "StatefulSet" {
            json!({ "partition": partition })
        } else {
            json!({ "maxSurge": surge, "maxUnavailable": unavailable })
        };
    }
    match workload.get_mut("spec") {
        Some(Value::Object(spec)) => {
            spec.insert(key.into(), strategy);
        }
        _ => workload["spec"] = json!({ key: strategy }),
    }
    Ok(Vec::new())
}

/// `json-patch`: RFC 6902 operations on the workload.
fn json_patch(p: &mut Params, workload: &mut Value) -> Result<TraitOutputs, RenderError> {
    let operations = match p.opt("operations") {
        None => return Err(p.missing("operations")),
        Some(Value::Array(ops)) => ops,
        Some(other) => return Err(p.type_error("operations", "array of objects", other)),
    };
    if let Some((i, op)) = operations.iter().enumerate().find(|(_, o)| !o.is_object()) {
        return Err(p.type_error(&format!("operations[{i}]"), "object", op));
    }
    super::json_patch::apply(workload, operations).map_err(|e| p.invalid("operations", e))?;
    keeps_type(p, Some("operations"), workload)?;
    Ok(Vec::new())
}

/// `json-merge-patch`: the properties are an RFC 7386 merge patch of the workload.
fn json_merge_patch(p: &mut Params, workload: &mut Value) -> Result<TraitOutputs, RenderError> {
    let patch: Map<String, Value> = p.entries().map(|(k, v)| (k.clone(), v.clone())).collect();
    super::policy::merge_patch(workload, &Value::Object(patch));
    keeps_type(p, None, workload)?;
    Ok(Vec::new())
}

/// The applier sends the workload as a Kubernetes object named by its `apiVersion` and `kind`: a
/// patch may change them, not remove them (or replace the whole object by one without them).
/// `field` names the parameter in the error; `None` names the key itself (a merge patch's keys).
fn keeps_type(p: &Params, field: Option<&str>, workload: &Value) -> Result<(), RenderError> {
    for key in ["apiVersion", "kind"] {
        if workload[key].as_str().is_none_or(str::is_empty) {
            return Err(p.invalid(
                field.unwrap_or(key),
                format!("the patched workload has no {key}; a patch may change it, not remove it"),
            ));
        }
    }
    Ok(())
}
