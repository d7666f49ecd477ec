//! The Job controller (batch/v1), as Kubernetes' `job` controller: runs pods to completion.
//!
//! Each reconcile of a Job (`syncJob`):
//! 1. claims the pods its selector matches ([`spec`] explains the generated selector), finished
//!    ones included; a finished Job only has the tracking finalizer removed from its pods;
//! 2. counts: succeeded and failed pods (through finalizer-based tracking, [`track`]),
//!    `completedIndexes` and `failedIndexes` for an indexed Job;
//! 3. decides whether the Job is done: a `podFailurePolicy` FailJob rule, `backoffLimit`,
//!    `activeDeadlineSeconds`, `maxFailedIndexes` or failed indexes make it fail; a
//!    `successPolicy` or reaching `completions` make it succeed. It first gets the interim
//!    condition (FailureTarget, SuccessCriteriaMet), its active pods are deleted, and only once
//!    every pod is counted and none is terminating the final one (Failed, Complete) — as
//!    Kubernetes does since 1.31;
//! 4. otherwise, while its expectations are satisfied, creates or deletes pods ([`manage`]):
//!    the remaining completions up to `parallelism`, with the back-off (10 s doubling to 6 min)
//!    before replacing failed pods, per index with `backoffLimitPerIndex`; a suspended Job has
//!    no active pod (condition Suspended; `startTime` restarts on resume);
//! 5. writes the status, guarded by the Job's resourceVersion ([`status`]).
//!
//! Pod events reach the controlling Job; an orphan reaches every Job whose selector matches it.
//! Pods holding the tracking finalizer whose Job is gone have it removed (a second, small
//! controller over the same pod events). Until the cache has seen the controller's last status
//! write for a Job, the Job is not reconciled (a stale status could recount pods).
//! Events: SuccessfulCreate, FailedCreate, SuccessfulDelete, FailedDelete, Suspended, Resumed,
//! Completed, and for a failure its reason (BackoffLimitExceeded, DeadlineExceeded,
//! PodFailurePolicy, MaxFailedIndexesExceeded, FailedIndexes).

