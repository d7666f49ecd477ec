//! A Deployment's status from its ReplicaSets (`calculateStatus`, `syncRolloutStatus`):
//! counts, the Available condition, Progressing against `progressDeadlineSeconds` (paused and
//! resumed noted), ReplicaFailure carried over from a ReplicaSet, and the requeue that notices
//! a deadline passing when nothing else happens.

use std::time::Duration;

use jiff::Timestamp;
use rudder_client::controller::Action;
use serde_json::{Value, json};

use super::Ctx;
use super::sets::{View, spec_replicas, status_count};
use crate::error::Error;
use crate::util::{parse_time, rfc3339};

pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const CANARY_PAUSED: &str = "CanaryPaused";
pub const CANARY_ABORTED: &str = "CanaryAborted";

/// The counts of a status, as compared between the old and the new one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub replicas: i64,
    pub updated: i64,
    pub ready: i64,
    pub available: i64,
    pub unavailable: i64,
}

impl Counts {
    fn of_status(s: &Value) -> Counts {
        let n = |f: &str| s.get(f).and_then(Value::as_i64).unwrap_or(0);
        Counts {
            replicas: n("replicas"),
            updated: n("updatedReplicas"),
            ready: n("readyReplicas"),
            available: n("availableReplicas"),
            unavailable: n("unavailableReplicas"),
        }
    }

    fn of_view(view: &View) -> Counts {
        let sum = |f: &str| view.all.iter().map(|r| status_count(r, f)).sum::<i64>();
        let available = sum("availableReplicas");
        let wanted: i64 = view.all.iter().map(|r| spec_replicas(r)).sum();
        Counts {
            replicas: sum("replicas"),
            updated: view
                .new_rs()
                .map(|r| status_count(r, "replicas"))
                .unwrap_or(0),
            ready: sum("readyReplicas"),
            available,
            unavailable: (wanted - available).max(0),
        }
    }
}

/// `DeploymentComplete`: every replica updated and available, and this generation observed.
fn complete(view: &View, c: &Counts) -> bool {
    let r = view.d.replicas;
    c.updated == r && c.replicas == r && c.available == r
}

/// Whether the rollout is done, by the ReplicaSets as they are now.
pub fn is_complete(view: &View) -> bool {
    complete(view, &Counts::of_view(view))
}

fn condition<'a>(conds: &'a [Value], ty: &str) -> Option<&'a Value> {
    conds
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

fn field<'a>(c: &'a Value, f: &str) -> &'a str {
    c.get(f).and_then(Value::as_str).unwrap_or("")
}

/// `SetDeploymentCondition`: same status and reason is no change; same status keeps the
/// transition time; the condition moves to the end.
fn set_condition(
    conds: &mut Vec<Value>,
    ty: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    let current = condition(conds, ty).cloned();
    if let Some(c) = &current
        && field(c, "status") == status
        && field(c, "reason") == reason
    {
        return;
    }
    let transition = match &current {
        Some(c) if field(c, "status") == status => field(c, "lastTransitionTime").to_string(),
        _ => now.to_string(),
    };
    conds.retain(|c| field(c, "type") != ty);
    conds.push(json!({
        "type": ty, "status": status, "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": transition,
    }));
}

