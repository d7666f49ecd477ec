//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`.
//!
//! A candidate reads the Lease and, if it is free, expired or already its own, writes itself as
//! holder with the read resourceVersion as precondition, so of two racing candidates one gets a
//! `Conflict` and loses. The holder renews every `retry_period`.
//!
//! Guarantees, all judged by the injected monotonic clock (never by wall time, so clock skew
//! between machines and wall-clock jumps do not matter):
//! - a holder considers itself leader only while `now < last_renew + renew_deadline`, where
//!   `last_renew` is when its last successful renew *started*; if it cannot renew it steps down
//!   at that deadline, even while a request hangs;
//! - another candidate takes over only once the Lease record has not changed for the record's
//!   `leaseDurationSeconds` as observed locally (observation starts when the candidate first
//!   sees the record, as client-go does); since `renew_deadline < lease_duration`, the old
//!   leader has stepped down before anyone else can take over;
//! - `leaseTransitions` is incremented whenever the holder changes;
//! - on clean shutdown the holder releases the Lease (empty `holderIdentity`, 1 s duration), so
//!   another candidate acquires it at its next attempt instead of waiting for expiry.
//!
//! Caveat: leadership is advisory. Work done "as leader" can overlap a successor's by the time a
//! write takes to land; writes that must not overlap need their own preconditions.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rudder_proto as pb;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::clock::SharedClock;
use crate::conn::{ClientError, kind_ref};

/// Where the Lease lives, who we are, and the timings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per process (e.g. hostname plus a random suffix).
    pub identity: String,
    /// How long others wait without a renewal before taking over.
    pub lease_duration: Duration,
    /// How long the holder keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// Interval between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaderConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election configuration: {0}")]
    Config(String),
}

/// The Lease's spec, as far as election cares.
#[derive(Debug, Clone, PartialEq, Default)]
struct Record {
    holder: String,
    duration_secs: i64,
    acquire_time: String,
    renew_time: String,
    transitions: i64,
}

