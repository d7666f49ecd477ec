//! Smoke test: the Rudder half of the benchmark at tiny scale against the debug
//! `rudder-apiserver`, to prove the harness works. Needs no etcd; takes a few seconds.

use std::path::PathBuf;

use rudder_bench::{Report, Scale};

/// `target/debug/rudder-apiserver`, beside the `deps/` directory this test runs from.
fn debug_server() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let target_profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = target_profile.join("rudder-apiserver");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p rudder-apiserver` (the smoke test runs the real server binary)",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rudder_half_runs_at_tiny_scale() {
    let bin = debug_server();
    let scale = Scale {
        seq_creates: 20,
        pods: 120,
        clients: 8,
        connections: 2,
        gets: 200,
        lists: 2,
        watchers: 3,
        watch_events: 20,
        watch_rate: 200,
    };
    let f = rudder_bench::rudder::run(&bin, &scale)
        .await
        .expect("benchmark phases");
    assert_eq!(f.create_1.ops, 20);
    assert_eq!(f.create_n.ops, 100);
    assert_eq!(f.get_n.ops, 200);
    assert_eq!(f.list_items, 120);
    assert!(f.create_1.per_sec() > 0.0 && f.create_n.per_sec() > 0.0);
    assert!(f.list.p50_ms > 0.0);
    assert!(f.rss_bytes > 1024 * 1024, "RSS {}", f.rss_bytes);
    assert_eq!(f.watch.delivered, 3 * 20, "every watcher saw every create");
    assert!(f.watch.latency.p99_ms > 0.0);

    let report = Report::new(&scale, &f, None);
    let text = report.render();
    assert!(text.contains("create/s, 8 clients"), "{text}");
    assert!(text.contains("RSS MiB at 120 pods"), "{text}");
}
