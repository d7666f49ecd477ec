//! The pod commands end to end: `rudder up` with a node agent on the real Docker engine, a Pod
//! applied from stdin, then `rudder logs`, `exec` (its exit code passed through), `top pod` and
//! `port-forward` as a user runs them; then a Deployment rolled out and updated on the same node
//! (`rollout status`, `set env`, `rollout undo`), its pods real containers. Needs Docker (fails loudly without it). Its own node
//! names, network and subnet; everything is removed when it ends, also on failure.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{free_port, run_rudder};

/// Stops the cluster, whatever happened; its `cleanup` then removes what the node agent ran.
#[test]
fn logs_exec_top_and_port_forward_reach_a_running_pod() {
    rudder_testkit::images::require_docker();
    common::apiserver_bin();
    let image = rudder_testkit::images::busybox();
    let home = tempfile::tempdir().unwrap();
    let cluster = common::LocalCluster::new("cli-pods", 218, 220);
    let _down = cluster.guard(home.path());
    let prefix = &cluster.prefix;
    let run = |args: &[&str], stdin: Option<&str>| run_rudder(None, home.path(), args, stdin, &[]);
    let args = cluster.up_args();
    let up: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&up, None).ok();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: shell\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: sh\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo ready to serve; echo page > /index.html; httpd -f -p 8080\"]\n"
    );
    run(&["apply", "-f", "-"], Some(&pod)).ok();
    run(
        &[
            "wait",
            "pod",
            "shell",
            "--for=condition=Ready",
            "--timeout",
            "60s",
        ],
        None,
    )
    .ok();
    // The log, through the API server's relay (retried: the first line may still be on its way).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = run(&["logs", "shell"], None);
        if logs.ok().contains("ready to serve") {
            break;
        }
        assert!(Instant::now() < deadline, "log not seen: {}", logs.stdout);
        std::thread::sleep(Duration::from_millis(200));
    }
    let ex = run(
        &[
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            "echo from inside $(hostname); exit 3",
        ],
        None,
    );
    assert_eq!(
        ex.code,
        3,
        "the command's exit code: {ex:?}",
        ex = ex.stderr
    );
    assert_eq!(ex.stdout, "from inside shell\n");
    let stdin = run(
        &["exec", "-i", "shell", "--", "cat"],
        Some("piped through\n"),
    );
    assert_eq!(stdin.ok(), "piped through\n");
    let top = run(&["top", "pod"], None);
    assert!(top.ok().contains("shell"), "{}", top.stdout);
    let top = run(&["top", "node"], None);
    assert!(top.ok().contains(&format!("{prefix}-1")), "{}", top.stdout);
    // Port-forward: a local port to the pod's 8080, one relayed connection per client.
    let local = free_port();
    let mut pf = std::process::Command::new(common::rudder_bin())
        .args(["port-forward", "shell", &format!("{local}:8080")])
        .env("RUDDER_CONFIG", home.path().join("config"))
        .env("HOME", home.path())
        .env_remove("RUDDER_SERVER")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("port-forward");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let got = std::net::TcpStream::connect(("127.0.0.1", local)).and_then(|mut s| {
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        match got {
            Ok(out) if out.contains("page") => break out,
            other => {
                if Instant::now() > deadline {
                    let _ = pf.kill();
                    panic!("no answer through port-forward: {other:?}");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let _ = pf.kill();
    let _ = pf.wait();
    assert!(body.contains(" 200 OK"), "{body}");

    // A Deployment: the controller-manager makes its ReplicaSet and pods, the node agent runs them.
    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: web\n        image: {image}\n        command: [\"sh\", \"-c\", \"echo v=$V > /index.html; httpd -f -p 8080\"]\n        env: [{{name: V, value: \"1\"}}]\n        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n"
    );
    run(&["apply", "-f", "-"], Some(&deploy)).ok();
    let status = run(
        &["rollout", "status", "deployment/web", "--timeout", "90s"],
        None,
    );
    assert!(
        status.ok().contains("successfully rolled out"),
        "{}",
        status.stdout
    );
    let pods = run(&["get", "pods", "-l", "app=web", "--no-headers"], None);
    let running = pods.ok().lines().filter(|l| l.contains("Running")).count();
    assert_eq!(running, 2, "{}", pods.stdout);
    let described = run(&["describe", "deployment", "web"], None);
    let text = described.ok();
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .map(|l| l[key.len()..].trim().to_string())
            .unwrap_or_else(|| panic!("no {key} line in:\n{text}"))
    };
    assert_eq!(
        line("RollingUpdateStrategy:"),
        "25% max unavailable, 25% max surge"
    );
    assert_eq!(line("OldReplicaSets:"), "<none>");
    let new_rs = line("NewReplicaSet:");
    assert!(
        new_rs.starts_with("web-") && new_rs.ends_with("(2/2 replicas created)"),
        "{new_rs}"
    );
    assert!(text.contains("ScalingReplicaSet"), "{text}");
    let rs = run(&["describe", "rs", "-l", "app=web"], None);
    let rs_text = rs.ok();
    assert!(
        rs_text
            .lines()
            .any(|l| l.starts_with("Pods Status:") && l.contains("2 Running / 0 Waiting")),
        "{rs_text}"
    );
    // A rolling update to V=2 on real containers, then back.
    run(&["set", "env", "deployment/web", "V=2"], None).ok();
    let status = run(
        &["rollout", "status", "deployment/web", "--timeout", "90s"],
        None,
    );
    assert!(
        status.ok().contains("successfully rolled out"),
        "{}",
        status.stdout
    );
    let history = run(&["rollout", "history", "deployment/web"], None);
    let revisions = history
        .ok()
        .lines()
        .filter(|l| l.trim_start().starts_with(['1', '2']))
        .count();
    assert_eq!(revisions, 2, "{}", history.stdout);
    // A new pod (old ones may still be terminating, and print so).
    let pods = run(&["get", "pods", "-l", "app=web", "--no-headers"], None);
    let first = pods
        .ok()
        .lines()
        .find(|l| l.contains("Running"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    let page = run(&["exec", &first, "--", "cat", "/index.html"], None);
    assert_eq!(page.ok(), "v=2\n");
    run(&["rollout", "undo", "deployment/web"], None).ok();
    let status = run(
        &["rollout", "status", "deployment/web", "--timeout", "90s"],
        None,
    );
    assert!(
        status.ok().contains("successfully rolled out"),
        "{}",
        status.stdout
    );
    let d = run(
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[0].value}",
        ],
        None,
    );
    assert_eq!(d.ok().trim(), "1");
}
