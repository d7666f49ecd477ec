//! Defaulting as Kubernetes defaults: the fields a user may leave out are filled in before
//! validation and storage, so every reader sees the same complete object.
//!
//! Each area has its module (pods, workloads, services and the rest); the rules follow
//! Kubernetes' `pkg/apis/*/v1/defaults.go`. Defaults only ever add: a field the user set is
//! never changed, so a manifest read back is a superset of what was written.

use k8s_openapi::api;

mod misc;
mod pod;
mod service;
mod workloads;

pub use pod::{default_image_pull_policy, default_pod_spec, default_pod_template};

/// Fills a kind's defaults in place.
pub trait Defaulting {
    fn apply_defaults(&mut self);
}

/// Sets an optional string field when it is absent.
fn or_str(slot: &mut Option<String>, value: &str) {
    if slot.is_none() {
        *slot = Some(value.to_string());
    }
}

/// Sets an optional field when it is absent.
fn or_val<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

macro_rules! no_defaults {
    ($($t:ty),* $(,)?) => {
        $(impl Defaulting for $t {
            fn apply_defaults(&mut self) {}
        })*
    };
}

// Kinds Kubernetes does not default beyond metadata (which the API server fills).
no_defaults!(
    api::core::v1::Node,
    api::core::v1::ConfigMap,
    api::core::v1::ServiceAccount,
    api::core::v1::Event,
    api::apps::v1::ControllerRevision,
    api::networking::v1::Ingress,
    api::networking::v1::IngressClass,
    api::coordination::v1::Lease,
    api::policy::v1::PodDisruptionBudget,
    api::rbac::v1::Role,
    api::rbac::v1::ClusterRole,
);
