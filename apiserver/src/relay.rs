//! The relay: logs, exec and port-forward reach a container through streams its node agent
//! opened to this server, never by dialing the node.
//!
//! A node agent keeps one `AgentConnect` call open; the server pushes a [`pb::SessionOpen`] down it
//! for every client session on that node. The agent answers with one `AgentAttach` call per session
//! (first message: the session id), which the server pairs with the waiting client call and
//! then bridges both ways. Each session is its own HTTP/2 stream on both legs, and the bridge
//! forwards through small bounded channels, so a slow reader stalls only its own session's
//! producer (the agent's read of the container's output), and a long output is never held in
//! memory whole.
//!
//! A node agent that reconnects replaces its earlier registration. A session whose agent does
//! not attach within [`ATTACH_TIMEOUT`] fails with Unavailable.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rudder_proto as pb;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::service::{Api, Identity};

/// How long a session waits for the node agent to attach.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages in flight per direction per session.
const WINDOW: usize = 8;

type Attached = (
    Streaming<pb::AgentData>,
    mpsc::Sender<Result<pb::ClientData, Status>>,
);

#[derive(Default)]
struct State {
    /// Node name → (registration id, the Connect stream's sender).
    agents: HashMap<String, (u64, mpsc::Sender<Result<pb::SessionOpen, Status>>)>,
    /// Session id → the client call waiting for the agent's AgentAttach.
    pending: HashMap<String, oneshot::Sender<Attached>>,
    next: u64,
}

