//! The Endpoints controller, as Kubernetes' `endpoints-controller`: the legacy core/v1
//! Endpoints object, named as its Service, for every Service with a selector.
//!
//! Per Service (a key):
//! - gone: its Endpoints are deleted (whoever wrote them, as Kubernetes);
//! - type ExternalName, or no selector: nothing is touched (those Endpoints are the user's);
//! - otherwise the selected pods that are not finished and have an IP of the Service's first
//!   IP family (terminating ones only with `publishNotReadyAddresses`) become addresses (ip,
//!   nodeName, hostname under the Service's subdomain, targetRef): under `addresses` when Ready
//!   or published regardless, else `notReadyAddresses`; with each service port's target
//!   resolved per pod. Pods sharing a port set share a subset (Kubernetes' `RepackSubsets`), in
//!   a canonical order, so an unchanged set of pods is no write.
//! - at most 1000 addresses are kept, ready ones first, each subset its share, and the
//!   Endpoints carry `endpoints.kubernetes.io/over-capacity: truncated`;
//! - labels: the Service's, `service.kubernetes.io/headless` without a cluster IP, and
//!   `endpointslice.kubernetes.io/skip-mirror: "true"` (the EndpointSlice controller already
//!   publishes these endpoints).
//!
//! Writes: create, or update guarded by the cached resourceVersion, after the cache showed this
//! controller's previous write for the Service ([`super::endpointslice::tracker`]). Failures
//! are Warning Events `FailedToCreateEndpoint` / `FailedToUpdateEndpoint`. Pods reach the
//! Services selecting them; an Endpoints object deleted by someone else, or listed anew, reaches
//! its Service (so one left behind by a Service deleted while no controller ran goes too).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::cache::{CachedObject, Reader, split_key};
use rudder_client::conn::kind_ref;
use rudder_client::controller::{Action, Controller, Mapper, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::proto as pb;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use rudder_client::{Api, ClientError};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::endpointslice::desired::{Port, Target};
use super::endpointslice::tracker::Tracker;
use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::endpoints::{
    LABEL_HEADLESS, add_indexes, find_port, hostname_for, is_ip_set, pod_ips, pod_mapper,
    selected_pods, should_be_in_endpoints,
};
use crate::util::pods::is_ready;
use crate::util::str_at;

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "endpoints",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// Most addresses one Endpoints object holds (Kubernetes' `maxCapacity`).
pub const MAX_CAPACITY: usize = 1000;
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Endpoints used as a leader-election lock by older components: never a leftover.
const ANNOTATION_LEADER: &str = "control-plane.alpha.kubernetes.io/leader";

/// One address of a subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub ip: String,
    pub hostname: Option<String>,
    pub node_name: Option<String>,
    pub target: Option<Target>,
}

impl Address {
    fn sort_key(&self) -> AddrKey {
        let uid = self
            .target
            .as_ref()
            .map(|t| t.uid.clone())
            .unwrap_or_default();
        (self.ip.clone(), uid)
    }

    fn from_json(v: &Value) -> Address {
        let s = |f: &str| v.get(f).and_then(Value::as_str).map(String::from);
        Address {
            ip: str_at(v, "/ip").into(),
            hostname: s("hostname").filter(|h| !h.is_empty()),
            node_name: s("nodeName"),
            target: v.get("targetRef").map(Target::from_json),
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("ip".into(), json!(self.ip));
        if let Some(h) = &self.hostname {
            m.insert("hostname".into(), json!(h));
        }
        if let Some(n) = &self.node_name {
            m.insert("nodeName".into(), json!(n));
        }
        if let Some(t) = &self.target {
            m.insert("targetRef".into(), t.to_json());
        }
        Value::Object(m)
    }
}

/// One subset: the addresses that serve the same ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subset {
    pub addresses: Vec<Address>,
    pub not_ready: Vec<Address>,
    pub ports: Vec<Port>,
}

