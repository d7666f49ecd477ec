//! A Job's status as the controller reads and writes it: counters, uncounted terminated pods,
//! index sets and conditions (Kubernetes' `ensureJobConditionStatus` rules), and the guarded
//! status write.
//!
//! Every status write carries the Job's resourceVersion as a precondition: the status holds the
//! counters of pods whose tracking finalizer is already gone, so a write from a stale copy could
//! count a pod twice or lose one. A stale write is a conflict, and the reconcile retries.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use rudder_client::cache::CachedObject;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use crate::error::Error;
use crate::util::{int_at, rfc3339, str_at};

pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const FAILURE_TARGET: &str = "FailureTarget";
pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
pub const SUSPENDED: &str = "Suspended";

/// A condition to set: type, status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub ty: &'static str,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn new(ty: &'static str, reason: &str, message: &str) -> Cond {
        Cond {
            ty,
            status: "True",
            reason: reason.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub active: i64,
    pub ready: i64,
    pub terminating: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub start_time: Option<String>,
    pub completion_time: Option<String>,
    pub conditions: Vec<Value>,
    pub uncounted_succeeded: BTreeSet<String>,
    pub uncounted_failed: BTreeSet<String>,
    pub completed_indexes: Option<String>,
    pub failed_indexes: Option<String>,
}

fn uid_set(v: &Value, pointer: &str) -> BTreeSet<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

impl Status {
    pub fn read(job: &Value) -> Status {
        let s = job.get("status").cloned().unwrap_or(Value::Null);
        let opt_str = |p: &str| s.pointer(p).and_then(Value::as_str).map(String::from);
        Status {
            active: int_at(&s, "/active", 0),
            ready: int_at(&s, "/ready", 0),
            terminating: int_at(&s, "/terminating", 0),
            succeeded: int_at(&s, "/succeeded", 0),
            failed: int_at(&s, "/failed", 0),
            start_time: opt_str("/startTime"),
            completion_time: opt_str("/completionTime"),
            conditions: s
                .get("conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            uncounted_succeeded: uid_set(&s, "/uncountedTerminatedPods/succeeded"),
            uncounted_failed: uid_set(&s, "/uncountedTerminatedPods/failed"),
            completed_indexes: opt_str("/completedIndexes"),
            failed_indexes: opt_str("/failedIndexes"),
        }
    }

    /// The status as a merge patch: every field named, absent ones as `null` so they go.
    pub fn to_json(&self) -> Value {
        let list = |s: &BTreeSet<String>| {
            if s.is_empty() { Value::Null } else { json!(s) }
        };
        json!({
            "active": self.active,
            "ready": self.ready,
            "terminating": self.terminating,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "startTime": self.start_time,
            "completionTime": self.completion_time,
            "conditions": if self.conditions.is_empty() { Value::Null } else { json!(self.conditions) },
            "uncountedTerminatedPods": {
                "succeeded": list(&self.uncounted_succeeded),
                "failed": list(&self.uncounted_failed),
            },
            "completedIndexes": self.completed_indexes,
            "failedIndexes": self.failed_indexes,
        })
    }

    pub fn condition(&self, ty: &str) -> Option<&Value> {
        self.conditions.iter().find(|c| c["type"] == ty)
    }

    pub fn is_true(&self, ty: &str) -> bool {
        self.condition(ty).is_some_and(|c| c["status"] == "True")
    }

    /// A condition already set to True, as (reason, message).
    pub fn true_condition(&self, ty: &str) -> Option<(String, String)> {
        let c = self.condition(ty).filter(|c| c["status"] == "True")?;
        Some((
            str_at(c, "/reason").to_string(),
            str_at(c, "/message").to_string(),
        ))
    }

    /// Sets a condition as Kubernetes' `ensureJobConditionStatus`: an existing one is replaced
    /// (with new transition times) only if its status, reason or message differ; a missing one
    /// is added unless it would be False. Returns whether anything changed.
    pub fn ensure(&mut self, c: &Cond, now: jiff::Timestamp) -> bool {
        let t = rfc3339(now);
        let fresh = json!({
            "type": c.ty, "status": c.status, "reason": c.reason, "message": c.message,
            "lastProbeTime": t, "lastTransitionTime": t,
        });
        if let Some(existing) = self.conditions.iter_mut().find(|x| x["type"] == c.ty) {
            let same = existing["status"] == c.status
                && str_at(existing, "/reason") == c.reason
                && str_at(existing, "/message") == c.message;
            if same {
                return false;
            }
            *existing = fresh;
            return true;
        }
        if c.status == "False" {
            return false;
        }
        self.conditions.push(fresh);
        true
    }

    pub fn has_uncounted(&self) -> bool {
        !self.uncounted_succeeded.is_empty() || !self.uncounted_failed.is_empty()
    }
}

/// The finished condition of a Job (Complete or Failed, True), if any.
pub fn finished(job: &Value) -> Option<&'static str> {
    let st = Status::read(job);
    [COMPLETE, FAILED].into_iter().find(|t| st.is_true(t))
}

