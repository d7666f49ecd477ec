//! Workload validation (apps/v1, batch/v1): selectors and the templates they must match, replica
//! counts, update strategies, Job and CronJob rules, and what an update may not change.

use std::borrow::Cow;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, ReplicaSet,
    ReplicaSetSpec, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaimVolumeSource, PodTemplateSpec, ReplicationController, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::cron::validate_schedule;
use super::helpers::{
    Errs, Path, dns_subdomain, enum_value, immutable, int_or_percent, label_selector,
    labels_string, non_negative, opt_enum, required_str,
};
use super::pod::validate_pod_template;
use super::{FieldError, Validate};

/// Checks a required, non-empty selector and that the template's labels satisfy it, then the
/// template itself; `restart` lists the restart policies the workload's pods may use.
fn selector_and_template(
    errs: &mut Errs,
    spec: &Path,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    restart: &[&str],
) {
    let sel_path = spec.child("selector");
    let tpl_path = spec.child("template");
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty());
    if empty {
        errs.push(FieldError::required(&sel_path));
    } else if let Some(sel) = label_selector(errs, &sel_path, selector) {
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        if !sel.matches(&labels) {
            errs.push(FieldError::invalid(
                tpl_path.child("metadata").child("labels"),
                labels_string(Some(&labels)),
                "`selector` does not match template `labels`",
            ));
        }
    }
    errs.extend(validate_pod_template(template, &tpl_path));
    restart_policy(errs, &tpl_path, template, restart);
}

/// The template's (defaulted) restart policy must be one the controller can honour.
fn restart_policy(errs: &mut Errs, tpl_path: &Path, template: &PodTemplateSpec, allowed: &[&str]) {
    if let Some(policy) = template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
    {
        enum_value(
            errs,
            &tpl_path.child("spec").child("restartPolicy"),
            policy,
            allowed,
        );
    }
}

/// A rolling update's surge and unavailability: int or percent, not both zero.
fn surge_and_unavailable(
    errs: &mut Errs,
    path: &Path,
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
) {
    let surge = max_surge.and_then(|v| int_or_percent(errs, &path.child("maxSurge"), v, false));
    let unavailable_path = path.child("maxUnavailable");
    let unavailable =
        max_unavailable.and_then(|v| int_or_percent(errs, &unavailable_path, v, true));
    if let (Some((0, _)), Some((0, _))) = (surge, unavailable) {
        errs.push(FieldError::invalid(
            unavailable_path,
            0,
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

const ALWAYS: &[&str] = &["Always"];

/// The parts of an apps/v1 spec that [`apps_common`] checks.
trait AppsSpec {
    fn selector(&self) -> &LabelSelector;
    /// The pod template as the controller will stamp it out, if there is one.
    fn pod_template(&self) -> Option<Cow<'_, PodTemplateSpec>>;
}

macro_rules! apps_spec {
    ($($t:ty),*) => {
        $(impl AppsSpec for $t {
            fn selector(&self) -> &LabelSelector {
                &self.selector
            }
            fn pod_template(&self) -> Option<Cow<'_, PodTemplateSpec>> {
                Some(Cow::Borrowed(&self.template))
            }
        })*
    };
}

apps_spec!(DeploymentSpec, DaemonSetSpec);

impl AppsSpec for ReplicaSetSpec {
    fn selector(&self) -> &LabelSelector {
        &self.selector
    }
    fn pod_template(&self) -> Option<Cow<'_, PodTemplateSpec>> {
        self.template.as_ref().map(Cow::Borrowed)
    }
}

impl AppsSpec for StatefulSetSpec {
    fn selector(&self) -> &LabelSelector {
        &self.selector
    }
    fn pod_template(&self) -> Option<Cow<'_, PodTemplateSpec>> {
        Some(Cow::Owned(with_claim_volumes(self)))
    }
}

/// What the apps/v1 kinds share: counts that may not be negative, a selector matching the
/// template, and (on update) a selector that stays put, since changing it would orphan the
/// pods the controller already owns.
fn apps_common<S: AppsSpec>(
    errs: &mut Errs,
    counts: &[(&str, Option<i32>)],
    spec: &S,
    old: Option<&S>,
) {
    let p = Path::new("spec");
    for (field, v) in counts {
        non_negative(errs, &p.child(field), *v);
    }
    match spec.pod_template() {
        Some(t) => selector_and_template(errs, &p, spec.selector(), &t, ALWAYS),
        None => errs.push(FieldError::required(p.child("template"))),
    }
    if let Some(old) = old {
        immutable(errs, &p.child("selector"), spec.selector(), old.selector());
    }
}

/// An update strategy's type (absent means `RollingUpdate`), checked against `supported`.
fn strategy_type<'a>(
    errs: &mut Errs,
    path: &Path,
    ty: Option<&'a str>,
    supported: &[&str],
) -> &'a str {
    let ty = ty.unwrap_or("RollingUpdate");
    enum_value(errs, &path.child("type"), ty, supported);
    ty
}

