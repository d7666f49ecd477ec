//! A member restarted from its own disk keeps the watch history it had: it rebuilds it from
//! its snapshot and log, so a watch resuming there from a version before the restart gets the
//! changes after it instead of having to relist.

use std::time::Duration;

use rudder_proto as pb;
use tokio_stream::StreamExt;

use super::cluster::Cluster;
use super::{NS, create_cm, kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_member_serves_watches_from_before_its_restart() {
    let (mut cluster, leader, writer) = Cluster::snapshotting().await;
    // One write per log entry: a snapshot near entry 300, the next not before 600, so the mark
    // and what follows are in the log after the snapshot.
    for i in 0..350 {
        create_cm(&writer, &format!("early-{i}"))
            .await
            .expect("write");
    }
    let from = create_cm(&writer, "mark").await.expect("write");
    for i in 0..100 {
        create_cm(&writer, &format!("late-{i}"))
            .await
            .expect("write");
    }
    let end = cluster
        .converged(from + 100, Duration::from_secs(20))
        .await
        .expect("converged");
    let status = cluster.raft_status((leader + 1) % 3).await.expect("status");
    assert!(
        status.snapshot_index > 0 && status.snapshot_index < status.applied_index,
        "the member has a snapshot, and log after it: {status:?}"
    );
    let member = (leader + 1) % 3;
    // Let the engine checkpoint past `from`, so only a rebuilt history can serve it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill9(member);
    cluster.spawn(member);
    cluster
        .converged(end, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tail(member)));
    let stream = cluster.members[member]
        .client
        .watch(pb::WatchRequest {
            kind: kind(),
            namespace: NS.into(),
            resource_version: from,
            ..Default::default()
        })
        .await;
    let mut stream = stream.unwrap_or_else(|e| panic!("watch from {from}: {e}"));
    let mut names = Vec::new();
    while names.len() < 100 {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
        let ev = match next {
            Ok(Some(Ok(ev))) => ev,
            other => panic!(
                "the watch from {from} ended after {} events: {other:?}\n{}",
                names.len(),
                cluster.log_tail(member)
            ),
        };
        assert_ne!(
            pb::EventType::try_from(ev.r#type),
            Ok(pb::EventType::Error),
            "the restarted member refused a watch from {from} (before its restart): {:?}",
            ev.error
        );
        if let Some(o) = ev.object {
            assert!(o.resource_version > from);
            names.push(o.name);
        }
    }
    let want: Vec<String> = (0..100).map(|i| format!("late-{i}")).collect();
    assert_eq!(names, want, "every change after {from}, once, in order");
}
