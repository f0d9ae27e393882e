//! `spec.workflow`, KubeVela's shape: `steps[]` (`name`, `type`, `properties`, `dependsOn`, `if`,
//! `timeout`, `subSteps`) and `mode` (`steps` / `subSteps`: `StepByStep` or `DAG`). Parsed here,
//! purely; run by `controller::workflow`. A step type oam-trust does not run is an error naming the
//! step and its type, so a workflow is never skipped in part (an approval gate that is silently
//! ignored deploys at once).
use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Map, Value};

use super::error::{RenderError, describe};

/// The step types oam-trust runs.
pub const STEP_TYPES: [&str; 4] = ["deploy", "suspend", "apply-component", "step-group"];

/// How steps (or the sub-steps of a group) are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One after another, in the order written (KubeVela's default for `steps`).
    StepByStep,
    /// All at once, each after the steps it `dependsOn` (the default for `subSteps`).
    Dag,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::StepByStep => "StepByStep",
            Mode::Dag => "DAG",
        }
    }
}

/// A parsed workflow. `None` from [`parse`] is the default workflow: every component applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    pub mode: Mode,
    pub sub_mode: Mode,
    pub steps: Vec<Step>,
}

impl Workflow {
    /// `StepByStep-DAG`: what `status.workflow.mode` says.
    pub fn mode_label(&self) -> String {
        format!("{}-{}", self.mode.as_str(), self.sub_mode.as_str())
    }

