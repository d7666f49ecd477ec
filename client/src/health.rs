//! The health endpoint every component serves, as kube-scheduler's and kubelet's: `GET /healthz`
//! (and `/livez`) answers `200 ok` while the process serves. A minimal HTTP/1.1 responder (one
//! request per connection, bounded reads with a deadline), so a stuck or hostile client costs one
//! task, never the component. Also what every binary does first: [`init_logging`], and
//! [`hostname`] for the Events' source.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const MAX_REQUEST: usize = 8 * 1024;
const READ_DEADLINE: Duration = Duration::from_secs(5);

async fn answer(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, body) = match (method, path) {
        (Some(b"GET"), Some(b"/healthz")) | (Some(b"GET"), Some(b"/livez")) => ("200 OK", "ok"),
        _ => ("404 Not Found", "not found"),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): how every component's binary knows to stop.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Serves until `cancel`.
pub async fn serve(listener: TcpListener, cancel: CancellationToken) {
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => return,
            c = listener.accept() => c,
        };
        match conn {
            Ok((s, _)) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(READ_DEADLINE, answer(s)).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "health accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`): every binary's first step.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// This machine's host name (empty when unreadable), as components report it in Events.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn healthz_answers_ok_and_others_404() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(l, cancel.clone()));
        let ok = get(addr, "/healthz").await;
        assert!(
            ok.starts_with("HTTP/1.1 200 OK") && ok.ends_with("\r\n\r\nok"),
            "{ok}"
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        cancel.cancel();
        task.await.expect("serve ends");
    }
}
