//! Deleting a terminating namespace's content, one resource at a time, as Kubernetes' namespaced
//! resources deleter: list it live (the controller keeps no cache of every kind), delete each
//! object not already being deleted (propagation Background, its uid as precondition; pods
//! get their default grace period), then list again and report what is left: how many, their
//! finalizers, and how long that may take.

use std::collections::BTreeMap;

use rudder_client::Api;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use serde_json::Value;

use super::conditions::{gvr_name, resource_name};
use crate::util::{parse_time, str_at};

/// How long objects held by finalizers are expected to take (Kubernetes'
/// `finalizerEstimateSeconds`).
pub const FINALIZER_ESTIMATE_SECS: u64 = 15;

/// A namespaced resource, as discovery lists its preferred version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn is_pod(&self) -> bool {
        self.group.is_empty() && self.kind == "Pod"
    }

    /// `pods.`, `deployments.apps`: the name the conditions use.
    pub fn name(&self) -> String {
        resource_name(&self.plural, &self.group)
    }
}

/// The preferred version of every namespaced kind discovery lists, and a message for each
/// whose group/version does not parse (those are skipped).
pub fn namespaced(resources: &[pb::ApiResource]) -> (Vec<Resource>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for r in resources.iter().filter(|r| r.namespaced && r.preferred) {
        let gv = if r.group.is_empty() {
            r.version.clone()
        } else {
            format!("{}/{}", r.group, r.version)
        };
        if r.version.is_empty() || r.version.contains('/') || r.group.contains('/') {
            bad.push(format!("unexpected GroupVersion string: {gv}"));
            continue;
        }
        out.push(Resource {
            group: r.group.clone(),
            version: r.version.clone(),
            kind: r.kind.clone(),
            plural: r.plural.clone(),
        });
    }
    (out, bad)
}

/// What is left of one resource after a pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Left {
    pub count: usize,
    /// Objects left, by each finalizer they carry.
    pub finalizers: BTreeMap<String, usize>,
    /// Seconds the rest may take to go (graceful pods, finalizers).
    pub estimate_secs: u64,
    /// A list or delete that failed, or objects that should have gone and did not.
    pub error: Option<String>,
}

