//! Typed views of stored objects: decode a kind's JSON into its k8s-openapi type, once.
//!
//! Components read objects from caches as JSON; controllers want `Pod`, `ReplicaSet`, ... with
//! real fields. [`Object`] is implemented here, concretely, for every built-in kind, so the
//! serde code for each type is instantiated once in this crate (see the crate doc) and callers
//! in other crates only call it.
//!
//! Decoding is lenient (unknown fields are ignored): these objects were admitted strictly when
//! written, and a newer server may add fields an older component does not know.

use k8s_openapi::api;
use serde_json::Value;

use crate::decode::{DecodeError, from_value_lenient};

/// A built-in kind with its k8s-openapi type.
pub trait Object: Sized + Send + Sync + 'static {
    /// `apps/v1`, `v1`, ...
    const API_VERSION: &'static str;
    const KIND: &'static str;
    /// Decodes the object's JSON (lenient: unknown fields ignored).
    fn from_json(value: Value) -> Result<Self, DecodeError>;
    /// Encodes the object as JSON, `apiVersion` and `kind` included.
    fn to_json(&self) -> Result<Value, DecodeError>;
}

macro_rules! objects {
    ($($ty:ty),* $(,)?) => {$(
        impl Object for $ty {
            const API_VERSION: &'static str = <$ty as k8s_openapi::Resource>::API_VERSION;
            const KIND: &'static str = <$ty as k8s_openapi::Resource>::KIND;

            fn from_json(value: Value) -> Result<Self, DecodeError> {
                from_value_lenient(value)
            }

            fn to_json(&self) -> Result<Value, DecodeError> {
                serde_json::to_value(self).map_err(|e| DecodeError::Shape(e.to_string()))
            }
        }
    )*};
}

objects!(
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
    api::core::v1::ReplicationController,
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    #[test]
    fn decodes_leniently_and_round_trips_with_type_meta() {
        let v = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "futureField": 1},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
        let pod = Pod::from_json(v).expect("unknown fields are ignored");
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("n1")
        );
        let back = pod.to_json().expect("encodes");
        assert_eq!(back["kind"], "Pod");
        assert_eq!(back["apiVersion"], "v1");
        assert_eq!(<Pod as Object>::KIND, "Pod");
        let e = Pod::from_json(json!({"spec": {"containers": "x"}})).unwrap_err();
        assert!(e.to_string().starts_with("spec.containers"), "{e}");
    }
}
