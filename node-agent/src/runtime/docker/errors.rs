//! Engine errors as [`RuntimeError`]s: what the engine said, kept verbatim, sorted by what the
//! caller can do about it (retry later, pull, give up on this configuration, ...).

use bollard::errors::Error;

use super::super::RuntimeError;

/// What the failed request was about: a 404 means a different thing for each.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ctx<'a> {
    /// A request naming a container: 404 is [`RuntimeError::NotFound`].
    Container(&'a str),
    /// Creating a container from an image: 404 is the image (or the network) missing.
    Create { image: &'a str },
    /// Pulling: every answer of the engine is [`RuntimeError::PullFailed`].
    Pull { image: &'a str },
    /// Anything else (networks, image inspection, builds).
    Other,
}

/// The engine's message for an error it answered with, or `None` for transport failures.
fn server_error(e: &Error) -> Option<(u16, &str)> {
    match e {
        Error::DockerResponseServerError {
            status_code,
            message,
        } => Some((*status_code, message.as_str())),
        _ => None,
    }
}

/// True for failures to reach the engine at all (as opposed to the engine saying no).
pub(super) fn is_transport(e: &Error) -> bool {
    matches!(
        e,
        Error::HyperLegacyError { .. }
            | Error::HyperResponseError { .. }
            | Error::IOError { .. }
            | Error::SocketNotFoundError(_)
            | Error::RequestTimeoutError
            | Error::UnsupportedURISchemeError { .. }
    )
}

/// Whether the message is the engine refusing an address or port (taken by someone else).
fn is_address_conflict(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("port is already allocated")
        || m.contains("address already in use")
        || m.contains("pool overlaps")
}

pub(super) fn map(e: Error, ctx: Ctx<'_>, endpoint: &str) -> RuntimeError {
    if is_transport(&e) {
        return RuntimeError::Unavailable(format!("{endpoint}: {e}"));
    }
    if let Ctx::Pull { image } = ctx {
        let message = match &e {
            Error::DockerResponseServerError { message, .. } => message.clone(),
            Error::DockerStreamError { error } => error.clone(),
            other => other.to_string(),
        };
        return RuntimeError::PullFailed {
            image: image.to_string(),
            message,
        };
    }
    let Some((status, message)) = server_error(&e) else {
        return match e {
            Error::DockerStreamError { error } => RuntimeError::Engine(error),
            other => RuntimeError::Engine(other.to_string()),
        };
    };
    match (status, ctx) {
        (404, Ctx::Container(id)) => RuntimeError::NotFound(id.to_string()),
        (404, Ctx::Create { image }) if message.starts_with("No such image") => {
            RuntimeError::ImageNotFound {
                image: image.to_string(),
                message: message.to_string(),
            }
        }
        // A missing network or sandbox: this configuration cannot be created.
        (404, Ctx::Create { .. }) => RuntimeError::Refused(message.to_string()),
        (400 | 403 | 409, _) => RuntimeError::Refused(message.to_string()),
        (_, _) if is_address_conflict(message) => RuntimeError::Refused(message.to_string()),
        _ => RuntimeError::Engine(format!("{message} (HTTP {status})")),
    }
}

/// For starting a container: whatever the engine answers (bad executable, address in use,
/// unknown user, ...) is it refusing this container, except that the container is missing.
pub(super) fn map_start(e: Error, id: &str, endpoint: &str) -> RuntimeError {
    match server_error(&e) {
        Some((404, message)) if message.contains("No such container") => {
            RuntimeError::NotFound(id.to_string())
        }
        Some((_, message)) => RuntimeError::Refused(message.to_string()),
        None => map(e, Ctx::Container(id), endpoint),
    }
}

/// A 409 "is not running" (kill, exec of a stopped container).
pub(super) fn is_not_running(e: &Error) -> bool {
    matches!(server_error(e), Some((409, m)) if m.contains("is not running"))
}

pub(super) fn is_not_found(e: &Error) -> bool {
    matches!(server_error(e), Some((404, _)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> Error {
        Error::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        }
    }

    #[test]
    fn a_missing_image_is_image_not_found_with_the_engines_message() {
        let e = map(
            server(404, "No such image: x:v1"),
            Ctx::Create { image: "x:v1" },
            "unix:///s",
        );
        assert_eq!(
            e,
            RuntimeError::ImageNotFound {
                image: "x:v1".into(),
                message: "No such image: x:v1".into()
            }
        );
        let e = map(
            server(404, "network n not found"),
            Ctx::Create { image: "x:v1" },
            "e",
        );
        assert_eq!(e, RuntimeError::Refused("network n not found".into()));
    }

    #[test]
    fn conflicts_and_taken_addresses_are_refusals() {
        let e = map(server(409, "Conflict. The name is in use"), Ctx::Other, "e");
        assert!(matches!(e, RuntimeError::Refused(_)));
        let e = map(
            server(
                500,
                "driver failed ...: Bind for 0.0.0.0:80 failed: port is already allocated",
            ),
            Ctx::Other,
            "e",
        );
        assert!(matches!(e, RuntimeError::Refused(_)));
        let e = map(server(500, "something broke"), Ctx::Other, "e");
        assert_eq!(e, RuntimeError::Engine("something broke (HTTP 500)".into()));
    }

    #[test]
    fn pull_errors_carry_the_engines_message_and_transport_errors_name_the_endpoint() {
        let e = map(
            Error::DockerStreamError {
                error: "manifest unknown".into(),
            },
            Ctx::Pull { image: "a:b" },
            "e",
        );
        assert_eq!(
            e,
            RuntimeError::PullFailed {
                image: "a:b".into(),
                message: "manifest unknown".into()
            }
        );
        let e = map(
            Error::SocketNotFoundError("/nope.sock".into()),
            Ctx::Pull { image: "a:b" },
            "unix:///nope.sock",
        );
        assert!(
            matches!(&e, RuntimeError::Unavailable(m) if m.contains("unix:///nope.sock")),
            "{e:?}"
        );
        let e = map(
            server(404, "No such container: c1"),
            Ctx::Container("c1"),
            "e",
        );
        assert_eq!(e, RuntimeError::NotFound("c1".into()));
    }
}
