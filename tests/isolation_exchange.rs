//! Untrusted callers of the token exchange, on the real control plane: what an outsider's token (any
//! GitLab project can mint one for the audience), a flood from inside the trust, or an
//! application-authored CEL condition can cost the cluster and what a refusal tells the caller.
mod federation_support;
mod support;

use std::time::{Duration, Instant};

use federation_support::{Declarations, World, refusal, world};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use oam_trust::api::oam::Application;
use oam_trust::dev_issuer::MintRequest;
use serde_json::json;

fn mint(w: &World, request: MintRequest) -> String {
    w.issuer.mint(&request).unwrap()
}

async fn denied_events(w: &World) -> Vec<Event> {
    Api::<Event>::namespaced(w.admin.clone(), &w.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("TokenDenied"))
        .collect()
}

/// Sends `n` exchanges of fresh tokens from `request`, `parallel` at a time; every one must be refused.
async fn flood(
    w: &World,
    n: usize,
    parallel: usize,
    request: impl Fn() -> MintRequest,
) -> Vec<String> {
    let mut reasons = Vec::new();
    let resource = format!("{}/shop", w.ns);
    for chunk in (0..n).collect::<Vec<_>>().chunks(parallel) {
        let tokens: Vec<String> = chunk.iter().map(|_| mint(w, request())).collect();
        let answers =
            futures::future::join_all(tokens.iter().map(|t| w.exchange(t, Some(&resource)))).await;
        for a in answers {
            reasons.push(refusal(a).error_description);
        }
    }
    reasons
}

#[tokio::test]
async fn outsiders_and_floods_cost_no_events_and_learn_nothing_of_other_teams() {
    let w = world("iso-flood", Declarations::default()).await;

    // 1. Outside the trust's allow list (another GitLab group): refused before any grant lookup,
    // and not a single Event on the Application it names.
    let outsider = flood(&w, 200, 20, || {
        MintRequest::new()
            .claim("project_id", "9000")
            .claim("job_project_id", "9000")
            .claim("namespace_id", "666")
            .claim("job_namespace_id", "666")
    })
    .await;
    // It hears about its own project, nothing of the declarations it is not in.
    for d in &outsider {
        assert!(d.contains("(9000) is not in the trust's allow list"), "{d}");
        assert!(!d.contains("1450") && !d.contains("1451"), "{d}");
    }
    assert_eq!(
        denied_events(&w).await.len(),
        0,
        "an outsider writes no Event"
    );

    // 2. Inside the trust but declared nowhere (project 7777 of group 72): a thousand refusals are
    // one Event series at most, and the description names none of the other projects' subjects.
    let insider = flood(&w, 1000, 50, || {
        MintRequest::new()
            .claim("project_id", "7777")
            .claim("job_project_id", "7777")
    })
    .await;
    for d in &insider {
        assert!(!d.contains("1450") && !d.contains("1451"), "{d}");
    }
    assert!(
        insider[0].contains("names this job's project or group"),
        "{}",
        insider[0]
    );
    let appeared = support::eventually(Duration::from_secs(10), || async {
        !denied_events(&w).await.is_empty()
    })
    .await;
    assert!(appeared, "the application team is told once");
    let events = denied_events(&w).await;
    assert_eq!(
        events.len(),
        1,
        "one Event series, not one Event per request: {events:?}"
    );
    let audited = w
        .sink
        .records()
        .iter()
        .filter(|r| r.project_id == "7777")
        .count();
    assert_eq!(audited, 1000, "every request is audited");

    // 3. A job of the declared project that fails on its own subject still learns why.
    let own = refusal(
        w.exchange(
            &mint(&w, MintRequest::new().claim("environment", "staging")),
            Some(&format!("{}/shop", w.ns)),
        )
        .await,
    );
    assert!(
        own.error_description.contains("token has \"staging\""),
        "{own:?}"
    );
}

/// Seven nested comprehensions over ten-element lists: more than 60 s of CPU before they were bounded.
fn seven_deep() -> String {
    let mut expr = "x6 == 0".to_string();
    for i in (0..7).rev() {
        expr = format!("[0,1,2,3,4,5,6,7,8,9].all(x{i}, {expr} || true)");
    }
    expr
}

#[tokio::test]
async fn an_unbounded_condition_is_refused_at_derivation_and_the_exchange_stays_responsive() {
    let w = world("iso-cel", Declarations::default()).await;
    let started = Instant::now();
    support::apply_app(
        &w.admin,
        &w.ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "greedy"},
               "spec": {"components": [{"name": "greedy", "type": "webservice", "properties": {"image": "nginx"}}],
                        "policies": [{"name": "cel", "type": "gitlab-access", "properties": {"trust": w.trust,
                            "subjects": [{"projectId": "1450", "condition": seven_deep()}], "access": "read"}}]}}),
    )
    .await;
    let app: Application = support::wait_app(&w.admin, &w.ns, "greedy", "access refused", |a| {
        a.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "AccessDenied" && c.status == "True")
        })
    })
    .await;
    let denied = app
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "AccessDenied")
        .unwrap();
    assert_eq!(denied.reason, "InvalidSubject");
    assert!(
        denied
            .message
            .contains("comprehension nesting is 7, the limit is 2"),
        "{}",
        denied.message
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    // 32 requests aimed at it at once: each is answered promptly and the service stays healthy.
    let resource = format!("{}/greedy", w.ns);
    let tokens: Vec<String> = (0..32).map(|_| mint(&w, MintRequest::new())).collect();
    let sent = Instant::now();
    let answers =
        futures::future::join_all(tokens.iter().map(|t| w.exchange(t, Some(&resource)))).await;
    for a in answers {
        assert_eq!(refusal(a).error, "invalid_target");
    }
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "32 refusals took {:?}",
        sent.elapsed()
    );
    federation_support::wait_ready(&w.server, &w.exchange_ca).await;
}
