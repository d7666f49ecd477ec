//! A Job's spec as the controller uses it, its selector, and the pods made from its template.
//!
//! The API server generates a Job's selector at create, as Kubernetes' job strategy does; the
//! client's fake does not, and a Job may bring its own selector, so the controller computes the
//! selector it uses regardless (the same one for a server-made Job): unless `manualSelector` is
//! true, it is the given
//! selector (if any) plus `batch.kubernetes.io/controller-uid=<uid>`, and every pod gets the
//! `controller-uid` and `job-name` labels (both the `batch.kubernetes.io/` and the legacy
//! spellings) next to the template's. A manual selector is used as written.

use rudder_api::k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use rudder_api::selector::LabelSelector;
use rudder_client::cache::CachedObject;
use serde_json::{Map, Value, json};

use super::policy::{Rule, SuccessRule, parse_rules, parse_success_rules};
use super::{
    COMPLETION_INDEX, CONTROLLER_UID, INDEX_FAILURE_COUNT, INDEX_IGNORED_FAILURE_COUNT, JOB_NAME,
    LEGACY_CONTROLLER_UID, LEGACY_JOB_NAME, TRACKING_FINALIZER,
};
use crate::error::Error;
use crate::util::str_at;
use crate::util::template::{generate_name_prefix, pod_from_template};

/// The environment variable an indexed pod reads its index from.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

#[derive(Debug, Clone)]
pub struct JobSpec {
    /// `None`: a work queue, done when any pod succeeds and none is left running.
    pub completions: Option<i64>,
    pub parallelism: i64,
    pub indexed: bool,
    pub backoff_limit: i64,
    pub backoff_limit_per_index: Option<i64>,
    pub max_failed_indexes: Option<i64>,
    pub active_deadline: Option<i64>,
    pub suspend: bool,
    pub manual_selector: bool,
    pub restart_on_failure: bool,
    pub failure_rules: Option<Vec<Rule>>,
    pub success_rules: Vec<SuccessRule>,
    /// Pods are replaced only once Failed, not while terminating (`podReplacementPolicy:
    /// Failed`, implied by a pod failure policy).
    pub replace_only_failed: bool,
    pub selector: LabelSelector,
    pub template: Value,
}

impl JobSpec {
    pub fn parse(job: &CachedObject) -> Result<JobSpec, Error> {
        let v = &job.value;
        let spec = v.get("spec").cloned().unwrap_or_else(|| json!({}));
        let opt = |p: &str| spec.pointer(p).and_then(Value::as_i64);
        let manual_selector = spec
            .get("manualSelector")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let failure_rules = match spec.get("podFailurePolicy") {
            None | Some(Value::Null) => None,
            Some(p) => Some(parse_rules(p).map_err(Error::Invalid)?),
        };
        let indexed = str_at(&spec, "/completionMode") == "Indexed";
        let completions = opt("/completions");
        if indexed && completions.is_none() {
            return Err(Error::Invalid(
                "spec.completions: Required value: when completion mode is Indexed".into(),
            ));
        }
        Ok(JobSpec {
            completions,
            parallelism: opt("/parallelism").unwrap_or(1).max(0),
            indexed,
            // The server's defaults, for a Job it did not default (the fake): unlimited beside a
            // per-index limit.
            backoff_limit: opt("/backoffLimit").unwrap_or(
                if opt("/backoffLimitPerIndex").is_some() {
                    i64::from(i32::MAX)
                } else {
                    6
                },
            ),
            backoff_limit_per_index: opt("/backoffLimitPerIndex"),
            max_failed_indexes: opt("/maxFailedIndexes"),
            active_deadline: opt("/activeDeadlineSeconds"),
            suspend: spec
                .get("suspend")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            manual_selector,
            restart_on_failure: str_at(&spec, "/template/spec/restartPolicy") == "OnFailure",
            replace_only_failed: failure_rules.is_some()
                || str_at(&spec, "/podReplacementPolicy") == "Failed",
            failure_rules,
            success_rules: spec
                .get("successPolicy")
                .map(parse_success_rules)
                .unwrap_or_default(),
            selector: selector(job, &spec, manual_selector)?,
            template: spec.get("template").cloned().unwrap_or(Value::Null),
        })
    }

