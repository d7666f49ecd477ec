//! Defaults for the remaining kinds: secrets, namespaces, storage, endpoints, scheduling,
//! autoscaling and RBAC bindings.

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, MetricSpec, MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, NamespaceStatus, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, Secret,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, Subject};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;

use super::{Defaulting, or_str, or_val};

impl Defaulting for Secret {
    fn apply_defaults(&mut self) {
        or_str(&mut self.type_, "Opaque");
    }
}

impl Defaulting for Namespace {
    fn apply_defaults(&mut self) {
        let status = self.status.get_or_insert_with(NamespaceStatus::default);
        or_str(&mut status.phase, "Active");
    }
}

/// Shared by PVCs and StatefulSet volume claim templates.
pub(super) fn default_pvc_spec(spec: &mut PersistentVolumeClaimSpec) {
    or_str(&mut spec.volume_mode, "Filesystem");
}

impl Defaulting for PersistentVolumeClaim {
    fn apply_defaults(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            default_pvc_spec(spec);
        }
    }
}

impl Defaulting for PersistentVolume {
    fn apply_defaults(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            or_str(&mut spec.persistent_volume_reclaim_policy, "Retain");
            or_str(&mut spec.volume_mode, "Filesystem");
        }
    }
}

impl Defaulting for StorageClass {
    fn apply_defaults(&mut self) {
        or_str(&mut self.reclaim_policy, "Delete");
        or_str(&mut self.volume_binding_mode, "Immediate");
    }
}

impl Defaulting for Endpoints {
    fn apply_defaults(&mut self) {
        for subset in self.subsets.iter_mut().flatten() {
            for p in subset.ports.iter_mut().flatten() {
                or_str(&mut p.protocol, "TCP");
            }
        }
    }
}

impl Defaulting for EndpointSlice {
    fn apply_defaults(&mut self) {
        for p in self.ports.iter_mut().flatten() {
            or_str(&mut p.protocol, "TCP");
        }
    }
}

impl Defaulting for PriorityClass {
    fn apply_defaults(&mut self) {
        or_str(&mut self.preemption_policy, "PreemptLowerPriority");
    }
}

/// The HPA's target when it is given no metrics: 80% average CPU utilisation.
const DEFAULT_CPU_UTILIZATION: i32 = 80;

impl Defaulting for HorizontalPodAutoscaler {
    fn apply_defaults(&mut self) {
        let Some(spec) = self.spec.as_mut() else {
            return;
        };
        or_val(&mut spec.min_replicas, 1);
        if spec.metrics.as_ref().is_none_or(Vec::is_empty) {
            spec.metrics = Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(DEFAULT_CPU_UTILIZATION),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]);
        }
    }
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Users and groups live in the RBAC API group; service accounts in the core group (empty).
fn default_subjects(subjects: Option<&mut Vec<Subject>>) {
    for s in subjects.into_iter().flatten() {
        if (s.kind == "User" || s.kind == "Group")
            && s.api_group.as_deref().unwrap_or("").is_empty()
        {
            s.api_group = Some(RBAC_GROUP.to_string());
        }
    }
}

impl Defaulting for RoleBinding {
    fn apply_defaults(&mut self) {
        default_subjects(self.subjects.as_mut());
    }
}

impl Defaulting for ClusterRoleBinding {
    fn apply_defaults(&mut self) {
        default_subjects(self.subjects.as_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hpa_gets_cpu_metric_and_min_replicas() {
        let mut h: HorizontalPodAutoscaler = serde_json::from_value(json!({"metadata": {},
            "spec": {"maxReplicas": 5, "scaleTargetRef": {"kind": "Deployment", "name": "d"}}}))
        .unwrap();
        h.apply_defaults();
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["spec"]["minReplicas"], 1);
        assert_eq!(
            v["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
    }

    #[test]
    fn binding_subjects_and_simple_kinds() {
        let mut b: RoleBinding = serde_json::from_value(json!({"metadata": {},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "name": "sa"}]}))
        .unwrap();
        b.apply_defaults();
        let subjects = b.subjects.unwrap();
        assert_eq!(subjects[0].api_group.as_deref(), Some(RBAC_GROUP));
        assert_eq!(subjects[1].api_group, None);

        let mut s = Secret::default();
        s.apply_defaults();
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        let mut n = Namespace::default();
        n.apply_defaults();
        assert_eq!(n.status.and_then(|s| s.phase).as_deref(), Some("Active"));
        let mut pv: PersistentVolume =
            serde_json::from_value(json!({"metadata": {}, "spec": {}})).unwrap();
        pv.apply_defaults();
        let spec = pv.spec.unwrap();
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
    }
}
