//! The kinds Rudder serves out of the box: Kubernetes 1.34's, one typed entry per kind in its
//! storage version, plus the other versions 1.34 still serves (autoscaling/v1 HPAs).

use std::sync::Arc;

use k8s_openapi::api;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::defaults::Defaulting;
use crate::registry::{KindInfo, Registry, Typed};
use crate::validation::{NameRule, Validate};

struct Entry {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
    has_status: bool,
    name_rule: NameRule,
    selectable_fields: &'static [&'static str],
}

fn typed<K>(e: Entry) -> KindInfo
where
    K: DeserializeOwned
        + Serialize
        + Defaulting
        + Validate
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>
        + 'static,
{
    KindInfo {
        group: e.group,
        version: e.version,
        kind: e.kind,
        plural: e.plural,
        singular: leak_lower(e.kind),
        short_names: e.short_names,
        namespaced: e.namespaced,
        has_status: e.has_status,
        name_rule: e.name_rule,
        selectable_fields: e.selectable_fields,
        ops: Arc::new(Typed::<K>::new()),
        storage_version: e.version,
        conversion: None,
    }
}

fn leak_lower(s: &'static str) -> &'static str {
    // Built once per kind for the process lifetime (registry entries are never dropped).
    Box::leak(s.to_lowercase().into_boxed_str())
}

const NS: bool = true;
const CLUSTER: bool = false;

macro_rules! entry {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, [$($short:expr),*], $ns:expr, $status:expr, $rule:expr, [$($field:expr),*]) => {
        Entry {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            short_names: &[$($short),*],
            namespaced: $ns,
            has_status: $status,
            name_rule: $rule,
            selectable_fields: &[$($field),*],
        }
    };
}

pub(crate) fn build_builtin() -> Registry {
    use NameRule::{Label, PathSegment, Subdomain};
    let mut r = Registry::empty();
    // core/v1
    r.register(typed::<api::core::v1::Namespace>(entry!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        ["ns"],
        CLUSTER,
        true,
        Label,
        ["status.phase"]
    )));
    r.register(typed::<api::core::v1::Node>(entry!(
        "",
        "v1",
        "Node",
        "nodes",
        ["no"],
        CLUSTER,
        true,
        Subdomain,
        ["spec.unschedulable"]
    )));
    r.register(typed::<api::core::v1::Pod>(entry!(
        "",
        "v1",
        "Pod",
        "pods",
        ["po"],
        NS,
        true,
        Subdomain,
        [
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName"
        ]
    )));
    r.register(typed::<api::core::v1::Service>(entry!(
        "",
        "v1",
        "Service",
        "services",
        ["svc"],
        NS,
        true,
        Label,
        ["spec.clusterIP", "spec.type"]
    )));
    r.register(typed::<api::core::v1::Endpoints>(entry!(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        ["ep"],
        NS,
        false,
        Subdomain,
        []
    )));
    r.register(typed::<api::core::v1::ConfigMap>(entry!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        ["cm"],
        NS,
        false,
        Subdomain,
        []
    )));
    r.register(typed::<api::core::v1::Secret>(entry!(
        "",
        "v1",
        "Secret",
        "secrets",
        [],
        NS,
        false,
        Subdomain,
        ["type"]
    )));
    r.register(typed::<api::core::v1::ServiceAccount>(entry!(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        ["sa"],
        NS,
        false,
        Subdomain,
        []
    )));
    r.register(typed::<api::core::v1::Event>(entry!(
        "",
        "v1",
        "Event",
        "events",
        ["ev"],
        NS,
        false,
        Subdomain,
        [
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "reason",
            "type",
            "source"
        ]
    )));
    r.register(typed::<api::core::v1::PersistentVolume>(entry!(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        ["pv"],
        CLUSTER,
        true,
        Subdomain,
        []
    )));
    r.register(typed::<api::core::v1::PersistentVolumeClaim>(entry!(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        ["pvc"],
        NS,
        true,
        Subdomain,
        []
    )));
    r.register(typed::<api::core::v1::ReplicationController>(entry!(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        ["rc"],
        NS,
        true,
        Subdomain,
        []
    )));
    // apps/v1
    r.register(typed::<api::apps::v1::ReplicaSet>(entry!(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        ["rs"],
        NS,
        true,
        Subdomain,
        []
    )));
    r.register(typed::<api::apps::v1::Deployment>(entry!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        ["deploy"],
        NS,
        true,
        Subdomain,
        []
    )));
    r.register(typed::<api::apps::v1::DaemonSet>(entry!(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        ["ds"],
        NS,
        true,
        Subdomain,
        []
    )));
    r.register(typed::<api::apps::v1::StatefulSet>(entry!(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        ["sts"],
        NS,
        true,
        Subdomain,
        []
    )));
    r.register(typed::<api::apps::v1::ControllerRevision>(entry!(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        [],
        NS,
        false,
        Subdomain,
        []
    )));
    // batch/v1
    r.register(typed::<api::batch::v1::Job>(entry!(
        "batch",
        "v1",
        "Job",
        "jobs",
        [],
        NS,
        true,
        Subdomain,
        ["status.successful"]
    )));
    r.register(typed::<api::batch::v1::CronJob>(entry!(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        ["cj"],
        NS,
        true,
        Subdomain,
        []
    )));
    // networking, discovery, coordination, scheduling, policy, storage, autoscaling
    r.register(typed::<api::networking::v1::Ingress>(entry!(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        ["ing"],
        NS,
        true,
        Subdomain,
        []
    )));
    r.register(typed::<api::networking::v1::IngressClass>(entry!(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        [],
        CLUSTER,
        false,
        Subdomain,
        []
    )));
    r.register(typed::<api::discovery::v1::EndpointSlice>(entry!(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        [],
        NS,
        false,
        Subdomain,
        ["addressType"]
    )));
    r.register(typed::<api::coordination::v1::Lease>(entry!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        [],
        NS,
        false,
        Subdomain,
        []
    )));
    r.register(typed::<api::scheduling::v1::PriorityClass>(entry!(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        ["pc"],
        CLUSTER,
        false,
        Subdomain,
        []
    )));
    r.register(typed::<api::policy::v1::PodDisruptionBudget>(entry!(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        ["pdb"],
        NS,
        true,
        Subdomain,
        []
    )));
    r.register(typed::<api::storage::v1::StorageClass>(entry!(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        ["sc"],
        CLUSTER,
        false,
        Subdomain,
        []
    )));
    r.register(typed::<api::autoscaling::v2::HorizontalPodAutoscaler>(
        entry!(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            ["hpa"],
            NS,
            true,
            Subdomain,
            []
        ),
    ));
    // Kubernetes 1.34 still serves autoscaling/v1 beside the stored autoscaling/v2.
    r.serve_version(
        crate::convert::hpa::V2,
        "HorizontalPodAutoscaler",
        "v1",
        Arc::new(crate::convert::hpa::HpaV1),
    )
    .expect("the HPA's storage version is registered just above");
    // rbac.authorization.k8s.io/v1
    r.register(typed::<api::rbac::v1::Role>(entry!(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        [],
        NS,
        false,
        PathSegment,
        []
    )));
    r.register(typed::<api::rbac::v1::ClusterRole>(entry!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        [],
        CLUSTER,
        false,
        PathSegment,
        []
    )));
    r.register(typed::<api::rbac::v1::RoleBinding>(entry!(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        [],
        NS,
        false,
        PathSegment,
        []
    )));
    r.register(typed::<api::rbac::v1::ClusterRoleBinding>(entry!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        [],
        CLUSTER,
        false,
        PathSegment,
        []
    )));
    r
}
