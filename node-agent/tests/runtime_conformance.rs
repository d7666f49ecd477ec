//! The runtime conformance suite: the `ContainerRuntime` contract as Docker keeps it, written
//! once against `Arc<dyn ContainerRuntime>` and run against both `DockerRuntime` (real engine,
//! real time) and `FakeRuntime` (paused time). Docker is the reference: where the fake
//! disagrees, the fake is wrong.
//!
//! Each case is an `async fn(Harness)`; `cases!` lists them with their subnet number and
//! generates `<case>::fake` and `<case>::docker`, so no case can be forgotten by one backend.
//! The Docker tests panic when Docker is missing. Engine-only behaviour (pod networking,
//! container settings, log options, stats, interactive exec) is in `common/docker_only.rs`.

mod common;

use std::time::Duration;

use futures::StreamExt;
use rudder_node_agent::runtime::{
    EXEC_OUTPUT_LIMIT, HostPort, LogOptions, Protocol, Role, RuntimeError, State, labels,
};

use common::{Harness, Program, Run, Script};

/// Calls `$m!(case, subnet number)` for every case; the numbers must be distinct.
macro_rules! cases {
    ($m:ident) => {
        $m!(a_network_is_created_once_and_another_subnet_is_refused, 1);
        $m!(sandbox_and_container_lifecycle, 2);
        $m!(the_exit_code_is_seen_by_inspect_and_list, 3);
        $m!(a_missing_executable_fails_the_start, 4);
        $m!(stop_sends_sigterm_first, 5);
        $m!(stop_kills_what_ignores_sigterm_after_the_grace, 6);
        $m!(removing_a_missing_container_succeeds, 7);
        $m!(list_shows_only_this_nodes_containers, 8);
        $m!(a_taken_ip_is_refused, 9);
        $m!(a_taken_host_port_is_refused, 10);
        $m!(a_missing_image_is_image_not_found, 11);
        $m!(pulling_an_unknown_image_fails, 12);
        $m!(exec_returns_the_exit_code_and_output, 13);
        $m!(logs_return_the_output, 14);
        $m!(a_stopped_sandbox_cannot_be_joined, 15);
        $m!(exceeding_the_memory_limit_is_an_oom_kill, 16);
    };
}

