//! Master-to-master traffic: openraft's RPCs and forwarded writes over gRPC on the Raft port.
//!
//! One lazily connected HTTP/2 channel per peer address is shared by every RPC to it (openraft
//! opens a client per replication stream; they all multiplex over the one connection instead of
//! each dialling). A peer that cannot be reached is reported as `Unreachable`, so openraft backs
//! off instead of retrying at once and logging each failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rudder_proto as pb;
use rudder_proto::raft_client::RaftClient;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::codec::Batch;
use super::{RaftHandle, TypeConfig};

/// Channels to peers by address, shared by every client to the same peer.
#[derive(Clone, Default)]
pub struct Network {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Network {
    /// The channel to `addr`, connecting on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut m = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = m.get(addr) {
            return Ok(c.clone());
        }
        let c = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("peer address {addr}: {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        m.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Sends a batch of proposals to the leader at `addr`.
    pub async fn forward(&self, addr: &str, p: &Batch) -> Result<Forwarded, String> {
        let mut client = RaftClient::new(self.channel(addr)?)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let reply = client
            .forward(pb::RaftPayload {
                data: p.encode().into(),
            })
            .await
            .map_err(|s| format!("forwarding to the leader at {addr}: {}", s.message()))?;
        postcard::from_bytes(&reply.into_inner().data)
            .map_err(|e| format!("the leader's answer does not decode: {e}"))
    }

    /// Asks the leader at `addr` for the index a linearizable read must wait for.
    pub async fn read_index(&self, addr: &str) -> Result<Forwarded, String> {
        let mut client = RaftClient::new(self.channel(addr)?);
        let reply = client
            .read_index(pb::RaftPayload::default())
            .await
            .map_err(|s| {
                format!(
                    "asking the leader at {addr} for a read index: {}",
                    s.message()
                )
            })?;
        postcard::from_bytes(&reply.into_inner().data)
            .map_err(|e| format!("the leader's answer does not decode: {e}"))
    }
}

/// A membership change, as sent to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MemberChange {
    Add {
        id: u64,
        addr: String,
        learner: bool,
    },
    Remove {
        id: u64,
    },
}

impl Network {
    /// Asks the leader at `addr` to carry out `change`.
    pub async fn change_members(
        &self,
        addr: &str,
        change: &MemberChange,
    ) -> Result<Forwarded, String> {
        let data = postcard::to_allocvec(change).map_err(|e| e.to_string())?;
        let reply = RaftClient::new(self.channel(addr)?)
            .change_members(pb::RaftPayload { data: data.into() })
            .await
            .map_err(|s| {
                format!(
                    "asking the leader at {addr} to change members: {}",
                    s.message()
                )
            })?;
        postcard::from_bytes(&reply.into_inner().data)
            .map_err(|e| format!("the leader's answer does not decode: {e}"))
    }
}

/// Carries out `change` if this member leads: an added member first joins as a learner and
/// catches up (`add_learner` waits for it), then is promoted.
pub async fn change_members_here(raft: &RaftHandle, change: &MemberChange) -> Forwarded {
    use openraft::ChangeMembers;
    let not_leader = |e: &RaftError<u64, openraft::error::ClientWriteError<u64, BasicNode>>| {
        matches!(
            e,
            RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(_))
        )
    };
    let result = match change {
        MemberChange::Add { id, addr, learner } => {
            let node = BasicNode { addr: addr.clone() };
            match raft.add_learner(*id, node, true).await {
                Ok(r) if *learner => Ok(r),
                Ok(_) => {
                    raft.change_membership(ChangeMembers::AddVoterIds([*id].into()), false)
                        .await
                }
                Err(e) => Err(e),
            }
        }
        MemberChange::Remove { id } => {
            let voters: std::collections::BTreeSet<u64> = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            if voters.contains(id) {
                raft.change_membership(ChangeMembers::RemoveVoters([*id].into()), false)
                    .await
            } else {
                raft.change_membership(ChangeMembers::RemoveNodes([*id].into()), false)
                    .await
            }
        }
    };
    match result {
        Ok(r) => Forwarded::Applied(r.log_id.index),
        Err(e) if not_leader(&e) => Forwarded::NotLeader,
        Err(e) => Forwarded::Failed(e.to_string()),
    }
}

