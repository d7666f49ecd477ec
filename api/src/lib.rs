//! Rudder's object model: Kubernetes' own schema (from `k8s-openapi`, one pinned version) and the
//! machinery every component shares to handle it.
//!
//! Layout:
//! - [`registry`]: the kind registry (group, version, kind, plural, short names, scope, status) and
//!   the per-kind admission operations (strict decode, defaults, validation); `builtin`: its
//!   table of the kinds served out of the box.
//! - [`convert`]: kinds served in more than one version, converted to and from one storage
//!   version; [`removed`]: the versions Kubernetes removed, refused as kubectl refuses them.
//! - [`decode`]: YAML/JSON to typed objects, strictly, with errors that name the field path.
//! - [`eviction`]: the eviction subresource's decision and PodDisruptionBudget conditions,
//!   shared by the server, the client's fake and the disruption controller.
//! - [`meta`]: generic access to `metadata` on untyped JSON objects.
//! - [`selector`]: label selectors (strings and `LabelSelector` objects) and field selectors.
//! - [`quantity`]: resource quantities (`500m`, `128Mi`) as integer milli-units and bytes.
//! - [`resources`]: a pod's effective requests and a node's allocatable, as Kubernetes adds
//!   them up (shared by the scheduler and the node agent's admission).
//! - [`typed`]: decoding stored JSON into each kind's k8s-openapi type, instantiated here once.
//! - [`defaults`] and [`validation`]: Kubernetes' defaulting and validation, kind by kind.
//!
//! All typed (de)serialisation lives in this crate so that its compile cost is paid once.

mod builtin;
pub mod convert;
pub mod decode;
pub mod defaults;
pub mod eviction;
pub mod meta;
pub mod quantity;
pub mod registry;
pub mod removed;
pub mod resources;
pub mod selector;
pub mod typed;
pub mod validation;

pub use k8s_openapi;
pub use registry::{KindInfo, Registry};

/// The Kubernetes schema version this build is pinned to.
pub const KUBERNETES_SCHEMA: &str = "1.34";
