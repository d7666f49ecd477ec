//! The endpoints a Service should have, grouped by port set, and the slice contents as JSON.
//!
//! One endpoint per selected pod that is not finished and has an IP of the address type
//! (terminating pods included): its address, conditions (`serving` = the pod's Ready
//! condition, `terminating` = being deleted, `ready` = serving and not terminating, or always
//! with `publishNotReadyAddresses`), hostname, node, zone and a reference to the pod. Its ports
//! are the Service's ports with each `targetPort` resolved against that pod's containers; pods
//! that resolve to different numbers (or lack a named port) get different port sets, and each
//! port set has slices of its own, as Kubernetes groups them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use rudder_client::cache::CachedObject;
use serde_json::{Map, Value, json};

use crate::util::endpoints::{
    LABEL_HEADLESS, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, find_port, hostname_for, is_ip_set,
    pod_ips, should_be_in_endpoints,
};
use crate::util::pods::is_ready;
use crate::util::str_at;

/// The `managed-by` value of the slices this controller owns.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

pub type Labels = BTreeMap<String, String>;

/// One port of a slice (and of an Endpoints subset).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    pub name: String,
    pub port: Option<i32>,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

impl Port {
    pub fn from_json(v: &Value) -> Port {
        Port {
            name: str_at(v, "/name").to_string(),
            port: v
                .get("port")
                .and_then(Value::as_i64)
                .and_then(|n| i32::try_from(n).ok()),
            protocol: match str_at(v, "/protocol") {
                "" => "TCP".into(),
                p => p.into(),
            },
            app_protocol: v
                .get("appProtocol")
                .and_then(Value::as_str)
                .map(String::from),
        }
    }

    /// Its JSON; an empty name is written only when `empty_name` (a slice port's name is a
    /// pointer, an Endpoints port's is omitted when empty).
    pub fn to_json(&self, empty_name: bool) -> Value {
        let mut m = Map::new();
        if empty_name || !self.name.is_empty() {
            m.insert("name".into(), json!(self.name));
        }
        if let Some(p) = self.port {
            m.insert("port".into(), json!(p));
        }
        m.insert("protocol".into(), json!(self.protocol));
        if let Some(a) = &self.app_protocol {
            m.insert("appProtocol".into(), json!(a));
        }
        Value::Object(m)
    }
}

/// A port set as a group key: order does not matter (Kubernetes' `PortMapKey`).
pub fn port_key(ports: &[Port]) -> Vec<Port> {
    let mut k = ports.to_vec();
    k.sort();
    k
}

/// The pod an endpoint stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Target {
    pub fn from_json(t: &Value) -> Target {
        Target {
            kind: str_at(t, "/kind").into(),
            namespace: str_at(t, "/namespace").into(),
            name: str_at(t, "/name").into(),
            uid: str_at(t, "/uid").into(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"kind": self.kind, "namespace": self.namespace, "name": self.name, "uid": self.uid})
    }
}

/// An endpoint's identity in its slices: addresses, hostname and the target's name (the
/// fields Kubernetes hashes). The rest may change in place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointKey {
    addresses: Vec<String>,
    hostname: String,
    namespace: String,
    name: String,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<String>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub hostname: Option<String>,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    pub target: Option<Target>,
}

impl Endpoint {
    pub fn key(&self) -> EndpointKey {
        let mut addresses = self.addresses.clone();
        addresses.sort();
        let t = self.target.as_ref();
        EndpointKey {
            addresses,
            hostname: self.hostname.clone().unwrap_or_default(),
            namespace: t.map(|t| t.namespace.clone()).unwrap_or_default(),
            name: t.map(|t| t.name.clone()).unwrap_or_default(),
        }
    }

