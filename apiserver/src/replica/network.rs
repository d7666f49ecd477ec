//! Master-to-master traffic: openraft's RPCs and forwarded writes, over a [`Transport`].
//!
//! In production the transport is gRPC on the Raft port ([`Grpc`]): one lazily connected HTTP/2
//! channel per peer address is shared by every RPC to it (openraft opens a client per
//! replication stream; they all multiplex over the one connection instead of each dialling). The
//! simulation tests put an in-process network with injected loss and partitions in its place.
//! A peer that cannot be reached is reported as `Unreachable`, so openraft backs off instead of
//! retrying at once and logging each failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
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

/// The calls of the Raft service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Forward,
    ReadIndex,
    ChangeMembers,
}

/// Why a call brought no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The peer could not be reached, or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// The peer refused the call.
    #[error("{0}")]
    Failed(String),
}

/// How a member reaches its peers: sends one encoded call to the member at `addr` and returns
/// its encoded answer, giving up after `timeout`.
pub trait Transport: Send + Sync + 'static {
    fn call(
        &self,
        addr: &str,
        call: Call,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, CallError>>;
}

/// gRPC on the Raft port: channels to peers by address, shared by every call to the same peer.
#[derive(Clone, Default)]
pub struct Grpc {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Grpc {
    /// The channel to `addr`, connecting on first use.
    fn channel(&self, addr: &str) -> Result<Channel, String> {
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
}

/// Raft messages (snapshots included) and forwarded batches may be large.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

impl Transport for Grpc {
    fn call(
        &self,
        addr: &str,
        call: Call,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, CallError>> {
        let channel = self.channel(addr);
        let addr = addr.to_string();
        Box::pin(async move {
            let mut c = RaftClient::new(channel.map_err(CallError::Unreachable)?)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            let req = pb::RaftPayload { data: payload };
            let sent = async {
                match call {
                    Call::AppendEntries => c.append_entries(req).await,
                    Call::Vote => c.vote(req).await,
                    Call::InstallSnapshot => c.install_snapshot(req).await,
                    Call::Forward => c.forward(req).await,
                    Call::ReadIndex => c.read_index(req).await,
                    Call::ChangeMembers => c.change_members(req).await,
                }
            };
            match tokio::time::timeout(timeout, sent).await {
                Ok(Ok(r)) => Ok(r.into_inner().data),
                Ok(Err(s)) if s.code() == tonic::Code::Unavailable => {
                    Err(CallError::Unreachable(s.message().to_string()))
                }
                Ok(Err(s)) => Err(CallError::Failed(s.message().to_string())),
                Err(_) => Err(CallError::Unreachable(format!(
                    "no answer from {addr} within {timeout:?}"
                ))),
            }
        })
    }
}

/// A member's way to its peers, over some [`Transport`].
#[derive(Clone)]
pub struct Network {
    transport: Arc<dyn Transport>,
}

impl Default for Network {
    fn default() -> Self {
        Network::new(Arc::new(Grpc::default()))
    }
}

/// How long a forwarded write may take: the leader answers once its batch is committed.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);
/// A membership change waits for an added member to catch up, perhaps by snapshot.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(130);

impl Network {
    pub fn new(transport: Arc<dyn Transport>) -> Network {
        Network { transport }
    }

    /// Sends `call` to the leader at `addr` and decodes its answer; `what` names the call in
    /// errors.
    async fn ask_leader(
        &self,
        addr: &str,
        call: Call,
        data: Bytes,
        timeout: Duration,
        what: &str,
    ) -> Result<Forwarded, String> {
        let reply = self
            .transport
            .call(addr, call, data, timeout)
            .await
            .map_err(|e| format!("{what} at {addr}: {e}"))?;
        postcard::from_bytes(&reply)
            .map_err(|e| format!("the leader's answer does not decode: {e}"))
    }

    /// Sends a batch of proposals to the leader at `addr`.
    pub async fn forward(&self, addr: &str, p: &Batch) -> Result<Forwarded, String> {
        let data = p.encoded().clone();
        self.ask_leader(
            addr,
            Call::Forward,
            data,
            FORWARD_TIMEOUT,
            "forwarding to the leader",
        )
        .await
    }

    /// Asks the leader at `addr` for the index a linearizable read must wait for.
    pub async fn read_index(&self, addr: &str) -> Result<Forwarded, String> {
        let timeout = Duration::from_secs(5);
        self.ask_leader(
            addr,
            Call::ReadIndex,
            Bytes::new(),
            timeout,
            "asking the leader for a read index",
        )
        .await
    }

