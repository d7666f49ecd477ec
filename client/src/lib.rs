//! Rudder's shared client library: everything a component needs to talk to the API server.
//!
//! Layout:
//! - [`conn`]: [`Client`], the gRPC connection to one or more API servers with failover, and
//!   [`ClientError`], whose variants mirror the server's Kubernetes-style reasons.
//! - [`api`]: the [`Api`] trait, the process boundary every component codes against, implemented
//!   by [`Client`] and by the in-memory [`fake::FakeApi`] for tests.
//! - [`clock`]: injected wall/monotonic time and jitter, and the shared [`clock::Backoff`].
//! - [`cache`] and [`reflector`]: list+watch into a local cache with indexes and cheap readers.
//! - [`informer`]: shared informers, one list+watch per kind per process, many subscribers.
//! - [`workqueue`]: keys to reconcile, coalesced, one worker per key, rate limited.
//! - [`controller`]: the reconcile-loop runner over a work queue.
//! - [`leader`]: leader election through a `coordination.k8s.io/v1` Lease.
//! - [`events`]: the core/v1 Event recorder.
//! - [`write`]: status merge patches with observedGeneration, finalizers.
//! - [`expectations`]: "wait until the cache saw my writes" per owner, as Kubernetes' controllers.
//! - [`health`]: the `/healthz` endpoint every component serves.
//! - [`streams`]: logs, exec and port-forward through the API server's relay.
//! - [`tls`]: mutual TLS to the API servers and the credentials file.
//!
//! See `docs/client.md` for how the pieces fit.

pub mod api;
pub mod cache;
pub mod clock;
pub mod conn;
pub mod controller;
pub mod events;
pub mod expectations;
pub mod fake;
pub mod health;
pub mod informer;
pub mod leader;
pub mod reflector;
pub mod streams;
pub mod tls;
pub mod workqueue;
pub mod write;

pub use api::{Api, WatchEvent, WatchStream};
pub use conn::{Client, ClientError};
pub use rudder_proto as proto;