impl Subset {
    fn from_json(v: &Value) -> Subset {
        let list = |f: &str| super::endpointslice::desired::list(v, f);
        Subset {
            addresses: list("addresses").iter().map(Address::from_json).collect(),
            not_ready: list("notReadyAddresses")
                .iter()
                .map(Address::from_json)
                .collect(),
            ports: list("ports").iter().map(Port::from_json).collect(),
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        let addrs = |a: &[Address]| Value::Array(a.iter().map(Address::to_json).collect());
        if !self.addresses.is_empty() {
            m.insert("addresses".into(), addrs(&self.addresses));
        }
        if !self.not_ready.is_empty() {
            m.insert("notReadyAddresses".into(), addrs(&self.not_ready));
        }
        if !self.ports.is_empty() {
            m.insert(
                "ports".into(),
                Value::Array(self.ports.iter().map(|p| p.to_json(false)).collect()),
            );
        }
        Value::Object(m)
    }
}

/// The IP family of a Service's endpoints: its first `ipFamilies` entry; without one, its
/// cluster IP's family, or (headless) the pod's own.
fn wants_ipv6(svc: &Value, pod: &Value) -> bool {
    if let Some(f) = svc.pointer("/spec/ipFamilies/0").and_then(Value::as_str) {
        return f == "IPv6";
    }
    let family_of = |s: &str| s.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_ipv6());
    if is_ip_set(svc) {
        return family_of(str_at(svc, "/spec/clusterIP"));
    }
    family_of(str_at(pod, "/status/podIP"))
}

/// The address of `pod` for `svc` (`podToEndpointAddressForService`), if it has one of the
/// Service's family.
fn address_of(svc: &Value, pod: &CachedObject) -> Option<Address> {
    let v6 = wants_ipv6(svc, &pod.value);
    let ip = pod_ips(&pod.value)
        .into_iter()
        .find(|ip| ip.is_ipv6() == v6)?;
    Some(Address {
        ip: ip.to_string(),
        hostname: hostname_for(&pod.value, svc),
        node_name: Some(str_at(&pod.value, "/spec/nodeName").to_string()),
        target: Some(Target {
            kind: "Pod".into(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid().to_string(),
        }),
    })
}

/// An address's identity in a subset: its IP and its pod's uid.
type AddrKey = (String, String);
/// Addresses by identity, each with whether it is ready.
type Addrs = BTreeMap<AddrKey, (Address, bool)>;
/// The identities and readiness of a set of addresses, to find ports served by the same set.
type AddrSet = Vec<(AddrKey, bool)>;

/// The subsets of `svc` from the pods it selects, repacked: addresses grouped by the set of
/// ports they serve, each list sorted (ip, then pod uid), ports and subsets in a fixed order.
pub fn subsets(svc: &Value, pods: &[Arc<CachedObject>]) -> Vec<Subset> {
    let publish = svc
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let svc_ports: Vec<Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Port (None: a headless Service without ports) → addresses.
    let mut by_port: BTreeMap<Option<Port>, Addrs> = BTreeMap::new();
    for pod in pods {
        if !should_be_in_endpoints(&pod.value, publish) {
            continue;
        }
        let Some(addr) = address_of(svc, pod) else {
            continue;
        };
        let ready = publish || is_ready(&pod.value);
        let mut add = |port: Option<Port>| {
            let e = by_port
                .entry(port)
                .or_default()
                .entry(addr.sort_key())
                .or_insert_with(|| (addr.clone(), ready));
            // The same address ready through one pod and not through another: ready wins.
            e.1 |= ready;
        };
        if svc_ports.is_empty() {
            if str_at(svc, "/spec/clusterIP") == "None" {
                add(None);
            }
            continue;
        }
        for sp in &svc_ports {
            if let Some(n) = find_port(&pod.value, sp) {
                let mut p = Port::from_json(sp);
                p.port = Some(n);
                add(Some(p));
            }
        }
    }
    // Ports whose address sets are equal share a subset.
    let mut by_addrs: BTreeMap<AddrSet, (Addrs, Vec<Port>)> = BTreeMap::new();
    for (port, addrs) in by_port {
        let key: Vec<_> = addrs.iter().map(|(k, (_, r))| (k.clone(), *r)).collect();
        let entry = by_addrs.entry(key).or_insert_with(|| (addrs, Vec::new()));
        entry.1.extend(port);
    }
    let mut out: Vec<Subset> = by_addrs
        .into_values()
        .map(|(addrs, mut ports)| {
            ports.sort();
            let (ready, not): (Vec<_>, Vec<_>) = addrs.into_values().partition(|(_, r)| *r);
            Subset {
                addresses: ready.into_iter().map(|(a, _)| a).collect(),
                not_ready: not.into_iter().map(|(a, _)| a).collect(),
                ports,
            }
        })
        .collect();
    out.sort_by(|a, b| a.ports.cmp(&b.ports));
    out
}

/// Cuts `subsets` to [`MAX_CAPACITY`] addresses (`truncateEndpoints`): ready addresses first;
/// each subset keeps its proportional share, rounded up, until the capacity is used. Returns
/// whether anything was cut.
pub fn truncate(subsets: &mut [Subset]) -> bool {
    let ready: usize = subsets.iter().map(|s| s.addresses.len()).sum();
    let not_ready: usize = subsets.iter().map(|s| s.not_ready.len()).sum();
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let cut_ready = ready > MAX_CAPACITY;
    let (max, total) = if cut_ready {
        (MAX_CAPACITY, ready)
    } else {
        (MAX_CAPACITY - ready, not_ready)
    };
    let mut room = max;
    for s in subsets.iter_mut() {
        let n = if cut_ready {
            s.addresses.len()
        } else {
            s.not_ready.len()
        };
        let share = (n * max).div_ceil(total.max(1)).min(room);
        if cut_ready {
            s.addresses.truncate(share);
            s.not_ready.clear();
            room -= s.addresses.len();
        } else {
            s.not_ready.truncate(share);
            room -= s.not_ready.len();
        }
    }
    true
}

/// The labels of a Service's Endpoints.
fn endpoints_labels(svc: &Value) -> BTreeMap<String, String> {
    let mut labels = rudder_api::meta::labels(svc);
    if is_ip_set(svc) {
        labels.remove(LABEL_HEADLESS);
    } else {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(LABEL_SKIP_MIRROR.into(), "true".into());
    labels
}

pub struct Ctx {
    api: Arc<dyn Api>,
    events: EventRecorder,
    services: Reader,
    pods: Reader,
    endpoints: Reader,
    tracker: Arc<Tracker>,
}

async fn run(env: Env, cancel: CancellationToken) {
    let services = env.informers.for_kind("v1", "Service");
    let pods = env.informers.for_kind("v1", "Pod");
    let endpoints = env.informers.for_kind("v1", "Endpoints");
    add_indexes(&services, &pods);
    let (events, events_task) = env.recorder("endpoint");
    let tracker = Arc::new(Tracker::new(Arc::clone(&env.clock)));
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        events,
        services: services.reader(),
        pods: pods.reader(),
        endpoints: endpoints.reader(),
        tracker: Arc::clone(&tracker),
    });
    Controller::new(ctx)
        .named("endpoints")
        .workers(env.workers)
        .watches(services.subscribe(), self_mapper())
        .watches(pods.subscribe(), pod_mapper(services.reader()))
        .watches(endpoints.subscribe(), endpoints_mapper(tracker))
        .run(reconcile, policy, cancel)
        .await;
    events_task.abort();
}

