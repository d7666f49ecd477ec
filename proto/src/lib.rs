//! Rudder's gRPC services and envelope messages.
//!
//! Objects travel as Kubernetes JSON in `bytes` fields beside their routing keys; see
//! `proto/rudder.proto` for the contract of each call.

#![allow(clippy::all, missing_docs)]

/// Generated from `proto/rudder.proto` (package `rudder.v1`).
pub mod v1 {
    tonic::include_proto!("rudder.v1");
}

pub use v1::*;

/// Reasons and codes of watch ERROR events, shared by the server, the client and the client's
/// fake so that all three decide by the same values. Clients decide by *reason*; codes follow
/// HTTP's meaning for humans reading logs.
pub mod watch_error {
    /// The requested version is older than the server's history: relist.
    pub const REASON_EXPIRED: &str = "Expired";
    /// HTTP 410 Gone, as Kubernetes sends for an expired resourceVersion.
    pub const CODE_EXPIRED: i32 = 410;
    /// The watcher fell behind and was cut off: watch again from `resume_resource_version`,
    /// no relist needed.
    pub const REASON_TOO_SLOW: &str = "TooSlow";
    /// HTTP 429 Too Many Requests: the server shed a consumer that could not keep up.
    pub const CODE_TOO_SLOW: i32 = 429;
}
