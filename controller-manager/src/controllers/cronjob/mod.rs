//! The CronJob controller (batch/v1), as Kubernetes' `cronjob` controller (v2): creates a Job
//! for each scheduled time, on the injected clock.
//!
//! Each reconcile of a CronJob (`syncCronJob`):
//! 1. reconciles `status.active` with the Jobs it controls: a finished one leaves the list
//!    (event SawCompletedJob) and a succeeded one sets `lastSuccessfulTime`; an unfinished Job
//!    not in the list is reported (UnexpectedJob); a listed Job that no longer exists leaves it
//!    (MissingJob);
//! 2. unless the CronJob is suspended or being deleted: finds the most recent scheduled time
//!    not yet started since `lastScheduleTime` (or creation) in `spec.timeZone`
//!    ([`schedule::most_recent`]; only that one is started, however many were missed; more than
//!    100 missed are reported with the event TooManyMissedTimes, as Kubernetes does since 1.27;
//!    a time older than `startingDeadlineSeconds` is MissSchedule);
//! 3. applies `concurrencyPolicy`: Allow starts alongside running Jobs, Forbid waits
//!    (JobAlreadyActive), Replace deletes the running ones first;
//! 4. creates the Job `<cronjob>-<scheduled time in minutes since the epoch>` from
//!    `spec.jobTemplate`, with annotation `batch.kubernetes.io/cronjob-scheduled-timestamp` (RFC
//!    3339 in the time zone); the name makes a second create for the same time fail, so a
//!    restart between create and status write starts nothing twice;
//! 5. deletes finished Jobs beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`,
//!    oldest start first; writes the status (guarded by the CronJob's resourceVersion) and looks
//!    again at the next scheduled time.
//!
//! Without `spec.timeZone` schedules are read in UTC (Kubernetes uses the controller-manager's
//! local zone, which is UTC in most deployments). Events: SuccessfulCreate, FailedCreate,
//! SawCompletedJob, SuccessfulDelete, FailedDelete, JobAlreadyActive, MissSchedule,
//! TooManyMissedTimes, UnexpectedJob, MissingJob, UnknownTimeZone, UnparseableSchedule,
//! InvalidSchedule.

pub mod schedule;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use rudder_client::Api;
use rudder_client::cache::{CachedObject, INDEX_NAMESPACE, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::conn::kind_ref;
use rudder_client::controller::{Action, Controller, Mapper, controller_owner_key, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::proto as pb;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::job::delete_with_pods;
use super::job::status::{COMPLETE, FAILED, finished};
use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::cron;
use crate::util::template::controller_ref;
use crate::util::{parse_time, rfc3339, str_at};
use schedule::{Missed, most_recent, requeue_after};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "cronjob",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

pub struct Ctx {
    api: Arc<dyn Api>,
    clock: SharedClock,
    events: EventRecorder,
    cronjobs: Reader,
    jobs: Reader,
    pods: Reader,
    /// The resourceVersion of each CronJob's last status write.
    written: Mutex<HashMap<Key, u64>>,
}

impl Ctx {
    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u64>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn job_mapper(cronjobs: Reader) -> Mapper {
    Box::new(move |ev| {
        if let ReflectorEvent::Restarted(_) = ev {
            return cronjobs.keys();
        }
        let mut keys: Vec<Key> = ev
            .objects()
            .into_iter()
            .filter_map(|j| controller_owner_key(j, &cronjobs, "batch/v1", "CronJob"))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    })
}

async fn run(env: Env, cancel: CancellationToken) {
    let cronjobs = env.informers.for_kind("batch/v1", "CronJob");
    let jobs = env.informers.for_kind("batch/v1", "Job");
    let pods = env.informers.for_kind("v1", "Pod");
    let (events, events_task) = env.recorder("cronjob");
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        clock: Arc::clone(&env.clock),
        events,
        cronjobs: cronjobs.reader(),
        jobs: jobs.reader(),
        pods: pods.reader(),
        written: Mutex::new(HashMap::new()),
    });
    Controller::new(ctx)
        .named("cronjob")
        .workers(env.workers)
        .watches(cronjobs.subscribe(), self_mapper())
        .watches(jobs.subscribe(), job_mapper(cronjobs.reader()))
        .reads(pods.reader())
        .run(reconcile, policy, cancel)
        .await;
    events_task.abort();
}

/// The status fields the controller owns.
#[derive(Debug, Clone, PartialEq)]
struct Status {
    active: Vec<Value>,
    last_schedule: Option<String>,
    last_successful: Option<String>,
}

impl Status {
    fn read(cj: &Value) -> Status {
        let s = |p: &str| cj.pointer(p).and_then(Value::as_str).map(String::from);
        Status {
            active: cj
                .pointer("/status/active")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            last_schedule: s("/status/lastScheduleTime"),
            last_successful: s("/status/lastSuccessfulTime"),
        }
    }

    fn has_uid(&self, uid: &str) -> bool {
        self.active.iter().any(|r| r["uid"] == uid)
    }

    fn remove_uid(&mut self, uid: &str) {
        self.active.retain(|r| r["uid"] != uid);
    }
}

/// An `ObjectReference` to a Job, as `status.active` lists them.
fn job_ref(job: &Value) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "namespace": str_at(job, "/metadata/namespace"),
        "name": str_at(job, "/metadata/name"),
        "uid": str_at(job, "/metadata/uid"),
        "resourceVersion": str_at(job, "/metadata/resourceVersion"),
    })
}