    pub fn from_json(v: &Value) -> Endpoint {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
        let b = |p: &str| v.pointer(p).and_then(Value::as_bool);
        Endpoint {
            addresses: v
                .get("addresses")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            ready: b("/conditions/ready"),
            serving: b("/conditions/serving"),
            terminating: b("/conditions/terminating"),
            hostname: s("/hostname"),
            node_name: s("/nodeName"),
            zone: s("/zone"),
            target: v.get("targetRef").map(Target::from_json),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut conditions = Map::new();
        for (k, v) in [
            ("ready", self.ready),
            ("serving", self.serving),
            ("terminating", self.terminating),
        ] {
            if let Some(v) = v {
                conditions.insert(k.into(), json!(v));
            }
        }
        let mut m = Map::new();
        m.insert("addresses".into(), json!(self.addresses));
        m.insert("conditions".into(), Value::Object(conditions));
        for (k, v) in [
            ("hostname", &self.hostname),
            ("nodeName", &self.node_name),
            ("zone", &self.zone),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        if let Some(t) = &self.target {
            m.insert("targetRef".into(), t.to_json());
        }
        Value::Object(m)
    }
}

/// The desired endpoints of one port set, in key order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// The ports as the Service lists them.
    pub ports: Vec<Port>,
    pub endpoints: BTreeMap<EndpointKey, Endpoint>,
}

/// The address types a Service's slices have (`getAddressTypesForService`): its
/// `spec.ipFamilies`; without them the family of its cluster IP; a headless Service without
/// families gets both.
pub fn address_types(svc: &Value) -> Vec<&'static str> {
    let mut out = Vec::new();
    for f in svc
        .pointer("/spec/ipFamilies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let t = match f {
            "IPv4" => "IPv4",
            "IPv6" => "IPv6",
            _ => continue,
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if !out.is_empty() {
        return out;
    }
    if is_ip_set(svc) {
        let v6 = str_at(svc, "/spec/clusterIP")
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_ipv6());
        return vec![if v6 { "IPv6" } else { "IPv4" }];
    }
    vec!["IPv4", "IPv6"]
}

fn of_type(ip: &IpAddr, address_type: &str) -> bool {
    match address_type {
        "IPv6" => ip.is_ipv6(),
        _ => ip.is_ipv4(),
    }
}

/// The slice ports `pod` serves for `svc` (`getEndpointPorts`): each service port whose target
/// the pod resolves. A headless Service may have none.
pub fn endpoint_ports(svc: &Value, pod: &Value) -> Vec<Port> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            let port = find_port(pod, sp)?;
            let mut p = Port::from_json(sp);
            p.port = Some(port);
            Some(p)
        })
        .collect()
}

/// The endpoint of `pod` for `svc` and an address type (`podToEndpoint`); `None` when the pod
/// has no address of that type. `zone` is its node's zone label.
pub fn endpoint_of(
    svc: &Value,
    pod: &CachedObject,
    zone: Option<String>,
    address_type: &str,
) -> Option<Endpoint> {
    let p = &pod.value;
    let mut addresses: Vec<String> = pod_ips(p)
        .iter()
        .filter(|ip| of_type(ip, address_type))
        .map(IpAddr::to_string)
        .collect();
    if addresses.is_empty() {
        return None;
    }
    addresses.sort();
    let serving = is_ready(p);
    let terminating = pod.is_deleting();
    let publish = svc
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let node = str_at(p, "/spec/nodeName");
    Some(Endpoint {
        addresses,
        ready: Some(publish || (serving && !terminating)),
        serving: Some(serving),
        terminating: Some(terminating),
        hostname: hostname_for(p, svc),
        node_name: (!node.is_empty()).then(|| node.to_string()),
        zone,
        target: Some(Target {
            kind: "Pod".into(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid().to_string(),
        }),
    })
}

/// How a pod's node is known: its zone label, or not found.
pub enum NodeLookup {
    Found(Option<String>),
    Missing,
}

/// The desired endpoints of `svc` of one address type, by port set, from the pods its selector
/// matches; and the pods skipped because their node is not known (Kubernetes leaves them out
/// and retries, unless the Service publishes not-ready addresses).
pub fn desired(
    svc: &Value,
    pods: &[Arc<CachedObject>],
    node: &dyn Fn(&str) -> NodeLookup,
    address_type: &str,
) -> (BTreeMap<Vec<Port>, Group>, Vec<String>) {
    let publish = svc
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut groups: BTreeMap<Vec<Port>, Group> = BTreeMap::new();
    let mut skipped = Vec::new();
    for pod in pods {
        if !should_be_in_endpoints(&pod.value, true) {
            continue;
        }
        let zone = match node(str_at(&pod.value, "/spec/nodeName")) {
            NodeLookup::Found(z) => z,
            NodeLookup::Missing if publish => None,
            NodeLookup::Missing => {
                skipped.push(pod.key());
                continue;
            }
        };
        let ports = endpoint_ports(svc, &pod.value);
        let group = groups.entry(port_key(&ports)).or_insert_with(|| Group {
            ports,
            endpoints: BTreeMap::new(),
        });
        if let Some(ep) = endpoint_of(svc, pod, zone, address_type) {
            group.endpoints.insert(ep.key(), ep);
        }
    }
    (groups, skipped)
}

/// The labels every slice of `svc` carries (`setEndpointSliceLabels`): the Service's own,
/// except the reserved keys, plus the service name, the manager and, without a cluster IP, the
/// headless label.
pub fn slice_labels(svc: &Value) -> Labels {
    let reserved = [LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS];
    let mut labels: Labels = rudder_api::meta::labels(svc)
        .into_iter()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .collect();
    if !is_ip_set(svc) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(
        LABEL_SERVICE_NAME.into(),
        rudder_api::meta::name(svc).into(),
    );
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels
}

/// What a slice holds, as read from its JSON or to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    pub address_type: String,
    pub ports: Vec<Port>,
    pub endpoints: Vec<Endpoint>,
    pub labels: Labels,
}