/// When a finished Job finished: its finished condition's lastTransitionTime.
pub fn finish_time(job: &Value) -> Option<jiff::Timestamp> {
    let st = Status::read(job);
    let ty = finished(job)?;
    crate::util::parse_time(st.condition(ty)?.get("lastTransitionTime"))
}

/// Whether writing `patch` (a merge patch) would change `current`.
pub fn differs(patch: &Value, current: &Value) -> bool {
    match (patch, current) {
        (Value::Object(p), Value::Object(c)) => p.iter().any(|(k, v)| match (v, c.get(k)) {
            (Value::Null, None | Some(Value::Null)) => false,
            (v, None) => !v.is_null(),
            (v, Some(cv)) => differs(v, cv),
        }),
        (Value::Object(p), _) => p.values().any(|v| !v.is_null()) || p.is_empty(),
        _ => patch != current,
    }
}

/// Writes `st` as the Job's status unless nothing changes, guarded by the Job's
/// resourceVersion; returns the Job as stored afterwards.
pub async fn write(
    api: &dyn rudder_client::Api,
    job: &Arc<CachedObject>,
    st: &Status,
) -> Result<Arc<CachedObject>, Error> {
    let status = st.to_json();
    if !differs(&status, job.value.get("status").unwrap_or(&Value::Null)) {
        return Ok(Arc::clone(job));
    }
    let patch = json!({
        "metadata": {"resourceVersion": job.resource_version.to_string()},
        "status": status,
    });
    let req = pb::PatchRequest {
        kind: Some(kind_ref(&job.api_version, &job.kind)),
        namespace: job.namespace.clone(),
        name: job.name.clone(),
        patch_type: pb::PatchType::Merge as i32,
        patch: Bytes::from(patch.to_string()),
        status: true,
        options: None,
    };
    let stored = api.patch(req).await?;
    CachedObject::from_wire(&stored)
        .map(Arc::new)
        .ok_or_else(|| Error::Invalid(format!("Job {} came back unreadable", job.key())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_change_only_when_they_differ() {
        let mut st = Status::read(&json!({}));
        let t0 = jiff::Timestamp::from_second(0).unwrap();
        let t1 = jiff::Timestamp::from_second(60).unwrap();
        let resumed = Cond {
            ty: SUSPENDED,
            status: "False",
            reason: "JobResumed".into(),
            message: "Job resumed".into(),
        };
        assert!(!st.ensure(&resumed, t0), "a False condition is not added");
        let suspended = Cond::new(SUSPENDED, "JobSuspended", "Job suspended");
        assert!(st.ensure(&suspended, t0));
        assert!(
            !st.ensure(&suspended, t1),
            "unchanged: same transition time"
        );
        assert_eq!(
            st.conditions[0]["lastTransitionTime"],
            "1970-01-01T00:00:00Z"
        );
        assert!(st.ensure(&resumed, t1));
        assert_eq!(st.conditions.len(), 1);
        assert_eq!(st.conditions[0]["status"], "False");
        assert!(!st.is_true(SUSPENDED));
    }

    #[test]
    fn null_fields_remove_and_no_op_writes_are_seen() {
        let current = json!({"active": 1, "uncountedTerminatedPods": {"succeeded": ["a"]}});
        assert!(!differs(&json!({"active": 1, "startTime": null}), &current));
        assert!(differs(
            &json!({"uncountedTerminatedPods": {"succeeded": null}}),
            &current
        ));
        assert!(differs(&json!({"active": 2}), &current));
        assert!(differs(&json!({"ready": 0}), &current));
        let st = Status::read(&json!({"status": current}));
        assert_eq!(st.uncounted_succeeded.len(), 1);
        assert_eq!(Status::read(&json!({"status": st.to_json()})), st);
    }
}
