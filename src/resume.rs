//! `oam-trust resume`: continue an Application's suspended workflow step — what a person does after
//! a review, or what a GitLab job holding an `approve` grant does once the protected environment's
//! approval let it run. It sets `status.workflow.suspend` to false, the field `vela workflow resume`
//! writes; the controller then marks every suspending step succeeded and goes on. For an `approve`
//! grant that status change is the only one the approve guard lets through.
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::api::oam::{Application, WorkflowStatus, WorkflowStepStatus};

/// `oam-trust resume <app>`.
#[derive(clap::Args, Debug, Clone)]
pub struct ResumeArgs {
    /// Application name (default: OAM_TRUST_APP, which `oam-trust login` sets).
    #[arg(env = "OAM_TRUST_APP")]
    pub app: String,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// When the workflow has not reached its suspend step yet, wait this long for it (an approval
    /// job may start before the rollout it approves is waiting). Without it, such a call fails.
    #[arg(long, value_parser = crate::duration::parse)]
    pub wait_suspended: Option<Duration>,
}

/// The names of the steps that are suspending.
pub fn suspending_steps(app: &Application) -> Vec<String> {
    app.status
        .as_ref()
        .and_then(|s| s.workflow.as_ref())
        .map(suspending_steps_of)
        .unwrap_or_default()
}

/// The names of the steps of a workflow run that are suspending, a step group's included: what
/// `resume` continues, and what `status` says it waits at.
pub fn suspending_steps_of(wf: &WorkflowStatus) -> Vec<String> {
    fn walk(steps: &[WorkflowStepStatus], out: &mut Vec<String>) {
        for s in steps {
            if s.phase == crate::controller::workflow::SUSPENDING {
                out.push(s.name.clone());
            }
            walk(&s.sub_steps, out);
        }
    }
    let mut out = Vec::new();
    walk(&wf.steps, &mut out);
    out
}

fn is_suspended(app: &Application) -> bool {
    app.status
        .as_ref()
        .and_then(|s| s.workflow.as_ref())
        .is_some_and(|w| w.suspend)
}

fn describe_state(app: &Application) -> String {
    let status = app.status.clone().unwrap_or_default();
    match status.workflow {
        None => format!(
            "it has no workflow run (phase {})",
            status.status.as_deref().unwrap_or("-")
        ),
        Some(wf) => format!(
            "its workflow is {}{}",
            wf.status.as_deref().unwrap_or("executing"),
            wf.message.map(|m| format!(": {m}")).unwrap_or_default()
        ),
    }
}

/// Resumes `app`: one status patch, on the version read (a concurrent change is read again).
pub async fn resume_app(apps: &Api<Application>, name: &str) -> anyhow::Result<Vec<String>> {
    for _ in 0..5 {
        let app = apps
            .get(name)
            .await
            .with_context(|| format!("reading Application {name}"))?;
        if !is_suspended(&app) {
            bail!(
                "Application {name} is not suspended: {}",
                describe_state(&app)
            );
        }
        let steps = suspending_steps(&app);
        let patch = json!({
            "metadata": {"resourceVersion": app.resource_version()},
            "status": {"workflow": {"suspend": false}},
        });
        match apps
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(steps),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => bail!(
                "the API server refused to resume Application {name}: {} (an approve grant may only resume a suspended workflow of its own Application)",
                e.message
            ),
            Err(e) => return Err(e).with_context(|| format!("resuming Application {name}")),
        }
    }
    bail!("Application {name} kept changing while resuming it; try again")
}

pub async fn resume(args: ResumeArgs) -> anyhow::Result<()> {
    let (client, namespace) = crate::set_image::connect(args.namespace.as_deref()).await?;
    let apps: Api<Application> = Api::namespaced(client, &namespace);
    if let Some(limit) = args.wait_suspended {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let app = apps
                .get(&args.app)
                .await
                .with_context(|| format!("reading Application {namespace}/{}", args.app))?;
            if is_suspended(&app) {
                break;
            }
            let finished = app
                .status
                .as_ref()
                .and_then(|s| s.workflow.as_ref())
                .is_some_and(|w| w.finished);
            if finished || tokio::time::Instant::now() >= deadline {
                bail!(
                    "Application {namespace}/{} is not suspended: {}",
                    args.app,
                    describe_state(&app)
                );
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let steps = resume_app(&apps, &args.app).await?;
    println!(
        "Application {namespace}/{}: resumed workflow step {}",
        args.app,
        steps.join(", ")
    );
    Ok(())
}
