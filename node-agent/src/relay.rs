//! The node agent's side of the API server's relay (see the API server's `relay` module): one
//! long `AgentConnect` call, reopened with back-off, on which the server names sessions to
//! open; each session gets its own `AgentAttach` call carrying a container's log, an exec's
//! input and output, or the bytes of a port-forward to the pod's IP.
//!
//! Output is forwarded as it is read, through a small channel into the attach call, so a slow
//! client slows the read of the container's output instead of filling memory.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rudder_client::Client;
use rudder_client::clock::{Backoff, SharedClock};
use rudder_client::streams::RelayLink;
use rudder_proto as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::host::{HostFacts, HostProbe};
use crate::runtime::{ContainerInfo, ContainerRuntime, ExecChunk, LogOptions, Role, State};
use crate::summary::Summarizer;

/// Messages in flight to the server per session.
const WINDOW: usize = 8;
/// Read size for port-forward connections.
const CHUNK: usize = 64 * 1024;

type Out = mpsc::Sender<pb::AgentData>;

fn msg(m: pb::agent_data::Msg) -> pb::AgentData {
    pb::AgentData { msg: Some(m) }
}

/// Keeps the relay connection up until `cancel`.
/// What the summary session reads about the host.
pub struct HostStats {
    pub probe: Arc<dyn HostProbe>,
    pub facts: HostFacts,
    pub summarizer: Summarizer,
}

pub async fn run(
    client: Client,
    node: String,
    runtime: Arc<dyn ContainerRuntime>,
    host: Arc<HostStats>,
    clock: SharedClock,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(30),
        2.0,
        0.2,
    );
    loop {
        match client.agent_connect(&node).await {
            Ok((mut sessions, link)) => {
                backoff.reset();
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        m = sessions.next() => match m {
                            Some(Ok(open)) => {
                                let (link, rt, node, clock) =
                                    (link.clone(), Arc::clone(&runtime), node.clone(), Arc::clone(&clock));
                                tokio::spawn(session(link, rt, Arc::clone(&host), node, clock, open));
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "relay connection broke; reconnecting");
                                break;
                            }
                            None => break,
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "relay connection failed"),
        }
        let d = backoff.next_delay(&*clock);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(d) => {}
        }
    }
}

async fn session(
    link: RelayLink,
    runtime: Arc<dyn ContainerRuntime>,
    host: Arc<HostStats>,
    node: String,
    clock: SharedClock,
    open: pb::SessionOpen,
) {
    let (tx, rx) = mpsc::channel::<pb::AgentData>(WINDOW);
    if tx
        .send(msg(pb::agent_data::Msg::Session(open.session.clone())))
        .await
        .is_err()
    {
        return;
    }
    let mut input = match link.attach(ReceiverStream::new(rx)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(session = %open.session, error = %e, "attaching a relay session failed");
            return;
        }
    };
    let result = match open.what {
        Some(pb::session_open::What::Logs(r)) => {
            logs(&*runtime, &node, &open.pod_uid, r, &clock, &tx).await
        }
        Some(pb::session_open::What::Exec(e)) => {
            exec(&*runtime, &node, &open.pod_uid, e, &tx, &mut input).await
        }
        Some(pb::session_open::What::PortForward(p)) => {
            port_forward(&*runtime, &node, &open.pod_uid, p, &tx, &mut input).await
        }
        Some(pb::session_open::What::Summary(_)) => {
            let v = host
                .summarizer
                .summary(&*runtime, &*host.probe, &host.facts, &node, &*clock)
                .await;
            let _ = tx
                .send(msg(pb::agent_data::Msg::Data(v.to_string().into())))
                .await;
            Ok(())
        }
        None => Err("empty session request".to_string()),
    };
    if let Err(e) = result {
        let _ = tx.send(msg(pb::agent_data::Msg::Error(e))).await;
    }
    // Ending our side first and waiting for the server to end its own lets everything sent
    // arrive: dropping the call early would reset the stream and lose the tail.
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while input.next().await.is_some() {}
    })
    .await;
}

/// The pod's instances of `container` (all of them when the pod has one container and none
/// is named), newest first.
async fn instances(
    runtime: &dyn ContainerRuntime,
    node: &str,
    pod_uid: &str,
    container: &str,
) -> Result<Vec<ContainerInfo>, String> {
    let all: Vec<ContainerInfo> = runtime
        .list(node)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|c| c.owner.pod_uid == pod_uid && c.role == Role::Container)
        .collect();
    let mut names: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
    names.sort();
    names.dedup();
    let name = if container.is_empty() {
        match names.as_slice() {
            [one] => one.clone(),
            [] => return Err("the pod has no containers on its node yet".into()),
            many => {
                return Err(format!(
                    "a container name must be specified, choose one of: [{}]",
                    many.join(" ")
                ));
            }
        }
    } else {
        container.to_string()
    };
    let mut mine: Vec<ContainerInfo> = all.into_iter().filter(|c| c.name == name).collect();
    if mine.is_empty() {
        return Err(format!(
            "container {name:?} is not running in this pod (yet)"
        ));
    }
    mine.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
    Ok(mine)
}

