//! The benchmark's object: one realistic Pod of about 1.5 KB, identical bytes for both systems.
//!
//! Names have a fixed width, so every object is exactly the same size; the JSON is built once and
//! only the name is spliced in per request, so the client spends its CPU on the wire, not on
//! serialising.

use bytes::Bytes;

/// The namespace every benchmark pod lives in (it exists from the start in Rudder).
pub const NAMESPACE: &str = "default";

/// Prefix of the pods created by the create phases (and read by gets and lists).
pub const BULK_PREFIX: &str = "pod-";
/// Prefix of the pods created while watchers listen.
pub const WATCH_PREFIX: &str = "watch-";

/// A pod name: prefix and a zero-padded index (fixed width keeps object sizes equal).
pub fn name(prefix: &str, i: u64) -> String {
    format!("{prefix}{i:07}")
}

/// The index back from a name made by [`name`] with `prefix`.
pub fn index(prefix: &str, name: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.parse().ok()
}

/// etcd key of a pod, laid out as kube-apiserver lays it out.
pub fn etcd_key(name: &str) -> Bytes {
    Bytes::from(format!("/registry/pods/{NAMESPACE}/{name}"))
}

/// The prefix holding every pod of [`NAMESPACE`] in etcd.
pub fn etcd_prefix() -> Bytes {
    Bytes::from(format!("/registry/pods/{NAMESPACE}/"))
}

/// Builds Pod JSON for any name from one serialised template.
#[derive(Clone)]
pub struct PodTemplate {
    head: String,
    tail: String,
}

const MARK: &str = "@@NAME@@";

impl Default for PodTemplate {
    fn default() -> Self {
        Self::new()
    }
}

impl PodTemplate {
    pub fn new() -> Self {
        // A web pod as a Deployment would stamp it: labels, annotations, a container with a
        // probe, resources, env and mounts; the size Kubernetes pods typically have in etcd.
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": MARK,
                "namespace": NAMESPACE,
                "labels": {
                    "app": "web",
                    "tier": "frontend",
                    "pod-template-hash": "7d4b9c8f6d",
                    "app.kubernetes.io/name": "web",
                    "app.kubernetes.io/part-of": "shop",
                    "app.kubernetes.io/version": "1.24.3"
                },
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": "9102",
                    "kubectl.kubernetes.io/default-container": "web"
                }
            },
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "registry.example.com/shop/web:1.24.3",
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["--port=8080", "--log-level=info", "--cache=redis"],
                        "ports": [
                            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 9102, "protocol": "TCP"}
                        ],
                        "env": [
                            {"name": "ENVIRONMENT", "value": "production"},
                            {"name": "CACHE_URL", "value": "redis://cache.shop.svc.cluster.local:6379"},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                        ],
                        "resources": {
                            "requests": {"cpu": "250m", "memory": "256Mi"},
                            "limits": {"cpu": "1", "memory": "512Mi"}
                        },
                        "readinessProbe": {
                            "httpGet": {"path": "/healthz/ready", "port": 8080},
                            "periodSeconds": 5,
                            "failureThreshold": 3
                        },
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/web", "readOnly": true}
                        ]
                    }
                ],
                "volumes": [
                    {"name": "config", "configMap": {"name": "web-config"}}
                ],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "serviceAccountName": "web",
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                ]
            }
        });
        let s = pod.to_string();
        // The mark is a plain JSON string, so it appears verbatim exactly once.
        let (head, tail) = s.split_once(MARK).unwrap_or((s.as_str(), ""));
        PodTemplate {
            head: head.to_string(),
            tail: tail.to_string(),
        }
    }

    /// The Pod's JSON with `name`.
    pub fn json(&self, name: &str) -> Bytes {
        let mut s = String::with_capacity(self.head.len() + name.len() + self.tail.len());
        s.push_str(&self.head);
        s.push_str(name);
        s.push_str(&self.tail);
        Bytes::from(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_about_one_and_a_half_kilobytes_and_valid_json() {
        let t = PodTemplate::new();
        let a = t.json(&name(BULK_PREFIX, 1));
        let b = t.json(&name(BULK_PREFIX, 9_999_999));
        assert_eq!(a.len(), b.len());
        assert!((1400..1700).contains(&a.len()), "size {}", a.len());
        let v: serde_json::Value = serde_json::from_slice(&a).expect("valid JSON");
        assert_eq!(v["metadata"]["name"], "pod-0000001");
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(index(WATCH_PREFIX, &name(WATCH_PREFIX, 42)), Some(42));
        assert_eq!(index(WATCH_PREFIX, "pod-0000042"), None);
    }
}
