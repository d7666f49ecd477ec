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
