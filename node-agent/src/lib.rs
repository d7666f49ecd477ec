//! Rudder's node agent, the kubelet: registers its node, watches the pods bound to it through
//! the API server and runs them as containers through a [`runtime::ContainerRuntime`] (Docker).
//!
//! Layout:
//! - [`runtime`]: the contract at the engine boundary, the Docker implementation and a fake.
//! - [`pod`]: one worker per pod driving its containers to the desired state, and the status.
//! - [`agent`]: the pod set: admission, workers, relisting the runtime, adoption and cleanup.
//! - [`node`]: registration, conditions and the heartbeat Lease; [`host`]: facts about the host.
//! - [`summary`]: the node's and pods' CPU and memory use (kubelet's stats summary).
//! - [`relay`]: logs, exec and port-forward sessions the API server relays to this node.
//! - [`objects`]: ConfigMaps, Secrets and claims read for env and volumes; [`volumes`]: the
//!   pod's volumes as node directories.
//!
//! See `docs/node-agent.md`.

pub mod agent;
pub mod host;
pub mod node;
pub mod objects;
pub mod pod;
pub mod relay;
pub mod runtime;
pub mod summary;
pub mod volumes;
