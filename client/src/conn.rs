//! The connection to the API servers.
//!
//! [`Client`] holds one lazily connected channel per server address. A call goes to the current
//! server; if that server is unreachable (`UNAVAILABLE` at the transport level), the call moves on
//! to the next address, once per address. A write retried this way may already have been applied
//! by the server that dropped the connection: a create then reports `AlreadyExists` and an update
//! carrying a resourceVersion reports `Conflict`, so a retry is never applied twice silently.
//!
//! Errors carry the server's reason ([`ClientError`]), derived from the gRPC status code and the
//! `rudder-reason` metadata the server attaches.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rudder_proto as pb;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Metadata key the server sets on errors with the Kubernetes reason (`NotFound`, `Conflict`,
/// `Invalid`, `Expired`, ...).
pub const REASON_METADATA: &str = "rudder-reason";

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
    #[error("{0}")]
    Forbidden(String),
    /// A version or continue token older than the server's history: relist.
    #[error("{0}")]
    Expired(String),
    /// The store refuses writes (disk full, not writable).
    #[error("{0}")]
    InsufficientStorage(String),
    /// No server could be reached.
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
            ClientError::Unavailable(_) | ClientError::Conflict(_) | ClientError::Other(_)
        )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::NotFound(_))
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Conflict(_))
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
            (Code::NotFound, _) => ClientError::NotFound(msg),
            (Code::AlreadyExists, _) => ClientError::AlreadyExists(msg),
            (Code::Aborted, _) => ClientError::Conflict(msg),
            (Code::InvalidArgument, _) => ClientError::Invalid(msg),
            (Code::PermissionDenied, _) | (Code::Unauthenticated, _) => ClientError::Forbidden(msg),
            (Code::OutOfRange, _) => ClientError::Expired(msg),
            (Code::ResourceExhausted, _) => ClientError::InsufficientStorage(msg),
            (Code::Unavailable, _) => ClientError::Unavailable(msg),
            _ => ClientError::Other(format!("{:?}: {msg}", s.code())),
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
    channels: Vec<Channel>,
    current: AtomicUsize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("addrs", &self.inner.addrs).finish()
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
    /// A client for the given server addresses (`host:port` or URIs). Connections are made on
    /// first use, so this fails only for malformed addresses.
    pub fn new<S: AsRef<str>>(addrs: &[S]) -> Result<Self, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::Invalid("no API server address given".into()));
        }
        let mut channels = Vec::new();
        let mut names = Vec::new();
        for a in addrs {
            let a = a.as_ref().trim();
            let ep = Endpoint::from_shared(endpoint_uri(a))
                .map_err(|e| ClientError::Invalid(format!("invalid server address \"{a}\": {e}")))?
                .connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_while_idle(true);
            channels.push(ep.connect_lazy());
            names.push(a.to_string());
        }
        Ok(Client {
            inner: Arc::new(Inner {
                addrs: names,
                channels,
                current: AtomicUsize::new(0),
            }),
        })
    }

    /// The configured server addresses.
    pub fn addrs(&self) -> &[String] {
        &self.inner.addrs
    }

    /// Runs `call` against the current server, failing over to the next ones while the
    /// transport reports the server unreachable.
    async fn with_failover<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let n = self.inner.channels.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            match call(self.inner.channels[idx].clone()).await {
                Ok(v) => {
                    if idx != start {
                        self.inner.current.store(idx, Ordering::Relaxed);
                    }
                    return Ok(v);
                }
                Err(s) if is_transport_unavailable(&s) => {
                    tracing::debug!(server = %self.inner.addrs[idx], error = %s, "server unreachable, trying the next");
                    last = Some(s);
                }
                Err(s) => return Err(s.into()),
            }
        }
        let detail = last.map(|s| s.message().to_string()).unwrap_or_default();
        Err(ClientError::Unavailable(format!(
            "no API server reachable at {}: {detail}",
            self.inner.addrs.join(", ")
        )))
    }

    fn resources(ch: Channel) -> pb::resources_client::ResourcesClient<Channel> {
        pb::resources_client::ResourcesClient::new(ch)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    pub async fn create(&self, req: pb::CreateRequest) -> Result<pb::Object, ClientError> {
        self.with_failover(|ch| {
            let req = req.clone();
            async move { Ok(Self::resources(ch).create(req).await?.into_inner()) }
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
        self.with_failover(|ch| {
            let req = req.clone();
            async move { Ok(Self::resources(ch).update(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn update_status(&self, req: pb::UpdateRequest) -> Result<pb::Object, ClientError> {
        self.with_failover(|ch| {
            let req = req.clone();
            async move { Ok(Self::resources(ch).update_status(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn patch(&self, req: pb::PatchRequest) -> Result<pb::Object, ClientError> {
        self.with_failover(|ch| {
            let req = req.clone();
            async move { Ok(Self::resources(ch).patch(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn delete(&self, req: pb::DeleteRequest) -> Result<pb::DeleteResponse, ClientError> {
        self.with_failover(|ch| {
            let req = req.clone();
            async move { Ok(Self::resources(ch).delete(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn bind(&self, req: pb::BindRequest) -> Result<pb::Object, ClientError> {
        self.with_failover(|ch| {
            let req = req.clone();
            async move { Ok(Self::resources(ch).bind(req).await?.into_inner()) }
        })
        .await
    }

    /// Opens a watch stream. Events end with an ERROR event (expired, too slow) or the stream
    /// closing; both mean "watch again from the last version seen".
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

/// A `KindRef` from apiVersion and kind.
pub fn kind_ref(api_version: &str, kind: &str) -> pb::KindRef {
    pb::KindRef {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    }
}
