use serde_json::{Value, json};

use super::*;

fn svc(name: &str, spec: Value) -> Value {
    json!({"metadata": {"namespace": "ns", "name": name}, "spec": spec})
}

fn zone(services: &[Value], slices: &[Value]) -> Zone {
    let s: Vec<&Value> = services.iter().collect();
    let e: Vec<&Value> = slices.iter().collect();
    Zone::build("cluster.local.", &s, &e)
}

fn a(z: &Zone, name: &str) -> Vec<String> {
    match z.lookup(name) {
        Lookup::Found(e) => e.a.iter().map(|i| i.to_string()).collect(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn cluster_ip_services_srv_and_external_names() {
    let z = zone(
        &[
            svc(
                "web",
                json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                              "ports": [{"name": "http", "port": 80}, {"port": 9}]}),
            ),
            svc(
                "ext",
                json!({"type": "ExternalName", "externalName": "Example.ORG."}),
            ),
        ],
        &[],
    );
    assert_eq!(a(&z, "web.ns.svc.cluster.local"), ["10.96.0.10"]);
    assert_eq!(
        a(&z, "WEB.ns.svc.cluster.local."),
        ["10.96.0.10"],
        "case-blind, dot or not"
    );
    let Lookup::Found(srv) = z.lookup("_http._tcp.web.ns.svc.cluster.local") else {
        panic!()
    };
    assert_eq!(
        srv.srv.into_iter().collect::<Vec<_>>(),
        [Srv {
            port: 80,
            target: "web.ns.svc.cluster.local".into()
        }]
    );
    let Lookup::Found(ext) = z.lookup("ext.ns.svc.cluster.local") else {
        panic!()
    };
    assert_eq!(ext.cname.as_deref(), Some("example.org"));
    assert_eq!(z.lookup("nope.ns.svc.cluster.local"), Lookup::NxDomain);
    assert_eq!(z.lookup("web.other.svc.cluster.local"), Lookup::NxDomain);
    assert_eq!(z.lookup("example.org"), Lookup::NotOurs);
    assert_eq!(
        z.lookup("notcluster.local"),
        Lookup::NotOurs,
        "a suffix, not a label"
    );
    assert_eq!(
        z.lookup("ns.svc.cluster.local"),
        Lookup::Found(Entry::default()),
        "an interior name exists without records"
    );
}

#[test]
fn headless_services_answer_ready_endpoints_and_their_own_names() {
    let slice = json!({"metadata": {"namespace": "ns", "name": "db-x",
                                    "labels": {SERVICE_NAME_LABEL: "db"}},
                       "addressType": "IPv4", "ports": [{"name": "sql", "port": 5432}],
                       "endpoints": [
                           {"addresses": ["10.88.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
                           {"addresses": ["10.88.1.6"], "conditions": {"ready": true}},
                           {"addresses": ["10.88.1.7"], "hostname": "db-2", "conditions": {"ready": false}}]});
    let z = zone(
        &[svc(
            "db",
            json!({"clusterIP": "None", "ports": [{"name": "sql", "port": 5432}]}),
        )],
        &[slice],
    );
    assert_eq!(a(&z, "db.ns.svc.cluster.local"), ["10.88.1.5", "10.88.1.6"]);
    assert_eq!(a(&z, "db-0.db.ns.svc.cluster.local"), ["10.88.1.5"]);
    assert_eq!(a(&z, "10-88-1-6.db.ns.svc.cluster.local"), ["10.88.1.6"]);
    assert_eq!(
        z.lookup("db-2.db.ns.svc.cluster.local"),
        Lookup::NxDomain,
        "not ready: not published"
    );
    let Lookup::Found(srv) = z.lookup("_sql._tcp.db.ns.svc.cluster.local") else {
        panic!()
    };
    let targets: Vec<String> = srv.srv.into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        [
            "10-88-1-6.db.ns.svc.cluster.local",
            "db-0.db.ns.svc.cluster.local"
        ]
    );
}

#[test]
fn pod_names_are_their_dashed_addresses() {
    let z = zone(&[], &[]);
    assert_eq!(a(&z, "10-88-1-5.any.pod.cluster.local"), ["10.88.1.5"]);
    assert_eq!(z.lookup("10-88-1.any.pod.cluster.local"), Lookup::NxDomain);
}
