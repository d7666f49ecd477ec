//! Automatic rollback, beyond Kubernetes (Nomad's `auto_revert`, Swarm's failure action): a
//! Deployment annotated `rudder.io/auto-rollback: "true"` whose new revision fails goes back to
//! the last good one by itself.
//!
//! - *Good*: a revision whose rollout completed; its ReplicaSet is marked
//!   `rudder.io/known-good: "true"` at that moment.
//! - *Failing*: the new revision, not known good, exceeded its progress deadline
//!   (Progressing=False, ProgressDeadlineExceeded), or one of its pods crash-loops
//!   (CrashLoopBackOff) or has restarted [`RESTARTS`] times.
//! - *Rollback*: the Deployment's pod template is replaced by the last good ReplicaSet's (the
//!   highest revision marked good), as `rudder rollout undo` would, in one update guarded by the
//!   resourceVersion read; the change cause says `auto-rollback from revision N: <why>`,
//!   `rudder.io/rolled-back-from` names the failed revision, a Warning Event `RolledBack` and the
//!   condition `RolledBack=True` (reason AutoRollback) say why. The rollback is an ordinary
//!   rollout from there. Nothing happens when no revision is known good (a first rollout), and
//!   a known-good revision is never rolled back from, so two bad revisions cannot bounce
//!   between each other.

use rudder_client::cache::INDEX_OWNER_UID;
use rudder_client::conn::kind_ref;
use rudder_client::controller::Action;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use super::sets::{View, annotate_rs, annotation, revision};
use super::status::{self, TIMED_OUT};
use super::{Ctx, TEMPLATE_HASH_LABEL};
use crate::error::Error;
use crate::util::pods::{is_crash_looping, restarts};
use crate::util::rfc3339;
use rudder_client::api::decode_json;
use rudder_client::write::patch_status;

pub const AUTO_ROLLBACK: &str = "rudder.io/auto-rollback";
pub const KNOWN_GOOD: &str = "rudder.io/known-good";
pub const ROLLED_BACK_FROM: &str = "rudder.io/rolled-back-from";
/// Restarts of one pod of the new revision that count as failing even between back-offs.
pub const RESTARTS: i64 = 3;

fn enabled(view: &View) -> bool {
    annotation(&view.d.obj, AUTO_ROLLBACK) == "true"
}

/// Marks the new ReplicaSet good once its rollout completed.
pub async fn mark_good(ctx: &Ctx, view: &mut View) -> Result<(), Error> {
    if !enabled(view) || !status::is_complete(view) {
        return Ok(());
    }
    match view.new {
        Some(i) if annotation(&view.all[i], KNOWN_GOOD) != "true" => {
            annotate_rs(ctx, view, i, &[(KNOWN_GOOD, Some("true".into()))]).await
        }
        _ => Ok(()),
    }
}

/// Why the new revision is failing, if it is.
fn failing(ctx: &Ctx, view: &View) -> Option<String> {
    let new = view.new_rs()?;
    if annotation(new, KNOWN_GOOD) == "true" {
        return None;
    }
    let timed_out = view
        .d
        .obj
        .value
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Progressing" && c["reason"] == TIMED_OUT)
        });
    if timed_out {
        return Some("its progress deadline was exceeded".into());
    }
    ctx.pods
        .by_index(INDEX_OWNER_UID, new.uid())
        .iter()
        .find(|p| is_crash_looping(&p.value) || restarts(&p.value) >= RESTARTS)
        .map(|p| {
            format!(
                "pod {} is crash-looping ({} restarts)",
                p.name,
                restarts(&p.value)
            )
        })
}

/// Rolls back if the new revision fails; `Some` when it did (the reconcile ends there).
pub async fn check(ctx: &Ctx, view: &mut View) -> Result<Option<Action>, Error> {
    if !enabled(view) || view.d.paused {
        return Ok(None);
    }
    view.find_new();
    let Some(why) = failing(ctx, view) else {
        return Ok(None);
    };
    let Some(good) = view
        .old()
        .into_iter()
        .filter(|&i| annotation(&view.all[i], KNOWN_GOOD) == "true")
        .max_by_key(|&i| revision(&view.all[i]))
    else {
        return Ok(None);
    };
    let bad = view.new_rs().map(|r| revision(r)).unwrap_or(0);
    let good_rev = revision(&view.all[good]);
    let mut template = view.all[good]
        .value
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(TEMPLATE_HASH_LABEL);
    }
    let message = format!("Rolled back from revision {bad} to revision {good_rev}: {why}");
    // The condition first, then the template: a reconcile that reads the Deployment after the
    // template change then also sees the condition (a status merge patch replaces the whole
    // conditions list, so writing it after could be undone by a reconcile on a stale cache).
    let mut conds: Vec<Value> = view
        .d
        .obj
        .value
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    conds.retain(|c| c["type"] != "RolledBack");
    let now = rfc3339(ctx.clock.now());
    conds.push(
        json!({"type": "RolledBack", "status": "True", "reason": "AutoRollback",
        "message": message, "lastUpdateTime": now, "lastTransitionTime": now}),
    );
    let fresh = patch_status(ctx.api.as_ref(), &view.d.obj, json!({"conditions": conds})).await?;
    let mut d: Value = decode_json(&fresh)?;
    d["spec"]["template"] = template;
    let annotations = &mut d["metadata"]["annotations"];
    if !annotations.is_object() {
        *annotations = json!({});
    }
    annotations[ROLLED_BACK_FROM] = json!(bad.to_string());
    annotations["kubernetes.io/change-cause"] =
        json!(format!("auto-rollback from revision {bad}: {why}"));
    let req = pb::UpdateRequest {
        kind: Some(kind_ref("apps/v1", "Deployment")),
        namespace: view.d.obj.namespace.clone(),
        json: bytes::Bytes::from(d.to_string()),
        options: None,
    };
    ctx.api.update(req).await?;
    ctx.events
        .warning(&view.d.obj.value, "RolledBack", &message);
    // The update's event brings the next reconcile, which rolls the good template out.
    Ok(Some(Action::AwaitChange))
}
