//! Replication between API servers with Raft (openraft 0.9, storage v2).
//!
//! The log holds *commands* ([`codec::Batch`] of [`codec::Proposal`]s: each an admitted write
//! and a request id); every member applies the committed commands with the same deterministic
//! state machine ([`crate::store`]'s machine). `resourceVersion` counts the successful writes
//! in log order, so it is the same on every member (as etcd's revision).
//!
//! - [`codec`]: the versioned command format.
//! - [`logstore`]: openraft's log storage over the crash-tested [`crate::raft::RaftLog`].
//! - [`network`]: master-to-master calls over a transport (gRPC on the Raft port), and
//!   forwarding of writes.
//! - [`rejoin`]: a member on an empty directory rejoins an existing cluster safely.
//! - `sim` (tests): the seeded simulation of a cluster on an in-process network and crashing disks.
//!
//! A member is configured with its id, the address its peers reach its Raft port at, and the
//! initial members ([`ReplicaConfig`]). A member starting with an empty log and no vote proposes
//! the initial membership (openraft's `initialize`; every member may, as they propose the same
//! one); a member with a log rejoins from its own disk.

pub mod codec;
pub mod logstore;
pub mod network;
pub mod rejoin;
#[cfg(test)]
mod sim;

use std::collections::BTreeMap;
use std::io::Cursor;

use openraft::BasicNode;

use self::codec::Batch;

openraft::declare_raft_types!(
    /// Rudder's Raft types: commands in, nothing out (a proposer reads its result from the
    /// state machine on its own member).
    pub TypeConfig:
        D = Batch,
        R = (),
);

pub type RaftHandle = openraft::Raft<TypeConfig>;

/// This member's place in a replicated cluster.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This member's id (non-zero, unique in the cluster, never reused).
    pub id: u64,
    /// The initial members by id, with the address of each one's Raft port (this member's
    /// included). Used only to bootstrap a new cluster.
    pub members: BTreeMap<u64, String>,
    /// Raft timing, in milliseconds.
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// A snapshot is cut after this many log entries, and the log before it purged (keeping
    /// [`ReplicaConfig::keep_after_snapshot`] entries for followers slightly behind).
    pub snapshot_every: u64,
    pub keep_after_snapshot: u64,
    /// A new member joining a running cluster: it never bootstraps one, and waits to be added
    /// (`rudder admin members add`).
    pub join: bool,
}

impl ReplicaConfig {
    pub fn new(id: u64, members: BTreeMap<u64, String>) -> ReplicaConfig {
        ReplicaConfig {
            id,
            members,
            heartbeat_ms: 100,
            election_timeout_ms: (400, 800),
            snapshot_every: 20_000,
            keep_after_snapshot: 5_000,
            join: false,
        }
    }

    pub(crate) fn openraft(&self) -> Result<openraft::Config, String> {
        openraft::Config {
            cluster_name: "rudder".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms.0,
            election_timeout_max: self.election_timeout_ms.1,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            max_payload_entries: 2000,
            // A snapshot travels in chunks, each of which must arrive within this; openraft's
            // 200 ms default is less than a 3 MiB chunk takes between loaded hosts, and a late
            // chunk restarts the whole transfer, so a large snapshot never arrived.
            install_snapshot_timeout: 10_000,
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("raft settings: {e}"))
    }

    pub(crate) fn nodes(&self) -> BTreeMap<u64, BasicNode> {
        self.members
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect()
    }
}

/// What a member reports of its place in the cluster (the Admin service's stats).
pub fn status(raft: &RaftHandle) -> rudder_proto::RaftStatus {
    let m = raft.metrics().borrow().clone();
    let last = m.last_log_index.unwrap_or(0);
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).copied().flatten())
                .map(|l| l.index);
            rudder_proto::RaftMember {
                id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
                matched_index: matched.unwrap_or(0),
                lag: matched.map_or(0, |i| last.saturating_sub(i)),
            }
        })
        .collect();
    rudder_proto::RaftStatus {
        id: m.id,
        role: format!("{:?}", m.state),
        term: m.current_term,
        leader: m.current_leader.unwrap_or(0),
        last_log_index: last,
        applied_index: m.last_applied.map_or(0, |l| l.index),
        snapshot_index: m.snapshot.map_or(0, |l| l.index),
        purged_index: m.purged.map_or(0, |l| l.index),
        members,
    }
}

/// Parses `--raft-members`: `ID=HOST:PORT` separated by commas.
pub fn parse_members(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("--raft-members: {part:?} is not ID=HOST:PORT"))?;
        let id: u64 =
            id.parse().ok().filter(|i| *i > 0).ok_or_else(|| {
                format!("--raft-members: member id {id:?} is not a positive number")
            })?;
        if addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
            return Err(format!("--raft-members: {addr:?} is not HOST:PORT"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(format!("--raft-members: member id {id} is listed twice"));
        }
    }
    if out.is_empty() {
        return Err("--raft-members: no members listed".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_bad_ones_are_named() {
        let m = parse_members("1=10.0.0.1:7000, 2=10.0.0.2:7000,3=m3:7000").expect("parses");
        assert_eq!(m.len(), 3);
        assert_eq!(m[&3], "m3:7000");
        assert!(parse_members("0=a:1").unwrap_err().contains("positive"));
        assert!(parse_members("1=a:1,1=b:2").unwrap_err().contains("twice"));
        assert!(parse_members("1").unwrap_err().contains("ID=HOST:PORT"));
        assert!(parse_members("").unwrap_err().contains("no members"));
    }
}
