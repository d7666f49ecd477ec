//! The Node authorizer: what a node agent (`system:node:<name>` in `system:nodes`) may touch,
//! on top of the `system:node` role.
//!
//! A node reads a Secret, ConfigMap or PersistentVolumeClaim only by name and only while a pod
//! bound to it uses that object (volumes, env, envFrom, image pull secrets); it reads pods one by
//! one if bound to it, and lists or watches them only with the field selector
//! `spec.nodeName=<itself>`; it writes only its own Node, its own Lease, and its own pods'
//! status. Everything else a node asks is left to RBAC (`NoOpinion`); callers that are not
//! nodes are not this authorizer's business.
//!
//! Uses are found by scanning the latest snapshot's pods bound to the node: proportional to the
//! pods in the cluster, paid only on a node's read of a Secret, ConfigMap or claim.

use serde_json::Value;

use super::authz::{Attributes, Authorizer, Decision};
use crate::service::Identity;
use crate::store::Store;

const POD_KIND: &str = "/Pod";
const NODES_GROUP: &str = "system:nodes";
const NODE_PREFIX: &str = "system:node:";

pub struct NodeAuthorizer {
    store: Store,
}

/// The node a caller is, if it is one.
pub fn node_of(id: &Identity) -> Option<&str> {
    if !id.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    id.user.strip_prefix(NODE_PREFIX).filter(|n| !n.is_empty())
}

/// Names of objects of `resource` the pod uses.
fn uses(pod: &Value, resource: &str) -> names::Names {
    let mut out = names::Names::default();
    let spec = &pod["spec"];
    let arr = |v: &Value| v.as_array().cloned().unwrap_or_default();
    for vol in arr(&spec["volumes"]) {
        match resource {
            "secrets" => out.add(&vol["secret"]["secretName"]),
            "configmaps" => out.add(&vol["configMap"]["name"]),
            "persistentvolumeclaims" => out.add(&vol["persistentVolumeClaim"]["claimName"]),
            _ => {}
        }
        for src in arr(&vol["projected"]["sources"]) {
            match resource {
                "secrets" => out.add(&src["secret"]["name"]),
                "configmaps" => out.add(&src["configMap"]["name"]),
                _ => {}
            }
        }
    }
    if resource == "secrets" {
        for s in arr(&spec["imagePullSecrets"]) {
            out.add(&s["name"]);
        }
    }
    let containers = arr(&spec["containers"])
        .into_iter()
        .chain(arr(&spec["initContainers"]))
        .chain(arr(&spec["ephemeralContainers"]));
    for c in containers {
        for e in arr(&c["env"]) {
            match resource {
                "secrets" => out.add(&e["valueFrom"]["secretKeyRef"]["name"]),
                "configmaps" => out.add(&e["valueFrom"]["configMapKeyRef"]["name"]),
                _ => {}
            }
        }
        for e in arr(&c["envFrom"]) {
            match resource {
                "secrets" => out.add(&e["secretRef"]["name"]),
                "configmaps" => out.add(&e["configMapRef"]["name"]),
                _ => {}
            }
        }
    }
    out
}

mod names {
    /// A few names, compared by value.
    #[derive(Default)]
    pub struct Names(Vec<String>);

    impl Names {
        pub fn add(&mut self, v: &serde_json::Value) {
            if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
                self.0.push(s.to_string());
            }
        }

        pub fn contains(&self, name: &str) -> bool {
            self.0.iter().any(|n| n == name)
        }
    }
}

impl NodeAuthorizer {
    pub fn new(store: Store) -> Self {
        NodeAuthorizer { store }
    }

