//! Service defaults: type, session affinity, traffic policies and per-port protocol and target.
//! Cluster IPs and node ports are allocated by the API server, not defaulted here.

use k8s_openapi::api::core::v1::{ClientIPConfig, Service, SessionAffinityConfig};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Defaulting, or_str, or_val};

/// Kubernetes' default ClientIP affinity timeout: three hours.
const CLIENT_IP_TIMEOUT_SECONDS: i32 = 10_800;

impl Defaulting for Service {
    fn apply_defaults(&mut self) {
        let Some(spec) = self.spec.as_mut() else {
            return;
        };
        or_str(&mut spec.type_, "ClusterIP");
        or_str(&mut spec.session_affinity, "None");
        if spec.session_affinity.as_deref() == Some("ClientIP") {
            let config = spec
                .session_affinity_config
                .get_or_insert_with(SessionAffinityConfig::default);
            let client_ip = config.client_ip.get_or_insert_with(ClientIPConfig::default);
            or_val(&mut client_ip.timeout_seconds, CLIENT_IP_TIMEOUT_SECONDS);
        }
        for p in spec.ports.iter_mut().flatten() {
            or_str(&mut p.protocol, "TCP");
            or_val(&mut p.target_port, IntOrString::Int(p.port));
        }
        let ty = spec.type_.clone().unwrap_or_default();
        // An ExternalName service is a DNS alias: it has no cluster IP, so no IP family or
        // traffic routing of its own.
        if ty != "ExternalName" {
            or_str(&mut spec.internal_traffic_policy, "Cluster");
            or_str(&mut spec.ip_family_policy, "SingleStack");
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            or_str(&mut spec.external_traffic_policy, "Cluster");
        }
        if ty == "LoadBalancer" {
            or_val(&mut spec.allocate_load_balancer_node_ports, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn defaulted(v: Value) -> Value {
        let mut s: Service = serde_json::from_value(v).unwrap();
        s.apply_defaults();
        serde_json::to_value(&s).unwrap()
    }

    #[test]
    fn cluster_ip_service() {
        let v = defaulted(json!({"metadata": {"name": "s"}, "spec": {
            "selector": {"app": "a"}, "ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}}));
        let s = &v["spec"];
        assert_eq!(s["type"], "ClusterIP");
        assert_eq!(s["sessionAffinity"], "None");
        assert_eq!(s["internalTrafficPolicy"], "Cluster");
        assert_eq!(s["ipFamilyPolicy"], "SingleStack");
        assert!(s.get("externalTrafficPolicy").is_none());
        assert_eq!(
            s["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(s["ports"][1]["targetPort"], "https");
    }

    #[test]
    fn node_port_and_external_name() {
        let v = defaulted(
            json!({"metadata": {}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
        );
        assert_eq!(v["spec"]["externalTrafficPolicy"], "Cluster");
        let v = defaulted(
            json!({"metadata": {}, "spec": {"type": "ExternalName", "externalName": "a.b"}}),
        );
        assert!(v["spec"].get("ipFamilyPolicy").is_none());
        assert!(v["spec"].get("internalTrafficPolicy").is_none());
        let v = defaulted(json!({"metadata": {}, "spec": {"sessionAffinity": "ClientIP"}}));
        assert_eq!(
            v["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
    }
}
