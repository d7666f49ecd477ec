//! The node agent against the real Docker engine and a real (in-process) API server, with the
//! locally built test images: env and files from Secrets and ConfigMaps (and a ConfigMap update
//! reaching a running pod), two containers talking over localhost, a liveness failure that
//! restarts, graceful termination timing, logs and exec through the API server, a PVC whose
//! data outlives its pod, and an agent restart that restarts nothing.
//!
//! Needs Docker: every test panics with a clear message when it is missing. Each test has its
//! own node name, network and subnet (10.215.<n>.0/24) and removes its containers and network
//! when it ends, also on failure.

#![allow(clippy::disallowed_methods)]

mod docker_cluster;

use std::time::{Duration, Instant};

use docker_cluster::{Cluster, NS};
use futures::StreamExt;
use rudder_proto as pb;
use rudder_testkit::images;
use serde_json::{Value, json};

fn ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn restarts(p: &Value, c: &str) -> i64 {
    p.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|s| s["name"] == c))
        .and_then(|s| s["restartCount"].as_i64())
        .unwrap_or(-1)
}

fn pod_ip(p: &Value) -> String {
    p.pointer("/status/podIP")
        .and_then(Value::as_str)
        .expect("podIP")
        .to_string()
}

/// A GET from the host to a pod (the node reaches pod IPs over the bridge).
async fn http(ip: &str, port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, port))
        .await
        .expect("connect to the pod");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_secrets_localhost_and_configmap_updates() {
    let c = Cluster::start("config", 1).await;
    c.create(
        "Secret",
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": NS}, "stringData": {"password": "s3cret"}}),
    )
    .await;
    c.create(
        "ConfigMap",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": NS}, "data": {"greeting": "hello"}}),
    )
    .await;
    let server_image = images::test_server();
    c.pod("web", json!({
        "containers": [
            {"name": "a", "image": server_image, "env": [
                {"name": "PORT", "value": "8080"},
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
             "volumeMounts": [{"name": "secret", "mountPath": "/etc/secret"}, {"name": "cfg", "mountPath": "/etc/cfg"}]},
            {"name": "b", "image": server_image, "env": [{"name": "PORT", "value": "8081"}]}],
        "volumes": [{"name": "secret", "secret": {"secretName": "db"}},
                    {"name": "cfg", "configMap": {"name": "cfg"}}]})).await;
    let p = c.wait_pod("web", 60, "ready", ready).await;
    let ip = pod_ip(&p);
    // A container that is not a pod, attached to the pod network, gets its address from the
    // engine's own range, never a pod's.
    let stranger = format!("rudder-stranger-{}", std::process::id());
    let run = std::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--rm",
            "--name",
            &stranger,
            "--network",
            "rudder-test-1",
        ])
        .args([images::busybox(), "sleep", "60"])
        .output()
        .expect("docker run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let addr = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &stranger,
        ])
        .output()
        .expect("docker inspect");
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &stranger])
        .output();
    let addr = String::from_utf8_lossy(&addr.stdout).trim().to_string();
    let last: u8 = addr
        .rsplit('.')
        .next()
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    assert!(
        last >= 240,
        "the engine's own range is the last /28: {addr}"
    );
    assert_ne!(addr, ip);
    let env = http(&ip, 8080, "/env").await;
    assert!(env.contains("DB_PASSWORD=s3cret"), "secret as env: {env}");
    assert!(env.contains("MY_POD=web"), "{env}");
    assert_eq!(
        http(&ip, 8080, "/file?path=/etc/secret/password").await,
        "s3cret"
    );
    assert_eq!(
        http(&ip, 8080, "/file?path=/etc/cfg/greeting").await,
        "hello"
    );
    let hello = http(&ip, 8080, "/fetch?addr=127.0.0.1:8081&path=/hostname").await;
    assert!(
        hello.contains("web"),
        "container a reaches b on localhost, sharing the hostname: {hello}"
    );
    // The ConfigMap changes; the running pod's file follows.
    c.patch("ConfigMap", "cfg", json!({"data": {"greeting": "bonjour"}}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = http(&ip, 8080, "/file?path=/etc/cfg/greeting").await;
        if now == "bonjour" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ConfigMap update not seen by the pod: {now}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(restarts(&c.get_pod("web").await.expect("pod"), "a"), 0);
    // Port-forward through the API server's relay to the pod's port.
    let start = pb::PortForwardInput {
        msg: Some(pb::port_forward_input::Msg::Start(pb::PortForwardStart {
            namespace: NS.into(),
            pod: "web".into(),
            port: 8081,
        })),
    };
    let request = pb::PortForwardInput {
        msg: Some(pb::port_forward_input::Msg::Data(
            b"GET /echo?msg=forwarded HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                .to_vec()
                .into(),
        )),
    };
    let mut back = c
        .client()
        .port_forward(futures::stream::iter(vec![start, request]))
        .await
        .expect("port-forward");
    let mut got = Vec::new();
    while let Some(c) = back.next().await {
        got.extend_from_slice(&c.expect("chunk").data);
    }
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("forwarded"),
        "{got}"
    );
    c.delete_pod("web").await;
    c.wait_gone("web", 30).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_failure_restarts_and_termination_honours_the_grace() {
    let c = Cluster::start("live", 2).await;
    c.pod("live", json!({
        "terminationGracePeriodSeconds": 10,
        "containers": [{"name": "app", "image": images::test_server(),
            "env": [{"name": "TERM_DELAY_MS", "value": "1500"}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1}}]})).await;
    let p = c.wait_pod("live", 60, "ready", ready).await;
    let ip = pod_ip(&p);
    http(&ip, 8080, "/fail/ready").await;
    c.wait_pod("live", 20, "unready", |p| !ready(p)).await;
    http(&ip, 8080, "/fail/healthz").await;
    let p = c
        .wait_pod("live", 30, "restarted by liveness", |p| {
            restarts(p, "app") == 1
        })
        .await;
    let last = p
        .pointer("/status/containerStatuses/0/lastState/terminated")
        .cloned()
        .unwrap_or(Value::Null);
    assert!(last.is_object(), "the killed instance is lastState: {p:#}");
    c.wait_pod("live", 30, "ready again (a fresh container)", ready)
        .await;
    let t0 = Instant::now();
    c.delete_pod("live").await;
    c.wait_gone("live", 30).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "SIGTERM, then the server's 1.5 s shutdown: {took:?}"
    );
    assert!(
        took < Duration::from_secs(9),
        "no SIGKILL wait for a container that exits: {took:?}"
    );
    // A container that ignores SIGTERM is killed at the end of the grace period.
    c.pod("stubborn", json!({
        "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "app", "image": images::test_server(), "env": [{"name": "IGNORE_SIGTERM", "value": "1"}]}]})).await;
    c.wait_pod("stubborn", 60, "running", |p| {
        p.pointer("/status/phase") == Some(&json!("Running"))
    })
    .await;
    let t0 = Instant::now();
    c.delete_pod("stubborn").await;
    c.wait_gone("stubborn", 30).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "killed at the 2 s grace: {took:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_exec_pvc_and_agent_restart() {
    let mut c = Cluster::start("logs", 3).await;
    let data = tempfile::tempdir().expect("pv dir");
    c.create(
        "PersistentVolume",
        json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pv-logs"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": data.path().join("v").display().to_string()},
                 "claimRef": {"namespace": NS, "name": "data"}}}),
    )
    .await;
    c.create("PersistentVolumeClaim", json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pv-logs", "resources": {"requests": {"storage": "1Gi"}}}})).await;
    let bb = images::busybox();
    // A shell as PID 1 ignores SIGTERM: a short grace keeps the deletion quick.
    c.pod("writer", json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "sh", "image": bb,
            "command": ["sh", "-c", "echo hello from the pod; echo kept > /data/file; sleep 100000"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]})).await;
    c.wait_pod("writer", 60, "running", |p| {
        p.pointer("/status/phase") == Some(&json!("Running"))
    })
    .await;
    let client = c.client();
    let mut text = String::new();
    for _ in 0..50 {
        let mut s = client
            .logs(pb::LogsRequest {
                namespace: NS.into(),
                pod: "writer".into(),
                ..Default::default()
            })
            .await
            .expect("logs");
        text.clear();
        while let Some(c) = s.next().await {
            text.push_str(&String::from_utf8_lossy(&c.expect("chunk").data));
        }
        if text.contains("hello") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(text, "hello from the pod\n");
    let start = pb::ExecInput {
        msg: Some(pb::exec_input::Msg::Start(pb::ExecStart {
            namespace: NS.into(),
            pod: "writer".into(),
            command: vec!["sh".into(), "-c".into(), "cat /data/file; exit 4".into()],
            ..Default::default()
        })),
    };
    let mut out = client
        .exec(futures::stream::iter(vec![start]).chain(futures::stream::pending()))
        .await
        .expect("exec");
    let (mut stdout, mut code) = (Vec::new(), None);
    while let Some(m) = out.next().await {
        match m.expect("exec").msg {
            Some(pb::exec_output::Msg::Stdout(b)) => stdout.extend_from_slice(&b),
            Some(pb::exec_output::Msg::ExitCode(c)) => {
                code = Some(c);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(
        (String::from_utf8_lossy(&stdout).to_string(), code),
        ("kept\n".to_string(), Some(4))
    );
    // An agent restart adopts the running container: same id, no restart.
    let before = c.get_pod("writer").await.expect("pod");
    let id = before
        .pointer("/status/containerStatuses/0/containerID")
        .cloned();
    c.restart_agent().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = c.get_pod("writer").await.expect("pod");
    assert_eq!(
        after
            .pointer("/status/containerStatuses/0/containerID")
            .cloned(),
        id
    );
    assert_eq!(restarts(&after, "sh"), 0);
    // The claim's data outlives the pod.
    c.delete_pod("writer").await;
    c.wait_gone("writer", 30).await;
    assert_eq!(
        std::fs::read_to_string(data.path().join("v/file")).expect("pv file"),
        "kept\n"
    );
    c.pod(
        "reader",
        json!({
        "restartPolicy": "Never",
        "containers": [{"name": "sh", "image": bb, "command": ["sh", "-c", "cat /data/file"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}),
    )
    .await;
    c.wait_pod("reader", 60, "Succeeded", |p| {
        p.pointer("/status/phase") == Some(&json!("Succeeded"))
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_backs_off_longer_each_time() {
    let c = Cluster::start("crash", 4).await;
    c.pod(
        "crash",
        json!({"containers": [{"name": "c", "image": images::busybox(),
                "command": ["sh", "-c", "echo crashing; exit 2"]}]}),
    )
    .await;
    c.wait_pod("crash", 60, "first restart", |p| restarts(p, "c") >= 1)
        .await;
    let t1 = Instant::now();
    let p = c
        .wait_pod("crash", 30, "CrashLoopBackOff", |p| {
            p.pointer("/status/containerStatuses/0/state/waiting/reason")
                == Some(&json!("CrashLoopBackOff"))
        })
        .await;
    let last = p
        .pointer("/status/containerStatuses/0/lastState/terminated")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(last["exitCode"], 2, "{p:#}");
    assert_eq!(last["reason"], "Error");
    c.wait_pod("crash", 30, "second restart", |p| restarts(p, "c") >= 2)
        .await;
    let gap = t1.elapsed();
    assert!(
        gap >= Duration::from_secs(9),
        "the second restart waits the 10 s back-off: {gap:?}"
    );
    let p = c
        .wait_pod("crash", 30, "waiting 20s", |p| {
            p.pointer("/status/containerStatuses/0/state/waiting/message")
                .and_then(Value::as_str)
                .is_some_and(|m| m.starts_with("back-off 20s"))
        })
        .await;
    assert_eq!(restarts(&p, "c"), 2, "doubled, not yet restarted: {p:#}");
    c.delete_pod("crash").await;
    c.wait_gone("crash", 30).await;
    c.shutdown().await;
}
