//! Reads on a follower are linearizable by default (read-index through the leader): a write
//! acknowledged by the leader is seen by a get on any follower issued after the acknowledgement.
//! A stale read is served locally when asked for. A client that knows every master moves its
//! writes to the leader.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rudder_client::Client;
use rudder_proto as pb;

use super::cluster::Cluster;
use super::{NS, kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_read_after_an_acknowledged_write_sees_it() {
    let cluster = Cluster::start(3);
    let leader = cluster
        .leader(Duration::from_secs(20))
        .await
        .expect("a leader");
    let writer = Client::new(&[cluster.members[leader].api.as_str()]).expect("client");
    let followers: Vec<&Client> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| &cluster.members[i].client)
        .collect();
    let create = |name: String| {
        let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {"v": "x"}});
        pb::CreateRequest {
            kind: kind(),
            namespace: NS.into(),
            json: Bytes::from(body.to_string()),
            options: None,
        }
    };
    let until = Instant::now() + Duration::from_secs(20);
    while writer.create(create("first".into())).await.is_err() {
        assert!(Instant::now() < until, "no write succeeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let get = |name: &str, allow_stale: bool| pb::GetRequest {
        kind: kind(),
        namespace: NS.into(),
        name: name.into(),
        allow_stale,
    };
    let mut stale_misses = 0;
    for i in 0..200 {
        let name = format!("r{i}");
        let rv = writer
            .create(create(name.clone()))
            .await
            .expect("write")
            .resource_version;
        let f = followers[i % 2];
        // A stale read first (it may miss), then the consistent one (it must not).
        if f.get(get(&name, true)).await.is_err() {
            stale_misses += 1;
        }
        let o = f.get(get(&name, false)).await.unwrap_or_else(|e| {
            panic!("follower missed {name} (rv {rv}) acknowledged before the read: {e}")
        });
        assert_eq!(o.resource_version, rv);
        let list = f
            .list(pb::ListRequest {
                kind: kind(),
                namespace: NS.into(),
                ..Default::default()
            })
            .await
            .expect("list");
        assert!(
            list.resource_version >= rv,
            "a consistent list at {} after a write at {rv}",
            list.resource_version
        );
    }
    eprintln!("stale reads that missed the write just acknowledged: {stale_misses} of 200");

    // A client knowing every master, starting at a follower, moves its writes to the leader.
    let mut addrs = cluster.api_addrs();
    addrs.rotate_left((leader + 1) % 3);
    let client = Client::new(&addrs).expect("client");
    assert_ne!(client.current_addr(), cluster.members[leader].api);
    for i in 0..3 {
        client
            .create(create(format!("lead{i}")))
            .await
            .expect("write");
    }
    assert_eq!(
        client.current_addr(),
        cluster.members[leader].api,
        "the client's writes did not move to the leader"
    );
}
