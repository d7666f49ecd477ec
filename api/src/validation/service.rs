//! Service validation: type, ports (numbers, target ports, node ports, names), external names,
//! session affinity, cluster IPs and their immutability.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Service, ServicePort};

use super::helpers::{
    Errs, Path, dns_label, enum_value, is_ip, label_map, opt_enum, port_number,
    port_number_or_name, unique,
};
use super::pod::PROTOCOLS;
use super::{FieldError, Validate};
use crate::selector::is_dns_subdomain;

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
/// Kubernetes' default `--service-node-port-range`.
const NODE_PORTS: std::ops::RangeInclusive<i32> = 30000..=32767;

impl Validate for Service {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let p = Path::new("spec");
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required(p)];
        };
        let mut errs = Vec::new();
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        enum_value(&mut errs, &p.child("type"), ty, TYPES);
        let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
        let headless = cluster_ip == "None";
        let ports = spec.ports.as_deref().unwrap_or(&[]);
        if ty == "ExternalName" {
            match spec.external_name.as_deref() {
                None | Some("") => errs.push(FieldError::required(p.child("externalName"))),
                Some(name) => {
                    // A fully qualified name may end with a dot.
                    if !is_dns_subdomain(name.strip_suffix('.').unwrap_or(name)) {
                        errs.push(FieldError::invalid(
                            p.child("externalName"),
                            name,
                            "must be a valid DNS subdomain (lower case alphanumeric characters, '-' or '.')",
                        ));
                    }
                }
            }
        } else if ports.is_empty() && !(headless && spec.selector.is_none()) {
            // Only a headless service without a selector (endpoints managed by hand) may
            // go without ports.
            errs.push(FieldError::required(p.child("ports")));
        }
        if !cluster_ip.is_empty() && !headless && !is_ip(cluster_ip) {
            errs.push(FieldError::invalid(
                p.child("clusterIP"),
                cluster_ip,
                "must be empty, 'None', or a valid IP address",
            ));
        }
        validate_ports(&mut errs, ports, &p.child("ports"), ty);
        opt_enum(
            &mut errs,
            &p.child("sessionAffinity"),
            spec.session_affinity.as_deref(),
            &["ClientIP", "None"],
        );
        for (field, v) in [
            ("internalTrafficPolicy", &spec.internal_traffic_policy),
            ("externalTrafficPolicy", &spec.external_traffic_policy),
        ] {
            opt_enum(
                &mut errs,
                &p.child(field),
                v.as_deref(),
                &["Cluster", "Local"],
            );
        }
        opt_enum(
            &mut errs,
            &p.child("ipFamilyPolicy"),
            spec.ip_family_policy.as_deref(),
            &["SingleStack", "PreferDualStack", "RequireDualStack"],
        );
        label_map(&mut errs, &p.child("selector"), spec.selector.as_ref());
        for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
            if !is_ip(ip) {
                errs.push(FieldError::invalid(
                    p.child("externalIPs").index(i),
                    ip,
                    "must be a valid IP address",
                ));
            }
        }
        if let Some(old_ip) = old
            .and_then(|o| o.spec.as_ref())
            .and_then(|s| s.cluster_ip.as_deref())
        {
            // Once allocated the address is fixed; an empty old value means "not yet allocated".
            if !old_ip.is_empty() && old_ip != cluster_ip && ty != "ExternalName" {
                errs.push(FieldError::immutable(p.child("clusterIP")));
            }
        }
        errs
    }
}

fn validate_ports(errs: &mut Errs, ports: &[ServicePort], path: &Path, ty: &str) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        match port.name.as_deref().filter(|n| !n.is_empty()) {
            // With several ports each needs a name: endpoints and DNS SRV records refer to them.
            None if ports.len() > 1 => errs.push(FieldError::required(p.child("name"))),
            None => {}
            Some(name) => {
                dns_label(errs, &p.child("name"), name);
                unique(errs, &p.child("name"), name, &mut names);
            }
        }
        port_number(errs, &p.child("port"), port.port);
        opt_enum(
            errs,
            &p.child("protocol"),
            port.protocol.as_deref(),
            PROTOCOLS,
        );
        if let Some(target) = port.target_port.as_ref() {
            port_number_or_name(errs, &p.child("targetPort"), target);
        }
        if let Some(np) = port.node_port.filter(|n| *n != 0) {
            if ty != "NodePort" && ty != "LoadBalancer" {
                errs.push(FieldError::forbidden(
                    p.child("nodePort"),
                    format!("may not be used when `type` is '{ty}'"),
                ));
            } else if !NODE_PORTS.contains(&np) {
                errs.push(FieldError::invalid(
                    p.child("nodePort"),
                    np,
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::Defaulting;
    use serde_json::{Value, json};

    fn check(spec: Value, old: Option<Value>) -> Vec<String> {
        let parse = |spec: Value| {
            let mut s: Service =
                serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": spec})).unwrap();
            s.apply_defaults();
            s
        };
        let old = old.map(parse);
        parse(spec)
            .validate(old.as_ref())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn valid_services() {
        assert!(
            check(
                json!({"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": 9376}]}),
                None
            )
            .is_empty()
        );
        assert!(check(json!({"clusterIP": "None"}), None).is_empty());
        assert!(
            check(
                json!({"type": "ExternalName", "externalName": "my.database.example.com"}),
                None
            )
            .is_empty()
        );
        assert!(
            check(
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30007}]}),
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn invalid_services() {
        assert_eq!(
            check(json!({"selector": {"app": "a"}}), None),
            vec!["spec.ports: Required value"]
        );
        assert_eq!(
            check(json!({"type": "ExternalName"}), None),
            vec!["spec.externalName: Required value"]
        );
        assert_eq!(
            check(
                json!({"type": "Magic", "sessionAffinity": "Sticky",
                "ports": [{"port": 70000, "targetPort": "HTTP", "nodePort": 80}, {"name": "a", "port": 80, "protocol": "ICMP"}]}),
                None
            ),
            vec![
                "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                "spec.ports[0].name: Required value",
                "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ports[0].targetPort: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'Magic'",
                "spec.ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
            ]
        );
        assert_eq!(
            check(
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
                None
            ),
            vec![
                "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
            ]
        );
    }

    #[test]
    fn cluster_ip_is_immutable_once_set() {
        let with = |ip: &str| json!({"clusterIP": ip, "ports": [{"port": 80}]});
        assert!(check(with("10.0.0.10"), Some(with(""))).is_empty());
        assert!(check(with("10.0.0.10"), Some(with("10.0.0.10"))).is_empty());
        assert_eq!(
            check(with("10.0.0.11"), Some(with("10.0.0.10"))),
            vec!["spec.clusterIP: Invalid value: field is immutable"]
        );
    }
}