    /// Asks the leader at `addr` to carry out `change`.
    pub async fn change_members(
        &self,
        addr: &str,
        change: &MemberChange,
    ) -> Result<Forwarded, String> {
        let data = postcard::to_allocvec(change).map_err(|e| e.to_string())?;
        let what = "asking the leader to change members";
        self.ask_leader(addr, Call::ChangeMembers, data.into(), CHANGE_TIMEOUT, what)
            .await
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
            let (voters, gone, applied) = {
                let m = raft.metrics();
                let m = m.borrow();
                let membership = m.membership_config.membership();
                let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
                let leads = m.current_leader == Some(m.id);
                let gone = leads && membership.get_node(id).is_none();
                (voters, gone, m.last_applied.map_or(0, |l| l.index))
            };
            // Removing a member that is gone already is done (a retried removal).
            if gone {
                return Forwarded::Applied(applied);
            }
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
            addr: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

/// The connection to one peer.
pub struct Peer {
    target: u64,
    addr: String,
    transport: Arc<dyn Transport>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl Peer {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E>(
        &self,
        req: &Req,
        option: &RPCOption,
        which: Call,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let network = |e: String| RPCError::Network(NetworkError::new(&TransportError(e)));
        let data = postcard::to_allocvec(req).map_err(|e| network(e.to_string()))?;
        let reply = match self
            .transport
            .call(&self.addr, which, data.into(), option.hard_ttl())
            .await
        {
            Ok(r) => r,
            Err(CallError::Unreachable(e)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(
                    format!("member {}: {e}", self.target),
                ))));
            }
            Err(CallError::Failed(e)) => return Err(network(e)),
        };
        let result: Result<Resp, RaftError<u64, E>> =
            postcard::from_bytes(&reply).map_err(|e| network(e.to_string()))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(&rpc, &option, Call::AppendEntries).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(&rpc, &option, Call::InstallSnapshot).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(&rpc, &option, Call::Vote).await
    }
}

/// The Raft service a member serves to its peers.
#[derive(Clone)]
pub struct RaftService {
    raft: RaftHandle,
    /// Where forwarded writes join the leader's own batches.
    store: crate::store::Store,
}

fn decode<T: DeserializeOwned>(p: &[u8]) -> Result<T, tonic::Status> {
    postcard::from_bytes(p)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Bytes, tonic::Status> {
    postcard::to_allocvec(v)
        .map(Bytes::from)
        .map_err(|e| tonic::Status::internal(e.to_string()))
}

impl RaftService {
    pub fn new(raft: RaftHandle, store: crate::store::Store) -> RaftService {
        RaftService { raft, store }
    }

    pub fn server(self) -> pb::raft_server::RaftServer<RaftService> {
        pb::raft_server::RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Answers one call, whatever carried it.
    pub async fn handle(&self, call: Call, payload: &[u8]) -> Result<Bytes, tonic::Status> {
        match call {
            Call::AppendEntries => {
                let rpc: AppendEntriesRequest<TypeConfig> = decode(payload)?;
                encode(&self.raft.append_entries(rpc).await)
            }
            Call::Vote => {
                let rpc: VoteRequest<u64> = decode(payload)?;
                encode(&self.raft.vote(rpc).await)
            }
            Call::InstallSnapshot => {
                let rpc: InstallSnapshotRequest<TypeConfig> = decode(payload)?;
                encode(&self.raft.install_snapshot(rpc).await)
            }
            Call::Forward => {
                let p = Batch::decode(payload).map_err(|e| {
                    tonic::Status::invalid_argument(format!("forwarded write: {e}"))
                })?;
                encode(&self.store.forwarded(p).await)
            }
            Call::ReadIndex => encode(&read_index_here(&self.raft).await),
            Call::ChangeMembers => {
                let change: MemberChange = decode(payload)?;
                encode(&change_members_here(&self.raft, &change).await)
            }
        }
    }

    async fn serve(
        &self,
        call: Call,
        req: tonic::Request<pb::RaftPayload>,
    ) -> Result<tonic::Response<pb::RaftPayload>, tonic::Status> {
        let data = self.handle(call, &req.get_ref().data).await?;
        Ok(tonic::Response::new(pb::RaftPayload { data }))
    }
}

type Reply = Result<tonic::Response<pb::RaftPayload>, tonic::Status>;

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(&self, req: tonic::Request<pb::RaftPayload>) -> Reply {
        self.serve(Call::AppendEntries, req).await
    }

    async fn vote(&self, req: tonic::Request<pb::RaftPayload>) -> Reply {
        self.serve(Call::Vote, req).await
    }

    async fn install_snapshot(&self, req: tonic::Request<pb::RaftPayload>) -> Reply {
        self.serve(Call::InstallSnapshot, req).await
    }

    async fn forward(&self, req: tonic::Request<pb::RaftPayload>) -> Reply {
        self.serve(Call::Forward, req).await
    }

    async fn read_index(&self, req: tonic::Request<pb::RaftPayload>) -> Reply {
        self.serve(Call::ReadIndex, req).await
    }

    async fn change_members(&self, req: tonic::Request<pb::RaftPayload>) -> Reply {
        self.serve(Call::ChangeMembers, req).await
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
