//! Runs an Application's workflow (`render::workflow`), as KubeVela does, from the state recorded in
//! `status.workflow`: every decision is taken from that status and the clock, so a restarted
//! operator, or a new leader, continues at the same step.
//!
//! This module is pure. `schedule` settles what time and a resume decide (a suspend that was
//! resumed or whose `duration` passed, a `timeout`, an `if`) and starts the steps that may start;
//! the reconcile applies the objects of the steps that run (`applying`), reports each apply step's
//! health (`settle_apply`) and schedules again until nothing moves.
//!
//! Phases: a run is `executing`, `suspending`, `succeeded` or `failed`; a step `pending`, `running`,
//! `suspending`, `succeeded`, `failed` or `skipped`. Resuming is `status.workflow.suspend: false`
//! (what `oam-trust resume` and `vela workflow resume` write): every suspending step succeeds.
use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::{Timestamp, Unit};

use crate::api::oam::{WorkflowStatus, WorkflowStepStatus};
use crate::render::workflow::{Condition, Mode, Step, StepKind, StepState, Workflow};

pub const PENDING: &str = "pending";
pub const RUNNING: &str = "running";
pub const SUSPENDING: &str = "suspending";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
pub const SKIPPED: &str = "skipped";

pub const RUN_EXECUTING: &str = "executing";
pub const RUN_SUSPENDING: &str = "suspending";
pub const RUN_SUCCEEDED: &str = "succeeded";
pub const RUN_FAILED: &str = "failed";

/// How often a running apply step is looked at again when no watch event arrives.
pub const RUNNING_RECHECK: Duration = Duration::from_secs(10);

fn terminal(phase: &str) -> bool {
    matches!(phase, SUCCEEDED | FAILED | SKIPPED)
}

fn stamp(now: Timestamp) -> String {
    now.round(Unit::Second).unwrap_or(now).to_string()
}

fn parse_time(s: Option<&str>) -> Option<Timestamp> {
    s?.parse().ok()
}

fn fresh_step(step: &Step) -> WorkflowStepStatus {
    WorkflowStepStatus {
        id: step.name.clone(),
        name: step.name.clone(),
        type_: step.type_.clone(),
        phase: PENDING.to_string(),
        sub_steps: step.sub_steps.iter().map(fresh_step).collect(),
        ..Default::default()
    }
}

/// Whether `status` records the steps of `wf` (names and types, in order).
fn same_shape(wf_steps: &[Step], status: &[WorkflowStepStatus]) -> bool {
    wf_steps.len() == status.len()
        && wf_steps.iter().zip(status).all(|(w, s)| {
            w.name == s.name && w.type_ == s.type_ && same_shape(&w.sub_steps, &s.sub_steps)
        })
}

/// The run for `revision`: the recorded one when it is this revision's, else a new one.
pub fn begin(
    wf: &Workflow,
    previous: Option<&WorkflowStatus>,
    revision: &str,
    now: Timestamp,
) -> WorkflowStatus {
    if let Some(prev) = previous
        && prev.app_revision.as_deref() == Some(revision)
        && same_shape(&wf.steps, &prev.steps)
    {
        return prev.clone();
    }
    WorkflowStatus {
        app_revision: Some(revision.to_string()),
        mode: Some(wf.mode_label()),
        status: Some(RUN_EXECUTING.to_string()),
        message: None,
        suspend: false,
        terminated: false,
        finished: false,
        start_time: Some(stamp(now)),
        end_time: None,
        steps: wf.steps.iter().map(fresh_step).collect(),
    }
}

struct Phases<'a>(&'a [WorkflowStepStatus]);

impl Phases<'_> {
    fn find(&self, name: &str) -> Option<&WorkflowStepStatus> {
        fn walk<'a>(steps: &'a [WorkflowStepStatus], name: &str) -> Option<&'a WorkflowStepStatus> {
            steps.iter().find_map(|s| {
                (s.name == name)
                    .then_some(s)
                    .or_else(|| walk(&s.sub_steps, name))
            })
        }
        walk(self.0, name)
    }
}