impl Validate for Deployment {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required("spec")];
        };
        let p = Path::new("spec");
        let mut errs = Vec::new();
        let counts = [
            ("replicas", spec.replicas),
            ("minReadySeconds", spec.min_ready_seconds),
            ("revisionHistoryLimit", spec.revision_history_limit),
            ("progressDeadlineSeconds", spec.progress_deadline_seconds),
        ];
        apps_common(&mut errs, &counts, spec, old.and_then(|o| o.spec.as_ref()));
        if let Some(strategy) = spec.strategy.as_ref() {
            let sp = p.child("strategy");
            let ty = strategy_type(
                &mut errs,
                &sp,
                strategy.type_.as_deref(),
                &["Recreate", "RollingUpdate"],
            );
            let rp = sp.child("rollingUpdate");
            match strategy.rolling_update.as_ref() {
                Some(_) if ty == "Recreate" => errs.push(FieldError::forbidden(
                    rp,
                    "may not be specified when strategy `type` is 'Recreate'",
                )),
                Some(ru) => surge_and_unavailable(
                    &mut errs,
                    &rp,
                    ru.max_surge.as_ref(),
                    ru.max_unavailable.as_ref(),
                ),
                None => {}
            }
        }
        if let (Some(deadline), Some(min_ready)) =
            (spec.progress_deadline_seconds, spec.min_ready_seconds)
            && deadline <= min_ready
        {
            errs.push(FieldError::invalid(
                p.child("progressDeadlineSeconds"),
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
        errs
    }
}

impl Validate for ReplicaSet {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required("spec")];
        };
        let mut errs = Vec::new();
        let counts = [
            ("replicas", spec.replicas),
            ("minReadySeconds", spec.min_ready_seconds),
        ];
        apps_common(&mut errs, &counts, spec, old.and_then(|o| o.spec.as_ref()));
        errs
    }
}

impl Validate for ReplicationController {
    /// As a ReplicaSet, with a map selector (required, after defaulting from the template) that
    /// may change.
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required("spec")];
        };
        let p = Path::new("spec");
        let mut errs = Vec::new();
        non_negative(&mut errs, &p.child("replicas"), spec.replicas);
        non_negative(
            &mut errs,
            &p.child("minReadySeconds"),
            spec.min_ready_seconds,
        );
        let selector = LabelSelector {
            match_labels: spec.selector.clone(),
            match_expressions: None,
        };
        match spec.template.as_ref() {
            Some(t) => selector_and_template(&mut errs, &p, &selector, t, ALWAYS),
            None => errs.push(FieldError::required(p.child("template"))),
        }
        errs
    }
}

impl Validate for DaemonSet {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required("spec")];
        };
        let mut errs = Vec::new();
        let counts = [
            ("minReadySeconds", spec.min_ready_seconds),
            ("revisionHistoryLimit", spec.revision_history_limit),
        ];
        apps_common(&mut errs, &counts, spec, old.and_then(|o| o.spec.as_ref()));
        if let Some(strategy) = spec.update_strategy.as_ref() {
            let sp = Path::new("spec").child("updateStrategy");
            strategy_type(
                &mut errs,
                &sp,
                strategy.type_.as_deref(),
                &["OnDelete", "RollingUpdate"],
            );
            if let Some(ru) = strategy.rolling_update.as_ref() {
                let rp = sp.child("rollingUpdate");
                surge_and_unavailable(
                    &mut errs,
                    &rp,
                    ru.max_surge.as_ref(),
                    ru.max_unavailable.as_ref(),
                );
            }
        }
        errs
    }
}

const STATEFULSET_UPDATE_MSG: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

