//! Kubernetes' `manageJob`: how many pods a running Job should have and which to create or
//! delete — the remaining completions up to `parallelism`, the pending indexes of an indexed
//! Job, the back-off before replacing failed pods, and all active pods gone while suspended.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rudder_client::cache::CachedObject;

use super::pods;
use super::policy::{
    Action, backoff_delay, backoff_remaining, completion_index, counts, finish_time,
    int_annotation, is_failed, match_policy, remaining_after,
};
use super::spec::{IndexInfo, JobSpec};
use super::{BURST, Ctx, INDEX_FAILURE_COUNT, INDEX_IGNORED_FAILURE_COUNT};
use crate::error::Error;
use crate::util::batch::slow_start;
use crate::util::intervals::Intervals;
use crate::util::pods::phase;
use crate::util::rank::sort_for_deletion;

/// What a Job's pods are, for `manage`.
pub struct View<'a> {
    pub key: &'a str,
    pub job: &'a CachedObject,
    pub spec: &'a JobSpec,
    /// Every pod the Job controls, finished ones included.
    pub pods: &'a [Arc<CachedObject>],
    pub active: Vec<Arc<CachedObject>>,
    pub succeeded: i64,
    pub succeeded_indexes: &'a Intervals,
    pub failed_indexes: &'a Intervals,
    pub terminating: i64,
    pub now: Timestamp,
}

/// What `manage` did: the active count afterwards, when to look again, and the first error.
#[derive(Debug, Default)]
pub struct Outcome {
    pub active: i64,
    pub requeue: Option<Duration>,
    pub error: Option<Error>,
}

/// How many pods should be active.
pub fn want_active(spec: &JobSpec, active: i64, succeeded: i64) -> i64 {
    match spec.completions {
        // A work queue: once one pod succeeded, let the others finish and start none.
        None if succeeded > 0 => active,
        None => spec.parallelism,
        Some(c) => (c - succeeded).min(spec.parallelism).max(0),
    }
}

/// Pods to delete: for an indexed Job, those with no valid index, of an index already
/// succeeded or failed, and duplicates of an index (the most valuable kept); then, to reach
/// `at_least`, the cheapest of the rest ([`sort_for_deletion`]).
pub fn pods_for_removal(v: &View<'_>, at_least: usize) -> Vec<Arc<CachedObject>> {
    let mut rm = Vec::new();
    let mut left = Vec::new();
    if v.spec.indexed {
        let mut by_index: BTreeMap<i64, Vec<Arc<CachedObject>>> = BTreeMap::new();
        for p in &v.active {
            match completion_index(&p.value).filter(|i| *i < v.spec.index_bound()) {
                Some(i) if !v.succeeded_indexes.has(i) && !v.failed_indexes.has(i) => {
                    by_index.entry(i).or_default().push(Arc::clone(p));
                }
                _ => rm.push(Arc::clone(p)),
            }
        }
        for (_, mut same) in by_index {
            sort_for_deletion(&mut same, &v.active);
            if let Some(keep) = same.pop() {
                left.push(keep);
            }
            rm.extend(same);
        }
    } else {
        left = v.active.clone();
    }
    if rm.len() < at_least {
        sort_for_deletion(&mut left, &v.active);
        rm.extend(left.into_iter().take(at_least - rm.len()));
    }
    rm
}

/// The lowest `n` indexes neither succeeded, failed nor running.
pub fn pending_indexes(v: &View<'_>, n: usize) -> Vec<i64> {
    let running: HashSet<i64> = v
        .active
        .iter()
        .filter_map(|p| completion_index(&p.value))
        .collect();
    (0..v.spec.index_bound())
        .filter(|i| {
            !running.contains(i) && !v.succeeded_indexes.has(*i) && !v.failed_indexes.has(*i)
        })
        .take(n)
        .collect()
}

/// The back-off left before any failed pod is replaced (a Job without a per-index limit).
fn global_backoff(v: &View<'_>) -> Duration {
    let rules = v.spec.failure_rules.as_deref();
    let finished: Vec<(bool, Timestamp)> = v
        .pods
        .iter()
        .filter_map(|p| {
            let ok = phase(&p.value) == "Succeeded";
            // Only pods that reached Failed: the ones this controller deleted are no failures.
            let failed = phase(&p.value) == "Failed" && counts(rules, &p.value);
            (ok || failed).then(|| finish_time(&p.value).map(|t| (ok, t)))?
        })
        .collect();
    backoff_remaining(&finished, v.now)
}

