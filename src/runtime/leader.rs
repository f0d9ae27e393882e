//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica keeps its watches warm and serves token exchange; only the leader writes through the
//! controllers' client. The gate sits in the client itself (`WriteGate`): the moment this replica is not
//! the leader, every non-GET request of the controllers fails before it leaves the process, so a replica
//! that lost its lease cannot finish a write it had started.
//!
//! Invariant: the gate is open only until the lease this replica last renewed stops being valid
//! (counted from when the renewal was sent, less a margin for clock skew). It closes by itself at that
//! instant, whatever the election loop is doing: waiting on an API server that stopped answering, or
//! the whole process frozen (SIGSTOP, a stalled VM) while another replica took the lease.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Timings of the election (client-go's defaults scaled down: a handover within ~15 s).
#[derive(Clone, Debug)]
pub struct Timings {
    pub lease_duration: Duration,
    pub renew_every: Duration,
    pub retry_every: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// Whether this replica may write. Cheap to clone and to read on every request.
#[derive(Clone, Default)]
pub struct WriteGate(Arc<AtomicU64>);

/// The clock of gate deadlines: monotonic, and it keeps running while the process is stopped.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A deadline as nanoseconds since `epoch()`; 0 is closed, `u64::MAX` open for good.
fn nanos(at: Instant) -> u64 {
    let since = at.saturating_duration_since(epoch()).as_nanos();
    u64::try_from(since).unwrap_or(u64::MAX - 1).max(1)
}

impl WriteGate {
    pub fn is_open(&self) -> bool {
        let until = self.0.load(Ordering::Acquire);
        until == u64::MAX || nanos(Instant::now()) < until
    }
    /// Open for good, or closed: a single replica without election, and tests.
    pub fn set_open(&self, open: bool) {
        self.0
            .store(if open { u64::MAX } else { 0 }, Ordering::Release)
    }
    /// Open until `until` (the end of the lease this replica holds), closed from then on.
    pub fn open_until(&self, until: Instant) {
        self.0.store(nanos(until), Ordering::Release)
    }
    /// A gate that is always open (a single replica without election).
    pub fn always_open() -> Self {
        let g = WriteGate::default();
        g.set_open(true);
        g
    }
}

/// The error a gated client returns for a write while not leading.
#[derive(Debug, thiserror::Error)]
#[error("this replica is not the leader: writes are disabled")]
pub struct NotLeader;

/// Runs the election loop forever, opening and closing `gate` and announcing changes on `changes`.
pub struct Elector {
    leases: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    gate: WriteGate,
    changes: watch::Sender<bool>,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: Timings,
        gate: WriteGate,
    ) -> (Self, watch::Receiver<bool>) {
        let (changes, rx) = watch::channel(false);
        let elector = Elector {
            leases: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timings,
            gate,
            changes,
        };
        (elector, rx)
    }