impl Validate for StatefulSet {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required("spec")];
        };
        let mut errs = Vec::new();
        let counts = [
            ("replicas", spec.replicas),
            ("minReadySeconds", spec.min_ready_seconds),
            ("revisionHistoryLimit", spec.revision_history_limit),
        ];
        // The selector's immutability is part of the frozen-fields check below.
        apps_common(&mut errs, &counts, spec, None);
        let p = Path::new("spec");
        opt_enum(
            &mut errs,
            &p.child("podManagementPolicy"),
            spec.pod_management_policy.as_deref(),
            &["OrderedReady", "Parallel"],
        );
        if let Some(strategy) = spec.update_strategy.as_ref() {
            let sp = p.child("updateStrategy");
            let ty = strategy_type(
                &mut errs,
                &sp,
                strategy.type_.as_deref(),
                &["OnDelete", "RollingUpdate"],
            );
            if let Some(ru) = strategy.rolling_update.as_ref() {
                let rp = sp.child("rollingUpdate");
                if ty == "OnDelete" {
                    errs.push(FieldError::forbidden(
                        &rp,
                        "only allowed for updateStrategy 'RollingUpdate'",
                    ));
                }
                non_negative(&mut errs, &rp.child("partition"), ru.partition);
                if let Some(mu) = ru.max_unavailable.as_ref()
                    && let Some((0, _)) =
                        int_or_percent(&mut errs, &rp.child("maxUnavailable"), mu, true)
                {
                    errs.push(FieldError::invalid(
                        rp.child("maxUnavailable"),
                        0,
                        "must be greater than 0",
                    ));
                }
            }
        }
        if let Some(policy) = spec.persistent_volume_claim_retention_policy.as_ref() {
            let pp = p.child("persistentVolumeClaimRetentionPolicy");
            for (field, v) in [
                ("whenDeleted", &policy.when_deleted),
                ("whenScaled", &policy.when_scaled),
            ] {
                opt_enum(
                    &mut errs,
                    &pp.child(field),
                    v.as_deref(),
                    &["Retain", "Delete"],
                );
            }
        }
        for (i, claim) in spec.volume_claim_templates.iter().flatten().enumerate() {
            let np = p
                .child("volumeClaimTemplates")
                .index(i)
                .child("metadata")
                .child("name");
            if let Some(name) = required_str(&mut errs, &np, claim.metadata.name.as_deref()) {
                dns_subdomain(&mut errs, &np, name);
            }
        }
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref())
            && frozen_statefulset_fields(spec) != frozen_statefulset_fields(old_spec)
        {
            errs.push(FieldError::forbidden(p, STATEFULSET_UPDATE_MSG));
        }
        errs
    }
}

/// The template as each pod gets it: every volume claim template becomes a volume of the same
/// name, so that mounts of claimed volumes resolve (and clashes with plain volumes show).
fn with_claim_volumes(spec: &StatefulSetSpec) -> PodTemplateSpec {
    let mut template = spec.template.clone();
    let claims = spec.volume_claim_templates.iter().flatten();
    let names: Vec<String> = claims.filter_map(|c| c.metadata.name.clone()).collect();
    if let (Some(pod), false) = (template.spec.as_mut(), names.is_empty()) {
        let volumes = pod.volumes.get_or_insert_with(Vec::new);
        for name in names {
            volumes.push(Volume {
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: name.clone(),
                    read_only: None,
                }),
                name,
                ..Default::default()
            });
        }
    }
    template
}

/// A StatefulSet spec with the updatable fields cleared, for comparing what must not change.
fn frozen_statefulset_fields(spec: &StatefulSetSpec) -> StatefulSetSpec {
    StatefulSetSpec {
        replicas: None,
        ordinals: None,
        template: PodTemplateSpec::default(),
        update_strategy: None,
        revision_history_limit: None,
        persistent_volume_claim_retention_policy: None,
        min_ready_seconds: None,
        ..spec.clone()
    }
}

impl Validate for ControllerRevision {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        non_negative(&mut errs, &Path::new("revision"), Some(self.revision));
        if let Some(old) = old {
            immutable(&mut errs, &Path::new("data"), &self.data, &old.data);
        }
        errs
    }
}

const JOB_RESTART: &[&str] = &["OnFailure", "Never"];