/// Lists `r` in `ns`, deletes every object of it, and reports what is left.
pub async fn delete_all(api: &dyn Api, r: &Resource, ns: &str, now: jiff::Timestamp) -> Left {
    let items = match list(api, r, ns).await {
        Ok(items) => items,
        Err(e) => {
            return Left {
                error: Some(e),
                ..Default::default()
            };
        }
    };
    if items.is_empty() {
        return Left::default();
    }
    let mut error = None;
    for o in items
        .iter()
        .filter(|o| o.pointer("/metadata/deletionTimestamp").is_none())
    {
        let req = pb::DeleteRequest {
            kind: Some(kind_ref(&r.api_version(), &r.kind)),
            namespace: ns.to_string(),
            name: str_at(o, "/metadata/name").to_string(),
            precondition_uid: str_at(o, "/metadata/uid").to_string(),
            propagation_policy: "Background".into(),
            ..Default::default()
        };
        match api.delete(req).await {
            // Gone already, or replaced (the uid precondition): nothing of ours to delete.
            Ok(_) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let left = match list(api, r, ns).await {
        Ok(items) => items,
        Err(e) => {
            return Left {
                count: items.len(),
                error: Some(e),
                ..Default::default()
            };
        }
    };
    let (mut out, unexpected) = what_is_left(r, &left, now);
    out.error = error.or_else(|| {
        unexpected.then(|| {
            format!(
                "unexpected items still remain in namespace: {ns} for gvr: {}",
                gvr_name(&r.group, &r.version, &r.plural)
            )
        })
    });
    out
}

/// Counts what is left of `r`, and whether some of it should have gone at once (objects
/// without finalizers other than gracefully terminating pods).
fn what_is_left(r: &Resource, items: &[Value], now: jiff::Timestamp) -> (Left, bool) {
    let mut out = Left {
        count: items.len(),
        ..Default::default()
    };
    let mut unexpected = false;
    for o in items {
        let fs: Vec<&str> = o
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for f in &fs {
            *out.finalizers.entry(f.to_string()).or_default() += 1;
        }
        if !fs.is_empty() {
            out.estimate_secs = out.estimate_secs.max(FINALIZER_ESTIMATE_SECS);
        } else if r.is_pod() {
            out.estimate_secs = out.estimate_secs.max(pod_estimate(o, now));
        } else {
            unexpected = true;
        }
    }
    (out, unexpected)
}

/// Seconds until a terminating pod's deadline (its grace period when it is not marked yet);
/// none for a finished pod.
fn pod_estimate(pod: &Value, now: jiff::Timestamp) -> u64 {
    if matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed") {
        return 0;
    }
    match parse_time(pod.pointer("/metadata/deletionTimestamp")) {
        Some(at) => (at.as_second() - now.as_second()).max(0) as u64,
        None => pod
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(rudder_api::meta::DEFAULT_POD_GRACE_SECONDS as u64),
    }
}

async fn list(api: &dyn Api, r: &Resource, ns: &str) -> Result<Vec<Value>, String> {
    let resp = api
        .list(pb::ListRequest {
            kind: Some(kind_ref(&r.api_version(), &r.kind)),
            namespace: ns.to_string(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    resp.items
        .iter()
        .map(|o| rudder_client::api::decode_json(o).map_err(|e| e.to_string()))
        .collect()
}

/// When to look at a namespace with content left again: Kubernetes' `estimate / 2 + 1`
/// seconds, but, as a back-off, no later than half the time it has been terminating (at least
/// a second), so content that goes quickly is noticed quickly.
pub fn requeue_after(estimate_secs: u64, terminating_for_secs: u64) -> std::time::Duration {
    let kubernetes = estimate_secs / 2 + 1;
    let backoff = (terminating_for_secs / 2).max(1);
    std::time::Duration::from_secs(kubernetes.min(backoff))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn res(
        group: &str,
        version: &str,
        kind: &str,
        namespaced: bool,
        preferred: bool,
    ) -> pb::ApiResource {
        pb::ApiResource {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()),
            namespaced,
            preferred,
            ..Default::default()
        }
    }

    #[test]
    fn discovery_gives_preferred_namespaced_resources() {
        let (ok, bad) = namespaced(&[
            res("", "v1", "Pod", true, true),
            res("", "v1", "Node", false, true),
            res("autoscaling", "v1", "HorizontalPodAutoscaler", true, false),
            res("autoscaling", "v2", "HorizontalPodAutoscaler", true, true),
            res("a/b", "v1", "Thing", true, true),
            res("x", "", "Other", true, true),
        ]);
        let names: Vec<String> = ok
            .iter()
            .map(|r| format!("{} {}", r.api_version(), r.kind))
            .collect();
        assert_eq!(names, ["v1 Pod", "autoscaling/v2 HorizontalPodAutoscaler"]);
        assert_eq!(
            bad,
            [
                "unexpected GroupVersion string: a/b/v1",
                "unexpected GroupVersion string: x/"
            ]
        );
        assert_eq!(ok[0].name(), "pods.");
        assert!(ok[0].is_pod() && !ok[1].is_pod());
    }

    #[test]
    fn what_is_left_counts_finalizers_and_estimates() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap_or_default();
        let pods = Resource {
            group: String::new(),
            version: "v1".into(),
            kind: "Pod".into(),
            plural: "pods".into(),
        };
        let at = |s: i64| crate::util::rfc3339(jiff::Timestamp::from_second(s).unwrap_or_default());
        let (left, unexpected) = what_is_left(
            &pods,
            &[
                json!({"metadata": {"deletionTimestamp": at(1_000_020)}}),
                json!({"metadata": {"deletionTimestamp": at(999_000)}}),
                json!({"metadata": {"finalizers": ["example.com/x"]}}),
            ],
            now,
        );
        assert_eq!(left.count, 3);
        assert_eq!(left.finalizers.get("example.com/x"), Some(&1));
        assert_eq!(left.estimate_secs, 20);
        assert!(!unexpected, "terminating pods are expected to linger");
        let cms = Resource {
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            ..pods.clone()
        };
        let (_, unexpected) = what_is_left(&cms, &[json!({"metadata": {}})], now);
        assert!(unexpected, "a plain object should have gone");
        let (held, unexpected) = what_is_left(
            &cms,
            &[json!({"metadata": {"finalizers": ["a/b", "c/d"]}})],
            now,
        );
        assert_eq!(
            (held.estimate_secs, unexpected),
            (FINALIZER_ESTIMATE_SECS, false)
        );
        assert_eq!(held.finalizers.len(), 2);
        assert_eq!(
            pod_estimate(&json!({"spec": {"terminationGracePeriodSeconds": 7}}), now),
            7
        );
        assert_eq!(
            pod_estimate(&json!({"status": {"phase": "Failed"}}), now),
            0
        );
    }

    #[test]
    fn requeue_backs_off_up_to_kubernetes_estimate() {
        let s = std::time::Duration::from_secs;
        assert_eq!(requeue_after(15, 0), s(1));
        assert_eq!(requeue_after(15, 6), s(3));
        assert_eq!(requeue_after(15, 600), s(8), "15 / 2 + 1");
        assert_eq!(requeue_after(30, 600), s(16));
        assert_eq!(requeue_after(0, 600), s(1));
    }
}
