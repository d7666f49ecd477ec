//! Validation of the smaller kinds: Namespace, Node, Event, ServiceAccount, Lease,
//! PriorityClass, PodDisruptionBudget and HorizontalPodAutoscaler.

use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, MetricSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;

use super::helpers::{
    Errs, Path, at_least, count_set, enum_value, int_or_percent, is_cidr, label_selector, opt_enum,
    required_str,
};
use super::pod::TAINT_EFFECTS;
use super::{FieldError, Validate};
use crate::selector::validate_key;

impl Validate for Namespace {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let phase = self.status.as_ref().and_then(|s| s.phase.as_deref());
        opt_enum(
            &mut errs,
            &Path::new("status").child("phase"),
            phase,
            &["Active", "Terminating"],
        );
        let finalizers = self.spec.as_ref().and_then(|s| s.finalizers.as_ref());
        for (i, f) in finalizers.into_iter().flatten().enumerate() {
            if validate_key(f).is_err() {
                errs.push(FieldError::invalid(
                    Path::new("spec").child("finalizers").index(i),
                    f.as_str(),
                    "name is neither a standard finalizer name nor is it fully qualified",
                ));
            }
        }
        errs
    }
}

impl Validate for ServiceAccount {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        Vec::new()
    }
}

impl Validate for Node {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let Some(spec) = self.spec.as_ref() else {
            return errs;
        };
        let p = Path::new("spec");
        let cidrs = spec.pod_cidr.iter().map(|c| (p.child("podCIDR"), c));
        let list = spec
            .pod_cidrs
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| (p.child("podCIDRs").index(i), c));
        for (path, cidr) in cidrs.chain(list) {
            if !cidr.is_empty() && !is_cidr(cidr) {
                errs.push(FieldError::invalid(
                    path,
                    cidr,
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ));
            }
        }
        for (i, t) in spec.taints.iter().flatten().enumerate() {
            let tp = p.child("taints").index(i);
            if let Some(key) = required_str(&mut errs, &tp.child("key"), Some(t.key.as_str()))
                && let Err(e) = validate_key(key)
            {
                errs.push(FieldError::invalid(tp.child("key"), key, e.0));
            }
            enum_value(&mut errs, &tp.child("effect"), &t.effect, TAINT_EFFECTS);
        }
        errs
    }
}

impl Validate for Event {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let p = Path::new("involvedObject");
        let obj = &self.involved_object;
        required_str(&mut errs, &p.child("kind"), obj.kind.as_deref());
        required_str(&mut errs, &p.child("name"), obj.name.as_deref());
        // An event about a namespaced object lives in that object's namespace.
        if let (Some(ns), Some(own)) =
            (obj.namespace.as_deref(), self.metadata.namespace.as_deref())
            && !ns.is_empty()
            && ns != own
        {
            errs.push(FieldError::invalid(
                p.child("namespace"),
                ns,
                "does not match event.namespace",
            ));
        }
        opt_enum(
            &mut errs,
            &Path::new("type"),
            self.type_.as_deref(),
            &["Normal", "Warning"],
        );
        errs
    }
}

impl Validate for Lease {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let Some(spec) = self.spec.as_ref() else {
            return errs;
        };
        let p = Path::new("spec");
        if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
            errs.push(FieldError::invalid(
                p.child("leaseDurationSeconds"),
                d,
                "must be greater than 0",
            ));
        }
        at_least(
            &mut errs,
            &p.child("leaseTransitions"),
            spec.lease_transitions,
            0,
        );
        errs
    }
}

/// The highest priority a user-defined class may have; higher values are reserved for the
/// system's own classes (`system-cluster-critical`, `system-node-critical`).
const HIGHEST_USER_PRIORITY: i32 = 1_000_000_000;

impl Validate for PriorityClass {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let system = self
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("system-"));
        if self.value > HIGHEST_USER_PRIORITY && !system {
            errs.push(FieldError::forbidden(
                "value",
                format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"
                ),
            ));
        }
        opt_enum(
            &mut errs,
            &Path::new("preemptionPolicy"),
            self.preemption_policy.as_deref(),
            &["Never", "PreemptLowerPriority"],
        );
        if old.is_some_and(|o| o.value != self.value) {
            errs.push(FieldError::forbidden(
                "value",
                "may not be changed in an update.",
            ));
        }
        errs
    }
}

impl Validate for PodDisruptionBudget {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let p = Path::new("spec");
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required(p)];
        };
        let mut errs = Vec::new();
        if spec.min_available.is_some() && spec.max_unavailable.is_some() {
            errs.push(FieldError::invalid(
                &p,
                "",
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        for (field, v) in [
            ("minAvailable", &spec.min_available),
            ("maxUnavailable", &spec.max_unavailable),
        ] {
            if let Some(v) = v {
                int_or_percent(&mut errs, &p.child(field), v, true);
            }
        }
        if let Some(sel) = spec.selector.as_ref() {
            label_selector(&mut errs, &p.child("selector"), sel);
        }
        opt_enum(
            &mut errs,
            &p.child("unhealthyPodEvictionPolicy"),
            spec.unhealthy_pod_eviction_policy.as_deref(),
            &["AlwaysAllow", "IfHealthyBudget"],
        );
        errs
    }
}

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];
const TARGET_TYPES: &[&str] = &["AverageValue", "Utilization", "Value"];

