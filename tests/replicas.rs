//! Two and three `oam-trust run` processes against the local control plane: exactly one reconciles, a
//! killed leader is replaced within the lease duration, every replica serves the token exchange
//! throughout, and SIGTERM in the middle of reconciling leaves nothing half-applied once the next leader
//! has converged.
mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use oam_trust::api::oam::Application;
use serde_json::json;
use support::replica::{self, Replica, reconciles, serves_exchange};

const LEASE: &str = "oam-trust-replicas";

async fn start(name: &str, lease_ns: &str) -> Replica {
    replica::start(name, lease_ns, LEASE).await
}

async fn holder(client: &Client, ns: &str) -> Option<String> {
    replica::holder(client, ns, LEASE).await
}

async fn apply_app(client: &Client, ns: &str, name: &str) {
    let app: Application = serde_json::from_value(
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
        "metadata": {"name": name},
        "spec": {"components": [{"name": name, "type": "webservice",
            "properties": {"image": "nginx", "ports": [{"port": 80, "expose": true}]}}]}}),
    )
    .unwrap();
    Api::<Application>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("test-user").force(),
            &Patch::Apply(&app),
        )
        .await
        .unwrap();
}

async fn running(client: &Client, ns: &str, name: &str) -> bool {
    let a = Api::<Application>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    a.status.and_then(|s| s.status).as_deref() == Some("running")
}

