//! The rollout strategies and proportional scaling, with Kubernetes' arithmetic
//! (`rolling.go`, `recreate.go`, `sync.go`).

use std::sync::Arc;

use rudder_client::cache::INDEX_OWNER_UID;
use rudder_client::controller::Action;
use serde_json::Value;

use super::sets::{self, View, ensure_new, scale_rs, spec_replicas, status_count};
use super::status;
use super::{Ctx, DESIRED_REPLICAS, Strategy};
use crate::error::Error;
use crate::util::pods::phase;

/// How many pods the new ReplicaSet should want now (`NewRSNewReplicas`): RollingUpdate grows it
/// within `replicas + maxSurge` pods in all; Recreate goes straight to `replicas`.
pub fn new_rs_new_replicas(view: &View) -> i64 {
    let d = &view.d;
    let new = view.new_rs().map(|r| spec_replicas(r)).unwrap_or(0);
    match d.strategy {
        Strategy::Recreate => d.replicas,
        Strategy::RollingUpdate { max_surge, .. } => {
            // Stricter than Kubernetes, which sums spec.replicas only: a ReplicaSet just scaled
            // down still has its pods until its status says so, and they count, so the pods
            // themselves never exceed replicas + maxSurge.
            let current: i64 = view
                .all
                .iter()
                .map(|r| spec_replicas(r).max(status_count(r, "replicas")))
                .sum();
            let max_total = d.replicas + max_surge;
            if current >= max_total {
                return new;
            }
            let up = (max_total - current).min(d.replicas - new);
            new + up.max(0)
        }
    }
}

/// Whether only the replica count changed: some active ReplicaSet was sized for another
/// `spec.replicas` (`isScalingEvent`).
pub fn is_scaling_event(view: &View) -> bool {
    let want = view.d.replicas.to_string();
    view.all.iter().filter(|r| spec_replicas(r) > 0).any(|r| {
        let desired = r
            .value
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(DESIRED_REPLICAS))
            .and_then(Value::as_str);
        desired.is_some_and(|d| d != want)
    })
}

/// `rolloutRolling`: grow the new ReplicaSet, else shrink old ones, then trim history and write
/// the status.
pub async fn rolling(ctx: &Ctx, view: &mut View) -> Result<Action, Error> {
    ensure_new(ctx, view, true, new_rs_new_replicas).await?;
    if reconcile_new(ctx, view).await? {
        return status::sync(ctx, view).await;
    }
    reconcile_old(ctx, view).await?;
    if status::is_complete(view) {
        sets::cleanup(ctx, view).await?;
    }
    status::sync(ctx, view).await
}

/// Grows (or shrinks, if above `replicas`) the new ReplicaSet; whether it changed.
async fn reconcile_new(ctx: &Ctx, view: &mut View) -> Result<bool, Error> {
    let Some(i) = view.new else { return Ok(false) };
    let current = spec_replicas(&view.all[i]);
    if current == view.d.replicas {
        return Ok(false);
    }
    let size = if current > view.d.replicas {
        view.d.replicas
    } else {
        new_rs_new_replicas(view)
    };
    scale_rs(ctx, view, i, size).await
}

/// Shrinks old ReplicaSets as far as availability allows (`reconcileOldReplicaSets`): first
/// their unhealthy pods, then available ones while `replicas - maxUnavailable` stay available.
async fn reconcile_old(ctx: &Ctx, view: &mut View) -> Result<bool, Error> {
    let old = view.active_old();
    let old_pods: i64 = old.iter().map(|&i| spec_replicas(&view.all[i])).sum();
    if old_pods == 0 {
        return Ok(false);
    }
    let all_pods: i64 = view.all.iter().map(|r| spec_replicas(r)).sum();
    let min_available = view.d.replicas - view.d.max_unavailable();
    let new_unavailable = view
        .new_rs()
        .map(|r| spec_replicas(r) - status_count(r, "availableReplicas"))
        .unwrap_or(0);
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Ok(false);
    }
    // Unhealthy old pods first: losing them costs no availability.
    let mut budget = max_scaled_down;
    let mut changed = false;
    for &i in &old {
        if budget <= 0 {
            break;
        }
        let rs = &view.all[i];
        let (want, available) = (spec_replicas(rs), status_count(rs, "availableReplicas"));
        // A status counting more available pods than wanted is stale (the set was just
        // shrunk): nothing unhealthy to drop, and never a reason to grow it.
        if want <= available {
            continue;
        }
        let down = budget.min(want - available);
        changed |= scale_rs(ctx, view, i, want - down).await?;
        budget -= down;
    }
    // Then available ones, oldest first, keeping minAvailable.
    let available: i64 = view.all.iter().map(|r| available_within_spec(r)).sum();
    if available <= min_available {
        return Ok(changed);
    }
    let mut budget = available - min_available;
    for i in view.active_old() {
        if budget <= 0 {
            break;
        }
        let want = spec_replicas(&view.all[i]);
        let down = budget.min(want);
        if down == 0 {
            continue;
        }
        changed |= scale_rs(ctx, view, i, want - down).await?;
        budget -= down;
    }
    Ok(changed)
}