    /// Every step, groups before their sub-steps.
    pub fn all_steps(&self) -> Vec<&Step> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<&'a Step>) {
            for s in steps {
                out.push(s);
                walk(&s.sub_steps, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.steps, &mut out);
        out
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.all_steps().into_iter().find(|s| s.name == name)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub name: String,
    /// As written (`deploy`, `suspend` …).
    pub type_: String,
    pub kind: StepKind,
    pub depends_on: Vec<String>,
    pub condition: Option<Condition>,
    pub timeout: Option<Duration>,
    pub sub_steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    /// Applies the components in the placements its `policies` name (topology + override), and
    /// succeeds once their workloads are healthy.
    Deploy { policies: Vec<String> },
    /// Waits `duration`, or until resumed (`status.workflow.suspend: false`).
    Suspend { duration: Option<Duration> },
    /// Applies one component (in its Application's namespace, or `namespace`).
    ApplyComponent {
        component: String,
        namespace: Option<String>,
    },
    /// Runs its `subSteps`; succeeds when they all have.
    StepGroup,
}

impl StepKind {
    /// Whether the step applies objects (and so has objects of its own).
    pub fn applies(&self) -> bool {
        matches!(
            self,
            StepKind::Deploy { .. } | StepKind::ApplyComponent { .. }
        )
    }
}

/// A step's `if`: `always`, or an expression over earlier steps' status —
/// `status.<step>.phase == "succeeded"` (also `!=`), `status.<step>.succeeded` / `.failed` /
/// `.skipped` / `.timeout`, `true` / `false`, with `!`, `&&`, `||` and parentheses. A step name
/// with a `-` is written `status["my-step"]`. KubeVela's `inputs.*` and `context.*` are not
/// supported (an error says so).
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Always,
    Expr(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Bool(bool),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    /// `status.<step>.<field>` as a boolean.
    Flag {
        step: String,
        field: Flag,
    },
    /// `status.<step>.phase == "<value>"` (`equal` false: `!=`).
    Phase {
        step: String,
        value: String,
        equal: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    Succeeded,
    Failed,
    Skipped,
    Timeout,
}

/// What a condition reads of an earlier step: its phase and reason.
pub trait StepState {
    fn phase_of(&self, step: &str) -> Option<&str>;
    fn reason_of(&self, step: &str) -> Option<&str>;
}

impl Expr {
    pub fn eval(&self, state: &dyn StepState) -> bool {
        match self {
            Expr::Bool(b) => *b,
            Expr::Not(e) => !e.eval(state),
            Expr::And(a, b) => a.eval(state) && b.eval(state),
            Expr::Or(a, b) => a.eval(state) || b.eval(state),
            Expr::Flag { step, field } => {
                let phase = state.phase_of(step);
                match field {
                    Flag::Succeeded => phase == Some("succeeded"),
                    Flag::Failed => phase == Some("failed"),
                    Flag::Skipped => phase == Some("skipped"),
                    Flag::Timeout => state.reason_of(step) == Some("Timeout"),
                }
            }
            Expr::Phase { step, value, equal } => {
                (state.phase_of(step) == Some(value.as_str())) == *equal
            }
        }
    }

    /// The steps the expression reads.
    pub fn steps(&self, out: &mut BTreeSet<String>) {
        match self {
            Expr::Bool(_) => {}
            Expr::Not(e) => e.steps(out),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.steps(out);
                b.steps(out);
            }
            Expr::Flag { step, .. } | Expr::Phase { step, .. } => {
                out.insert(step.clone());
            }
        }
    }
}

fn invalid(scope: impl Into<String>, message: impl Into<String>) -> RenderError {
    RenderError::InvalidApplication {
        scope: scope.into(),
        message: message.into(),
    }
}

/// Parses `spec.workflow`. `Ok(None)`: no workflow, or one with no steps (the default workflow).
pub fn parse(workflow: Option<&Value>) -> Result<Option<Workflow>, RenderError> {
    let Some(workflow) = workflow.filter(|w| !w.is_null()) else {
        return Ok(None);
    };
    let Value::Object(map) = workflow else {
        return Err(invalid(
            "spec.workflow",
            format!("expected an object, got {}", describe(workflow)),
        ));
    };
    for key in map.keys() {
        match key.as_str() {
            "steps" | "mode" => {}
            "ref" => {
                return Err(invalid(
                    "spec.workflow",
                    "ref: a Workflow object is not supported; write the steps in spec.workflow.steps",
                ));
            }
            other => {
                return Err(invalid(
                    "spec.workflow",
                    format!("unknown field {other:?} (supported: steps, mode)"),
                ));
            }
        }
    }
    let (mode, sub_mode) = match map.get("mode") {
        None | Some(Value::Null) => (Mode::StepByStep, Mode::Dag),
        Some(Value::Object(m)) => {
            for key in m.keys() {
                if key != "steps" && key != "subSteps" {
                    return Err(invalid(
                        "spec.workflow.mode",
                        format!("unknown field {key:?} (supported: steps, subSteps)"),
                    ));
                }
            }
            (
                mode_of(m.get("steps"), "spec.workflow.mode.steps", Mode::StepByStep)?,
                mode_of(m.get("subSteps"), "spec.workflow.mode.subSteps", Mode::Dag)?,
            )
        }
        Some(other) => {
            return Err(invalid(
                "spec.workflow.mode",
                format!("expected an object, got {}", describe(other)),
            ));
        }
    };
    let steps = match map.get("steps") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| step(v, &format!("spec.workflow.steps[{i}]"), false))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(invalid(
                "spec.workflow.steps",
                format!("expected an array, got {}", describe(other)),
            ));
        }
    };
    if steps.is_empty() {
        return Ok(None);
    }
    let wf = Workflow {
        mode,
        sub_mode,
        steps,
    };
    check_names(&wf)?;
    Ok(Some(wf))
}

fn mode_of(v: Option<&Value>, scope: &str, default: Mode) -> Result<Mode, RenderError> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) if s == "StepByStep" => Ok(Mode::StepByStep),
        Some(Value::String(s)) if s == "DAG" => Ok(Mode::Dag),
        Some(other) => Err(invalid(
            scope,
            format!("expected StepByStep or DAG, got {}", describe(other)),
        )),
    }
}

fn str_field<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    scope: &str,
) -> Result<Option<&'a str>, RenderError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(
            scope,
            format!("field {key:?}: expected a string, got {}", describe(other)),
        )),
    }
}

