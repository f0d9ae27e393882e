//! What `set-image` and `rollback` share: sending an RFC 6902 JSON Patch of an Application (the form
//! a deploy grant's admission guard judges op by op), and `--wait`: polling until the Application
//! runs what the patch asked for, printing each change of its state.
use std::time::Duration;

use anyhow::{Context as _, bail};
use hyper::http;
use kube::{Api, ResourceExt};
use serde_json::Value;

use crate::api::oam::Application;

/// Sends `patch` (a JSON Patch) to `app`; returns the patched Application.
pub async fn json_patch(
    client: &kube::Client,
    app: &Application,
    patch: &Value,
) -> Result<Application, kube::Error> {
    let url = format!(
        "/apis/{}/{}/namespaces/{}/applications/{}",
        crate::names::OAM_GROUP,
        crate::names::OAM_VERSION,
        crate::names::namespace_of(app),
        app.name_any()
    );
    let request = http::Request::patch(&url)
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(serde_json::to_vec(patch).map_err(kube::Error::SerdeError)?)
        .map_err(kube::Error::HttpError)?;
    client.request(request).await
}

/// What `--wait` waits for: status at `generation`, phase `running`, and (a rollback) the revision
/// with `revision_hash` recorded as the latest.
pub struct Target {
    pub generation: i64,
    pub revision_hash: Option<String>,
}

/// Polls Application `name` until it reaches `target` or `timeout` passes (an error then, with the
/// last state seen).
pub async fn wait_running(
    apps: &Api<Application>,
    namespace: &str,
    name: &str,
    target: &Target,
    timeout: Duration,
) -> anyhow::Result<()> {
    let generation = target.generation;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let app = apps
            .get(name)
            .await
            .with_context(|| format!("reading Application {namespace}/{name}"))?;
        let status = app.status.clone().unwrap_or_default();
        let phase = status.status.clone().unwrap_or_else(|| "-".into());
        let observed = status.observed_generation.unwrap_or_default();
        let services: Vec<String> = status
            .services
            .iter()
            .map(|s| {
                format!(
                    "{}={}{}",
                    s.name,
                    if s.healthy { "healthy" } else { "unhealthy" },
                    s.message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let revision = status.latest_revision.as_ref();
        let recorded = match &target.revision_hash {
            None => true,
            Some(hash) => revision.and_then(|r| r.revision_hash.as_ref()) == Some(hash),
        };
        let mut line = format!("phase {phase}, observed generation {observed}/{generation}");
        if target.revision_hash.is_some() {
            let at = revision.map_or("-", |r| r.name.as_str());
            line.push_str(&format!(", revision {at}"));
        }
        line.push_str(&format!(", {}", services.join(", ")));
        if line != last {
            println!("  {line}");
            last = line;
        }
        if observed >= generation && phase == "running" && recorded {
            println!("Application {namespace}/{name} is running generation {generation}");
            return Ok(());
        }
        // A workflow gate (an approval) is where this change waits by design: what comes before
        // it is deployed and healthy, and the rest is someone else's decision.
        let run = status.workflow.as_ref();
        if observed >= generation && recorded && phase == "workflowSuspending" {
            let steps = run
                .map(crate::resume::suspending_steps_of)
                .unwrap_or_default();
            println!(
                "Application {namespace}/{name}: generation {generation} is deployed up to workflow step {}, which waits to be resumed (oam-trust resume {name} -n {namespace})",
                steps.join(", ")
            );
            return Ok(());
        }
        if observed >= generation && phase == "workflowFailed" {
            bail!(
                "Application {namespace}/{name}: the workflow of generation {generation} failed: {}",
                run.and_then(|r| r.message.as_deref())
                    .unwrap_or("see oam-trust status")
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "Application {namespace}/{name} did not reach phase running at generation {generation} within {}: {last}",
                crate::duration::format(timeout)
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
