//! The connection to the API servers.
//!
//! [`Client`] holds one lazily connected channel per server address. A call goes to the current
//! server; if that server is unreachable (`UNAVAILABLE` at the transport level), the call moves on
//! to the next address, once per address. A call whose connection is lost under it (closed,
//! reset, `GOAWAY`: a transport error rather than a server's answer) moves on the same way, and
//! with a single address is tried once more on a fresh connection. A write retried this way may already have been applied
//! by the server that dropped the connection: a create then reports `AlreadyExists` and an update
//! carrying a resourceVersion reports `Conflict`, so a retry is never applied twice silently.
//!
//! Deadlines ([`ClientConfig`]): every unary call is bounded by `request_timeout` per address,
//! so a server that accepts connections but never answers cannot hang a caller; a call that
//! times out moves on to the next address like an unreachable one (same caveat for writes:
//! the outcome on the silent server is unknown, and a retried create reports `AlreadyExists`).
//! Opening a watch is bounded the same way. An open watch that asked for bookmarks and
//! receives neither an event nor a bookmark for `watch_idle_timeout` ends with an
//! `Unavailable` error, and the next call starts from the next address: the server sends
//! bookmarks at a third of that interval, so silence means the server or the path to it is
//! stuck.
//!
//! Writes prefer the leader of replicated masters: a follower's answer to a write carries
//! `rudder-follower` metadata (it forwarded the write), and the client then starts its next
//! calls at the next address, so within a few writes it talks to the leader and saves the hop.
//!
//! The transport is a seam: [`Client::with_connector`] takes any connector (a tower service
//! from URI to an I/O stream), so a cluster can later run in a simulated network.
//!
//! Errors carry the server's reason ([`ClientError`]), derived from the gRPC status code and the
//! `rudder-reason` metadata the server attaches.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use rudder_proto as pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

use crate::tls::{Credentials, Tls};

/// A connection to one server, adding the bearer token (if any) to every call.
pub(crate) type Chan = InterceptedService<Channel, Bearer>;

/// Sets `authorization: Bearer <token>` on every call; the token can be replaced while the
/// client is in use (a rotated service-account token).
#[derive(Clone, Default)]
pub(crate) struct Bearer(Arc<std::sync::RwLock<Option<tonic::metadata::AsciiMetadataValue>>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = self.0.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Metadata key the server sets on errors with the Kubernetes reason (`NotFound`, `Conflict`,
/// `Invalid`, `Expired`, ...).
pub const REASON_METADATA: &str = "rudder-reason";

/// The pause before a call that met a lost connection is tried again on the same server.
const LOST_CONNECTION_PAUSE: Duration = Duration::from_millis(50);

/// An API call that failed, classified by the server's reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Stale resourceVersion or failed precondition: re-read and retry.
    #[error("{0}")]
    Conflict(String),
    /// The object or request is invalid; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The request itself is malformed or not allowed as given (Kubernetes' BadRequest, e.g.
    /// a deletion propagation policy the server does not support).
    #[error("{0}")]
    BadRequest(String),
    /// The server could not answer in time, e.g. a version newer than it has caught up to
    /// ("too large resource version"): the same call may succeed later.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Forbidden(String),
    /// The server does not know who is calling (no, expired or foreign credentials).
    #[error("{0}")]
    Unauthorized(String),
    /// A version or continue token older than the server's history: relist.
    #[error("{0}")]
    Expired(String),
    /// Kubernetes' 429: not now, e.g. an eviction its disruption budget forbids; the message
    /// says why. Try again later.
    #[error("{0}")]
    TooManyRequests(String),
    /// The store refuses writes (disk full, not writable).
    #[error("{0}")]
    InsufficientStorage(String),
    /// No server could be reached, or none answered within the deadline.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// Whether repeating the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable(_)
                | ClientError::Conflict(_)
                | ClientError::Timeout(_)
                | ClientError::TooManyRequests(_)
                | ClientError::Other(_)
        )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::NotFound(_))
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Conflict(_))
    }

    pub fn is_too_many_requests(&self) -> bool {
        matches!(self, ClientError::TooManyRequests(_))
    }
}