fn step(v: &Value, at: &str, in_group: bool) -> Result<Step, RenderError> {
    let Value::Object(m) = v else {
        return Err(invalid(
            at,
            format!("expected an object, got {}", describe(v)),
        ));
    };
    let name = str_field(m, "name", at)?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid(at, "a workflow step needs a name"))?
        .to_string();
    let scope = format!("workflow step {name:?}");
    let type_ = str_field(m, "type", &scope)?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid(&scope, "a workflow step needs a type"))?
        .to_string();
    for key in m.keys() {
        if !matches!(
            key.as_str(),
            "name"
                | "type"
                | "properties"
                | "dependsOn"
                | "if"
                | "timeout"
                | "subSteps"
                | "meta"
                | "inputs"
                | "outputs"
        ) {
            return Err(invalid(
                &scope,
                format!(
                    "unknown field {key:?} (supported: name, type, properties, dependsOn, if, timeout, subSteps)"
                ),
            ));
        }
    }
    for key in ["inputs", "outputs"] {
        if m.get(key).is_some_and(|v| !v.is_null()) {
            return Err(invalid(
                &scope,
                format!("{key}: step inputs and outputs are not supported by oam-trust"),
            ));
        }
    }
    let props = match m.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(other) => {
            return Err(invalid(
                &scope,
                format!("properties: expected an object, got {}", describe(other)),
            ));
        }
    };
    let kind = match type_.as_str() {
        "deploy" => {
            let policies = match props.get("policies") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|p| {
                        p.as_str().map(str::to_string).ok_or_else(|| {
                            invalid(&scope, "properties.policies: expected policy names")
                        })
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(invalid(
                        &scope,
                        format!(
                            "properties.policies: expected a list of policy names, got {}",
                            describe(other)
                        ),
                    ));
                }
            };
            only_keys(&props, &["policies", "parallelism", "auto"], &scope)?;
            if props.get("auto") == Some(&Value::Bool(false)) {
                return Err(invalid(
                    &scope,
                    "properties.auto: false (a deploy that suspends first) is not supported; put a suspend step before it",
                ));
            }
            StepKind::Deploy { policies }
        }
        "suspend" => {
            only_keys(&props, &["duration", "message"], &scope)?;
            let duration = match str_field(&props, "duration", &scope)? {
                None => None,
                Some(d) => Some(
                    crate::duration::parse(d)
                        .map_err(|e| invalid(&scope, format!("properties.duration: {e}")))?,
                ),
            };
            StepKind::Suspend { duration }
        }
        "apply-component" => {
            only_keys(&props, &["component", "cluster", "namespace"], &scope)?;
            let component = str_field(&props, "component", &scope)?
                .filter(|c| !c.is_empty())
                .ok_or_else(|| invalid(&scope, "properties.component is required"))?
                .to_string();
            if let Some(cluster) = str_field(&props, "cluster", &scope)?
                && !cluster.is_empty()
                && cluster != "local"
            {
                return Err(invalid(
                    &scope,
                    format!(
                        "properties.cluster {cluster:?}: oam-trust deploys to the local cluster only"
                    ),
                ));
            }
            let namespace = str_field(&props, "namespace", &scope)?
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            StepKind::ApplyComponent {
                component,
                namespace,
            }
        }
        "step-group" => {
            if in_group {
                return Err(invalid(&scope, "a step-group cannot be nested in another"));
            }
            only_keys(&props, &[], &scope)?;
            StepKind::StepGroup
        }
        other => {
            return Err(RenderError::UnsupportedStep {
                step: name,
                type_: other.to_string(),
                supported: STEP_TYPES.join(", "),
            });
        }
    };
    let depends_on = match m.get("dependsOn") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| {
                p.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(&scope, "dependsOn: expected step names"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(invalid(
                &scope,
                format!(
                    "dependsOn: expected a list of step names, got {}",
                    describe(other)
                ),
            ));
        }
    };
    let condition = match str_field(m, "if", &scope)? {
        None => None,
        Some(s) => Some(parse_condition(s).map_err(|e| invalid(&scope, format!("if {s:?}: {e}")))?),
    };
    let timeout = match str_field(m, "timeout", &scope)? {
        None => None,
        Some(t) => {
            Some(crate::duration::parse(t).map_err(|e| invalid(&scope, format!("timeout: {e}")))?)
        }
    };
    let sub_steps: Vec<Step> = match m.get("subSteps") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| step(v, &format!("{scope}: subSteps[{i}]"), true))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(invalid(
                &scope,
                format!("subSteps: expected an array, got {}", describe(other)),
            ));
        }
    };
    if !sub_steps.is_empty() && kind != StepKind::StepGroup {
        return Err(invalid(
            &scope,
            format!("subSteps: only a step-group has sub-steps, this step is a {type_}"),
        ));
    }
    Ok(Step {
        name,
        type_,
        kind,
        depends_on,
        condition,
        timeout,
        sub_steps,
    })
}

