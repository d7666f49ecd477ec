//! Finalizer-based tracking (Kubernetes' `trackJobStatusAndRemoveFinalizers`): every pod of a
//! Job carries the `batch.kubernetes.io/job-tracking` finalizer until its end is recorded in
//! the Job's status, so no finished pod is lost or counted twice across controller restarts.
//!
//! For each finished pod still holding the finalizer, in order:
//! 1. its uid is added to `status.uncountedTerminatedPods` (or, for a succeeded pod of an
//!    indexed Job, its index to `completedIndexes`) and the status is written;
//! 2. its finalizer is removed;
//! 3. uids in `uncountedTerminatedPods` whose pod no longer holds the finalizer move into
//!    `succeeded` / `failed`, and the status is written again.
//!
//! A crash between any two steps is harmless: before step 2 the uid is already recorded (and
//! recording it again changes nothing); after it, step 3 finds the pod without its finalizer.
//! Removals the cache has not shown yet are remembered ([`super::pods::FinalizerRemovals`]), so
//! a pod already moved into a counter is not recorded again from a stale cache. A Job's
//! finished condition is written only once nothing is uncounted and no pod is terminating.

use std::collections::HashSet;
use std::sync::Arc;

use rudder_client::cache::CachedObject;

use super::policy::{counts, is_failed};
use super::spec::JobSpec;
use super::status::{self, COMPLETE, Cond, Status};
use super::{Ctx, MAX_UNCOUNTED, TRACKING_FINALIZER, pods};
use crate::error::Error;
use crate::util::pods::phase;
use crate::util::rfc3339;

/// Step 1's decision: records in `st` the end of each finished pod among `tracked` (pods with
/// the finalizer whose removal is not pending) and returns the pods whose finalizer may go.
/// While the Job is finishing, every pod not succeeded counts as failed; `valid_index` says
/// whether a pod belongs to an index of the Job (always, for a non-indexed Job).
pub fn collect(
    spec: &JobSpec,
    st: &mut Status,
    tracked: &[Arc<CachedObject>],
    finishing: bool,
    job_deleting: bool,
    valid_index: impl Fn(&CachedObject) -> bool,
) -> Vec<Arc<CachedObject>> {
    let rules = spec.failure_rules.as_deref();
    let mut remove = Vec::new();
    let mut added = 0;
    for pod in tracked {
        let uid = pod.uid().to_string();
        let succeeded = phase(&pod.value) == "Succeeded";
        let failed = is_failed(&pod.value, spec.replace_only_failed);
        if !(job_deleting || finishing || succeeded || failed) {
            continue;
        }
        remove.push(Arc::clone(pod));
        if succeeded && !st.uncounted_failed.contains(&uid) {
            // An indexed Job records successes by index, which cannot count twice.
            if !spec.indexed && st.uncounted_succeeded.insert(uid) {
                added += 1;
            }
        } else if (failed || (finishing && !succeeded))
            && !st.uncounted_failed.contains(&uid)
            && valid_index(pod)
            && counts(rules, &pod.value)
        {
            st.uncounted_failed.insert(uid);
            added += 1;
        }
        if st.uncounted_succeeded.len() + st.uncounted_failed.len() >= MAX_UNCOUNTED
            || added >= MAX_UNCOUNTED
        {
            break;
        }
    }
    remove
}

/// Steps 1 to 3 and the finished condition `finish` (if the caller allows it now): writes the
/// status, removes finalizers, moves counted pods into the counters and writes again. Returns
/// the Job as stored, and whether `finish` was written.
pub async fn flush(
    ctx: &Ctx,
    key: &str,
    job: Arc<CachedObject>,
    st: &mut Status,
    all: &[Arc<CachedObject>],
    remove: Vec<Arc<CachedObject>>,
    finish: Option<Cond>,
) -> Result<(Arc<CachedObject>, bool), Error> {
    let job = ctx.write_status(key, &job, st).await?;
    let mut removed = HashSet::new();
    let mut first_err = None;
    let results = futures::future::join_all(remove.iter().map(|p| {
        ctx.finalizers.expect(key, p.uid());
        pods::remove_finalizer(ctx.api.as_ref(), p)
    }))
    .await;
    for (p, r) in remove.iter().zip(results) {
        match r {
            Ok(()) => {
                removed.insert(p.uid().to_string());
            }
            Err(e) => {
                ctx.finalizers.observed(key, p.uid());
                first_err.get_or_insert(e);
            }
        }
    }
    let holding: HashSet<&str> = all
        .iter()
        .filter(|p| p.has_finalizer(TRACKING_FINALIZER) && !removed.contains(p.uid()))
        .map(|p| p.uid())
        .collect();
    let moved_ok: Vec<String> = st
        .uncounted_succeeded
        .iter()
        .filter(|u| !holding.contains(u.as_str()))
        .cloned()
        .collect();
    for u in moved_ok {
        st.uncounted_succeeded.remove(&u);
        st.succeeded += 1;
    }
    let moved_failed: Vec<String> = st
        .uncounted_failed
        .iter()
        .filter(|u| !holding.contains(u.as_str()))
        .cloned()
        .collect();
    for u in moved_failed {
        st.uncounted_failed.remove(&u);
        st.failed += 1;
    }
    let mut finished = false;
    if let Some(c) = finish
        && !st.has_uncounted()
        && st.terminating == 0
    {
        let now = ctx.clock.now();
        st.ensure(&c, now);
        if c.ty == COMPLETE {
            st.completion_time = Some(rfc3339(now));
        }
        finished = true;
    }
    let job = ctx.write_status(key, &job, st).await?;
    if let Some(e) = first_err {
        return Err(e.into());
    }
    Ok((job, finished))
}

/// The condition that ends a Job whose interim condition is `interim` (FailureTarget →
/// Failed, SuccessCriteriaMet → Complete), with the same reason and message.
pub fn final_of(interim: &Cond) -> Cond {
    let ty = if interim.ty == status::FAILURE_TARGET {
        status::FAILED
    } else {
        COMPLETE
    };
    Cond::new(ty, &interim.reason, &interim.message)
}