impl StepState for Phases<'_> {
    fn phase_of(&self, step: &str) -> Option<&str> {
        self.find(step).map(|s| s.phase.as_str())
    }
    fn reason_of(&self, step: &str) -> Option<&str> {
        self.find(step).and_then(|s| s.reason.as_deref())
    }
}

fn set(step: &mut WorkflowStepStatus, phase: &str, reason: &str, message: String, now: Timestamp) {
    step.phase = phase.to_string();
    step.reason = Some(reason.to_string());
    step.message = (!message.is_empty()).then_some(message);
    step.last_execute_time = Some(stamp(now));
}

/// One scheduling pass over the run (see the module docs). Returns whether anything changed.
pub fn schedule(wf: &Workflow, status: &mut WorkflowStatus, now: Timestamp) -> bool {
    if status.finished {
        return false;
    }
    let before = status.clone();
    // Until nothing moves: an `if` reads the phases as the previous pass left them.
    for _ in 0..=wf.all_steps().len() {
        let pass = status.clone();
        let resumed = !status.suspend;
        schedule_level(
            &wf.steps,
            &mut status.steps,
            wf.mode,
            wf.sub_mode,
            &Phases(&pass.steps),
            resumed,
            now,
        );
        summarize(status, now);
        if *status == pass || status.finished {
            break;
        }
    }
    *status != before
}

