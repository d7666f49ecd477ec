//! The pod lifecycle on the fake runtime under paused time: start, status, restart policies,
//! crash-loop back-off, probes, init containers and sidecars, termination order and grace,
//! adoption after an agent restart, node admission.

#![allow(clippy::disallowed_methods)]

mod fakes;

use std::time::Duration;

use fakes::*;
use rudder_node_agent::pod::probes::Outcome;
use rudder_node_agent::runtime::fake::{Behaviour, Call};
use serde_json::{Value, json};

const S: Duration = Duration::from_secs(1);

fn one(image: &str) -> Value {
    json!({"containers": [{"name": "app", "image": image}]})
}

#[tokio::test(start_paused = true)]
async fn a_bound_pod_runs_and_reports_its_status() {
    let a = Agent::start(&["app:1"]).await;
    a.pod("web", json!({"containers": [{"name": "app", "image": "app:1",
        "env": [{"name": "A", "value": "x"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}))
        .await;
    let p = a
        .wait_pod("web", 10 * S, "Ready", |p| condition(p, "Ready") == "True")
        .await;
    assert_eq!(phase(&p), "Running");
    let ip = p
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .expect("podIP");
    assert!(
        ip.starts_with("10.88.1."),
        "pod IP from the node's CIDR: {ip}"
    );
    assert_eq!(p.pointer("/status/hostIP"), Some(&json!("192.0.2.10")));
    assert_eq!(p.pointer("/status/qosClass"), Some(&json!("BestEffort")));
    let cs = container_status(&p, "app");
    assert_eq!(cs["ready"], true);
    assert!(cs.pointer("/state/running/startedAt").is_some(), "{cs}");
    assert!(
        cs["containerID"]
            .as_str()
            .is_some_and(|s| s.starts_with("docker://"))
    );
    for c in [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
    ] {
        assert_eq!(condition(&p, c), "True", "{c}");
    }
    let id = &a.rt.containers_named("web", "app")[0];
    let spec = a.rt.spec_of(id).expect("spec");
    assert!(spec.env.contains(&("A".into(), "x".into())));
    assert!(
        spec.env.contains(&("POD".into(), "web".into())),
        "{:?}",
        spec.env
    );
    let node = a.get("Node", "", NODE).expect("node registered");
    assert_eq!(node.pointer("/status/allocatable/cpu"), Some(&json!("4")));
    assert_eq!(condition(&node, "Ready"), "True");
    assert!(
        a.get("Lease", "kube-node-lease", NODE).is_some(),
        "heartbeat lease"
    );
}

#[tokio::test(start_paused = true)]
async fn crash_loop_backs_off_ten_seconds_doubling() {
    let a = Agent::start(&["crash:1"]).await;
    a.rt.set_behaviour(
        "crash:1",
        Behaviour {
            run_for: Some(S),
            exit_code: 3,
            ..Behaviour::default()
        },
    );
    a.pod("c", one("crash:1")).await;
    let t0 = tokio::time::Instant::now();
    let mut starts = vec![];
    for n in 1..=4 {
        a.wait_pod("c", 200 * S, "restarted", |p| restarts(p, "app") >= n)
            .await;
        starts.push((tokio::time::Instant::now() - t0).as_secs());
    }
    // Each run lasts 1 s; the first restart is immediate, then 10, 20, 40 s of back-off
    // (noticed within the 1 s relist).
    let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, want) in gaps.iter().zip([11, 21, 41]) {
        assert!(
            (*gap as i64 - want).abs() <= 2,
            "gaps {gaps:?}, starts {starts:?}"
        );
    }
    let p = a
        .wait_pod("c", 60 * S, "CrashLoopBackOff", |p| {
            waiting_reason(p, "app") == "CrashLoopBackOff"
        })
        .await;
    let cs = container_status(&p, "app");
    assert_eq!(
        cs.pointer("/lastState/terminated/exitCode"),
        Some(&json!(3))
    );
    assert_eq!(
        cs.pointer("/lastState/terminated/reason"),
        Some(&json!("Error"))
    );
    assert_eq!(phase(&p), "Running");
    // Old instances are removed: the current one and the one before stay.
    assert!(a.rt.containers_named("c", "app").len() <= 2);
}

#[tokio::test(start_paused = true)]
async fn restart_policies_decide_the_phase() {
    let a = Agent::start(&["ok:1", "bad:1"]).await;
    a.rt.set_behaviour(
        "ok:1",
        Behaviour {
            run_for: Some(S),
            exit_code: 0,
            ..Behaviour::default()
        },
    );
    a.rt.set_behaviour(
        "bad:1",
        Behaviour {
            run_for: Some(S),
            exit_code: 1,
            ..Behaviour::default()
        },
    );
    a.pod(
        "never",
        json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "bad:1"}]}),
    )
    .await;
    a.pod(
        "onfail",
        json!({"restartPolicy": "OnFailure", "containers": [{"name": "app", "image": "ok:1"}]}),
    )
    .await;
    let p = a
        .wait_pod("never", 20 * S, "Failed", |p| phase(p) == "Failed")
        .await;
    assert_eq!(restarts(&p, "app"), 0);
    assert_eq!(
        container_status(&p, "app").pointer("/state/terminated/exitCode"),
        Some(&json!(1))
    );
    let p = a
        .wait_pod("onfail", 20 * S, "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    assert_eq!(
        container_status(&p, "app").pointer("/state/terminated/reason"),
        Some(&json!("Completed"))
    );
    assert_eq!(condition(&p, "Ready"), "False");
    tokio::time::sleep(30 * S).await;
    assert_eq!(
        restarts(&a.pod_json("onfail").expect("pod"), "app"),
        0,
        "a succeeded pod stays done"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_liveness_restarts_and_readiness_drives_ready() {
    let a = Agent::start(&["web:1"]).await;
    a.pod("live", json!({"containers": [{"name": "app", "image": "web:1",
        "livenessProbe": {"httpGet": {"port": 8080, "path": "/healthz"}, "periodSeconds": 2, "failureThreshold": 3},
        "readinessProbe": {"tcpSocket": {"port": 8081}, "periodSeconds": 1}}]}))
        .await;
    let p = a
        .wait_pod("live", 10 * S, "running", |p| phase(p) == "Running")
        .await;
    let ip = p
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .expect("ip")
        .to_string();
    a.prober.set(&ip, 8080, Outcome::Success);
    assert_eq!(
        condition(&p, "Ready"),
        "False",
        "not ready before the readiness probe passes"
    );
    a.prober.set(&ip, 8081, Outcome::Success);
    a.wait_pod("live", 5 * S, "ready", |p| condition(p, "Ready") == "True")
        .await;
    a.prober.set(&ip, 8081, Outcome::Failure("refused".into()));
    a.wait_pod("live", 10 * S, "unready", |p| {
        condition(p, "Ready") == "False"
    })
    .await;
    a.prober.set(&ip, 8081, Outcome::Success);
    tokio::time::sleep(20 * S).await;
    assert_eq!(
        restarts(&a.pod_json("live").expect("pod"), "app"),
        0,
        "healthy: no restart"
    );
    a.prober.set(
        &ip,
        8080,
        Outcome::Failure("HTTP probe failed with statuscode: 500".into()),
    );
    let t0 = tokio::time::Instant::now();
    a.wait_pod("live", 30 * S, "restarted by liveness", |p| {
        restarts(p, "app") == 1
    })
    .await;
    let took = tokio::time::Instant::now() - t0;
    assert!(
        took >= 4 * S && took <= 10 * S,
        "three failures 2 s apart, then a restart: {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn startup_probe_holds_liveness_back() {
    let a = Agent::start(&["slow:1"]).await;
    a.pod("s", json!({"containers": [{"name": "app", "image": "slow:1",
        "startupProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 1, "failureThreshold": 30},
        "livenessProbe": {"tcpSocket": {"port": 9001}, "periodSeconds": 1, "failureThreshold": 1}}]}))
        .await;
    let p = a
        .wait_pod("s", 10 * S, "running", |p| phase(p) == "Running")
        .await;
    let ip = p
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .expect("ip")
        .to_string();
    tokio::time::sleep(10 * S).await;
    let p = a.pod_json("s").expect("pod");
    assert_eq!(
        restarts(&p, "app"),
        0,
        "liveness (failing) must not run before startup passes"
    );
    assert_eq!(container_status(&p, "app")["started"], false);
    assert_eq!(a.prober.count(&ip, 9001), 0);
    a.prober.set(&ip, 9000, Outcome::Success);
    a.prober.set(&ip, 9001, Outcome::Success);
    a.wait_pod("s", 5 * S, "started", |p| {
        container_status(p, "app")["started"] == true
    })
    .await;
    assert!(a.prober.count(&ip, 9001) == 0 || restarts(&a.pod_json("s").expect("pod"), "app") == 0);
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_in_order_and_sidecars_stay_up() {
    let a = Agent::start(&["init:1", "side:1", "app:1"]).await;
    a.rt.set_behaviour(
        "init:1",
        Behaviour {
            run_for: Some(2 * S),
            ..Behaviour::default()
        },
    );
    a.pod(
        "i",
        json!({
        "initContainers": [
            {"name": "first", "image": "init:1"},
            {"name": "side", "image": "side:1", "restartPolicy": "Always"},
            {"name": "second", "image": "init:1"}
        ],
        "containers": [{"name": "app", "image": "app:1"}]}),
    )
    .await;
    let p = a
        .wait_pod("i", 30 * S, "ready", |p| condition(p, "Ready") == "True")
        .await;
    assert_eq!(condition(&p, "Initialized"), "True");
    let creates: Vec<String> =
        a.rt.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Create { pod, name, .. } if pod == "i" => Some(name),
                _ => None,
            })
            .collect();
    assert_eq!(creates, vec!["first", "side", "second", "app"]);
    let side = &p["status"]["initContainerStatuses"][1];
    assert_eq!(side["name"], "side");
    assert!(
        side.pointer("/state/running").is_some(),
        "the sidecar keeps running: {side}"
    );
}

#[tokio::test(start_paused = true)]
async fn deletion_stops_containers_then_sidecars_then_the_sandbox_within_the_grace() {
    let a = Agent::start(&["app:1", "side:1", "stubborn:1"]).await;
    a.rt.set_behaviour(
        "stubborn:1",
        Behaviour {
            on_sigterm: None,
            ..Behaviour::default()
        },
    );
    a.pod("d", json!({"terminationGracePeriodSeconds": 5,
        "initContainers": [{"name": "side", "image": "side:1", "restartPolicy": "Always"}],
        "containers": [{"name": "app", "image": "app:1"}, {"name": "stubborn", "image": "stubborn:1"}]}))
        .await;
    a.wait_pod("d", 20 * S, "ready", |p| condition(p, "Ready") == "True")
        .await;
    a.rt.clear_calls();
    let t0 = tokio::time::Instant::now();
    a.delete("d").await;
    a.wait_gone("d", 20 * S).await;
    let took = tokio::time::Instant::now() - t0;
    assert!(
        took >= 5 * S && took < 8 * S,
        "the stubborn container is killed at the 5 s grace: {took:?}"
    );
    let names = |id: &str| {
        a.rt.all()
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.name.clone())
    };
    let calls = a.rt.calls();
    let stops: Vec<String> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Stop(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(stops.len(), 4, "app, stubborn, side, sandbox: {calls:?}");
    assert!(
        names(&stops[0]).is_none(),
        "containers are removed after the stop"
    );
    let removes = calls
        .iter()
        .filter(|c| matches!(c, Call::Remove(_)))
        .count();
    assert_eq!(removes, 4);
    let first_remove = calls
        .iter()
        .position(|c| matches!(c, Call::Remove(_)))
        .expect("removes");
    let last_stop = calls
        .iter()
        .rposition(|c| matches!(c, Call::Stop(_)))
        .expect("stops");
    assert!(
        last_stop < first_remove,
        "everything stops before anything is removed"
    );
    assert!(a.rt.all().is_empty(), "nothing of the pod is left");
}

#[tokio::test(start_paused = true)]
async fn stop_order_puts_sidecars_after_regular_containers() {
    let a = Agent::start(&["app:1", "side:1"]).await;
    a.pod(
        "o",
        json!({"initContainers": [{"name": "side", "image": "side:1", "restartPolicy": "Always"}],
        "containers": [{"name": "app", "image": "app:1"}]}),
    )
    .await;
    a.wait_pod("o", 20 * S, "ready", |p| condition(p, "Ready") == "True")
        .await;
    let app = a.rt.containers_named("o", "app")[0].clone();
    let side = a.rt.containers_named("o", "side")[0].clone();
    let sandbox =
        a.rt.all()
            .into_iter()
            .find(|c| c.name == "POD")
            .expect("sandbox")
            .id;
    a.rt.clear_calls();
    a.delete("o").await;
    a.wait_gone("o", 40 * S).await;
    let stops: Vec<String> =
        a.rt.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Stop(id) => Some(id),
                _ => None,
            })
            .collect();
    assert_eq!(stops, vec![app, side, sandbox]);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_adopts_running_containers() {
    let a = Agent::start(&["app:1"]).await;
    a.pod("keep", one("app:1")).await;
    a.wait_pod("keep", 10 * S, "ready", |p| condition(p, "Ready") == "True")
        .await;
    let ip = a
        .pod_json("keep")
        .and_then(|p| p.pointer("/status/podIP").cloned())
        .expect("ip");
    let (api, rt, prober, host, clock, dir) = a.stop().await;
    let before = rt.all().len();
    rt.clear_calls();
    let a = Agent::start_over(api, rt, prober, host, clock, dir).await;
    a.pod("new", one("app:1")).await;
    let p = a
        .wait_pod("new", 10 * S, "ready", |p| condition(p, "Ready") == "True")
        .await;
    assert_ne!(
        p.pointer("/status/podIP"),
        Some(&ip),
        "a new pod never gets an adopted pod's address"
    );
    tokio::time::sleep(5 * S).await;
    let creates: Vec<Call> =
        a.rt.calls()
            .into_iter()
            .filter(|c| matches!(c, Call::Create { pod, .. } if pod == "keep"))
            .collect();
    assert!(
        creates.is_empty(),
        "nothing of the adopted pod was recreated: {creates:?}"
    );
    let keep = a.pod_json("keep").expect("pod");
    assert_eq!(restarts(&keep, "app"), 0);
    assert_eq!(condition(&keep, "Ready"), "True");
    assert_eq!(
        a.rt.all().len(),
        before + 2,
        "the new pod's sandbox and container"
    );
}