impl Record {
    fn from_lease(v: &Value) -> Self {
        let spec = v.get("spec");
        let s = |f: &str| {
            spec.and_then(|s| s.get(f))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let n = |f: &str| {
            spec.and_then(|s| s.get(f))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        Record {
            holder: s("holderIdentity").into(),
            duration_secs: n("leaseDurationSeconds"),
            acquire_time: s("acquireTime").into(),
            renew_time: s("renewTime").into(),
            transitions: n("leaseTransitions"),
        }
    }

    fn spec(&self) -> Value {
        json!({
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_secs,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        })
    }
}

/// The last Lease we read or wrote, and when (locally) it last changed.
struct Observed {
    record: Record,
    lease: Value,
    resource_version: u64,
    changed_at: Instant,
}

/// Runs the election for one identity. See the module doc for the guarantees.
pub struct LeaderElector {
    api: Arc<dyn Api>,
    cfg: LeaderConfig,
    clock: SharedClock,
    leading: watch::Sender<bool>,
    observed: Option<Observed>,
}

/// Lease timestamps are MicroTime: RFC 3339 with microseconds.
fn micro_time(t: jiff::Timestamp) -> String {
    format!("{t:.6}")
}

enum Outcome {
    /// Renewed; keep leading.
    Renewed,
    /// Lost (someone else holds it) or the deadline passed.
    SteppedDown,
    /// Shutdown requested.
    Cancelled,
}

impl LeaderElector {
    pub fn new(
        api: Arc<dyn Api>,
        cfg: LeaderConfig,
        clock: SharedClock,
    ) -> Result<Self, LeaderError> {
        if cfg.identity.is_empty() || cfg.name.is_empty() {
            return Err(LeaderError::Config(
                "identity and lease name are required".into(),
            ));
        }
        if cfg.renew_deadline >= cfg.lease_duration {
            return Err(LeaderError::Config(
                "renew_deadline must be shorter than lease_duration".into(),
            ));
        }
        if cfg.retry_period.is_zero() || cfg.retry_period >= cfg.renew_deadline {
            return Err(LeaderError::Config(
                "retry_period must be positive and shorter than renew_deadline".into(),
            ));
        }
        let (leading, _) = watch::channel(false);
        Ok(LeaderElector {
            api,
            cfg,
            clock,
            leading,
            observed: None,
        })
    }

    /// "Am I leader", updated as leadership is gained and lost.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Campaigns, leads, and campaigns again after losing, until `cancel`; then releases the
    /// Lease if held.
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            let Some(mut last_renew) = self.campaign(&cancel).await else {
                return;
            };
            tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.name, "became leader");
            self.leading.send_replace(true);
            let outcome = loop {
                match self.renew_once(&cancel, last_renew).await {
                    (Outcome::Renewed, Some(at)) => last_renew = at,
                    (Outcome::Renewed, None) => {}
                    (other, _) => break other,
                }
            };
            self.leading.send_replace(false);
            if let Outcome::Cancelled = outcome {
                self.release().await;
                return;
            }
            tracing::warn!(identity = %self.cfg.identity, lease = %self.cfg.name, "stopped leading");
        }
    }

    /// Tries until acquired; returns when the acquiring attempt started, or `None` on cancel.
    async fn campaign(&mut self, cancel: &CancellationToken) -> Option<Instant> {
        loop {
            let started = self.clock.instant();
            match self.try_acquire_or_renew().await {
                Ok(true) => return Some(started),
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "could not acquire the lease"),
            }
            // client-go's jitter: up to 20% more, so candidates spread out.
            let wait = self
                .cfg
                .retry_period
                .mul_f64(1.0 + 0.2 * self.clock.random());
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Waits for the next renewal time and renews; returns the start of a successful renewal.
    async fn renew_once(
        &mut self,
        cancel: &CancellationToken,
        last_renew: Instant,
    ) -> (Outcome, Option<Instant>) {
        let deadline = last_renew + self.cfg.renew_deadline;
        let wake = (self.clock.instant() + self.cfg.retry_period).min(deadline);
        tokio::select! {
            _ = cancel.cancelled() => return (Outcome::Cancelled, None),
            _ = tokio::time::sleep_until(wake) => {}
        }
        let started = self.clock.instant();
        if started >= deadline {
            return (Outcome::SteppedDown, None);
        }
        let attempt = tokio::time::timeout_at(deadline, self.try_acquire_or_renew());
        let result = tokio::select! {
            _ = cancel.cancelled() => return (Outcome::Cancelled, None),
            r = attempt => r,
        };
        match result {
            Ok(Ok(true)) => (Outcome::Renewed, Some(started)),
            Ok(Ok(false)) => (Outcome::SteppedDown, None),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "failed to renew the lease; retrying until the deadline");
                (Outcome::Renewed, None)
            }
            Err(_) => (Outcome::SteppedDown, None),
        }
    }

    fn lease_kind() -> pb::KindRef {
        kind_ref("coordination.k8s.io/v1", "Lease")
    }

    fn my_record(&self, previous: Option<&Record>) -> Record {
        let now = micro_time(self.clock.now());
        let duration_secs = self.cfg.lease_duration.as_secs().max(1) as i64;
        match previous {
            Some(p) if p.holder == self.cfg.identity => Record {
                renew_time: now,
                duration_secs,
                ..p.clone()
            },
            p => Record {
                holder: self.cfg.identity.clone(),
                duration_secs,
                acquire_time: now.clone(),
                renew_time: now,
                transitions: p.map_or(0, |p| p.transitions + 1),
            },
        }
    }

    fn observe(&mut self, lease: Value, resource_version: u64) {
        let record = Record::from_lease(&lease);
        let unchanged = self
            .observed
            .as_ref()
            .is_some_and(|o| o.record == record && o.resource_version == resource_version);
        if !unchanged {
            self.observed = Some(Observed {
                record,
                lease,
                resource_version,
                changed_at: self.clock.instant(),
            });
        }
    }

    /// One attempt: `Ok(true)` when we hold the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, ClientError> {
        let get = pb::GetRequest {
            kind: Some(Self::lease_kind()),
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
        };
        let current = match self.api.get(get).await {
            Ok(obj) => obj,
            Err(ClientError::NotFound(_)) => return self.create_lease().await,
            Err(e) => return Err(e),
        };
        let lease = crate::api::decode_json(&current)?;
        self.observe(lease, current.resource_version);
        let Some(obs) = &self.observed else {
            return Ok(false);
        };
        let held_by_other = !obs.record.holder.is_empty() && obs.record.holder != self.cfg.identity;
        let duration = match obs.record.duration_secs {
            d if d > 0 => Duration::from_secs(d as u64),
            _ => self.cfg.lease_duration,
        };
        if held_by_other && self.clock.instant() < obs.changed_at + duration {
            return Ok(false);
        }
        let record = self.my_record(Some(&obs.record));
        let mut lease = obs.lease.clone();
        lease["spec"] = record.spec();
        lease["metadata"]["resourceVersion"] = Value::String(obs.resource_version.to_string());
        self.write_lease(lease, false).await
    }

    async fn create_lease(&mut self) -> Result<bool, ClientError> {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.cfg.name, "namespace": self.cfg.namespace},
            "spec": self.my_record(None).spec(),
        });
        self.write_lease(lease, true).await
    }

    /// Creates or updates (with the resourceVersion precondition in `lease`); a lost race is
    /// `Ok(false)`.
    async fn write_lease(&mut self, lease: Value, create: bool) -> Result<bool, ClientError> {
        let json = serde_json::to_vec(&lease)
            .map_err(|e| ClientError::Invalid(format!("unencodable lease: {e}")))?
            .into();
        let (kind, namespace) = (Some(Self::lease_kind()), self.cfg.namespace.clone());
        let result = if create {
            let req = pb::CreateRequest {
                kind,
                namespace,
                json,
                options: None,
            };
            self.api.create(req).await
        } else {
            let req = pb::UpdateRequest {
                kind,
                namespace,
                json,
                options: None,
            };
            self.api.update(req).await
        };
        match result {
            Ok(obj) => {
                let stored = crate::api::decode_json(&obj)?;
                self.observe(stored, obj.resource_version);
                Ok(true)
            }
            Err(ClientError::Conflict(_) | ClientError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up so that others need not wait for it to expire.
    ///
    /// A renew cut short by shutdown may have landed without our seeing its new version, so a
    /// conflict re-reads the Lease and tries again while it is still ours.
    async fn release(&mut self) {
        for _ in 0..3 {
            match self.release_once().await {
                Ok(true) => {
                    tracing::info!(identity = %self.cfg.identity, "released the lease");
                    return;
                }
                Ok(false) => {
                    let get = pb::GetRequest {
                        kind: Some(Self::lease_kind()),
                        namespace: self.cfg.namespace.clone(),
                        name: self.cfg.name.clone(),
                    };
                    match self.api.get(get).await {
                        Ok(obj) => match crate::api::decode_json(&obj) {
                            Ok(lease) => self.observe(lease, obj.resource_version),
                            Err(e) => {
                                tracing::warn!(error = %e, "could not read the lease to release it");
                                return;
                            }
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "could not read the lease to release it");
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not release the lease");
                    return;
                }
            }
        }
        tracing::info!("lease changed hands before release");
    }

    /// One release attempt: `Ok(false)` on a lost race, `Ok(true)` when released or not ours.
    async fn release_once(&mut self) -> Result<bool, ClientError> {
        let Some(obs) = &self.observed else {
            return Ok(true);
        };
        if obs.record.holder != self.cfg.identity {
            return Ok(true);
        }
        let now = micro_time(self.clock.now());
        let record = Record {
            holder: String::new(),
            duration_secs: 1,
            acquire_time: now.clone(),
            renew_time: now,
            transitions: obs.record.transitions,
        };
        let mut lease = obs.lease.clone();
        lease["spec"] = record.spec();
        lease["metadata"]["resourceVersion"] = Value::String(obs.resource_version.to_string());
        self.write_lease(lease, false).await
    }
}

/// Waits until `leading` is true, then runs `fut` until it completes (`Some`) or leadership is
/// lost or the elector is gone (`None`, and `fut` is dropped).
pub async fn while_leading<F: Future>(
    mut leading: watch::Receiver<bool>,
    fut: F,
) -> Option<F::Output> {
    leading.wait_for(|l| *l).await.ok()?;
    tokio::select! {
        out = fut => Some(out),
        _ = leading.wait_for(|l| !*l) => None,
    }
}
