//! Networking validation: Ingress rules and backends, IngressClass, and the endpoint kinds
//! (Endpoints, EndpointSlice) with their addresses and ports.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

use super::helpers::{
    Errs, Path, count_set, dns_label, enum_value, immutable, is_ip, is_wildcard_dns_subdomain,
    opt_enum, port_number, required_str, unique,
};
use super::pod::PROTOCOLS;
use super::{FieldError, Validate};
use crate::selector::is_dns_subdomain;

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];

fn backend(errs: &mut Errs, b: &IngressBackend, path: &Path) {
    match count_set(&[b.service.is_some(), b.resource.is_some()]) {
        0 => errs.push(FieldError::invalid(
            path,
            "",
            "one of `service` or `resource` must be specified",
        )),
        1 => {}
        _ => errs.push(FieldError::invalid(
            path,
            "",
            "cannot set both resource and service backends",
        )),
    }
    if let Some(svc) = b.service.as_ref() {
        let sp = path.child("service");
        if let Some(name) = required_str(errs, &sp.child("name"), Some(svc.name.as_str())) {
            dns_label(errs, &sp.child("name"), name);
        }
        let pp = sp.child("port");
        match svc.port.as_ref() {
            None => errs.push(FieldError::required(&pp)),
            Some(port) => match (port.name.as_deref().filter(|n| !n.is_empty()), port.number) {
                (Some(_), Some(_)) => errs.push(FieldError::invalid(
                    &pp,
                    "",
                    "cannot set both port name & port number",
                )),
                (Some(name), None) => super::helpers::port_name(errs, &pp.child("name"), name),
                (None, Some(n)) => port_number(errs, &pp.child("number"), n),
                (None, None) => errs.push(FieldError::invalid(
                    &pp,
                    "",
                    "port name or number is required",
                )),
            },
        }
    }
    if let Some(r) = b.resource.as_ref() {
        let rp = path.child("resource");
        required_str(errs, &rp.child("kind"), Some(r.kind.as_str()));
        required_str(errs, &rp.child("name"), Some(r.name.as_str()));
    }
}

impl Validate for Ingress {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let p = Path::new("spec");
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required(p)];
        };
        let mut errs = Vec::new();
        let rules = spec.rules.as_deref().unwrap_or(&[]);
        if rules.is_empty() && spec.default_backend.is_none() {
            errs.push(FieldError::invalid(
                &p,
                "",
                "either `defaultBackend` or `rules` must be specified",
            ));
        }
        if let Some(b) = spec.default_backend.as_ref() {
            backend(&mut errs, b, &p.child("defaultBackend"));
        }
        for (i, rule) in rules.iter().enumerate() {
            let rp = p.child("rules").index(i);
            if let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty()) {
                if is_ip(host) {
                    errs.push(FieldError::invalid(
                        rp.child("host"),
                        host,
                        "must be a DNS name, not an IP address",
                    ));
                } else if !is_wildcard_dns_subdomain(host) {
                    errs.push(FieldError::invalid(
                        rp.child("host"),
                        host,
                        "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character",
                    ));
                }
            }
            let Some(http) = rule.http.as_ref() else {
                continue;
            };
            let hp = rp.child("http").child("paths");
            if http.paths.is_empty() {
                errs.push(FieldError::required(&hp));
            }
            for (j, path) in http.paths.iter().enumerate() {
                let pp = hp.index(j);
                let ty = path.path_type.as_str();
                if ty.is_empty() {
                    errs.push(FieldError::required(pp.child("pathType")));
                } else {
                    enum_value(&mut errs, &pp.child("pathType"), ty, PATH_TYPES);
                }
                let value = path.path.as_deref().unwrap_or("");
                if (ty == "Exact" || ty == "Prefix") && !value.starts_with('/') {
                    errs.push(FieldError::invalid(
                        pp.child("path"),
                        value,
                        "must be an absolute path",
                    ));
                }
                backend(&mut errs, &path.backend, &pp.child("backend"));
            }
        }
        errs
    }
}

impl Validate for IngressClass {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let cp = Path::new("spec").child("controller");
        let controller = self.spec.as_ref().and_then(|s| s.controller.as_deref());
        if let Some(c) = required_str(&mut errs, &cp, controller) {
            // A domain-prefixed path: `example.com/ingress-controller`.
            let ok = c
                .split_once('/')
                .is_some_and(|(d, rest)| is_dns_subdomain(d) && !rest.is_empty());
            if !ok || c.len() > 250 {
                errs.push(FieldError::invalid(
                    &cp,
                    c,
                    "must be a domain-prefixed path (such as \"acme.io/foo\")",
                ));
            }
        }
        if let Some(old) = old {
            let old_controller = old.spec.as_ref().and_then(|s| s.controller.as_deref());
            immutable(&mut errs, &cp, &controller, &old_controller);
        }
        errs
    }
}

/// Endpoint ports: numbers, protocols, and names (required and unique when there are several).
fn endpoint_port(
    errs: &mut Errs,
    path: &Path,
    name: Option<&str>,
    port: Option<i32>,
    protocol: Option<&str>,
    names: &mut HashSet<String>,
    several: bool,
) {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => {
            dns_label(errs, &path.child("name"), n);
            unique(errs, &path.child("name"), n, names);
        }
        None if several => errs.push(FieldError::required(path.child("name"))),
        None => {}
    }
    if let Some(n) = port {
        port_number(errs, &path.child("port"), n);
    }
    opt_enum(errs, &path.child("protocol"), protocol, PROTOCOLS);
}

