//! The cluster zone: what the node's DNS server answers for names under the cluster domain
//! (`cluster.local`), built from Services and EndpointSlices alone, as CoreDNS' `kubernetes`
//! plugin answers them:
//!
//! - `<svc>.<ns>.svc.<domain>`: A, the cluster IP; for a headless Service the addresses of its
//!   ready endpoints (all of them with `publishNotReadyAddresses`, which the slices already
//!   mark ready); CNAME to `spec.externalName` for an ExternalName Service.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV for each named port, targeting the
//!   Service's name (headless: each endpoint's own name).
//! - `<hostname>.<svc>.<ns>.svc.<domain>`: A for an endpoint with a hostname (a StatefulSet pod
//!   under its governing headless Service); other endpoints of headless Services by their
//!   dashed address (`10-88-1-5.<svc>...`).
//! - `<a>-<b>-<c>-<d>.<ns>.pod.<domain>`: A, the dashed address itself (CoreDNS' `pods
//!   insecure`, Kubernetes' default).
//!
//! A name under the domain that matches none of these is NXDOMAIN; a name that exists but has
//! no record of the asked type is an empty answer (NODATA). Names are compared case-blind.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::Value;

use crate::services::{SERVICE_NAME_LABEL, str_at};

/// One SRV record's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    pub port: u16,
    pub target: String,
}

/// The records of one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub a: BTreeSet<Ipv4Addr>,
    pub cname: Option<String>,
    pub srv: BTreeSet<Srv>,
}

/// What a name is in the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Entry),
    /// Under the domain, but no such name.
    NxDomain,
    /// Not under the domain: for the upstream servers.
    NotOurs,
}

/// The cluster zone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    domain: String,
    names: BTreeMap<String, Entry>,
}

impl Zone {
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The zone for `domain` from all Services and EndpointSlices.
    pub fn build(domain: &str, services: &[&Value], slices: &[&Value]) -> Zone {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut names: BTreeMap<String, Entry> = BTreeMap::new();
        let mut slices_of: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
        for s in slices {
            let (Some(ns), Some(svc)) = (
                s.pointer("/metadata/namespace").and_then(Value::as_str),
                s.pointer("/metadata/labels")
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .and_then(Value::as_str),
            ) else {
                continue;
            };
            if s.get("addressType").and_then(Value::as_str) == Some("IPv4") {
                slices_of
                    .entry((ns.to_string(), svc.to_string()))
                    .or_default()
                    .push(s);
            }
        }
        for svc in services {
            let ns = str_at(svc, "/metadata/namespace");
            let name = str_at(svc, "/metadata/name");
            if ns.is_empty() || name.is_empty() {
                continue;
            }
            let fqdn = format!("{name}.{ns}.svc.{domain}").to_ascii_lowercase();
            let spec = svc.get("spec").cloned().unwrap_or(Value::Null);
            let ty = spec
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            if ty == "ExternalName" {
                if let Some(target) = spec.get("externalName").and_then(Value::as_str) {
                    names.entry(fqdn).or_default().cname =
                        Some(target.trim_end_matches('.').to_ascii_lowercase());
                }
                continue;
            }
            let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
            let entry = names.entry(fqdn.clone()).or_default();
            if !headless {
                entry.a.extend(
                    spec.get("clusterIPs")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .chain(spec.get("clusterIP"))
                        .filter_map(|v| v.as_str()?.parse::<Ipv4Addr>().ok()),
                );
            }
            let ports: Vec<(String, String, u16)> = spec
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let pname = p
                        .get("name")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())?;
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    let port = u16::try_from(p.get("port")?.as_u64()?).ok()?;
                    Some((pname.to_ascii_lowercase(), proto.to_ascii_lowercase(), port))
                })
                .collect();
            if !headless {
                for (pname, proto, port) in &ports {
                    add_srv(&mut names, &fqdn, pname, proto, *port, &fqdn);
                }
                continue;
            }
            // Headless: the ready endpoints, each also under its own name.
            for slice in slices_of
                .get(&(ns.to_string(), name.to_string()))
                .into_iter()
                .flatten()
            {
                let slice_ports: BTreeMap<String, u16> = slice
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        let n = p.get("name").and_then(Value::as_str).unwrap_or("");
                        Some((
                            n.to_ascii_lowercase(),
                            u16::try_from(p.get("port")?.as_u64()?).ok()?,
                        ))
                    })
                    .collect();
                for ep in slice
                    .get("endpoints")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let ready = ep
                        .pointer("/conditions/ready")
                        .and_then(Value::as_bool)
                        .unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    let Some(ip) = ep
                        .get("addresses")
                        .and_then(Value::as_array)
                        .and_then(|a| a.first())
                        .and_then(Value::as_str)
                        .and_then(|a| a.parse::<Ipv4Addr>().ok())
                    else {
                        continue;
                    };
                    let own = match ep.get("hostname").and_then(Value::as_str) {
                        Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
                        _ => dashed(ip),
                    };
                    let own_fqdn = format!("{own}.{fqdn}");
                    names.entry(fqdn.clone()).or_default().a.insert(ip);
                    names.entry(own_fqdn.clone()).or_default().a.insert(ip);
                    for (pname, proto, _) in &ports {
                        if let Some(port) = slice_ports.get(pname) {
                            add_srv(&mut names, &fqdn, pname, proto, *port, &own_fqdn);
                        }
                    }
                }
            }
        }
        Zone { domain, names }
    }

    /// What `name` (with or without the final dot) is.
    pub fn lookup(&self, name: &str) -> Lookup {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(rel) = name.strip_suffix(&self.domain).and_then(|r| {
            if r.is_empty() {
                Some("")
            } else {
                r.strip_suffix('.')
            }
        }) else {
            return Lookup::NotOurs;
        };
        if let Some(e) = self.names.get(&name) {
            return Lookup::Found(e.clone());
        }
        // `<dashed>.<ns>.pod`
        let labels: Vec<&str> = rel.split('.').collect();
        if let [ip, _ns, "pod"] = labels.as_slice()
            && let Ok(ip) = ip.replace('-', ".").parse::<Ipv4Addr>()
        {
            let mut e = Entry::default();
            e.a.insert(ip);
            return Lookup::Found(e);
        }
        // A name above existing ones (`svc.cluster.local`, `<ns>.svc.cluster.local`) exists
        // without records.
        let suffix = format!(".{name}");
        if rel.is_empty() || self.names.keys().any(|k| k.ends_with(&suffix)) {
            return Lookup::Found(Entry::default());
        }
        Lookup::NxDomain
    }
}

/// `_<port>._<proto>.<service>` → `target:port`.
fn add_srv(
    names: &mut BTreeMap<String, Entry>,
    service: &str,
    port_name: &str,
    proto: &str,
    port: u16,
    target: &str,
) {
    names
        .entry(format!("_{port_name}._{proto}.{service}"))
        .or_default()
        .srv
        .insert(Srv {
            port,
            target: target.to_string(),
        });
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

#[cfg(test)]
mod tests;