impl From<Status> for ClientError {
    fn from(s: Status) -> Self {
        let reason = s
            .metadata()
            .get(REASON_METADATA)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let msg = s.message().to_string();
        match (s.code(), reason.as_str()) {
            (_, "Expired") => ClientError::Expired(msg),
            (_, "InsufficientStorage") => ClientError::InsufficientStorage(msg),
            (_, "TooManyRequests") => ClientError::TooManyRequests(msg),
            (_, "BadRequest") => ClientError::BadRequest(msg),
            (_, pb::watch_error::REASON_TOO_LARGE_RESOURCE_VERSION)
            | (Code::DeadlineExceeded, _) => ClientError::Timeout(msg),
            (Code::NotFound, _) => ClientError::NotFound(msg),
            (Code::AlreadyExists, _) => ClientError::AlreadyExists(msg),
            (Code::Aborted, _) => ClientError::Conflict(msg),
            (Code::InvalidArgument, _) => ClientError::Invalid(msg),
            (Code::PermissionDenied, _) => ClientError::Forbidden(msg),
            (Code::Unauthenticated, _) => ClientError::Unauthorized(msg),
            (Code::OutOfRange, _) => ClientError::Expired(msg),
            (_, "") if is_transport_failure(&s) => {
                ClientError::Unavailable(format!("connection lost: {}", error_chain(&s)))
            }
            (Code::ResourceExhausted, _) => ClientError::InsufficientStorage(msg),
            (Code::Unavailable, _) => ClientError::Unavailable(msg),
            _ => ClientError::Other(format!("{:?}: {msg}", s.code())),
        }
    }
}

/// Deadlines and connection settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Longest wait for one unary call (or a watch's opening) on one address.
    pub request_timeout: Duration,
    /// TCP connect timeout per address.
    pub connect_timeout: Duration,
    /// A watch with bookmarks that delivers nothing for this long is ended as stuck.
    pub watch_idle_timeout: Duration,
}

impl Default for ClientConfig {
    /// 30 s per call (lists of tens of thousands of objects take well under that), 3 s to
    /// connect, 60 s of watch silence (bookmarks come every 20 s).
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
            watch_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A handle to the API servers; cheap to clone, shared by every task of a component.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addrs: Vec<String>,
    channels: Vec<Chan>,
    current: AtomicUsize,
    config: ClientConfig,
    bearer: Bearer,
    tls: Option<Tls>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.inner.addrs)
            .finish()
    }
}

