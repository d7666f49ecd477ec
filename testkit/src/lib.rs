//! Rudder's shared test harness: what every component's integration tests use instead of
//! writing their own (a dev-dependency only; nothing here ships).
//!
//! Layout:
//! - [`server`]: [`TestServer`], a real API server (`rudder_apiserver::Server::start`, the path
//!   the binary runs) in this process on a free loopback port, over its own temporary data
//!   directory, with a connected [`rudder_client::Client`]; stopped and cleaned up on drop.
//! - [`conformance`]: the API-semantics suite, written once against `Arc<dyn Api>` and run
//!   against both the in-process server and `rudder_client::fake::FakeApi`, so the fake that
//!   component tests rely on is held to the server's (Kubernetes') behaviour.
//! - [`images`]: local container images for tests (busybox, the static test server of
//!   `testserver/main.rs`), built once per run with the docker CLI, and a cleanup guard.
//!
//! - [`nodesim`]: [`NodeSim`], simulated nodes that mark bound pods Running and Ready (or
//!   crash-looping, never ready, finished) and confirm their deletion, for controller tests
//!   that need pods without containers.

pub mod conformance;
pub mod images;
pub mod nodesim;
pub mod server;

pub use nodesim::{Fate, NodeSim};

pub use server::{TestServer, TestServerBuilder, TestkitError};
