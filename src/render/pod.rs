//! The container and pod-spec parameters the built-in component types share (`image`, `cmd`,
//! `env`, `cpu`, `volumeMounts`, probes …), rendered the way KubeVela's CUE templates render them.
use serde_json::{Map, Value, json};

use super::error::RenderError;
use super::params::Params;

/// Which optional parameters a component type declares.
#[derive(Clone, Copy, Default)]
pub(crate) struct ContainerParams {
    pub args: bool,
    pub limit: bool,
    pub volume_mounts: bool,
    pub host_aliases: bool,
    /// `daemon` only: `mountPropagation` and `readOnly` on hostPath mounts.
    pub host_path_mount_options: bool,
}

/// The pieces of a pod spec rendered from the shared parameters.
pub(crate) struct PodParts {
    pub container: Map<String, Value>,
    pub volumes: Vec<Value>,
    pub image_pull_secrets: Option<Vec<Value>>,
    pub host_aliases: Option<Vec<Value>>,
}

impl PodParts {
    /// Writes volumes, pull secrets and host aliases into a pod spec that already has containers.
    pub fn extend_pod_spec(self, spec: &mut Map<String, Value>) {
        if let Some(aliases) = self.host_aliases {
            spec.insert("hostAliases".into(), Value::Array(aliases));
        }
        if let Some(secrets) = self.image_pull_secrets {
            spec.insert("imagePullSecrets".into(), Value::Array(secrets));
        }
        if !self.volumes.is_empty() {
            spec.insert("volumes".into(), Value::Array(self.volumes));
        }
    }
}

/// The main container (named after the component) and its pod-level companions.
pub(crate) fn main_container<'a>(
    p: &mut Params<'a>,
    name: &str,
    opts: ContainerParams,
) -> Result<PodParts, RenderError> {
    let mut c = Map::new();
    c.insert("name".into(), name.into());
    c.insert("image".into(), p.str("image")?.into());
    if let Some(policy) = p.opt_str("imagePullPolicy")? {
        check_pull_policy(p, "imagePullPolicy", policy)?;
        c.insert("imagePullPolicy".into(), policy.into());
    }
    if let Some(cmd) = p.opt_str_list("cmd")? {
        c.insert("command".into(), json!(cmd));
    }
    if opts.args
        && let Some(args) = p.opt_str_list("args")?
    {
        c.insert("args".into(), json!(args));
    }
    if let Some(env) = env_list(p, "env", false)? {
        c.insert("env".into(), Value::Array(env));
    }
    let resources = resources(p, opts.limit)?;
    if !resources.is_empty() {
        c.insert("resources".into(), Value::Object(resources));
    }

    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    if opts.volume_mounts
        && let Some(vm) = p.opt_object("volumeMounts")?
    {
        volume_mounts(vm, opts.host_path_mount_options, &mut mounts, &mut volumes)?;
    }
    if let Some(legacy) = p.opt_list("volumes")? {
        // The deprecated `volumes` is used only when `volumeMounts` is absent, as in KubeVela.
        let mut legacy_mounts = Vec::new();
        let mut legacy_volumes = Vec::new();
        for v in legacy {
            legacy_volume(v, &mut legacy_mounts, &mut legacy_volumes)?;
        }
        if mounts.is_empty() && volumes.is_empty() {
            mounts = legacy_mounts;
            volumes = legacy_volumes;
        }
    }
    if !mounts.is_empty() {
        c.insert("volumeMounts".into(), Value::Array(mounts));
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        if let Some(pp) = p.opt_object(probe)? {
            c.insert(probe.into(), health_probe(pp)?);
        }
    }
    let image_pull_secrets = p
        .opt_str_list("imagePullSecrets")?
        .map(|names| names.into_iter().map(|n| json!({ "name": n })).collect());
    let host_aliases = if opts.host_aliases {
        host_aliases(p)?
    } else {
        None
    };
    Ok(PodParts {
        container: c,
        volumes: dedup_by_name(volumes),
        image_pull_secrets,
        host_aliases,
    })
}

pub(crate) fn check_pull_policy(p: &Params, key: &str, policy: &str) -> Result<(), RenderError> {
    const POLICIES: [&str; 3] = ["Always", "Never", "IfNotPresent"];
    if POLICIES.contains(&policy) {
        Ok(())
    } else {
        Err(p.invalid(
            key,
            format!("{policy:?} is not one of {}", POLICIES.join(", ")),
        ))
    }
}