/// Normalises `host:port` to `http://host:port`.
fn endpoint_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl Client {
    /// A client for the given server addresses (`host:port` or URIs), with default deadlines.
    /// Connections are made on first use, so this fails only for malformed addresses.
    pub fn new<S: AsRef<str>>(addrs: &[S]) -> Result<Self, ClientError> {
        Self::with_config(addrs, ClientConfig::default())
    }

    /// A client over TCP with the given deadlines.
    pub fn with_config<S: AsRef<str>>(
        addrs: &[S],
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        Self::build(addrs, config, None, |ep| ep.connect_lazy())
    }

    /// A client that trusts only `credentials`' CA and presents its certificate and token.
    /// `addrs` may be empty: the credentials' servers are used then.
    pub fn with_credentials<S: AsRef<str>>(
        addrs: &[S],
        config: ClientConfig,
        credentials: &Credentials,
    ) -> Result<Self, ClientError> {
        let tls = Tls::new(credentials).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let client = Self::with_tls(addrs, &credentials.servers, config, tls)?;
        if let Some(t) = &credentials.token {
            client.set_token(t)?;
        }
        Ok(client)
    }

    /// A client over TLS with the given settings (`addrs`, else `fallback`).
    pub fn with_tls<S: AsRef<str>>(
        addrs: &[S],
        fallback: &[String],
        config: ClientConfig,
        tls: Tls,
    ) -> Result<Self, ClientError> {
        let connector = tls.connector(config.connect_timeout);
        let addrs: Vec<String> = if addrs.is_empty() {
            fallback.to_vec()
        } else {
            addrs.iter().map(|a| a.as_ref().to_string()).collect()
        };
        Self::build(&addrs, config, Some(tls), move |ep| {
            ep.connect_with_connector_lazy(connector.clone())
        })
    }

    /// A client as the components and the CLI make one: over mutual TLS with the credentials
    /// file when given (its servers used when `addrs` is empty), else plaintext (only a server
    /// run with `--insecure-allow-all` answers that).
    pub fn from_credentials_file<S: AsRef<str>>(
        addrs: &[S],
        credentials: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        match credentials {
            Some(path) => {
                let c = Credentials::load(path).map_err(|e| ClientError::Invalid(e.to_string()))?;
                Self::with_credentials(addrs, ClientConfig::default(), &c)
            }
            None => Self::new(addrs),
        }
    }

    /// Sends `token` as `authorization: Bearer` on every later call.
    pub fn set_token(&self, token: &str) -> Result<(), ClientError> {
        let v = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| ClientError::Invalid("token: not a valid header value".into()))?;
        *self
            .inner
            .bearer
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(v);
        Ok(())
    }

    /// The TLS settings, when connecting over TLS (to renew the client certificate).
    pub fn tls(&self) -> Option<&Tls> {
        self.inner.tls.as_ref()
    }

    /// A client whose connections are made by `connector` (a tower service from the server's
    /// URI to an I/O stream) instead of TCP: the seam for a simulated network, or for dialing
    /// through a test proxy.
    pub fn with_connector<S, C>(
        addrs: &[S],
        config: ClientConfig,
        connector: C,
    ) -> Result<Self, ClientError>
    where
        S: AsRef<str>,
        C: tower_service::Service<Uri> + Clone + Send + 'static,
        C::Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin,
        C::Future: Send,
        Box<dyn std::error::Error + Send + Sync>: From<C::Error>,
        C::Error: Send,
    {
        Self::build(addrs, config, None, move |ep| {
            ep.connect_with_connector_lazy(connector.clone())
        })
    }

    fn build<S: AsRef<str>>(
        addrs: &[S],
        config: ClientConfig,
        tls: Option<Tls>,
        connect: impl Fn(Endpoint) -> Channel,
    ) -> Result<Self, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::Invalid("no API server address given".into()));
        }
        let bearer = Bearer::default();
        let mut channels = Vec::new();
        let mut names = Vec::new();
        for a in addrs {
            let a = a.as_ref().trim();
            let ep = Endpoint::from_shared(endpoint_uri(a))
                .map_err(|e| ClientError::Invalid(format!("invalid server address \"{a}\": {e}")))?
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_while_idle(true);
            channels.push(InterceptedService::new(connect(ep), bearer.clone()));
            names.push(a.to_string());
        }
        Ok(Client {
            inner: Arc::new(Inner {
                addrs: names,
                channels,
                current: AtomicUsize::new(0),
                config,
                bearer,
                tls,
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The configured server addresses.
    pub fn addrs(&self) -> &[String] {
        &self.inner.addrs
    }

    /// One client per configured server, each talking to that server only (sharing this
    /// client's connections and deadlines): for a call that must reach every master, as a node
    /// agent's relay connection does.
    pub fn each_server(&self) -> Vec<Client> {
        self.inner
            .addrs
            .iter()
            .zip(&self.inner.channels)
            .map(|(addr, ch)| Client {
                inner: Arc::new(Inner {
                    addrs: vec![addr.clone()],
                    channels: vec![ch.clone()],
                    current: AtomicUsize::new(0),
                    config: self.inner.config.clone(),
                    bearer: self.inner.bearer.clone(),
                    tls: self.inner.tls.clone(),
                }),
            })
            .collect()
    }

    /// The address the next call goes to first.
    pub fn current_addr(&self) -> &str {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.addrs.len();
        &self.inner.addrs[i]
    }

    /// Runs `call` against the current server, failing over to the next ones while the
    /// transport reports the server unreachable or the call exceeds its deadline.
    pub(crate) async fn with_failover<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Chan) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.with_failover_at(call).await.map(|(v, _)| v)
    }

    /// [`Client::with_failover`] for a write: when a replicated follower answered (it
    /// forwarded the write to the leader), the next calls start at the next address, so a
    /// client knowing every master soon writes to the leader directly.
    async fn write_with_failover<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Chan) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (r, idx) = self.with_failover_at(call).await?;
        if r.metadata().contains_key(pb::FOLLOWER_METADATA) {
            self.skip_server(idx);
        }
        Ok(r.into_inner())
    }

    /// [`Client::with_failover`], also telling which address answered.
    async fn with_failover_at<T, F, Fut>(&self, call: F) -> Result<(T, usize), ClientError>
    where
        F: Fn(Chan) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let n = self.inner.channels.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let timeout = self.inner.config.request_timeout;
        let mut last = String::new();
        // A lost connection is tried once more on the same server (the channel reconnects),
        // so a lone server's GOAWAY or reset does not fail the call.
        let mut attempts = (0..n).map(|i| (start + i) % n).collect::<Vec<_>>();
        if n == 1 {
            attempts.push(start);
        }
        let mut lost_once = false;
        for (i, idx) in attempts.into_iter().enumerate() {
            if i == n {
                if !lost_once {
                    break;
                }
                // Give the channel a moment to see the connection closed and open a new one.
                tokio::time::sleep(LOST_CONNECTION_PAUSE).await;
            }
            let addr = &self.inner.addrs[idx];
            match tokio::time::timeout(timeout, call(self.inner.channels[idx].clone())).await {
                Ok(Ok(v)) => {
                    if idx != start {
                        self.inner.current.store(idx, Ordering::Relaxed);
                    }
                    return Ok((v, idx));
                }
                Ok(Err(s)) if is_transport_unavailable(&s) => {
                    tracing::debug!(server = %addr, error = %s, "server unreachable, trying the next");
                    last = s.message().to_string();
                }
                Ok(Err(s))
                    if s.metadata().get(REASON_METADATA).is_none() && is_transport_failure(&s) =>
                {
                    last = error_chain(&s);
                    tracing::debug!(server = %addr, error = %last, "connection lost, trying again");
                    lost_once = true;
                }
                Ok(Err(s)) => {
                    // A server that answers it cannot serve now (a master cut off from its
                    // quorum, one that lags) is passed over by the next call. This call's
                    // outcome is unknown, so it is not repeated elsewhere.
                    if s.code() == Code::Unavailable {
                        self.skip_server(idx);
                    }
                    return Err(s.into());
                }
                Err(_) => {
                    tracing::warn!(server = %addr, ?timeout, "no answer within the deadline, trying the next server");
                    last = format!("{addr} did not answer within {timeout:?}");
                }
            }
        }
        Err(ClientError::Unavailable(format!(
            "no API server reachable at {}: {last}",
            self.inner.addrs.join(", ")
        )))
    }

    /// The channel to the current server.
    pub(crate) fn current_channel(&self) -> Chan {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.channels.len();
        self.inner.channels[i].clone()
    }

    /// Moves to the next server.
    pub(crate) fn rotate(&self) {
        self.skip_server(self.inner.current.load(Ordering::Relaxed));
    }

    /// Moves the current address past `idx` (if it is still current), after `idx` went silent.
    fn skip_server(&self, idx: usize) {
        let n = self.inner.channels.len();
        let _ = self.inner.current.compare_exchange(
            idx,
            (idx + 1) % n,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn resources(ch: Chan) -> pb::resources_client::ResourcesClient<Chan> {
        pb::resources_client::ResourcesClient::new(ch)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    pub async fn create(&self, req: pb::CreateRequest) -> Result<pb::Object, ClientError> {
        self.write_with_failover(|ch| {
            let req = req.clone();
            async move { Self::resources(ch).create(req).await }
        })
        .await
    }

    pub async fn get(&self, req: pb::GetRequest) -> Result<pb::Object, ClientError> {
        self.with_failover(|ch| {
            let req = req.clone();
            async move { Ok(Self::resources(ch).get(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn list(&self, req: pb::ListRequest) -> Result<pb::ListResponse, ClientError> {
        self.with_failover(|ch| {
            let req = req.clone();
            async move { Ok(Self::resources(ch).list(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn update(&self, req: pb::UpdateRequest) -> Result<pb::Object, ClientError> {
        self.write_with_failover(|ch| {
            let req = req.clone();
            async move { Self::resources(ch).update(req).await }
        })
        .await
    }

    pub async fn update_status(&self, req: pb::UpdateRequest) -> Result<pb::Object, ClientError> {
        self.write_with_failover(|ch| {
            let req = req.clone();
            async move { Self::resources(ch).update_status(req).await }
        })
        .await
    }

    pub async fn patch(&self, req: pb::PatchRequest) -> Result<pb::Object, ClientError> {
        self.write_with_failover(|ch| {
            let req = req.clone();
            async move { Self::resources(ch).patch(req).await }
        })
        .await
    }

    pub async fn delete(&self, req: pb::DeleteRequest) -> Result<pb::DeleteResponse, ClientError> {
        self.write_with_failover(|ch| {
            let req = req.clone();
            async move { Self::resources(ch).delete(req).await }
        })
        .await
    }

    /// Sets a Namespace's `spec.finalizers` (the `namespaces/finalize` subresource).
    pub async fn finalize(&self, req: pb::UpdateRequest) -> Result<pb::Object, ClientError> {
        self.write_with_failover(|ch| {
            let req = req.clone();
            async move { Self::resources(ch).finalize(req).await }
        })
        .await
    }

    pub async fn bind(&self, req: pb::BindRequest) -> Result<pb::Object, ClientError> {
        self.write_with_failover(|ch| {
            let req = req.clone();
            async move { Self::resources(ch).bind(req).await }
        })
        .await
    }

    /// Evicts a pod (the `pods/eviction` subresource).
    pub async fn evict(&self, req: pb::EvictRequest) -> Result<pb::DeleteResponse, ClientError> {
        self.write_with_failover(|ch| {
            let req = req.clone();
            async move { Self::resources(ch).evict(req).await }
        })
        .await
    }

    /// Opens a watch stream (raw, without the idle guard: for people watching from the CLI).
    /// Events end with an ERROR event (expired, too slow) or the stream closing; both mean
    /// "watch again from the last version seen". Opening is bounded by `request_timeout`.
    pub async fn watch(
        &self,
        req: pb::WatchRequest,
    ) -> Result<tonic::Streaming<pb::WatchEvent>, ClientError> {
        self.with_failover(|ch| {
            let req = req.clone();
            async move { Ok(Self::resources(ch).watch(req).await?.into_inner()) }
        })
        .await
    }

    /// Opens a watch guarded against silence, as components use it (through [`crate::Api`]).
    /// With bookmarks allowed, the server is asked for one every third of `watch_idle_timeout`
    /// (unless the request names an interval), and silence for the whole timeout ends the
    /// stream with `Unavailable` and moves the client to the next address.
    pub async fn watch_guarded(
        &self,
        mut req: pb::WatchRequest,
    ) -> Result<BoxStream<'static, Result<pb::WatchEvent, ClientError>>, ClientError> {
        let idle = self.inner.config.watch_idle_timeout;
        let guard = req.allow_bookmarks && !idle.is_zero();
        if guard && req.bookmark_interval_ms == 0 {
            req.bookmark_interval_ms = u32::try_from((idle / 3).as_millis()).unwrap_or(u32::MAX);
        }
        let (stream, idx) = self
            .with_failover_at(|ch| {
                let req = req.clone();
                async move { Ok(Self::resources(ch).watch(req).await?.into_inner()) }
            })
            .await?;
        let events = stream.map(|r| r.map_err(ClientError::from));
        if !guard {
            return Ok(events.boxed());
        }
        let (client, addr) = (self.clone(), self.inner.addrs[idx].clone());
        let guarded = futures::stream::unfold(Some(events.boxed()), move |state| {
            let (client, addr) = (client.clone(), addr.clone());
            async move {
                let mut events = state?;
                match tokio::time::timeout(idle, events.next()).await {
                    Ok(Some(item)) => Some((item, Some(events))),
                    Ok(None) => None,
                    Err(_) => {
                        tracing::warn!(server = %addr, ?idle, "watch silent (no event or bookmark); reconnecting elsewhere");
                        client.skip_server(idx);
                        let e = ClientError::Unavailable(format!(
                            "watch on {addr} received nothing, not even a bookmark, for {idle:?}"
                        ));
                        Some((Err(e), None))
                    }
                }
            }
        });
        Ok(guarded.boxed())
    }

    pub async fn api_resources(&self) -> Result<pb::DiscoveryResponse, ClientError> {
        self.with_failover(|ch| async move {
            Ok(pb::discovery_client::DiscoveryClient::new(ch)
                .api_resources(pb::DiscoveryRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    pub async fn health(&self) -> Result<pb::HealthResponse, ClientError> {
        self.with_failover(|ch| async move {
            Ok(pb::health_client::HealthClient::new(ch)
                .check(pb::HealthRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    pub async fn version(&self) -> Result<pb::VersionResponse, ClientError> {
        self.with_failover(|ch| async move {
            Ok(pb::health_client::HealthClient::new(ch)
                .version(pb::VersionRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// A replicated cluster's members, as the server answering sees them.
    pub async fn members(&self) -> Result<pb::RaftStatus, ClientError> {
        self.with_failover(|ch| async move {
            Ok(pb::admin_client::AdminClient::new(ch)
                .members(pb::MembersRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// A membership change, carried out by the leader (any member forwards it). Not retried on
    /// another server: an add waits for the new member to catch up, for up to two minutes.
    pub async fn change_members(
        &self,
        req: pb::ChangeMembersRequest,
    ) -> Result<pb::RaftStatus, ClientError> {
        let mut c = pb::admin_client::AdminClient::new(self.current_channel());
        Ok(c.change_members(req).await?.into_inner())
    }

    /// A backup of the whole state at one version (a consistent read on a replicated master).
    pub async fn save_backup(&self) -> Result<pb::Backup, ClientError> {
        self.with_failover(|ch| async move {
            Ok(pb::admin_client::AdminClient::new(ch)
                .max_decoding_message_size(1024 * 1024 * 1024)
                .save_backup(pb::SaveBackupRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// The caller as the server authenticated it.
    pub async fn who_am_i(&self) -> Result<pb::WhoAmIResponse, ClientError> {
        self.with_failover(|ch| async move {
            Ok(pb::admin_client::AdminClient::new(ch)
                .who_am_i(pb::WhoAmIRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// A client certificate signed by the cluster CA (an admin's issue, or a renewal).
    pub async fn sign_certificate(
        &self,
        req: pb::SignCertificateRequest,
    ) -> Result<pb::SignCertificateResponse, ClientError> {
        self.with_failover(|ch| {
            let req = req.clone();
            async move {
                Ok(pb::admin_client::AdminClient::new(ch)
                    .sign_certificate(req)
                    .await?
                    .into_inner())
            }
        })
        .await
    }

    pub async fn stats(&self) -> Result<pb::StatsResponse, ClientError> {
        self.with_failover(|ch| async move {
            Ok(pb::admin_client::AdminClient::new(ch)
                .stats(pb::StatsRequest {})
                .await?
                .into_inner())
        })
        .await
    }
}

/// Whether a status means the server could not be reached at all (so another may be tried),
/// as opposed to the server answering `UNAVAILABLE` itself.
fn is_transport_unavailable(s: &Status) -> bool {
    s.code() == Code::Unavailable && s.metadata().get(REASON_METADATA).is_none()
}

/// Whether the call failed in this process's transport (connection closed, reset, GOAWAY)
/// rather than with an answer from a server: tonic then keeps the transport error as the
/// status' source, which a status decoded from a server's reply never has.
fn is_transport_failure(s: &Status) -> bool {
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        if e.is::<tonic::transport::Error>() {
            return true;
        }
        src = e.source();
    }
    false
}

/// The status' message with its sources, for errors that would otherwise read only
/// "transport error".
fn error_chain(s: &Status) -> String {
    let mut msg = s.message().to_string();
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        let text = e.to_string();
        if !msg.ends_with(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = e.source();
    }
    msg
}

/// A `KindRef` from apiVersion and kind.
pub fn kind_ref(api_version: &str, kind: &str) -> pb::KindRef {
    pb::KindRef {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    }
}
