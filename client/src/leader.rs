//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`.
//!
//! A candidate reads the Lease and, if it is free, expired or already its own, writes itself as
//! holder with the read resourceVersion as precondition, so of two racing candidates one gets a
//! `Conflict` and loses. The holder renews every `retry_period`.
//! [`LeaderElector::run_while_leading`] runs guarded work for each term of leadership, with a
//! token cancelled when the term ends, and waits for the work to return before it touches the
//! Lease again.
//!
//! Guarantees, all judged by the injected monotonic clock (never by wall time, so clock skew
//! between machines and wall-clock jumps do not matter):
//! - every API call is bounded: a campaign attempt (read plus write) by `retry_period`, a
//!   renewal and a release by the end of the term's validity (`last_renew + renew_deadline`,
//!   below), after which the elector no longer touches the Lease for that term. An abandoned
//!   attempt's reply is dropped with it, so only the attempt the elector is waiting on can make
//!   it leader; a write it made may still land, and the next attempt reads the Lease afresh;
//! - a holder considers itself leader only while `now < last_renew + renew_deadline`, where
//!   `last_renew` is when its last successful attempt *started*; if it cannot renew it steps down
//!   at that deadline, even while a request hangs, and cancels the term's work;
//! - another candidate takes over only once the Lease record has not changed for the record's
//!   `leaseDurationSeconds` as observed locally (observation starts when the candidate first
//!   sees the record, as client-go does); since `renew_deadline < lease_duration`, the old
//!   leader has stepped down before anyone else can take over;
//! - after losing the Lease the elector never renews or releases it on behalf of that term's
//!   work; once the work has returned it forgets what it observed and treats a record naming
//!   itself like anyone else's (taken again only when released or expired as newly observed),
//!   so a holder that recovers does not flip back into leading ahead of a waiting challenger;
//! - on shutdown the holder cancels the work, keeps renewing until the work has returned, and
//!   only then releases the Lease (empty `holderIdentity`, 1 s duration): the successor, which
//!   acquires it at its next attempt, starts after the old leader's last write, not during it;
//! - work that returns by itself while leading ends the run, and the Lease is released;
//! - `leaseTransitions` is incremented whenever the holder changes.
//!
//! Caveats: leadership is advisory. Work told to stop at a step-down has
//! `lease_duration - renew_deadline` (5 s by default) before a successor can start; work slower
//! to stop keeps running unguarded while the Lease simply expires, and can overlap the
//! successor's. Writes that must never overlap need their own preconditions. A shutdown waits
//! for the work however long it takes; to bound it, drop the `run_while_leading` future (that
//! drops the work too, and the Lease expires instead of being released).

use std::future::Future;
use std::pin::pin;
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
    /// A term ended by loss: a record naming us is that term's, waited out like anyone else's.
    lost_term: bool,
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

