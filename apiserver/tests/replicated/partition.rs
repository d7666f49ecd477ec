//! Masters on separate hosts: each in its own network namespace, joined by a bridge in a
//! "switch" namespace that the test's own namespace also reaches over a veth pair. Under a
//! stream of writes the leader is cut off from the other two (the test's clients still reach
//! it), the partition heals, and a follower loses its disk and rejoins on an empty one by
//! snapshot. The checker then verifies the whole history, as after the process kills.
//!
//! Needs root, `ip` and `nft` (installed by `.ci/run`); fails loudly without them.

use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rudder_proto as pb;

use super::cluster::Cluster;
use super::workload::{self, Workload};
use super::{NS, kind, seed};

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn sh(args: &[&str]) {
    run(args).unwrap_or_else(|e| panic!("setting up the hosts: {e}"));
}

/// The namespaces, bridge and addresses; all removed on drop, also when a test fails.
struct Hosts {
    prefix: String,
    subnet: String,
    n: usize,
}

impl Hosts {
    fn new(n: usize) -> Hosts {
        for tool in ["ip", "nft"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "this test needs `{tool}` (iproute2, nftables) and root"
            );
        }
        let pid = std::process::id();
        let prefix = format!("rr{}", pid % 100_000);
        // A /24 no route on this machine uses yet.
        let routes = Command::new("ip")
            .args(["-4", "route", "show", "table", "all"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let third = (0..250u32)
            .map(|k| (pid + k) % 250)
            .find(|t| !routes.contains(&format!("10.229.{t}.")))
            .expect("a free 10.229.x.0/24");
        let hosts = Hosts {
            prefix,
            subnet: format!("10.229.{third}"),
            n,
        };
        let sw = hosts.switch();
        sh(&["ip", "netns", "add", &sw]);
        sh(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let ns = hosts.ns(i);
            let port = format!("p{i}");
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            sh(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            let addr = format!("{}/24", hosts.ip(i));
            sh(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        // The test's own way in.
        let host_if = hosts.host_if();
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "up0", "netns", &sw,
        ]);
        sh(&["ip", "-n", &sw, "link", "set", "up0", "master", "br0", "up"]);
        let addr = format!("{}.254/24", hosts.subnet);
        sh(&["ip", "addr", "add", &addr, "dev", &host_if]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        hosts
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}-m{i}", self.prefix)
    }

    fn host_if(&self) -> String {
        format!("{}h", self.prefix)
    }

    fn ip(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// (namespace, address) of each host, for [`Cluster::start_in`].
    fn members(&self) -> Vec<(String, String)> {
        (1..=self.n).map(|i| (self.ns(i), self.ip(i))).collect()
    }

    /// Cuts host `i` (1-based) off from the other hosts, both ways; the test still reaches it.
    fn cut_off(&self, i: usize) {
        let others: Vec<String> = (1..=self.n)
            .filter(|j| *j != i)
            .map(|j| self.ip(j))
            .collect();
        let set = others.join(", ");
        let rules = format!(
            "table inet rudder_cut {{
               chain in {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}
               chain out {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}
             }}"
        );
        let file = std::env::temp_dir().join(format!("{}-cut.nft", self.prefix));
        std::fs::write(&file, rules).expect("writing the rules");
        let path = file.display().to_string();
        sh(&["ip", "netns", "exec", &self.ns(i), "nft", "-f", &path]);
        let _ = std::fs::remove_file(file);
    }

    fn heal(&self, i: usize) {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns(i),
            "nft",
            "delete",
            "table",
            "inet",
            "rudder_cut",
        ]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.host_if()]);
        for i in 1..=self.n {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = run(&["ip", "netns", "del", &self.switch()]);
    }
}

/// The member other than `old` that leads, waiting up to `limit`.
async fn new_leader(cluster: &Cluster, old: usize, limit: Duration) -> Option<usize> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        for i in (0..cluster.members.len()).filter(|i| *i != old) {
            if cluster
                .raft_status(i)
                .await
                .is_some_and(|s| s.role == "Leader")
            {
                return Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_leader_and_a_wiped_member_lose_no_acknowledged_write() {
    let seed = seed();
    eprintln!("seed {seed} (replay with RUDDER_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let hosts = Hosts::new(3);
    // Frequent snapshots, so the wiped member's catch-up needs one.
    let flags = [
        "--raft-snapshot-every",
        "500",
        "--raft-keep-after-snapshot",
        "100",
    ];
    let mut cluster = Cluster::start_in(&hosts.members(), &flags);
    let leader = cluster
        .leader(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("no leader; logs:\n{}", cluster.log_tails()));
    let start_rv = workload::ready(&cluster).await;
    let load = Workload::start(&cluster.api_addrs(), leader, start_rv, seed, &mut rng);
    tokio::time::sleep(Duration::from_millis(rng.random_range(800..1500))).await;

    // 1. The leader is cut off from the other two; they elect a leader and writes resume.
    hosts.cut_off(leader + 1);
    let cut_at = Instant::now();
    let resumed = load
        .resumed(cut_at, 8, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| {
            panic!(
                "seed {seed}: writes did not resume after the leader was cut off; logs:\n{}",
                cluster.log_tails()
            )
        });
    let majority_leader = new_leader(&cluster, leader, Duration::from_secs(10))
        .await
        .expect("the majority elects a leader");
    eprintln!(
        "writes resumed {resumed:?} after the leader was cut off; member {} leads the majority",
        cluster.members[majority_leader].id
    );
    // A consistent read through the cut-off member never answers from its stale state: a
    // write the majority acknowledged since is found, or the read fails.
    let name = "after-the-cut";
    let majority = &cluster.members[majority_leader].client;
    super::create_cm(majority, name)
        .await
        .expect("a write through the majority's leader");
    let stale = cluster.members[leader]
        .client
        .get(pb::GetRequest {
            kind: kind(),
            namespace: NS.into(),
            name: name.into(),
            allow_stale: false,
        })
        .await;
    assert!(
        !matches!(stale, Err(rudder_client::ClientError::NotFound(_))),
        "seed {seed}: the cut-off member answered a consistent read from stale state: {stale:?}"
    );
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..2000))).await;

    // 2. The partition heals; the old leader follows the new one.
    hosts.heal(leader + 1);
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..2000))).await;

    // 3. A follower loses its disk and rejoins on an empty one, by snapshot.
    let follower = cluster.random_follower(&mut rng).await;
    cluster.wipe(follower);
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..1000))).await;
    cluster.spawn(follower);
    tokio::time::sleep(Duration::from_millis(rng.random_range(1500..2500))).await;

    load.finish(&cluster).await;
    let status = cluster
        .raft_status(follower)
        .await
        .expect("the wiped member's status");
    assert!(
        status.snapshot_index > 0,
        "seed {seed}: the wiped member caught up without a snapshot ({status:?})"
    );
}
