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

/// Response metadata a replicated follower sets on a write's answer (it forwarded the write to
/// the leader); clients then send their writes to another master until they reach the leader.
pub const FOLLOWER_METADATA: &str = "rudder-follower";

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
    /// The requested version is newer than this server's store, which did not catch up within
    /// a few seconds (Kubernetes: "Too large resource version", reason Timeout, cause
    /// ResourceVersionTooLarge): retry later, or on another server. Also the reason of the
    /// unary error for a continue token from such a version.
    pub const REASON_TOO_LARGE_RESOURCE_VERSION: &str = "ResourceVersionTooLarge";
    /// HTTP 504 Gateway Timeout, as Kubernetes sends for it.
    pub const CODE_TOO_LARGE_RESOURCE_VERSION: i32 = 504;
}