fn only_keys(props: &Map<String, Value>, allowed: &[&str], scope: &str) -> Result<(), RenderError> {
    match props.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(invalid(
            scope,
            format!(
                "properties.{k}: not a property of this step type (supported: {})",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            ),
        )),
    }
}

/// Names are unique across the workflow; `dependsOn` and `if` name steps of the same level (or,
/// for `if`, any step); nothing depends on itself or in a cycle.
fn check_names(wf: &Workflow) -> Result<(), RenderError> {
    let mut seen = BTreeSet::new();
    for s in wf.all_steps() {
        if !seen.insert(s.name.as_str()) {
            return Err(invalid(
                format!("workflow step {:?}", s.name),
                "step name is used twice",
            ));
        }
    }
    fn level(steps: &[Step], all: &BTreeSet<&str>) -> Result<(), RenderError> {
        let here: BTreeSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        for s in steps {
            let scope = format!("workflow step {:?}", s.name);
            for d in &s.depends_on {
                if !here.contains(d.as_str()) {
                    return Err(invalid(
                        &scope,
                        format!("dependsOn {d:?}: no such step at this level of the workflow"),
                    ));
                }
                if d == &s.name {
                    return Err(invalid(&scope, "a step cannot depend on itself"));
                }
            }
            if let Some(Condition::Expr(e)) = &s.condition {
                let mut read = BTreeSet::new();
                e.steps(&mut read);
                if let Some(missing) = read.iter().find(|r| !all.contains(r.as_str())) {
                    return Err(invalid(
                        &scope,
                        format!("if: reads the status of step {missing:?}, which does not exist"),
                    ));
                }
            }
            level(&s.sub_steps, all)?;
        }
        // A cycle of dependsOn would never run: refuse it.
        let mut done: BTreeSet<&str> = BTreeSet::new();
        while done.len() < steps.len() {
            let before = done.len();
            for s in steps {
                if !done.contains(s.name.as_str())
                    && s.depends_on.iter().all(|d| done.contains(d.as_str()))
                {
                    done.insert(&s.name);
                }
            }
            if done.len() == before {
                let stuck: Vec<&str> = steps
                    .iter()
                    .map(|s| s.name.as_str())
                    .filter(|n| !done.contains(n))
                    .collect();
                return Err(invalid(
                    "spec.workflow",
                    format!("dependsOn forms a cycle among steps {}", stuck.join(", ")),
                ));
            }
        }
        Ok(())
    }
    level(&wf.steps, &seen)
}

// ---- `if` expressions ----

/// Parses a step's `if`.
pub fn parse_condition(input: &str) -> Result<Condition, String> {
    let s = input.trim();
    if s == "always" {
        return Ok(Condition::Always);
    }
    if s.len() > 1024 {
        return Err("longer than 1024 characters".into());
    }
    let tokens = tokenize(s)?;
    let mut p = Parser { tokens, at: 0 };
    let e = p.or(0)?;
    if p.at != p.tokens.len() {
        return Err(format!("unexpected {:?}", p.tokens[p.at]));
    }
    Ok(Condition::Expr(e))
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Dot,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Not,
    And,
    Or,
    Eq,
    Ne,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '.' => {
                out.push(Tok::Dot);
                i += 1
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1
            }
            ']' => {
                out.push(Tok::RBracket);
                i += 1
            }
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            '&' if chars.get(i + 1) == Some(&'&') => {
                out.push(Tok::And);
                i += 2
            }
            '|' if chars.get(i + 1) == Some(&'|') => {
                out.push(Tok::Or);
                i += 2
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Eq);
                i += 2
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Ne);
                i += 2
            }
            '!' => {
                out.push(Tok::Not);
                i += 1
            }
            '"' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && chars[j] != '"' {
                    if chars[j] == '\\' {
                        return Err("escapes in strings are not supported".into());
                    }
                    j += 1;
                }
                if j == chars.len() {
                    return Err("unterminated string".into());
                }
                out.push(Tok::Str(chars[start..j].iter().collect()));
                i = j + 1;
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '-')
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Tok>,
    at: usize,
}