/// A ReplicaSet's available pods as far as they will last: a status counting more than
/// `spec.replicas` predates a scale-down whose deletions may take available pods, so only
/// `spec.replicas` of them count. Kubernetes sums the status alone, which lets a rollout dip
/// below `replicas - maxUnavailable` while a status lags.
fn available_within_spec(rs: &rudder_client::cache::CachedObject) -> i64 {
    status_count(rs, "availableReplicas").min(spec_replicas(rs))
}

/// `rolloutRecreate`: old ReplicaSets to zero; once none of their pods runs, the new one to
/// full size.
pub async fn recreate(ctx: &Ctx, view: &mut View) -> Result<Action, Error> {
    ensure_new(ctx, view, false, new_rs_new_replicas).await?;
    let mut scaled = false;
    for i in view.active_old() {
        scaled |= scale_rs(ctx, view, i, 0).await?;
    }
    if scaled || old_pods_running(ctx, view) {
        return status::sync(ctx, view).await;
    }
    if view.new.is_none() {
        ensure_new(ctx, view, true, new_rs_new_replicas).await?;
    }
    if let Some(i) = view.new {
        let size = view.d.replicas;
        scale_rs(ctx, view, i, size).await?;
    }
    if status::is_complete(view) {
        sets::cleanup(ctx, view).await?;
    }
    status::sync(ctx, view).await
}

/// Any pod of an old ReplicaSet not finished, or an old ReplicaSet still reporting pods.
fn old_pods_running(ctx: &Ctx, view: &View) -> bool {
    view.old().into_iter().map(|i| &view.all[i]).any(|rs| {
        status_count(rs, "replicas") > 0
            || ctx
                .pods
                .by_index(INDEX_OWNER_UID, rs.uid())
                .iter()
                .any(|p| !matches!(phase(&p.value), "Succeeded" | "Failed"))
    })
}

/// Sizes the ReplicaSets for a changed `spec.replicas` without moving the rollout
/// (`DeploymentController.scale`): one active ReplicaSet takes the whole size; a saturated new
/// one leaves the old ones at zero; during a rolling update the change is spread over the active
/// ReplicaSets in proportion to their size, the rounding leftover to the largest.
pub async fn scale(ctx: &Ctx, view: &mut View) -> Result<(), Error> {
    let active: Vec<usize> = (0..view.all.len())
        .filter(|&i| spec_replicas(&view.all[i]) > 0)
        .collect();
    let target = match active.as_slice() {
        [only] => Some(*only),
        [] => view.new.or_else(|| {
            // The latest old one by revision.
            view.old()
                .into_iter()
                .max_by_key(|&i| sets::revision(&view.all[i]))
        }),
        _ => None,
    };
    if let Some(i) = target {
        let size = view.d.replicas;
        scale_rs(ctx, view, i, size).await?;
        return Ok(());
    }
    if is_saturated(view) {
        for i in view.active_old() {
            scale_rs(ctx, view, i, 0).await?;
        }
        return Ok(());
    }
    if !matches!(view.d.strategy, Strategy::RollingUpdate { .. }) {
        return Ok(());
    }
    let total: i64 = active.iter().map(|&i| spec_replicas(&view.all[i])).sum();
    let allowed = if view.d.replicas > 0 {
        view.d.replicas + view.d.max_surge()
    } else {
        0
    };
    let to_add = allowed - total;
    // Largest first when growing (newest breaking ties), smallest-older first when shrinking.
    let mut order = active.clone();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&view.all[a], &view.all[b]);
        let by_size = spec_replicas(rb).cmp(&spec_replicas(ra));
        let by_age = sets::revision(rb).cmp(&sets::revision(ra));
        if to_add >= 0 {
            by_size.then(by_age)
        } else {
            by_size.then(by_age.reverse())
        }
    });
    let mut sizes: Vec<(usize, i64)> = Vec::new();
    let mut added = 0;
    for &i in &order {
        let rs = &view.all[i];
        let proportion = if to_add != 0 {
            proportion(rs, view, to_add, added)
        } else {
            0
        };
        added += proportion;
        sizes.push((i, spec_replicas(rs) + proportion));
    }
    if let Some(first) = sizes.first_mut() {
        first.1 = (first.1 + to_add - added).max(0);
    }
    for (i, size) in sizes {
        scale_rs(ctx, view, i, size).await?;
    }
    Ok(())
}

/// `GetProportion`: this ReplicaSet's share of `to_add`, bounded by what is left to add.
fn proportion(
    rs: &Arc<rudder_client::cache::CachedObject>,
    view: &View,
    to_add: i64,
    added: i64,
) -> i64 {
    let size = spec_replicas(rs);
    if size == 0 || to_add == added {
        return 0;
    }
    let fraction = if view.d.replicas == 0 {
        -size
    } else {
        let max_now = view.d.replicas + view.d.max_surge();
        let max_before: i64 = rs
            .value
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(super::MAX_REPLICAS))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if max_before == 0 {
            0
        } else {
            ((size as f64 * max_now as f64) / max_before as f64).round() as i64 - size
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// The new ReplicaSet has all the Deployment's replicas, sized for them, all available.
fn is_saturated(view: &View) -> bool {
    view.new_rs().is_some_and(|rs| {
        let desired = rs
            .value
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(DESIRED_REPLICAS))
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<i64>().ok());
        spec_replicas(rs) == view.d.replicas
            && desired == Some(view.d.replicas)
            && status_count(rs, "availableReplicas") == view.d.replicas
    })
}
