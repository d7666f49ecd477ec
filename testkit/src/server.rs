//! [`TestServer`]: a real API server in this process, for integration tests.
//!
//! Guarantees:
//! - the server is the one the binary runs ([`rudder_apiserver::Server::start`]): same storage
//!   (log + sled), bootstrap (`default`, `kube-system`, `kube-public`, `kube-node-lease`), admission and gRPC stack;
//! - it listens on a free `127.0.0.1` port and is ready when [`TestServerBuilder::start`]
//!   returns (the listener is bound and the system namespaces exist before that);
//! - every server has its own temporary data directory, removed when the handle is dropped,
//!   also when the test fails or panics.
//!
//! Teardown: [`TestServer::shutdown`] stops the server gracefully and then removes the data
//! directory. Dropping the handle instead signals shutdown and hands the directory to a task
//! that removes it once the server has stopped, or when the test's runtime ends, whichever
//! comes first; without a runtime it is removed at once.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rudder_apiserver::clock::{Clock, Ids};
use rudder_apiserver::{Server, ServerConfig};
use rudder_client::{Api, Client, ClientError};
use tempfile::TempDir;
use tokio::net::TcpListener;

/// Why a test server could not start.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("cannot create the data directory or listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("the API server did not start: {0}")]
    Start(#[from] rudder_apiserver::server::StartError),
    #[error("cannot build a client: {0}")]
    Client(#[from] ClientError),
}

/// Options for a [`TestServer`]; defaults are the binary's except where noted.
pub struct TestServerBuilder {
    history_window: Option<usize>,
    watch_buffer: Option<usize>,
    bookmark_interval: Option<Duration>,
    clock: Option<Arc<dyn Clock>>,
    seed: Option<u64>,
    /// Tests write little; a nearly full disk on a build machine must not refuse their writes.
    min_free_bytes: u64,
    default_toleration_seconds: Option<i64>,
}

impl TestServerBuilder {
    /// Events the server keeps for watches to resume from (`--history-window`).
    pub fn history_window(mut self, events: usize) -> Self {
        self.history_window = Some(events);
        self
    }

    /// Events a watcher may fall behind before it is cut off (`--watch-buffer`).
    pub fn watch_buffer(mut self, events: usize) -> Self {
        self.watch_buffer = Some(events);
        self
    }

    /// Default interval between BOOKMARKs on watches that allow them.
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = Some(d);
        self
    }

    /// The wall clock the server stamps objects with.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Seeds uids and generated names, for reproducible objects.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Writes are refused below this much free space (default 1 MiB, not the binary's 64 MiB).
    pub fn min_free_bytes(mut self, bytes: u64) -> Self {
        self.min_free_bytes = bytes;
        self
    }

    /// The `tolerationSeconds` of the not-ready and unreachable tolerations every pod gets
    /// (`--default-not-ready-toleration-seconds`, `--default-unreachable-toleration-seconds`;
    /// 300 by default).
    pub fn default_toleration_seconds(mut self, seconds: i64) -> Self {
        self.default_toleration_seconds = Some(seconds);
        self
    }

    /// Starts the server. Must run inside a tokio runtime, which then drives the server.
    pub async fn start(self) -> Result<TestServer, TestkitError> {
        let dir = tempfile::Builder::new().prefix("rudder-test-").tempdir()?;
        let mut config = ServerConfig::new(dir.path());
        if let Some(n) = self.history_window {
            config.store.history_window = n;
        }
        if let Some(n) = self.watch_buffer {
            config.store.watch_buffer = n;
        }
        config.store.min_free_bytes = self.min_free_bytes;
        if let Some(d) = self.bookmark_interval {
            config.api.bookmark_interval = d;
        }
        if let Some(c) = self.clock {
            config.clock = c;
        }
        if let Some(s) = self.default_toleration_seconds {
            config.api.default_not_ready_toleration_seconds = s;
            config.api.default_unreachable_toleration_seconds = s;
        }
        if let Some(seed) = self.seed {
            config.ids = Arc::new(Ids::seeded(seed));
        }
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let server = Server::start(config, listener).await?;
        let addr = server.addr;
        let client = Client::new(&[addr.to_string()])?;
        Ok(TestServer {
            addr,
            client,
            server: Some(server),
            dir: Some(dir),
        })
    }
}

/// A running in-process API server with a client connected to it.
pub struct TestServer {
    addr: SocketAddr,
    client: Client,
    server: Option<Server>,
    dir: Option<TempDir>,
}

impl TestServer {
    /// A server with the default options.
    pub async fn start() -> Result<TestServer, TestkitError> {
        Self::builder().start().await
    }

    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            history_window: None,
            watch_buffer: None,
            bookmark_interval: None,
            clock: None,
            seed: None,
            min_free_bytes: 1024 * 1024,
            default_toleration_seconds: None,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A gRPC client of this server (cheap to clone).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The client as the [`Api`] that components take.
    pub fn api(&self) -> Arc<dyn Api> {
        Arc::new(self.client.clone())
    }

    /// The server's own API, for looking behind the wire (store statistics, watch counts).
    pub fn server_api(&self) -> Option<&rudder_apiserver::service::Api> {
        self.server.as_ref().map(|s| &s.api)
    }

    /// The server's data directory (removed at teardown).
    pub fn data_dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(TempDir::path)
    }

    /// Stops the server, letting in-flight calls finish, then removes its data directory.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        drop(self.dir.take());
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let server = self.server.take();
        let dir = self.dir.take();
        match (server, tokio::runtime::Handle::try_current()) {
            // If the runtime ends first, the task is dropped and the directory with it.
            (Some(server), Ok(rt)) => {
                rt.spawn(async move {
                    server.shutdown().await;
                    drop(dir);
                });
            }
            (server, _) => {
                drop(server);
                drop(dir);
            }
        }
    }
}