/// How a term of leadership ended.
enum TermEnd {
    /// The guarded work returned by itself.
    WorkDone,
    Lost,
    Shutdown,
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
            lost_term: false,
        })
    }

    /// "Am I leader": true from acquiring the Lease until the term ends (on loss at the
    /// step-down; on shutdown once the work has returned, just before the release). Sent only
    /// on change.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Campaigns, leads, and campaigns again after losing, until `cancel`; then releases the
    /// Lease if held. Work gated on [`Self::subscribe`] (or [`while_leading`]) runs in other
    /// tasks, so the release does not wait for it: use [`Self::run_while_leading`] for that.
    pub async fn run(self, cancel: CancellationToken) {
        self.run_while_leading(cancel, |term| async move { term.cancelled().await })
            .await;
    }

    /// Campaigns, and for each term of leadership runs `guarded(term)`, where `term` is
    /// cancelled when the term ends (loss or `cancel`). Returns once `cancel` fired and the
    /// work has returned (the Lease released if still held), or once the work returned by
    /// itself while leading (the Lease released). After a loss it waits for the work to return,
    /// then campaigns again. The work is polled inside this future: dropping it drops the work.
    pub async fn run_while_leading<F, Fut>(mut self, cancel: CancellationToken, mut guarded: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        while let Some(acquired) = self.campaign(&cancel).await {
            tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.name, "became leader");
            self.leading
                .send_if_modified(|l| !std::mem::replace(l, true));
            let term = cancel.child_token();
            let work = guarded(term.clone());
            if self.lead(&cancel, &term, acquired, work).await {
                return;
            }
        }
    }

    /// One term, from acquisition; returns whether the run is over (false: campaign again).
    async fn lead<W: Future<Output = ()>>(
        &mut self,
        cancel: &CancellationToken,
        term: &CancellationToken,
        mut last_renew: Instant,
        work: W,
    ) -> bool {
        let mut work = pin!(work);
        let end = loop {
            tokio::select! {
                () = &mut work => break TermEnd::WorkDone,
                r = self.renew_once(cancel, last_renew) => match r {
                    (Outcome::Renewed, at) => last_renew = at.unwrap_or(last_renew),
                    (Outcome::SteppedDown, _) => break TermEnd::Lost,
                    (Outcome::Cancelled, _) => break TermEnd::Shutdown,
                },
            }
        };
        match end {
            TermEnd::WorkDone => {
                term.cancel();
                self.stop_leading();
                self.release(last_renew + self.cfg.renew_deadline).await;
                true
            }
            TermEnd::Lost => {
                self.step_down();
                term.cancel();
                // Nothing is done for a lost term's work: no renewal, no release.
                work.await;
                cancel.is_cancelled()
            }
            TermEnd::Shutdown => {
                // `term` is a child of `cancel`, so the work has been told to stop. Keep the
                // Lease while it winds down, so no successor starts before its last write.
                let never = CancellationToken::new();
                let mut held = true;
                loop {
                    tokio::select! {
                        () = &mut work => break,
                        r = self.renew_once(&never, last_renew), if held => match r {
                            (Outcome::Renewed, at) => last_renew = at.unwrap_or(last_renew),
                            _ => {
                                self.step_down();
                                held = false;
                            }
                        },
                    }
                }
                if held {
                    self.stop_leading();
                    self.release(last_renew + self.cfg.renew_deadline).await;
                }
                true
            }
        }
    }

    fn stop_leading(&mut self) {
        self.leading
            .send_if_modified(|l| std::mem::replace(l, false));
    }

    /// Ends a term on loss.
    fn step_down(&mut self) {
        self.stop_leading();
        tracing::warn!(identity = %self.cfg.identity, lease = %self.cfg.name, "stopped leading");
        // Which of our last writes landed is unknown, and the old term's work may still run:
        // re-observe the Lease from scratch, and wait out a record naming us.
        self.observed = None;
        self.lost_term = true;
    }

    /// Tries until acquired; returns when the acquiring attempt started, or `None` on cancel.
    async fn campaign(&mut self, cancel: &CancellationToken) -> Option<Instant> {
        loop {
            let started = self.clock.instant();
            // Bounded, so a hung call cannot stall the campaign; a reply after the bound is
            // dropped with the attempt and cannot make us leader.
            let attempt = tokio::time::timeout_at(
                started + self.cfg.retry_period,
                self.try_acquire_or_renew(),
            );
            let result = tokio::select! {
                _ = cancel.cancelled() => return None,
                r = attempt => r,
            };
            match result {
                Ok(Ok(true)) => {
                    self.lost_term = false;
                    return Some(started);
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "could not acquire the lease"),
                Err(_) => tracing::debug!("acquiring the lease timed out"),
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

    fn get_request(&self) -> pb::GetRequest {
        pb::GetRequest {
            kind: Some(Self::lease_kind()),
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            allow_stale: false,
        }
    }

    /// Our record: a renewal of `previous` if it is our current term's, else a new term.
    fn my_record(&self, previous: Option<&Record>) -> Record {
        let now = micro_time(self.clock.now());
        let duration_secs = self.cfg.lease_duration.as_secs().max(1) as i64;
        match previous {
            Some(p) if p.holder == self.cfg.identity && !self.lost_term => Record {
                renew_time: now,
                duration_secs,
                ..p.clone()
            },
            p => Record {
                holder: self.cfg.identity.clone(),
                duration_secs,
                acquire_time: now.clone(),
                renew_time: now,
                transitions: p.map_or(0, |p| {
                    p.transitions + i64::from(p.holder != self.cfg.identity)
                }),
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
        let current = match self.api.get(self.get_request()).await {
            Ok(obj) => obj,
            Err(ClientError::NotFound(_)) => return self.create_lease().await,
            Err(e) => return Err(e),
        };
        let lease = crate::api::decode_json(&current)?;
        self.observe(lease, current.resource_version);
        let Some(obs) = &self.observed else {
            return Ok(false);
        };
        // A record naming us from a term we lost counts as someone else's.
        let held_by_other = !obs.record.holder.is_empty()
            && (obs.record.holder != self.cfg.identity || self.lost_term);
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

    /// Gives the Lease up so that others need not wait for it to expire. Gives up at
    /// `deadline`, where our term's validity ends: past it the Lease is not ours to release.
    async fn release(&mut self, deadline: Instant) {
        let id = self.cfg.identity.clone();
        if self.clock.instant() >= deadline {
            tracing::info!(identity = %id, "term over before release; the lease expires");
            return;
        }
        match tokio::time::timeout_at(deadline, self.release_while_ours()).await {
            Ok(Ok(true)) => tracing::info!(identity = %id, "released the lease"),
            Ok(Ok(false)) => tracing::info!(identity = %id, "lease changed hands before release"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the lease"),
            Err(_) => tracing::warn!(identity = %id, "releasing the lease timed out; it expires"),
        }
    }

    /// A renew cut short by shutdown may have landed without our seeing its new version, so a
    /// conflict re-reads the Lease and tries again while it is still ours. `Ok(true)` once
    /// released, `Ok(false)` if it is not ours (any more).
    async fn release_while_ours(&mut self) -> Result<bool, ClientError> {
        for _ in 0..3 {
            let Some(obs) = self
                .observed
                .as_ref()
                .filter(|o| o.record.holder == self.cfg.identity)
            else {
                return Ok(false);
            };
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
            if self.write_lease(lease, false).await? {
                return Ok(true);
            }
            let current = self.api.get(self.get_request()).await?;
            self.observe(crate::api::decode_json(&current)?, current.resource_version);
        }
        Ok(false)
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