/// For a per-index limit: the failure counts the index's next pod inherits from its last
/// failed pod, and the back-off left before it may be created.
pub fn index_info(v: &View<'_>, index: i64) -> (IndexInfo, Duration) {
    let last_failed = v
        .pods
        .iter()
        .filter(|p| completion_index(&p.value) == Some(index))
        .filter(|p| is_failed(&p.value, v.spec.replace_only_failed))
        .filter_map(|p| Some((finish_time(&p.value)?, p)))
        .max_by_key(|(t, _)| *t);
    let Some((finished, pod)) = last_failed else {
        let info = IndexInfo {
            index,
            failures: Some((0, 0)),
        };
        return (info, Duration::ZERO);
    };
    let mut failed = int_annotation(&pod.value, INDEX_FAILURE_COUNT);
    let mut ignored = int_annotation(&pod.value, INDEX_IGNORED_FAILURE_COUNT);
    let action = v
        .spec
        .failure_rules
        .as_deref()
        .and_then(|r| match_policy(r, &pod.value).0);
    if action == Some(Action::Ignore) {
        ignored += 1;
    } else {
        failed += 1;
    }
    let delay = backoff_delay(u32::try_from(failed + ignored).unwrap_or(u32::MAX));
    let info = IndexInfo {
        index,
        failures: Some((failed, ignored)),
    };
    (info, remaining_after(finished, delay, v.now))
}

/// Creates or deletes pods so that the right number is active (only called while the
/// controller's expectations are satisfied and the Job is neither finishing nor deleted).
pub async fn manage(ctx: &Ctx, v: &View<'_>) -> Outcome {
    let active = v.active.len() as i64;
    let mut out = Outcome {
        active,
        ..Outcome::default()
    };
    let surplus = if v.spec.suspend {
        active
    } else {
        (active - want_active(v.spec, active, v.succeeded)).max(0)
    };
    let mut victims = if v.spec.suspend {
        v.active.clone()
    } else {
        pods_for_removal(v, surplus as usize)
    };
    victims.truncate(BURST);
    if !victims.is_empty() {
        ctx.exp
            .expect_deletions(v.key, victims.iter().map(|p| p.uid().to_string()));
        let results =
            futures::future::join_all(victims.iter().map(|p| pods::delete(ctx, v.job, p, true)))
                .await;
        for (p, r) in victims.iter().zip(results) {
            match r {
                Ok(()) => out.active -= 1,
                Err(e) => {
                    ctx.exp.deletion_observed(v.key, p.uid());
                    out.error.get_or_insert(e);
                }
            }
        }
        return out;
    }
    if v.spec.suspend {
        return out;
    }
    // With `podReplacementPolicy: Failed`, a terminating pod still holds its slot.
    let held = if v.spec.replace_only_failed {
        v.terminating
    } else {
        0
    };
    let want = want_active(v.spec, active, v.succeeded);
    let missing = (want - held - active).max(0) as usize;
    if missing == 0 {
        return out;
    }
    let mut plan: Vec<Option<IndexInfo>> = if v.spec.indexed {
        let mut plan = Vec::new();
        let mut wait: Option<Duration> = None;
        for i in pending_indexes(v, missing.min(BURST)) {
            if v.spec.per_index() {
                let (info, left) = index_info(v, i);
                if left.is_zero() {
                    plan.push(Some(info));
                } else {
                    wait = Some(wait.map_or(left, |w| w.min(left)));
                }
            } else {
                plan.push(Some(IndexInfo {
                    index: i,
                    failures: None,
                }));
            }
        }
        out.requeue = wait;
        plan
    } else {
        vec![None; missing.min(BURST)]
    };
    if !v.spec.per_index() {
        let left = global_backoff(v);
        if !left.is_zero() {
            out.requeue = Some(left);
            return out;
        }
    }
    if plan.is_empty() {
        return out;
    }
    let n = plan.len();
    ctx.exp.expect_creations(v.key, n);
    plan.reverse();
    let plan = std::sync::Mutex::new(plan);
    let next = || {
        plan.lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .flatten()
    };
    let (ok, err) = slow_start(n, 1, || {
        let index = next();
        async move { pods::create(ctx, v.job, v.spec, index).await }
    })
    .await;
    for _ in ok..n {
        // No event will come for what was not created.
        ctx.exp.creation_observed(v.key);
    }
    out.active += ok as i64;
    out.error = err;
    out
}
