//! `rudder logs`, `rudder exec` and `rudder port-forward`: streams to containers through the
//! API server, which relays them to the pod's node agent. Output is written as it arrives.

use std::io::Write;

use clap::Args;
use futures::StreamExt;
use rudder_proto as pb;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::util;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// POD, or TYPE/NAME of a workload (deploy/web, rs/x, sts/db, job/j, ds/d) to read one of
    /// its pods.
    pub target: String,
    /// The container (default: the pod's only one).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The previous, terminated instance of the container.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<i64>,
    /// Only output newer than this (5s, 2m, 3h).
    #[arg(long)]
    pub since: Option<String>,
    /// Prefix each line with its RFC 3339 timestamp.
    #[arg(long)]
    pub timestamps: bool,
    /// Stop after this many bytes.
    #[arg(long)]
    pub limit_bytes: Option<i64>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub pod: String,
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Allocate a terminal (with -i: an interactive shell).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PortForwardArgs {
    pub pod: String,
    /// LOCAL:REMOTE or PORT (the same on both sides).
    #[arg(required = true)]
    pub ports: Vec<String>,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
}

/// `5s`, `2m`, `3h` as seconds.
fn parse_since(s: &str) -> Result<i64> {
    let bad = || {
        CliError::msg(format!(
            "invalid --since {s:?}: expected a duration such as 5s, 2m or 3h"
        ))
    };
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().map_err(|_| bad())?;
    let mul = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    Ok(n * mul)
}

/// A workload's `spec.selector` as a label selector string.
fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let vals: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match e["operator"].as_str().unwrap_or("") {
            "In" => parts.push(format!("{key} in ({})", vals.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", vals.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

/// The pod `target` names: itself, or the newest running pod of a workload.
async fn resolve_pod(ctx: &Ctx, target: &str) -> Result<String> {
    let Some((ty, name)) = target.split_once('/') else {
        return Ok(target.to_string());
    };
    let kinds = ctx.kinds().await?;
    let t = kinds.lookup(ty)?;
    if t.kind == "Pod" {
        return Ok(name.to_string());
    }
    let client = ctx.client()?;
    let obj = util::get_object(client, t, &ctx.namespace, name).await?;
    let sel = obj
        .pointer("/spec/selector")
        .map(|s| match s {
            // A Service-style map selector.
            Value::Object(m)
                if !m.contains_key("matchLabels") && !m.contains_key("matchExpressions") =>
            {
                selector_string(&serde_json::json!({"matchLabels": s}))
            }
            _ => selector_string(s),
        })
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CliError::msg(format!("{target} has no pod selector")))?;
    let pods = kinds.lookup("pods")?;
    let (mut items, _) = util::list_all(client, pods, &ctx.namespace, &sel, "", 0).await?;
    items.sort_by_key(|p| {
        let running = p.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
        let created = p
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        (running, created)
    });
    let pod = items
        .last()
        .and_then(|p| p.pointer("/metadata/name").and_then(Value::as_str))
        .ok_or_else(|| CliError::msg(format!("no pods found for {target}")))?;
    if items.len() > 1 {
        eprintln!("Found {} pods, using pod/{pod}", items.len());
    }
    Ok(pod.to_string())
}

pub async fn logs(ctx: &Ctx, a: LogsArgs) -> Result<()> {
    let pod = resolve_pod(ctx, &a.target).await?;
    let req = pb::LogsRequest {
        namespace: ctx.namespace.clone(),
        pod,
        container: a.container.unwrap_or_default(),
        follow: a.follow,
        previous: a.previous,
        tail_lines: a.tail.filter(|n| *n >= 0),
        since_seconds: a.since.as_deref().map(parse_since).transpose()?,
        timestamps: a.timestamps,
        limit_bytes: a.limit_bytes.unwrap_or(0),
    };
    let mut s = ctx.client()?.logs(req).await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| CliError::msg(e.message().to_string()))?;
        out.write_all(&chunk.data)
            .and_then(|_| out.flush())
            .map_err(|e| CliError::io("writing the log", e))?;
    }
    Ok(())
}