/// Computes and writes the status, and says when to look again.
pub async fn sync(ctx: &Ctx, view: &mut View) -> Result<Action, Error> {
    let now = ctx.clock.now();
    let now_s = rfc3339(now);
    let d = &view.d;
    let old_status = d
        .obj
        .value
        .get("status")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let old = Counts::of_status(&old_status);
    let new = Counts::of_view(view);
    let mut conds: Vec<Value> = old_status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let min_available = d.replicas - d.max_unavailable();
    if new.available >= min_available {
        set_condition(
            &mut conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            &now_s,
        );
    } else {
        set_condition(
            &mut conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            &now_s,
        );
    }
    let name = view.new_rs().map(|r| r.name.clone());
    let subject = match &name {
        Some(n) => format!("ReplicaSet {n:?}"),
        None => format!("Deployment {:?}", d.obj.name),
    };
    let progressing = condition(&conds, "Progressing").cloned();
    let reason = progressing
        .as_ref()
        .map(|c| field(c, "reason").to_string())
        .unwrap_or_default();
    if d.progress_deadline.is_none() {
        conds.retain(|c| field(c, "type") != "Progressing");
    } else if d.paused {
        if reason != PAUSED {
            set_condition(
                &mut conds,
                "Progressing",
                "Unknown",
                PAUSED,
                "Deployment is paused",
                &now_s,
            );
        }
    } else if reason == PAUSED {
        set_condition(
            &mut conds,
            "Progressing",
            "Unknown",
            RESUMED,
            "Deployment is resumed",
            &now_s,
        );
    } else if let Some((status, reason, message)) = &view.progressing {
        set_condition(&mut conds, "Progressing", status, reason, message, &now_s);
    } else if reason == CANARY_PAUSED || reason == CANARY_ABORTED {
        // A canary moving again: the deadline counts from now, not from when it paused.
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            RS_UPDATED,
            &format!("{subject} is progressing."),
            &now_s,
        );
    } else if let Some(created) = &view.created {
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            NEW_RS_CREATED,
            &format!("Created new replica set {created:?}"),
            &now_s,
        );
    } else {
        let done = new.replicas == new.updated && reason == NEW_RS_AVAILABLE;
        if !done {
            let old_rest = old.replicas - old.updated;
            let new_rest = new.replicas - new.updated;
            if complete(view, &new) {
                set_condition(
                    &mut conds,
                    "Progressing",
                    "True",
                    NEW_RS_AVAILABLE,
                    &format!("{subject} has successfully progressed."),
                    &now_s,
                );
            } else if new.updated > old.updated
                || new_rest < old_rest
                || new.ready > old.ready
                || new.available > old.available
            {
                // Progress: a fresh lastUpdateTime, the transition time kept while True.
                let transition = progressing
                    .as_ref()
                    .filter(|c| field(c, "status") == "True")
                    .map(|c| field(c, "lastTransitionTime").to_string())
                    .unwrap_or_else(|| now_s.clone());
                conds.retain(|c| field(c, "type") != "Progressing");
                conds.push(json!({
                    "type": "Progressing", "status": "True", "reason": RS_UPDATED,
                    "message": format!("{subject} is progressing."),
                    "lastUpdateTime": now_s, "lastTransitionTime": transition,
                }));
            } else if reason == NEW_RS_AVAILABLE {
                // A new rollout began since the last one completed, and the reconcile that
                // started it did not get to say so: its deadline counts from now, rather than
                // never (a completed rollout's condition never times out).
                set_condition(
                    &mut conds,
                    "Progressing",
                    "True",
                    RS_UPDATED,
                    &format!("{subject} is progressing."),
                    &now_s,
                );
            } else if timed_out(progressing.as_ref(), d.progress_deadline, now) {
                set_condition(
                    &mut conds,
                    "Progressing",
                    "False",
                    TIMED_OUT,
                    &format!("{subject} has timed out progressing."),
                    &now_s,
                );
            }
        }
    }
    match replica_failure(view) {
        Some((status, reason, message)) => set_condition(
            &mut conds,
            "ReplicaFailure",
            &status,
            &reason,
            &message,
            &now_s,
        ),
        None => conds.retain(|c| field(c, "type") != "ReplicaFailure"),
    }
    let mut status = json!({
        "replicas": new.replicas,
        "updatedReplicas": new.updated,
        "readyReplicas": new.ready,
        "availableReplicas": new.available,
        "unavailableReplicas": new.unavailable,
        "conditions": conds,
    });
    if let Some(c) = d.collision_count {
        status["collisionCount"] = json!(c);
    }
    // Guarded: a reconcile on a cache that has not seen this controller's last status write
    // (a NewReplicaSetCreated, a RolledBack) must not put the older conditions back.
    rudder_client::write::patch_status_observed_guarded(ctx.api.as_ref(), &d.obj, status).await?;
    Ok(requeue_stuck(view, &conds, now))
}

/// `DeploymentTimedOut`: the last progress is older than the deadline.
fn timed_out(progressing: Option<&Value>, deadline: Option<i64>, now: Timestamp) -> bool {
    let (Some(c), Some(deadline)) = (progressing, deadline) else {
        return false;
    };
    match field(c, "reason") {
        NEW_RS_AVAILABLE => false,
        TIMED_OUT => true,
        _ => parse_time(c.get("lastUpdateTime"))
            .is_some_and(|from| from.as_second() + deadline < now.as_second()),
    }
}

/// A rollout in progress is looked at again when its deadline would pass, so a stuck one is
/// marked even if no pod changes (`requeueStuckDeployment`).
fn requeue_stuck(view: &View, conds: &[Value], now: Timestamp) -> Action {
    let Some(deadline) = view.d.progress_deadline else {
        return Action::AwaitChange;
    };
    let Some(c) = condition(conds, "Progressing") else {
        return Action::AwaitChange;
    };
    if field(c, "status") != "True" || field(c, "reason") == NEW_RS_AVAILABLE || view.d.paused {
        return Action::AwaitChange;
    }
    let Some(from) = parse_time(c.get("lastUpdateTime")) else {
        return Action::AwaitChange;
    };
    let left = from.as_second() + deadline + 1 - now.as_second();
    Action::Requeue(Duration::from_secs(left.max(1) as u64))
}

/// The first ReplicaFailure condition of the new, else any, ReplicaSet.
fn replica_failure(view: &View) -> Option<(String, String, String)> {
    let mut order: Vec<usize> = view.new.into_iter().collect();
    order.extend(view.old());
    order.into_iter().find_map(|i| {
        let conds = view.all[i]
            .value
            .pointer("/status/conditions")?
            .as_array()?;
        let c = condition(conds, "ReplicaFailure")?;
        (field(c, "status") == "True").then(|| {
            (
                "True".to_string(),
                field(c, "reason").to_string(),
                field(c, "message").to_string(),
            )
        })
    })
}
