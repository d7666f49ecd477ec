//! Service cluster IPs and node ports, allocated by the API server as Kubernetes does.
//!
//! A Service of type ClusterIP, NodePort or LoadBalancer gets a virtual IP from the service range
//! (`--service-cluster-ip-range`, 10.96.0.0/12 by default), unless it asks for one or is headless
//! (`clusterIP: None`); NodePort and LoadBalancer ports get node ports from 30000–32767. Each
//! allocation is a *claim* carried in the write command and checked by the state machine, so two
//! Services can never hold the same IP or port even when created concurrently: the loser of a race
//! gets a fresh allocation (or, for a value it asked for, a clear error). Values are drawn from the
//! server's injected randomness ([`crate::clock::Ids`]), so a seeded server allocates the same.
//! Random allocation skips the range's network and broadcast addresses, the first address (the
//! API's own `kubernetes` Service in Kubernetes) and the last usable one: each node carries the
//! range on a local bridge (Rudder's services network) so that a Service address never follows
//! a default route off the node, and that bridge's own address is the range's last.

use std::net::Ipv4Addr;

use rudder_api::registry::KindInfo;
use serde_json::{Value, json};

use super::Api;
use crate::error::ApiError;
use crate::state::ObjKey;

const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// The Service IP range, an IPv4 CIDR of /8 to /28.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRange {
    base: u32,
    bits: u32,
}

impl Default for ServiceRange {
    fn default() -> Self {
        ServiceRange {
            base: u32::from_be_bytes([10, 96, 0, 0]),
            bits: 12,
        }
    }
}

impl std::str::FromStr for ServiceRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, bits) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected an IPv4 CIDR such as 10.96.0.0/12"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let bits: u32 = bits
            .parse()
            .ok()
            .filter(|b| (8..=28).contains(b))
            .ok_or_else(|| format!("{s:?}: the prefix length must be 8 to 28"))?;
        let base = u32::from(ip);
        if base & ((1u32 << (32 - bits)) - 1) != 0 {
            return Err(format!(
                "{s:?}: host bits are set (the network is {})",
                ServiceRange {
                    base: base >> (32 - bits) << (32 - bits),
                    bits
                }
            ));
        }
        Ok(ServiceRange { base, bits })
    }
}

impl std::fmt::Display for ServiceRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.bits)
    }
}

impl ServiceRange {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) >> (32 - self.bits) == self.base >> (32 - self.bits)
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.bits)
    }
}

fn is_service(info: &KindInfo) -> bool {
    info.group.is_empty() && info.kind == "Service"
}

/// The claims an object holds: `service-ip/<ip>` and `nodeport/<protocol>/<port>` for Services.
pub fn claims_of(info: &KindInfo, obj: &Value) -> Vec<String> {
    if !is_service(info) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let spec = obj.get("spec");
    for ip in cluster_ips(obj) {
        if ip != "None" && !ip.is_empty() {
            out.push(format!("service-ip/{ip}"));
        }
    }
    for p in spec
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            out.push(format!("nodeport/{proto}/{np}"));
        }
    }
    out
}