/// The Job's name for a scheduled time: minutes since the epoch, so each time has one name.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 in `tz`, `Z` for a zero offset (as Go's `time.RFC3339`).
pub fn scheduled_timestamp(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job a CronJob starts for `scheduled` (`getJobFromTemplate2`).
pub fn job_for(cj: &CachedObject, scheduled: Timestamp, tz: &TimeZone) -> Value {
    let tmpl = cj
        .value
        .pointer("/spec/jobTemplate")
        .cloned()
        .unwrap_or_default();
    let mut annotations = tmpl
        .pointer("/metadata/annotations")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    annotations[SCHEDULED_TIMESTAMP] = json!(scheduled_timestamp(scheduled, tz));
    let mut meta = json!({
        "name": job_name(&cj.name, scheduled),
        "namespace": cj.namespace,
        "annotations": annotations,
        "ownerReferences": [controller_ref(&cj.value)],
    });
    if let Some(l) = tmpl.pointer("/metadata/labels").filter(|l| l.is_object()) {
        meta["labels"] = l.clone();
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": tmpl.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The time zone of a CronJob (`Err`: the reason an unknown name is refused).
fn time_zone(cj: &Value) -> Result<TimeZone, String> {
    match cj.pointer("/spec/timeZone").and_then(Value::as_str) {
        None => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|e| format!("invalid timeZone: {name:?}: {e}")),
    }
}

/// Reconciles one CronJob by key. Public so tests can drive it without the runner.
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(cj) = ctx.cronjobs.get_key(&key) else {
        ctx.written().remove(&key);
        return Ok(Action::AwaitChange);
    };
    if ctx
        .written()
        .get(&key)
        .is_some_and(|rv| cj.resource_version < *rv)
    {
        // The watch brings our last write back and queues the CronJob again.
        return Ok(Action::Requeue(Duration::from_secs(1)));
    }
    let jobs: Vec<Arc<CachedObject>> = ctx
        .jobs
        .by_index(INDEX_NAMESPACE, &cj.namespace)
        .into_iter()
        .filter(|j| j.is_controlled_by(&cj))
        .collect();
    let original = Status::read(&cj.value);
    let mut st = original.clone();
    let now = ctx.clock.now();
    let synced = sync(&ctx, &cj, &jobs, &mut st, now).await;
    cleanup(&ctx, &cj, &jobs, &mut st).await;
    if st != original {
        write_status(&ctx, &key, &cj, &st).await?;
    }
    let requeue = synced?;
    Ok(requeue.map_or(Action::AwaitChange, Action::Requeue))
}

async fn write_status(ctx: &Ctx, key: &str, cj: &CachedObject, st: &Status) -> Result<(), Error> {
    let status = json!({
        "active": if st.active.is_empty() { Value::Null } else { json!(st.active) },
        "lastScheduleTime": st.last_schedule,
        "lastSuccessfulTime": st.last_successful,
    });
    let patch = json!({
        "metadata": {"resourceVersion": cj.resource_version.to_string()},
        "status": status,
    });
    let stored = ctx
        .api
        .patch(pb::PatchRequest {
            kind: Some(kind_ref("batch/v1", "CronJob")),
            namespace: cj.namespace.clone(),
            name: cj.name.clone(),
            patch_type: pb::PatchType::Merge as i32,
            patch: Bytes::from(patch.to_string()),
            status: true,
            options: None,
        })
        .await?;
    ctx.written()
        .insert(key.to_string(), stored.resource_version);
    Ok(())
}

async fn get_job(ctx: &Ctx, ns: &str, name: &str) -> Result<Option<CachedObject>, Error> {
    let req = pb::GetRequest {
        kind: Some(kind_ref("batch/v1", "Job")),
        namespace: ns.to_string(),
        name: name.to_string(),
        allow_stale: false,
    };
    match ctx.api.get(req).await {
        Ok(o) => Ok(CachedObject::from_wire(&o)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Steps 1 to 4 of the module doc; returns when to look again.
async fn sync(
    ctx: &Ctx,
    cj: &Arc<CachedObject>,
    jobs: &[Arc<CachedObject>],
    st: &mut Status,
    now: Timestamp,
) -> Result<Option<Duration>, Error> {
    let v = &cj.value;
    let ev = &ctx.events;
    for j in jobs {
        let done = finished(&j.value);
        let listed = st.has_uid(j.uid());
        if !listed && done.is_none() {
            ev.warning(
                v,
                "UnexpectedJob",
                &format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    j.name
                ),
            );
        } else if listed && let Some(cond) = done {
            st.remove_uid(j.uid());
            ev.normal(
                v,
                "SawCompletedJob",
                &format!("Saw completed job: {}, condition: {cond}", j.name),
            );
        }
        if done == Some(COMPLETE)
            && let Some(t) = parse_time(j.value.pointer("/status/completionTime"))
            && st
                .last_successful
                .as_deref()
                .and_then(|s| s.parse::<Timestamp>().ok())
                .is_none_or(|last| t > last)
        {
            st.last_successful = Some(rfc3339(t));
        }
    }
    let present: HashSet<&str> = jobs.iter().map(|j| j.uid()).collect();
    for r in st.active.clone() {
        let uid = str_at(&r, "/uid");
        if present.contains(uid) {
            continue;
        }
        let name = str_at(&r, "/name");
        // The cache may not have it yet: ask the server.
        if get_job(ctx, &cj.namespace, name).await?.is_none() {
            ev.normal(v, "MissingJob", &format!("Active job went missing: {name}"));
            st.remove_uid(uid);
        }
    }
    if cj.is_deleting() {
        return Ok(None);
    }
    let tz = match time_zone(v) {
        Ok(tz) => tz,
        Err(e) => {
            ev.warning(v, "UnknownTimeZone", &e);
            return Ok(None);
        }
    };
    if v.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    let spec = str_at(v, "/spec/schedule");
    let sched = match cron::parse(spec) {
        Ok(s) => s,
        Err(e) => {
            ev.warning(
                v,
                "UnparseableSchedule",
                &format!("unparseable schedule: {spec:?} : {e}"),
            );
            return Ok(None);
        }
    };
    let created = parse_time(v.pointer("/metadata/creationTimestamp")).unwrap_or(now);
    let last = st.last_schedule.as_deref().and_then(|s| s.parse().ok());
    let deadline = v
        .pointer("/spec/startingDeadlineSeconds")
        .and_then(Value::as_i64);
    let recent = match most_recent(&sched, &tz, created, last, deadline, now) {
        Ok(r) => r,
        Err(e) => {
            ev.warning(
                v,
                "InvalidSchedule",
                &format!("invalid schedule: {spec} : {e}"),
            );
            return Ok(None);
        }
    };
    let again = requeue_after(&sched, &tz, created, last, now);
    let Some(scheduled) = recent.time else {
        return Ok(again);
    };
    // As Kubernetes since 1.27: reported, and the most recent is still started.
    if recent.missed == Missed::Many {
        ev.warning(
            v,
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
        );
    }
    if deadline.is_some_and(|d| scheduled.as_second() + d < now.as_second()) {
        let when = scheduled.strftime("%a, %d %b %Y %H:%M:%S %z");
        ev.warning(
            v,
            "MissSchedule",
            &format!("Missed scheduled time to start a job: {when}"),
        );
        return Ok(again);
    }
    let name = job_name(&cj.name, scheduled);
    if st.active.iter().any(|r| r["name"] == name.as_str())
        || st.last_schedule.as_deref() == Some(rfc3339(scheduled).as_str())
    {
        return Ok(again);
    }
    match str_at(v, "/spec/concurrencyPolicy") {
        "Forbid" if !st.active.is_empty() => {
            ev.normal(
                v,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            );
            return Ok(again);
        }
        "Replace" => {
            for r in st.active.clone() {
                let job = get_job(ctx, &cj.namespace, str_at(&r, "/name")).await?;
                match job {
                    Some(job) => delete_job(ctx, cj, &job, st).await?,
                    None => st.remove_uid(str_at(&r, "/uid")),
                }
            }
        }
        _ => {}
    }
    start(ctx, cj, scheduled, &tz, st).await?;
    Ok(requeue_after(&sched, &tz, created, Some(scheduled), now))
}

/// Creates the Job for `scheduled` and lists it as active.
async fn start(
    ctx: &Ctx,
    cj: &CachedObject,
    scheduled: Timestamp,
    tz: &TimeZone,
    st: &mut Status,
) -> Result<(), Error> {
    let body = job_for(cj, scheduled, tz);
    let req = pb::CreateRequest {
        kind: Some(kind_ref("batch/v1", "Job")),
        namespace: cj.namespace.clone(),
        json: Bytes::from(body.to_string()),
        options: None,
    };
    let job = match ctx.api.create(req).await {
        Ok(o) => {
            ctx.events.normal(
                &cj.value,
                "SuccessfulCreate",
                &format!("Created job {}", o.name),
            );
            rudder_client::api::decode_json(&o)?
        }
        Err(rudder_client::ClientError::AlreadyExists(msg)) => {
            // Made by an earlier attempt whose status write was lost, or by someone else.
            let name = str_at(&body, "/metadata/name");
            let Some(job) = get_job(ctx, &cj.namespace, name).await? else {
                return Err(rudder_client::ClientError::AlreadyExists(msg).into());
            };
            if !job.is_controlled_by(cj) || st.has_uid(job.uid()) {
                return Ok(());
            }
            job.value
        }
        Err(e) => {
            ctx.events.warning(
                &cj.value,
                "FailedCreate",
                &format!("Error creating job: {e}"),
            );
            return Err(e.into());
        }
    };
    st.active.push(job_ref(&job));
    st.last_schedule = Some(rfc3339(scheduled));
    Ok(())
}

/// Deletes a Job of the CronJob and drops it from the active list.
async fn delete_job(
    ctx: &Ctx,
    cj: &CachedObject,
    job: &CachedObject,
    st: &mut Status,
) -> Result<(), Error> {
    if let Err(e) = delete_with_pods(ctx.api.as_ref(), &ctx.pods, job, None).await {
        ctx.events
            .warning(&cj.value, "FailedDelete", &format!("Deleted job: {e}"));
        return Err(e.into());
    }
    st.remove_uid(job.uid());
    ctx.events.normal(
        &cj.value,
        "SuccessfulDelete",
        &format!("Deleted job {}", job.name),
    );
    Ok(())
}

/// Deletes finished Jobs beyond the history limits, oldest start first. Failures are logged
/// and retried at the next reconcile.
async fn cleanup(ctx: &Ctx, cj: &CachedObject, jobs: &[Arc<CachedObject>], st: &mut Status) {
    let limit = |f: &str| {
        cj.value
            .pointer(&format!("/spec/{f}"))
            .and_then(Value::as_i64)
    };
    for (cond, field) in [
        (COMPLETE, "successfulJobsHistoryLimit"),
        (FAILED, "failedJobsHistoryLimit"),
    ] {
        let Some(keep) = limit(field) else { continue };
        let mut done: Vec<&Arc<CachedObject>> = jobs
            .iter()
            .filter(|j| finished(&j.value) == Some(cond))
            .collect();
        let excess = done.len().saturating_sub(keep.max(0) as usize);
        if excess == 0 {
            continue;
        }
        // Oldest start first; a Job that never started sorts last.
        done.sort_by_key(|j| {
            let start = parse_time(j.value.pointer("/status/startTime"));
            (start.is_none(), start, j.name.clone())
        });
        for j in done.into_iter().take(excess) {
            if let Err(e) = delete_job(ctx, cj, j, st).await {
                tracing::warn!(cronjob = %cj.key(), job = %j.name, error = %e, "could not delete an old job");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_named_and_stamped_by_their_scheduled_time() {
        let t: Timestamp = "2025-01-01T05:30:00Z".parse().unwrap();
        assert_eq!(job_name("nightly", t), "nightly-28928490");
        assert_eq!(
            scheduled_timestamp(t, &TimeZone::UTC),
            "2025-01-01T05:30:00Z"
        );
        let ny = TimeZone::get("America/New_York").unwrap();
        assert_eq!(scheduled_timestamp(t, &ny), "2025-01-01T00:30:00-05:00");
        let cj = CachedObject::new(
            "batch/v1",
            "CronJob",
            "ns",
            "nightly",
            1,
            json!({"apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": "nightly", "namespace": "ns", "uid": "c1"},
                "spec": {"jobTemplate": {"metadata": {"labels": {"team": "a"}, "annotations": {"x": "y"}},
                    "spec": {"backoffLimit": 2}}}}),
        );
        let j = job_for(&cj, t, &ny);
        assert_eq!(j["metadata"]["name"], "nightly-28928490");
        assert_eq!(j["metadata"]["labels"]["team"], "a");
        assert_eq!(j["metadata"]["annotations"]["x"], "y");
        assert_eq!(
            j["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
            "2025-01-01T00:30:00-05:00"
        );
        assert_eq!(j["metadata"]["ownerReferences"][0]["uid"], "c1");
        assert_eq!(j["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(j["spec"]["backoffLimit"], 2);
    }
}