impl Validate for Endpoints {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        for (i, subset) in self.subsets.iter().flatten().enumerate() {
            let sp = Path::new("subsets").index(i);
            for (field, list) in [
                ("addresses", &subset.addresses),
                ("notReadyAddresses", &subset.not_ready_addresses),
            ] {
                for (j, a) in list.iter().flatten().enumerate() {
                    if !is_ip(&a.ip) {
                        errs.push(FieldError::invalid(
                            sp.child(field).index(j).child("ip"),
                            &a.ip,
                            "must be a valid IP address",
                        ));
                    }
                }
            }
            let ports = subset.ports.as_deref().unwrap_or(&[]);
            let mut names = HashSet::new();
            for (j, port) in ports.iter().enumerate() {
                let pp = sp.child("ports").index(j);
                let (name, protocol) = (port.name.as_deref(), port.protocol.as_deref());
                endpoint_port(
                    &mut errs,
                    &pp,
                    name,
                    Some(port.port),
                    protocol,
                    &mut names,
                    ports.len() > 1,
                );
            }
        }
        errs
    }
}

impl Validate for EndpointSlice {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let ap = Path::new("addressType");
        enum_value(
            &mut errs,
            &ap,
            &self.address_type,
            &["FQDN", "IPv4", "IPv6"],
        );
        for (i, e) in self.endpoints.iter().enumerate() {
            let ep = Path::new("endpoints").index(i).child("addresses");
            if e.addresses.is_empty() {
                errs.push(FieldError::required(&ep));
            }
            for (j, a) in e.addresses.iter().enumerate() {
                let ok = match self.address_type.as_str() {
                    "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                    "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                    _ => is_dns_subdomain(a),
                };
                if !ok {
                    let detail = format!("must be a valid {} address", self.address_type);
                    errs.push(FieldError::invalid(ep.index(j), a, detail));
                }
            }
        }
        let ports = self.ports.as_deref().unwrap_or(&[]);
        let mut names = HashSet::new();
        for (i, port) in ports.iter().enumerate() {
            let pp = Path::new("ports").index(i);
            let (name, protocol) = (port.name.as_deref(), port.protocol.as_deref());
            // Slices carry unnamed ports for single-port services; names need not be present.
            endpoint_port(&mut errs, &pp, name, port.port, protocol, &mut names, false);
        }
        if let Some(old) = old {
            immutable(&mut errs, &ap, &self.address_type, &old.address_type);
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::helpers::validate_json as errs;
    use serde_json::{Value, json};

    #[test]
    fn ingress_rules() {
        let ing = |host: &str, path: &str, ty: &str, backend: Value| {
            json!({"metadata": {}, "spec": {"rules": [
            {"host": host, "http": {"paths": [{"path": path, "pathType": ty, "backend": backend}]}}]}})
        };
        let svc = json!({"service": {"name": "test", "port": {"number": 80}}});
        assert!(
            errs::<Ingress>(ing("*.foo.com", "/testpath", "Prefix", svc.clone()), None).is_empty()
        );
        assert_eq!(
            errs::<Ingress>(
                ing(
                    "foo.*.com",
                    "testpath",
                    "Regex",
                    json!({"service": {"name": "test", "port": {"number": 0}}})
                ),
                None
            ),
            vec![
                "spec.rules[0].host: Invalid value: \"foo.*.com\": a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character",
                "spec.rules[0].http.paths[0].pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\"",
                "spec.rules[0].http.paths[0].backend.service.port.number: Invalid value: 0: must be between 1 and 65535, inclusive",
            ]
        );
        assert_eq!(
            errs::<Ingress>(ing("a.com", "x", "Exact", json!({})), None),
            vec![
                "spec.rules[0].http.paths[0].path: Invalid value: \"x\": must be an absolute path",
                "spec.rules[0].http.paths[0].backend: Invalid value: \"\": one of `service` or `resource` must be specified",
            ]
        );
    }

    #[test]
    fn ingress_class_and_slices() {
        let ic = |c: Value| json!({"metadata": {}, "spec": {"controller": c}});
        assert!(errs::<IngressClass>(ic(json!("example.com/ingress-controller")), None).is_empty());
        assert_eq!(
            errs::<IngressClass>(json!({"metadata": {}, "spec": {}}), None),
            vec!["spec.controller: Required value"]
        );
        let slice = |ty: &str, addr: &str| {
            json!({"metadata": {}, "addressType": ty,
            "endpoints": [{"addresses": [addr]}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
        };
        assert!(errs::<EndpointSlice>(slice("IPv4", "10.1.2.3"), None).is_empty());
        assert_eq!(
            errs::<EndpointSlice>(slice("IPv6", "10.1.2.3"), None),
            vec![
                "endpoints[0].addresses[0]: Invalid value: \"10.1.2.3\": must be a valid IPv6 address"
            ]
        );
        assert_eq!(
            errs::<EndpointSlice>(slice("IPX", "a"), None)[0],
            "addressType: Unsupported value: \"IPX\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
        );
    }
}
