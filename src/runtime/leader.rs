//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica keeps its watches warm and serves token exchange; only the leader writes through the
//! controllers' client. The gate sits in the client itself (`WriteGate`): the moment this replica is not
//! the leader, every non-GET request of the controllers fails before it leaves the process, so a replica
//! that lost its lease cannot finish a write it had started.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
pub struct WriteGate(Arc<AtomicBool>);

impl WriteGate {
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
    /// The elector's switch; also how a single replica without election opens its gate.
    pub fn set_open(&self, open: bool) {
        self.0.store(open, Ordering::Release)
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
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            let leading = match self.try_acquire_or_renew().await {
                Ok(leading) => leading,
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "lease request failed");
                    false
                }
            };
            let now = tokio::time::Instant::now();
            if leading {
                last_renewal = Some(now);
            }
            // Keep leading through a failed renewal only while the lease we hold is still valid, with a
            // margin so we stop before anyone else may start.
            let margin = self.timings.renew_every;
            let still_valid = last_renewal
                .is_some_and(|t| now.duration_since(t) + margin < self.timings.lease_duration);
            self.set_leading(leading || (still_valid && self.gate.is_open()));
            let wait = if self.gate.is_open() {
                self.timings.renew_every
            } else {
                self.timings.retry_every
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stop => break,
            }
        }
        let was_leading = self.gate.is_open();
        self.set_leading(false);
        if was_leading && let Err(e) = self.release().await {
            tracing::warn!(error = %e, "releasing the lease failed; another replica takes over when it expires");
        }
    }

    fn set_leading(&self, leading: bool) {
        if self.gate.is_open() != leading {
            self.gate.set_open(leading);
            tracing::info!(identity = %self.identity, lease = %self.name, leading, "leadership changed");
            let _ = self.changes.send(leading);
        }
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
