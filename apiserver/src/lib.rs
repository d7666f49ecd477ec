//! Rudder's API server: the only owner of cluster state.
//!
//! Layout, from the disk up:
//! - [`storage`]: the key-value engine trait, sled behind it, and an in-memory fake.
//! - [`state`]: the deterministic state machine that applies write commands.
//! - [`raft`]: the durable segmented log (the record of every write today, Raft's log next), over
//!   a file-system seam with a crash-simulating fake.
//! - [`store`]: the state machine behind the log seam ([`store::Log`]):
//!   group commit, checkpoints into the engine, the watch hub and the read path.
//! - [`service`]: the API's semantics (create/get/list/update/status/patch/delete/watch/bind) as
//!   plain async functions, with Kubernetes' rules for metadata, concurrency, finalizers and
//!   namespaces.
//! - [`auth`]: the one authentication layer every request passes.
//! - [`grpc`]: thin tonic handlers over the service.
//! - [`relay`]: logs, exec and port-forward relayed to node agents over streams they opened.
//! - [`maintenance`]: scheduled backups with retention, and the store alarm.
//! - [`server`]: assembling and running all of it.

pub mod auth;
pub mod clock;
pub mod error;
pub mod grpc;
pub mod maintenance;
pub mod raft;
pub mod relay;
pub mod replica;
pub mod server;
pub mod service;
pub mod state;
pub mod storage;
pub mod store;

pub use server::{Server, ServerConfig};
