//! Delivery of the API server's structured authentication config (`access::authn`): the controller
//! keeps it current in a file beside the API server (`--authn-config-out`) and/or in a ConfigMap
//! for platforms that sync it to their control plane (`--authn-config-map <ns>/<name>`), writing
//! only when it changes. The API server reloads the file by itself.
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use serde_json::json;

use crate::api::oam::Application;
use crate::names;
use crate::runtime::world::WorldStores;

/// How often the config is recomputed (cheap when no trust enables `federation.apiServer`).
pub const RECOMPUTE_INTERVAL: Duration = Duration::from_secs(2);

/// The ConfigMap key holding the document.
pub const CONFIG_MAP_KEY: &str = "authentication-config.yaml";

/// Where the config goes (`--authn-config-out`, `--authn-config-map`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthnArgs {
    /// Keep the API server's AuthenticationConfiguration in this file (written atomically, only
    /// when it changes), for a controller running beside kube-apiserver `--authentication-config`.
    #[arg(long, env = "OAM_TRUST_AUTHN_CONFIG_OUT")]
    pub authn_config_out: Option<PathBuf>,
    /// Keep it in this ConfigMap (`<namespace>/<name>`, key `authentication-config.yaml`), for
    /// platforms that sync it to their control plane.
    #[arg(long, env = "OAM_TRUST_AUTHN_CONFIG_MAP", value_parser = parse_config_map)]
    pub authn_config_map: Option<(String, String)>,
}

fn parse_config_map(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?} is not <namespace>/<name>")),
    }
}

impl AuthnArgs {
    pub fn is_on(&self) -> bool {
        self.authn_config_out.is_some() || self.authn_config_map.is_some()
    }
}

/// The document as written (YAML), from the world and every Application.
pub fn render(
    world: &WorldStores,
    apps: &Store<DeserializeGuard<Application>>,
) -> (String, Vec<String>) {
    let snapshot = world.snapshot();
    let apps: Vec<Application> = apps
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok().cloned())
        .collect();
    let config = crate::access::authn::authentication_config(&snapshot, &apps);
    let yaml = serde_yaml_ng::to_string(&config.document).unwrap_or_default();
    (yaml, config.warnings)
}

/// Writes `contents` to `path` atomically (temporary file, then rename), so the API server never
/// reads half a file.
fn write_atomically(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Runs until the process ends: recomputes the config and writes it where `args` says when it
/// changed. Followers keep the file current too (each may run beside an API server); the ConfigMap
/// goes through the gated client, so only the leader writes it.
pub async fn run(
    args: AuthnArgs,
    client: Client,
    world: WorldStores,
    apps: Store<DeserializeGuard<Application>>,
) {
    if !args.is_on() {
        return std::future::pending().await;
    }
    let _ = world.ready().await;
    let _ = apps.wait_until_ready().await;
    let mut written_file: Option<String> = None;
    let mut written_map: Option<String> = None;
    let mut warned: Vec<String> = Vec::new();
    loop {
        let (yaml, warnings) = render(&world, &apps);
        if warnings != warned {
            for w in &warnings {
                tracing::warn!(warning = %w, "authentication config");
            }
            warned = warnings;
        }
        if let Some(path) = &args.authn_config_out
            && written_file.as_deref() != Some(yaml.as_str())
        {
            match write_atomically(path, &yaml) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "authentication config written");
                    written_file = Some(yaml.clone());
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "writing the authentication config failed")
                }
            }
        }
        if let Some((ns, name)) = &args.authn_config_map
            && written_map.as_deref() != Some(yaml.as_str())
        {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {names::LABEL_MANAGED_BY: names::MANAGED_BY}},
                "data": {CONFIG_MAP_KEY: yaml}});
            match Api::<ConfigMap>::namespaced(client.clone(), ns)
                .patch(
                    name,
                    &PatchParams::apply(names::FIELD_MANAGER).force(),
                    &Patch::Apply(&cm),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(configmap = %format!("{ns}/{name}"), "authentication config written");
                    written_map = Some(yaml.clone());
                }
                // A follower's gated client refuses: the leader writes it.
                Err(e) => {
                    tracing::debug!(error = %e, "authentication config ConfigMap not written")
                }
            }
        }
        tokio::time::sleep(RECOMPUTE_INTERVAL).await;
    }
}
