//! The one contract every data plane sits behind: [`DataPlane::sync`] makes the node forward
//! as the desired map says, in one transaction, so no connection ever sees half a sync.
//!
//! - [`nft`]: the kernel data plane, an nftables table rewritten per sync (kube-proxy's
//!   `nftables` mode), the default.
//! - [`userspace`]: listeners in the proxy that copy each connection, reached through nftables
//!   redirects (kube-proxy's old `userspace` mode), for comparison and where NAT to pods is not
//!   wanted.

pub mod nft;
pub mod userspace;

use futures::future::BoxFuture;

use crate::services::Desired;

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// The kernel (or the tool that talks to it) refused the transaction; nothing of it applied.
    #[error("applying the {plane} rules failed: {reason}")]
    Apply { plane: &'static str, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A data plane: applies a whole desired map at once, and removes everything it installed.
pub trait DataPlane: Send {
    /// Makes the node forward exactly as `desired` says. Either all of it applies or none;
    /// after an error the next sync starts from scratch.
    fn sync<'a>(&'a mut self, desired: &'a Desired) -> BoxFuture<'a, Result<(), DataPlaneError>>;

    /// Removes everything this data plane installed (on shutdown with `--cleanup`).
    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), DataPlaneError>>;
}