fn cluster_ips(obj: &Value) -> Vec<String> {
    let spec = obj.get("spec");
    let list: Vec<String> = spec
        .and_then(|s| s.get("clusterIPs"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !list.is_empty() {
        return list;
    }
    spec.and_then(|s| s.get("clusterIP"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| vec![s.to_string()])
        .unwrap_or_default()
}

impl Api {
    /// Fills a Service's cluster IP and node ports: kept from `old` on update when the request
    /// leaves them out, else allocated. Returns whether anything was allocated here (so a lost
    /// race may retry with a fresh value).
    pub(crate) fn allocate_service(
        &self,
        info: &KindInfo,
        key: &ObjKey,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<bool, ApiError> {
        if !is_service(info) {
            return Ok(false);
        }
        let svc_type = obj
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        let mut allocated = false;
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(false);
        };
        // Cluster IP.
        let requested: Vec<String> = {
            let tmp = json!({"spec": Value::Object(spec.clone())});
            cluster_ips(&tmp)
        };
        let ip = if svc_type == "ExternalName" {
            None
        } else if let Some(first) = requested.first() {
            if first != "None" {
                let parsed: Ipv4Addr = first.parse().map_err(|_| {
                    ApiError::invalid(info, &key.name, format!("spec.clusterIPs[0]: Invalid value: \"{first}\": must be a valid IP address"))
                })?;
                let kept = old.is_some_and(|o| cluster_ips(o).first() == Some(first));
                let range = self.config.service_range;
                if !kept && !range.contains(parsed) {
                    return Err(ApiError::invalid(
                        info,
                        &key.name,
                        format!(
                            "spec.clusterIPs: Invalid value: [\"{first}\"]: failed to allocate IP {first}: provided IP is not in the valid range. The range of valid IPs is {range}"
                        ),
                    ));
                }
                if self
                    .store
                    .snapshot()
                    .claim_taken(&format!("service-ip/{first}"), key)
                {
                    return Err(ApiError::invalid(
                        info,
                        &key.name,
                        format!(
                            "spec.clusterIPs: Invalid value: [\"{first}\"]: failed to allocate IP {first}: provided IP is already allocated"
                        ),
                    ));
                }
            }
            Some(first.clone())
        } else if let Some(prev) = old.and_then(|o| cluster_ips(o).into_iter().next()) {
            Some(prev)
        } else {
            allocated = true;
            Some(self.free_ip(key)?)
        };
        if let Some(ip) = ip {
            spec.insert("clusterIP".into(), Value::String(ip.clone()));
            spec.insert("clusterIPs".into(), json!([ip]));
            if ip != "None" {
                spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
                spec.entry("ipFamilyPolicy")
                    .or_insert_with(|| json!("SingleStack"));
            }
        }
        // Node ports.
        if svc_type == "NodePort" || svc_type == "LoadBalancer" {
            let old_ports: Vec<Value> = old
                .and_then(|o| o.pointer("/spec/ports"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut taken_here = Vec::new();
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for (i, p) in ports.iter_mut().enumerate() {
                    let Some(p) = p.as_object_mut() else { continue };
                    let proto = p
                        .get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string();
                    if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                        if !NODE_PORTS.contains(&np) {
                            return Err(ApiError::invalid(
                                info,
                                &key.name,
                                format!(
                                    "spec.ports[{i}].nodePort: Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                                ),
                            ));
                        }
                        if self
                            .store
                            .snapshot()
                            .claim_taken(&format!("nodeport/{proto}/{np}"), key)
                        {
                            return Err(ApiError::invalid(
                                info,
                                &key.name,
                                format!(
                                    "spec.ports[{i}].nodePort: Invalid value: {np}: provided port is already allocated"
                                ),
                            ));
                        }
                        taken_here.push((proto, np));
                        continue;
                    }
                    let same_port = p.get("port").cloned();
                    let kept = old_ports
                        .iter()
                        .find(|o| {
                            o.get("port") == same_port.as_ref()
                                && o.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                                    == proto
                        })
                        .and_then(|o| o.get("nodePort").and_then(Value::as_i64));
                    let np = match kept {
                        Some(np) => np,
                        None => {
                            allocated = true;
                            self.free_node_port(key, &proto, &taken_here)?
                        }
                    };
                    taken_here.push((proto, np));
                    p.insert("nodePort".into(), json!(np));
                }
            }
            spec.entry("externalTrafficPolicy")
                .or_insert_with(|| json!("Cluster"));
        }
        Ok(allocated)
    }

    fn free_ip(&self, key: &ObjKey) -> Result<String, ApiError> {
        let range = self.config.service_range;
        let size = range.size();
        let state = self.store.snapshot();
        for _ in 0..256 {
            // Not the network address, the first (the API's own service in Kubernetes), the
            // last usable (the node bridge's) nor the broadcast address.
            let off = self.ids.random_in(2..size - 2);
            let ip = Ipv4Addr::from(range.base + off);
            if !state.claim_taken(&format!("service-ip/{ip}"), key) {
                return Ok(ip.to_string());
            }
        }
        Err(ApiError::Internal(format!(
            "failed to allocate a service IP: the range {range} looks full"
        )))
    }

    fn free_node_port(
        &self,
        key: &ObjKey,
        proto: &str,
        taken_here: &[(String, i64)],
    ) -> Result<i64, ApiError> {
        let state = self.store.snapshot();
        for _ in 0..512 {
            let np = self.ids.random_in(NODE_PORTS);
            if !taken_here.iter().any(|(p, n)| p == proto && *n == np)
                && !state.claim_taken(&format!("nodeport/{proto}/{np}"), key)
            {
                return Ok(np);
            }
        }
        Err(ApiError::Internal(
            "failed to allocate a node port: the range 30000-32767 looks full".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use rudder_proto as pb;
    use serde_json::json;

    use crate::clock::Ids;
    use crate::server::{ServerConfig, open_api};
    use crate::service::Identity;
    use crate::storage::MemStorage;

    /// The cluster IP and node port a fresh server with `seed` gives the same Service.
    async fn allocation(seed: u64) -> (String, i64) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::new(dir.path());
        cfg.ids = Arc::new(Ids::seeded(seed));
        let api = open_api(MemStorage::new(), &cfg).await.unwrap();
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                         "spec": {"type": "NodePort", "selector": {"app": "a"},
                                  "ports": [{"port": 80}]}});
        let created = api
            .create(
                &Identity::anonymous(),
                pb::CreateRequest {
                    kind: Some(pb::KindRef {
                        api_version: "v1".into(),
                        kind: "Service".into(),
                    }),
                    namespace: "default".into(),
                    json: Bytes::from(svc.to_string()),
                    options: None,
                },
            )
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&created.json).unwrap();
        (
            v["spec"]["clusterIP"].as_str().unwrap().to_string(),
            v["spec"]["ports"][0]["nodePort"].as_i64().unwrap(),
        )
    }

    #[tokio::test]
    async fn allocation_draws_from_the_injected_randomness() {
        // The same seed gives the same IP and port: a simulation replays from its seed.
        let a = allocation(42).await;
        assert_eq!(a, allocation(42).await);
        assert_ne!(a, allocation(43).await);
    }

    #[test]
    fn service_ranges_parse_and_refuse_with_reasons() {
        use super::ServiceRange;
        let r: ServiceRange = "10.200.0.0/16".parse().unwrap();
        assert_eq!(r.to_string(), "10.200.0.0/16");
        assert!(r.contains("10.200.255.254".parse().unwrap()));
        assert!(!r.contains("10.201.0.1".parse().unwrap()));
        assert_eq!(r.size(), 65536);
        assert_eq!(ServiceRange::default().to_string(), "10.96.0.0/12");
        let err = |s: &str| s.parse::<ServiceRange>().unwrap_err();
        assert!(err("10.96.0.0").contains("expected an IPv4 CIDR"));
        assert!(err("10.96.0.0/30").contains("8 to 28"));
        assert!(err("10.96.0.x/16").contains("not an IPv4 address"));
        assert!(
            err("10.96.0.1/16").contains("the network is 10.96.0.0/16"),
            "{}",
            err("10.96.0.1/16")
        );
    }
}
