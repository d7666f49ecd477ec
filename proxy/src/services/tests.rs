use serde_json::{Value, json};

use super::*;

fn svc(name: &str, spec: Value) -> Value {
    json!({"metadata": {"namespace": "ns", "name": name}, "spec": spec})
}

fn slice(svc: &str, ports: Value, endpoints: Value) -> Value {
    json!({"metadata": {"namespace": "ns", "name": format!("{svc}-x"),
                        "labels": {SERVICE_NAME_LABEL: svc}},
           "addressType": "IPv4", "ports": ports, "endpoints": endpoints})
}

fn ep(ip: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    json!({"addresses": [ip], "nodeName": node,
           "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
}

fn b(ip: &str, port: u16) -> Backend {
    Backend {
        ip: ip.parse().unwrap(),
        port,
    }
}

fn run(services: &[Value], slices: &[Value]) -> Desired {
    let s: Vec<&Value> = services.iter().collect();
    let e: Vec<&Value> = slices.iter().collect();
    desired(&s, &e, "node-1")
}

#[test]
fn ports_match_slice_ports_by_name_and_endpoints_count_once() {
    let services = [svc(
        "web",
        json!({"clusterIP": "10.89.0.10", "clusterIPs": ["10.89.0.10"], "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 9090, "protocol": "TCP"}]}),
    )];
    // Two slices: the named targetPort resolved to 8080 for one pod and 8081 for another.
    let slices = [
        slice(
            "web",
            json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9100}]),
            json!([
                ep("10.88.1.2", "node-1", true, true, false),
                ep("10.88.1.2", "node-1", true, true, false)
            ]),
        ),
        slice(
            "web",
            json!([{"name": "http", "port": 8081}]),
            json!([ep("10.88.2.2", "node-2", true, true, false)]),
        ),
    ];
    let d = run(&services, &slices);
    assert_eq!(d.ports.len(), 2);
    let http = &d.ports[0];
    assert_eq!((http.port_name.as_str(), http.port), ("http", 80));
    assert_eq!(http.id(), "ns/web:http");
    assert_eq!(
        http.cluster_backends,
        [b("10.88.1.2", 8080), b("10.88.2.2", 8081)]
    );
    assert_eq!(d.ports[1].cluster_backends, [b("10.88.1.2", 9100)]);
    assert_eq!(
        d.ports[1].node_port, None,
        "a ClusterIP service has no node port"
    );
}

#[test]
fn ready_first_then_serving_terminating_then_none() {
    let services = [svc(
        "web",
        json!({"clusterIP": "10.89.0.10", "ports": [{"port": 80}]}),
    )];
    let s = |eps: Value| [slice("web", json!([{"port": 8080}]), eps)];
    let mixed = run(
        &services,
        &s(json!([
            ep("10.88.1.2", "n", true, true, false),
            ep("10.88.1.3", "n", false, true, true),
            ep("10.88.1.4", "n", false, false, false)
        ])),
    );
    assert_eq!(mixed.ports[0].cluster_backends, [b("10.88.1.2", 8080)]);
    let draining = run(
        &services,
        &s(json!([
            ep("10.88.1.3", "n", false, true, true),
            ep("10.88.1.5", "n", false, false, true)
        ])),
    );
    assert_eq!(
        draining.ports[0].cluster_backends,
        [b("10.88.1.3", 8080)],
        "with none ready, serving terminating endpoints take connections"
    );
    let none = run(
        &services,
        &s(json!([ep("10.88.1.4", "n", false, false, false)])),
    );
    assert!(none.ports[0].cluster_backends.is_empty());
    let absent = run(&services, &[]);
    assert!(absent.ports[0].cluster_backends.is_empty());
}

#[test]
fn local_traffic_policies_keep_to_this_nodes_endpoints() {
    let services = [svc(
        "web",
        json!({"type": "NodePort", "clusterIP": "10.89.0.10", "internalTrafficPolicy": "Local",
               "externalTrafficPolicy": "Local", "ports": [{"port": 80, "nodePort": 30080}]}),
    )];
    let slices = [slice(
        "web",
        json!([{"port": 8080}]),
        json!([
            ep("10.88.1.2", "node-1", true, true, false),
            ep("10.88.2.2", "node-2", true, true, false)
        ]),
    )];
    let d = run(&services, &slices);
    let p = &d.ports[0];
    assert_eq!(p.node_port, Some(30080));
    assert_eq!(p.cluster_backends, [b("10.88.1.2", 8080)]);
    assert_eq!(p.external_backends, [b("10.88.1.2", 8080)]);
    assert!(p.external_local);
    // Cluster policy: every node's endpoints.
    let services = [svc(
        "web",
        json!({"type": "NodePort", "clusterIP": "10.89.0.10", "ports": [{"port": 80, "nodePort": 30080}]}),
    )];
    let d = run(&services, &slices);
    assert_eq!(d.ports[0].external_backends.len(), 2);
    assert!(!d.ports[0].external_local);
}

#[test]
fn headless_external_name_and_foreign_slices_are_not_proxied() {
    let services = [
        svc(
            "headless",
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
        ),
        svc(
            "ext",
            json!({"type": "ExternalName", "externalName": "example.org"}),
        ),
        svc(
            "lb",
            json!({"type": "LoadBalancer", "clusterIP": "10.89.0.11", "externalIPs": ["192.0.2.7"],
                   "sessionAffinity": "ClientIP", "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}]}),
        ),
    ];
    let mut lb = services[2].clone();
    lb["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}});
    let other_ns = json!({"metadata": {"namespace": "other", "name": "lb-x",
                                       "labels": {SERVICE_NAME_LABEL: "lb"}},
                          "addressType": "IPv4", "ports": [{"port": 5353, "protocol": "UDP"}],
                          "endpoints": [ep("10.88.9.9", "n", true, true, false)]});
    let d = run(&[services[0].clone(), services[1].clone(), lb], &[other_ns]);
    assert_eq!(d.ports.len(), 1, "{d:?}");
    let p = &d.ports[0];
    assert_eq!(p.protocol, Protocol::Udp);
    assert_eq!(
        p.external_ips,
        [
            "192.0.2.7".parse::<Ipv4Addr>().unwrap(),
            "192.0.2.9".parse().unwrap()
        ]
    );
    assert_eq!(p.affinity, Some(DEFAULT_AFFINITY));
    assert!(
        p.cluster_backends.is_empty(),
        "a slice of another namespace's service is not this one's"
    );
}
