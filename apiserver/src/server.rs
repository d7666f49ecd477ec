//! Assembling and running an API server: storage, store, API, gRPC services, auth layer.
//!
//! [`Server::start`] is what the binary runs and what in-process tests run, so both exercise
//! the same path. The listener is passed in (`serve_with_incoming`), so tests pick free ports and
//! a simulated network can later stand in for TCP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rudder_proto as pb;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::auth::AuthLayer;
use crate::auth::authn::Authenticator;
use crate::auth::secure::{AuthorizationMode, Secured, Security};
use crate::clock::{Clock, Ids, SystemClock};
use crate::grpc::GrpcApi;
use crate::replica::{RaftHandle, ReplicaConfig};
use crate::service::{Api, ApiConfig, index_object};
use crate::storage::{SledStorage, Storage, StorageError};
use crate::store::{Store, StoreConfig};

/// Everything needed to start a server.
#[derive(Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub api: ApiConfig,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<Ids>,
    /// Set for a member of a replicated cluster: its place, and the listener of its Raft port.
    pub replica: Option<(ReplicaConfig, Arc<std::sync::Mutex<Option<TcpListener>>>)>,
    /// TLS, authentication and authorization. `None` serves plaintext to anonymous callers who
    /// may do anything: only for in-process tests and `--insecure-allow-all`.
    pub security: Option<Security>,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            store: StoreConfig::default(),
            api: ApiConfig::default(),
            clock: Arc::new(SystemClock),
            ids: Arc::new(Ids::from_entropy()),
            replica: None,
            security: None,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot create the system namespaces: {0}")]
    Bootstrap(#[from] crate::error::ApiError),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error("cannot set up TLS: {0}")]
    Pki(#[from] crate::auth::pki::PkiError),
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub api: Api,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    expiry: JoinHandle<()>,
    /// Scheduled backups and the store alarm ([`crate::maintenance`]).
    maintenance: JoinHandle<()>,
    /// The serving certificate's renewal, on a secured port.
    renewal: Option<JoinHandle<()>>,
    /// A replicated member's Raft and the task serving its Raft port.
    raft: Option<(RaftHandle, JoinHandle<Result<(), tonic::transport::Error>>)>,
}

/// Serves the Raft port (master-to-master traffic only).
fn serve_raft(
    raft: RaftHandle,
    store: Store,
    listener: TcpListener,
) -> (RaftHandle, JoinHandle<Result<(), tonic::transport::Error>>) {
    let svc = crate::replica::network::RaftService::new(raft.clone(), store).server();
    let incoming = TcpListenerStream::new(listener).map(|s| {
        s.and_then(|s| {
            s.set_nodelay(true)?;
            Ok(s)
        })
    });
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(svc)
            .serve_with_incoming(incoming),
    );
    (raft, task)
}

/// Computes each stored object's labels, fields and claims from its JSON, by its kind.
fn indexer() -> Arc<crate::store::Indexer> {
    let registry = rudder_api::Registry::builtin();
    Arc::new(move |key: &crate::state::ObjKey, v: &serde_json::Value| {
        let av = v.get("apiVersion").and_then(|x| x.as_str()).unwrap_or("");
        let kind = v.get("kind").and_then(|x| x.as_str()).unwrap_or("");
        match registry.by_api_version_kind(av, kind) {
            Ok(info) => index_object(info, v),
            Err(_) => {
                tracing::warn!(
                    ?key,
                    "stored object of an unregistered kind; indexing labels only"
                );
                crate::state::ObjIndex {
                    labels: rudder_api::meta::labels(v).into_iter().collect(),
                    ..Default::default()
                }
            }
        }
    })
}

/// Opens the store over any storage engine and returns the API on it.
pub async fn open_api<S: Storage>(storage: S, config: &ServerConfig) -> Result<Api, StartError> {
    let store = Store::open(
        storage,
        &config.data_dir.join("log"),
        config.store.clone(),
        &*indexer(),
    )?;
    let api = api_on(store, config);
    match api.bootstrap().await {
        // Serve reads even when the disk is full: the operator needs to look around.
        Err(crate::error::ApiError::InsufficientStorage(reason)) => {
            tracing::warn!(%reason, "system namespaces not created: the store refuses writes");
        }
        other => other?,
    }
    Ok(api)
}

fn api_on(store: Store, config: &ServerConfig) -> Api {
    let api = Api::new(
        store,
        rudder_api::Registry::builtin(),
        config.clock.clone(),
        config.ids.clone(),
        config.api.clone(),
    );
    match &config.security {
        Some(s) if s.authorization == AuthorizationMode::Rbac => api.with_rbac(),
        _ => api,
    }
}