/// A Job spec under `path` (`spec`, or `spec.jobTemplate.spec` in a CronJob).
fn validate_job_spec(errs: &mut Errs, spec: &JobSpec, path: &Path) {
    for (field, v) in [
        ("parallelism", spec.parallelism),
        ("completions", spec.completions),
        ("backoffLimit", spec.backoff_limit),
        ("ttlSecondsAfterFinished", spec.ttl_seconds_after_finished),
    ] {
        non_negative(errs, &path.child(field), v);
    }
    if let Some(d) = spec.active_deadline_seconds.filter(|d| *d <= 0) {
        errs.push(FieldError::invalid(
            path.child("activeDeadlineSeconds"),
            d,
            "must be greater than 0",
        ));
    }
    let mode_path = path.child("completionMode");
    opt_enum(
        errs,
        &mode_path,
        spec.completion_mode.as_deref(),
        &["NonIndexed", "Indexed"],
    );
    if spec.completion_mode.as_deref() == Some("Indexed") && spec.completions.is_none() {
        errs.push(FieldError::required(path.child("completions")));
    }
    let tpl_path = path.child("template");
    // The selector is generated by the Job controller unless the user manages it; a given one
    // must still select the template's pods.
    match spec.selector.as_ref() {
        Some(sel) => selector_and_template(errs, path, sel, &spec.template, JOB_RESTART),
        None => {
            errs.extend(validate_pod_template(&spec.template, &tpl_path));
            restart_policy(errs, &tpl_path, &spec.template, JOB_RESTART);
        }
    }
}

impl Validate for Job {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required("spec")];
        };
        let p = Path::new("spec");
        let mut errs = Vec::new();
        validate_job_spec(&mut errs, spec, &p);
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            immutable(
                &mut errs,
                &p.child("selector"),
                &spec.selector,
                &old_spec.selector,
            );
            immutable(
                &mut errs,
                &p.child("template"),
                &spec.template,
                &old_spec.template,
            );
            immutable(
                &mut errs,
                &p.child("completionMode"),
                &spec.completion_mode,
                &old_spec.completion_mode,
            );
        }
        errs
    }
}