    /// Runs until `stop` resolves; then steps down and releases the lease so another replica takes over
    /// at once instead of after the lease duration.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let t = &self.timings;
        // Until when the lease last renewed lets this replica write: from when that renewal was sent
        // (its renewTime is no earlier), less a margin so we stop before anyone else may start.
        let mut valid_until: Option<Instant> = None;
        let valid = |until: Option<Instant>| until.is_some_and(|v| Instant::now() < v);
        let mut leading = false;
        loop {
            // The lease may have run out while we slept: step down before a request that may hang.
            if leading && !valid(valid_until) {
                leading = false;
                self.announce(false);
            }
            let sent = Instant::now();
            // Bounded: an API server that accepts connections but answers nothing (paused,
            // overloaded) must not hold the loop past the lease.
            let attempt = tokio::time::timeout(t.renew_every, self.try_acquire_or_renew());
            tokio::pin!(attempt);
            let outcome = match valid_until.filter(|_| leading) {
                Some(until) => tokio::select! {
                    outcome = &mut attempt => outcome,
                    _ = tokio::time::sleep_until(until.into()) => {
                        // The lease ran out while we waited on the API server: say so now.
                        leading = false;
                        self.announce(false);
                        attempt.await
                    }
                },
                None => attempt.await,
            };
            let renewed = match outcome {
                Ok(Ok(renewed)) => renewed,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.name, "lease request failed");
                    false
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, timeout = ?t.renew_every, "lease request timed out");
                    false
                }
            };
            if renewed {
                valid_until = Some(sent + t.lease_duration.saturating_sub(t.renew_every));
            }
            // Leading while the lease we hold is valid: renewed now, or earlier and not run out yet
            // (a renewal that took too long may be valid no more).
            let now_leading = (renewed || leading) && valid(valid_until);
            match (now_leading, valid_until) {
                (true, Some(until)) => {
                    // The gate closes by itself when the lease runs out. A renewal answered after
                    // that instant (a slow API server, a starved process) reopens it, and any
                    // reconcile that found it closed in between let its trigger go (it expects the
                    // next leader to reconcile everything). So a lapse is a step-down and the
                    // reopening a new leadership, announced as such.
                    if leading && !self.gate.is_open() {
                        leading = false;
                        self.announce(false);
                    }
                    // Logged before the gate opens and announced after, so every write falls
                    // inside the logged leadership and a reconcile the announcement starts may write.
                    if !leading {
                        self.log_leading(true);
                    }
                    self.gate.open_until(until);
                    if !leading {
                        leading = true;
                        let _ = self.changes.send(true);
                    }
                }
                _ => {
                    self.gate.set_open(false);
                    if leading {
                        leading = false;
                        self.announce(false);
                    }
                }
            }
            let mut wait = if renewed {
                t.renew_every
            } else {
                t.retry_every
            };
            if let (true, Some(until)) = (leading, valid_until) {
                // Renew halfway through what is left of the lease when that is sooner: after a
                // renewal answered late, the next one goes out before the lease runs out instead of
                // at that instant (a step-down and a new leadership each time). Stepping down on
                // time is the select's above, whatever the renewal does.
                wait = wait.min(until.saturating_duration_since(Instant::now()) / 2);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stop => break,
            }
        }
        let was_leading = leading && self.gate.is_open();
        self.gate.set_open(false);
        if leading {
            self.announce(false);
        }
        if was_leading && let Err(e) = self.release().await {
            tracing::warn!(error = %e, "releasing the lease failed; another replica takes over when it expires");
        }
    }

    fn log_leading(&self, leading: bool) {
        tracing::info!(identity = %self.identity, lease = %self.name, leading, "leadership changed");
    }

    /// Logs and announces a change (a step-down: the gate is closed already).
    fn announce(&self, leading: bool) {
        self.log_leading(leading);
        let _ = self.changes.send(leading);
    }

    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let duration_secs = self.timings.lease_duration.as_secs() as i32;
        let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(secs)) => renewed.0 + SignedDuration::from_secs(secs as i64) < now,
            _ => true,
        };
        if holder != self.identity && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != self.identity);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: if holder == self.identity {
                spec.acquire_time
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..spec
        });
        // `replace` carries the resourceVersion we read: a concurrent taker gets 409, never both.
        match self
            .leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::UNIX_EPOCH));
        lease.spec = Some(spec);
        self.leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::mock_api::{self, Reply};
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    /// The API server's answer for a Lease that does not exist yet.
    const NOT_FOUND: &str =
        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#;

    #[test]
    fn a_gate_opened_until_a_deadline_closes_by_itself() {
        let gate = WriteGate::default();
        assert!(!gate.is_open());
        gate.open_until(Instant::now() + Duration::from_secs(60));
        assert!(gate.is_open());
        gate.open_until(Instant::now() - Duration::from_millis(1));
        assert!(!gate.is_open(), "a lease that ran out lets nobody write");
        gate.set_open(true);
        assert!(gate.is_open());
        gate.set_open(false);
        assert!(!gate.is_open());
    }

    /// An API server that creates the Lease, then accepts every request and answers none (SIGSTOP).
    fn answers_once_then_hangs() -> Client {
        let calls = AtomicUsize::new(0);
        mock_api::client(move |_| match calls.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::Json(404, NOT_FOUND),
            1 => Reply::Json(
                201,
                r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"l","namespace":"default"}}"#,
            ),
            _ => Reply::Hang,
        })
    }

    /// An API server that grants the Lease, then answers the first renewal only after the lease
    /// it renews ran out (the answer is held `stall` with the process's one thread blocked, as a
    /// starved process would be), then answers at once again.
    fn first_renewal_answered_late(stall: Duration) -> Client {
        const LEASE: &str = r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"l","namespace":"default","resourceVersion":"1"},"spec":{"holderIdentity":"me"}}"#;
        let created = AtomicBool::new(false);
        let stalled = AtomicBool::new(false);
        mock_api::client(move |req| match req.method().as_str() {
            "GET" if !created.load(Ordering::SeqCst) => Reply::Json(404, NOT_FOUND),
            "POST" => {
                created.store(true, Ordering::SeqCst);
                Reply::Json(201, LEASE)
            }
            "PUT" if !stalled.swap(true, Ordering::SeqCst) => {
                std::thread::sleep(stall);
                Reply::Json(200, LEASE)
            }
            _ => Reply::Json(200, LEASE),
        })
    }

    #[tokio::test]
    async fn a_renewal_answered_after_the_lease_ran_out_is_announced_as_a_new_leadership() {
        // Valid for 600 ms after each renewal is sent; the first renewal goes out at ~300 ms and
        // its answer comes at ~750 ms, after the first lease ran out (600 ms), within the second.
        let timings = Timings {
            lease_duration: Duration::from_millis(900),
            renew_every: Duration::from_millis(300),
            retry_every: Duration::from_millis(100),
        };
        let gate = WriteGate::default();
        let (elector, mut changes) = Elector::new(
            first_renewal_answered_late(Duration::from_millis(450)),
            "default",
            "l",
            "me",
            timings,
            gate.clone(),
        );
        let gained = Arc::new(AtomicUsize::new(0));
        let watcher = {
            let gained = gained.clone();
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    if *changes.borrow_and_update() {
                        gained.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        let task = tokio::spawn(elector.run(std::future::pending()));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(gate.is_open(), "the late renewal still holds the lease");
        // The controllers reconcile everything on each gained leadership: the triggers a closed
        // gate turned away in between are not lost.
        assert_eq!(
            gained.load(Ordering::SeqCst),
            2,
            "the first leadership, and the one after the lapse"
        );
        task.abort();
        watcher.abort();
    }

    #[tokio::test]
    async fn a_leader_stops_writing_when_its_lease_runs_out_though_its_api_server_hangs() {
        let timings = Timings {
            lease_duration: Duration::from_millis(900),
            renew_every: Duration::from_millis(300),
            retry_every: Duration::from_millis(100),
        };
        let gate = WriteGate::default();
        let (elector, changes) = Elector::new(
            answers_once_then_hangs(),
            "default",
            "l",
            "me",
            timings.clone(),
            gate.clone(),
        );
        let started = Instant::now();
        let task = tokio::spawn(elector.run(std::future::pending()));
        while !gate.is_open() {
            assert!(started.elapsed() < Duration::from_secs(2), "never led");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Every renewal hangs from here on. The lease was renewed no earlier than `started`.
        while gate.is_open() {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "still writing 3 s after the last renewal of a 900 ms lease"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let closed = started.elapsed();
        let valid = timings.lease_duration - timings.renew_every;
        assert!(
            closed <= valid + Duration::from_millis(50),
            "writes stopped {closed:?} after the renewal, the lease being valid for {valid:?}"
        );
        // And it says so, without waiting for the hanging request.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!*changes.borrow(), "leadership announced lost");
        task.abort();
    }
}
