//! Ingress end to end: `rudder up` (the proxy serving Ingress on the node's pod-network
//! address, ports 80 and 443), two busybox httpd pods serving distinct files behind two
//! Services, and one Ingress routing two hosts and two paths to them, in clear and over TLS,
//! where SNI picks between two certificates. The client is curl (HTTP/2 over TLS), the
//! certificates are made by openssl; both must be installed (the test fails loudly without
//! them), and Docker, root and nftables as for the services test. Its own node names,
//! networks, subnets and nftables table; everything is removed when it ends, also on failure.
//! Traffic goes only to the pod network it created.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::run_rudder;
use serde_json::json;

/// The node's address on the test's pod network (10.225.0.0/16), where Ingress answers.
const NODE: &str = "10.225.0.1";

fn need(tool: &str, version_arg: &str) {
    let ok = Command::new(tool)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "this test needs {tool} (apt-get install {tool})");
}

/// A self-signed certificate for `host` in `dir`: (certificate path, key path).
fn certificate(dir: &Path, host: &str) -> (String, String) {
    let (crt, key) = (
        dir.join(format!("{host}.crt")),
        dir.join(format!("{host}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={host}")])
        .args(["-addext", &format!("subjectAltName=DNS:{host}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (crt.display().to_string(), key.display().to_string())
}

/// curl to `host` `path` at the node: (exit ok, body, HTTP version). `tls` names the CA file.
fn curl(host: &str, path: &str, tls: Option<&str>) -> (bool, String, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "5", "-w", "\n%{http_version}"]);
    let url = match tls {
        Some(ca) => {
            c.args(["--cacert", ca, "--resolve", &format!("{host}:443:{NODE}")]);
            format!("https://{host}{path}")
        }
        None => {
            c.args(["--resolve", &format!("{host}:80:{NODE}")]);
            format!("http://{host}{path}")
        }
    };
    let out = c.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (
        out.status.success(),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
        version.to_string(),
    )
}

fn eventually(host: &str, path: &str, tls: Option<&str>, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, body, version) = curl(host, path, tls);
        if ok && body.contains(want) {
            return version;
        }
        assert!(
            Instant::now() < deadline,
            "{host}{path} (tls: {tls:?}) never answered {want:?}: {body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn an_ingress_routes_two_hosts_and_two_paths_to_two_services_over_tls_with_sni_too() {
    rudder_testkit::images::require_docker();
    need("curl", "--version");
    need("openssl", "version");
    common::apiserver_bin();
    let image = rudder_testkit::images::busybox();
    let home = tempfile::tempdir().unwrap();
    let cluster = common::LocalCluster::new("cli-ing", 225, 226);
    let _down = cluster.guard(home.path());
    let run = |args: &[&str], stdin: Option<&str>| run_rudder(None, home.path(), args, stdin, &[]);
    let args = cluster.up_args();
    let up: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&up, None).ok();

    // Two pods, each serving `<name> /` and `<name> api` under /api/.
    for name in ["alpha", "beta"] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "web", "image": image,
                "command": ["sh", "-c", format!(
                    "mkdir -p /www/api; echo {name} root > /www/index.html; \
                     echo {name} api > /www/api/index.html; httpd -f -p 8080 -h /www")],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}});
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
        run(&["apply", "-f", "-"], Some(&pod.to_string())).ok();
        run(&["apply", "-f", "-"], Some(&svc.to_string())).ok();
    }
    for name in ["alpha", "beta"] {
        run(
            &[
                "wait",
                "pod",
                name,
                "--for=condition=Ready",
                "--timeout",
                "60s",
            ],
            None,
        )
        .ok();
    }

    let certs = tempfile::tempdir().unwrap();
    let mut ca = Vec::new();
    for host in ["one.test", "two.test"] {
        let (crt, key) = certificate(certs.path(), host);
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": host.replace('.', "-")},
            "stringData": {"tls.crt": std::fs::read_to_string(&crt).unwrap(),
                           "tls.key": std::fs::read_to_string(&key).unwrap()}});
        run(&["apply", "-f", "-"], Some(&secret.to_string())).ok();
        ca.push(crt);
    }
    let backend = |svc: &str| json!({"service": {"name": svc, "port": {"name": "http"}}});
    let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web"},
        "spec": {
            "tls": [{"hosts": ["one.test"], "secretName": "one-test"},
                    {"hosts": ["two.test"], "secretName": "two-test"}],
            "rules": [
                {"host": "one.test", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": backend("alpha")},
                    {"path": "/api", "pathType": "Prefix", "backend": backend("beta")}]}},
                {"host": "two.test", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": backend("beta")},
                    {"path": "/api", "pathType": "Prefix", "backend": backend("alpha")}]}}]}});
    run(&["apply", "-f", "-"], Some(&ingress.to_string())).ok();

    // In clear: two hosts × two paths, the path kept on the way.
    eventually("one.test", "/", None, "alpha root");
    eventually("one.test", "/api/", None, "beta api");
    eventually("two.test", "/", None, "beta root");
    eventually("two.test", "/api/", None, "alpha api");
    let (_, body, _) = curl("three.test", "/", None);
    assert!(body.contains("no Ingress rule matches host"), "{body}");

    // Over TLS, HTTP/2: each host's own certificate (curl trusts only that one).
    let (one, two) = (ca[0].as_str(), ca[1].as_str());
    let v = eventually("one.test", "/api/", Some(one), "beta api");
    assert_eq!(v, "2", "HTTP/2 by ALPN");
    eventually("one.test", "/", Some(one), "alpha root");
    eventually("two.test", "/", Some(two), "beta root");
    eventually("two.test", "/api/", Some(two), "alpha api");
    // The other host's certificate does not verify: SNI chose the certificate.
    let (ok, body, _) = curl("one.test", "/", Some(two));
    assert!(
        !ok,
        "one.test verified against two.test's certificate: {body}"
    );
}