    /// `completions` for indexed Jobs (always set there), for index bounds.
    pub fn index_bound(&self) -> i64 {
        self.completions.unwrap_or(0)
    }

    pub fn per_index(&self) -> bool {
        self.indexed && self.backoff_limit_per_index.is_some()
    }
}

/// The selector the controller uses (see the module doc).
fn selector(job: &CachedObject, spec: &Value, manual: bool) -> Result<LabelSelector, Error> {
    let given = spec.get("selector").cloned().filter(|s| !s.is_null());
    let mut sel: metav1::LabelSelector = match given {
        Some(s) => {
            serde_json::from_value(s).map_err(|e| Error::Invalid(format!("spec.selector: {e}")))?
        }
        None => metav1::LabelSelector::default(),
    };
    if manual {
        let parsed = LabelSelector::from_object(&sel)
            .map_err(|e| Error::Invalid(format!("spec.selector: {e}")))?;
        if parsed.is_empty() {
            return Err(Error::Invalid(
                "spec.selector: Required value: with manualSelector".into(),
            ));
        }
        return Ok(parsed);
    }
    sel.match_labels
        .get_or_insert_with(Default::default)
        .entry(CONTROLLER_UID.to_string())
        .or_insert_with(|| job.uid().to_string());
    LabelSelector::from_object(&sel).map_err(|e| Error::Invalid(format!("spec.selector: {e}")))
}

/// The labels the controller adds to every pod of a Job without a manual selector.
fn generated_labels(job: &Value) -> [(&'static str, String); 4] {
    let uid = str_at(job, "/metadata/uid").to_string();
    let name = str_at(job, "/metadata/name").to_string();
    [
        (CONTROLLER_UID, uid.clone()),
        (LEGACY_CONTROLLER_UID, uid),
        (JOB_NAME, name.clone()),
        (LEGACY_JOB_NAME, name),
    ]
}

/// The generateName of an indexed pod, `<job>-<index>-`, shortened so the random suffix fits.
pub fn indexed_generate_name(job: &str, index: i64) -> String {
    let tail = format!("-{index}-");
    let max = 63 - 5;
    if job.len() + tail.len() <= max {
        return format!("{job}{tail}");
    }
    let head: String = job.chars().take(max.saturating_sub(tail.len())).collect();
    format!("{head}{tail}")
}

/// Index details of a pod to create: its index and, with a per-index limit, the failure counts
/// it inherits from the pod it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexInfo {
    pub index: i64,
    pub failures: Option<(i64, i64)>,
}