/// `env: [{name, value?, valueFrom?}]`; `field_ref` allows `valueFrom.fieldRef` (sidecar).
pub(crate) fn env_list<'a>(
    p: &mut Params<'a>,
    key: &'a str,
    field_ref: bool,
) -> Result<Option<Vec<Value>>, RenderError> {
    let Some(items) = p.opt_list(key)? else {
        return Ok(None);
    };
    let mut env = Vec::with_capacity(items.len());
    for mut item in items {
        let mut e = Map::new();
        e.insert("name".into(), item.str("name")?.into());
        if let Some(value) = item.opt_str("value")? {
            e.insert("value".into(), value.into());
        }
        if let Some(mut from) = item.opt_object("valueFrom")? {
            let mut out = Map::new();
            for (ref_key, name_key) in [("secretKeyRef", "name"), ("configMapKeyRef", "name")] {
                if let Some(mut r) = from.opt_object(ref_key)? {
                    let name = r.str(name_key)?;
                    let key = r.str("key")?;
                    r.finish()?;
                    out.insert(ref_key.into(), json!({ "name": name, "key": key }));
                }
            }
            if field_ref && let Some(mut r) = from.opt_object("fieldRef")? {
                let path = r.str("fieldPath")?;
                r.finish()?;
                out.insert("fieldRef".into(), json!({ "fieldPath": path }));
            }
            from.finish()?;
            e.insert("valueFrom".into(), Value::Object(out));
        }
        item.finish()?;
        env.push(Value::Object(e));
    }
    Ok(Some(env))
}

/// `cpu` and `memory` set requests and limits alike; `limit{cpu,memory}` overrides the limits.
fn resources(p: &mut Params, with_limit: bool) -> Result<Map<String, Value>, RenderError> {
    let mut requests = Map::new();
    let mut limits = Map::new();
    for key in ["cpu", "memory"] {
        if let Some(q) = p.opt_quantity(key)? {
            requests.insert(key.into(), q.clone());
            limits.insert(key.into(), q);
        }
    }
    if with_limit && let Some(mut limit) = p.opt_object("limit")? {
        for key in ["cpu", "memory"] {
            if let Some(q) = limit.opt_quantity(key)? {
                limits.insert(key.into(), q);
            }
        }
        limit.finish()?;
    }
    let mut out = Map::new();
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    Ok(out)
}

/// `volumeMounts{pvc, configMap, secret, emptyDir, hostPath}` of webservice & co.
fn volume_mounts(
    mut vm: Params,
    host_path_mount_options: bool,
    mounts: &mut Vec<Value>,
    volumes: &mut Vec<Value>,
) -> Result<(), RenderError> {
    for kind in ["pvc", "configMap", "secret", "emptyDir", "hostPath"] {
        for mut v in vm.list_or_empty(kind)? {
            let name = v.str("name")?;
            let mut mount = json!({ "name": name, "mountPath": v.str("mountPath")? });
            if let Some(sub) = v.opt_str("subPath")? {
                mount["subPath"] = sub.into();
            }
            let volume = match kind {
                "pvc" => {
                    json!({ "name": name, "persistentVolumeClaim": { "claimName": v.str("claimName")? } })
                }
                "configMap" => {
                    let mut cm = json!({ "defaultMode": v.int_or("defaultMode", 420)?, "name": v.str("cmName")? });
                    if let Some(items) = key_path_items(&mut v)? {
                        cm["items"] = items;
                    }
                    json!({ "name": name, "configMap": cm })
                }
                "secret" => {
                    let mut s = json!({ "defaultMode": v.int_or("defaultMode", 420)?, "secretName": v.str("secretName")? });
                    if let Some(items) = key_path_items(&mut v)? {
                        s["items"] = items;
                    }
                    json!({ "name": name, "secret": s })
                }
                "emptyDir" => {
                    let medium = v.enum_or("medium", &["", "Memory"], "")?;
                    json!({ "name": name, "emptyDir": { "medium": medium } })
                }
                _ => {
                    let host = json!({ "path": v.str("path")? });
                    if host_path_mount_options {
                        let propagation = ["None", "HostToContainer", "Bidirectional"];
                        if let Some(prop) = v.opt_str("mountPropagation")? {
                            if !propagation.contains(&prop) {
                                return Err(v.invalid(
                                    "mountPropagation",
                                    format!("{prop:?} is not one of {}", propagation.join(", ")),
                                ));
                            }
                            mount["mountPropagation"] = prop.into();
                        }
                        if let Some(ro) = v.opt_bool("readOnly")? {
                            mount["readOnly"] = ro.into();
                        }
                    }
                    json!({ "name": name, "hostPath": host })
                }
            };
            v.finish()?;
            mounts.push(mount);
            volumes.push(volume);
        }
    }
    vm.finish()
}

/// `items: [{key, path, mode=511}]` of configMap and secret volumes.
fn key_path_items(v: &mut Params) -> Result<Option<Value>, RenderError> {
    let Some(items) = v.opt_list("items")? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for mut item in items {
        out.push(json!({
            "key": item.str("key")?,
            "path": item.str("path")?,
            "mode": item.int_or("mode", 511)?,
        }));
        item.finish()?;
    }
    Ok(Some(Value::Array(out)))
}

