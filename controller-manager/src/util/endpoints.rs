//! What a Service's endpoints are made of, as both endpoint controllers (EndpointSlice and the
//! legacy Endpoints) read it: which pods a Service selects, which of them belong in its
//! endpoints, the address of a pod for an IP family, a service port's target resolved against a
//! pod's containers, and the hostname a pod publishes. Kubernetes' `endpointslice/util` and
//! `podutil.FindPort`.
//!
//! Also [`pod_mapper`], which sends a pod's events to the Services that select it (before and
//! after the change), skipping pod updates that cannot change an endpoint.
//!
//! Both directions go through indexes ([`add_indexes`]): pods by each of their labels, Services
//! by each pair of their selectors, so finding a Service's pods or a pod's Services costs the
//! matches, not a scan of the namespace (with a thousand Services, a scan per event was the
//! controllers' whole CPU time).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use rudder_client::cache::{CachedObject, IndexFn, Reader};
use rudder_client::controller::Mapper;
use rudder_client::informer::Informer;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use serde_json::Value;

use super::pods::{is_ready, phase};
use super::str_at;

/// The label naming the Service an EndpointSlice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming who manages an EndpointSlice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Set (empty) on the endpoints of a Service without a cluster IP.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// The node label an endpoint's zone comes from.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// Index of pods by label: `namespace/key=value` for each of their labels.
pub const INDEX_POD_LABEL: &str = "endpoints.pod-label";
/// Index of Services by selector: `namespace/key=value` for each pair of their selector.
pub const INDEX_SERVICE_SELECTOR: &str = "endpoints.service-selector";

/// An index value: `namespace/key=value` (a key holds no `=`, a namespace no `/`).
fn pair(namespace: &str, key: &str, value: &str) -> String {
    format!("{namespace}/{key}={value}")
}

/// `metadata.labels` of an object's JSON.
pub fn labels_of(v: &Value) -> Option<&Value> {
    v.get("metadata")?.get("labels")
}