impl Content {
    pub fn from_json(v: &Value) -> Content {
        let list = |f: &str| list(v, f);
        Content {
            address_type: str_at(v, "/addressType").into(),
            ports: list("ports").iter().map(Port::from_json).collect(),
            endpoints: list("endpoints").iter().map(Endpoint::from_json).collect(),
            labels: rudder_api::meta::labels(v),
        }
    }

    /// The fields of a slice this content sets, to merge over its metadata.
    pub fn write_into(&self, slice: &mut Value) {
        let m = rudder_api::meta::metadata_mut(slice);
        m.insert("labels".into(), json!(self.labels));
        slice["addressType"] = json!(self.address_type);
        slice["ports"] = Value::Array(self.ports.iter().map(|p| p.to_json(true)).collect());
        slice["endpoints"] = Value::Array(self.endpoints.iter().map(Endpoint::to_json).collect());
    }
}

/// The array `field` of `v`, empty when absent.
pub fn list<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A new slice of `svc` with `content` (`newEndpointSlice`): named by the server from
/// `<service>-`, controlled by the Service.
pub fn new_slice(svc: &Value, content: &Content) -> Value {
    let name = rudder_api::meta::name(svc);
    let mut slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "generateName": generate_name(name),
            "namespace": rudder_api::meta::namespace(svc),
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Service", "name": name,
                "uid": rudder_api::meta::uid(svc),
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
    });
    content.write_into(&mut slice);
    slice
}

