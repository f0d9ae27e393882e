//! GitLabTrusts, ceilings, Namespaces, definitions and Applications (any JSON documents) through the
//! one derivation, `World::derive`, then claims through `match_token` and the exchange's decision.
//! Input: `{"documents": [...], "tokens": [{"claims": {...}, "resource": "ns/app"}], "offline": bool}`.
//!
//! What must hold whatever the documents say: a grant is of an existing trust and of its
//! Application's namespace, its TTL is within the trust's maxTTL, it fits inside the trust's ceiling,
//! and presets never grant Secrets or wildcards; a matched grant is of the verifying trust, and the
//! subject that matched names the token's project, namespace and ref.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use oam_trust::access::grant::DEFAULT_MAX_TTL;
use oam_trust::access::{GitLabClaims, GrantSet, ceiling};
use oam_trust::api::access::Access;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Some(documents) = input["documents"].as_array() else {
        return;
    };
    let offline = input["offline"].as_bool().unwrap_or(false);
    let (world, apps) = oam_trust_fuzz::world_of(&documents[..documents.len().min(32)], offline);
    let mut sets = Vec::new();
    for app in apps.iter().take(4) {
        let Ok(derived) = world.derive(app) else {
            continue;
        };
        let namespace = oam_trust::names::namespace_of(app);
        for grant in &derived.grants.grants {
            let trust = world
                .trusts
                .get(&grant.trust)
                .expect("a grant names an existing trust");
            assert_eq!(grant.namespace, namespace);
            let max = trust
                .spec
                .tokens
                .as_ref()
                .and_then(|t| t.max_ttl.as_deref())
                .and_then(|m| oam_trust::duration::parse(m).ok())
                .unwrap_or(DEFAULT_MAX_TTL);
            assert!(
                grant.ttl > Duration::ZERO && grant.ttl <= max,
                "{:?} > {max:?}",
                grant.ttl
            );
            let rules = grant.role.rules.clone().unwrap_or_default();
            if let Some(c) = &trust.spec.ceiling {
                let ceiling_rules = world.ceilings[&c.cluster_role_ref]
                    .rules
                    .clone()
                    .unwrap_or_default();
                let beyond = ceiling::uncovered(&rules, &ceiling_rules);
                assert!(
                    beyond.is_empty(),
                    "{}: beyond the ceiling: {beyond:?}",
                    grant.id
                );
            }
            if matches!(grant.access, Access::Preset(_)) {
                for r in &rules {
                    let resources = r.resources.clone().unwrap_or_default();
                    assert!(
                        !resources.iter().any(|x| x == "secrets" || x == "*")
                            && !r.verbs.iter().any(|v| v == "*"),
                        "{}: a preset grants {r:?}",
                        grant.id
                    );
                }
            }
        }
        for refusal in &derived.grants.refusals {
            let _ = refusal.message();
        }
        sets.push(derived.grants);
    }
    let grants = GrantSet::merge(sets);
    for token in input["tokens"].as_array().into_iter().flatten().take(8) {
        let Ok(claims) = GitLabClaims::from_json(token["claims"].clone()) else {
            continue;
        };
        oam_trust_fuzz::check_matching(&world, &grants, &claims, token["resource"].as_str());
    }
});