/// Endpoints events that matter: a deletion (recreate or confirm), a relist (leftovers of
/// Services deleted meanwhile, as Kubernetes' `checkLeftoverEndpoints`), and our own writes
/// arriving (a reconcile may be waiting for them). Other changes by others are left alone.
fn endpoints_mapper(tracker: Arc<Tracker>) -> Mapper {
    Box::new(move |ev| {
        let key = |o: &Arc<CachedObject>| o.key();
        match ev {
            ReflectorEvent::Deleted(o) => vec![key(o)],
            ReflectorEvent::Restarted(all) => all
                .iter()
                .filter(|o| {
                    !rudder_api::meta::annotations(&o.value).contains_key(ANNOTATION_LEADER)
                })
                .map(key)
                .collect(),
            ReflectorEvent::Added(o) | ReflectorEvent::Updated { new: o, .. } => {
                if tracker.pending(&o.key()) {
                    vec![key(o)]
                } else {
                    Vec::new()
                }
            }
        }
    })
}

fn request_kind() -> Option<pb::KindRef> {
    Some(kind_ref("v1", "Endpoints"))
}

/// Reconciles one Service's Endpoints by key. Public so tests can drive it.
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (namespace, name) = split_key(&key);
    let current = ctx.endpoints.get(namespace, name);
    let Some(svc) = ctx.services.get_key(&key) else {
        if current.is_some() || ctx.tracker.pending(&key) {
            let req = pb::DeleteRequest {
                kind: request_kind(),
                namespace: namespace.into(),
                name: name.into(),
                ..Default::default()
            };
            match ctx.api.delete(req).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        ctx.tracker.forget(&key);
        return Ok(Action::AwaitChange);
    };
    let svc = &svc.value;
    let Some(pods) = selected_pods(svc, &ctx.pods) else {
        return Ok(Action::AwaitChange);
    };
    if !ctx.tracker.caught_up(&key, &ctx.endpoints, namespace) {
        return Ok(Action::Requeue(Duration::from_secs(1)));
    }
    let mut want = subsets(svc, &pods);
    let truncated = truncate(&mut want);
    let labels = endpoints_labels(svc);
    let mut annotations = current
        .as_ref()
        .map(|c| rudder_api::meta::annotations(&c.value))
        .unwrap_or_default();
    if truncated {
        annotations.insert(ANNOTATION_OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(ANNOTATION_OVER_CAPACITY);
    }
    if let Some(c) = &current {
        let have: Vec<Subset> = c
            .value
            .get("subsets")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(Subset::from_json).collect())
            .unwrap_or_default();
        if have == want
            && c.labels() == labels
            && rudder_api::meta::annotations(&c.value) == annotations
        {
            return Ok(Action::AwaitChange);
        }
    }
    let mut body = match &current {
        Some(c) => c.value.clone(),
        None => json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": namespace}}),
    };
    let meta = rudder_api::meta::metadata_mut(&mut body);
    meta.insert("labels".into(), json!(labels));
    if annotations.is_empty() {
        meta.remove("annotations");
    } else {
        meta.insert("annotations".into(), json!(annotations));
    }
    body["subsets"] = Value::Array(want.iter().map(Subset::to_json).collect());
    let json = Bytes::from(body.to_string());
    let written = match &current {
        None => {
            let req = pb::CreateRequest {
                kind: request_kind(),
                namespace: namespace.into(),
                json,
                options: None,
            };
            ctx.api.create(req).await
        }
        Some(_) => {
            let req = pb::UpdateRequest {
                kind: request_kind(),
                namespace: namespace.into(),
                json,
                options: None,
            };
            ctx.api.update(req).await
        }
    };
    match written {
        Ok(o) => {
            ctx.tracker.wrote(&key, &o.name, o.resource_version);
            Ok(Action::AwaitChange)
        }
        // Nothing can be created in a namespace being deleted: drop it, as Kubernetes does.
        Err(ClientError::Forbidden(m)) if m.contains("being terminated") => Ok(Action::AwaitChange),
        Err(e) => {
            if !e.is_conflict() {
                let (reason, what) = match current {
                    None => ("FailedToCreateEndpoint", "create endpoint for service"),
                    Some(_) => ("FailedToUpdateEndpoint", "update endpoint"),
                };
                ctx.events.warning(
                    &body,
                    reason,
                    &format!("Failed to {what} {namespace}/{name}: {e}"),
                );
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns", "labels": {"team": "a"}}, "spec": spec})
    }

    fn pod(name: &str, ip: &str, ready: bool, ports: Value) -> Arc<CachedObject> {
        let v = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"nodeName": "n1", "hostname": name, "subdomain": "web",
                "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
        Arc::new(CachedObject::new("v1", "Pod", "ns", name, 1, v))
    }

    fn http(n: i64) -> Value {
        json!([{"name": "http", "containerPort": n}])
    }

    fn ips(a: &[Address]) -> Vec<&str> {
        a.iter().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_addresses_share_a_subset_per_port_set() {
        let s = svc(json!({"clusterIP": "10.96.0.1", "ports": [
            {"name": "http", "port": 80, "targetPort": "http"}, {"name": "admin", "port": 9000}]}));
        let pods = vec![
            pod("b", "10.0.0.2", false, http(8080)),
            pod("a", "10.0.0.1", true, http(8080)),
            pod("c", "10.0.0.3", true, http(9090)),
            pod("d", "10.0.0.4", true, json!([])),
        ];
        let got = subsets(&s, &pods);
        assert_eq!(got.len(), 3, "{got:#?}");
        // Repacked by port: every pod serves admin; http is 8080 on a and b, 9090 on c, and
        // missing on d. Ports with the same addresses would share a subset; these do not.
        let summary: Vec<(Vec<i32>, Vec<&str>, Vec<&str>)> = got
            .iter()
            .map(|s| {
                (
                    s.ports.iter().filter_map(|p| p.port).collect(),
                    ips(&s.addresses),
                    ips(&s.not_ready),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    vec![9000],
                    vec!["10.0.0.1", "10.0.0.3", "10.0.0.4"],
                    vec!["10.0.0.2"]
                ),
                (vec![8080], vec!["10.0.0.1"], vec!["10.0.0.2"]),
                (vec![9090], vec!["10.0.0.3"], vec![]),
            ]
        );
        let two = svc(json!({"ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]}));
        let got2 = subsets(&two, &pods);
        assert_eq!(got2.len(), 1, "numeric targets: one subset with both ports");
        assert_eq!(got2[0].ports.len(), 2);
        let a = &got[1].addresses[0];
        assert_eq!(
            a.hostname.as_deref(),
            Some("a"),
            "subdomain names the service"
        );
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.target.as_ref().map(|t| t.uid.as_str()), Some("uid-a"));
        // The JSON round trip is exact, so an unchanged state compares equal.
        let back: Vec<Subset> = got
            .iter()
            .map(|s| Subset::from_json(&s.to_json()))
            .collect();
        assert_eq!(back, got);
    }

    #[test]
    fn terminating_and_not_ready_pods_with_publish_not_ready_addresses() {
        let s = svc(json!({"ports": [{"port": 80}]}));
        let mut deleting = pod("t", "10.0.0.9", true, http(80)).value.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        let t = Arc::new(CachedObject::new("v1", "Pod", "ns", "t", 1, deleting));
        let pods = vec![pod("u", "10.0.0.1", false, http(80)), t];
        let got = subsets(&s, &pods);
        assert_eq!(got.len(), 1);
        assert!(got[0].addresses.is_empty());
        assert_eq!(
            ips(&got[0].not_ready),
            vec!["10.0.0.1"],
            "terminating left out"
        );
        let publish = svc(json!({"ports": [{"port": 80}], "publishNotReadyAddresses": true}));
        let got = subsets(&publish, &pods);
        assert_eq!(ips(&got[0].addresses), vec!["10.0.0.1", "10.0.0.9"]);
        assert!(got[0].not_ready.is_empty());
    }

    #[test]
    fn headless_services_without_ports() {
        let pods = vec![pod("a", "10.0.0.1", true, json!([]))];
        let headless = svc(json!({"clusterIP": "None"}));
        let got = subsets(&headless, &pods);
        assert_eq!(got.len(), 1);
        assert!(got[0].ports.is_empty());
        assert_eq!(
            got[0].to_json(),
            json!({"addresses": [got[0].addresses[0].to_json()]})
        );
        assert!(subsets(&svc(json!({"clusterIP": "10.96.0.1"})), &pods).is_empty());
        assert_eq!(
            endpoints_labels(&headless)
                .get(LABEL_HEADLESS)
                .map(String::as_str),
            Some("")
        );
        let labels = endpoints_labels(&svc(json!({"clusterIP": "10.96.0.1"})));
        assert_eq!(
            labels,
            [("team", "a"), (LABEL_SKIP_MIRROR, "true")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        );
    }

    fn addrs(n: usize, from: usize) -> Vec<Address> {
        (from..from + n)
            .map(|i| Address {
                ip: format!("10.{}.{}.{}", i / 65536, i / 256 % 256, i % 256),
                hostname: None,
                node_name: None,
                target: None,
            })
            .collect()
    }

    /// Subsets of `(ready, not ready)` addresses, numbered apart.
    fn sized(sizes: &[(usize, usize)]) -> Vec<Subset> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, (r, n))| Subset {
                addresses: addrs(*r, i * 4000),
                not_ready: addrs(*n, i * 4000 + 2000),
                ports: vec![],
            })
            .collect()
    }

    fn sizes(s: &[Subset]) -> Vec<(usize, usize)> {
        s.iter()
            .map(|s| (s.addresses.len(), s.not_ready.len()))
            .collect()
    }

    #[test]
    fn truncation_keeps_ready_first_and_shares_by_proportion() {
        assert!(!truncate(&mut sized(&[(600, 400)])), "exactly at capacity");
        // 800 ready and 600 not ready: all ready stay, not ready cut to 200, split 3:1.
        let mut s = sized(&[(400, 450), (400, 150)]);
        assert!(truncate(&mut s));
        assert_eq!(sizes(&s), vec![(400, 150), (400, 50)]);
        // More ready than capacity: ready cut by share (rounded up, the last gets the rest),
        // not ready dropped.
        let mut s = sized(&[(900, 10), (600, 0)]);
        assert!(truncate(&mut s));
        assert_eq!(sizes(&s), vec![(600, 0), (400, 0)]);
    }
}
