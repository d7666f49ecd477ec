//! The controllers' error type and the error policy the runner applies to it.

use rudder_client::ClientError;
use rudder_client::controller::Action;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A read or write failed: retried with the key's back-off.
    #[error(transparent)]
    Api(#[from] ClientError),
    /// The object cannot be acted on as written (an unparsable selector, a bad maxSurge): no
    /// retry helps until the object changes, which queues it again.
    #[error("{0}")]
    Invalid(String),
}

/// Retries API failures with back-off; waits for a change after an invalid object.
pub fn policy(err: &Error, key: &str) -> Action {
    match err {
        Error::Api(e) => {
            tracing::warn!(%key, error = %e, "reconcile failed; requeueing with back-off");
            Action::RequeueRateLimited
        }
        Error::Invalid(e) => {
            tracing::warn!(%key, error = %e, "object cannot be reconciled until it changes");
            Action::AwaitChange
        }
    }
}