/// Puts the terminal in raw mode while alive.
struct RawMode {
    saved: Option<rustix::termios::Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

fn terminal_size() -> Option<pb::TerminalSize> {
    rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .map(|w| pb::TerminalSize {
            width: u32::from(w.ws_col),
            height: u32::from(w.ws_row),
        })
}

/// Runs the command; returns its exit code (the CLI exits with it, as kubectl does).
pub async fn exec(ctx: &Ctx, a: ExecArgs) -> Result<i32> {
    let is_tty = a.tty && rustix::termios::isatty(std::io::stdin());
    if a.tty && !is_tty {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
    }
    let start = pb::ExecStart {
        namespace: ctx.namespace.clone(),
        pod: a.pod.clone(),
        container: a.container.clone().unwrap_or_default(),
        command: a.command.clone(),
        tty: is_tty,
        stdin: a.stdin,
        size: if is_tty { terminal_size() } else { None },
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ExecInput>(8);
    tx.send(pb::ExecInput {
        msg: Some(pb::exec_input::Msg::Start(start)),
    })
    .await
    .map_err(|_| CliError::msg("exec: input closed"))?;
    let input = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut out = ctx.client()?.exec(input).await?;
    let _raw = is_tty.then(RawMode::enter);
    if a.stdin {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let m = pb::ExecInput {
                            msg: Some(pb::exec_input::Msg::Stdin(buf[..n].to_vec().into())),
                        };
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx
                .send(pb::ExecInput {
                    msg: Some(pb::exec_input::Msg::CloseStdin(true)),
                })
                .await;
        });
    }
    if is_tty
        && let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            while winch.recv().await.is_some() {
                if let Some(sz) = terminal_size() {
                    let m = pb::ExecInput {
                        msg: Some(pb::exec_input::Msg::Resize(sz)),
                    };
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut code = 0;
    while let Some(m) = out.next().await {
        let m = m.map_err(|e| CliError::msg(e.message().to_string()))?;
        let r = match m.msg {
            Some(pb::exec_output::Msg::Stdout(b)) => {
                stdout.write_all(&b).await.and(stdout.flush().await)
            }
            Some(pb::exec_output::Msg::Stderr(b)) => {
                stderr.write_all(&b).await.and(stderr.flush().await)
            }
            Some(pb::exec_output::Msg::ExitCode(c)) => {
                code = c;
                break;
            }
            None => Ok(()),
        };
        r.map_err(|e| CliError::io("writing the output", e))?;
    }
    drop(tx);
    Ok(code)
}

fn parse_ports(specs: &[String]) -> Result<Vec<(u16, u16)>> {
    specs
        .iter()
        .map(|s| {
            let bad =
                || CliError::msg(format!("invalid port {s:?}: expected LOCAL:REMOTE or PORT"));
            let (l, r) = s.split_once(':').unwrap_or((s, s));
            let r: u16 = r.parse().map_err(|_| bad())?;
            let l: u16 = if l.is_empty() {
                0
            } else {
                l.parse().map_err(|_| bad())?
            };
            if r == 0 {
                return Err(bad());
            }
            Ok((l, r))
        })
        .collect()
}

/// Forwards local ports to the pod's until interrupted; one relay session per connection.
pub async fn port_forward(ctx: &Ctx, a: PortForwardArgs) -> Result<()> {
    let ports = parse_ports(&a.ports)?;
    let client = ctx.client()?.clone();
    let mut tasks = Vec::new();
    for (local, remote) in ports {
        let l = tokio::net::TcpListener::bind((a.address.as_str(), local))
            .await
            .map_err(|e| CliError::io(format!("listening on {}:{local}", a.address), e))?;
        let bound = l.local_addr().map(|x| x.to_string()).unwrap_or_default();
        util::outln(&format!("Forwarding from {bound} -> {remote}"))?;
        let (client, ns, pod) = (client.clone(), ctx.namespace.clone(), a.pod.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = l.accept().await else {
                    continue;
                };
                let (client, ns, pod) = (client.clone(), ns.clone(), pod.clone());
                tokio::spawn(async move {
                    if let Err(e) = forward_one(client, ns, pod, remote, conn).await {
                        eprintln!("error forwarding port {remote}: {e}");
                    }
                });
            }
        }));
    }
    let _ = tokio::signal::ctrl_c().await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

async fn forward_one(
    client: rudder_client::Client,
    namespace: String,
    pod: String,
    port: u16,
    conn: tokio::net::TcpStream,
) -> Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::PortForwardInput>(8);
    let start = pb::PortForwardStart {
        namespace,
        pod,
        port: u32::from(port),
    };
    let _ = tx
        .send(pb::PortForwardInput {
            msg: Some(pb::port_forward_input::Msg::Start(start)),
        })
        .await;
    let mut from_pod = client
        .port_forward(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    let (mut rd, mut wr) = conn.into_split();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let m = pb::PortForwardInput {
                        msg: Some(pb::port_forward_input::Msg::Data(buf[..n].to_vec().into())),
                    };
                    if tx.send(m).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` ends the input: the relay half-closes the pod's connection.
    });
    while let Some(chunk) = from_pod.next().await {
        match chunk {
            Ok(c) => {
                if wr.write_all(&c.data).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                up.abort();
                return Err(CliError::msg(e.message().to_string()));
            }
        }
    }
    let _ = wr.shutdown().await;
    up.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_durations_ports_and_selectors() {
        assert_eq!(parse_since("5s").ok(), Some(5));
        assert_eq!(parse_since("2m").ok(), Some(120));
        assert_eq!(parse_since("3h").ok(), Some(10800));
        assert!(parse_since("3d").is_err());
        assert_eq!(
            parse_ports(&["8080:80".into(), "9000".into(), ":81".into()]).ok(),
            Some(vec![(8080, 80), (9000, 9000), (0, 81)])
        );
        assert!(parse_ports(&["x:80".into()]).is_err());
        let sel = serde_json::json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "canary", "operator": "DoesNotExist"}]});
        assert_eq!(selector_string(&sel), "app=web,tier in (a,b),!canary");
    }
}