    /// The pod `namespace/name`, if it is bound to `node`.
    fn pod_on(&self, node: &str, namespace: &str, name: &str) -> bool {
        let state = self.store.snapshot();
        let key = crate::state::ObjKey {
            kind: POD_KIND.into(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        state
            .get(&key)
            .is_some_and(|p| p.field("spec.nodeName") == node)
    }

    /// Whether a pod bound to `node` in `namespace` uses `resource` `name`.
    fn used_by_pod_on(&self, node: &str, resource: &str, namespace: &str, name: &str) -> bool {
        let state = self.store.snapshot();
        state
            .range(POD_KIND, namespace, None)
            .filter(|(_, p)| p.field("spec.nodeName") == node)
            .any(|(_, p)| {
                serde_json::from_slice::<Value>(&p.json)
                    .is_ok_and(|pod| uses(&pod, resource).contains(name))
            })
    }

    fn decide(&self, node: &str, a: &Attributes<'_>) -> Decision {
        let deny = |why: String| Decision::Deny(why);
        match (a.group, a.resource) {
            ("", "secrets" | "configmaps" | "persistentvolumeclaims") => {
                if a.verb != "get" || a.name.is_empty() {
                    return deny(format!(
                        "a node reads {} only by name, those its pods use",
                        a.resource
                    ));
                }
                if self.used_by_pod_on(node, a.resource, a.namespace, a.name) {
                    Decision::NoOpinion
                } else {
                    deny(format!("no pod bound to node \"{node}\" uses it"))
                }
            }
            ("", "pods") => match a.verb {
                "list" | "watch" => {
                    let want = format!("spec.nodeName={node}");
                    if a.field_selector.split(',').any(|s| s.trim() == want) {
                        Decision::NoOpinion
                    } else {
                        deny(format!(
                            "a node lists and watches only its own pods (field selector {want})"
                        ))
                    }
                }
                _ if a.name.is_empty() => deny("a node names the pod it acts on".into()),
                _ if self.pod_on(node, a.namespace, a.name) => Decision::NoOpinion,
                _ => deny(format!("the pod is not bound to node \"{node}\"")),
            },
            ("", "nodes") => {
                let own = a.name == node || (a.subresource == "relay" && a.name.is_empty());
                let reads = matches!(a.verb, "get" | "list" | "watch") && a.subresource.is_empty();
                if own || reads {
                    Decision::NoOpinion
                } else {
                    deny(format!(
                        "a node changes only its own Node object (\"{node}\")"
                    ))
                }
            }
            ("coordination.k8s.io", "leases") => {
                if a.namespace == "kube-node-lease" && a.name == node {
                    Decision::NoOpinion
                } else {
                    deny(format!(
                        "a node uses only its own Lease (kube-node-lease/{node})"
                    ))
                }
            }
            _ => Decision::NoOpinion,
        }
    }
}

impl Authorizer for NodeAuthorizer {
    fn authorize(&self, id: &Identity, a: &Attributes<'_>) -> Decision {
        match node_of(id) {
            Some(node) if a.is_resource() => self.decide(node, a),
            _ => Decision::NoOpinion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_uses_what_its_spec_names() {
        let pod = serde_json::json!({"spec": {
            "volumes": [{"secret": {"secretName": "vol"}}, {"projected": {"sources": [{"configMap": {"name": "proj"}}]}},
                        {"persistentVolumeClaim": {"claimName": "data"}}],
            "imagePullSecrets": [{"name": "pull"}],
            "initContainers": [{"envFrom": [{"secretRef": {"name": "init"}}]}],
            "containers": [{"env": [{"valueFrom": {"configMapKeyRef": {"name": "cm"}}},
                                    {"valueFrom": {"secretKeyRef": {"name": "env"}}}]}],
        }});
        let s = uses(&pod, "secrets");
        for n in ["vol", "pull", "init", "env"] {
            assert!(s.contains(n), "{n}");
        }
        assert!(!s.contains("cm"));
        let c = uses(&pod, "configmaps");
        assert!(c.contains("proj") && c.contains("cm") && !c.contains("vol"));
        assert!(uses(&pod, "persistentvolumeclaims").contains("data"));
    }

    #[test]
    fn only_nodes_are_nodes() {
        let id = |u: &str, g: &[&str]| Identity {
            user: u.into(),
            groups: g.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            node_of(&id("system:node:n1", &["system:nodes"])),
            Some("n1")
        );
        assert_eq!(node_of(&id("system:node:n1", &[])), None);
        assert_eq!(node_of(&id("alice", &["system:nodes"])), None);
    }
}
