//! The HTTP and HTTPS servers: accept connections, speak HTTP/1.1 and HTTP/2 (over TLS chosen
//! by ALPN, in clear by the connection preface), and hand every request to the [`Forwarder`].
//!
//! Binding is retried every second until it succeeds (the address may be a bridge that the node
//! agent has not created yet), as the DNS server's. On cancellation the listeners stop
//! accepting; open connections are not drained.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::IngressState;
pub use super::forward::{ForwardConfig, Forwarder};
use super::tls::server_config;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr`, retrying every second until it works or `cancel`.
pub async fn bind(addr: SocketAddr, what: &str, cancel: &CancellationToken) -> Option<TcpListener> {
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Some(l),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot listen for {what} yet; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Serves plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge) on `listener` until `cancel`.
pub async fn serve_http(listener: TcpListener, fwd: Arc<Forwarder>, cancel: CancellationToken) {
    tracing::info!(addr = ?listener.local_addr().ok(), "serving Ingress over HTTP");
    accept_loop(listener, None, fwd, cancel).await;
}

/// Serves HTTPS on `listener` until `cancel`, certificates by SNI from `state`.
pub async fn serve_https(
    listener: TcpListener,
    state: Arc<IngressState>,
    fwd: Arc<Forwarder>,
    cancel: CancellationToken,
) -> Result<(), rustls::Error> {
    let acceptor = TlsAcceptor::from(Arc::new(server_config(state)?));
    tracing::info!(addr = ?listener.local_addr().ok(), "serving Ingress over HTTPS");
    accept_loop(listener, Some(acceptor), fwd, cancel).await;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    fwd: Arc<Forwarder>,
    cancel: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting an Ingress connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (fwd, tls, cancel) = (Arc::clone(&fwd), tls.clone(), cancel.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_conn(stream, peer, false, fwd, cancel).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_conn(s, peer, true, fwd, cancel).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_conn<S>(
    stream: S,
    peer: SocketAddr,
    https: bool,
    fwd: Arc<Forwarder>,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let fwd = Arc::clone(&fwd);
        async move { Ok::<_, Infallible>(fwd.handle(req, peer, https).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(%peer, error = %e, "Ingress connection ended with an error");
        },
        _ = cancel.cancelled() => {}
    }
}