#[tokio::test(start_paused = true)]
async fn containers_of_unknown_pods_are_removed_at_start() {
    let a = Agent::start(&["app:1"]).await;
    a.pod("gone", one("app:1")).await;
    a.wait_pod("gone", 10 * S, "ready", |p| condition(p, "Ready") == "True")
        .await;
    let (api, rt, prober, host, clock, dir) = a.stop().await;
    // Force-delete while the agent is down: the containers are orphans.
    let req = rudder_proto::DeleteRequest {
        kind: Some(rudder_client::conn::kind_ref("v1", "Pod")),
        namespace: NS.into(),
        name: "gone".into(),
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    rudder_client::Api::delete(&*api, req)
        .await
        .expect("force delete");
    assert_eq!(rt.all().len(), 2);
    let a = Agent::start_over(api, rt, prober, host, clock, dir).await;
    let deadline = tokio::time::Instant::now() + 10 * S;
    while !a.rt.all().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "orphans not removed: {:?}",
            a.rt.all()
        );
        tokio::time::sleep(S).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_node_rejects_what_does_not_fit() {
    let a = Agent::start(&["app:1"]).await;
    a.pod(
        "big",
        json!({"containers": [{"name": "app", "image": "app:1",
        "resources": {"requests": {"cpu": "5"}}}]}),
    )
    .await;
    let p = a
        .wait_pod("big", 10 * S, "Failed", |p| phase(p) == "Failed")
        .await;
    assert_eq!(p.pointer("/status/reason"), Some(&json!("OutOfcpu")));
    assert!(
        p.pointer("/status/message")
            .and_then(Value::as_str)
            .is_some_and(|m| m.contains("cpu"))
    );
    assert!(
        a.rt.containers_named("big", "app").is_empty(),
        "nothing started"
    );
    a.pod("hp1", json!({"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 80, "hostPort": 8080}]}]})).await;
    a.wait_pod("hp1", 10 * S, "running", |p| phase(p) == "Running")
        .await;
    a.pod("hp2", json!({"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 80, "hostPort": 8080}]}]})).await;
    let p = a
        .wait_pod("hp2", 10 * S, "Failed", |p| phase(p) == "Failed")
        .await;
    assert_eq!(p.pointer("/status/reason"), Some(&json!("NodePorts")));
}

#[tokio::test(start_paused = true)]
async fn missing_images_and_config_wait_with_reasons() {
    let a = Agent::start(&[]).await;
    a.pod(
        "img",
        json!({"containers": [{"name": "app", "image": "nowhere:1"}]}),
    )
    .await;
    let p = a
        .wait_pod("img", 20 * S, "ImagePullBackOff", |p| {
            waiting_reason(p, "app") == "ImagePullBackOff"
        })
        .await;
    assert_eq!(phase(&p), "Pending");
    let msg = container_status(&p, "app")
        .pointer("/state/waiting/message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("ErrImagePull") && msg.contains("pull access denied"),
        "the engine's message: {msg}"
    );
    // Pulls are retried with back-off: 10 s, then 20 s, ...
    let pulls = |a: &Agent| {
        a.rt.calls()
            .iter()
            .filter(|c| matches!(c, Call::Pull(i) if i == "nowhere:1"))
            .count()
    };
    assert_eq!(pulls(&a), 1);
    tokio::time::sleep(11 * S).await;
    assert_eq!(pulls(&a), 2, "retried after 10 s");
    tokio::time::sleep(15 * S).await;
    assert_eq!(pulls(&a), 2, "the next retry waits 20 s");
    tokio::time::sleep(6 * S).await;
    assert_eq!(pulls(&a), 3);
    a.rt.add_registry_image("nowhere:1", None);
    a.wait_pod("img", 60 * S, "running once pullable", |p| {
        phase(p) == "Running"
    })
    .await;
    let events = a
        .api
        .list_json(&rudder_client::conn::kind_ref("v1", "Event"));
    let said = |reason: &str, text: &str| {
        events.iter().any(|e| {
            e["reason"] == reason
                && e["message"].as_str().is_some_and(|m| m.contains(text))
                && e.pointer("/involvedObject/name") == Some(&json!("img"))
        })
    };
    assert!(
        said("Pulling", "Pulling image \"nowhere:1\""),
        "{events:#?}"
    );
    assert!(
        said("Pulled", "Successfully pulled image \"nowhere:1\""),
        "{events:#?}"
    );
    assert!(said("Failed", "pull access denied"), "{events:#?}");
    assert!(
        said("BackOff", "Back-off pulling image \"nowhere:1\""),
        "{events:#?}"
    );
    a.rt.add_image("there:1");
    a.pod("cfg", json!({"containers": [{"name": "app", "image": "there:1",
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]}]}))
        .await;
    let p = a
        .wait_pod("cfg", 10 * S, "config error", |p| {
            waiting_reason(p, "app") == "CreateContainerConfigError"
        })
        .await;
    let msg = container_status(&p, "app")
        .pointer("/state/waiting/message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("absent"),
        "the message names the ConfigMap: {msg}"
    );
    a.create(
        "v1",
        "ConfigMap",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "absent", "namespace": NS}, "data": {"k": "v"}}),
    )
    .await;
    a.wait_pod("cfg", 30 * S, "running once the ConfigMap exists", |p| {
        phase(p) == "Running"
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_node_turns_not_ready_while_the_engine_is_down() {
    let a = Agent::start(&["app:1"]).await;
    let ready = |a: &Agent| {
        a.get("Node", "", NODE)
            .map(|n| condition(&n, "Ready"))
            .unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + 15 * S;
    while ready(&a) != "True" {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(S).await;
    }
    a.rt.set_up(false);
    tokio::time::sleep(15 * S).await;
    let node = a.get("Node", "", NODE).expect("node");
    assert_eq!(condition(&node, "Ready"), "False");
    let c = node["status"]["conditions"]
        .as_array()
        .expect("conds")
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .expect("ready");
    assert_eq!(c["reason"], "KubeletNotReady");
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains("container runtime is down")),
        "{c}"
    );
    a.rt.set_up(true);
    tokio::time::sleep(15 * S).await;
    assert_eq!(ready(&a), "True", "recovers when the engine returns");
}
