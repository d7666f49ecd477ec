//! What only a real engine shows: pod networking through the test server, container settings,
//! log options, stats, timeouts, interactive exec, and an engine that does not answer.
//!
//! A module of `runtime_conformance.rs` (its own file for length), using its harness.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rudder_client::clock::RealClock;
use rudder_node_agent::runtime::docker::{DockerRuntime, pause_image};
use rudder_node_agent::runtime::{
    ContainerRuntime, ExecChunk, HostPort, LogOptions, Mount, Protocol, Resources, RuntimeError,
    State,
};
use rudder_testkit::images;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::common::{Harness, Program, Run};
use super::{free_port, read_logs};

/// `GET path` over HTTP/1.1: status and body.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

/// `get` until the server answers 200 (it may still be starting).
async fn get_ok(addr: SocketAddr, path: &str) -> String {
    let mut last = None;
    for _ in 0..100 {
        match get(addr, path).await {
            Ok((200, body)) => return body,
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("GET http://{addr}{path}: no 200 within 10 s, last {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_network_hostname_dns_and_host_ports() {
    let h = Harness::docker("pod_network", 20).await;
    let server = tokio::task::spawn_blocking(images::test_server)
        .await
        .expect("test server image");
    h.rt.ensure_network(&h.net).await.expect("network");
    let owner = h.owner("web");
    let host_port = free_port();
    let mut sb_spec = h.sandbox_spec(&owner, h.ip(1));
    sb_spec.hostname = "web-0".into();
    sb_spec.host_ports = vec![HostPort {
        host_ip: "127.0.0.1".into(),
        host_port,
        container_port: 8080,
        protocol: Protocol::Tcp,
    }];
    sb_spec.extra_hosts = vec!["db.example:10.1.2.3".into()];
    sb_spec.dns_servers = vec!["10.213.20.53".into()];
    sb_spec.dns_search = vec!["conf.svc".into()];
    sb_spec.dns_options = vec!["ndots:3".into()];
    let sb = h.rt.run_sandbox(&sb_spec).await.expect("sandbox");
    let s = h.rt.inspect(&sb).await.expect("inspect sandbox");
    assert_eq!(s.image, pause_image());

    let spec = |name: &str, port: &str| {
        let mut c = h.container(&owner, name, &Program::new(Run::Forever));
        c.image = server.to_string();
        c.entrypoint = None;
        c.env = [("PORT", port), ("FOO", "1"), ("BAR", "x"), ("FOO", "bar")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec();
        c
    };
    for (name, port) in [("server", "8080"), ("side", "9090")] {
        let id =
            h.rt.create_container(&sb, &spec(name, port))
                .await
                .expect("create");
        h.rt.start_container(&id).await.expect("start");
    }
    let pod = |port: u16| SocketAddr::from((h.ip(1), port));
    assert_eq!(
        get_ok(pod(8080), "/hostname").await,
        "web-0",
        "the pod's hostname"
    );
    let env = get_ok(pod(8080), "/env").await;
    assert!(
        env.contains("FOO=bar\n") && !env.contains("FOO=1"),
        "later env wins: {env}"
    );
    let hosts = get_ok(pod(8080), "/file?path=/etc/hosts").await;
    assert!(hosts.contains("10.1.2.3\tdb.example"), "{hosts}");
    let resolv = get_ok(pod(8080), "/file?path=/etc/resolv.conf").await;
    for want in [
        "nameserver 10.213.20.53",
        "search conf.svc",
        "options ndots:3",
    ] {
        assert!(resolv.contains(want), "{want:?} in {resolv}");
    }
    // Containers of a pod share its loopback.
    let via_side = get_ok(
        pod(9090),
        "/fetch?addr=127.0.0.1:8080&path=/echo%3Fmsg%3Dlocal",
    )
    .await;
    assert_eq!(via_side, "local");
    let via_host = get_ok(
        SocketAddr::from(([127, 0, 0, 1], host_port)),
        "/echo?msg=hp",
    )
    .await;
    assert_eq!(via_host, "hp", "the host port reaches the pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_settings_reach_the_engine() {
    let h = Harness::docker("container_settings", 21).await;
    let (owner, sb) = h.sandbox("web", 1).await;
    let ro = tempfile::tempdir().expect("tempdir");
    let rw = tempfile::tempdir().expect("tempdir");
    std::fs::write(ro.path().join("data.txt"), "hello").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(rw.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut spec = h.container(&owner, "app", &Program::new(Run::Forever));
    spec.user = Some("1234:2345".into());
    spec.working_dir = Some("/mnt/rw".into());
    spec.read_only_rootfs = true;
    spec.mounts = vec![
        Mount {
            source: ro.path().into(),
            target: "/mnt/ro".into(),
            read_only: true,
        },
        Mount {
            source: rw.path().into(),
            target: "/mnt/rw".into(),
            read_only: false,
        },
    ];
    spec.resources = Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        memory_bytes: Some(64 << 20),
    };
    let id = h.rt.create_container(&sb, &spec).await.expect("create");
    h.rt.start_container(&id).await.expect("start");
    let other = h
        .run(&sb, &owner, "other", &Program::new(Run::Forever))
        .await;

    let t = Duration::from_secs(10);
    let sh = |c: &str| vec!["sh".to_string(), "-c".to_string(), c.to_string()];
    let run = |cid: String, c: &'static str| {
        let rt = h.rt.clone();
        async move {
            let out = rt
                .exec(&cid, &sh(c), t)
                .await
                .unwrap_or_else(|e| panic!("exec {c}: {e}"));
            (
                out.exit_code,
                String::from_utf8_lossy(&out.output).into_owned(),
            )
        }
    };
    assert_eq!(
        run(id.clone(), "id -u; id -g").await,
        (0, "1234\n2345\n".into())
    );
    assert_eq!(run(id.clone(), "pwd").await, (0, "/mnt/rw\n".into()));
    assert_eq!(
        run(id.clone(), "cat /mnt/ro/data.txt").await,
        (0, "hello".into())
    );
    let (code, out) = run(id.clone(), "touch /x").await;
    assert!(
        code != 0 && out.contains("Read-only file system"),
        "{code} {out}"
    );
    let (code, out) = run(id.clone(), "touch /mnt/ro/x").await;
    assert!(
        code != 0 && out.contains("Read-only file system"),
        "{code} {out}"
    );
    assert_eq!(run(id.clone(), "touch /mnt/rw/made").await.0, 0);
    assert!(
        rw.path().join("made").exists(),
        "the rw mount is the host directory"
    );
    assert_eq!(run(id.clone(), "hostname").await, (0, "web\n".into()));
    let ns = "readlink /proc/self/ns/net /proc/self/ns/ipc /proc/self/ns/uts";
    let (a, b) = (run(id.clone(), ns).await, run(other.clone(), ns).await);
    assert_eq!(
        a, b,
        "containers of a pod share network, IPC and UTS namespaces"
    );

    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.HostConfig.CpuShares}} {{.HostConfig.CpuQuota}} {{.HostConfig.CpuPeriod}} {{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}", &id])
        .output()
        .expect("docker inspect");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("512 50000 100000 {} no", 64 << 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_since_and_timestamps() {
    let h = Harness::docker("log_options", 22).await;
    let (owner, sb) = h.sandbox("web", 1).await;
    let lines = ["a", "b", "c"].map(|l| (false, l.to_string())).to_vec();
    let id = h
        .run(&sb, &owner, "printer", &Program::new(Run::Print(lines)))
        .await;
    h.wait_for(&id, "the printer exits", |c| c.state == State::Exited)
        .await;
    let stamped = read_logs(
        &h,
        &id,
        LogOptions {
            timestamps: true,
            ..LogOptions::default()
        },
    )
    .await;
    let stamps: Vec<jiff::Timestamp> = stamped
        .lines()
        .map(|l| {
            let (ts, _) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("no timestamp in {l:?}"));
            ts.parse()
                .unwrap_or_else(|e| panic!("timestamp {ts:?}: {e}"))
        })
        .collect();
    assert_eq!(stamps.len(), 3, "{stamped}");
    let since = LogOptions {
        since: Some(stamps[1]),
        ..LogOptions::default()
    };
    assert_eq!(
        read_logs(&h, &id, since).await,
        "b\nc\n",
        "since is exact, not whole seconds"
    );

    // Following: lines arrive while it runs, and the stream ends when it exits.
    let mut spec = h.container(&owner, "follow", &Program::new(Run::Forever));
    spec.entrypoint = Some(vec![
        "sh".into(),
        "-c".into(),
        "echo first; sleep 1.5; echo second".into(),
    ]);
    let fid = h.rt.create_container(&sb, &spec).await.expect("create");
    h.rt.start_container(&fid).await.expect("start");
    let follow = LogOptions {
        follow: true,
        ..LogOptions::default()
    };
    let mut s = h.rt.logs(&fid, &follow).await.expect("logs");
    let first = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("first line in time");
    assert_eq!(first.and_then(Result::ok).as_deref(), Some(&b"first\n"[..]));
    assert_eq!(
        h.rt.inspect(&fid).await.expect("inspect").state,
        State::Running,
        "streamed while running"
    );
    let rest = tokio::time::timeout(Duration::from_secs(10), s.collect::<Vec<_>>())
        .await
        .expect("the stream ends");
    let rest: Vec<u8> = rest
        .into_iter()
        .flat_map(|c| c.expect("chunk").to_vec())
        .collect();
    assert_eq!(rest, b"second\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_exec_timeout() {
    let h = Harness::docker("stats", 23).await;
    let (owner, sb) = h.sandbox("web", 1).await;
    let id = h.run(&sb, &owner, "app", &Program::new(Run::Forever)).await;
    let st = h.rt.stats(&id).await.expect("stats");
    assert!(
        st.cpu_usage_ns > 0 && st.memory_working_set_bytes > 0,
        "{st:?}"
    );
    let t0 = h.clock.instant();
    let cmd = ["sleep".to_string(), "5".to_string()];
    match h.rt.exec(&id, &cmd, Duration::from_millis(300)).await {
        Err(RuntimeError::Engine(m)) => assert!(m.contains("timed out"), "{m}"),
        r => panic!("an exec past its timeout: {r:?}"),
    }
    assert!(h.clock.instant() - t0 < Duration::from_secs(3));
    h.rt.stop_container(&id, Duration::from_secs(5))
        .await
        .expect("stop");
    assert!(matches!(
        h.rt.stats(&id).await,
        Err(RuntimeError::Refused(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_exec_streams_both_outputs_and_takes_stdin() {
    let h = Harness::docker("interactive_exec", 24).await;
    let (owner, sb) = h.sandbox("web", 1).await;
    let id = h.run(&sb, &owner, "app", &Program::new(Run::Forever)).await;
    let cmd: Vec<String> = ["sh", "-c", "read x; echo got $x; echo oops >&2; exit 4"]
        .map(String::from)
        .to_vec();
    let mut session =
        h.rt.exec_start(&id, &cmd, false, true)
            .await
            .expect("exec_start");
    let mut input = session.input.take().expect("stdin was asked for");
    input.write_all(b"abc\n").await.expect("write stdin");
    input.shutdown().await.expect("close stdin");
    let mut chunks = Vec::new();
    while let Some(c) = tokio::time::timeout(Duration::from_secs(10), session.output.next())
        .await
        .expect("output in time")
    {
        chunks.push(c.expect("chunk"));
    }
    // Each stream in order; between the two the engine keeps no order (two pipes).
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for c in chunks {
        match c {
            ExecChunk::Stdout(b) => out.extend_from_slice(&b),
            ExecChunk::Stderr(b) => err.extend_from_slice(&b),
        }
    }
    assert_eq!((&out[..], &err[..]), (&b"got abc\n"[..], &b"oops\n"[..]));
    let mut code = None;
    for _ in 0..100 {
        code =
            h.rt.exec_exit_code(&session.exec_id)
                .await
                .expect("exit code");
        if code.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, Some(4));

    // A terminal: one raw stream, resizable.
    let tty_cmd: Vec<String> = ["sh", "-c", "sleep 0.3; stty size"]
        .map(String::from)
        .to_vec();
    let mut session =
        h.rt.exec_start(&id, &tty_cmd, true, false)
            .await
            .expect("tty exec");
    assert!(session.input.is_none());
    h.rt.exec_resize(&session.exec_id, 100, 30)
        .await
        .expect("resize");
    let mut out = Vec::new();
    while let Some(c) = tokio::time::timeout(Duration::from_secs(10), session.output.next())
        .await
        .expect("output in time")
    {
        match c.expect("chunk") {
            ExecChunk::Stdout(b) => out.extend_from_slice(&b),
            ExecChunk::Stderr(b) => panic!("a terminal has no stderr: {b:?}"),
        }
    }
    assert_eq!(String::from_utf8_lossy(&out).trim(), "30 100");
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_unavailable() {
    for endpoint in ["/nonexistent/docker.sock", "http://127.0.0.1:1"] {
        match DockerRuntime::connect(Some(endpoint), RealClock::shared()).await {
            Err(RuntimeError::Unavailable(m)) => {
                assert!(m.contains(endpoint.trim_start_matches("http://")), "{m}")
            }
            r => panic!("connecting to {endpoint}: {:?}", r.map(|_| ())),
        }
    }
    let rt: Arc<dyn ContainerRuntime> = Arc::new(
        DockerRuntime::connect(None, RealClock::shared())
            .await
            .expect("the local engine"),
    );
    assert!(!rt.ping().await.expect("ping").is_empty());
}
