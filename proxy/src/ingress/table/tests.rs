use serde_json::{Value, json};

use super::*;

fn svc(name: &str, ports: Value) -> Value {
    json!({"metadata": {"namespace": "default", "name": name},
           "spec": {"clusterIP": "10.96.0.10", "ports": ports}})
}

fn slice(svc: &str, port_name: &str, port: u16, eps: &[(&str, Option<bool>)]) -> Value {
    let eps: Vec<Value> = eps
        .iter()
        .map(|(ip, ready)| match ready {
            Some(r) => json!({"addresses": [ip], "conditions": {"ready": r}}),
            None => json!({"addresses": [ip], "conditions": {}}),
        })
        .collect();
    json!({"metadata": {"namespace": "default", "name": format!("{svc}-{port_name}"),
                        "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4", "ports": [{"name": port_name, "port": port}],
           "endpoints": eps})
}

fn path(p: &str, kind: &str, svc: &str, port: u16) -> Value {
    json!({"path": p, "pathType": kind,
           "backend": {"service": {"name": svc, "port": {"number": port}}}})
}

fn ingress(name: &str, created: &str, rules: Value) -> Value {
    json!({"metadata": {"namespace": "default", "name": name, "creationTimestamp": created},
           "spec": {"rules": rules}})
}

/// Services a (port 80 → endpoints 10.0.0.1-2:8080) and b (port 80 named http → 10.0.1.1:9090).
fn world() -> (Vec<Value>, Vec<Value>) {
    (
        vec![
            svc("a", json!([{"port": 80}])),
            svc("b", json!([{"name": "http", "port": 80}])),
        ],
        vec![
            slice(
                "a",
                "",
                8080,
                &[("10.0.0.1", Some(true)), ("10.0.0.2", None)],
            ),
            slice(
                "b",
                "http",
                9090,
                &[("10.0.1.1", Some(true)), ("10.0.1.9", Some(false))],
            ),
        ],
    )
}

fn refs(v: &[Value]) -> Vec<&Value> {
    v.iter().collect()
}

fn table(ingresses: &[Value], classes: &[Value]) -> Table {
    let (services, slices) = world();
    build(
        &refs(ingresses),
        &refs(classes),
        &refs(&services),
        &refs(&slices),
    )
}

/// The service a request goes to, or "404".
fn to(t: &Table, host: &str, p: &str) -> String {
    t.route(host, p)
        .route()
        .map_or("404".into(), |r| r.backend.service.clone())
}

#[test]
fn prefix_matching_is_element_wise_and_ignores_a_trailing_slash() {
    assert!(prefix_matches("/foo", "/foo"));
    assert!(prefix_matches("/foo", "/foo/"));
    assert!(prefix_matches("/foo", "/foo/bar"));
    assert!(!prefix_matches("/foo", "/foobar"));
    assert!(prefix_matches("/foo/", "/foo"));
    assert!(prefix_matches("/foo/", "/foo/bar"));
    assert!(!prefix_matches("/foo/bar", "/foo"));
    assert!(prefix_matches("/", "/anything"));
    assert!(prefix_matches("/", "/"));
}

#[test]
fn hosts_and_paths_route_to_their_services_with_ready_endpoints() {
    let t = table(
        &[ingress(
            "web",
            "2026-01-01T00:00:00Z",
            json!([
                {"host": "one.example.com", "http": {"paths": [
                    path("/", "Prefix", "a", 80), path("/api", "Prefix", "b", 80)]}},
                {"host": "two.example.com", "http": {"paths": [
                    path("/", "Prefix", "b", 80)]}},
            ]),
        )],
        &[],
    );
    assert_eq!(to(&t, "one.example.com", "/"), "default/a");
    assert_eq!(to(&t, "ONE.example.com:8080", "/api/v1"), "default/b");
    assert_eq!(to(&t, "one.example.com", "/apiary"), "default/a");
    assert_eq!(to(&t, "two.example.com", "/x"), "default/b");
    assert_eq!(to(&t, "three.example.com", "/"), "404");
    let Match::Rule(r) = t.route("one.example.com", "/") else {
        panic!("no rule")
    };
    // A nil ready condition counts as ready.
    assert_eq!(
        r.route.backend.endpoints,
        [
            "10.0.0.1:8080".parse().unwrap(),
            "10.0.0.2:8080".parse().unwrap()
        ]
    );
    let Match::Rule(r) = t.route("two.example.com", "/") else {
        panic!("no rule")
    };
    // The named slice port, the unready endpoint left out.
    assert_eq!(
        r.route.backend.endpoints,
        ["10.0.1.1:9090".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(t.served, ["default/web"]);
}

#[test]
fn longest_path_wins_and_exact_beats_prefix_of_the_same_length() {
    let t = table(
        &[ingress(
            "web",
            "2026-01-01T00:00:00Z",
            json!([{"http": {"paths": [
                path("/foo/", "Prefix", "a", 80),
                path("/foo", "Exact", "b", 80),
                path("/foo/bar", "ImplementationSpecific", "b", 80),
                path("/", "Prefix", "a", 80),
            ]}}]),
        )],
        &[],
    );
    assert_eq!(to(&t, "any.host", "/foo"), "default/b", "Exact /foo");
    assert_eq!(to(&t, "any.host", "/foo/"), "default/a", "Prefix /foo/");
    assert_eq!(to(&t, "any.host", "/foo/baz"), "default/a");
    assert_eq!(
        to(&t, "any.host", "/foo/bar/x"),
        "default/b",
        "longer prefix"
    );
    assert_eq!(to(&t, "any.host", "/foo/barx"), "default/a", "element-wise");
    assert_eq!(to(&t, "any.host", "/other"), "default/a");
}

#[test]
fn exact_hosts_beat_one_label_wildcards_without_falling_through() {
    let t = table(
        &[ingress(
            "web",
            "2026-01-01T00:00:00Z",
            json!([
                {"host": "*.example.com", "http": {"paths": [path("/", "Prefix", "a", 80)]}},
                {"host": "api.example.com", "http": {"paths": [path("/v1", "Prefix", "b", 80)]}},
                {"http": {"paths": [path("/", "Prefix", "b", 80)]}},
            ]),
        )],
        &[],
    );
    assert_eq!(to(&t, "www.example.com", "/"), "default/a");
    assert_eq!(to(&t, "api.example.com", "/v1/x"), "default/b");
    // The exact host has rules, none matching: no fall-through to the wildcard.
    assert_eq!(to(&t, "api.example.com", "/"), "404");
    // One label only.
    assert_eq!(
        to(&t, "a.b.example.com", "/"),
        "default/b",
        "host-less rules"
    );
    assert_eq!(to(&t, "example.com", "/"), "default/b", "host-less rules");
}

#[test]
fn merged_ingresses_give_a_contested_rule_to_the_oldest_then_by_name() {
    let rule =
        |svc: &str| json!([{"host": "h", "http": {"paths": [path("/", "Prefix", svc, 80)]}}]);
    let newer = ingress("aaa", "2026-02-01T00:00:00Z", rule("a"));
    let older = ingress("zzz", "2026-01-01T00:00:00Z", rule("b"));
    assert_eq!(
        to(&table(&[newer.clone(), older.clone()], &[]), "h", "/"),
        "default/b"
    );
    assert_eq!(to(&table(&[older, newer], &[]), "h", "/"), "default/b");
    // Same age: namespace/name decides.
    let x = ingress("x", "2026-01-01T00:00:00Z", rule("a"));
    let y = ingress("y", "2026-01-01T00:00:00Z", rule("b"));
    assert_eq!(to(&table(&[y, x], &[]), "h", "/"), "default/a");
    // Different paths of two Ingresses for one host merge.
    let p1 = ingress("p1", "2026-01-01T00:00:00Z", rule("a"));
    let p2 = ingress(
        "p2",
        "2026-03-01T00:00:00Z",
        json!([{"host": "h", "http": {"paths": [path("/b", "Prefix", "b", 80)]}}]),
    );
    let t = table(&[p1, p2], &[]);
    assert_eq!(
        (to(&t, "h", "/b"), to(&t, "h", "/c")),
        ("default/b".into(), "default/a".into())
    );
}

#[test]
fn the_default_backend_takes_what_no_rule_matches_and_the_oldest_one_wins() {
    let mut a = ingress("a", "2026-02-01T00:00:00Z", json!([]));
    a["spec"]["defaultBackend"] = json!({"service": {"name": "a", "port": {"number": 80}}});
    let mut b = ingress(
        "b",
        "2026-01-01T00:00:00Z",
        json!([{"host": "h", "http": {"paths": [path("/x", "Exact", "a", 80)]}}]),
    );
    b["spec"]["defaultBackend"] = json!({"service": {"name": "b", "port": {"name": "http"}}});
    let t = table(&[a, b], &[]);
    assert_eq!(to(&t, "h", "/x"), "default/a");
    assert!(matches!(t.route("h", "/y"), Match::Default(r) if r.backend.service == "default/b"));
    assert_eq!(to(&t, "other", "/"), "default/b");
    let Match::Default(r) = t.route("other", "/") else {
        panic!()
    };
    assert_eq!(r.backend.endpoints.len(), 1, "port by name resolved");
}

#[test]
fn unresolvable_backends_say_why() {
    let t = table(
        &[ingress(
            "web",
            "2026-01-01T00:00:00Z",
            json!([{"http": {"paths": [
                path("/missing", "Prefix", "nope", 80),
                path("/port", "Prefix", "a", 81),
                json!({"path": "/res", "pathType": "Prefix",
                       "backend": {"resource": {"kind": "Bucket", "name": "x"}}}),
            ]}}]),
        )],
        &[],
    );
    let problem = |p: &str| {
        t.route("h", p)
            .route()
            .and_then(|r| r.backend.problem.clone())
            .unwrap_or_default()
    };
    assert_eq!(problem("/missing"), "service default/nope does not exist");
    assert_eq!(problem("/port"), "service default/a has no port 81");
    assert_eq!(problem("/res"), "resource backends are not supported");
}

#[test]
fn ingress_classes_select_what_is_served() {
    let rule = json!([{"http": {"paths": [path("/", "Prefix", "a", 80)]}}]);
    let mut classless = ingress("none", "2026-01-01T00:00:00Z", rule.clone());
    let mut rudder = ingress("rudder", "2026-01-01T00:00:00Z", rule.clone());
    rudder["spec"]["ingressClassName"] = json!("rudder");
    let mut nginx = ingress("nginx", "2026-01-01T00:00:00Z", rule.clone());
    nginx["spec"]["ingressClassName"] = json!("nginx");
    let mut legacy = ingress("legacy", "2026-01-01T00:00:00Z", rule.clone());
    legacy["metadata"]["annotations"] = json!({"kubernetes.io/ingress.class": "nginx"});
    let mut mine = ingress("mine", "2026-01-01T00:00:00Z", rule);
    mine["spec"]["ingressClassName"] = json!("edge");
    let all = [
        classless.clone(),
        rudder.clone(),
        nginx.clone(),
        legacy.clone(),
        mine.clone(),
    ];
    let class = |name: &str, controller: &str, default: bool| {
        let mut c = json!({"metadata": {"name": name}, "spec": {"controller": controller}});
        if default {
            c["metadata"]["annotations"] =
                json!({"ingressclass.kubernetes.io/is-default-class": "true"});
        }
        c
    };
    // No IngressClass at all: class-less Ingresses are ours, and class rudder.
    assert_eq!(table(&all, &[]).served, ["default/none", "default/rudder"]);
    // Rudder's class is the default.
    let t = table(&all, &[class("edge", CONTROLLER, true)]);
    assert_eq!(t.served, ["default/mine", "default/none", "default/rudder"]);
    // Another controller's class is the default: class-less ones are its.
    let t = table(
        &all,
        &[
            class("edge", CONTROLLER, false),
            class("nginx", "k8s.io/ingress-nginx", true),
        ],
    );
    assert_eq!(t.served, ["default/mine", "default/rudder"]);
    // The name rudder taken by another controller.
    let t = table(&all, &[class("rudder", "k8s.io/ingress-nginx", false)]);
    assert!(t.served.is_empty(), "{:?}", t.served);
    classless["spec"]["ingressClassName"] = json!("nginx");
    assert!(table(&[classless, nginx, legacy], &[]).served.is_empty());
}

#[test]
fn tls_hosts_name_secrets_exact_before_wildcard_and_oldest_first() {
    let mut a = ingress("a", "2026-02-01T00:00:00Z", json!([]));
    a["spec"]["tls"] =
        json!([{"hosts": ["one.example.com", "*.example.com"], "secretName": "a-cert"}]);
    let mut b = ingress("b", "2026-01-01T00:00:00Z", json!([]));
    b["spec"]["tls"] = json!([{"hosts": ["One.Example.com"], "secretName": "b-cert"}]);
    let t = table(&[a, b], &[]);
    let secret = |n: &str| t.tls_for(n).map(|h| h.secret.clone());
    assert_eq!(secret("one.example.com").as_deref(), Some("b-cert"));
    assert_eq!(secret("two.example.com").as_deref(), Some("a-cert"));
    assert_eq!(secret("a.two.example.com"), None);
    assert_eq!(secret("example.com"), None);
}

#[test]
fn a_canary_ingress_attaches_its_weight_to_the_primary_rule() {
    let rule =
        |svc: &str| json!([{"host": "h", "http": {"paths": [path("/", "Prefix", svc, 80)]}}]);
    let primary = ingress("main", "2026-02-01T00:00:00Z", rule("a"));
    // Older than the primary, yet never the primary itself.
    let mut canary = ingress("canary", "2026-01-01T00:00:00Z", rule("b"));
    canary["metadata"]["annotations"] =
        json!({"rudder.io/canary": "true", "rudder.io/canary-weight": "10"});
    let mut orphan = ingress(
        "orphan",
        "2026-01-01T00:00:00Z",
        json!([{"host": "other", "http": {"paths": [path("/", "Prefix", "b", 80)]}}]),
    );
    orphan["metadata"]["annotations"] = json!({"rudder.io/canary": "true"});
    let t = table(&[primary, canary, orphan], &[]);
    let Match::Rule(r) = t.route("h", "/") else {
        panic!()
    };
    assert_eq!(r.route.backend.service, "default/a");
    let c = r.route.canary.as_ref().expect("canary");
    assert_eq!((c.backend.service.as_str(), c.weight), ("default/b", 10));
    assert_eq!(to(&t, "other", "/"), "404", "a canary alone serves nothing");
}

#[test]
fn host_normalization() {
    assert_eq!(normalize_host("Foo.Example.COM:443"), "foo.example.com");
    assert_eq!(normalize_host("foo.example.com."), "foo.example.com");
    assert_eq!(normalize_host("[::1]:80"), "::1");
    assert_eq!(normalize_host("10.0.0.1"), "10.0.0.1");
}
