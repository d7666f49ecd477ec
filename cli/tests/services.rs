//! Services end to end: `rudder up` (API server, controllers, the proxy, a node agent on the
//! real Docker engine), a pod serving HTTP, and a NodePort Service in front of it; the host
//! reaches the pod through the cluster IP and through the node port, the pod reaches itself
//! through its Service (hairpin) and by its DNS name, and a Service without
//! endpoints refuses at once. Needs Docker, root and nftables (fails loudly without them). Its
//! own node names, networks, subnets and nftables table; everything is removed when it ends,
//! also on failure. Traffic goes only to the networks it created.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::run_rudder;

/// `GET /` at `addr`, the whole reply.
fn get(addr: &str) -> std::io::Result<String> {
    let mut s =
        TcpStream::connect_timeout(&addr.parse().expect("address"), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn eventually_get(addr: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match get(addr) {
            Ok(out) if out.contains(want) => return out,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "{addr} never answered {want:?}: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

#[test]
fn a_cluster_ip_and_a_node_port_reach_the_pod_through_the_proxy() {
    rudder_testkit::images::require_docker();
    common::apiserver_bin();
    let image = rudder_testkit::images::busybox();
    let home = tempfile::tempdir().unwrap();
    let cluster = common::LocalCluster::new("cli-svc", 221, 222);
    let _down = cluster.guard(home.path());
    let run = |args: &[&str], stdin: Option<&str>| run_rudder(None, home.path(), args, stdin, &[]);
    let args = cluster.up_args();
    let up: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&up, None).ok();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: backend\n  labels: {{app: web}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo served by $(hostname) > /index.html; httpd -f -p 8080\"]\n    ports: [{{name: http, containerPort: 8080}}]\n    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n"
    );
    run(&["apply", "-f", "-"], Some(&pod)).ok();
    run(
        &[
            "wait",
            "pod",
            "backend",
            "--for=condition=Ready",
            "--timeout",
            "60s",
        ],
        None,
    )
    .ok();
    let pod_ip = run(
        &["get", "pod", "backend", "-o", "jsonpath={.status.podIP}"],
        None,
    )
    .ok()
    .trim()
    .to_string();
    assert!(pod_ip.starts_with("10.221.1."), "{pod_ip}");
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: empty\nspec:\n  selector: {app: nothing}\n  ports:\n  - {port: 80}\n";
    run(&["apply", "-f", "-"], Some(svc)).ok();
    // The endpoints as the EndpointSlice controller writes them, by hand, so this test is
    // about the proxy alone.
    let slice = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-by-hand\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n- addresses: [\"{pod_ip}\"]\n  conditions: {{ready: true}}\n"
    );
    run(&["apply", "-f", "-"], Some(&slice)).ok();
    let cluster_ip = run(
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
        None,
    )
    .ok()
    .trim()
    .to_string();
    assert!(cluster_ip.starts_with("10.222."), "{cluster_ip}");
    let node_port = run(
        &[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ],
        None,
    )
    .ok()
    .trim()
    .to_string();

    let body = eventually_get(&format!("{cluster_ip}:80"), "served by backend");
    assert!(body.contains(" 200 OK"), "{body}");
    // The node's address on the pod network (its gateway) with the node port.
    eventually_get(&format!("10.221.0.1:{node_port}"), "served by backend");

    // From inside a pod (the packet enters the host from the pod network): the pod reaches
    // itself through its own Service, which only works with the hairpin masquerade.
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {cluster_ip} 80");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(&["exec", "backend", "--", "sh", "-c", &script], None);
        if out.stdout.contains("served by backend") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer from inside the pod: {} {}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Cluster DNS: the pod's resolver is its node's, with the namespace's search paths.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(
            &[
                "exec",
                "backend",
                "--",
                "nslookup",
                "web.default.svc.cluster.local",
            ],
            None,
        );
        if out.stdout.contains(&cluster_ip) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "web.default.svc.cluster.local does not resolve to {cluster_ip}: {} {}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let by_name = run(
        &[
            "exec",
            "backend",
            "--",
            "sh",
            "-c",
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc web 80",
        ],
        None,
    );
    assert!(
        by_name.stdout.contains("served by backend"),
        "the short name through the search path: {} {}",
        by_name.stdout,
        by_name.stderr
    );
    let resolv = run(&["exec", "backend", "--", "cat", "/etc/resolv.conf"], None);
    assert!(
        resolv.ok().contains("nameserver 10.221.0.1")
            && resolv
                .stdout
                .contains("search default.svc.cluster.local svc.cluster.local cluster.local")
            && resolv.stdout.contains("options ndots:5"),
        "{}",
        resolv.stdout
    );

    let empty_ip = run(
        &["get", "svc", "empty", "-o", "jsonpath={.spec.clusterIP}"],
        None,
    )
    .ok()
    .trim()
    .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let started = Instant::now();
        let refused = TcpStream::connect_timeout(
            &format!("{empty_ip}:80").parse().unwrap(),
            Duration::from_secs(2),
        )
        .map(drop)
        .map_err(|e| e.kind());
        if refused == Err(std::io::ErrorKind::ConnectionRefused) {
            assert!(started.elapsed() < Duration::from_secs(1));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a Service without endpoints is refused at once: {refused:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `rudder get ... -o jsonpath=...`, trimmed.
fn jsonpath(home: &std::path::Path, args: &[&str]) -> String {
    run_rudder(None, home, args, None, &[])
        .ok()
        .trim()
        .to_string()
}

/// The real chain: a Deployment of three replicas behind a Service, the controller-manager's
/// EndpointSlices, the proxy's rules. From the host, connections through the cluster IP reach
/// all three; a replica that turns unready gets no new connections, and comes back when ready.
#[test]
fn connections_spread_over_ready_replicas_and_skip_an_unready_one() {
    rudder_testkit::images::require_docker();
    common::apiserver_bin();
    let image = rudder_testkit::images::busybox();
    let home = tempfile::tempdir().unwrap();
    let cluster = common::LocalCluster::new("cli-spread", 223, 224);
    let _down = cluster.guard(home.path());
    let run = |args: &[&str], stdin: Option<&str>| run_rudder(None, home.path(), args, stdin, &[]);
    let args = cluster.up_args();
    let up: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&up, None).ok();
    let objects = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: web\n        image: {image}\n        command: [\"sh\", \"-c\", \"hostname > /index.html; touch /ready; httpd -f -p 8080 -h /\"]\n        readinessProbe: {{httpGet: {{path: /ready, port: 8080}}, periodSeconds: 1, failureThreshold: 1}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {{app: web}}\n  ports:\n  - {{port: 80, targetPort: 8080}}\n"
    );
    run(&["apply", "-f", "-"], Some(&objects)).ok();
    run(
        &["rollout", "status", "deploy/web", "--timeout", "90s"],
        None,
    )
    .ok();
    let pods: Vec<String> = jsonpath(
        home.path(),
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    )
    .split_whitespace()
    .map(str::to_string)
    .collect();
    assert_eq!(pods.len(), 3, "{pods:?}");
    let ip = jsonpath(
        home.path(),
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    );
    let vip = format!("{ip}:80");
    // Who answers `n` connections (the body is the pod's hostname, its name).
    let answers = |n: usize| -> std::collections::BTreeSet<String> {
        (0..n)
            .filter_map(|_| get(&vip).ok())
            .filter_map(|r| r.split("\r\n\r\n").nth(1).map(|b| b.trim().to_string()))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = answers(30);
        if seen.len() == 3 {
            assert_eq!(
                seen,
                pods.iter().cloned().collect(),
                "only the replicas answer"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all replicas answered: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // One turns unready: its endpoint goes, and no new connection reaches it.
    let gone = &pods[0];
    run(&["exec", gone, "--", "rm", "/ready"], None).ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = answers(30);
        if !seen.contains(gone) && seen.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{gone} still answers after turning unready: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for _ in 0..3 {
        assert!(!answers(20).contains(gone), "{gone} answered while unready");
    }
    // Ready again: back in rotation.
    run(&["exec", gone, "--", "touch", "/ready"], None).ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(30).contains(gone) {
        assert!(Instant::now() < deadline, "{gone} never came back");
        std::thread::sleep(Duration::from_millis(300));
    }
}
