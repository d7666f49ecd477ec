//! The CLI's error type and how each error becomes the one line a user sees.
//!
//! Server errors read like kubectl's (`Error from server (NotFound): ...`) so that scripts and
//! people used to kubectl recognise them; local problems read `error: ...`.

use rudder_client::ClientError;

/// Everything a command can fail with. `Display` is the exact line printed to stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error; `context` says which operation (may be empty).
    #[error("{}", server_line(.err, .context))]
    Server { err: ClientError, context: String },
    /// A local problem: bad arguments, unreadable file, unknown kind.
    #[error("error: {}", one_line(.0))]
    Msg(String),
    #[error("error: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The problem was already printed (e.g. several per-object errors): only exit non-zero.
    #[error("")]
    Reported,
}

impl From<ClientError> for CliError {
    fn from(err: ClientError) -> Self {
        CliError::Server {
            err,
            context: String::new(),
        }
    }
}

impl CliError {
    pub fn msg(s: impl Into<String>) -> Self {
        CliError::Msg(s.into())
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CliError::Io {
            context: context.into(),
            source,
        }
    }

    /// Adds "error when creating \"file\"" style context to a server error.
    pub fn with_context(self, ctx: impl Into<String>) -> Self {
        match self {
            CliError::Server { err, .. } => CliError::Server {
                err,
                context: ctx.into(),
            },
            other => other,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            CliError::Server {
                err: ClientError::NotFound(_),
                ..
            }
        )
    }

    /// Whether this is stdout being closed under us (`rudder get pods | head`), which is not an
    /// error worth reporting.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// Server messages may span lines (validation lists); the CLI promises one line per error.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// kubectl's reason names for each error class.
pub fn reason(err: &ClientError) -> &'static str {
    match err {
        ClientError::NotFound(_) => "NotFound",
        ClientError::AlreadyExists(_) => "AlreadyExists",
        ClientError::Conflict(_) => "Conflict",
        ClientError::Invalid(_) => "Invalid",
        ClientError::BadRequest(_) => "BadRequest",
        ClientError::Timeout(_) => "Timeout",
        ClientError::Forbidden(_) => "Forbidden",
        ClientError::Unauthorized(_) => "Unauthorized",
        ClientError::Expired(_) => "Expired",
        ClientError::TooManyRequests(_) => "TooManyRequests",
        ClientError::InsufficientStorage(_) => "InsufficientStorage",
        ClientError::Unavailable(_) => "ServiceUnavailable",
        ClientError::Other(_) => "InternalError",
    }
}

fn server_line(err: &ClientError, context: &str) -> String {
    let msg = one_line(&err.to_string());
    if let ClientError::Unavailable(m) = err {
        // The client's own "no API server reachable at ..." is a connection failure, not an
        // answer from a server: say so plainly.
        if m.starts_with("no API server reachable") {
            return format!("error: {msg}");
        }
    }
    let ctx = if context.is_empty() {
        String::new()
    } else {
        format!("{context}: ")
    };
    format!("Error from server ({}): {ctx}{msg}", reason(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_look_like_kubectl() {
        let e = CliError::from(ClientError::NotFound(
            "deployments.apps \"web\" not found".into(),
        ));
        assert_eq!(
            e.to_string(),
            "Error from server (NotFound): deployments.apps \"web\" not found"
        );
        let e = CliError::from(ClientError::Invalid("spec.replicas: bad\n and more".into()))
            .with_context("error when creating \"d.yaml\"");
        assert_eq!(
            e.to_string(),
            "Error from server (Invalid): error when creating \"d.yaml\": spec.replicas: bad and more"
        );
        let e = CliError::from(ClientError::Unavailable(
            "no API server reachable at 127.0.0.1:1: refused".into(),
        ));
        assert_eq!(
            e.to_string(),
            "error: no API server reachable at 127.0.0.1:1: refused"
        );
    }
}