async fn logs(
    runtime: &dyn ContainerRuntime,
    node: &str,
    pod_uid: &str,
    r: pb::LogsRequest,
    clock: &SharedClock,
    tx: &Out,
) -> Result<(), String> {
    let found = instances(runtime, node, pod_uid, &r.container).await?;
    let target = if r.previous {
        found.get(1).ok_or_else(|| {
            format!(
                "previous terminated container {:?} in pod {:?} not found",
                found[0].name, r.pod
            )
        })?
    } else {
        &found[0]
    };
    let opts = LogOptions {
        follow: r.follow && !r.previous,
        tail: r.tail_lines.and_then(|n| u64::try_from(n).ok()),
        since: r.since_seconds.map(|s| {
            clock
                .now()
                .checked_sub(jiff::SignedDuration::from_secs(s.max(0)))
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        }),
        timestamps: r.timestamps,
    };
    let mut stream = runtime
        .logs(&target.id, &opts)
        .await
        .map_err(|e| e.to_string())?;
    let mut left = if r.limit_bytes > 0 {
        usize::try_from(r.limit_bytes).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    while let Some(chunk) = stream.next().await {
        let mut b = chunk.map_err(|e| e.to_string())?;
        if b.len() > left {
            b.truncate(left);
        }
        left -= b.len();
        if tx.send(msg(pb::agent_data::Msg::Data(b))).await.is_err() || left == 0 {
            // The client went away, or has its bytes: dropping the stream stops the read.
            return Ok(());
        }
    }
    Ok(())
}

async fn exec(
    runtime: &dyn ContainerRuntime,
    node: &str,
    pod_uid: &str,
    e: pb::ExecStart,
    tx: &Out,
    input: &mut tonic::Streaming<pb::ClientData>,
) -> Result<(), String> {
    let found = instances(runtime, node, pod_uid, &e.container).await?;
    let target = &found[0];
    if target.state != State::Running {
        return Err(format!("container {:?} is not running", target.name));
    }
    let mut s = runtime
        .exec_start(&target.id, &e.command, e.tty, e.stdin)
        .await
        .map_err(|err| err.to_string())?;
    if let Some(sz) = e.size.filter(|_| e.tty) {
        let _ = runtime.exec_resize(&s.exec_id, sz.width, sz.height).await;
    }
    let exec_id = s.exec_id.clone();
    let mut stdin = s.input.take();
    let mut input_open = true;
    loop {
        tokio::select! {
            out = s.output.next() => match out {
                Some(Ok(ExecChunk::Stdout(b))) => {
                    if tx.send(msg(pb::agent_data::Msg::Data(b))).await.is_err() { return Ok(()); }
                }
                Some(Ok(ExecChunk::Stderr(b))) => {
                    if tx.send(msg(pb::agent_data::Msg::Stderr(b))).await.is_err() { return Ok(()); }
                }
                Some(Err(err)) => return Err(err.to_string()),
                None => break,
            },
            m = input.next(), if input_open => match m {
                Some(Ok(pb::ClientData { msg: Some(pb::client_data::Msg::Data(d)) })) => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(&d).await.is_err()
                    {
                        stdin = None;
                    }
                }
                Some(Ok(pb::ClientData { msg: Some(pb::client_data::Msg::Resize(sz)) })) => {
                    let _ = runtime.exec_resize(&exec_id, sz.width, sz.height).await;
                }
                Some(Ok(pb::ClientData { msg: Some(pb::client_data::Msg::CloseStdin(_)) })) => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                }
                Some(Ok(_)) => {}
                // The client is gone: nothing will read the output.
                Some(Err(_)) | None => {
                    input_open = false;
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                }
            }
        }
    }
    let code = runtime
        .exec_exit_code(&exec_id)
        .await
        .map_err(|err| err.to_string())?;
    let code = i32::try_from(code.unwrap_or(-1)).unwrap_or(-1);
    let _ = tx.send(msg(pb::agent_data::Msg::ExitCode(code))).await;
    Ok(())
}

async fn pod_ip(
    runtime: &dyn ContainerRuntime,
    node: &str,
    pod_uid: &str,
) -> Result<Ipv4Addr, String> {
    runtime
        .list(node)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|c| {
            c.owner.pod_uid == pod_uid && c.role == Role::Sandbox && c.state == State::Running
        })
        .and_then(|c| c.ip)
        .ok_or_else(|| "the pod has no running sandbox on this node".to_string())
}

async fn port_forward(
    runtime: &dyn ContainerRuntime,
    node: &str,
    pod_uid: &str,
    p: pb::PortForwardStart,
    tx: &Out,
    input: &mut tonic::Streaming<pb::ClientData>,
) -> Result<(), String> {
    let ip = pod_ip(runtime, node, pod_uid).await?;
    let port = u16::try_from(p.port).map_err(|_| format!("invalid port {}", p.port))?;
    let conn = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|e| format!("failed to connect to localhost:{port} inside the pod: {e}"))?;
    let (mut rd, mut wr) = conn.into_split();
    let to_pod = async move {
        while let Some(Ok(m)) = input.next().await {
            match m.msg {
                Some(pb::client_data::Msg::Data(d)) if wr.write_all(&d).await.is_err() => break,
                Some(pb::client_data::Msg::CloseStdin(_)) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    let from_pod = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let b = Bytes::copy_from_slice(&buf[..n]);
                    if tx.send(msg(pb::agent_data::Msg::Data(b))).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    // The pod closing its side ends the session; the client closing its side only
    // half-closes the connection, and the pod's answer still flows back.
    tokio::pin!(to_pod);
    tokio::pin!(from_pod);
    let mut to_done = false;
    loop {
        tokio::select! {
            _ = &mut from_pod => break,
            _ = &mut to_pod, if !to_done => to_done = true,
        }
    }
    Ok(())
}