macro_rules! fake_and_docker {
    ($case:ident, $n:expr) => {
        mod $case {
            #[tokio::test(start_paused = true)]
            async fn fake() {
                super::$case(super::Harness::fake(stringify!($case), $n)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn docker() {
                super::$case(super::Harness::docker(stringify!($case), $n).await).await;
            }
        }
    };
}

cases!(fake_and_docker);

const MISSING_ID: &str = "0000000000000000000000000000000000000000000000000000000000c0ffee";

async fn a_network_is_created_once_and_another_subnet_is_refused(h: Harness) {
    h.rt.ensure_network(&h.net)
        .await
        .expect("first ensure_network");
    h.rt.ensure_network(&h.net)
        .await
        .expect("ensure_network of an existing network with the same subnet");
    let mut other = h.net.clone();
    other.subnet = format!("10.213.{}.0/25", h.n);
    match h.rt.ensure_network(&other).await {
        Err(RuntimeError::Refused(m)) => {
            assert!(
                m.contains(&h.net.subnet) && m.contains(&other.subnet),
                "the refusal names both subnets: {m}"
            );
        }
        r => panic!("another subnet for an existing network must be refused, got {r:?}"),
    }
}

async fn sandbox_and_container_lifecycle(h: Harness) {
    let (owner, sb) = h.sandbox("web", 1).await;
    let s = h.rt.inspect(&sb).await.expect("inspect sandbox");
    assert_eq!(s.role, Role::Sandbox);
    assert_eq!(s.state, State::Running);
    assert_eq!(s.owner, owner);
    assert_eq!(s.name, labels::SANDBOX_NAME);
    assert_eq!(s.ip, Some(h.ip(1)), "the sandbox has the pod IP");
    assert!(s.started_at.is_some());

    let spec = h.container(&owner, "app", &Program::new(Run::Forever));
    let id = h.rt.create_container(&sb, &spec).await.expect("create");
    let c = h.rt.inspect(&id).await.expect("inspect created");
    assert_eq!(
        (c.role, c.state, c.exit_code),
        (Role::Container, State::Created, None)
    );
    assert_eq!((c.name.as_str(), c.attempt), ("app", 0));
    assert_eq!(c.owner, owner);
    assert_eq!(c.image, spec.image);
    assert_eq!(c.ip, None, "only sandboxes report the pod IP");
    let image_id = h.rt.image_id(&spec.image).await.expect("image_id");
    assert_eq!(
        Some(c.image_id.clone()),
        image_id,
        "the container runs the image's id"
    );
    assert!(c.image_id.starts_with("sha256:"), "{}", c.image_id);
    assert!(c.started_at.is_none());

    h.rt.start_container(&id).await.expect("start");
    h.wait_ready(&id).await;
    h.rt.start_container(&id)
        .await
        .expect("starting a running container succeeds");
    let c = h.rt.inspect(&id).await.expect("inspect running");
    assert_eq!((c.state, c.exit_code), (State::Running, None));
    assert!(c.started_at.is_some() && c.finished_at.is_none());

    h.rt.stop_container(&id, Duration::from_secs(10))
        .await
        .expect("stop");
    let c = h.rt.inspect(&id).await.expect("inspect stopped");
    assert_eq!((c.state, c.exit_code), (State::Exited, Some(143)));
    assert!(c.finished_at >= c.started_at && c.finished_at.is_some());
    h.rt.stop_container(&id, Duration::from_secs(10))
        .await
        .expect("stopping a stopped container succeeds");

    h.rt.remove_container(&id).await.expect("remove");
    assert!(matches!(
        h.rt.inspect(&id).await,
        Err(RuntimeError::NotFound(_))
    ));
    let listed = h.rt.list(&h.node).await.expect("list");
    assert_eq!(
        listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [sb.as_str()]
    );

    // The pause process ends on SIGTERM, with 0.
    h.rt.stop_container(&sb, Duration::from_secs(10))
        .await
        .expect("stop sandbox");
    let s = h.rt.inspect(&sb).await.expect("inspect stopped sandbox");
    assert_eq!((s.state, s.exit_code), (State::Exited, Some(0)));
    h.rt.remove_container(&sb).await.expect("remove sandbox");
    assert!(h.rt.list(&h.node).await.expect("list").is_empty());
}

async fn the_exit_code_is_seen_by_inspect_and_list(h: Harness) {
    let (owner, sb) = h.sandbox("job", 1).await;
    let p = Program::new(Run::ExitAfter(Duration::from_millis(300), 3));
    let id = h.run(&sb, &owner, "task", &p).await;
    let c = h
        .wait_for(&id, "the container exits", |c| c.state == State::Exited)
        .await;
    assert_eq!(c.exit_code, Some(3));
    assert!(!c.oom_killed);
    assert!(c.error.is_empty(), "{}", c.error);
    assert!(c.started_at.is_some() && c.finished_at >= c.started_at);
    let listed = h.rt.list(&h.node).await.expect("list");
    let l = listed.iter().find(|i| i.id == id).expect("listed");
    assert_eq!(
        (l.state, l.exit_code, l.role),
        (State::Exited, Some(3), Role::Container)
    );
    let s = listed.iter().find(|i| i.id == sb).expect("sandbox listed");
    assert_eq!((s.state, s.role), (State::Running, Role::Sandbox));
}

async fn a_missing_executable_fails_the_start(h: Harness) {
    let (owner, sb) = h.sandbox("broken", 1).await;
    let spec = h.container(&owner, "app", &Program::new(Run::MissingExecutable));
    let id =
        h.rt.create_container(&sb, &spec)
            .await
            .expect("create succeeds");
    match h.rt.start_container(&id).await {
        Err(RuntimeError::Refused(m)) => {
            assert!(m.contains("no such file or directory"), "{m}")
        }
        r => panic!("starting a missing executable must be refused, got {r:?}"),
    }
    let c = h.rt.inspect(&id).await.expect("inspect");
    assert_eq!(
        c.state,
        State::Exited,
        "a failed start reads as exited: {c:#?}"
    );
    assert_eq!(
        c.exit_code,
        Some(127),
        "the engine's code for a missing executable"
    );
    assert!(c.error.contains("no such file or directory"), "{}", c.error);
    assert_eq!(c.started_at, None, "it never ran");
}

async fn stop_sends_sigterm_first(h: Harness) {
    let (owner, sb) = h.sandbox("web", 1).await;
    let id = h.run(&sb, &owner, "app", &Program::new(Run::Forever)).await;
    let t0 = h.clock.instant();
    h.rt.stop_container(&id, Duration::from_secs(30))
        .await
        .expect("stop");
    let took = h.clock.instant() - t0;
    assert!(
        took < Duration::from_secs(5),
        "a SIGTERM-handling container stops at once: {took:?}"
    );
    let c = h.rt.inspect(&id).await.expect("inspect");
    assert_eq!(
        (c.state, c.exit_code),
        (State::Exited, Some(143)),
        "it ran its TERM handler"
    );
}

async fn stop_kills_what_ignores_sigterm_after_the_grace(h: Harness) {
    let (owner, sb) = h.sandbox("stubborn", 1).await;
    let mut p = Program::new(Run::Forever);
    p.exits_on_sigterm = false;
    let id = h.run(&sb, &owner, "app", &p).await;
    let grace = Duration::from_millis(1500);
    let t0 = h.clock.instant();
    h.rt.stop_container(&id, grace).await.expect("stop");
    let took = h.clock.instant() - t0;
    assert!(took >= grace, "SIGKILL only after the grace: {took:?}");
    assert!(
        took < grace + Duration::from_secs(5),
        "but soon after: {took:?}"
    );
    let c = h.rt.inspect(&id).await.expect("inspect");
    assert_eq!((c.state, c.exit_code), (State::Exited, Some(137)));
}

async fn removing_a_missing_container_succeeds(h: Harness) {
    h.rt.remove_container(MISSING_ID)
        .await
        .expect("removing a missing container succeeds");
    for (what, r) in [
        ("inspect", h.rt.inspect(MISSING_ID).await.map(|_| ())),
        ("start", h.rt.start_container(MISSING_ID).await),
        (
            "stop",
            h.rt.stop_container(MISSING_ID, Duration::from_secs(1))
                .await,
        ),
        (
            "logs",
            h.rt.logs(MISSING_ID, &LogOptions::default())
                .await
                .map(|_| ()),
        ),
    ] {
        assert!(
            matches!(&r, Err(RuntimeError::NotFound(id)) if id == MISSING_ID),
            "{what} of a missing container: {r:?}"
        );
    }
}

async fn list_shows_only_this_nodes_containers(h: Harness) {
    let (owner_a, sb_a) = h.sandbox("a", 1).await;
    let owner_b = h.owner_on(&h.node_b, "b");
    let sb_b =
        h.rt.run_sandbox(&h.sandbox_spec(&owner_b, h.ip(2)))
            .await
            .expect("sandbox on node b");
    let c_a = h
        .run(&sb_a, &owner_a, "app", &Program::new(Run::Forever))
        .await;
    let mut ids_a: Vec<String> =
        h.rt.list(&h.node)
            .await
            .expect("list a")
            .into_iter()
            .map(|i| i.id)
            .collect();
    ids_a.sort();
    let mut want = vec![sb_a.clone(), c_a.clone()];
    want.sort();
    assert_eq!(ids_a, want, "node a sees its sandbox and container only");
    let b = h.rt.list(&h.node_b).await.expect("list b");
    assert_eq!(b.len(), 1, "{b:#?}");
    assert_eq!((b[0].id.as_str(), &b[0].owner), (sb_b.as_str(), &owner_b));
    assert!(
        h.rt.list("conf-no-such-node")
            .await
            .expect("list")
            .is_empty()
    );
}

async fn a_taken_ip_is_refused(h: Harness) {
    let (_, _first) = h.sandbox("first", 1).await;
    let second = h.owner("second");
    match h.rt.run_sandbox(&h.sandbox_spec(&second, h.ip(1))).await {
        Err(RuntimeError::Refused(m)) => {
            assert!(m.to_lowercase().contains("address already in use"), "{m}")
        }
        r => panic!("a second sandbox at a taken IP must be refused, got {r:?}"),
    }
    let listed = h.rt.list(&h.node).await.expect("list");
    assert_eq!(
        listed.len(),
        1,
        "the refused sandbox leaves nothing behind: {listed:#?}"
    );
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

async fn a_taken_host_port_is_refused(h: Harness) {
    h.rt.ensure_network(&h.net).await.expect("network");
    let port = free_port();
    let with_port = |pod: &str, i: u8| {
        let mut s = h.sandbox_spec(&h.owner(pod), h.ip(i));
        s.host_ports = vec![HostPort {
            host_ip: "127.0.0.1".into(),
            host_port: port,
            container_port: 8080,
            protocol: Protocol::Tcp,
        }];
        s
    };
    h.rt.run_sandbox(&with_port("first", 1))
        .await
        .expect("first sandbox gets the port");
    match h.rt.run_sandbox(&with_port("second", 2)).await {
        Err(RuntimeError::Refused(m)) => assert!(m.contains(&port.to_string()), "{m}"),
        r => panic!("a second sandbox on a taken host port must be refused, got {r:?}"),
    }
    // UDP on the same number is another port.
    let mut udp = with_port("third", 3);
    udp.host_ports[0].protocol = Protocol::Udp;
    h.rt.run_sandbox(&udp)
        .await
        .expect("the same port number over UDP is free");
}

async fn a_missing_image_is_image_not_found(h: Harness) {
    let (owner, sb) = h.sandbox("web", 1).await;
    let image = format!("rudder-test/missing-{}:v1", h.n);
    assert_eq!(h.rt.image_id(&image).await.expect("image_id"), None);
    let mut spec = h.container(&owner, "app", &Program::new(Run::Forever));
    spec.image = image.clone();
    match h.rt.create_container(&sb, &spec).await {
        Err(RuntimeError::ImageNotFound { image: i, message }) => {
            assert_eq!(i, image);
            assert!(
                message.contains(&image),
                "the engine's message names it: {message}"
            );
        }
        r => panic!("a container of a missing image: {r:?}"),
    }
}

async fn pulling_an_unknown_image_fails(h: Harness) {
    // A registry on a closed loopback port: the pull fails at once, and stays on this host.
    let image = format!("127.0.0.1:1/rudder-test/nothing-{}:v1", h.n);
    match h.rt.pull(&image, None).await {
        Err(RuntimeError::PullFailed { image: i, message }) => {
            assert_eq!(i, image);
            assert!(!message.is_empty());
        }
        r => panic!("pulling an unknown image: {r:?}"),
    }
    assert_eq!(h.rt.image_id(&image).await.expect("image_id"), None);
}

async fn exec_returns_the_exit_code_and_output(h: Harness) {
    let (owner, sb) = h.sandbox("web", 1).await;
    let both = Script {
        stdout: "out".into(),
        stderr: "err".into(),
        code: 3,
    };
    let big = Script {
        stdout: "x".repeat(EXEC_OUTPUT_LIMIT + 5000),
        stderr: "tail".into(),
        code: 0,
    };
    let mut p = Program::new(Run::Forever);
    p.exec = vec![both.clone(), big.clone()];
    let id = h.run(&sb, &owner, "app", &p).await;
    let t = Duration::from_secs(10);
    let out = h.rt.exec(&id, &both.command(), t).await.expect("exec");
    assert_eq!(out.exit_code, 3);
    assert_eq!(
        String::from_utf8_lossy(&out.output),
        "outerr",
        "stdout then stderr"
    );
    let out = h.rt.exec(&id, &big.command(), t).await.expect("exec big");
    assert_eq!(out.exit_code, 0);
    assert_eq!(
        out.output,
        vec![b'x'; EXEC_OUTPUT_LIMIT],
        "output is cut at the limit"
    );

    h.rt.stop_container(&id, Duration::from_secs(10))
        .await
        .expect("stop");
    match h.rt.exec(&id, &both.command(), t).await {
        Err(RuntimeError::Refused(m)) => assert!(m.contains("is not running"), "{m}"),
        r => panic!("exec in a stopped container: {r:?}"),
    }
}

async fn logs_return_the_output(h: Harness) {
    let (owner, sb) = h.sandbox("web", 1).await;
    let lines = vec![
        (false, "one".into()),
        (true, "two".into()),
        (false, "three".into()),
    ];
    let id = h
        .run(&sb, &owner, "app", &Program::new(Run::Print(lines)))
        .await;
    h.wait_for(&id, "the printer exits", |c| c.state == State::Exited)
        .await;
    let all = read_logs(&h, &id, LogOptions::default()).await;
    assert_eq!(all, "one\ntwo\nthree\n", "stdout and stderr, in order");
    let last = LogOptions {
        tail: Some(2),
        ..LogOptions::default()
    };
    assert_eq!(read_logs(&h, &id, last).await, "two\nthree\n");
}

/// The whole log stream (it must end: not following, or the container exits).
async fn read_logs(h: &Harness, id: &str, opts: LogOptions) -> String {
    let mut s = h.rt.logs(id, &opts).await.expect("logs");
    let mut all = Vec::new();
    while let Some(chunk) = s.next().await {
        all.extend_from_slice(&chunk.expect("log chunk"));
    }
    String::from_utf8_lossy(&all).into_owned()
}

async fn a_stopped_sandbox_cannot_be_joined(h: Harness) {
    let (owner, sb) = h.sandbox("web", 1).await;
    h.rt.stop_container(&sb, Duration::from_secs(5))
        .await
        .expect("stop sandbox");
    let spec = h.container(&owner, "app", &Program::new(Run::Forever));
    match h.rt.create_container(&sb, &spec).await {
        Err(RuntimeError::Refused(m)) => assert!(m.contains("non running"), "{m}"),
        r => panic!("joining a stopped sandbox: {r:?}"),
    }
    match h.rt.create_container(MISSING_ID, &spec).await {
        Err(RuntimeError::Refused(_)) => {}
        r => panic!("joining a missing sandbox: {r:?}"),
    }
}

async fn exceeding_the_memory_limit_is_an_oom_kill(h: Harness) {
    let (owner, sb) = h.sandbox("hog", 1).await;
    let id = h
        .run(&sb, &owner, "app", &Program::new(Run::ExceedMemory))
        .await;
    let c = h
        .wait_for(&id, "the hog is killed", |c| c.state == State::Exited)
        .await;
    assert_eq!((c.exit_code, c.oom_killed), (Some(137), true), "{c:#?}");
}

#[path = "common/docker_only.rs"]
mod docker_only;
