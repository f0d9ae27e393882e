//! CEL conditions over the raw claims (`claims.<name>`), evaluated with the `cel` crate (cel-rust).
//!
//! The claims are bound exactly as GitLab sent them, so booleans are strings there too:
//! `claims.ref_protected == "true"`, the same expression that works in a Kubernetes
//! AuthenticationConfiguration. A condition is true only if it evaluates to the boolean `true`; an
//! evaluation error (for example a claim the token lacks) or any other result is "no match".
//!
//! Conditions are written by application teams, so they are bounded **before** they are accepted
//! ([`ClaimCondition::compile`]): at most [`MAX_SOURCE_BYTES`] of source, [`MAX_NODES`] syntax nodes,
//! [`MAX_COMPREHENSION_DEPTH`] nested comprehensions (`all`, `exists`, `map`, `filter`, …), and a
//! worst-case cost of at most [`MAX_COST`] steps, where a comprehension over a list literal costs its
//! length per step and one over anything else (a claim, `claims` itself) costs [`MAX_RANGE`] per
//! step. Claim lists and maps longer than [`MAX_RANGE`] are cut to it before evaluation, so the
//! worst case holds at run time too.
use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::{Context, Program};
use serde_json::{Map, Value};

/// Longest condition source accepted.
pub const MAX_SOURCE_BYTES: usize = 2048;
/// Most syntax nodes in one condition.
pub const MAX_NODES: u64 = 512;
/// Most nested comprehensions.
pub const MAX_COMPREHENSION_DEPTH: usize = 2;
/// Most elements a comprehension may range over that is not a list literal; also the most elements
/// of any claim list or map a condition sees.
pub const MAX_RANGE: u64 = 64;
/// Largest worst-case cost (evaluation steps) of one condition.
pub const MAX_COST: u64 = 100_000;

/// A condition that could not be compiled or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error("condition {source_text:?} does not parse: {message}")]
    Parse {
        source_text: String,
        message: String,
    },
    #[error("condition failed: {0}")]
    Evaluation(String),
    #[error("condition returned {0}, not a boolean")]
    NotBoolean(String),
    #[error(
        "condition is too costly to accept: {what} is {value}, the limit is {limit}; simplify it"
    )]
    TooCostly {
        what: &'static str,
        value: u64,
        limit: u64,
    },
}

/// A compiled CEL condition.
pub struct ClaimCondition {
    program: Program,
}

impl std::fmt::Debug for ClaimCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimCondition")
    }
}

/// What the static check measured of one condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConditionCost {
    pub nodes: u64,
    pub depth: usize,
    /// Worst-case evaluation steps.
    pub cost: u64,
}

impl ClaimCondition {
    /// Parses `source` and refuses it when it exceeds any bound (see the module docs).
    pub fn compile(source: &str) -> Result<Self, ConditionError> {
        let too = |what, value: u64, limit: u64| {
            if value > limit {
                Err(ConditionError::TooCostly { what, value, limit })
            } else {
                Ok(())
            }
        };
        too(
            "its length in bytes",
            source.len() as u64,
            MAX_SOURCE_BYTES as u64,
        )?;
        let program = Program::compile(source).map_err(|e| ConditionError::Parse {
            source_text: source.to_string(),
            message: e.to_string(),
        })?;
        let measured = measure(program.expression());
        too("its number of syntax nodes", measured.nodes, MAX_NODES)?;
        too(
            "its comprehension nesting",
            measured.depth as u64,
            MAX_COMPREHENSION_DEPTH as u64,
        )?;
        too("its worst-case cost", measured.cost, MAX_COST)?;
        Ok(ClaimCondition { program })
    }

    /// The static measure of a condition that parses (for tests and benchmarks).
    pub fn measure(source: &str) -> Option<ConditionCost> {
        Program::compile(source)
            .ok()
            .map(|p| measure(p.expression()))
    }

    /// Evaluates against the claims object; `Ok(true)` only for the boolean `true`.
    pub fn evaluate(&self, claims: &Map<String, Value>) -> Result<bool, ConditionError> {
        let mut context = Context::default();
        context
            .add_variable("claims", bounded(&Value::Object(claims.clone())))
            .map_err(|e| ConditionError::Evaluation(e.to_string()))?;
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(ConditionError::NotBoolean(format!("{other:?}"))),
            Err(e) => Err(ConditionError::Evaluation(e.to_string())),
        }
    }
}

