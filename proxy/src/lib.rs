//! Rudder's service proxy (kube-proxy's part of `rudder-proxy`): turns Services and their
//! EndpointSlices into the node's data plane.
//!
//! Layout:
//! - [`services`]: the desired map, Service port → frontends and the endpoints that may take
//!   new connections, computed from the objects alone (pure).
//! - [`dataplane`]: the one contract the data planes sit behind (`sync(desired)`, applied as one
//!   transaction), with the nftables implementation.
//! - [`sync`]: the loop from informers to the data plane.
//! - [`ingress`]: Ingress, an HTTP and HTTPS entry point routing by host and path.
//!
//! See `docs/proxy.md`.

pub mod dataplane;
pub mod dns;
pub mod ingress;
pub mod services;
pub mod sync;
