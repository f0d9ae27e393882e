//! Leader election on a real Lease: exactly one replica leads, a stepping-down leader hands over at once,
//! a crashed leader is replaced within the lease duration, and a replica that does not lead cannot write.
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use oam_trust::runtime::leader::{Elector, Timings, WriteGate};
use oam_trust::runtime::metrics::Metrics;

fn timings() -> Timings {
    Timings {
        lease_duration: Duration::from_secs(6),
        renew_every: Duration::from_secs(1),
        retry_every: Duration::from_millis(500),
    }
}

struct Replica {
    gate: WriteGate,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn replica(ns: &str, identity: &str) -> Replica {
    let client = support::admin().await;
    let gate = WriteGate::default();
    let (elector, _changes) = Elector::new(
        client,
        ns,
        "oam-trust-leader",
        identity,
        timings(),
        gate.clone(),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = rx.await;
    }));
    Replica {
        gate,
        stop: Some(tx),
        task,
    }
}

async fn wait_until(timeout: Duration, f: impl Fn() -> bool) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test]
async fn exactly_one_replica_leads_and_hands_over() {
    let admin = support::admin().await;
    let ns = support::namespace(&admin, "leader").await;
    let mut a = replica(&ns, "replica-a").await;
    let mut b = replica(&ns, "replica-b").await;
    assert!(
        wait_until(Duration::from_secs(10), || a.gate.is_open()
            || b.gate.is_open())
        .await
        .is_some(),
        "nobody leads"
    );
    for _ in 0..20 {
        assert!(
            !(a.gate.is_open() && b.gate.is_open()),
            "two leaders at once"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader, follower) = if a.gate.is_open() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    // Graceful step-down releases the lease: the follower takes over well before the lease would expire.
    leader.stop.take().unwrap().send(()).unwrap();
    (&mut leader.task).await.unwrap();
    assert!(!leader.gate.is_open());
    let took = wait_until(Duration::from_secs(10), || follower.gate.is_open())
        .await
        .expect("no handover");
    assert!(
        took < timings().lease_duration,
        "handover after release took {took:?}"
    );

    // A crash (no release): the next replica waits out the lease, then leads.
    let mut c = replica(&ns, "replica-c").await;
    follower.task.abort();
    let took = wait_until(Duration::from_secs(20), || c.gate.is_open())
        .await
        .expect("no takeover after a crash");
    assert!(
        took <= timings().lease_duration + Duration::from_secs(3),
        "takeover took {took:?}"
    );
    c.stop.take().unwrap().send(()).unwrap();
    c.task.await.unwrap();
}

#[tokio::test]
async fn a_closed_gate_blocks_writes_but_not_reads() {
    let admin = support::admin().await;
    let ns = support::namespace(&admin, "gate").await;
    let metrics = Metrics::default();
    let gate = WriteGate::default();
    let gated = metrics
        .gated_client(support::admin_config().await, gate.clone())
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(gated, &ns);
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();

    let err = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert!(
        err.to_string().contains("not the leader"),
        "unexpected error: {err}"
    );
    assert!(
        cms.get_opt("x")
            .await
            .expect("reads work while not leading")
            .is_none(),
        "nothing was written"
    );

    gate.set_open(true);
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("the leader writes");
    assert_eq!(
        metrics.api_writes(),
        1,
        "the refused write never reached the API server's counter"
    );
}
