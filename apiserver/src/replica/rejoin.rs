//! A member that starts on an empty data directory while its cluster already exists: its disk
//! was lost (or it is an initial member starting long after the others).
//!
//! Taking its old place as it stands would be unsafe. The member may have acknowledged entries
//! that a quorum counted on and that it no longer holds, and with an empty log it would vote
//! for any candidate, so a lagging member could win an election without those entries. The
//! leader would also see the member's log go back past what it had matched, which openraft
//! refuses by stopping the leader. So the member first has the leader remove it (committed
//! by the others), then starts Raft with no state, and has itself added again: it rejoins as a
//! learner, catches up (by snapshot when the log was purged), and only then votes. This is
//! what an operator does by hand for etcd (`member remove`, then `member add` on an empty
//! directory), done by the member itself.
//!
//! A new cluster's members all start empty too; they find no leader among their peers within
//! [`PROBE`] and bootstrap it together.

use std::time::{Duration, Instant};

use super::ReplicaConfig;
use super::network::{Forwarded, MemberChange, Network};

/// How long a member starting empty looks for the leader of an existing cluster before it
/// bootstraps a new one with its peers.
const PROBE: Duration = Duration::from_secs(3);

/// The Raft address of the peer that leads an existing cluster, if one answers within
/// [`PROBE`]: a peer answers a read-index request only while it leads.
pub async fn find_leader(network: &Network, replica: &ReplicaConfig) -> Option<String> {
    let until = Instant::now() + PROBE;
    while Instant::now() < until {
        for (id, addr) in &replica.members {
            if *id == replica.id {
                continue;
            }
            if let Ok(Forwarded::Applied(_)) = network.read_index(addr).await {
                return Some(addr.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Has the leader carry out `change`, retrying (and looking for the leader again, or for the
/// first time when `leader` is None) until it is committed; a change that cannot commit (no
/// quorum) is retried while saying why.
async fn until_done(
    network: &Network,
    replica: &ReplicaConfig,
    mut leader: Option<String>,
    change: MemberChange,
) {
    let mut attempts = 0u32;
    loop {
        if leader.is_none() {
            leader = find_leader(network, replica).await;
        }
        let answer = match &leader {
            Some(l) => network.change_members(l, &change).await,
            None => Err("no leader answers".into()),
        };
        if let Ok(Forwarded::Applied(index)) = answer {
            tracing::info!(?change, index, "membership change committed");
            return;
        }
        attempts += 1;
        if attempts % 5 == 1 {
            tracing::warn!(
                ?change,
                ?answer,
                "rejoining: the leader has not carried out the change yet; retrying"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        leader = None;
    }
}

/// The first half: the member is removed from the cluster before its Raft starts.
pub async fn leave(network: &Network, replica: &ReplicaConfig, leader: &str) {
    tracing::warn!(
        id = replica.id,
        leader,
        "this member's data directory is empty but its cluster exists: it rejoins by being removed and added again, then catches up from the leader"
    );
    let remove = MemberChange::Remove { id: replica.id };
    until_done(network, replica, Some(leader.to_string()), remove).await;
}

/// The second half, once this member's Raft serves: it is added again, as a learner until it
/// has caught up, then as a voter.
pub async fn return_as_voter(network: Network, replica: ReplicaConfig) {
    let Some(addr) = replica.members.get(&replica.id).cloned() else {
        tracing::error!(
            id = replica.id,
            "rejoining: this member is not in --raft-members"
        );
        return;
    };
    let change = MemberChange::Add {
        id: replica.id,
        addr,
        learner: false,
    };
    until_done(&network, &replica, None, change).await;
    tracing::info!(id = replica.id, "rejoined the cluster as a voter");
}
