//! The roles and bindings every cluster starts with, after Kubernetes' bootstrap policy.
//!
//! Created at start-up when missing (never overwritten: an operator's edit stands), labelled
//! `kubernetes.io/bootstrapping: rbac-defaults`:
//! - `cluster-admin`, bound to the group `system:masters` (the admin credential's group);
//! - `admin`, `edit`, `view`: aggregated from `system:aggregate-to-*` by the usual labels, so
//!   a ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-view: "true"` extends view;
//! - `system:discovery`, `system:basic-user` for every authenticated caller, and
//!   `system:public-info-viewer` (health, version) for everyone;
//! - one role per component, bound to its identity: `system:kube-scheduler`,
//!   `system:kube-controller-manager`, `system:node-proxier` (the proxy, which is also the
//!   Ingress and so reads Secrets), `system:node` (the group `system:nodes`).
//!
//! The API's non-resource paths: `/healthz`, `/version`, `/apis` (discovery), `/admin/stats`,
//! `/admin/backup`, `/admin/members`, `/admin/certificates`.

use serde_json::{Value, json};

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn paths(urls: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const ALL: &[&str] = &["*"];

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
    for (k, v) in labels {
        l.insert((*k).into(), (*v).into());
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": l},
        "rules": rules,
    })
}

fn aggregated(name: &str, label: &str) -> Value {
    let mut r = cluster_role(name, &[], vec![]);
    r["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {label: "true"}}]});
    r
}

fn binding(name: &str, role: &str, kind: &str, subjects: &[&str]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|s| json!({"kind": kind, "name": s, "apiGroup": "rbac.authorization.k8s.io"}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// Namespaced kinds people work with, by API group.
fn workload_resources() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        (
            "",
            &[
                "pods",
                "pods/log",
                "pods/status",
                "services",
                "services/status",
                "endpoints",
                "configmaps",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "events",
                "limitranges",
                "resourcequotas",
            ],
        ),
        (
            "apps",
            &[
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "controllerrevisions",
            ],
        ),
        (
            "batch",
            &["jobs", "cronjobs", "jobs/status", "cronjobs/status"],
        ),
        ("autoscaling", &["horizontalpodautoscalers"]),
        (
            "networking.k8s.io",
            &["ingresses", "ingresses/status", "networkpolicies"],
        ),
        ("policy", &["poddisruptionbudgets"]),
        ("discovery.k8s.io", &["endpointslices"]),
        ("coordination.k8s.io", &["leases"]),
        ("events.k8s.io", &["events"]),
    ]
}

/// Every default ClusterRole and ClusterRoleBinding.
pub fn defaults() -> Vec<Value> {
    let view_rules: Vec<Value> = workload_resources()
        .into_iter()
        .map(|(g, r)| rule(&[g], r, READ))
        .chain([rule(&[""], &["namespaces"], READ)])
        .collect();
    let mut edit_rules: Vec<Value> = workload_resources()
        .into_iter()
        .map(|(g, r)| rule(&[g], r, WRITE))
        .collect();
    edit_rules.push(rule(
        &[""],
        &["secrets"],
        &[
            "get",
            "list",
            "watch",
            "create",
            "delete",
            "deletecollection",
            "patch",
            "update",
        ],
    ));
    edit_rules.push(rule(
        &[""],
        &[
            "pods/exec",
            "pods/portforward",
            "pods/attach",
            "pods/eviction",
        ],
        &["get", "create"],
    ));
    let admin_rules = vec![
        // Not `*`: that would include `escalate` and `bind`, which lift the escalation check.
        rule(
            &["rbac.authorization.k8s.io"],
            &["roles", "rolebindings"],
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        ),
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
            &["create"],
        ),
    ];
    let to = |r: &str| format!("rbac.authorization.k8s.io/aggregate-to-{r}");
    let (to_admin, to_edit, to_view) = (to("admin"), to("edit"), to("view"));
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], ALL), paths(&["*"], ALL)],
        ),
        aggregated("admin", &to_admin),
        aggregated("edit", &to_edit),
        aggregated("view", &to_view),
        cluster_role(
            "system:aggregate-to-admin",
            &[(&to_admin, "true")],
            admin_rules,
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[(&to_admin, "true"), (&to_edit, "true")],
            edit_rules,
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[(&to_admin, "true"), (&to_edit, "true"), (&to_view, "true")],
            view_rules,
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![paths(&["/apis", "/apis/*", "/version"], &["get"])],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["authorization.k8s.io", "authentication.k8s.io"],
                    &[
                        "selfsubjectaccessreviews",
                        "selfsubjectrulesreviews",
                        "selfsubjectreviews",
                    ],
                    &["create"],
                ),
                paths(&["/whoami", "/admin/certificates"], &["create", "get"]),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![paths(&["/healthz", "/version"], &["get"])],
        ),
        cluster_role(
            "system:kube-scheduler",
            &[],
            vec![
                rule(
                    &[""],
                    &[
                        "pods",
                        "nodes",
                        "namespaces",
                        "services",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "replicationcontrollers",
                    ],
                    READ,
                ),
                rule(&["apps"], &["replicasets", "statefulsets"], READ),
                rule(&["policy"], &["poddisruptionbudgets"], READ),
                rule(&["storage.k8s.io"], &["storageclasses", "csinodes"], READ),
                rule(&[""], &["pods/binding", "bindings"], &["create"]),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&[""], &["pods"], &["delete"]),
                rule(&[""], &["pods/eviction"], &["create"]),
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["create", "get", "list", "watch", "update", "patch"],
                ),
            ],
        ),
        // Garbage collection and namespace deletion touch every kind, as Kubernetes'
        // controller roles do; no rights to the masters' admin paths.
        cluster_role(
            "system:kube-controller-manager",
            &[],
            vec![rule(&["*"], &["*"], ALL)],
        ),
        cluster_role(
            "system:node-proxier",
            &[],
            vec![
                rule(
                    &[""],
                    &[
                        "services",
                        "endpoints",
                        "nodes",
                        "pods",
                        "secrets",
                        "namespaces",
                    ],
                    READ,
                ),
                rule(&["discovery.k8s.io"], &["endpointslices"], READ),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "ingressclasses"],
                    READ,
                ),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses/status"],
                    &["update", "patch"],
                ),
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
            ],
        ),
        cluster_role(
            "system:node",
            &[],
            vec![
                rule(
                    &[""],
                    &["nodes"],
                    &["create", "get", "list", "watch", "update", "patch"],
                ),
                rule(&[""], &["nodes/status"], &["update", "patch"]),
                rule(&[""], &["pods"], &["get", "list", "watch", "delete"]),
                rule(&[""], &["pods/status"], &["update", "patch"]),
                rule(
                    &[""],
                    &[
                        "secrets",
                        "configmaps",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "services",
                    ],
                    READ,
                ),
                rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["create", "get", "update", "patch"],
                ),
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                rule(&[""], &["nodes/relay"], &["create"]),
                rule(&[""], &["nodes/stats"], &["get"]),
            ],
        ),
        binding(
            "cluster-admin",
            "cluster-admin",
            "Group",
            &["system:masters"],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            "Group",
            &["system:authenticated"],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            "Group",
            &["system:authenticated"],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            "Group",
            &["system:authenticated", "system:unauthenticated"],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            "User",
            &["system:kube-scheduler"],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            "User",
            &["system:kube-controller-manager"],
        ),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            "User",
            &["system:kube-proxy"],
        ),
        binding("system:node", "system:node", "Group", &["system:nodes"]),
    ]
}