/// A metric names its type and fills exactly the source of that type.
fn metric(errs: &mut Errs, m: &MetricSpec, p: &Path) {
    enum_value(errs, &p.child("type"), &m.type_, METRIC_TYPES);
    let sources = [
        ("containerResource", m.container_resource.is_some()),
        ("external", m.external.is_some()),
        ("object", m.object.is_some()),
        ("pods", m.pods.is_some()),
        ("resource", m.resource.is_some()),
    ];
    if let Some((field, set)) = sources
        .iter()
        .zip(METRIC_TYPES)
        .find(|(_, t)| **t == m.type_)
        .map(|(s, _)| *s)
        && !set
    {
        errs.push(FieldError::required(p.child(field)));
    }
    if count_set(&sources.map(|(_, s)| s)) > 1 {
        errs.push(FieldError::forbidden(
            p,
            "must populate the given metric source only",
        ));
    }
    let targets = [
        m.resource.as_ref().map(|r| (&r.target, "resource")),
        m.container_resource
            .as_ref()
            .map(|r| (&r.target, "containerResource")),
        m.pods.as_ref().map(|r| (&r.target, "pods")),
        m.object.as_ref().map(|r| (&r.target, "object")),
        m.external.as_ref().map(|r| (&r.target, "external")),
    ];
    for (target, field) in targets.into_iter().flatten() {
        let tp = p.child(field).child("target");
        enum_value(errs, &tp.child("type"), &target.type_, TARGET_TYPES);
        at_least(
            errs,
            &tp.child("averageUtilization"),
            target.average_utilization,
            1,
        );
    }
}

impl Validate for HorizontalPodAutoscaler {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let p = Path::new("spec");
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required(p)];
        };
        let mut errs = Vec::new();
        let rp = p.child("scaleTargetRef");
        required_str(
            &mut errs,
            &rp.child("kind"),
            Some(spec.scale_target_ref.kind.as_str()),
        );
        required_str(
            &mut errs,
            &rp.child("name"),
            Some(spec.scale_target_ref.name.as_str()),
        );
        at_least(&mut errs, &p.child("minReplicas"), spec.min_replicas, 1);
        if spec.max_replicas < 1 {
            errs.push(FieldError::invalid(
                p.child("maxReplicas"),
                spec.max_replicas,
                "must be greater than 0",
            ));
        } else if spec.min_replicas.is_some_and(|min| min > spec.max_replicas) {
            errs.push(FieldError::invalid(
                p.child("maxReplicas"),
                spec.max_replicas,
                "must be greater than or equal to `minReplicas`",
            ));
        }
        for (i, m) in spec.metrics.iter().flatten().enumerate() {
            metric(&mut errs, m, &p.child("metrics").index(i));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::helpers::validate_json as errs;
    use serde_json::{Value, json};

    #[test]
    fn namespace_finalizers_are_qualified_names() {
        let ns = json!({"metadata": {}, "spec": {"finalizers": ["kubernetes", "example.com/x", "no/pe/x"]}});
        assert_eq!(
            errs::<Namespace>(ns, None),
            vec![
                "spec.finalizers[2]: Invalid value: \"no/pe/x\": name is neither a standard finalizer name nor is it fully qualified"
            ]
        );
    }

    #[test]
    fn nodes_and_leases() {
        let node = json!({"metadata": {}, "spec": {"podCIDR": "10.244.0.0/33",
            "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoDrain"}]}});
        assert_eq!(
            errs::<Node>(node, None),
            vec![
                "spec.podCIDR: Invalid value: \"10.244.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.taints[0].effect: Unsupported value: \"NoDrain\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
            ]
        );
        assert_eq!(
            errs::<Lease>(
                json!({"metadata": {}, "spec": {"leaseDurationSeconds": 0}}),
                None
            ),
            vec!["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
        );
        assert_eq!(
            errs::<Event>(
                json!({"metadata": {}, "involvedObject": {"kind": "Pod"}}),
                None
            ),
            vec!["involvedObject.name: Required value"]
        );
    }

    #[test]
    fn priority_and_budgets() {
        let pc = |name: &str, value: i64| json!({"metadata": {"name": name}, "value": value});
        assert!(errs::<PriorityClass>(pc("high-priority", 1_000_000), None).is_empty());
        assert!(errs::<PriorityClass>(pc("system-node-critical", 2_000_001_000), None).is_empty());
        assert_eq!(
            errs::<PriorityClass>(pc("x", 2_000_000_000), None),
            vec![
                "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
            ]
        );
        let pdb = json!({"metadata": {}, "spec": {"minAvailable": 2, "maxUnavailable": "150%"}});
        assert_eq!(
            errs::<PodDisruptionBudget>(pdb, None),
            vec![
                "spec: Invalid value: \"\": minAvailable and maxUnavailable cannot be both set",
                "spec.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%",
            ]
        );
    }

    #[test]
    fn autoscalers() {
        let hpa = |min: i32, max: i32, metrics: Value| {
            json!({"metadata": {}, "spec": {"minReplicas": min, "maxReplicas": max,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "php-apache"}, "metrics": metrics}})
        };
        let cpu = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]);
        assert!(errs::<HorizontalPodAutoscaler>(hpa(1, 10, cpu.clone()), None).is_empty());
        assert_eq!(
            errs::<HorizontalPodAutoscaler>(hpa(5, 2, json!([{"type": "Pods"}])), None),
            vec![
                "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
                "spec.metrics[0].pods: Required value",
            ]
        );
        assert_eq!(
            errs::<HorizontalPodAutoscaler>(hpa(0, 0, cpu), None),
            vec![
                "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
                "spec.maxReplicas: Invalid value: 0: must be greater than 0",
            ]
        );
    }
}
