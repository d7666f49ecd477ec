//! The forwarder: one request routed by the table and sent to an endpoint, the answer streamed
//! back.
//!
//! - Endpoints are taken round-robin over the backend's ready ones. A weighted canary takes
//!   its share of requests at random.
//! - Requests go out as HTTP/1.1 through one pooled client (keep-alive to endpoints), whatever
//!   the client spoke (HTTP/1 or HTTP/2); bodies stream both ways, never buffered whole.
//! - Headers: hop-by-hop ones (RFC 9110 §7.6.1 and those named in `Connection`) are removed
//!   both ways; `X-Forwarded-For` gets the client's address appended, `X-Real-IP` is the
//!   client's address, `X-Forwarded-Proto` the scheme it used, `X-Forwarded-Host` the host it
//!   asked for; `Host` is kept (for HTTP/2, the `:authority`).
//! - Answers of the proxy itself, plain text naming the cause: 404 when no rule matches and
//!   there is no default backend; 503 when the backend has no ready endpoint (naming the
//!   Service and port, and why when it cannot be resolved); 502 when the endpoint cannot be
//!   reached; 504 when its response headers take longer than the response-header timeout.
//! - A request with an idempotent method and no body whose connection to the endpoint failed
//!   (nothing was sent) is tried once more on the next endpoint.
//! - Upgrades (websockets and others, HTTP/1.1 `Connection: upgrade`): the request goes out
//!   with its `Upgrade` header; on `101 Switching Protocols` both connections are taken over
//!   and bytes copied each way until either closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::IngressState;
use super::table::{Backend, Route};

/// The body type both ways.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Timeouts of the forwarder.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// To connect to an endpoint.
    pub connect_timeout: Duration,
    /// From the request sent to the endpoint's response headers.
    pub response_header_timeout: Duration,
}

impl Default for ForwardConfig {
    fn default() -> ForwardConfig {
        ForwardConfig {
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
        }
    }
}

/// Routes and forwards requests; one per process, shared by the HTTP and HTTPS servers.
pub struct Forwarder {
    state: Arc<IngressState>,
    client: Client<HttpConnector, Body>,
    cfg: ForwardConfig,
}

/// Headers that belong to one connection and never cross the proxy.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// A plain-text answer of the proxy itself.
pub fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn empty() -> Body {
    Empty::new().map_err(|n| match n {}).boxed_unsync()
}

/// Removes hop-by-hop headers, including those `Connection` names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    h.remove(header::PROXY_AUTHENTICATE);
    h.remove(header::PROXY_AUTHORIZATION);
}

/// The protocol an HTTP/1.1 request asks to upgrade to.
fn upgrade_of(req: &Request<Incoming>) -> Option<HeaderValue> {
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    (asks && req.version() == Version::HTTP_11)
        .then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl Forwarder {
    pub fn new(state: Arc<IngressState>, cfg: ForwardConfig) -> Forwarder {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(cfg.connect_timeout));
        conn.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(conn);
        Forwarder { state, client, cfg }
    }

    /// Answers one request from `peer`; `https` says which server it came in on.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        https: bool,
    ) -> Response<Body> {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                let h = req.headers().get(header::HOST)?;
                h.to_str().ok().map(str::to_string)
            })
            .unwrap_or_default();
        let path = req.uri().path().to_string();
        let table = self.state.table();
        let m = table.route(&host, &path);
        let Some(route) = m.route() else {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "404 not found: no Ingress rule matches host {host:?} and path {path:?}, and no default backend is set\n"
                ),
            );
        };
        let backend = pick(route);
        let endpoints = self.state.endpoints(backend);
        if endpoints.is_empty() {
            let why = backend
                .problem
                .as_deref()
                .map_or(String::new(), |p| format!(" ({p})"));
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "503 service unavailable: service {} port {} has no ready endpoint{why}\n",
                    backend.service, backend.port
                ),
            );
        }
        let upgrade = upgrade_of(&req);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        prepare_headers(&mut parts.headers, &host, peer, https, upgrade);
        let retry = idempotent(&parts.method) && body.is_end_stream() && client_upgrade.is_none();
        let mut body = Some(body.boxed_unsync());
        let tries = if retry { endpoints.len().min(2) } else { 1 };
        let mut last_err = String::new();
        for (i, ep) in endpoints.iter().take(tries).enumerate() {
            let b = body.take().unwrap_or_else(empty);
            let out = match outgoing(&parts, *ep, b) {
                Ok(r) => r,
                Err(e) => {
                    return text(StatusCode::BAD_REQUEST, format!("400 bad request: {e}\n"));
                }
            };
            let sent =
                tokio::time::timeout(self.cfg.response_header_timeout, self.client.request(out))
                    .await;
            let resp = match sent {
                Err(_) => {
                    return text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "504 gateway timeout: endpoint {ep} of service {} sent no response headers within {:?}\n",
                            backend.service, self.cfg.response_header_timeout
                        ),
                    );
                }
                Ok(Err(e)) => {
                    last_err = format!(
                        "endpoint {ep} of service {}: {}",
                        backend.service,
                        error_chain(&e)
                    );
                    if e.is_connect() && i + 1 < tries {
                        tracing::debug!("{last_err}; trying the next endpoint");
                        continue;
                    }
                    break;
                }
                Ok(Ok(r)) => r,
            };
            return self.answer(resp, client_upgrade);
        }
        tracing::debug!("{last_err}");
        text(
            StatusCode::BAD_GATEWAY,
            format!("502 bad gateway: {last_err}\n"),
        )
    }

    /// The endpoint's response, as the client gets it.
    fn answer(
        &self,
        mut resp: Response<Incoming>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<Body> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_side) = client_upgrade
        {
            let upstream_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_side, upstream_side) {
                    Ok((c, u)) => {
                        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "an upgrade did not complete"),
                }
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, empty());
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(parts, body.boxed_unsync())
    }
}

/// The canary's share of requests goes to it, the rest to the primary backend.
fn pick(route: &Route) -> &Backend {
    match &route.canary {
        Some(c) if c.weight > 0 && rand::random_range(0..100u32) < c.weight => &c.backend,
        _ => &route.backend,
    }
}

/// The request's headers as the endpoint gets them.
fn prepare_headers(
    h: &mut HeaderMap,
    host: &str,
    peer: SocketAddr,
    https: bool,
    upgrade: Option<HeaderValue>,
) {
    strip_hop_by_hop(h);
    if let Some(proto) = upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, proto);
    }
    let ip = peer.ip().to_string();
    let xff = h
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .chain(std::iter::once(ip.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let set = |h: &mut HeaderMap, name: HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(name, v);
        }
    };
    set(h, X_FORWARDED_FOR, &xff);
    set(h, X_REAL_IP, &ip);
    set(h, X_FORWARDED_PROTO, if https { "https" } else { "http" });
    set(h, X_FORWARDED_HOST, host);
    if !h.contains_key(header::HOST) {
        set(h, header::HOST, host);
    }
}

/// The request to `ep`: same method, path and query, and headers, over HTTP/1.1.
fn outgoing(
    parts: &http::request::Parts,
    ep: SocketAddr,
    body: Body,
) -> Result<Request<Body>, http::Error> {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = format!("http://{ep}{pq}").parse()?;
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .version(Version::HTTP_11)
        .body(body)?;
    *req.headers_mut() = parts.headers.clone();
    Ok(req)
}

/// An error with its causes, which the legacy client's own message leaves out.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
