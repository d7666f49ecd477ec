//! A follower whose disk is lost restarts on an empty directory under its old id: it finds the
//! cluster's leader, has itself removed and added again, catches up by snapshot, and then holds
//! exactly what the others hold and votes again.

use std::time::Duration;

use super::cluster::Cluster;
use super::{create_cm, holding};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_whose_disk_was_lost_rejoins_under_its_old_id() {
    let (mut cluster, leader, writer) = Cluster::snapshotting().await;
    for i in 0..400 {
        create_cm(&writer, &format!("before-{i}"))
            .await
            .expect("a write");
    }
    let lost = (leader + 1) % 3;
    cluster.wipe(lost);
    for i in 0..400 {
        create_cm(&writer, &format!("while-{i}"))
            .await
            .expect("a write with two of three up");
    }
    cluster.spawn(lost);
    let rv = cluster
        .converged(1, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails()));
    let status = cluster.raft_status(lost).await.expect("status");
    assert!(
        status.snapshot_index > 0,
        "the member caught up without a snapshot: {status:?}"
    );
    let voters: Vec<u64> = status
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    assert_eq!(
        voters,
        vec![1, 2, 3],
        "every member votes again: {status:?}"
    );
    let want = holding(&cluster.members[leader].client)
        .await
        .expect("list");
    let got = holding(&cluster.members[lost].client).await.expect("list");
    assert_eq!(
        got, want,
        "the rejoined member holds what the leader holds (at {rv})"
    );
}