mod manage;
mod pods;
pub mod policy;
pub mod spec;
pub mod status;
mod track;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rudder_client::Api;
use rudder_client::cache::{CachedObject, INDEX_NAMESPACE, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::conn::kind_ref;
use rudder_client::controller::{Action, Controller, Mapper, controller_owner_key, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::expectations::Expectations;
use rudder_client::proto as pb;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::intervals::Intervals;
use crate::util::pods::{is_active, is_ready, phase};
use crate::util::rfc3339;
use manage::View;
use policy::{
    Action as RuleAction, completion_index, counts, int_annotation, is_failed, match_policy,
};
use spec::{JobSpec, deadline_left};
use status::{Cond, FAILURE_TARGET, SUCCESS_CRITERIA_MET, SUSPENDED, Status};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "job",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// The finalizer every pod of a Job carries until its end is counted.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
pub const INDEX_IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const LEGACY_CONTROLLER_UID: &str = "controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_JOB_NAME: &str = "job-name";

/// Most pods created or deleted in one reconcile (`MaxPodCreateDeletePerSync`).
pub const BURST: usize = 500;
/// Most pods recorded as uncounted at once (`MaxUncountedPods`).
pub const MAX_UNCOUNTED: usize = 500;

pub struct Ctx {
    api: Arc<dyn Api>,
    clock: SharedClock,
    events: EventRecorder,
    jobs: Reader,
    pods: Reader,
    exp: Arc<Expectations>,
    finalizers: Arc<pods::FinalizerRemovals>,
    /// The resourceVersion of each Job's last status write.
    written: Mutex<HashMap<Key, u64>>,
}

impl Ctx {
    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u64>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the status and remembers the version written.
    async fn write_status(
        &self,
        key: &str,
        job: &Arc<CachedObject>,
        st: &Status,
    ) -> Result<Arc<CachedObject>, Error> {
        let stored = status::write(self.api.as_ref(), job, st).await?;
        self.written()
            .insert(key.to_string(), stored.resource_version);
        Ok(stored)
    }
}

/// A Job's selector; unreadable ones select nothing.
fn selects(job: &CachedObject, pod: &CachedObject) -> bool {
    JobSpec::parse(job).is_ok_and(|s| !s.selector.is_empty() && s.selector.matches(&pod.labels()))
}

fn pod_mapper(jobs: Reader, exp: Arc<Expectations>, fins: Arc<pods::FinalizerRemovals>) -> Mapper {
    Box::new(move |ev| {
        exp.observe(ev, |o| controller_owner_key(o, &jobs, "batch/v1", "Job"));
        fins.observe(ev);
        if let ReflectorEvent::Restarted(_) = ev {
            return jobs.keys();
        }
        let mut keys = Vec::new();
        for o in ev.objects() {
            match o.controller_ref() {
                Some(_) => keys.extend(controller_owner_key(o, &jobs, "batch/v1", "Job")),
                None => keys.extend(
                    jobs.by_index(INDEX_NAMESPACE, &o.namespace)
                        .into_iter()
                        .filter(|j| selects(j, o))
                        .map(|j| j.key()),
                ),
            }
        }
        keys.sort();
        keys.dedup();
        keys
    })
}

/// Pods holding the tracking finalizer whose controlling Job is not in the cache.
fn orphan_mapper(jobs: Reader) -> Mapper {
    Box::new(move |ev| {
        ev.objects()
            .into_iter()
            .filter(|p| p.has_finalizer(TRACKING_FINALIZER))
            .filter(|p| controller_owner_key(p, &jobs, "batch/v1", "Job").is_none())
            .map(|p| p.key())
            .collect()
    })
}

async fn run(env: Env, cancel: CancellationToken) {
    let jobs = env.informers.for_kind("batch/v1", "Job");
    let pods = env.informers.for_kind("v1", "Pod");
    let (events, events_task) = env.recorder("job");
    let exp = Arc::new(Expectations::new(Arc::clone(&env.clock)));
    let fins = Arc::new(pods::FinalizerRemovals::default());
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        clock: Arc::clone(&env.clock),
        events,
        jobs: jobs.reader(),
        pods: pods.reader(),
        exp: Arc::clone(&exp),
        finalizers: Arc::clone(&fins),
        written: Mutex::new(HashMap::new()),
    });
    let main = Controller::new(Arc::clone(&ctx))
        .named("job")
        .workers(env.workers)
        .watches(jobs.subscribe(), self_mapper())
        .watches(pods.subscribe(), pod_mapper(jobs.reader(), exp, fins))
        .run(reconcile, policy, cancel.clone());
    let orphans = Controller::new(ctx)
        .named("job-orphan-pods")
        .workers(1)
        .watches(pods.subscribe(), orphan_mapper(jobs.reader()))
        .reads(jobs.reader())
        .run(reconcile_orphan, policy, cancel);
    tokio::join!(main, orphans);
    events_task.abort();
}

