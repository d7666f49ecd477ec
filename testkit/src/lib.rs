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
//!
//! Still to come here (see the design notes on crates): local test images and a node simulator.

pub mod conformance;
pub mod server;

pub use server::{TestServer, TestServerBuilder, TestkitError};