/// What the leader answers a forwarded write (the index it was applied at) or a read-index
/// request (the index a read must wait for).
#[derive(Debug, Serialize, Deserialize)]
pub enum Forwarded {
    /// The log index: where the change was applied, or what a read waits for.
    Applied(u64),
    /// Where each forwarded proposal went (its slot: log index << 16 | position), in order.
    Slots(Vec<u64>),
    /// The receiver is not the leader (any more).
    NotLeader,
    /// The write could not be committed.
    Failed(String),
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            target,
            channel: self.channel(&node.addr),
        }
    }
}

/// The connection to one peer.
pub struct Peer {
    target: u64,
    channel: Result<Channel, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Transport(String);

/// One of the Raft service's calls on a client.
type Rpc = fn(
    RaftClient<Channel>,
    pb::RaftPayload,
) -> futures::future::BoxFuture<
    'static,
    Result<tonic::Response<pb::RaftPayload>, tonic::Status>,
>;

impl Peer {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E>(
        &self,
        req: &Req,
        option: &RPCOption,
        which: Rpc,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self
            .channel
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&Transport(e))))?;
        let data = postcard::to_allocvec(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&Transport(e.to_string()))))?;
        let client = RaftClient::new(channel)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024);
        let call = which(client, pb::RaftPayload { data: data.into() });
        let reply = match tokio::time::timeout(option.hard_ttl(), call).await {
            Ok(Ok(r)) => r.into_inner().data,
            Ok(Err(s)) if s.code() == tonic::Code::Unavailable => {
                return Err(RPCError::Unreachable(Unreachable::new(&Transport(
                    s.message().to_string(),
                ))));
            }
            Ok(Err(s)) => {
                return Err(RPCError::Network(NetworkError::new(&Transport(
                    s.message().to_string(),
                ))));
            }
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(&Transport(
                    format!(
                        "no answer from member {} within {:?}",
                        self.target,
                        option.hard_ttl()
                    ),
                ))));
            }
        };
        let result: Result<Resp, RaftError<u64, E>> = postcard::from_bytes(&reply)
            .map_err(|e| RPCError::Network(NetworkError::new(&Transport(e.to_string()))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(&rpc, &option, |mut c, p| {
            Box::pin(async move { c.append_entries(p).await })
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(&rpc, &option, |mut c, p| {
            Box::pin(async move { c.install_snapshot(p).await })
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(&rpc, &option, |mut c, p| {
            Box::pin(async move { c.vote(p).await })
        })
        .await
    }
}

/// The Raft service a member serves to its peers.
#[derive(Clone)]
pub struct RaftService {
    raft: RaftHandle,
    /// Where forwarded writes join the leader's own batches.
    store: crate::store::Store,
}

impl RaftService {
    pub fn new(raft: RaftHandle, store: crate::store::Store) -> RaftService {
        RaftService { raft, store }
    }

    pub fn server(self) -> pb::raft_server::RaftServer<RaftService> {
        pb::raft_server::RaftServer::new(self)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024)
    }
}

fn decode<T: DeserializeOwned>(p: &pb::RaftPayload) -> Result<T, tonic::Status> {
    postcard::from_bytes(&p.data)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
    postcard::to_allocvec(v)
        .map(|d| tonic::Response::new(pb::RaftPayload { data: d.into() }))
        .map_err(|e| tonic::Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: tonic::Request<pb::RaftPayload>,
    ) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req.get_ref())?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        req: tonic::Request<pb::RaftPayload>,
    ) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
        let rpc: VoteRequest<u64> = decode(req.get_ref())?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<pb::RaftPayload>,
    ) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req.get_ref())?;
        encode(&self.raft.install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        req: tonic::Request<pb::RaftPayload>,
    ) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
        let p = Batch::decode(&req.get_ref().data)
            .map_err(|e| tonic::Status::invalid_argument(format!("forwarded write: {e}")))?;
        encode(&self.store.forwarded(p).await)
    }

    async fn read_index(
        &self,
        _req: tonic::Request<pb::RaftPayload>,
    ) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
        encode(&read_index_here(&self.raft).await)
    }

    async fn change_members(
        &self,
        req: tonic::Request<pb::RaftPayload>,
    ) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
        let change: MemberChange = decode(req.get_ref())?;
        encode(&change_members_here(&self.raft, &change).await)
    }
}

/// The read index, if this member leads: its commit position, confirmed by a quorum's
/// heartbeat answers (openraft's `get_read_log_id`).
pub async fn read_index_here(raft: &RaftHandle) -> Forwarded {
    match raft.get_read_log_id().await {
        Ok((read, _applied)) => Forwarded::Applied(read.map_or(0, |l| l.index)),
        Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(_))) => {
            Forwarded::NotLeader
        }
        Err(e) => Forwarded::Failed(e.to_string()),
    }
}
