//! A CEL condition and the claims it runs on: `<condition>` or `<condition>\0<claims JSON>` (default
//! claims: a GitLab CI token's, from the access fixtures). The static bound (`ClaimCondition::compile`)
//! must refuse or accept quickly, agree with `measure`, and an accepted condition must evaluate within
//! its budget: `MAX_COST` steps at one microsecond of CPU each (the costliest accepted condition of
//! `benches/condition.rs` takes 2.1 ms natively). The claims are at most what a token within
//! `MAX_TOKEN_BYTES` can carry. The API server translation (`authn::condition_expression`) must not panic.
#![no_main]
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use oam_trust::access::authn;
use oam_trust::access::condition::{
    ClaimCondition, MAX_COMPREHENSION_DEPTH, MAX_COST, MAX_NODES, MAX_SOURCE_BYTES,
};
use oam_trust::oidc::verify::MAX_TOKEN_BYTES;
use oam_trust_fuzz::thread_cpu_time;
use serde_json::{Map, Value, json};

/// One microsecond of CPU per step of the static bound.
const EVALUATION_BUDGET: Duration = Duration::from_micros(MAX_COST);
/// Compiling (parsing and measuring) at most `MAX_SOURCE_BYTES` of source.
const COMPILE_BUDGET: Duration = Duration::from_millis(100);

fn default_claims() -> &'static Map<String, Value> {
    static CLAIMS: OnceLock<Map<String, Value>> = OnceLock::new();
    CLAIMS.get_or_init(|| {
        let groups: Vec<Value> = (0..64).map(|i| json!(format!("group-{i}"))).collect();
        json!({
            "iss": "https://gitlab.example.com", "aud": "https://k8s.example.com",
            "sub": "project_path:platform/payments-api:ref_type:branch:ref:main",
            "iat": 1735689600, "exp": 1735693200, "jti": "0b6c0c1e",
            "namespace_id": "72", "namespace_path": "platform", "project_id": "1450",
            "project_path": "platform/payments-api", "user_login": "alice",
            "user_access_level": "maintainer", "pipeline_id": "9001", "pipeline_source": "push",
            "job_id": "424242", "ref": "main", "ref_type": "branch", "ref_protected": "true",
            "environment": "production", "environment_protected": "true", "runner_id": 7,
            "groups_direct": groups
        })
        .as_object()
        .unwrap()
        .clone()
    })
}

fuzz_target!(|data: &[u8]| {
    let (source, claims) = oam_trust_fuzz::split_nul(data);
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let parsed;
    let claims = match claims {
        None => default_claims(),
        // A token's payload is base64 of the claims: 3/4 of the token limit.
        Some(c) if c.len() <= MAX_TOKEN_BYTES * 3 / 4 => match serde_json::from_slice(c) {
            Ok(Value::Object(map)) => {
                parsed = map;
                &parsed
            }
            _ => return,
        },
        Some(_) => return,
    };

    let started = thread_cpu_time();
    let compiled = ClaimCondition::compile(source);
    let took = thread_cpu_time() - started;
    assert!(took <= COMPILE_BUDGET, "compiling took {took:?} of CPU");
    let _ = authn::condition_expression(source);
    let Ok(condition) = compiled else {
        return;
    };
    assert!(source.len() <= MAX_SOURCE_BYTES);
    let measured = ClaimCondition::measure(source).expect("an accepted condition parses");
    assert!(measured.nodes <= MAX_NODES && measured.depth <= MAX_COMPREHENSION_DEPTH);
    assert!(measured.cost <= MAX_COST);

    let started = thread_cpu_time();
    let verdict = condition.evaluate(claims);
    let took = thread_cpu_time() - started;
    assert!(
        took <= EVALUATION_BUDGET,
        "evaluation took {took:?} of CPU, over the {EVALUATION_BUDGET:?} budget (static cost {})",
        measured.cost
    );
    if let Err(e) = verdict {
        let _ = e.to_string();
    }
});
