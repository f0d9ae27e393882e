//! `oam-trust set-image`: change components' images (the one change a `deploy` grant allows) with an
//! RFC 6902 JSON Patch, and wait until the Application runs the new generation.
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::api::oam::Application;

/// `oam-trust set-image`: change one component's image (what a deploy grant allows) and wait.
#[derive(clap::Args, Debug, Clone)]
pub struct SetImageArgs {
    /// `<component>=<image>`, one or more.
    #[arg(required = true, value_parser = parse_assignment)]
    pub images: Vec<(String, String)>,
    /// Application name (default: the kubeconfig's grant, from OAM_TRUST_APP).
    #[arg(long, env = "OAM_TRUST_APP")]
    pub app: String,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Wait until the Application runs the new generation.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, value_parser = crate::duration::parse, default_value = "5m")]
    pub timeout: Duration,
}

fn parse_assignment(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((c, i)) if !c.is_empty() && !i.is_empty() => Ok((c.to_string(), i.to_string())),
        _ => Err(format!("{s:?} is not <component>=<image>")),
    }
}

/// The JSON Patch that sets each component's `properties.image`, guarded by `test` ops on the
/// component names so a concurrent reorder cannot hit another component.
pub fn image_patch(app: &Application, images: &[(String, String)]) -> anyhow::Result<Value> {
    let mut ops = Vec::new();
    for (component, image) in images {
        let Some(i) = app
            .spec
            .components
            .iter()
            .position(|c| &c.name == component)
        else {
            let known: Vec<&str> = app
                .spec
                .components
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            bail!(
                "Application {} has no component {component:?} (components: {})",
                app.name_any(),
                known.join(", ")
            );
        };
        ops.push(
            json!({"op": "test", "path": format!("/spec/components/{i}/name"), "value": component}),
        );
        match &app.spec.components[i].properties {
            Some(Value::Object(_)) => ops.push(json!({
                "op": "add", "path": format!("/spec/components/{i}/properties/image"), "value": image
            })),
            _ => ops.push(json!({
                "op": "add", "path": format!("/spec/components/{i}/properties"), "value": {"image": image}
            })),
        }
    }
    Ok(Value::Array(ops))
}

/// Sets the images of `app`'s components with an RFC 6902 JSON Patch (a `test` of each component's
/// name, then its image alone): the only change a deploy grant's admission guard lets through.
pub async fn patch_images(
    client: &kube::Client,
    app: &Application,
    images: &[(String, String)],
) -> anyhow::Result<Application> {
    let patch = image_patch(app, images)?;
    crate::rollout::json_patch(client, app, &patch)
        .await
        .with_context(|| {
            format!(
                "patching Application {}/{}",
                crate::names::namespace_of(app),
                app.name_any()
            )
        })
}

/// A client with the caller's credentials (KUBECONFIG, or in-cluster) and the namespace to work in:
/// `namespace`, or the kubeconfig context's. Where every command a person runs against the cluster
/// (`set-image`, `resume`, `status`) starts.
pub async fn connect(namespace: Option<&str>) -> anyhow::Result<(kube::Client, String)> {
    let config = kube::Config::infer().await.context(
        "finding Kubernetes credentials (run oam-trust login first and export KUBECONFIG)",
    )?;
    let namespace = namespace.map_or_else(|| config.default_namespace.clone(), str::to_string);
    Ok((kube::Client::try_from(config)?, namespace))
}

/// Runs `oam-trust set-image`.
pub async fn set_image(args: SetImageArgs) -> anyhow::Result<()> {
    let (client, namespace) = connect(args.namespace.as_deref()).await?;
    let apps: Api<Application> = Api::namespaced(client.clone(), &namespace);
    let app = apps
        .get(&args.app)
        .await
        .with_context(|| format!("reading Application {namespace}/{}", args.app))?;
    let patched = patch_images(&client, &app, &args.images).await?;
    let generation = patched.metadata.generation.unwrap_or_default();
    for (c, i) in &args.images {
        println!(
            "Application {namespace}/{}: component {c} image set to {i} (generation {generation})",
            args.app
        );
    }
    if !args.wait {
        return Ok(());
    }
    let target = crate::rollout::Target {
        generation,
        revision_hash: None,
    };
    crate::rollout::wait_running(&apps, &namespace, &args.app, &target, args.timeout).await
}