/// The pods' label index.
pub fn pod_label_index() -> IndexFn {
    Arc::new(|o: &CachedObject| {
        labels_of(&o.value)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| pair(&o.namespace, k, v.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The Services' selector index.
pub fn service_selector_index() -> IndexFn {
    Arc::new(|o: &CachedObject| {
        service_selector(&o.value)
            .map(|s| s.iter().map(|(k, v)| pair(&o.namespace, k, v)).collect())
            .unwrap_or_default()
    })
}

/// Adds both indexes to the shared informers (each controller asks; the first adds them).
pub fn add_indexes(services: &Informer, pods: &Informer) {
    services.ensure_index(INDEX_SERVICE_SELECTOR, service_selector_index());
    pods.ensure_index(INDEX_POD_LABEL, pod_label_index());
}

/// A Service's selector, or `None` when it has none: such a Service's endpoints are written by
/// hand and no controller touches them. An empty map counts as none, as in Kubernetes (whose
/// storage does not keep an empty map apart from a missing one).
pub fn service_selector(svc: &Value) -> Option<BTreeMap<String, String>> {
    let m = svc.get("spec")?.get("selector")?.as_object()?;
    if m.is_empty() {
        return None;
    }
    Some(
        m.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect(),
    )
}

/// Whether `labels` (a pod's `metadata.labels`, maybe absent) carry every pair of `selector`.
pub fn selects(selector: &BTreeMap<String, String>, labels: Option<&Value>) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v.as_str()))
}

/// Whether a Service of this type gets endpoints from the controllers (ExternalName does not).
pub fn gets_endpoints(svc: &Value) -> bool {
    str_at(svc, "/spec/type") != "ExternalName"
}

/// `spec.clusterIP` is an address (neither empty nor `None`).
pub fn is_ip_set(svc: &Value) -> bool {
    let ip = str_at(svc, "/spec/clusterIP");
    !ip.is_empty() && ip != "None"
}

/// Whether `pod` belongs in a Service's endpoints at all (`ShouldPodBeInEndpoints`): not
/// finished, with an IP, and not being deleted unless `include_terminating`.
pub fn should_be_in_endpoints(pod: &Value, include_terminating: bool) -> bool {
    if matches!(phase(pod), "Succeeded" | "Failed") {
        return false;
    }
    if pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.pointer("/metadata/deletionTimestamp").is_none()
}

/// The pod's IPs, normalised (`status.podIPs`, else `status.podIP`); unreadable ones skipped.
pub fn pod_ips(pod: &Value) -> Vec<IpAddr> {
    let listed: Vec<&str> = pod
        .pointer("/status/podIPs")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|i| i.get("ip").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let raw = if listed.is_empty() {
        vec![str_at(pod, "/status/podIP")]
    } else {
        listed
    };
    raw.into_iter().filter_map(|s| s.parse().ok()).collect()
}

/// The hostname a pod publishes for `svc`: its `spec.hostname` when its `spec.subdomain` names
/// the Service (`ShouldSetHostname`), which is how pods of a StatefulSet get DNS names through
/// its headless Service.
pub fn hostname_for(pod: &Value, svc: &Value) -> Option<String> {
    let hostname = str_at(pod, "/spec/hostname");
    let same_ns = rudder_api::meta::namespace(pod) == rudder_api::meta::namespace(svc);
    (!hostname.is_empty()
        && same_ns
        && str_at(pod, "/spec/subdomain") == rudder_api::meta::name(svc))
    .then(|| hostname.to_string())
}

/// A protocol, `TCP` when unset.
fn protocol(v: &Value) -> &str {
    match str_at(v, "/protocol") {
        "" => "TCP",
        p => p,
    }
}

/// The container port a service port (`spec.ports[i]`'s JSON) reaches on `pod`
/// (`podutil.FindPort`): a numeric `targetPort` as is (the port itself when unset); a named one
/// looked up among the ports of the pod's containers, then of its sidecars (init containers with
/// `restartPolicy: Always`), by name and protocol. `None` when the name is not found: the pod
/// does not serve that port.
pub fn find_port(pod: &Value, svc_port: &Value) -> Option<i32> {
    let target = svc_port.get("targetPort");
    if let Some(name) = target.and_then(Value::as_str) {
        // A name that is a number (`"8080"`) is a number, as in IntOrString.
        if let Ok(n) = name.parse::<i32>() {
            return Some(n);
        }
        let proto = protocol(svc_port);
        let named = |c: &Value| {
            c.get("ports").and_then(Value::as_array).and_then(|ps| {
                ps.iter()
                    .find(|p| str_at(p, "/name") == name && protocol(p) == proto)
                    .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
            })
        };
        let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
        let sidecars = pod
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| str_at(c, "/restartPolicy") == "Always");
        return containers
            .into_iter()
            .flatten()
            .chain(sidecars)
            .find_map(named)
            .and_then(|n| i32::try_from(n).ok());
    }
    target
        .and_then(Value::as_i64)
        .or_else(|| svc_port.get("port").and_then(Value::as_i64))
        .and_then(|n| i32::try_from(n).ok())
}

/// The pods whose endpoints `svc` gets (from `pods`, which has [`INDEX_POD_LABEL`]): `None`
/// when the controllers leave its endpoints alone (an ExternalName Service, or one without a
/// selector).
pub fn selected_pods(svc: &Value, pods: &Reader) -> Option<Vec<Arc<CachedObject>>> {
    if !gets_endpoints(svc) {
        return None;
    }
    let selector = service_selector(svc)?;
    let (k, v) = selector.iter().next()?;
    let namespace = rudder_api::meta::namespace(svc);
    Some(
        pods.by_index(INDEX_POD_LABEL, &pair(namespace, k, v))
            .into_iter()
            .filter(|p| selects(&selector, labels_of(&p.value)))
            .collect(),
    )
}

/// What of a pod its endpoints show: if none of it changed (nor its labels), no Service needs
/// a look (Kubernetes' `podEndpointsChanged`).
type View<'a> = (
    Option<&'a Value>,
    &'a str,
    bool,
    &'a str,
    bool,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a Value>,
);

