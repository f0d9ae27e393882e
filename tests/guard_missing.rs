//! Guards fail closed: while a guard admission policy is missing, no token is issued for a grant that
//! writes; read grants keep working. The exchange here requires one more guard than the cluster has
//! (deleting the shipped one would disturb every other test of the cluster).
mod federation_support;
mod support;

use std::sync::Arc;

use federation_support::{Declarations, refusal, world};
use oam_trust::dev_issuer::MintRequest;
use oam_trust::federation::MemoryAuditSink;
use oam_trust::federation::client::ExchangeClient;

#[tokio::test]
async fn without_every_guard_policy_no_token_is_issued_for_a_grant_that_writes() {
    let w = world("guard-missing", Declarations::default()).await;
    let missing = "oam-trust-guard-that-is-not-installed";
    let guards = vec![
        oam_trust::names::GUARD_BINDINGS[0].to_string(),
        missing.to_string(),
    ];
    let sink = Arc::new(MemoryAuditSink::default());
    let strict = federation_support::start_exchange_with(
        &w.admin,
        w.tls_dir.path(),
        sink.clone(),
        Some(guards),
    )
    .await;
    federation_support::wait_ready(&strict, &w.exchange_ca).await;
    let client = ExchangeClient::new(&strict.url(), Some(&w.exchange_ca)).unwrap();

    // The deploy job: refused, with the policy named, nothing issued.
    let deploy = w.issuer.mint(&MintRequest::new()).unwrap();
    let body = refusal(client.exchange(&deploy, None, None).await);
    assert_eq!(body.error, "temporarily_unavailable", "{body:?}");
    assert!(body.error_description.contains(missing), "{body:?}");
    assert_eq!(
        sink.find(&body.correlation_id).unwrap().reason,
        "guard_missing"
    );
    assert!(w.binding_secrets().await.is_empty(), "nothing was issued");

    // A read grant has nothing to guard: it is issued.
    let reader = w
        .issuer
        .mint(
            &MintRequest::new()
                .claim("project_id", "1451")
                .claim("job_project_id", "1451"),
        )
        .unwrap();
    let read = client
        .exchange(&reader, Some(&format!("{}/shop/web", w.ns)), None)
        .await
        .expect("a read grant is issued without the guard");
    assert_eq!(read.grant.grant, "component/web/trait/0");

    // The same deploy token at an exchange that finds every guard: issued.
    let issued = w
        .exchange(&deploy, None)
        .await
        .expect("issued with the guards in place");
    assert_eq!(issued.grant.grant, "policy/deploy");
}