/// Nodes, comprehension depth and worst-case cost of an expression. The cost saturates, so a
/// hostile expression cannot overflow it.
fn measure(e: &IdedExpr) -> ConditionCost {
    let sum = |parts: &[ConditionCost]| ConditionCost {
        nodes: parts.iter().fold(1, |n, p| n.saturating_add(p.nodes)),
        depth: parts.iter().map(|p| p.depth).max().unwrap_or(0),
        cost: parts.iter().fold(1, |c, p| c.saturating_add(p.cost)),
    };
    match &e.expr {
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => ConditionCost {
            nodes: 1,
            depth: 0,
            cost: 1,
        },
        Expr::Select(s) => sum(&[measure(&s.operand)]),
        Expr::Call(c) => {
            let mut parts: Vec<ConditionCost> = c.args.iter().map(measure).collect();
            if let Some(t) = &c.target {
                parts.push(measure(t));
            }
            sum(&parts)
        }
        Expr::List(l) => sum(&l.elements.iter().map(measure).collect::<Vec<_>>()),
        Expr::Map(cel::common::ast::MapExpr { entries: m })
        | Expr::Struct(cel::common::ast::StructExpr { entries: m, .. }) => {
            let parts: Vec<ConditionCost> = m
                .iter()
                .flat_map(|entry| match &entry.expr {
                    EntryExpr::MapEntry(me) => vec![measure(&me.key), measure(&me.value)],
                    EntryExpr::StructField(f) => vec![measure(&f.value)],
                })
                .collect();
            sum(&parts)
        }
        Expr::Comprehension(c) => {
            let range = match &c.iter_range.expr {
                Expr::List(l) => l.elements.len() as u64,
                _ => MAX_RANGE,
            };
            let (range_cost, init, cond, step, result) = (
                measure(&c.iter_range),
                measure(&c.accu_init),
                measure(&c.loop_cond),
                measure(&c.loop_step),
                measure(&c.result),
            );
            let per_step = cond.cost.saturating_add(step.cost);
            ConditionCost {
                nodes: [range_cost, init, cond, step, result]
                    .iter()
                    .fold(1u64, |n, p| n.saturating_add(p.nodes)),
                depth: 1 + [
                    cond.depth,
                    step.depth,
                    result.depth,
                    range_cost.depth,
                    init.depth,
                ]
                .into_iter()
                .max()
                .unwrap_or(0),
                cost: range
                    .saturating_mul(per_step)
                    .saturating_add(range_cost.cost)
                    .saturating_add(init.cost)
                    .saturating_add(result.cost),
            }
        }
    }
}

/// The claims as a condition sees them: every list and map cut to [`MAX_RANGE`] elements.
fn bounded(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().take(MAX_RANGE as usize).map(bounded).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .take(MAX_RANGE as usize)
                .map(|(k, v)| (k.clone(), bounded(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn compares_string_booleans_and_lists() {
        let c = ClaimCondition::compile(
            r#"claims.ref_protected == "true" && claims.user_access_level in ["maintainer", "owner"]"#,
        )
        .unwrap();
        assert!(
            c.evaluate(&claims(
                json!({"ref_protected": "true", "user_access_level": "owner"})
            ))
            .unwrap()
        );
        assert!(
            !c.evaluate(&claims(
                json!({"ref_protected": "true", "user_access_level": "developer"})
            ))
            .unwrap()
        );
    }

    #[test]
    fn missing_claims_and_non_booleans_are_errors() {
        let c = ClaimCondition::compile("claims.environment == 'prod'").unwrap();
        assert!(matches!(
            c.evaluate(&claims(json!({}))),
            Err(ConditionError::Evaluation(_))
        ));
        let c = ClaimCondition::compile("claims.project_id").unwrap();
        assert_eq!(
            c.evaluate(&claims(json!({"project_id": "1"}))),
            Err(ConditionError::NotBoolean("String(\"1\")".into()))
        );
        assert!(ClaimCondition::compile("claims.(").is_err());
    }

    /// Seven nested `all` over ten-element lists: what ran for over 60 s of CPU before.
    pub(crate) fn seven_deep() -> String {
        let mut expr = "x6 == 0".to_string();
        for i in (0..7).rev() {
            expr = format!("[0,1,2,3,4,5,6,7,8,9].all(x{i}, {expr} || true)");
        }
        expr
    }

    #[test]
    fn deep_comprehensions_are_refused_before_they_run() {
        let started = std::time::Instant::now();
        let err = ClaimCondition::compile(&seven_deep()).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(
            matches!(
                err,
                ConditionError::TooCostly {
                    what: "its comprehension nesting",
                    value: 7,
                    limit: 2
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn cost_is_bounded_by_ranges_and_literal_sizes() {
        // Two nested comprehensions over claims: 64 x 64 steps, within the budget.
        let two = "claims.all(k, claims.exists(j, j == k))";
        assert!(ClaimCondition::compile(two).is_ok());
        let measured = ClaimCondition::measure(two).unwrap();
        assert!(measured.cost > MAX_RANGE * MAX_RANGE, "{measured:?}");
        assert!(measured.cost <= MAX_COST, "{measured:?}");
        // Two nested over a 1,000-element literal: 10^6 steps.
        let big = format!(
            "[{}].all(a, [{}].all(b, a != b))",
            vec!["1"; 1000].join(","),
            "1,2"
        );
        assert!(matches!(
            ClaimCondition::compile(&big),
            Err(ConditionError::TooCostly { .. })
        ));
        assert!(matches!(
            ClaimCondition::compile(&"true && ".repeat(300)),
            Err(ConditionError::TooCostly {
                what: "its length in bytes",
                ..
            })
        ));
    }

    #[test]
    fn claim_lists_are_cut_to_the_range_bound() {
        let c = ClaimCondition::compile("size(claims.groups) == 64").unwrap();
        let groups: Vec<Value> = (0..500).map(|i| json!(format!("g{i}"))).collect();
        assert!(c.evaluate(&claims(json!({"groups": groups}))).unwrap());
    }
}
