//! Ingress on every node, as ingress-nginx serves it: HTTP and HTTPS entry points that route
//! requests by host and path to the ready endpoints of Services.
//!
//! - [`table`]: the routing table from Ingresses, IngressClasses, Services and EndpointSlices
//!   (pure); its doc states the matching and precedence rules.
//!
//! See `docs/proxy.md`.

pub mod table;
