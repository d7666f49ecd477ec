//! The desired map: what every Service port on this node should forward where, computed from
//! Services and EndpointSlices alone, as kube-proxy's service and endpoint change trackers.
//!
//! Rules (Kubernetes' `pkg/proxy`, `CategorizeEndpoints`):
//! - Only Services with a cluster IP are proxied: headless (`clusterIP: None`) and ExternalName
//!   Services are answered by DNS alone.
//! - A Service port's endpoints come from the slices labelled `kubernetes.io/service-name` with
//!   the Service's name, through the slice port of the same name (the slice already resolved a
//!   named `targetPort` per pod); an address listed by two slices counts once.
//! - New connections go to the ready endpoints. With none ready, they go to endpoints that are
//!   serving and terminating (a Deployment draining its last pods keeps answering); with neither,
//!   the port has no endpoints and the data plane rejects connections to it.
//! - `internalTrafficPolicy: Local` restricts cluster-IP traffic to endpoints on this node;
//!   `externalTrafficPolicy: Local` restricts node-port and load-balancer traffic the same way
//!   (and the data plane keeps the client's source address for it). A Local policy with no
//!   local endpoint drops the traffic rather than sending it elsewhere.
//! - `sessionAffinity: ClientIP` keeps a client on one endpoint for its timeout (10800 s default).
//!
//! The result is sorted, so equal inputs give equal maps and a sync can be skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Kubernetes' default ClientIP affinity timeout.
pub const DEFAULT_AFFINITY: Duration = Duration::from_secs(10800);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The name nftables uses.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One endpoint a connection may be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// One port of one Service, with where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name`.
    pub service: String,
    /// The port's name ("" for a single unnamed port).
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ips: Vec<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and the load balancer's `status.loadBalancer.ingress` addresses.
    pub external_ips: Vec<Ipv4Addr>,
    /// ClientIP affinity timeout, if any.
    pub affinity: Option<Duration>,
    /// Where cluster-IP connections go (after `internalTrafficPolicy`).
    pub cluster_backends: Vec<Backend>,
    /// Where node-port, external and load-balancer connections go (after
    /// `externalTrafficPolicy`).
    pub external_backends: Vec<Backend>,
    /// `externalTrafficPolicy: Local`: keep the client's address (no masquerade).
    pub external_local: bool,
}

impl ServicePort {
    /// `namespace/name:port` (or without `:port` for an unnamed one), as kube-proxy names it.
    pub fn id(&self) -> String {
        if self.port_name.is_empty() {
            self.service.clone()
        } else {
            format!("{}:{}", self.service, self.port_name)
        }
    }
}