/// Removes the tracking finalizer from a pod whose Job is gone (checked against the server:
/// the cache may not have seen a new Job yet).
pub async fn reconcile_orphan(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(pod) = ctx.pods.get_key(&key) else {
        return Ok(Action::AwaitChange);
    };
    if !pod.has_finalizer(TRACKING_FINALIZER) {
        return Ok(Action::AwaitChange);
    }
    if let Some(r) = pod.controller_ref().filter(|r| r.kind == "Job") {
        let got = ctx
            .api
            .get(pb::GetRequest {
                kind: Some(kind_ref("batch/v1", "Job")),
                namespace: pod.namespace.clone(),
                name: r.name.clone(),
                allow_stale: false,
            })
            .await;
        match got {
            Ok(j) if CachedObject::from_wire(&j).is_some_and(|j| j.uid() == r.uid) => {
                return Ok(Action::AwaitChange);
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    pods::remove_finalizer(ctx.api.as_ref(), &pod).await?;
    Ok(Action::AwaitChange)
}

/// Deletes a Job (background propagation, guarded by its uid and, if given, its
/// resourceVersion), then its pods: Rudder has no garbage collector yet, so the deleter removes
/// the dependents itself, as the collector would after a background deletion. A Job already
/// gone is not an error.
pub async fn delete_with_pods(
    api: &dyn Api,
    pods: &Reader,
    job: &CachedObject,
    resource_version: Option<u64>,
) -> Result<(), rudder_client::ClientError> {
    let req = pb::DeleteRequest {
        kind: Some(kind_ref("batch/v1", "Job")),
        namespace: job.namespace.clone(),
        name: job.name.clone(),
        precondition_uid: job.uid().to_string(),
        precondition_resource_version: resource_version.unwrap_or(0),
        propagation_policy: "Background".into(),
        ..Default::default()
    };
    match api.delete(req).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    }
    for p in pods.owned_by(job.uid()) {
        if p.controller_ref().is_none_or(|r| r.uid != job.uid()) {
            continue;
        }
        if p.has_finalizer(TRACKING_FINALIZER) {
            pods::remove_finalizer(api, &p).await?;
        }
        let req = pb::DeleteRequest {
            kind: Some(kind_ref("v1", "Pod")),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            precondition_uid: p.uid().to_string(),
            ..Default::default()
        };
        match api.delete(req).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The interim condition of a failure.
fn failure(reason: &str, message: &str) -> Cond {
    Cond::new(FAILURE_TARGET, reason, message)
}

/// With `restartPolicy: OnFailure`, failures are container restarts: their sum over running
/// pods reaching `backoffLimit` fails the Job (`pastBackoffLimitOnFailure`).
fn past_backoff_on_failure(spec: &JobSpec, pods: &[Arc<CachedObject>]) -> bool {
    if !spec.restart_on_failure {
        return false;
    }
    let restarts: i64 = pods
        .iter()
        .filter(|p| matches!(phase(&p.value), "Running" | "Pending"))
        .flat_map(|p| {
            ["containerStatuses", "initContainerStatuses"]
                .into_iter()
                .flat_map(|l| {
                    p.value
                        .pointer(&format!("/status/{l}"))
                        .and_then(|v| v.as_array())
                        .cloned()
                        .unwrap_or_default()
                })
        })
        .filter_map(|c| c.get("restartCount").and_then(|n| n.as_i64()))
        .sum();
    if spec.backoff_limit == 0 {
        restarts > 0
    } else {
        restarts >= spec.backoff_limit
    }
}

/// The first FailJob message the pod failure policy gives for a failed pod.
fn fail_job_message(spec: &JobSpec, pods: &[Arc<CachedObject>]) -> Option<String> {
    let rules = spec.failure_rules.as_deref()?;
    pods.iter()
        .filter(|p| is_failed(&p.value, spec.replace_only_failed))
        .find_map(|p| match_policy(rules, &p.value).1)
}

/// Whether a tracked, failed pod fails its index (`isIndexFailed`): a FailIndex rule, or a
/// counted failure of an index that already failed `backoffLimitPerIndex` times.
fn index_failed(spec: &JobSpec, pod: &CachedObject) -> bool {
    if !is_failed(&pod.value, spec.replace_only_failed) {
        return false;
    }
    if let Some(rules) = spec.failure_rules.as_deref() {
        match match_policy(rules, &pod.value).0 {
            Some(RuleAction::FailIndex) => return true,
            Some(RuleAction::Ignore) => return false,
            _ => {}
        }
    }
    let limit = spec.backoff_limit_per_index.unwrap_or(0);
    int_annotation(&pod.value, INDEX_FAILURE_COUNT) >= limit
}

fn min_wait(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reconciles one Job by key. Public so tests can drive it without the runner.
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(job) = ctx.jobs.get_key(&key) else {
        ctx.exp.forget(&key);
        ctx.finalizers.forget(&key);
        ctx.written().remove(&key);
        return Ok(Action::AwaitChange);
    };
    if ctx
        .written()
        .get(&key)
        .is_some_and(|rv| job.resource_version < *rv)
    {
        // The watch brings our last write back and queues the Job again.
        return Ok(Action::Requeue(Duration::from_secs(1)));
    }
    let spec = JobSpec::parse(&job)?;
    let finished = status::finished(&job.value).is_some();
    let candidates = ctx.pods.by_index(INDEX_NAMESPACE, &job.namespace);
    let pods = pods::claim(
        ctx.api.as_ref(),
        &job,
        &spec.selector,
        candidates,
        !finished,
    )
    .await?;
    if finished {
        for p in pods.iter().filter(|p| p.has_finalizer(TRACKING_FINALIZER)) {
            pods::remove_finalizer(ctx.api.as_ref(), p).await?;
        }
        return Ok(Action::AwaitChange);
    }
    sync(&ctx, &key, job, &spec, &pods).await
}

async fn sync(
    ctx: &Ctx,
    key: &str,
    job: Arc<CachedObject>,
    spec: &JobSpec,
    pods: &[Arc<CachedObject>],
) -> Result<Action, Error> {
    let now = ctx.clock.now();
    let mut st = Status::read(&job.value);
    let satisfied = ctx.exp.satisfied(key);
    let pending_removal = ctx.finalizers.expected(key);
    let tracked: Vec<Arc<CachedObject>> = pods
        .iter()
        .filter(|p| p.has_finalizer(TRACKING_FINALIZER) && !pending_removal.contains(p.uid()))
        .cloned()
        .collect();
    let rules = spec.failure_rules.as_deref();
    let bound = spec.index_bound();
    let valid_index =
        |p: &CachedObject| !spec.indexed || completion_index(&p.value).is_some_and(|i| i < bound);
    let active: Vec<Arc<CachedObject>> = pods
        .iter()
        .filter(|p| is_active(&p.value))
        .cloned()
        .collect();
    let mut terminating = pods
        .iter()
        .filter(|p| p.is_deleting() && !matches!(phase(&p.value), "Succeeded" | "Failed"))
        .count() as i64;
    st.ready = active.iter().filter(|p| is_ready(&p.value)).count() as i64;
    if !spec.suspend && st.start_time.is_none() {
        st.start_time = Some(rfc3339(now));
    }

    // What has happened so far, counting pods not yet recorded.
    let new_failed = tracked
        .iter()
        .filter(|p| is_failed(&p.value, spec.replace_only_failed))
        .filter(|p| !st.uncounted_failed.contains(p.uid()) && valid_index(p))
        .filter(|p| counts(rules, &p.value))
        .count() as i64;
    let failed_total = st.failed + st.uncounted_failed.len() as i64 + new_failed;
    let newly_succeeded = tracked
        .iter()
        .filter(|p| phase(&p.value) == "Succeeded" && !st.uncounted_failed.contains(p.uid()));
    let succeeded_indexes = if spec.indexed {
        Intervals::parse(st.completed_indexes.as_deref().unwrap_or(""), bound).with(
            newly_succeeded
                .clone()
                .filter_map(|p| completion_index(&p.value).filter(|i| *i < bound)),
        )
    } else {
        Intervals::default()
    };
    let failed_indexes = if spec.per_index() {
        Intervals::parse(st.failed_indexes.as_deref().unwrap_or(""), bound).with(
            tracked
                .iter()
                .filter(|p| valid_index(p) && index_failed(spec, p))
                .filter_map(|p| completion_index(&p.value)),
        )
    } else {
        Intervals::default()
    };
    let succeeded = if spec.indexed {
        succeeded_indexes.total()
    } else {
        st.succeeded
            + st.uncounted_succeeded.len() as i64
            + newly_succeeded
                .filter(|p| !st.uncounted_succeeded.contains(p.uid()))
                .count() as i64
    };

    // Is the Job done? An interim condition already written decides; else look for a reason.
    let mut target = st
        .true_condition(FAILURE_TARGET)
        .map(|(r, m)| Cond::new(FAILURE_TARGET, &r, &m))
        .or_else(|| {
            st.true_condition(SUCCESS_CRITERIA_MET)
                .map(|(r, m)| Cond::new(SUCCESS_CRITERIA_MET, &r, &m))
        });
    let mut requeue = None;
    let left = deadline_left(
        spec,
        st.start_time.as_deref().and_then(|t| t.parse().ok()),
        now,
    );
    if target.is_none() {
        if let Some(msg) = fail_job_message(spec, pods) {
            target = Some(failure("PodFailurePolicy", &msg));
        } else if failed_total > spec.backoff_limit
            || (!spec.per_index() && past_backoff_on_failure(spec, pods))
        {
            target = Some(failure(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
        } else if !spec.suspend && left.is_some_and(|l| l <= 0) {
            target = Some(failure(
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ));
        } else if !spec.suspend
            && let Some(l) = left
        {
            requeue = Some(Duration::from_secs(l as u64));
        }
    }
    if target.is_none() && spec.per_index() {
        let completions = spec.completions.unwrap_or(0);
        if spec
            .max_failed_indexes
            .is_some_and(|m| failed_indexes.total() > m)
        {
            target = Some(failure(
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            ));
        } else if !failed_indexes.is_empty()
            && failed_indexes.total() + succeeded_indexes.total() >= completions
        {
            target = Some(failure("FailedIndexes", "Job has failed indexes"));
        }
    }
    if target.is_none()
        && spec.indexed
        && let Some(i) = policy::success_rule_met(&spec.success_rules, &succeeded_indexes, bound)
    {
        target = Some(Cond::new(
            SUCCESS_CRITERIA_MET,
            "SuccessPolicy",
            &format!("Matched rules at index {i}"),
        ));
    }

    let mut can_finish = satisfied;
    let mut error = None;
    let mut suspend_event = None;
    if target.is_some() {
        // Finishing: the active pods go, keeping their finalizers (they count as failed).
        let results =
            futures::future::join_all(active.iter().map(|p| pods::delete(ctx, &job, p, false)))
                .await;
        let deleted = results.iter().filter(|r| r.is_ok()).count();
        error = results.into_iter().find_map(Result::err);
        can_finish &= deleted == active.len();
        terminating += deleted as i64;
        st.active = (active.len() - deleted) as i64;
    } else {
        st.active = active.len() as i64;
        let mut managed = false;
        if satisfied && !job.is_deleting() {
            let view = View {
                key,
                job: &job,
                spec,
                pods,
                active: active.clone(),
                succeeded,
                succeeded_indexes: &succeeded_indexes,
                failed_indexes: &failed_indexes,
                terminating,
                now,
            };
            let out = manage::manage(ctx, &view).await;
            st.active = out.active;
            requeue = min_wait(requeue, out.requeue);
            error = out.error;
            managed = true;
        }
        let complete = match spec.completions {
            None => succeeded > 0 && st.active == 0,
            Some(c) => succeeded >= c && st.active == 0,
        };
        if complete {
            target = Some(Cond::new(
                SUCCESS_CRITERIA_MET,
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
        } else if managed && spec.suspend {
            let c = Cond::new(SUSPENDED, "JobSuspended", "Job suspended");
            if st.ensure(&c, now) {
                suspend_event = Some(("Suspended", "Job suspended"));
            }
        } else if managed {
            let c = Cond {
                ty: SUSPENDED,
                status: "False",
                reason: "JobResumed".into(),
                message: "Job resumed".into(),
            };
            if st.ensure(&c, now) {
                suspend_event = Some(("Resumed", "Job resumed"));
                // activeDeadlineSeconds counts time active without a break.
                st.start_time = Some(rfc3339(now));
            }
        }
    }
    st.terminating = terminating;

    let finishing = target.is_some();
    let finish = target.as_ref().map(|t| {
        st.ensure(t, now);
        track::final_of(t)
    });
    let remove = track::collect(
        spec,
        &mut st,
        &tracked,
        finishing,
        job.is_deleting(),
        valid_index,
    );
    if spec.indexed {
        st.completed_indexes = Some(succeeded_indexes.to_string());
        st.succeeded = succeeded_indexes.total();
    }
    if spec.per_index() {
        st.failed_indexes = Some(failed_indexes.to_string());
    }
    let finish = finish.filter(|_| can_finish);
    let (stored, finished) = track::flush(
        ctx,
        key,
        Arc::clone(&job),
        &mut st,
        pods,
        remove,
        finish.clone(),
    )
    .await?;
    if let Some((reason, msg)) = suspend_event {
        ctx.events.normal(&stored.value, reason, msg);
    }
    if let (true, Some(c)) = (finished, &finish) {
        if c.ty == status::COMPLETE {
            if spec.completions.is_some_and(|n| st.succeeded > n) {
                ctx.events.warning(
                    &stored.value,
                    "TooManySucceededPods",
                    "Too many succeeded pods running after completion count reached",
                );
            }
            ctx.events
                .normal(&stored.value, "Completed", "Job completed");
        } else {
            ctx.events.warning(&stored.value, &c.reason, &c.message);
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    if !satisfied {
        // Expectations expire; look again then even if no event comes.
        requeue = min_wait(requeue, Some(Duration::from_secs(30)));
    }
    Ok(requeue.map_or(Action::AwaitChange, Action::Requeue))
}
