//! A member that was down while the leader cut snapshots and purged its log catches up by
//! installing a snapshot, then holds exactly what the others hold, serves watches from the
//! snapshot's version on, and takes writes.

use std::time::{Duration, Instant};

use rudder_proto as pb;
use tokio_stream::StreamExt;

use super::cluster::Cluster;
use super::{NS, create_cm, holding, kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_behind_the_purged_log_catches_up_by_snapshot() {
    let (mut cluster, leader, writer) = Cluster::snapshotting().await;
    let lagging = (leader + 1) % 3;
    cluster
        .converged(1, Duration::from_secs(10))
        .await
        .expect("converged");
    let behind_at = cluster
        .raft_status(lagging)
        .await
        .expect("status")
        .applied_index;
    cluster.kill9(lagging);

    // Enough writes for several snapshots, so the leader's log no longer reaches the member.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let c = writer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..150 {
                create_cm(&c, &format!("s{w}-{i}"))
                    .await
                    .expect("write with a majority up");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let s = cluster.raft_status(leader).await.expect("leader status");
        if s.purged_index > behind_at + 1 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the leader never purged past {behind_at}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.spawn(lagging);
    let top = cluster.stats(leader).await.expect("stats").resource_version;
    let end = cluster
        .converged(top, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tail(lagging)));
    let s = cluster.raft_status(lagging).await.expect("status");
    assert!(
        s.snapshot_index > behind_at,
        "the member caught up without a snapshot (snapshot at {}, it was at {behind_at}); the test did not test install",
        s.snapshot_index
    );
    let want = holding(&cluster.members[leader].client)
        .await
        .expect("leader list");
    let got = holding(&cluster.members[lagging].client)
        .await
        .expect("member list");
    assert_eq!(want.len(), 1 + 8 * 150);
    assert_eq!(got, want, "the member installed a different state");

    // It serves a watch from the current version and sees a write made through it.
    let member = &cluster.members[lagging].client;
    let mut watch = member
        .watch(pb::WatchRequest {
            kind: kind(),
            namespace: NS.into(),
            resource_version: end,
            ..Default::default()
        })
        .await
        .expect("watch on the member");
    let rv = create_cm(member, "after")
        .await
        .expect("write through the member");
    assert!(rv > end);
    let ev = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event")
        .expect("stream open")
        .expect("event");
    let o = ev.object.expect("object");
    assert_eq!((o.name.as_str(), o.resource_version), ("after", rv));

    // And it restarts from its own disk after the install, holding the same.
    cluster.kill9(lagging);
    cluster.spawn(lagging);
    cluster
        .converged(rv, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("after restart: {e}\n{}", cluster.log_tail(lagging)));
    let again = holding(&cluster.members[lagging].client)
        .await
        .expect("member list");
    assert_eq!(again.len(), want.len() + 1);
}