/// Everything this node forwards, sorted by Service and port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone)]
struct SliceEndpoint {
    ip: Ipv4Addr,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

/// The desired map for node `node` from all Services and EndpointSlices.
pub fn desired(services: &[&Value], slices: &[&Value], node: &str) -> Desired {
    // (namespace, service) → port name → endpoints (deduplicated by address).
    let mut by_service: BTreeMap<(String, String), BTreeMap<String, Vec<SliceEndpoint>>> =
        BTreeMap::new();
    for slice in slices {
        if slice.pointer("/addressType").and_then(Value::as_str) != Some("IPv4") {
            continue;
        }
        let ns = str_at(slice, "/metadata/namespace");
        let Some(svc) = slice
            .pointer("/metadata/labels")
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let ports = slice_ports(slice);
        let entry = by_service
            .entry((ns.to_string(), svc.to_string()))
            .or_default();
        for ep in array_at(slice, "/endpoints") {
            let cond = |c: &str| {
                ep.pointer(&format!("/conditions/{c}"))
                    .and_then(Value::as_bool)
            };
            // Kubernetes: a nil ready means ready; nil serving follows ready.
            let ready = cond("ready").unwrap_or(true);
            let serving = cond("serving").unwrap_or(ready);
            let terminating = cond("terminating").unwrap_or(false);
            let local = ep.get("nodeName").and_then(Value::as_str) == Some(node);
            for addr in array_at(ep, "/addresses") {
                let Some(ip) = addr.as_str().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                    continue;
                };
                for (name, port) in &ports {
                    entry.entry(name.clone()).or_default().push(SliceEndpoint {
                        ip,
                        port: *port,
                        ready,
                        serving,
                        terminating,
                        local,
                    });
                }
            }
        }
    }

    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = svc.get("spec") else {
            continue;
        };
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            continue;
        }
        let cluster_ips = cluster_ips(spec);
        if cluster_ips.is_empty() {
            continue;
        }
        let ns = str_at(svc, "/metadata/namespace");
        let name = str_at(svc, "/metadata/name");
        let mut external_ips: BTreeSet<Ipv4Addr> = array_at(spec, "/externalIPs")
            .filter_map(|v| v.as_str()?.parse().ok())
            .collect();
        if ty == "LoadBalancer" {
            external_ips.extend(
                array_at(svc, "/status/loadBalancer/ingress")
                    .filter_map(|i| i.get("ip")?.as_str()?.parse::<Ipv4Addr>().ok()),
            );
        }
        let affinity = (spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP"))
            .then(|| {
                spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                    .and_then(Value::as_u64)
                    .map_or(DEFAULT_AFFINITY, Duration::from_secs)
            });
        let local = |field: &str| spec.get(field).and_then(Value::as_str) == Some("Local");
        let (internal_local, external_local) = (
            local("internalTrafficPolicy"),
            local("externalTrafficPolicy"),
        );
        let node_ports = ty == "NodePort" || ty == "LoadBalancer";
        let endpoints = by_service.get(&(ns.to_string(), name.to_string()));
        for p in array_at(spec, "/ports") {
            let Some(protocol) = Protocol::parse(p.get("protocol").and_then(Value::as_str)) else {
                continue;
            };
            let Some(port) = p.get("port").and_then(Value::as_u64).and_then(port16) else {
                continue;
            };
            let port_name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let eps: &[SliceEndpoint] = endpoints
                .and_then(|m| m.get(&port_name))
                .map_or(&[], Vec::as_slice);
            out.push(ServicePort {
                service: format!("{ns}/{name}"),
                port_name,
                protocol,
                cluster_ips: cluster_ips.clone(),
                port,
                node_port: node_ports
                    .then(|| p.get("nodePort").and_then(Value::as_u64).and_then(port16))
                    .flatten(),
                external_ips: external_ips.iter().copied().collect(),
                affinity,
                cluster_backends: usable(eps, internal_local),
                external_backends: usable(eps, external_local),
                external_local,
            });
        }
    }
    out.sort_by(|a, b| (&a.service, &a.port_name).cmp(&(&b.service, &b.port_name)));
    Desired { ports: out }
}

/// The endpoints new connections may go to: the ready ones, else the serving terminating
/// ones; only this node's under a Local policy.
fn usable(eps: &[SliceEndpoint], local_only: bool) -> Vec<Backend> {
    let scope: Vec<&SliceEndpoint> = eps.iter().filter(|e| !local_only || e.local).collect();
    let ready: BTreeSet<Backend> = scope
        .iter()
        .filter(|e| e.ready)
        .map(|e| Backend {
            ip: e.ip,
            port: e.port,
        })
        .collect();
    if !ready.is_empty() {
        return ready.into_iter().collect();
    }
    scope
        .iter()
        .filter(|e| e.serving && e.terminating)
        .map(|e| Backend {
            ip: e.ip,
            port: e.port,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn cluster_ips(spec: &Value) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = array_at(spec, "/clusterIPs")
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

/// A slice's ports by name.
fn slice_ports(slice: &Value) -> Vec<(String, u16)> {
    array_at(slice, "/ports")
        .filter_map(|p| {
            let port = p.get("port").and_then(Value::as_u64).and_then(port16)?;
            Some((
                p.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                port,
            ))
        })
        .collect()
}

fn port16(p: u64) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests;