/// The deprecated `volumes: [{name, mountPath, type: pvc|configMap|secret|emptyDir, …}]`.
fn legacy_volume(
    mut v: Params,
    mounts: &mut Vec<Value>,
    volumes: &mut Vec<Value>,
) -> Result<(), RenderError> {
    let name = v.str("name")?;
    mounts.push(json!({ "name": name, "mountPath": v.str("mountPath")? }));
    let kind = v.enum_or(
        "type",
        &["pvc", "configMap", "secret", "emptyDir"],
        "emptyDir",
    )?;
    let volume = match kind {
        "pvc" => {
            json!({ "name": name, "persistentVolumeClaim": { "claimName": v.str("claimName")? } })
        }
        "configMap" => {
            let mut cm =
                json!({ "defaultMode": v.int_or("defaultMode", 420)?, "name": v.str("cmName")? });
            if let Some(items) = key_path_items(&mut v)? {
                cm["items"] = items;
            }
            json!({ "name": name, "configMap": cm })
        }
        "secret" => {
            let mut s = json!({ "defaultMode": v.int_or("defaultMode", 420)?, "secretName": v.str("secretName")? });
            if let Some(items) = key_path_items(&mut v)? {
                s["items"] = items;
            }
            json!({ "name": name, "secret": s })
        }
        _ => {
            let medium = v.enum_or("medium", &["", "Memory"], "")?;
            json!({ "name": name, "emptyDir": { "medium": medium } })
        }
    };
    v.finish()?;
    volumes.push(volume);
    Ok(())
}

/// `#HealthProbe`, with KubeVela's defaults filled in.
pub(crate) fn health_probe(mut p: Params) -> Result<Value, RenderError> {
    let mut probe = Map::new();
    if let Some(mut exec) = p.opt_object("exec")? {
        let command = exec
            .opt_str_list("command")?
            .ok_or_else(|| exec.missing("command"))?;
        exec.finish()?;
        probe.insert("exec".into(), json!({ "command": command }));
    }
    if let Some(mut get) = p.opt_object("httpGet")? {
        let mut h = Map::new();
        h.insert("path".into(), get.str("path")?.into());
        let port = get
            .opt_int_or_string("port")?
            .ok_or_else(|| get.missing("port"))?;
        h.insert("port".into(), port);
        if let Some(host) = get.opt_str("host")? {
            h.insert("host".into(), host.into());
        }
        if let Some(scheme) = get.opt_str("scheme")? {
            h.insert("scheme".into(), scheme.into());
        }

        if let Some(headers) = get.opt_list("httpHeaders")? {
            let mut out = Vec::new();
            for mut header in headers {
                out.push(json!({ "name": header.str("name")?, "value": header.str("value")? }));
                header.finish()?;
            }
            h.insert("httpHeaders".into(), Value::Array(out));
        }
        get.finish()?;
        probe.insert("httpGet".into(), Value::Object(h));
    }
    if let Some(mut tcp) = p.opt_object("tcpSocket")? {
        let port = tcp
            .opt_int_or_string("port")?
            .ok_or_else(|| tcp.missing("port"))?;
        tcp.finish()?;
        probe.insert("tcpSocket".into(), json!({ "port": port }));
    }
    for (key, default) in [
        ("initialDelaySeconds", 0),
        ("periodSeconds", 10),
        ("timeoutSeconds", 1),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ] {
        probe.insert(key.into(), p.int_or(key, default)?.into());
    }
    p.finish()?;
    Ok(Value::Object(probe))
}

fn host_aliases(p: &mut Params) -> Result<Option<Vec<Value>>, RenderError> {
    let Some(items) = p.opt_list("hostAliases")? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for mut item in items {
        let ip = item.str("ip")?;
        let hostnames = item
            .opt_str_list("hostnames")?
            .ok_or_else(|| item.missing("hostnames"))?;
        item.finish()?;
        out.push(json!({ "ip": ip, "hostnames": hostnames }));
    }
    Ok(Some(out))
}

/// Volumes listed twice under the same name are rendered once (the first wins), as KubeVela does.
fn dedup_by_name(volumes: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(volumes.len());
    for v in volumes {
        if !out.iter().any(|o| o["name"] == v["name"]) {
            out.push(v);
        }
    }
    out
}

/// `port-<n>`, with `-udp`/`-sctp` for non-TCP protocols.
pub(crate) fn port_name(port: i64, protocol: &str) -> String {
    if protocol == "TCP" {
        format!("port-{port}")
    } else {
        format!("port-{port}-{}", protocol.to_lowercase())
    }
}