fn map_entry<'a>(obj: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    let meta = obj
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
    let Some(Value::Object(meta)) = meta else {
        unreachable!("a pod made from a template is an object")
    };
    let m = meta.entry(field).or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    match m {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// The pod to create for `job` (as Kubernetes' `manageJob` builds it): the template with the
/// generated labels, the tracking finalizer and, for an indexed Job, the index annotation and
/// label, `JOB_COMPLETION_INDEX`, hostname `<job>-<index>` and name `<job>-<index>-<random>`.
pub fn pod_for(job: &CachedObject, spec: &JobSpec, index: Option<IndexInfo>) -> Value {
    let generate = match index {
        Some(i) => indexed_generate_name(&job.name, i.index),
        None => generate_name_prefix(&job.name),
    };
    let mut pod = pod_from_template(&spec.template, &job.namespace, &job.value, &generate, None);
    if !spec.manual_selector {
        let labels = map_entry(&mut pod, "labels");
        for (k, v) in generated_labels(&job.value) {
            labels.entry(k).or_insert(json!(v));
        }
    }
    let finalizers = pod
        .pointer_mut("/metadata")
        .and_then(Value::as_object_mut)
        .map(|m| m.entry("finalizers").or_insert_with(|| json!([])));
    if let Some(Value::Array(fs)) = finalizers
        && !fs.iter().any(|f| f == TRACKING_FINALIZER)
    {
        fs.push(json!(TRACKING_FINALIZER));
    }
    let Some(ix) = index else { return pod };
    let annotations = map_entry(&mut pod, "annotations");
    annotations.insert(COMPLETION_INDEX.into(), json!(ix.index.to_string()));
    if let Some((failed, ignored)) = ix.failures {
        annotations.insert(INDEX_FAILURE_COUNT.into(), json!(failed.to_string()));
        if ignored > 0 {
            annotations.insert(
                INDEX_IGNORED_FAILURE_COUNT.into(),
                json!(ignored.to_string()),
            );
        }
    }
    map_entry(&mut pod, "labels").insert(COMPLETION_INDEX.into(), json!(ix.index.to_string()));
    let podspec = &mut pod["spec"];
    podspec["hostname"] = json!(format!("{}-{}", job.name, ix.index));
    let env = json!({"name": INDEX_ENV, "valueFrom": {"fieldRef": {
        "fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}}});
    for list in ["containers", "initContainers"] {
        for c in podspec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let vars = c
                .as_object_mut()
                .map(|c| c.entry("env").or_insert_with(|| json!([])));
            if let Some(Value::Array(vars)) = vars
                && !vars.iter().any(|e| e["name"] == INDEX_ENV)
            {
                vars.push(env.clone());
            }
        }
    }
    pod
}

/// Seconds a Job may run (`activeDeadlineSeconds`) left at `now`, from `startTime`.
pub fn deadline_left(
    spec: &JobSpec,
    start: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Option<i64> {
    let d = spec.active_deadline?;
    let start = start?;
    Some(d - (now.as_second() - start.as_second()))
}

/// `spec.ttlSecondsAfterFinished`, if set.
pub fn ttl_seconds(job: &Value) -> Option<i64> {
    job.pointer("/spec/ttlSecondsAfterFinished")
        .and_then(Value::as_i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: Value) -> CachedObject {
        let v = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "ns", "uid": "u1"}, "spec": spec});
        CachedObject::new("batch/v1", "Job", "ns", "pi", 1, v)
    }

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "pi"}}, "spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}]}]}})
    }

    #[test]
    fn generated_selector_and_labels() {
        let j = job(json!({"template": template()}));
        let s = JobSpec::parse(&j).unwrap();
        assert_eq!(
            s.selector.to_string(),
            "batch.kubernetes.io/controller-uid=u1"
        );
        let p = pod_for(&j, &s, None);
        let labels = &p["metadata"]["labels"];
        assert_eq!(labels["app"], "pi");
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], "u1");
        assert_eq!(labels["controller-uid"], "u1");
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(p["metadata"]["finalizers"], json!([TRACKING_FINALIZER]));
        assert_eq!(p["metadata"]["generateName"], "pi-");
        assert!(p["spec"].get("hostname").is_none());

        // A manual selector is used as is, and no label is added.
        let j = job(
            json!({"manualSelector": true, "selector": {"matchLabels": {"app": "pi"}}, "template": template()}),
        );
        let s = JobSpec::parse(&j).unwrap();
        assert_eq!(s.selector.to_string(), "app=pi");
        assert!(
            pod_for(&j, &s, None)["metadata"]["labels"]
                .get("job-name")
                .is_none()
        );
        let j = job(json!({"manualSelector": true, "template": template()}));
        assert!(JobSpec::parse(&j).is_err());
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let j = job(json!({"completionMode": "Indexed", "completions": 3, "template": template()}));
        let s = JobSpec::parse(&j).unwrap();
        let ix = IndexInfo {
            index: 2,
            failures: Some((1, 0)),
        };
        let p = pod_for(&j, &s, Some(ix));
        assert_eq!(p["metadata"]["generateName"], "pi-2-");
        assert_eq!(p["metadata"]["annotations"][COMPLETION_INDEX], "2");
        assert_eq!(p["metadata"]["annotations"][INDEX_FAILURE_COUNT], "1");
        assert!(
            p["metadata"]["annotations"]
                .get(INDEX_IGNORED_FAILURE_COUNT)
                .is_none()
        );
        assert_eq!(p["metadata"]["labels"][COMPLETION_INDEX], "2");
        assert_eq!(p["spec"]["hostname"], "pi-2");
        let env = &p["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["name"], "A");
        assert_eq!(
            env[1]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        assert_eq!(indexed_generate_name(&"x".repeat(70), 12).len(), 58);
        assert!(JobSpec::parse(&job(json!({"completionMode": "Indexed"}))).is_err());
    }
}
