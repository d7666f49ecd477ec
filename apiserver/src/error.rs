//! API errors with Kubernetes' reasons and wording, and their one conversion to `tonic::Status`.

use tonic::{Code, Status};

use rudder_api::registry::KindInfo;

/// Metadata key carrying the Kubernetes reason on every error status.
pub const REASON_METADATA: &str = "rudder-reason";

/// An API call that failed, as a client should see it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {detail}")]
    Conflict {
        resource: String,
        name: String,
        detail: String,
    },
    #[error("{kind} \"{name}\" is invalid: {detail}")]
    Invalid {
        kind: String,
        name: String,
        detail: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Expired(String),
    /// A version newer than the store's, which did not catch up in time.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: u64, current: u64 },
    #[error("Request entity too large: the object is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// Kubernetes' 429: not now (an eviction a disruption budget forbids); try again later.
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn not_found(info: &KindInfo, name: &str) -> Self {
        ApiError::NotFound {
            resource: info.qualified_plural(),
            name: name.to_string(),
        }
    }

    pub fn already_exists(info: &KindInfo, name: &str) -> Self {
        ApiError::AlreadyExists {
            resource: info.qualified_plural(),
            name: name.to_string(),
        }
    }

    pub fn conflict(info: &KindInfo, name: &str, detail: impl Into<String>) -> Self {
        ApiError::Conflict {
            resource: info.qualified_plural(),
            name: name.to_string(),
            detail: detail.into(),
        }
    }

    /// The standard stale-version conflict.
    pub fn modified(info: &KindInfo, name: &str) -> Self {
        Self::conflict(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(info: &KindInfo, name: &str, detail: impl Into<String>) -> Self {
        let kind = if info.group.is_empty() {
            info.kind.to_string()
        } else {
            format!("{}.{}", info.kind, info.group)
        };
        ApiError::Invalid {
            kind,
            name: name.to_string(),
            detail: detail.into(),
        }
    }

    /// Kubernetes' reason string.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::Expired(_) => "Expired",
            ApiError::TooLargeResourceVersion { .. } => {
                rudder_proto::watch_error::REASON_TOO_LARGE_RESOURCE_VERSION
            }
            ApiError::TooLarge { .. } => "RequestEntityTooLarge",
            ApiError::TooManyRequests(_) => "TooManyRequests",
            ApiError::InsufficientStorage(_) => "InsufficientStorage",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::Internal(_) => "InternalError",
        }
    }

    fn code(&self) -> Code {
        match self {
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::AlreadyExists { .. } => Code::AlreadyExists,
            ApiError::Conflict { .. } => Code::Aborted,
            ApiError::Invalid { .. } | ApiError::BadRequest(_) | ApiError::TooLarge { .. } => {
                Code::InvalidArgument
            }
            ApiError::Forbidden(_) => Code::PermissionDenied,
            ApiError::Expired(_) => Code::OutOfRange,
            // Kubernetes answers 504 (reason Timeout): the same call may succeed later.
            ApiError::TooLargeResourceVersion { .. } => Code::DeadlineExceeded,
            // gRPC's mapping of HTTP 429; the reason tells it from a full store.
            ApiError::TooManyRequests(_) | ApiError::InsufficientStorage(_) => {
                Code::ResourceExhausted
            }
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let mut s = Status::new(e.code(), e.to_string());
        s.metadata_mut().insert(
            REASON_METADATA,
            tonic::metadata::MetadataValue::from_static(e.reason()),
        );
        s
    }
}