impl Validate for CronJob {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required("spec")];
        };
        let p = Path::new("spec");
        let mut errs = Vec::new();
        let sched_path = p.child("schedule");
        if let Some(schedule) = required_str(&mut errs, &sched_path, Some(spec.schedule.as_str())) {
            if schedule.contains("TZ") {
                errs.push(FieldError::invalid(
                    &sched_path,
                    schedule,
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            } else if let Err(reason) = validate_schedule(schedule) {
                errs.push(FieldError::invalid(&sched_path, schedule, reason));
            }
        }
        if let Some(tz) = spec.time_zone.as_deref()
            && (tz.is_empty() || tz.contains(char::is_whitespace))
        {
            errs.push(FieldError::invalid(
                p.child("timeZone"),
                tz,
                format!("unknown time zone {tz}"),
            ));
        }
        opt_enum(
            &mut errs,
            &p.child("concurrencyPolicy"),
            spec.concurrency_policy.as_deref(),
            &["Allow", "Forbid", "Replace"],
        );
        for (field, v) in [
            (
                "successfulJobsHistoryLimit",
                spec.successful_jobs_history_limit,
            ),
            ("failedJobsHistoryLimit", spec.failed_jobs_history_limit),
        ] {
            non_negative(&mut errs, &p.child(field), v);
        }
        non_negative(
            &mut errs,
            &p.child("startingDeadlineSeconds"),
            spec.starting_deadline_seconds,
        );
        let jp = p.child("jobTemplate").child("spec");
        match spec.job_template.spec.as_ref() {
            Some(job) => validate_job_spec(&mut errs, job, &jp),
            None => errs.push(FieldError::required(jp)),
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::Defaulting;
    use serde_json::{Value, json};

    fn check<K: Validate + Defaulting + serde::de::DeserializeOwned>(
        v: Value,
        old: Option<Value>,
    ) -> Vec<String> {
        let parse = |v: Value| {
            let mut k: K = serde_json::from_value(v).unwrap();
            k.apply_defaults();
            k
        };
        let new = parse(v);
        let old = old.map(parse);
        new.validate(old.as_ref())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn replication_controllers_default_the_selector_and_check_it() {
        let rc = |selector: Value| {
            json!({"metadata": {"name": "rc"}, "spec": {"replicas": 1, "selector": selector,
                "template": {"metadata": {"labels": {"app": "a"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
        };
        assert!(check::<ReplicationController>(rc(Value::Null), None).is_empty());
        let errs = check::<ReplicationController>(rc(json!({"app": "b"})), None);
        assert!(
            errs.iter()
                .any(|e| e.contains("spec.template.metadata.labels")),
            "{errs:?}"
        );
    }

    fn deployment(selector: Value, labels: Value, extra: Value) -> Value {
        let mut spec = json!({"selector": selector, "template": {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        json!({"metadata": {"name": "d"}, "spec": spec})
    }

    #[test]
    fn deployment_rules() {
        let ok = deployment(
            json!({"matchLabels": {"app": "a"}}),
            json!({"app": "a"}),
            json!({}),
        );
        assert_eq!(check::<Deployment>(ok.clone(), None), Vec::<String>::new());
        let errs = check::<Deployment>(
            deployment(
                json!({"matchLabels": {"app": "a"}}),
                json!({"app": "b"}),
                json!({"replicas": -1, "strategy": {"type": "Recreate", "rollingUpdate": {}}}),
            ),
            None,
        );
        assert_eq!(
            errs,
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.metadata.labels: Invalid value: \"app=b\": `selector` does not match template `labels`",
                "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
            ]
        );
        let errs = check::<Deployment>(
            deployment(
                json!({}),
                json!({}),
                json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}),
            ),
            None,
        );
        assert_eq!(
            errs,
            vec![
                "spec.selector: Required value",
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
            ]
        );
        let changed = deployment(
            json!({"matchLabels": {"app": "a", "x": "y"}}),
            json!({"app": "a", "x": "y"}),
            json!({}),
        );
        assert_eq!(
            check::<Deployment>(changed, Some(ok)),
            vec!["spec.selector: Invalid value: field is immutable"]
        );
        let bad_restart = deployment(
            json!({"matchLabels": {"a": "b"}}),
            json!({"a": "b"}),
            json!({}),
        );
        let mut bad_restart = bad_restart;
        bad_restart["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(
            check::<Deployment>(bad_restart, None),
            vec![
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
            ]
        );
    }

    #[test]
    fn statefulset_update_is_restricted() {
        let sts = |replicas: i32, service: &str| {
            json!({"metadata": {"name": "web"}, "spec": {
            "replicas": replicas, "serviceName": service, "selector": {"matchLabels": {"app": "w"}},
            "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
        };
        assert_eq!(
            check::<StatefulSet>(sts(3, "web"), Some(sts(1, "web"))),
            Vec::<String>::new()
        );
        assert_eq!(
            check::<StatefulSet>(sts(1, "other"), Some(sts(1, "web"))),
            vec![format!("spec: Forbidden: {STATEFULSET_UPDATE_MSG}")]
        );
    }

    #[test]
    fn job_rules() {
        let job = |restart: &str, extra: Value| {
            let mut v = json!({"metadata": {"name": "pi"}, "spec": {"template": {"spec": {
                "restartPolicy": restart, "containers": [{"name": "pi", "image": "perl"}]}}}});
            if let (Some(s), Some(e)) = (v["spec"].as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            v
        };
        assert_eq!(
            check::<Job>(job("Never", json!({})), None),
            Vec::<String>::new()
        );
        assert_eq!(
            check::<Job>(
                job(
                    "Always",
                    json!({"backoffLimit": -1, "completionMode": "Sometimes"})
                ),
                None
            ),
            vec![
                "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0",
                "spec.completionMode: Unsupported value: \"Sometimes\": supported values: \"NonIndexed\", \"Indexed\"",
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
            ]
        );
        let mut changed = job("Never", json!({}));
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
        assert_eq!(
            check::<Job>(changed, Some(job("Never", json!({})))),
            vec!["spec.template: Invalid value: field is immutable"]
        );
    }

    #[test]
    fn cronjob_rules() {
        let cj = |schedule: &str, policy: &str| {
            json!({"metadata": {"name": "hello"}, "spec": {
            "schedule": schedule, "concurrencyPolicy": policy, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}})
        };
        assert_eq!(
            check::<CronJob>(cj("*/5 * * * MON-FRI", "Forbid"), None),
            Vec::<String>::new()
        );
        assert_eq!(
            check::<CronJob>(cj("@hourly", "Allow"), None),
            Vec::<String>::new()
        );
        let errs = check::<CronJob>(cj("61 * * * *", "Sometimes"), None);
        assert_eq!(
            errs,
            vec![
                "spec.schedule: Invalid value: \"61 * * * *\": minute: value 61 out of range 0-59",
                "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
            ]
        );
        assert_eq!(
            check::<CronJob>(cj("", "Allow"), None),
            vec!["spec.schedule: Required value"]
        );
    }
}
