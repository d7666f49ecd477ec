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

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rudder_client::Api;
use rudder_client::clock::RealClock;
use rudder_client::conn::kind_ref;
use rudder_node_agent::agent::{self, AgentConfig, Deps};
use rudder_node_agent::host::{FakeHost, HostFacts};
use rudder_node_agent::node::NodeConfig;
use rudder_node_agent::pod::probes::NetProber;
use rudder_node_agent::runtime::docker::DockerRuntime;
use rudder_node_agent::runtime::labels;
use rudder_proto as pb;
use rudder_testkit::TestServer;
use rudder_testkit::images::{self, DockerCleanup};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Node {
    name: String,
    dir: tempfile::TempDir,
    cfg: AgentConfig,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _cleanup: DockerCleanup,
}

fn config(name: &str, n: u8, dir: &std::path::Path) -> AgentConfig {
    let mut node = NodeConfig::new(name, &format!("10.215.{n}.1"));
    node.pod_cidr = Some(format!("10.215.{n}.0/24"));
    AgentConfig {
        node,
        data_dir: dir.to_path_buf(),
        network: format!("rudder-test-{n}"),
        network_subnet: format!("10.215.{n}.0/24"),
        allow_privileged: false,
        relist_period: Duration::from_millis(500),
        volume_refresh: Duration::from_secs(2),
    }
}

async fn spawn_agent(
    server: &TestServer,
    cfg: AgentConfig,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let clock = RealClock::shared();
    let runtime = DockerRuntime::connect(None, Arc::clone(&clock))
        .await
        .expect("this test needs a running Docker engine");
    let deps = Deps {
        api: server.api(),
        runtime: Arc::new(runtime),
        prober: Arc::new(NetProber),
        host: Arc::new(FakeHost::new()),
        facts: HostFacts::read(&cfg.data_dir),
        clock,
        relay: Some(server.client()),
    };
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = agent::run(deps, cfg, c).await {
            panic!("agent: {e}");
        }
    });
    (cancel, task)
}

impl Node {
    async fn start(server: &TestServer, test: &str, n: u8) -> Node {
        images::require_docker();
        let name = format!("t-{test}");
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(&name, n, dir.path());
        let mut cleanup = DockerCleanup::new();
        cleanup.label(labels::NODE, &name).network(&cfg.network);
        cleanup.run();
        let (cancel, task) = spawn_agent(server, cfg.clone()).await;
        Node {
            name,
            dir,
            cfg,
            cancel,
            task: Some(task),
            _cleanup: cleanup,
        }
    }

    async fn restart(&mut self, server: &TestServer) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("agent task");
        }
        let (cancel, task) = spawn_agent(server, self.cfg.clone()).await;
        self.cancel = cancel;
        self.task = Some(task);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.cancel.cancel();
        let _ = &self.dir;
    }
}

async fn create(api: &Arc<dyn Api>, api_version: &str, kind: &str, obj: Value) {
    api.create(pb::CreateRequest {
        kind: Some(kind_ref(api_version, kind)),
        namespace: "default".into(),
        json: serde_json::to_vec(&obj).expect("json").into(),
        options: None,
    })
    .await
    .unwrap_or_else(|e| panic!("create {kind}: {e}"));
}

async fn get(api: &Arc<dyn Api>, kind: &str, name: &str) -> Option<Value> {
    let r = api
        .get(pb::GetRequest {
            kind: Some(kind_ref("v1", kind)),
            namespace: "default".into(),
            name: name.into(),
        })
        .await;
    match r {
        Ok(o) => Some(rudder_client::api::decode_json(&o).expect("json")),
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("get {name}: {e}"),
    }
}