/// Opens a member of a replicated cluster over `storage`; the system namespaces are created in
/// the background once the cluster has a leader.
pub async fn open_replicated_api<S: Storage>(
    storage: S,
    config: &ServerConfig,
    replica: &ReplicaConfig,
) -> Result<(Api, RaftHandle), StartError> {
    let dir = config.data_dir.join("raft");
    if config.data_dir.join("log").exists() {
        return Err(StartError::Storage(StorageError::Corrupt(format!(
            "{} holds a single master's store; a replicated member needs a data directory of its own (restore a snapshot into a new cluster to move the data)",
            config.data_dir.display()
        ))));
    }
    let (store, raft) = Store::open_replicated(
        storage,
        Arc::new(crate::raft::RealDisk),
        &dir,
        config.store.clone(),
        indexer(),
        replica,
        crate::replica::network::Network::default(),
    )
    .await?;
    let api = api_on(store, config);
    let bootstrap = api.clone();
    tokio::spawn(async move {
        loop {
            match bootstrap.bootstrap().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::info!(error = %e, "system namespaces not created yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok((api, raft))
}

/// Streams a client may reset before the server accepted them, per connection, before the
/// connection is closed (`ENHANCE_YOUR_CALM`).
pub const MAX_PENDING_RESET_STREAMS: usize = 1024;

impl Server {
    /// Opens the sled store under `data_dir` and serves on `listener`.
    pub async fn start(
        mut config: ServerConfig,
        listener: TcpListener,
    ) -> Result<Server, StartError> {
        let secured = match config.security.clone() {
            Some(s) => Some(Arc::new(Secured::prepare(
                s,
                listener.local_addr()?,
                config.clock.clone(),
            )?)),
            None => None,
        };
        let storage = SledStorage::open(&config.data_dir)?;
        let Some((replica, raft_listener)) = config.replica.take() else {
            let api = open_api(storage, &config).await?;
            return Ok(Self::serve_with(api, listener, secured));
        };
        let raft_listener = raft_listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| {
                StartError::Listen(std::io::Error::other("the Raft listener was already used"))
            })?;
        let (api, raft) = open_replicated_api(storage, &config, &replica).await?;
        let mut server = Self::serve_with(api, listener, secured);
        let store = server.api.store().clone();
        server.raft = Some(serve_raft(raft, store, raft_listener));
        Ok(server)
    }

    /// Serves an already opened API on `listener`, plaintext, to anyone.
    pub fn serve(api: Api, listener: TcpListener) -> Server {
        Self::serve_with(api, listener, None)
    }

    /// Serves an already opened API on `listener`; over mutual TLS when `secured`.
    pub fn serve_with(api: Api, listener: TcpListener, secured: Option<Arc<Secured>>) -> Server {
        // Event expiry runs beside the server and ends with it.
        let expiry = {
            let api = api.clone();
            tokio::spawn(async move {
                let ttl = api.config.event_ttl;
                let mut tick = tokio::time::interval(
                    (ttl / 60).clamp(Duration::from_secs(1), Duration::from_secs(60)),
                );
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    match api.expire_events(ttl).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(expired = n, "expired events"),
                        Err(e) => tracing::debug!(error = %e, "event expiry deferred"),
                    }
                }
            })
        };
        let maintenance = tokio::spawn(crate::maintenance::run(
            api.clone(),
            api.config.maintenance.clone(),
            api.health.clone(),
        ));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let grpc = GrpcApi::new(api.clone(), secured.clone());
        let authenticator = match &secured {
            Some(s) => s.authenticator.clone(),
            None => Arc::new(Authenticator::anonymous_only(api.clock.clone())),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            // h2's rapid-reset guard closes a connection once 20 streams were reset before the
            // server took them up. One component's connection carries all its watches and
            // calls, and a component that stops its controllers or loses its lease drops them
            // all at once; at 20 that closed the connection under the calls still going. The
            // guard stays, sized to what one component legitimately has in flight.
            .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESET_STREAMS))
            .layer(AuthLayer::new(authenticator))
            .add_service(
                pb::resources_server::ResourcesServer::new(grpc.clone())
                    .max_decoding_message_size(16 * 1024 * 1024)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(pb::discovery_server::DiscoveryServer::new(grpc.clone()))
            .add_service(pb::health_server::HealthServer::new(grpc.clone()))
            .add_service(pb::admin_server::AdminServer::new(grpc))
            .add_service(pb::streams_server::StreamsServer::new(
                crate::relay::StreamsService::new(api.clone()),
            ));
        let stop = async {
            let _ = rx.await;
        };
        let (task, renewal) = match secured {
            Some(s) => {
                let cfg = crate::auth::tls::server_config(s.serving.clone(), &s.verifier);
                let incoming =
                    crate::auth::tls::incoming(listener, Arc::new(cfg), s.verifier.clone());
                let renewal = tokio::spawn(s.renew_forever());
                (
                    tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop)),
                    Some(renewal),
                )
            }
            None => {
                // Accepted sockets do not inherit the builder's TCP_NODELAY; without it small
                // replies wait out the peer's delayed ACK (~40 ms).
                let incoming = TcpListenerStream::new(listener).map(|s| {
                    s.and_then(|s| {
                        s.set_nodelay(true)?;
                        Ok(s)
                    })
                });
                (
                    tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop)),
                    None,
                )
            }
        };
        Server {
            addr,
            api,
            shutdown: Some(tx),
            task,
            expiry,
            maintenance,
            renewal,
            raft: None,
        }
    }

    /// Stops accepting, ends watch streams, lets other in-flight calls finish, and waits for the
    /// server to end.
    pub async fn shutdown(mut self) {
        // Watch streams never end on their own; the graceful stop waits for every open call.
        self.api.close_watches();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.expiry.abort();
        self.maintenance.abort();
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
        if let Some((raft, task)) = self.raft.take() {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(error = %e, "raft did not stop cleanly");
            }
            task.abort();
        }
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "server task failed"),
        }
    }
}
