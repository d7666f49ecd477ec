//! Rudder's shared client library: everything a component needs to talk to the API server.
//!
//! Layout:
//! - [`conn`]: [`Client`], the gRPC connection to one or more API servers with failover, and
//!   [`ClientError`], whose variants mirror the server's Kubernetes-style reasons.

pub mod conn;

pub use conn::{Client, ClientError};
pub use rudder_proto as proto;