/// `<service>-`, or the bare name when the dash would make it too long to be a name prefix
/// (`getEndpointSlicePrefix`).
fn generate_name(service: &str) -> String {
    if service.len() < 253 {
        format!("{service}-")
    } else {
        service.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid",
            "labels": {"team": "a", LABEL_MANAGED_BY: "someone-else"}}, "spec": spec})
    }

    fn pod(name: &str, ip: &str, ready: bool, extra: Value) -> Arc<CachedObject> {
        let mut v = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
        if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
            for (k, val) in b {
                match (a.get_mut(&k), val) {
                    (Some(Value::Object(x)), Value::Object(y)) => x.extend(y),
                    (_, val) => {
                        a.insert(k, val);
                    }
                }
            }
        }
        Arc::new(CachedObject::new("v1", "Pod", "ns", name, 1, v))
    }

    fn zone_a(_: &str) -> NodeLookup {
        NodeLookup::Found(Some("a".into()))
    }

    #[test]
    fn conditions_as_kubernetes_sets_them() {
        let s = svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let ready = endpoint_of(&s, &pod("p", "10.0.0.1", true, json!({})), None, "IPv4").unwrap();
        assert_eq!(
            (ready.ready, ready.serving, ready.terminating),
            (Some(true), Some(true), Some(false))
        );
        let unready =
            endpoint_of(&s, &pod("p", "10.0.0.1", false, json!({})), None, "IPv4").unwrap();
        assert_eq!(
            (unready.ready, unready.serving, unready.terminating),
            (Some(false), Some(false), Some(false))
        );
        let deleting = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}});
        let term = endpoint_of(
            &s,
            &pod("p", "10.0.0.1", true, deleting.clone()),
            None,
            "IPv4",
        )
        .unwrap();
        assert_eq!(
            (term.ready, term.serving, term.terminating),
            (Some(false), Some(true), Some(true)),
            "a terminating pod still serving is not ready"
        );
        let publish = svc(json!({"publishNotReadyAddresses": true, "ports": [{"port": 80}]}));
        let p = endpoint_of(
            &publish,
            &pod("p", "10.0.0.1", false, deleting),
            None,
            "IPv4",
        )
        .unwrap();
        assert_eq!(
            (p.ready, p.serving, p.terminating),
            (Some(true), Some(false), Some(true))
        );
        assert_eq!(
            endpoint_of(&s, &pod("p", "10.0.0.1", true, json!({})), None, "IPv6"),
            None
        );
        assert_eq!(
            ready.to_json(),
            json!({"addresses": ["10.0.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": "n1", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "p", "uid": "uid-p"}})
        );
        assert_eq!(Endpoint::from_json(&ready.to_json()), ready, "round trip");
    }

    #[test]
    fn pods_resolving_a_named_port_differently_get_their_own_group() {
        let s = svc(
            json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
        );
        let other_port = json!({"spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 9090}]}]}});
        let no_port = json!({"spec": {"nodeName": "n1", "containers": [{"name": "c"}]}});
        let pods = vec![
            pod("a", "10.0.0.1", true, json!({})),
            pod("b", "10.0.0.2", true, json!({})),
            pod("c", "10.0.0.3", true, other_port),
            pod("d", "10.0.0.4", true, no_port),
            pod(
                "e",
                "10.0.0.5",
                true,
                json!({"status": {"phase": "Succeeded"}}),
            ),
        ];
        let (groups, skipped) = desired(&s, &pods, &zone_a, "IPv4");
        assert!(skipped.is_empty());
        let summary: Vec<(Vec<Option<i32>>, Vec<String>)> = groups
            .values()
            .map(|g| {
                (
                    g.ports.iter().map(|p| p.port).collect(),
                    g.endpoints
                        .values()
                        .filter_map(|e| e.target.as_ref().map(|t| t.name.clone()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (vec![], vec!["d".to_string()]),
                (vec![Some(8080)], vec!["a".to_string(), "b".to_string()]),
                (vec![Some(9090)], vec!["c".to_string()]),
            ]
        );
        let e = groups
            .values()
            .nth(1)
            .unwrap()
            .endpoints
            .values()
            .next()
            .unwrap();
        assert_eq!(e.zone.as_deref(), Some("a"));
    }

    #[test]
    fn pods_on_unknown_nodes_are_skipped_unless_published() {
        let missing = |_: &str| NodeLookup::Missing;
        let s = svc(json!({"ports": [{"port": 80}]}));
        let (groups, skipped) = desired(
            &s,
            &[pod("a", "10.0.0.1", true, json!({}))],
            &missing,
            "IPv4",
        );
        assert!(groups.is_empty());
        assert_eq!(skipped, vec!["ns/a".to_string()]);
        let s = svc(json!({"ports": [{"port": 80}], "publishNotReadyAddresses": true}));
        let (groups, skipped) = desired(
            &s,
            &[pod("a", "10.0.0.1", true, json!({}))],
            &missing,
            "IPv4",
        );
        assert_eq!(groups.len(), 1);
        assert!(skipped.is_empty());
    }

    #[test]
    fn labels_address_types_and_new_slices() {
        let s = svc(json!({"clusterIP": "10.96.0.5", "ipFamilies": ["IPv4"]}));
        let labels = slice_labels(&s);
        assert_eq!(
            labels,
            [
                ("team", "a"),
                (LABEL_SERVICE_NAME, "web"),
                (LABEL_MANAGED_BY, MANAGED_BY),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Labels>()
        );
        let headless = svc(json!({"clusterIP": "None"}));
        assert_eq!(
            slice_labels(&headless)
                .get(LABEL_HEADLESS)
                .map(String::as_str),
            Some("")
        );
        assert_eq!(address_types(&s), vec!["IPv4"]);
        assert_eq!(
            address_types(&svc(json!({"clusterIP": "fd00::5"}))),
            vec!["IPv6"]
        );
        assert_eq!(address_types(&headless), vec!["IPv4", "IPv6"]);
        assert_eq!(
            address_types(&svc(json!({"ipFamilies": ["IPv6", "IPv4"]}))),
            vec!["IPv6", "IPv4"]
        );
        let content = Content {
            address_type: "IPv4".into(),
            ports: vec![Port {
                name: String::new(),
                port: Some(80),
                protocol: "TCP".into(),
                app_protocol: None,
            }],
            endpoints: vec![],
            labels,
        };
        let slice = new_slice(&s, &content);
        assert_eq!(slice["metadata"]["generateName"], "web-");
        assert_eq!(
            slice["metadata"]["ownerReferences"][0],
            json!({"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "svc-uid", "controller": true, "blockOwnerDeletion": true})
        );
        assert_eq!(
            slice["ports"],
            json!([{"name": "", "port": 80, "protocol": "TCP"}])
        );
        assert_eq!(slice["endpoints"], json!([]));
        assert_eq!(Content::from_json(&slice), content, "round trip");
    }
}
