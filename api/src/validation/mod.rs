//! Validation as Kubernetes validates: each error names the field path and the reason, in
//! Kubernetes' words (`spec.replicas: Invalid value: -1: must be greater than or equal to 0`).
//!
//! [`validate_object_meta`] covers what every kind shares; [`Validate`] is implemented per kind
//! and receives the stored object on update, for immutable fields.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::registry::KindInfo;
use crate::selector::{is_dns_label, is_dns_subdomain, validate_key, validate_value};

/// How a kind's `metadata.name` is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds).
    Subdomain,
    /// RFC 1123 label (Namespace, Service).
    Label,
    /// Anything usable as a URL path segment (RBAC kinds).
    PathSegment,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    Required,
    Invalid {
        value: String,
        detail: String,
    },
    NotSupported {
        value: String,
        supported: Vec<String>,
    },
    Duplicate {
        value: String,
    },
    /// A reference to something that does not exist (a volume mount naming no volume).
    NotFound {
        value: String,
    },
    Forbidden {
        detail: String,
    },
    TooLong {
        max: usize,
    },
    Immutable,
}

/// An offending value, rendered as Kubernetes renders it in messages: strings quoted, numbers
/// and booleans bare. The value's type decides, not its text (`"0"` stays quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue(pub String);

macro_rules! bare {
    ($($t:ty),*) => {
        $(impl From<$t> for BadValue {
            fn from(v: $t) -> Self {
                BadValue(v.to_string())
            }
        }
        impl From<&$t> for BadValue {
            fn from(v: &$t) -> Self {
                BadValue(v.to_string())
            }
        })*
    };
}

bare!(i32, i64, u16, u32, u64, usize, f64, bool);

impl From<&str> for BadValue {
    fn from(v: &str) -> Self {
        BadValue(format!("\"{v}\""))
    }
}

impl From<String> for BadValue {
    fn from(v: String) -> Self {
        BadValue::from(v.as_str())
    }
}

impl From<&String> for BadValue {
    fn from(v: &String) -> Self {
        BadValue::from(v.as_str())
    }
}

impl From<&&str> for BadValue {
    fn from(v: &&str) -> Self {
        BadValue::from(*v)
    }
}

/// One validation failure at a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub kind: ErrorKind,
}

impl FieldError {
    pub fn required(path: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            kind: ErrorKind::Required,
        }
    }

    pub fn invalid(
        path: impl Into<String>,
        value: impl Into<BadValue>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            path: path.into(),
            kind: ErrorKind::Invalid {
                value: value.into().0,
                detail: detail.into(),
            },
        }
    }

    pub fn not_supported(
        path: impl Into<String>,
        value: impl fmt::Display,
        supported: &[&str],
    ) -> Self {
        FieldError {
            path: path.into(),
            kind: ErrorKind::NotSupported {
                value: value.to_string(),
                supported: supported.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    pub fn duplicate(path: impl Into<String>, value: impl fmt::Display) -> Self {
        FieldError {
            path: path.into(),
            kind: ErrorKind::Duplicate {
                value: value.to_string(),
            },
        }
    }

    pub fn not_found(path: impl Into<String>, value: impl fmt::Display) -> Self {
        FieldError {
            path: path.into(),
            kind: ErrorKind::NotFound {
                value: value.to_string(),
            },
        }
    }

    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            kind: ErrorKind::Forbidden {
                detail: detail.into(),
            },
        }
    }

    pub fn too_long(path: impl Into<String>, max: usize) -> Self {
        FieldError {
            path: path.into(),
            kind: ErrorKind::TooLong { max },
        }
    }

    pub fn immutable(path: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            kind: ErrorKind::Immutable,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Required => write!(f, "{}: Required value", self.path),
            ErrorKind::Invalid { value, detail } => {
                write!(f, "{}: Invalid value: {value}: {detail}", self.path)
            }
            ErrorKind::NotSupported { value, supported } => {
                let s: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
                write!(
                    f,
                    "{}: Unsupported value: \"{value}\": supported values: {}",
                    self.path,
                    s.join(", ")
                )
            }
            ErrorKind::Duplicate { value } => {
                write!(f, "{}: Duplicate value: \"{value}\"", self.path)
            }
            ErrorKind::NotFound { value } => write!(f, "{}: Not found: \"{value}\"", self.path),
            ErrorKind::Forbidden { detail } => write!(f, "{}: Forbidden: {detail}", self.path),
            ErrorKind::TooLong { max } => {
                write!(
                    f,
                    "{}: Too long: may not be more than {max} bytes",
                    self.path
                )
            }
            ErrorKind::Immutable => write!(f, "{}: Invalid value: field is immutable", self.path),
        }
    }
}

/// Per-kind validation. `old` is the stored object on update.
pub trait Validate {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError>;
}

/// Checks a name against a kind's rule; the returned detail is Kubernetes' wording.
pub fn check_name(name: &str, rule: NameRule) -> Result<(), String> {
    match rule {
        NameRule::Subdomain => {
            if is_dns_subdomain(name) {
                Ok(())
            } else {
                Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most 253 characters)".into())
            }
        }
        NameRule::Label => {
            if is_dns_label(name) {
                Ok(())
            } else {
                Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (at most 63 characters)".into())
            }
        }
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                Err(format!("may not be '{name}'"))
            } else if name.contains('/') || name.contains('%') {
                Err("may not contain '/' or '%'".into())
            } else {
                Ok(())
            }
        }
    }
}

/// Total size Kubernetes allows for all annotations of one object.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// What every kind shares: name, namespace scope, labels, annotations, finalizers.
pub fn validate_object_meta(meta: &ObjectMeta, info: &KindInfo) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match meta.name.as_deref() {
        None | Some("") => {
            if meta.generate_name.as_deref().unwrap_or("").is_empty() {
                errs.push(FieldError::required("metadata.name"));
            }
        }
        Some(name) => {
            if let Err(detail) = check_name(name, info.name_rule) {
                errs.push(FieldError::invalid("metadata.name", name, detail));
            }
        }
    }
    let ns = meta.namespace.as_deref().unwrap_or("");
    if info.namespaced {
        if ns.is_empty() {
            errs.push(FieldError::required("metadata.namespace"));
        } else if !is_dns_label(ns) {
            errs.push(FieldError::invalid(
                "metadata.namespace",
                ns,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            ));
        }
    } else if !ns.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    for (k, v) in meta.labels.iter().flatten() {
        if let Err(e) = validate_key(k) {
            errs.push(FieldError::invalid("metadata.labels", k, e.0));
        }
        if let Err(e) = validate_value(v) {
            errs.push(FieldError::invalid(format!("metadata.labels.{k}"), v, e.0));
        }
    }
    let mut total = 0;
    for (k, v) in meta.annotations.iter().flatten() {
        if let Err(e) = validate_key(k) {
            errs.push(FieldError::invalid("metadata.annotations", k, e.0));
        }
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        errs.push(FieldError::too_long(
            "metadata.annotations",
            MAX_ANNOTATIONS_BYTES,
        ));
    }
    for (i, f) in meta.finalizers.iter().flatten().enumerate() {
        if validate_key(f).is_err() {
            errs.push(FieldError::invalid(
                format!("metadata.finalizers[{i}]"),
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

mod config;
mod cron;
mod helpers;
mod misc;
mod networking;
mod pod;
mod rbac;
mod service;
mod storage;
mod workloads;

pub use cron::validate_schedule;
pub use helpers::Path;
pub use pod::{validate_pod_spec, validate_pod_template};