#[allow(clippy::too_many_arguments)]
fn schedule_level(
    steps: &[Step],
    states: &mut [WorkflowStepStatus],
    mode: Mode,
    sub_mode: Mode,
    all: &Phases,
    resumed: bool,
    now: Timestamp,
) {
    for i in 0..steps.len() {
        let step = &steps[i];
        // What this step waits for: the steps it names, and in StepByStep the one before it.
        let mut deps: Vec<usize> = step
            .depends_on
            .iter()
            .filter_map(|d| steps.iter().position(|s| &s.name == d))
            .collect();
        if mode == Mode::StepByStep && i > 0 {
            deps.push(i - 1);
        }
        let phase = states[i].phase.clone();
        match phase.as_str() {
            PENDING => {
                if !deps.iter().all(|d| terminal(&states[*d].phase)) {
                    continue;
                }
                let failed_before = deps.iter().any(|d| states[*d].phase == FAILED);
                let run = match &step.condition {
                    None => !failed_before,
                    Some(Condition::Always) => true,
                    Some(Condition::Expr(e)) => {
                        // The steps it reads must have ended; otherwise it waits.
                        let mut read = BTreeSet::new();
                        e.steps(&mut read);
                        if read
                            .iter()
                            .any(|r| all.phase_of(r).is_some_and(|p| !terminal(p)))
                        {
                            continue;
                        }
                        e.eval(all)
                    }
                };
                let state = &mut states[i];
                if !run {
                    let why = if step.condition.is_some() {
                        "its if condition is false".to_string()
                    } else {
                        "an earlier step failed".to_string()
                    };
                    set(state, SKIPPED, "Skip", why, now);
                    skip_all(&mut state.sub_steps, now);
                    continue;
                }
                state.first_execute_time = Some(stamp(now));
                match &step.kind {
                    StepKind::Suspend { duration } => {
                        let message = match duration {
                            Some(d) => {
                                format!("waiting {} or until resumed", crate::duration::format(*d))
                            }
                            None => "waiting until resumed".to_string(),
                        };
                        set(state, SUSPENDING, "Suspended", message, now);
                    }
                    StepKind::StepGroup => {
                        set(state, RUNNING, "Execute", String::new(), now);
                        run_group(step, state, sub_mode, all, resumed, now);
                    }
                    _ => set(state, RUNNING, "Execute", String::new(), now),
                }
            }
            SUSPENDING => {
                let state = &mut states[i];
                let first = parse_time(state.first_execute_time.as_deref()).unwrap_or(now);
                let elapsed = now.duration_since(first).unsigned_abs();
                let duration = match &step.kind {
                    StepKind::Suspend { duration } => *duration,
                    _ => None,
                };
                if resumed {
                    set(state, SUCCEEDED, "Resumed", "resumed".to_string(), now);
                } else if duration.is_some_and(|d| elapsed >= d) {
                    set(
                        state,
                        SUCCEEDED,
                        "Resumed",
                        format!(
                            "resumed after {}",
                            crate::duration::format(duration.unwrap_or_default())
                        ),
                        now,
                    );
                } else if let Some(t) = step.timeout
                    && elapsed >= t
                {
                    set(
                        state,
                        FAILED,
                        "Timeout",
                        format!("not resumed within {}", crate::duration::format(t)),
                        now,
                    );
                }
            }
            RUNNING => {
                let state = &mut states[i];
                if let StepKind::StepGroup = step.kind {
                    run_group(step, state, sub_mode, all, resumed, now);
                }
                if state.phase == RUNNING
                    && let Some(t) = step.timeout
                {
                    let first = parse_time(state.first_execute_time.as_deref()).unwrap_or(now);
                    if now.duration_since(first).unsigned_abs() >= t {
                        let message = match &state.message {
                            Some(m) => {
                                format!("did not finish within {}: {m}", crate::duration::format(t))
                            }
                            None => format!("did not finish within {}", crate::duration::format(t)),
                        };
                        set(state, FAILED, "Timeout", message, now);
                        for sub in state.sub_steps.iter_mut().filter(|s| !terminal(&s.phase)) {
                            set(
                                sub,
                                FAILED,
                                "Timeout",
                                "the step group timed out".to_string(),
                                now,
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Schedules a running group's sub-steps, then settles the group by them.
fn run_group(
    group: &Step,
    state: &mut WorkflowStepStatus,
    sub_mode: Mode,
    all: &Phases,
    resumed: bool,
    now: Timestamp,
) {
    schedule_level(
        &group.sub_steps,
        &mut state.sub_steps,
        sub_mode,
        sub_mode,
        all,
        resumed,
        now,
    );
    settle_group(state, now);
}

fn skip_all(steps: &mut [WorkflowStepStatus], now: Timestamp) {
    for s in steps {
        set(
            s,
            SKIPPED,
            "Skip",
            "its step group was skipped".to_string(),
            now,
        );
        skip_all(&mut s.sub_steps, now);
    }
}

fn settle_group(group: &mut WorkflowStepStatus, now: Timestamp) {
    if group.sub_steps.iter().all(|s| terminal(&s.phase)) {
        if group.sub_steps.iter().any(|s| s.phase == FAILED) {
            set(
                group,
                FAILED,
                "Execute",
                "a sub-step failed".to_string(),
                now,
            );
        } else {
            set(group, SUCCEEDED, "Execute", String::new(), now);
        }
    }
}

fn walk_all(steps: &[WorkflowStepStatus], f: &mut impl FnMut(&WorkflowStepStatus)) {
    for s in steps {
        f(s);
        walk_all(&s.sub_steps, f);
    }
}

/// `suspend`, `status`, `finished`, `message` and `endTime` from the steps.
fn summarize(status: &mut WorkflowStatus, now: Timestamp) {
    let mut suspending = Vec::new();
    let mut failed = Vec::new();
    let mut done = true;
    walk_all(&status.steps, &mut |s| {
        match s.phase.as_str() {
            SUSPENDING => suspending.push(s.name.clone()),
            FAILED => failed.push(s.name.clone()),
            _ => {}
        }
        done &= terminal(&s.phase);
    });
    status.suspend = !suspending.is_empty();
    if !suspending.is_empty() {
        status.status = Some(RUN_SUSPENDING.to_string());
        status.message = Some(format!(
            "suspended at step {}: resume with `oam-trust resume` (or set status.workflow.suspend to false)",
            suspending.join(", ")
        ));
    } else if done {
        status.finished = true;
        status.end_time = Some(stamp(now));
        if failed.is_empty() {
            status.status = Some(RUN_SUCCEEDED.to_string());
            status.message = None;
        } else {
            status.status = Some(RUN_FAILED.to_string());
            status.message = Some(format!("step {} failed", failed.join(", ")));
        }
    } else {
        status.status = Some(RUN_EXECUTING.to_string());
        status.message = None;
    }
}

/// The apply steps (`deploy`, `apply-component`) whose objects are applied now: those that run
/// and those that succeeded in this run.
pub fn applying<'a>(wf: &'a Workflow, status: &WorkflowStatus) -> BTreeSet<&'a str> {
    let phases = Phases(&status.steps);
    wf.all_steps()
        .into_iter()
        .filter(|s| s.kind.applies())
        .filter(|s| matches!(phases.phase_of(&s.name), Some(RUNNING | SUCCEEDED)))
        .map(|s| s.name.as_str())
        .collect()
}

/// The apply steps running now.
pub fn running_apply_steps<'a>(wf: &'a Workflow, status: &WorkflowStatus) -> Vec<&'a str> {
    let phases = Phases(&status.steps);
    wf.all_steps()
        .into_iter()
        .filter(|s| s.kind.applies() && phases.phase_of(&s.name) == Some(RUNNING))
        .map(|s| s.name.as_str())
        .collect()
}

fn find_mut<'a>(
    steps: &'a mut [WorkflowStepStatus],
    name: &str,
) -> Option<&'a mut WorkflowStepStatus> {
    for s in steps {
        if s.name == name {
            return Some(s);
        }
        if let Some(found) = find_mut(&mut s.sub_steps, name) {
            return Some(found);
        }
    }
    None
}

/// What the reconcile saw of a running apply step: `Ok` when its objects applied and its workloads
/// are healthy (the step succeeds), else why it still waits (it stays running, until its timeout).
pub fn settle_apply(
    status: &mut WorkflowStatus,
    step: &str,
    outcome: Result<(), String>,
    now: Timestamp,
) {
    let Some(state) = find_mut(&mut status.steps, step) else {
        return;
    };
    if state.phase != RUNNING {
        return;
    }
    match outcome {
        Ok(()) => set(state, SUCCEEDED, "Execute", String::new(), now),
        Err(why) => {
            if state.message.as_deref() != Some(why.as_str()) {
                state.reason = Some("Wait".to_string());
                state.message = Some(why);
            }
        }
    }
}

/// When the reconcile should look again without an event: the next duration or timeout to pass,
/// or soon while apply steps run; `None` while the run only waits for a resume (which is a change
/// of the Application, and so an event) or has finished.
pub fn next_check(wf: &Workflow, status: &WorkflowStatus, now: Timestamp) -> Option<Duration> {
    if status.finished {
        return None;
    }
    let phases = Phases(&status.steps);
    let mut next: Option<Duration> = None;
    let mut consider = |d: Duration| next = Some(next.map_or(d, |n| n.min(d)));
    for step in wf.all_steps() {
        let Some(state) = phases.find(&step.name) else {
            continue;
        };
        let first = parse_time(state.first_execute_time.as_deref()).unwrap_or(now);
        let elapsed = now.duration_since(first).unsigned_abs();
        let remaining = |d: Duration| d.saturating_sub(elapsed) + Duration::from_secs(1);
        match state.phase.as_str() {
            SUSPENDING => {
                if let StepKind::Suspend { duration: Some(d) } = step.kind {
                    consider(remaining(d));
                }
                if let Some(t) = step.timeout {
                    consider(remaining(t));
                }
            }
            RUNNING => {
                if step.kind.applies() {
                    consider(RUNNING_RECHECK);
                }
                if let Some(t) = step.timeout {
                    consider(remaining(t));
                }
            }
            _ => {}
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::workflow::parse;
    use serde_json::json;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn phases(status: &WorkflowStatus) -> Vec<(String, String)> {
        let mut out = Vec::new();
        walk_all(&status.steps, &mut |s| {
            out.push((s.name.clone(), s.phase.clone()))
        });
        out
    }

    fn phase(status: &WorkflowStatus, name: &str) -> String {
        Phases(&status.steps).phase_of(name).unwrap().to_string()
    }

    fn gate() -> Workflow {
        parse(Some(&json!({"steps": [
            {"name": "staging", "type": "deploy", "properties": {"policies": ["staging"]}},
            {"name": "approve", "type": "suspend"},
            {"name": "production", "type": "deploy", "properties": {"policies": ["production"]}}
        ]})))
        .unwrap()
        .unwrap()
    }

    #[test]
    fn an_approval_gate_holds_production_until_resumed() {
        let wf = gate();
        let mut s = begin(&wf, None, "app-v1", t(0));
        assert!(schedule(&wf, &mut s, t(0)));
        assert_eq!(applying(&wf, &s), BTreeSet::from(["staging"]));
        settle_apply(&mut s, "staging", Err("1/2 ready".into()), t(1));
        assert_eq!(phase(&s, "staging"), RUNNING);
        settle_apply(&mut s, "staging", Ok(()), t(2));
        schedule(&wf, &mut s, t(2));
        assert_eq!(phase(&s, "approve"), SUSPENDING);
        assert!(s.suspend);
        assert_eq!(s.status.as_deref(), Some(RUN_SUSPENDING));
        // Time alone never passes a gate without a duration.
        assert!(!schedule(&wf, &mut s, t(100_000)));
        assert_eq!(applying(&wf, &s), BTreeSet::from(["staging"]));
        assert_eq!(next_check(&wf, &s, t(100_000)), None);
        // A restarted operator reads the same status and stays suspended.
        let mut again = begin(&wf, Some(&s), "app-v1", t(100_001));
        schedule(&wf, &mut again, t(100_001));
        assert_eq!(again, s);
        // Resume.
        s.suspend = false;
        schedule(&wf, &mut s, t(100_002));
        assert_eq!(phase(&s, "approve"), SUCCEEDED);
        assert_eq!(phase(&s, "production"), RUNNING);
        assert!(!s.suspend);
        assert_eq!(applying(&wf, &s), BTreeSet::from(["staging", "production"]));
        settle_apply(&mut s, "production", Ok(()), t(100_003));
        schedule(&wf, &mut s, t(100_003));
        assert!(s.finished);
        assert_eq!(s.status.as_deref(), Some(RUN_SUCCEEDED));
    }

    #[test]
    fn a_new_revision_starts_a_new_run() {
        let wf = gate();
        let mut s = begin(&wf, None, "app-v1", t(0));
        schedule(&wf, &mut s, t(0));
        settle_apply(&mut s, "staging", Ok(()), t(1));
        schedule(&wf, &mut s, t(1));
        let next = begin(&wf, Some(&s), "app-v2", t(5));
        assert_eq!(next.app_revision.as_deref(), Some("app-v2"));
        assert!(phases(&next).iter().all(|(_, p)| p == PENDING));
    }

    #[test]
    fn suspend_duration_and_timeouts() {
        let wf = parse(Some(&json!({"steps": [
            {"name": "wait", "type": "suspend", "properties": {"duration": "30s"}},
            {"name": "gate", "type": "suspend", "timeout": "1m"},
            {"name": "after", "type": "deploy"},
            {"name": "cleanup", "type": "deploy", "if": "status.gate.timeout"}
        ]})))
        .unwrap()
        .unwrap();
        let mut s = begin(&wf, None, "r", t(0));
        schedule(&wf, &mut s, t(0));
        assert_eq!(phase(&s, "wait"), SUSPENDING);
        assert_eq!(next_check(&wf, &s, t(10)), Some(Duration::from_secs(21)));
        schedule(&wf, &mut s, t(29));
        assert_eq!(phase(&s, "wait"), SUSPENDING);
        schedule(&wf, &mut s, t(30));
        assert_eq!(phase(&s, "wait"), SUCCEEDED);
        assert_eq!(phase(&s, "gate"), SUSPENDING);
        schedule(&wf, &mut s, t(91));
        assert_eq!(phase(&s, "gate"), FAILED);
        assert_eq!(phase(&s, "after"), SKIPPED);
        assert_eq!(
            phase(&s, "cleanup"),
            RUNNING,
            "if: status.gate.timeout runs it"
        );
        settle_apply(&mut s, "cleanup", Ok(()), t(92));
        schedule(&wf, &mut s, t(92));
        assert!(s.finished);
        assert_eq!(s.status.as_deref(), Some(RUN_FAILED));
    }

    #[test]
    fn dag_and_step_groups() {
        let wf = parse(Some(&json!({"mode": {"steps": "DAG"}, "steps": [
            {"name": "db", "type": "apply-component", "properties": {"component": "db"}},
            {"name": "cache", "type": "apply-component", "properties": {"component": "cache"}},
            {"name": "web", "type": "step-group", "dependsOn": ["db", "cache"], "subSteps": [
                {"name": "api", "type": "apply-component", "properties": {"component": "api"}},
                {"name": "ui", "type": "apply-component", "properties": {"component": "ui"}, "dependsOn": ["api"]}
            ]}
        ]})))
        .unwrap()
        .unwrap();
        let mut s = begin(&wf, None, "r", t(0));
        schedule(&wf, &mut s, t(0));
        assert_eq!(applying(&wf, &s), BTreeSet::from(["db", "cache"]));
        settle_apply(&mut s, "db", Ok(()), t(1));
        schedule(&wf, &mut s, t(1));
        assert_eq!(phase(&s, "web"), PENDING);
        settle_apply(&mut s, "cache", Ok(()), t(2));
        schedule(&wf, &mut s, t(2));
        assert_eq!(phase(&s, "web"), RUNNING);
        assert_eq!(running_apply_steps(&wf, &s), vec!["api"]);
        settle_apply(&mut s, "api", Ok(()), t(3));
        schedule(&wf, &mut s, t(3));
        assert_eq!(running_apply_steps(&wf, &s), vec!["ui"]);
        settle_apply(&mut s, "ui", Ok(()), t(4));
        schedule(&wf, &mut s, t(4));
        assert_eq!(phase(&s, "web"), SUCCEEDED);
        assert!(s.finished);
    }

    #[test]
    fn a_deploy_that_never_gets_healthy_times_out() {
        let wf = parse(Some(&json!({"steps": [
            {"name": "d", "type": "deploy", "timeout": "5m"},
            {"name": "notify", "type": "suspend", "if": "always", "properties": {"duration": "1s"}}
        ]})))
        .unwrap()
        .unwrap();
        let mut s = begin(&wf, None, "r", t(0));
        schedule(&wf, &mut s, t(0));
        settle_apply(&mut s, "d", Err("0/1 ready".into()), t(10));
        schedule(&wf, &mut s, t(299));
        assert_eq!(phase(&s, "d"), RUNNING);
        schedule(&wf, &mut s, t(300));
        assert_eq!(phase(&s, "d"), FAILED);
        let d = Phases(&s.steps).find("d").unwrap().clone();
        assert_eq!(d.reason.as_deref(), Some("Timeout"));
        assert!(d.message.unwrap().contains("0/1 ready"));
        assert_eq!(
            phase(&s, "notify"),
            SUSPENDING,
            "if: always runs after a failure"
        );
    }

    #[test]
    fn an_edited_workflow_restarts_even_at_the_same_revision() {
        let wf = gate();
        let mut s = begin(&wf, None, "r", t(0));
        schedule(&wf, &mut s, t(0));
        let other = parse(Some(
            &json!({"steps": [{"name": "only", "type": "deploy"}]}),
        ))
        .unwrap()
        .unwrap();
        let next = begin(&other, Some(&s), "r", t(1));
        assert_eq!(next.steps.len(), 1);
        assert_eq!(next.steps[0].phase, PENDING);
    }
}
