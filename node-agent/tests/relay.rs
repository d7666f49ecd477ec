//! Logs and exec through a real (in-process) API server's relay, to a node agent over the fake
//! runtime: the client never dials the agent; the agent's own streams carry the sessions.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rudder_client::Api;
use rudder_client::clock::RealClock;
use rudder_client::conn::kind_ref;
use rudder_node_agent::agent::{self, Deps};
use rudder_node_agent::host::{FakeHost, test_facts};
use rudder_node_agent::pod::probes::FakeProber;
use rudder_node_agent::runtime::ExecOutput;
use rudder_node_agent::runtime::fake::{Behaviour, FakeRuntime};
use rudder_proto as pb;
use rudder_testkit::TestServer;
use serde_json::json;
use tokio_util::sync::CancellationToken;

mod fakes;

struct Running {
    server: TestServer,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(rt: FakeRuntime) -> Running {
    let server = TestServer::start().await.expect("server");
    let dir = tempfile::tempdir().expect("tempdir");
    let deps = Deps {
        api: server.api(),
        runtime: Arc::new(rt),
        prober: Arc::new(FakeProber::default()),
        host: Arc::new(FakeHost::new()),
        facts: test_facts(),
        clock: RealClock::shared(),
        relay: Some(server.client()),
    };
    let cfg = fakes::config(dir.path());
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = agent::run(deps, cfg, c).await {
            panic!("agent: {e}");
        }
    });
    Running {
        server,
        cancel,
        task,
        _dir: dir,
    }
}

async fn running_pod(api: &Arc<dyn Api>, name: &str, containers: serde_json::Value) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": fakes::NODE, "containers": containers}});
    api.create(pb::CreateRequest {
        kind: Some(kind_ref("v1", "Pod")),
        namespace: "default".into(),
        json: serde_json::to_vec(&pod).expect("json").into(),
        options: None,
    })
    .await
    .expect("create pod");
    for _ in 0..100 {
        let o = api
            .get(pb::GetRequest {
                kind: Some(kind_ref("v1", "Pod")),
                namespace: "default".into(),
                name: name.into(),
                allow_stale: false,
            })
            .await
            .expect("get");
        let v = rudder_client::api::decode_json(&o).expect("json");
        if v.pointer("/status/phase").and_then(|p| p.as_str()) == Some("Running") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pod {name} not running");
}

#[tokio::test]
async fn logs_and_exec_reach_the_container_through_the_api_server() {
    let rt = FakeRuntime::new(RealClock::shared());
    rt.add_image("app:1");
    let long: Vec<u8> = (0..200_000).map(|i| b'a' + (i % 26) as u8).collect();
    let mut b = Behaviour {
        logs: long.clone(),
        ..Behaviour::default()
    };
    b.exec.insert(
        vec!["id".into()],
        ExecOutput {
            exit_code: 3,
            output: b"uid=0(root)\n".to_vec(),
        },
    );
    rt.set_behaviour("app:1", b);
    let r = start(rt).await;
    let api = r.server.api();
    running_pod(&api, "web", json!([{"name": "app", "image": "app:1"}])).await;
    let client = r.server.client();

    let req = pb::LogsRequest {
        namespace: "default".into(),
        pod: "web".into(),
        ..Default::default()
    };
    let mut s = client.logs(req.clone()).await.expect("logs");
    let mut got = Vec::new();
    while let Some(c) = s.next().await {
        got.extend_from_slice(&c.expect("chunk").data);
    }
    assert_eq!(got, long, "the whole log, relayed");

    let limited = pb::LogsRequest {
        limit_bytes: 10,
        ..req.clone()
    };
    let mut s = client.logs(limited).await.expect("logs");
    let mut n = 0;
    while let Some(c) = s.next().await {
        n += c.expect("chunk").data.len();
    }
    assert_eq!(n, 10);

    let wrong = pb::LogsRequest {
        container: "nope".into(),
        ..req.clone()
    };
    let err = match client.logs(wrong).await {
        Ok(mut s) => s.next().await.expect("an item").expect_err("an error"),
        Err(e) => panic!("opening failed early: {e}"),
    };
    assert!(err.message().contains("nope"), "{}", err.message());

    let start = pb::ExecInput {
        msg: Some(pb::exec_input::Msg::Start(pb::ExecStart {
            namespace: "default".into(),
            pod: "web".into(),
            command: vec!["id".into()],
            ..Default::default()
        })),
    };
    let mut out = client
        .exec(futures::stream::iter(vec![start]).chain(futures::stream::pending()))
        .await
        .expect("exec");
    let (mut stdout, mut code) = (Vec::new(), None);
    while let Some(m) = out.next().await {
        let m = m.expect("exec output");
        match m.msg {
            Some(pb::exec_output::Msg::Stdout(b)) => stdout.extend_from_slice(&b),
            Some(pb::exec_output::Msg::ExitCode(c)) => {
                code = Some(c);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(stdout, b"uid=0(root)\n");
    assert_eq!(code, Some(3));

    // The node's summary comes back through the same relay, the pod in it.
    let sum = client
        .node_summary(pb::SummaryRequest {
            node: fakes::NODE.into(),
        })
        .await
        .expect("summary");
    let v: serde_json::Value = serde_json::from_slice(&sum.json).expect("json");
    assert_eq!(v["node"]["nodeName"], fakes::NODE);
    assert_eq!(v["pods"][0]["podRef"]["name"], "web", "{v}");
    assert_eq!(v["pods"][0]["containers"][0]["name"], "app");
    let none = client
        .node_summary(pb::SummaryRequest {
            node: "elsewhere".into(),
        })
        .await
        .expect_err("no agent for that node");
    assert!(none.to_string().contains("elsewhere"), "{none}");
    assert!(
        !none.to_string().contains("no API server reachable"),
        "the server answered; this is not a connection failure: {none}"
    );

    let missing = pb::LogsRequest {
        pod: "absent".into(),
        ..req
    };
    let e = client.logs(missing).await.expect_err("no such pod");
    assert!(e.to_string().contains("absent"), "{e}");
    r.cancel.cancel();
    let _ = r.task.await;
}