/// The field at `path` (without the allocations of a JSON pointer: this runs per pod event).
fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn endpoint_view(pod: &Value) -> View<'_> {
    let s = |path: &[&str]| at(pod, path).and_then(Value::as_str).unwrap_or("");
    (
        at(pod, &["status", "podIPs"]),
        s(&["status", "podIP"]),
        is_ready(pod),
        s(&["status", "phase"]),
        at(pod, &["metadata", "deletionTimestamp"]).is_some(),
        s(&["spec", "nodeName"]),
        s(&["spec", "hostname"]),
        s(&["spec", "subdomain"]),
        labels_of(pod),
    )
}

/// The keys of the Services in `pod`'s namespace whose selectors match it (from `services`,
/// which has [`INDEX_SERVICE_SELECTOR`]).
pub fn services_selecting(services: &Reader, pod: &CachedObject) -> Vec<Key> {
    let labels = labels_of(&pod.value);
    let Some(m) = labels.and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut keys: Vec<Key> = m
        .iter()
        .flat_map(|(k, v)| {
            services.by_index(
                INDEX_SERVICE_SELECTOR,
                &pair(&pod.namespace, k, v.as_str().unwrap_or("")),
            )
        })
        .filter(|s| service_selector(&s.value).is_some_and(|sel| selects(&sel, labels)))
        .map(|s| s.key())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Maps pod events to the Services selecting the pod, old labels and new; a relist to every
/// Service.
pub fn pod_mapper(services: Reader) -> Mapper {
    Box::new(move |ev| {
        let mut keys = match ev {
            ReflectorEvent::Restarted(_) => return services.keys(),
            ReflectorEvent::Updated { old, new } => {
                if endpoint_view(&old.value) == endpoint_view(&new.value) {
                    return Vec::new();
                }
                let mut k = services_selecting(&services, old);
                k.extend(services_selecting(&services, new));
                k
            }
            ReflectorEvent::Added(p) | ReflectorEvent::Deleted(p) => {
                services_selecting(&services, p)
            }
        };
        keys.sort();
        keys.dedup();
        keys
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rudder_client::cache::Store;
    use serde_json::json;

    use super::*;

    fn pod(extra: Value) -> Value {
        let mut p = json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]}});
        json_merge(&mut p, extra);
        p
    }

    fn json_merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    json_merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn selectors_and_selection() {
        let svc = |sel: Value| json!({"spec": {"selector": sel}});
        assert_eq!(service_selector(&json!({"spec": {}})), None);
        assert_eq!(service_selector(&svc(json!({}))), None, "empty is none");
        let sel = service_selector(&svc(json!({"app": "web"}))).unwrap();
        let p = pod(json!({}));
        assert!(selects(&sel, labels_of(&p)));
        let other = service_selector(&svc(json!({"app": "web", "tier": "fe"}))).unwrap();
        assert!(!selects(&other, labels_of(&p)));
        assert!(!selects(&sel, None));
    }

    #[test]
    fn which_pods_belong_in_endpoints() {
        assert!(should_be_in_endpoints(&pod(json!({})), false));
        assert!(!should_be_in_endpoints(
            &pod(json!({"status": {"phase": "Succeeded"}})),
            true
        ));
        assert!(!should_be_in_endpoints(
            &pod(json!({"status": {"phase": "Failed"}})),
            true
        ));
        let no_ip = json!({"status": {"phase": "Running"}});
        assert!(!should_be_in_endpoints(&no_ip, true));
        let deleting = pod(json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}}));
        assert!(!should_be_in_endpoints(&deleting, false));
        assert!(should_be_in_endpoints(&deleting, true));
        // podIP alone is enough; an unreadable IP is none.
        let legacy = json!({"status": {"phase": "Running", "podIP": "10.0.0.9"}});
        assert_eq!(
            pod_ips(&legacy),
            vec!["10.0.0.9".parse::<IpAddr>().unwrap()]
        );
        assert!(pod_ips(&json!({"status": {"podIP": "nope"}})).is_empty());
    }

    #[test]
    fn target_ports_resolve_per_pod() {
        let p = pod(json!({}));
        assert_eq!(
            find_port(&p, &json!({"port": 80, "targetPort": 9090})),
            Some(9090)
        );
        assert_eq!(
            find_port(&p, &json!({"port": 80})),
            Some(80),
            "unset: the port"
        );
        assert_eq!(
            find_port(&p, &json!({"port": 80, "targetPort": "http"})),
            Some(8080)
        );
        assert_eq!(
            find_port(&p, &json!({"port": 80, "targetPort": "8081"})),
            Some(8081)
        );
        assert_eq!(
            find_port(&p, &json!({"port": 53, "targetPort": "dns"})),
            None,
            "dns is UDP, the service port TCP"
        );
        assert_eq!(
            find_port(
                &p,
                &json!({"port": 53, "targetPort": "dns", "protocol": "UDP"})
            ),
            Some(53)
        );
        assert_eq!(
            find_port(&p, &json!({"port": 80, "targetPort": "grpc"})),
            None
        );
        // A sidecar's ports count, a plain init container's do not.
        let side = pod(json!({"spec": {"initContainers": [
            {"name": "s", "restartPolicy": "Always", "ports": [{"name": "grpc", "containerPort": 7000}]},
            {"name": "i", "ports": [{"name": "init", "containerPort": 7001}]}]}}));
        assert_eq!(
            find_port(&side, &json!({"port": 1, "targetPort": "grpc"})),
            Some(7000)
        );
        assert_eq!(
            find_port(&side, &json!({"port": 1, "targetPort": "init"})),
            None
        );
    }

    #[test]
    fn hostnames_only_under_their_own_subdomain() {
        let svc = json!({"metadata": {"name": "db", "namespace": "ns"}});
        let p = pod(json!({"spec": {"hostname": "db-0", "subdomain": "db"}}));
        assert_eq!(hostname_for(&p, &svc).as_deref(), Some("db-0"));
        let elsewhere = pod(json!({"spec": {"hostname": "db-0", "subdomain": "other"}}));
        assert_eq!(hostname_for(&elsewhere, &svc), None);
        assert_eq!(
            hostname_for(&pod(json!({"spec": {"subdomain": "db"}})), &svc),
            None
        );
    }

    fn cached(kind: &str, name: &str, v: Value) -> Arc<CachedObject> {
        Arc::new(CachedObject::new("v1", kind, "ns", name, 1, v))
    }

    #[test]
    fn pod_events_reach_the_services_selecting_the_pod() {
        let (mut store, services) = Store::new();
        services
            .add_index(INDEX_SERVICE_SELECTOR, service_selector_index())
            .expect("index");
        for (name, sel) in [
            ("web", json!({"app": "web"})),
            ("api", json!({"app": "api"})),
            ("none", json!(null)),
        ] {
            store.apply(cached(
                "Service",
                name,
                json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {"selector": sel}}),
            ));
        }
        let map = pod_mapper(services);
        let web = cached("Pod", "p", pod(json!({})));
        assert_eq!(
            map(&ReflectorEvent::Added(web.clone())),
            vec!["ns/web".to_string()]
        );
        // An update that changes nothing an endpoint shows maps to nothing.
        let annotated = cached(
            "Pod",
            "p",
            pod(json!({"metadata": {"annotations": {"a": "b"}}})),
        );
        let ev = ReflectorEvent::Updated {
            old: web.clone(),
            new: annotated,
        };
        assert!(map(&ev).is_empty());
        // A relabel reaches the old Service and the new one.
        let api = cached(
            "Pod",
            "p",
            pod(json!({"metadata": {"labels": {"app": "api"}}})),
        );
        let ev = ReflectorEvent::Updated {
            old: web.clone(),
            new: api,
        };
        assert_eq!(map(&ev), vec!["ns/api".to_string(), "ns/web".to_string()]);
        let unready = cached(
            "Pod",
            "p",
            pod(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})),
        );
        let ready = cached(
            "Pod",
            "p",
            pod(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
        );
        let ev = ReflectorEvent::Updated {
            old: unready,
            new: ready,
        };
        assert_eq!(map(&ev), vec!["ns/web".to_string()]);
        assert_eq!(map(&ReflectorEvent::Restarted(vec![])).len(), 3);
    }
}
