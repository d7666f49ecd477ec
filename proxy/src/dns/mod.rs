//! Cluster DNS on every node: the cluster zone ([`zone`]) answered from the same informers as
//! the data plane, other names forwarded to the host's servers ([`server`]).

pub mod server;
pub mod zone;