#[tokio::test]
async fn one_leader_reconciles_and_a_killed_leader_is_replaced() {
    let client = support::admin().await;
    support::install_crds(&client).await;
    let ns = support::app_namespace(&client, "replicas", "admin").await;
    let mut a = start("replica-a", &ns).await;
    let mut b = start("replica-b", &ns).await;
    assert!(
        support::eventually(Duration::from_secs(20), || async {
            holder(&client, &ns).await.is_some()
        })
        .await
    );
    let leader_name = holder(&client, &ns).await.unwrap();
    let (leader, follower) = if leader_name == a.name {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    apply_app(&client, &ns, "first").await;
    assert!(
        support::eventually(Duration::from_secs(60), || running(&client, &ns, "first")).await,
        "not reconciled"
    );
    // The status write lands before the reconcile is counted, and on a loaded machine /metrics may
    // answer late: give the counter time.
    let counted = support::eventually(Duration::from_secs(60), || async {
        reconciles(leader).await > 0
    })
    .await;
    assert!(counted, "the leader reconciled nothing");
    assert_eq!(reconciles(follower).await, 0, "the follower reconciled");
    assert!(
        serves_exchange(leader).await && serves_exchange(follower).await,
        "both replicas serve the exchange"
    );

    // Kill -9: no release. The follower takes over once the 15 s lease has expired.
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();
    let killed = tokio::time::Instant::now();
    assert!(
        serves_exchange(follower).await,
        "the follower serves the exchange while there is no leader"
    );
    let took_over = support::eventually(Duration::from_secs(30), || async {
        holder(&client, &ns).await.as_deref() == Some(follower.name.as_str())
    })
    .await;
    let handover = killed.elapsed();
    assert!(took_over, "no handover within 30 s");
    assert!(
        handover <= Duration::from_secs(15 + 2 + 3),
        "handover took {handover:?} (lease 15 s, retry 2 s)"
    );
    apply_app(&client, &ns, "second").await;
    assert!(
        support::eventually(Duration::from_secs(60), || running(&client, &ns, "second")).await,
        "reconciling did not resume"
    );
    let counted = support::eventually(Duration::from_secs(60), || async {
        reconciles(follower).await > 0
    })
    .await;
    assert!(counted, "the new leader reconciled nothing");
    assert!(serves_exchange(follower).await);
    follower.child.kill().unwrap();
    let _ = follower.child.wait();
}

#[tokio::test]
async fn sigterm_mid_reconcile_leaves_nothing_half_applied() {
    let client = support::admin().await;
    support::install_crds(&client).await;
    let ns = support::app_namespace(&client, "sigterm", "admin").await;
    let mut first = start("sigterm-a", &ns).await;
    assert!(
        support::eventually(Duration::from_secs(20), || async {
            holder(&client, &ns).await.as_deref() == Some("sigterm-a")
        })
        .await
    );
    let mut second = start("sigterm-b", &ns).await;

    let n = 30;
    let names: Vec<String> = (0..n).map(|i| format!("app-{i:02}")).collect();
    futures::future::join_all(names.iter().map(|name| apply_app(&client, &ns, name))).await;
    // Stop the leader while it is working through them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = tokio::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &first.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = first.child.wait().unwrap();
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(20),
        "shutdown took {:?}",
        stopped.elapsed()
    );

    // The lease was released: the second replica leads at once and converges every Application fully.
    assert!(
        support::eventually(Duration::from_secs(8), || async {
            holder(&client, &ns).await.as_deref() == Some("sigterm-b")
        })
        .await,
        "no prompt handover after SIGTERM"
    );
    let all_running = support::eventually(Duration::from_secs(120), || async {
        let apps = Api::<Application>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        apps.items
            .iter()
            .filter(|a| a.status.as_ref().and_then(|s| s.status.as_deref()) == Some("running"))
            .count()
            == n
    })
    .await;
    assert!(
        all_running,
        "not every Application converged after the handover"
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    let services = Api::<Service>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(
        (deployments, services),
        (n, n),
        "every Application has all of its objects"
    );
    second.child.kill().unwrap();
    let _ = second.child.wait();
}

#[tokio::test]
async fn a_leader_change_mid_workflow_resumes_at_the_same_step() {
    let client = support::admin().await;
    support::install_crds(&client).await;
    let ns = support::app_namespace(&client, "wf-restart", "admin").await;
    let mut first = start("wf-a", &ns).await;
    assert!(
        support::eventually(Duration::from_secs(20), || async {
            holder(&client, &ns).await.as_deref() == Some("wf-a")
        })
        .await
    );
    let web =
        |name: &str| json!({"name": name, "type": "webservice", "properties": {"image": "nginx"}});
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "gated"},
        "spec": {"components": [web("first"), web("second")], "workflow": {"steps": [
            {"name": "first", "type": "apply-component", "properties": {"component": "first"}},
            {"name": "gate", "type": "suspend"},
            {"name": "second", "type": "apply-component", "properties": {"component": "second"}}
        ]}}
    }))
    .unwrap();
    let apps = Api::<Application>::namespaced(client.clone(), &ns);
    apps.patch(
        "gated",
        &PatchParams::apply("test-user").force(),
        &Patch::Apply(&app),
    )
    .await
    .unwrap();
    let suspended = |a: &Application| {
        a.status
            .as_ref()
            .and_then(|s| s.workflow.as_ref())
            .is_some_and(|w| w.suspend)
    };
    let before = support::wait_app(&client, &ns, "gated", "suspended", suspended)
        .await
        .status
        .unwrap()
        .workflow
        .unwrap();

    // Kill -9 the leader at the gate; the next one takes over and reconciles everything.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let mut second = start("wf-b", &ns).await;
    assert!(
        support::eventually(Duration::from_secs(40), || async {
            holder(&client, &ns).await.as_deref() == Some("wf-b")
        })
        .await,
        "no handover"
    );
    assert!(
        support::eventually(Duration::from_secs(60), || async {
            reconciles(&second).await > 0
        })
        .await,
        "the new leader reconciled nothing"
    );
    let after = apps
        .get("gated")
        .await
        .unwrap()
        .status
        .unwrap()
        .workflow
        .unwrap();
    assert_eq!(
        after, before,
        "the new leader continues the same run, at the same step"
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    assert!(deployments.get_opt("first").await.unwrap().is_some());
    assert!(
        deployments.get_opt("second").await.unwrap().is_none(),
        "the gate still holds after the leader change"
    );

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_oam-trust"))
        .args(["resume", "gated", "-n", &ns])
        .env("KUBECONFIG", support::kubeconfig_path().await)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = support::wait_app(&client, &ns, "gated", "running", support::app_running)
        .await
        .status
        .unwrap()
        .workflow
        .unwrap();
    assert!(done.finished);
    let gate = |w: &oam_trust::api::oam::WorkflowStatus| {
        w.steps
            .iter()
            .find(|s| s.name == "gate")
            .unwrap()
            .first_execute_time
            .clone()
    };
    assert_eq!(
        gate(&done),
        gate(&before),
        "the gate step was not started again"
    );
    assert_eq!(
        done.start_time, before.start_time,
        "the run was not started again"
    );
    assert!(deployments.get_opt("second").await.unwrap().is_some());
    second.child.kill().unwrap();
    let _ = second.child.wait();
}