const MAX_DEPTH: usize = 32;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }
    fn expect(&mut self, want: Tok) -> Result<(), String> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(format!("expected {want:?}, got {t:?}")),
            None => Err(format!("expected {want:?}, got the end")),
        }
    }
    fn or(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        let mut e = self.and(depth)?;
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and(depth)?));
        }
        Ok(e)
    }
    fn and(&mut self, depth: usize) -> Result<Expr, String> {
        let mut e = self.unary(depth)?;
        while self.peek() == Some(&Tok::And) {
            self.at += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary(depth)?));
        }
        Ok(e)
    }
    fn unary(&mut self, depth: usize) -> Result<Expr, String> {
        match self.peek() {
            Some(Tok::Not) => {
                self.at += 1;
                if depth > MAX_DEPTH {
                    return Err("nested too deeply".into());
                }
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Tok::LParen) => {
                self.at += 1;
                let e = self.or(depth + 1)?;
                self.expect(Tok::RParen)?;
                Ok(e)
            }
            _ => self.atom(),
        }
    }
    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Ident(i)) if i == "true" => Ok(Expr::Bool(true)),
            Some(Tok::Ident(i)) if i == "false" => Ok(Expr::Bool(false)),
            Some(Tok::Ident(i)) if i == "status" => {
                let step = match self.next() {
                    Some(Tok::Dot) => match self.next() {
                        Some(Tok::Ident(s)) => s,
                        _ => return Err("expected a step name after status.".into()),
                    },
                    Some(Tok::LBracket) => {
                        let s = match self.next() {
                            Some(Tok::Str(s)) => s,
                            _ => return Err("expected status[\"<step>\"]".into()),
                        };
                        self.expect(Tok::RBracket)?;
                        s
                    }
                    _ => return Err("expected status.<step>".into()),
                };
                self.expect(Tok::Dot)?;
                let field = match self.next() {
                    Some(Tok::Ident(f)) => f,
                    _ => return Err("expected a field after status.<step>.".into()),
                };
                let flag = match field.as_str() {
                    "phase" => None,
                    "succeeded" => Some(Flag::Succeeded),
                    "failed" => Some(Flag::Failed),
                    "skipped" => Some(Flag::Skipped),
                    "timeout" => Some(Flag::Timeout),
                    other => {
                        return Err(format!(
                            "status.{step}.{other}: supported fields are phase, succeeded, failed, skipped and timeout"
                        ));
                    }
                };
                match flag {
                    Some(field) => Ok(Expr::Flag { step, field }),
                    None => {
                        let equal = match self.next() {
                            Some(Tok::Eq) => true,
                            Some(Tok::Ne) => false,
                            _ => {
                                return Err(format!(
                                    "status.{step}.phase must be compared with == or != to a string"
                                ));
                            }
                        };
                        match self.next() {
                            Some(Tok::Str(value)) => Ok(Expr::Phase { step, value, equal }),
                            _ => Err(format!(
                                "status.{step}.phase must be compared to a string such as \"succeeded\""
                            )),
                        }
                    }
                }
            }
            Some(Tok::Ident(i)) if i == "inputs" || i == "context" => Err(format!(
                "{i}.*: step inputs and context are not supported; use always or status.<step>.<phase|succeeded|failed|skipped|timeout>"
            )),
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("empty expression".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct S(Vec<(&'static str, &'static str, Option<&'static str>)>);
    impl StepState for S {
        fn phase_of(&self, step: &str) -> Option<&str> {
            self.0.iter().find(|s| s.0 == step).map(|s| s.1)
        }
        fn reason_of(&self, step: &str) -> Option<&str> {
            self.0.iter().find(|s| s.0 == step).and_then(|s| s.2)
        }
    }

    #[test]
    fn parses_kubevela_shapes() {
        let wf = parse(Some(&json!({
            "mode": {"steps": "DAG"},
            "steps": [
                {"name": "staging", "type": "deploy", "properties": {"policies": ["t-staging"]}},
                {"name": "approve", "type": "suspend", "dependsOn": ["staging"], "timeout": "1h"},
                {"name": "prod", "type": "step-group", "dependsOn": ["approve"], "subSteps": [
                    {"name": "db", "type": "apply-component", "properties": {"component": "db"}},
                    {"name": "web", "type": "deploy", "dependsOn": ["db"], "if": "status.db.succeeded"}
                ]},
                {"name": "wait", "type": "suspend", "properties": {"duration": "30s"}, "if": "always", "dependsOn": ["prod"]}
            ]
        })))
        .unwrap()
        .unwrap();
        assert_eq!(wf.mode_label(), "DAG-DAG");
        assert_eq!(wf.all_steps().len(), 6);
        assert_eq!(
            wf.step("wait").unwrap().kind,
            StepKind::Suspend {
                duration: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(
            wf.step("approve").unwrap().timeout,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(wf.step("wait").unwrap().condition, Some(Condition::Always));
    }

    #[test]
    fn no_steps_is_the_default_workflow() {
        assert_eq!(parse(None).unwrap(), None);
        assert_eq!(parse(Some(&json!({"steps": []}))).unwrap(), None);
    }

    #[test]
    fn unknown_step_type_names_the_step_and_type() {
        let e = parse(Some(&json!({"steps": [
            {"name": "ok", "type": "deploy"},
            {"name": "tell-slack", "type": "notification", "properties": {}}
        ]})))
        .unwrap_err();
        let message = e.to_string();
        assert!(message.contains("\"tell-slack\""), "{message}");
        assert!(message.contains("\"notification\""), "{message}");
        assert!(
            message.contains("deploy, suspend, apply-component, step-group"),
            "{message}"
        );
        assert_eq!(e.reason(), "UnsupportedWorkflowStep");
    }

    #[test]
    fn bad_shapes_are_clear_errors() {
        for (wf, want) in [
            (json!({"steps": [{"type": "deploy"}]}), "needs a name"),
            (
                json!({"steps": [{"name": "a", "type": "deploy"}, {"name": "a", "type": "suspend"}]}),
                "used twice",
            ),
            (
                json!({"steps": [{"name": "a", "type": "deploy", "dependsOn": ["b"]}]}),
                "no such step",
            ),
            (
                json!({"mode": {"steps": "DAG"}, "steps": [{"name": "a", "type": "deploy", "dependsOn": ["b"]}, {"name": "b", "type": "deploy", "dependsOn": ["a"]}]}),
                "cycle",
            ),
            (
                json!({"steps": [{"name": "a", "type": "suspend", "properties": {"duration": "soon"}}]}),
                "invalid duration",
            ),
            (
                json!({"steps": [{"name": "a", "type": "suspend", "timeout": "1d"}]}),
                "timeout",
            ),
            (
                json!({"steps": [{"name": "a", "type": "deploy", "if": "inputs.x == \"y\""}]}),
                "not supported",
            ),
            (
                json!({"steps": [{"name": "a", "type": "deploy", "if": "status.zz.succeeded"}]}),
                "does not exist",
            ),
            (
                json!({"steps": [{"name": "a", "type": "apply-component"}]}),
                "component is required",
            ),
            (
                json!({"steps": [{"name": "a", "type": "deploy", "subSteps": [{"name": "b", "type": "deploy"}]}]}),
                "only a step-group",
            ),
            (
                json!({"steps": [{"name": "a", "type": "deploy", "properties": {"auto": false}}]}),
                "auto",
            ),
            (json!({"ref": "wf"}), "Workflow object"),
            (json!({"steps": "deploy"}), "expected an array"),
        ] {
            let e = parse(Some(&wf)).unwrap_err().to_string();
            assert!(e.contains(want), "{wf}: {e}");
        }
    }

    #[test]
    fn conditions_evaluate_against_step_phases() {
        let state = S(vec![
            ("a", "succeeded", None),
            ("b", "failed", Some("Timeout")),
            ("my-step", "skipped", None),
        ]);
        let eval = |s: &str| match parse_condition(s).unwrap() {
            Condition::Always => true,
            Condition::Expr(e) => e.eval(&state),
        };
        assert!(eval("status.a.succeeded"));
        assert!(eval("status.a.phase == \"succeeded\""));
        assert!(!eval("status.a.phase != \"succeeded\""));
        assert!(eval("status.b.timeout && status.b.failed"));
        assert!(eval("!status.b.succeeded"));
        assert!(eval("status[\"my-step\"].skipped || false"));
        assert!(eval("(status.a.failed || status.b.failed) && !(false)"));
        assert!(eval("always"));
        for bad in [
            "",
            "status",
            "status.a",
            "status.a.phase",
            "status.a.phase == 3",
            "status.a.message",
            "a && b",
            "status.a.succeeded &&",
            "((((((((((((((((((((((((((((((((((((true))))))))))))))))))))))))))))))))))",
        ] {
            assert!(parse_condition(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