/// The relay's state, shared by the Streams service's calls.
#[derive(Default, Clone)]
pub struct Relay {
    state: Arc<Mutex<State>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Streams gRPC service.
#[derive(Clone)]
pub struct StreamsService {
    api: Api,
    relay: Relay,
}

/// ServiceUnavailable from this server (with its reason, so that clients do not take it for an
/// unreachable server and fail over).
fn unavailable(msg: impl Into<String>) -> Status {
    let mut s = Status::unavailable(msg.into());
    s.metadata_mut().insert(
        crate::error::REASON_METADATA,
        tonic::metadata::MetadataValue::from_static("ServiceUnavailable"),
    );
    s
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

use crate::auth::identity;

impl StreamsService {
    pub fn new(api: Api) -> Self {
        StreamsService {
            api,
            relay: Relay::default(),
        }
    }

    /// The pod's node and uid, once `id` may `verb` the pod's `sub`resource; an error a user
    /// can act on when it has no node yet.
    async fn locate(
        &self,
        id: &Identity,
        (verb, sub): (&str, &str),
        ns: &str,
        pod: &str,
    ) -> Result<(String, String), Status> {
        let ns = if ns.is_empty() { "default" } else { ns };
        self.api.authorize_with(
            id,
            &crate::auth::authz::Attributes {
                verb,
                resource: "pods",
                subresource: sub,
                namespace: ns,
                name: pod,
                ..Default::default()
            },
        )?;
        let obj = self
            .api
            .get(
                &Api::server_identity(),
                pb::GetRequest {
                    kind: Some(pb::KindRef {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                    }),
                    namespace: ns.to_string(),
                    name: pod.to_string(),
                    allow_stale: false,
                },
            )
            .await?;
        let v: Value = serde_json::from_slice(&obj.json)
            .map_err(|e| Status::internal(format!("stored pod is not JSON: {e}")))?;
        let node = v
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "pod {ns}/{pod} is not scheduled to a node yet"
                ))
            })?;
        let uid = v
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Ok((node.to_string(), uid.to_string()))
    }

    /// May `id` `verb` the node's `sub`resource (`relay`: serve its sessions; `stats`)?
    fn node_access(&self, id: &Identity, verb: &str, sub: &str, node: &str) -> Result<(), Status> {
        Ok(self.api.authorize_with(
            id,
            &crate::auth::authz::Attributes {
                verb,
                resource: "nodes",
                subresource: sub,
                name: node,
                ..Default::default()
            },
        )?)
    }

    /// Asks `node`'s agent to open `what`, and waits for its Attach.
    async fn open(
        &self,
        node: &str,
        pod_uid: &str,
        what: pb::session_open::What,
    ) -> Result<Attached, Status> {
        let session = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        let agent = {
            let mut st = lock(&self.relay.state);
            let Some((_, agent)) = st.agents.get(node).cloned() else {
                return Err(unavailable(format!(
                    "node {node} has no relay connection (is its node agent running?)"
                )));
            };
            st.pending.insert(session.clone(), tx);
            agent
        };
        let open = pb::SessionOpen {
            session: session.clone(),
            pod_uid: pod_uid.to_string(),
            what: Some(what),
        };
        if agent.send(Ok(open)).await.is_err() {
            lock(&self.relay.state).pending.remove(&session);
            return Err(unavailable(format!(
                "node {node}'s relay connection just closed"
            )));
        }
        let result = tokio::time::timeout(ATTACH_TIMEOUT, rx).await;
        lock(&self.relay.state).pending.remove(&session);
        match result {
            Ok(Ok(attached)) => Ok(attached),
            Ok(Err(_)) => Err(unavailable(format!(
                "node {node}'s agent went away before the session opened"
            ))),
            Err(_) => Err(unavailable(format!(
                "node {node}'s agent did not open the session within {}s",
                ATTACH_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Forwards the agent's messages to the client through `map`, ending the client's stream with
/// the agent's error, if it sends one.
/// `input`, the task forwarding the client's input to the agent, is stopped when the agent's
/// side ends: that ends the agent's call, which it waits for before it lets go of its stream.
fn bridge_out<T: Send + 'static>(
    mut from_agent: Streaming<pb::AgentData>,
    input: Option<tokio::task::JoinHandle<()>>,
    map: impl Fn(pb::agent_data::Msg) -> Option<T> + Send + 'static,
) -> BoxStream<T> {
    let (tx, rx) = mpsc::channel::<Result<T, Status>>(WINDOW);
    tokio::spawn(async move {
        let _stop_input = StopOnDrop(input);
        while let Some(m) = from_agent.next().await {
            let item = match m {
                Ok(pb::AgentData {
                    msg: Some(pb::agent_data::Msg::Error(e)),
                }) => Err(Status::failed_precondition(e)),
                Ok(pb::AgentData { msg: Some(m) }) => match map(m) {
                    Some(v) => Ok(v),
                    None => continue,
                },
                Ok(pb::AgentData { msg: None }) => continue,
                Err(s) => Err(unavailable(format!(
                    "the node agent's stream broke: {}",
                    s.message()
                ))),
            };
            let end = item.is_err();
            if tx.send(item).await.is_err() || end {
                // The client went away (or the session failed): dropping the agent's stream
                // tells the agent to stop.
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

struct StopOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

#[tonic::async_trait]
impl pb::streams_server::Streams for StreamsService {
    type LogsStream = BoxStream<pb::StreamChunk>;
    type ExecStream = BoxStream<pb::ExecOutput>;
    type PortForwardStream = BoxStream<pb::StreamChunk>;
    type AgentConnectStream = BoxStream<pb::SessionOpen>;
    type AgentAttachStream = BoxStream<pb::ClientData>;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let id = identity(&req)?;
        let r = req.into_inner();
        let (node, uid) = self
            .locate(&id, ("get", "log"), &r.namespace, &r.pod)
            .await?;
        let (from_agent, _to_agent) = self
            .open(&node, &uid, pb::session_open::What::Logs(r))
            .await?;
        Ok(Response::new(bridge_out(from_agent, None, |m| match m {
            pb::agent_data::Msg::Data(d) | pb::agent_data::Msg::Stderr(d) => {
                Some(pb::StreamChunk { data: d })
            }
            _ => None,
        })))
    }

    async fn exec(
        &self,
        req: Request<Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let id = identity(&req)?;
        let mut input = req.into_inner();
        let start = match input.next().await {
            Some(Ok(pb::ExecInput {
                msg: Some(pb::exec_input::Msg::Start(s)),
            })) => s,
            Some(Err(s)) => return Err(s),
            _ => {
                return Err(Status::invalid_argument(
                    "the first exec message must be `start`",
                ));
            }
        };
        if start.command.is_empty() {
            return Err(Status::invalid_argument(
                "command: Required value: a command to run",
            ));
        }
        let (node, uid) = self
            .locate(&id, ("create", "exec"), &start.namespace, &start.pod)
            .await?;
        let (from_agent, to_agent) = self
            .open(&node, &uid, pb::session_open::What::Exec(start))
            .await?;
        let forward = tokio::spawn(async move {
            while let Some(Ok(m)) = input.next().await {
                let msg = match m.msg {
                    Some(pb::exec_input::Msg::Stdin(d)) => pb::client_data::Msg::Data(d),
                    Some(pb::exec_input::Msg::Resize(r)) => pb::client_data::Msg::Resize(r),
                    Some(pb::exec_input::Msg::CloseStdin(_)) => {
                        pb::client_data::Msg::CloseStdin(true)
                    }
                    _ => continue,
                };
                if to_agent
                    .send(Ok(pb::ClientData { msg: Some(msg) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(bridge_out(from_agent, Some(forward), |m| {
            let msg = match m {
                pb::agent_data::Msg::Data(d) => pb::exec_output::Msg::Stdout(d),
                pb::agent_data::Msg::Stderr(d) => pb::exec_output::Msg::Stderr(d),
                pb::agent_data::Msg::ExitCode(c) => pb::exec_output::Msg::ExitCode(c),
                _ => return None,
            };
            Some(pb::ExecOutput { msg: Some(msg) })
        })))
    }

    async fn port_forward(
        &self,
        req: Request<Streaming<pb::PortForwardInput>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        let id = identity(&req)?;
        let mut input = req.into_inner();
        let start = match input.next().await {
            Some(Ok(pb::PortForwardInput {
                msg: Some(pb::port_forward_input::Msg::Start(s)),
            })) => s,
            Some(Err(s)) => return Err(s),
            _ => {
                return Err(Status::invalid_argument(
                    "the first port-forward message must be `start`",
                ));
            }
        };
        if start.port == 0 || start.port > 65535 {
            return Err(Status::invalid_argument(format!(
                "port: Invalid value: {}: must be between 1 and 65535",
                start.port
            )));
        }
        let (node, uid) = self
            .locate(&id, ("create", "portforward"), &start.namespace, &start.pod)
            .await?;
        let (from_agent, to_agent) = self
            .open(&node, &uid, pb::session_open::What::PortForward(start))
            .await?;
        let forward = tokio::spawn(async move {
            while let Some(Ok(m)) = input.next().await {
                let Some(pb::port_forward_input::Msg::Data(d)) = m.msg else {
                    continue;
                };
                let msg = pb::ClientData {
                    msg: Some(pb::client_data::Msg::Data(d)),
                };
                if to_agent.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            // The client closed its side: tell the agent, so it half-closes the connection.
            let _ = to_agent
                .send(Ok(pb::ClientData {
                    msg: Some(pb::client_data::Msg::CloseStdin(true)),
                }))
                .await;
        });
        Ok(Response::new(bridge_out(
            from_agent,
            Some(forward),
            |m| match m {
                pb::agent_data::Msg::Data(d) => Some(pb::StreamChunk { data: d }),
                _ => None,
            },
        )))
    }

    async fn node_summary(
        &self,
        req: Request<pb::SummaryRequest>,
    ) -> Result<Response<pb::Summary>, Status> {
        let id = identity(&req)?;
        let r = req.into_inner();
        if r.node.is_empty() {
            return Err(Status::invalid_argument("node: Required value"));
        }
        self.node_access(&id, "get", "stats", &r.node)?;
        let node = r.node.clone();
        let (mut from_agent, _to_agent) = self
            .open(&node, "", pb::session_open::What::Summary(r))
            .await?;
        let mut json = Vec::new();
        while let Some(m) = from_agent.next().await {
            match m?.msg {
                Some(pb::agent_data::Msg::Data(d)) => json.extend_from_slice(&d),
                Some(pb::agent_data::Msg::Error(e)) => return Err(Status::failed_precondition(e)),
                _ => {}
            }
        }
        Ok(Response::new(pb::Summary { json: json.into() }))
    }

    async fn agent_connect(
        &self,
        req: Request<pb::AgentHello>,
    ) -> Result<Response<Self::AgentConnectStream>, Status> {
        let id = identity(&req)?;
        let node = req.into_inner().node;
        if node.is_empty() {
            return Err(Status::invalid_argument("node: Required value"));
        }
        self.node_access(&id, "create", "relay", &node)?;
        let (tx, rx) = mpsc::channel(64);
        let reg = {
            let mut st = lock(&self.relay.state);
            st.next += 1;
            let reg = st.next;
            st.agents.insert(node.clone(), (reg, tx.clone()));
            reg
        };
        tracing::info!(%node, "node agent connected to the relay");
        // Unregister when the agent's call ends (the sender closes when the stream drops).
        let relay = self.relay.clone();
        tokio::spawn(async move {
            tx.closed().await;
            let mut st = lock(&relay.state);
            if st.agents.get(&node).is_some_and(|(r, _)| *r == reg) {
                st.agents.remove(&node);
                tracing::info!(%node, "node agent left the relay");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn agent_attach(
        &self,
        req: Request<Streaming<pb::AgentData>>,
    ) -> Result<Response<Self::AgentAttachStream>, Status> {
        let id = identity(&req)?;
        self.node_access(&id, "create", "relay", "")?;
        let mut from_agent = req.into_inner();
        let session = match from_agent.next().await {
            Some(Ok(pb::AgentData {
                msg: Some(pb::agent_data::Msg::Session(s)),
            })) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "the first attach message must name the session",
                ));
            }
        };
        let waiter = lock(&self.relay.state).pending.remove(&session);
        let Some(waiter) = waiter else {
            return Err(Status::not_found(format!(
                "no session {session} is waiting"
            )));
        };
        let (tx, rx) = mpsc::channel(WINDOW);
        if waiter.send((from_agent, tx)).is_err() {
            return Err(Status::cancelled("the client went away"));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