async fn wait_pod(
    api: &Arc<dyn Api>,
    name: &str,
    secs: u64,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(p) = get(api, "Pod", name).await
            && f(&p)
        {
            return p;
        }
        if Instant::now() > deadline {
            panic!(
                "pod {name}: {what} not reached in {secs}s: {:#}",
                get(api, "Pod", name).await.unwrap_or(Value::Null)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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

fn pod(node: &Node, name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["nodeName"] = json!(node.name);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
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

async fn delete(api: &Arc<dyn Api>, name: &str) {
    api.delete(pb::DeleteRequest {
        kind: Some(kind_ref("v1", "Pod")),
        namespace: "default".into(),
        name: name.into(),
        ..Default::default()
    })
    .await
    .expect("delete");
}

async fn wait_gone(api: &Arc<dyn Api>, name: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while get(api, "Pod", name).await.is_some() {
        assert!(Instant::now() < deadline, "pod {name} not gone in {secs}s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_secrets_localhost_and_configmap_updates() {
    let server = TestServer::start().await.expect("server");
    let api = server.api();
    let node = Node::start(&server, "config", 1).await;
    create(
        &api,
        "v1",
        "Secret",
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "default"}, "stringData": {"password": "s3cret"}}),
    )
    .await;
    create(
        &api,
        "v1",
        "ConfigMap",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "default"}, "data": {"greeting": "hello"}}),
    )
    .await;
    let server_image = images::test_server();
    create(&api, "v1", "Pod", pod(&node, "web", json!({
        "containers": [
            {"name": "a", "image": server_image, "env": [
                {"name": "PORT", "value": "8080"},
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
             "volumeMounts": [{"name": "secret", "mountPath": "/etc/secret"}, {"name": "cfg", "mountPath": "/etc/cfg"}]},
            {"name": "b", "image": server_image, "env": [{"name": "PORT", "value": "8081"}]}],
        "volumes": [{"name": "secret", "secret": {"secretName": "db"}},
                    {"name": "cfg", "configMap": {"name": "cfg"}}]}))).await;
    let p = wait_pod(&api, "web", 60, "ready", ready).await;
    let ip = pod_ip(&p);
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
    api.patch(pb::PatchRequest {
        kind: Some(kind_ref("v1", "ConfigMap")),
        namespace: "default".into(),
        name: "cfg".into(),
        patch_type: pb::PatchType::Merge as i32,
        patch: serde_json::to_vec(&json!({"data": {"greeting": "bonjour"}}))
            .expect("json")
            .into(),
        status: false,
        options: None,
    })
    .await
    .expect("patch");
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
    assert_eq!(
        restarts(&get(&api, "Pod", "web").await.expect("pod"), "a"),
        0
    );
    // Port-forward through the API server's relay to the pod's port.
    let start = pb::PortForwardInput {
        msg: Some(pb::port_forward_input::Msg::Start(pb::PortForwardStart {
            namespace: "default".into(),
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
    let mut back = server
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
    delete(&api, "web").await;
    wait_gone(&api, "web", 30).await;
    drop(node);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_failure_restarts_and_termination_honours_the_grace() {
    let server = TestServer::start().await.expect("server");
    let api = server.api();
    let node = Node::start(&server, "live", 2).await;
    create(&api, "v1", "Pod", pod(&node, "live", json!({
        "terminationGracePeriodSeconds": 10,
        "containers": [{"name": "app", "image": images::test_server(),
            "env": [{"name": "TERM_DELAY_MS", "value": "1500"}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1}}]}))).await;
    let p = wait_pod(&api, "live", 60, "ready", ready).await;
    let ip = pod_ip(&p);
    http(&ip, 8080, "/fail/ready").await;
    wait_pod(&api, "live", 20, "unready", |p| !ready(p)).await;
    http(&ip, 8080, "/fail/healthz").await;
    let p = wait_pod(&api, "live", 30, "restarted by liveness", |p| {
        restarts(p, "app") == 1
    })
    .await;
    let last = p
        .pointer("/status/containerStatuses/0/lastState/terminated")
        .cloned()
        .unwrap_or(Value::Null);
    assert!(last.is_object(), "the killed instance is lastState: {p:#}");
    wait_pod(&api, "live", 30, "ready again (a fresh container)", ready).await;
    let t0 = Instant::now();
    delete(&api, "live").await;
    wait_gone(&api, "live", 30).await;
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
    create(&api, "v1", "Pod", pod(&node, "stubborn", json!({
        "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "app", "image": images::test_server(), "env": [{"name": "IGNORE_SIGTERM", "value": "1"}]}]}))).await;
    wait_pod(&api, "stubborn", 60, "running", |p| {
        p.pointer("/status/phase") == Some(&json!("Running"))
    })
    .await;
    let t0 = Instant::now();
    delete(&api, "stubborn").await;
    wait_gone(&api, "stubborn", 30).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "killed at the 2 s grace: {took:?}"
    );
    drop(node);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_exec_pvc_and_agent_restart() {
    let server = TestServer::start().await.expect("server");
    let api = server.api();
    let mut node = Node::start(&server, "logs", 3).await;
    let data = tempfile::tempdir().expect("pv dir");
    create(
        &api,
        "v1",
        "PersistentVolume",
        json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pv-logs"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": data.path().join("v").display().to_string()},
                 "claimRef": {"namespace": "default", "name": "data"}}}),
    )
    .await;
    create(&api, "v1", "PersistentVolumeClaim", json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pv-logs", "resources": {"requests": {"storage": "1Gi"}}}})).await;
    let bb = images::busybox();
    // A shell as PID 1 ignores SIGTERM: a short grace keeps the deletion quick.
    create(&api, "v1", "Pod", pod(&node, "writer", json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "sh", "image": bb,
            "command": ["sh", "-c", "echo hello from the pod; echo kept > /data/file; sleep 100000"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}))).await;
    wait_pod(&api, "writer", 60, "running", |p| {
        p.pointer("/status/phase") == Some(&json!("Running"))
    })
    .await;
    let client = server.client();
    let mut text = String::new();
    for _ in 0..50 {
        let mut s = client
            .logs(pb::LogsRequest {
                namespace: "default".into(),
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
            namespace: "default".into(),
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
    let before = get(&api, "Pod", "writer").await.expect("pod");
    let id = before
        .pointer("/status/containerStatuses/0/containerID")
        .cloned();
    node.restart(&server).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = get(&api, "Pod", "writer").await.expect("pod");
    assert_eq!(
        after
            .pointer("/status/containerStatuses/0/containerID")
            .cloned(),
        id
    );
    assert_eq!(restarts(&after, "sh"), 0);
    // The claim's data outlives the pod.
    delete(&api, "writer").await;
    wait_gone(&api, "writer", 30).await;
    assert_eq!(
        std::fs::read_to_string(data.path().join("v/file")).expect("pv file"),
        "kept\n"
    );
    create(
        &api,
        "v1",
        "Pod",
        pod(
            &node,
            "reader",
            json!({
        "restartPolicy": "Never",
        "containers": [{"name": "sh", "image": bb, "command": ["sh", "-c", "cat /data/file"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}),
        ),
    )
    .await;
    wait_pod(&api, "reader", 60, "Succeeded", |p| {
        p.pointer("/status/phase") == Some(&json!("Succeeded"))
    })
    .await;
    drop(node);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_backs_off_longer_each_time() {
    let server = TestServer::start().await.expect("server");
    let api = server.api();
    let node = Node::start(&server, "crash", 4).await;
    create(
        &api,
        "v1",
        "Pod",
        pod(
            &node,
            "crash",
            json!({"containers": [{"name": "c", "image": images::busybox(),
                "command": ["sh", "-c", "echo crashing; exit 2"]}]}),
        ),
    )
    .await;
    wait_pod(&api, "crash", 60, "first restart", |p| {
        restarts(p, "c") >= 1
    })
    .await;
    let t1 = Instant::now();
    let p = wait_pod(&api, "crash", 30, "CrashLoopBackOff", |p| {
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
    wait_pod(&api, "crash", 30, "second restart", |p| {
        restarts(p, "c") >= 2
    })
    .await;
    let gap = t1.elapsed();
    assert!(
        gap >= Duration::from_secs(9),
        "the second restart waits the 10 s back-off: {gap:?}"
    );
    let p = wait_pod(&api, "crash", 30, "waiting 20s", |p| {
        p.pointer("/status/containerStatuses/0/state/waiting/message")
            .and_then(Value::as_str)
            .is_some_and(|m| m.starts_with("back-off 20s"))
    })
    .await;
    assert_eq!(restarts(&p, "c"), 2, "doubled, not yet restarted: {p:#}");
    delete(&api, "crash").await;
    wait_gone(&api, "crash", 30).await;
    drop(node);
    server.shutdown().await;
}
