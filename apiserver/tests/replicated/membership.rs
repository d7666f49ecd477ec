//! Membership at run time: a fourth master started with `--raft-join` is added through a
//! follower (which forwards the change to the leader), catches up by snapshot and holds what the
//! others hold; a removed master receives no more writes while the rest go on.

use std::time::{Duration, Instant};

use rudder_client::Client;
use rudder_proto as pb;

use super::cluster::Cluster;
use super::{create_cm, holding};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_added_at_run_time_catches_up_and_a_removed_one_gets_no_more_writes() {
    let mut cluster = Cluster::start_with(
        3,
        &[
            "--raft-snapshot-every",
            "200",
            "--raft-keep-after-snapshot",
            "20",
        ],
    );
    let leader = cluster
        .leader(Duration::from_secs(20))
        .await
        .expect("a leader");
    let all = Client::new(&cluster.api_addrs()).expect("client");
    let until = Instant::now() + Duration::from_secs(20);
    while create_cm(&all, "first").await.is_err() {
        assert!(Instant::now() < until, "no write succeeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..600 {
        create_cm(&all, &format!("a{i}")).await.expect("write");
    }

    // A fourth master joins: it is started with --raft-join, then added through a follower.
    let new = cluster.add_member(&["--raft-join"]);
    let follower = (leader + 1) % 3;
    let status = cluster.members[follower]
        .client
        .change_members(pb::ChangeMembersRequest {
            op: "add".into(),
            id: cluster.members[new].id,
            address: cluster.members[new].raft.clone(),
            learner: false,
        })
        .await
        .unwrap_or_else(|e| panic!("adding member 4: {e}\n{}", cluster.log_tail(new)));
    let m4 = status
        .members
        .iter()
        .find(|m| m.id == 4)
        .expect("member 4 listed");
    assert!(m4.voter, "member 4 became a voter: {status:?}");
    let top = create_cm(&all, "after-add").await.expect("write");
    cluster
        .converged(top, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tail(new)));
    let s4 = cluster.raft_status(new).await.expect("member 4 status");
    assert!(
        s4.snapshot_index > 0,
        "member 4 caught up without a snapshot although the log was purged: {s4:?}"
    );
    let want = holding(&cluster.members[leader].client)
        .await
        .expect("list");
    assert_eq!(want.len(), 602);
    assert_eq!(
        holding(&cluster.members[new].client).await.expect("list"),
        want
    );

    // A voter is removed: the others go on, it hears of no write after its removal.
    let gone = (leader + 2) % 3;
    let gone_id = cluster.members[gone].id;
    all.change_members(pb::ChangeMembersRequest {
        op: "remove".into(),
        id: gone_id,
        ..Default::default()
    })
    .await
    .expect("removing a member");
    let listed = cluster.members[leader]
        .client
        .members()
        .await
        .expect("members");
    assert!(
        listed.members.iter().all(|m| m.id != gone_id),
        "member {gone_id} still listed: {listed:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frozen = cluster
        .raft_status(gone)
        .await
        .expect("the removed member still answers")
        .applied_index;
    let rest: Vec<String> = (0..4)
        .filter(|i| *i != gone)
        .map(|i| cluster.members[i].api.clone())
        .collect();
    let writer = Client::new(&rest).expect("client");
    let mut last = 0;
    for i in 0..50 {
        last = create_cm(&writer, &format!("b{i}"))
            .await
            .expect("write without the removed member");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = cluster
        .raft_status(gone)
        .await
        .expect("the removed member answers")
        .applied_index;
    assert_eq!(
        after, frozen,
        "the removed member kept applying writes ({frozen} -> {after}, cluster at {last})"
    );
    cluster.kill9(gone);
    for i in (0..4).filter(|i| *i != gone) {
        assert!(cluster.stats(i).await.expect("stats").resource_version >= last);
    }
}
