//! A backup taken from a running cluster (through a follower) restores into an empty directory,
//! starts a new cluster holding exactly what was saved, takes writes at later versions, and
//! grows by adding a master; a damaged backup is refused with the reason.

use std::process::Command;
use std::time::{Duration, Instant};

use rudder_client::Client;
use rudder_proto as pb;

use super::cluster::Cluster;
use super::{create_cm, holding};

fn restore(file: &std::path::Path, dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rudder-apiserver"))
        .arg("--insecure-allow-all")
        .arg("--data-dir")
        .arg(dir)
        .arg("--restore-from")
        .arg(file)
        .arg("--restore-only")
        .output()
        .expect("running rudder-apiserver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_restores_into_a_new_working_cluster() {
    let old = Cluster::start(3);
    let leader = old.leader(Duration::from_secs(20)).await.expect("a leader");
    let all = Client::new(&old.api_addrs()).expect("client");
    let until = Instant::now() + Duration::from_secs(20);
    while create_cm(&all, "first").await.is_err() {
        assert!(Instant::now() < until, "no write succeeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..300 {
        create_cm(&all, &format!("k{i}")).await.expect("write");
    }
    let follower = (leader + 1) % 3;
    let backup = old.members[follower]
        .client
        .save_backup()
        .await
        .expect("a backup through a follower");
    let saved = holding(&old.members[leader].client).await.expect("list");
    assert_eq!(saved.len(), 301);
    drop(old);

    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("backup");
    std::fs::write(&file, &backup.data).expect("write the backup");
    let mut damaged = backup.data.to_vec();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    let bad = tmp.path().join("damaged");
    std::fs::write(&bad, &damaged).expect("write");
    let out = restore(&bad, &tmp.path().join("nowhere"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut new = Cluster::start_restored(&file);
    new.leader(Duration::from_secs(20))
        .await
        .expect("the restored master leads");
    let c = new.members[0].client.clone();
    let c = &c;
    let until = Instant::now() + Duration::from_secs(20);
    let rv = loop {
        match create_cm(c, "after-restore").await {
            Ok(rv) => break rv,
            Err(e) if Instant::now() > until => panic!("no write after restore: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(
        rv > backup.resource_version,
        "versions continue after the backup's {} (got {rv})",
        backup.resource_version
    );
    let mut restored = holding(c).await.expect("list");
    assert!(restored.remove("after-restore").is_some());
    assert_eq!(restored, saved, "the new cluster holds what was saved");

    // It grows: a second master joins and receives everything.
    let second = new.add_member(&["--raft-join"]);
    c.change_members(pb::ChangeMembersRequest {
        op: "add".into(),
        id: new.members[second].id,
        address: new.members[second].raft.clone(),
        learner: false,
    })
    .await
    .unwrap_or_else(|e| panic!("adding a master: {e}\n{}", new.log_tail(second)));
    new.converged(rv, Duration::from_secs(30))
        .await
        .expect("converged");
    assert_eq!(
        holding(&new.members[second].client)
            .await
            .expect("list")
            .len(),
        saved.len() + 1
    );
}
