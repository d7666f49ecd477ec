//! API versions Kubernetes once served for the registered kinds and has since removed.
//!
//! A manifest for one of them is refused as kubectl refuses it against Kubernetes 1.34,
//! `no matches for kind "CronJob" in version "batch/v1beta1"`, rather than as an unknown kind:
//! the kind exists, the version is gone. The registry also gives that answer for any version of
//! a group it serves that does not serve the kind; this table adds the versions whose group is
//! gone altogether (`extensions/v1beta1`) and records in which release each went.

/// One removed group version: the registered kinds it served and the release that removed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemovedVersion {
    pub api_version: &'static str,
    pub kinds: &'static [&'static str],
    pub removed_in: &'static str,
}

const WORKLOADS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ControllerRevision",
];
const RBAC: &[&str] = &["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];
const HPA: &[&str] = &["HorizontalPodAutoscaler"];

/// Kubernetes' deprecated API migration guide, for the kinds Rudder serves.
pub const REMOVED: &[RemovedVersion] = &[
    RemovedVersion {
        api_version: "extensions/v1beta1",
        kinds: &["Deployment", "DaemonSet", "ReplicaSet", "Ingress"],
        removed_in: "1.22",
    },
    RemovedVersion {
        api_version: "apps/v1beta1",
        kinds: WORKLOADS,
        removed_in: "1.16",
    },
    RemovedVersion {
        api_version: "apps/v1beta2",
        kinds: WORKLOADS,
        removed_in: "1.16",
    },
    RemovedVersion {
        api_version: "networking.k8s.io/v1beta1",
        kinds: &["Ingress", "IngressClass"],
        removed_in: "1.22",
    },
    RemovedVersion {
        api_version: "rbac.authorization.k8s.io/v1beta1",
        kinds: RBAC,
        removed_in: "1.22",
    },
    RemovedVersion {
        api_version: "rbac.authorization.k8s.io/v1alpha1",
        kinds: RBAC,
        removed_in: "1.22",
    },
    RemovedVersion {
        api_version: "scheduling.k8s.io/v1beta1",
        kinds: &["PriorityClass"],
        removed_in: "1.22",
    },
    RemovedVersion {
        api_version: "coordination.k8s.io/v1beta1",
        kinds: &["Lease"],
        removed_in: "1.22",
    },
    RemovedVersion {
        api_version: "storage.k8s.io/v1beta1",
        kinds: &["StorageClass"],
        removed_in: "1.22",
    },
    RemovedVersion {
        api_version: "batch/v1beta1",
        kinds: &["CronJob"],
        removed_in: "1.25",
    },
    RemovedVersion {
        api_version: "discovery.k8s.io/v1beta1",
        kinds: &["EndpointSlice"],
        removed_in: "1.25",
    },
    RemovedVersion {
        api_version: "policy/v1beta1",
        kinds: &["PodDisruptionBudget"],
        removed_in: "1.25",
    },
    RemovedVersion {
        api_version: "autoscaling/v2beta1",
        kinds: HPA,
        removed_in: "1.25",
    },
    RemovedVersion {
        api_version: "autoscaling/v2beta2",
        kinds: HPA,
        removed_in: "1.26",
    },
];

/// The removal of `kind` in `api_version`, if Kubernetes removed it.
pub fn removed(api_version: &str, kind: &str) -> Option<&'static RemovedVersion> {
    REMOVED
        .iter()
        .find(|r| r.api_version == api_version && r.kinds.contains(&kind))
}
