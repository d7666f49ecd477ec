//! The StatefulSet's status (`updateStatus`, `completeRollingUpdate`) and its pod Events.

use jiff::Timestamp;
use rudder_client::ClientError;
use serde_json::{Value, json};

use super::history::Revisions;
use super::identity::revision_of;
use super::update::{Outcome, is_created, running_available, running_ready};
use super::{Ctx, Ss};
use crate::error::Error;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Status {
    pub replicas: i64,
    pub ready: i64,
    pub available: i64,
    pub current: i64,
    pub updated: i64,
    pub current_revision: String,
    pub update_revision: String,
    pub collision_count: i64,
}

/// Counts the pass's pods (replicas and condemned alike). A RollingUpdate whose pods are all
/// updated and ready is complete: the update revision becomes the current one.
pub fn compute(ss: &Ss, revs: &Revisions, out: &Outcome, now: Timestamp) -> Status {
    let mut st = Status {
        current_revision: revs.current.name.clone(),
        update_revision: revs.update.name.clone(),
        collision_count: revs.collision_count,
        ..Default::default()
    };
    for p in out.replicas.iter().flatten().chain(out.condemned.iter()) {
        if is_created(p) {
            st.replicas += 1;
        }
        if running_ready(p) {
            st.ready += 1;
            if running_available(p, ss.min_ready, now) {
                st.available += 1;
            }
        }
        if is_created(p) && !p.is_deleting() {
            let rev = revision_of(p);
            if rev == st.current_revision {
                st.current += 1;
            }
            if rev == st.update_revision {
                st.updated += 1;
            }
        }
    }
    if ss.rolling.is_some() && st.updated == st.replicas && st.ready == st.replicas {
        st.current = st.updated;
        st.current_revision = st.update_revision.clone();
    }
    st
}

/// Writes the status with `observedGeneration`, unless nothing changed.
pub async fn write(ctx: &Ctx, ss: &Ss, st: &Status) -> Result<(), Error> {
    let status = json!({
        "replicas": st.replicas,
        "readyReplicas": st.ready,
        "availableReplicas": st.available,
        "currentReplicas": st.current,
        "updatedReplicas": st.updated,
        "currentRevision": st.current_revision,
        "updateRevision": st.update_revision,
        "collisionCount": st.collision_count,
        "observedGeneration": ss.obj.generation(),
    });
    let current = ss.obj.value.get("status").cloned().unwrap_or(Value::Null);
    let same = status
        .as_object()
        .is_some_and(|m| m.iter().all(|(k, v)| current.get(k) == Some(v)));
    if !same {
        rudder_client::write::patch_status(ctx.api.as_ref(), &ss.obj, status).await?;
    }
    Ok(())
}

/// The Event for a pod write (`recordPodEvent`): `SuccessfulCreate` "create Pod web-0 in
/// StatefulSet web successful", or `FailedCreate` with the error.
pub fn pod_event(ctx: &Ctx, ss: &Ss, verb: &str, pod: &str, err: Option<&ClientError>) {
    let mut title = verb.to_string();
    if let Some(f) = title.get_mut(0..1) {
        f.make_ascii_uppercase();
    }
    let set = &ss.obj.name;
    match err {
        None => {
            let m = format!("{verb} Pod {pod} in StatefulSet {set} successful");
            ctx.events
                .normal(&ss.obj.value, &format!("Successful{title}"), &m);
        }
        Some(e) => {
            let m = format!("{verb} Pod {pod} in StatefulSet {set} failed error: {e}");
            ctx.events
                .warning(&ss.obj.value, &format!("Failed{title}"), &m);
        }
    }
}
