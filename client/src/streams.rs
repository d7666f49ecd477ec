//! Streams to containers through the API server's relay: logs, exec and port-forward for
//! clients, and the node agent's side of the relay (`agent_connect`, `agent_attach`).
//!
//! Logs fail over like the unary calls (the request can be sent again). Exec and port-forward
//! carry the caller's input stream, which cannot be replayed, so they go to the current server
//! only; a failure there is the caller's to retry.

use futures::Stream;
use rudder_proto as pb;
use tonic::Streaming;

use crate::conn::{Chan, Client, ClientError};

fn streams(ch: Chan) -> pb::streams_client::StreamsClient<Chan> {
    pb::streams_client::StreamsClient::new(ch)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024)
}

impl Client {
    /// A container's log, as it arrives.
    pub async fn logs(
        &self,
        req: pb::LogsRequest,
    ) -> Result<Streaming<pb::StreamChunk>, ClientError> {
        self.with_failover(|ch| {
            let req = req.clone();
            async move { Ok(streams(ch).logs(req).await?.into_inner()) }
        })
        .await
    }

    /// A node's resource summary, from its node agent.
    pub async fn node_summary(&self, req: pb::SummaryRequest) -> Result<pb::Summary, ClientError> {
        self.with_failover(|ch| {
            let req = req.clone();
            async move { Ok(streams(ch).node_summary(req).await?.into_inner()) }
        })
        .await
    }

    /// Runs a command in a container: `input` starts with [`pb::exec_input::Msg::Start`].
    pub async fn exec<S>(&self, input: S) -> Result<Streaming<pb::ExecOutput>, ClientError>
    where
        S: Stream<Item = pb::ExecInput> + Send + 'static,
    {
        let mut c = streams(self.current_channel());
        Ok(c.exec(input).await?.into_inner())
    }

    /// Bytes to and from a pod's port: `input` starts with
    /// [`pb::port_forward_input::Msg::Start`].
    pub async fn port_forward<S>(&self, input: S) -> Result<Streaming<pb::StreamChunk>, ClientError>
    where
        S: Stream<Item = pb::PortForwardInput> + Send + 'static,
    {
        let mut c = streams(self.current_channel());
        Ok(c.port_forward(input).await?.into_inner())
    }

    /// Node agents: the sessions the server asks this node to open, and the link their
    /// attaches must use (the same server, which holds the waiting client calls).
    pub async fn agent_connect(
        &self,
        node: &str,
    ) -> Result<(Streaming<pb::SessionOpen>, RelayLink), ClientError> {
        let hello = pb::AgentHello {
            node: node.to_string(),
        };
        // No request deadline: this call stays open for as long as the agent runs.
        let ch = self.current_channel();
        match streams(ch.clone()).agent_connect(hello.clone()).await {
            Ok(r) => Ok((r.into_inner(), RelayLink { ch })),
            Err(first) => {
                self.rotate();
                let ch = self.current_channel();
                match streams(ch.clone()).agent_connect(hello).await {
                    Ok(r) => Ok((r.into_inner(), RelayLink { ch })),
                    Err(_) => Err(first.into()),
                }
            }
        }
    }
}

/// The server a node agent's relay connection is on.
#[derive(Clone, Debug)]
pub struct RelayLink {
    ch: Chan,
}

impl RelayLink {
    /// One session's stream; `output` starts with [`pb::agent_data::Msg::Session`].
    pub async fn attach<S>(&self, output: S) -> Result<Streaming<pb::ClientData>, ClientError>
    where
        S: Stream<Item = pb::AgentData> + Send + 'static,
    {
        Ok(streams(self.ch.clone())
            .agent_attach(output)
            .await?
            .into_inner())
    }
}
