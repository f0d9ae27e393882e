//! The costliest CEL condition the static bound accepts, evaluated against claims that make its worst
//! case real (a 64-element claim list, the most a condition ever sees), beside a typical condition.
//! `cargo bench --bench condition`.
use criterion::{Criterion, criterion_group, criterion_main};
use oam_trust::access::condition::{ClaimCondition, MAX_COST, MAX_RANGE};
use serde_json::{Map, Value, json};

fn claims() -> Map<String, Value> {
    let groups: Vec<Value> = (0..MAX_RANGE)
        .map(|i| json!(format!("group-{i}")))
        .collect();
    json!({"project_id": "1450", "ref": "main", "ref_protected": "true",
           "user_access_level": "maintainer", "groups": groups})
    .as_object()
    .unwrap()
    .clone()
}

fn bench(c: &mut Criterion) {
    // Two nested comprehensions over the longest list a claim may hold, each step a comparison.
    let costliest = "claims.groups.all(a, claims.groups.exists(b, a == b) && claims.groups.exists(c, c == a) && claims.groups.exists(d, d == a))";
    let measured = ClaimCondition::measure(costliest).unwrap();
    assert!(measured.cost <= MAX_COST, "{measured:?}");
    let costliest = ClaimCondition::compile(costliest).expect("within the bound");
    let typical = ClaimCondition::compile(
        r#"claims.ref_protected == "true" && claims.user_access_level in ["maintainer", "owner"]"#,
    )
    .unwrap();
    let claims = claims();
    assert!(costliest.evaluate(&claims).unwrap());
    eprintln!("costliest accepted condition: {measured:?} (limit {MAX_COST})");
    c.bench_function("condition/costliest_accepted", |b| {
        b.iter(|| costliest.evaluate(&claims).unwrap())
    });
    c.bench_function("condition/typical", |b| {
        b.iter(|| typical.evaluate(&claims).unwrap())
    });
    c.bench_function("condition/refuse_seven_deep", |b| {
        let mut expr = "x6 == 0".to_string();
        for i in (0..7).rev() {
            expr = format!("[0,1,2,3,4,5,6,7,8,9].all(x{i}, {expr} || true)");
        }
        b.iter(|| ClaimCondition::compile(&expr).unwrap_err())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
