//! More than one served version per kind: conversion to and from one storage version.
//!
//! Guarantees:
//! - Every kind has exactly one storage version; objects are stored (and keyed, by group and
//!   kind) in it whatever version a client speaks, so every version sees the same objects.
//! - A served version other than the storage version carries a [`Convert`]: an object a client
//!   sends is decoded strictly and defaulted in the client's version, then converted
//!   ([`Convert::to_storage`]) and admitted in the storage version, where validation runs once,
//!   as Kubernetes validates its internal form. Reads convert back ([`Convert::to_served`]).
//! - Conversions are JSON to JSON, so a custom resource's versions (Kubernetes' `None`
//!   strategy: the same schema, only `apiVersion` rewritten, [`SameSchema`]) and a built-in
//!   kind's (the HorizontalPodAutoscaler, [`hpa`]) share the machinery.
//! - What a served version cannot express survives a round trip through it where Kubernetes
//!   keeps it (the HPA's annotations); see each converter.

pub mod hpa;

use std::sync::Arc;

use serde_json::Value;

use crate::registry::{AdmitError, KindInfo, KindOps};

/// Why a stored object could not be shown in a served version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot convert to {api_version}: {reason}")]
    Failed { api_version: String, reason: String },
}

/// Conversion between one served version and its kind's storage version.
pub trait Convert: Send + Sync {
    /// An object in the served version, as a client sent it, to the storage version. Decodes
    /// strictly and fills the served version's defaults first, so that a decoding error names
    /// the client's own fields.
    fn to_storage(&self, obj: Value) -> Result<Value, AdmitError>;

    /// A stored object (storage version) in the served version.
    fn to_served(&self, obj: Value) -> Result<Value, ConvertError>;
}

/// Kubernetes' `None` conversion strategy: both versions share one schema and only
/// `apiVersion` changes. What custom resources get unless they name a webhook.
pub struct SameSchema {
    served: String,
    storage: String,
}

impl SameSchema {
    pub fn new(served_api_version: &str, storage_api_version: &str) -> Self {
        SameSchema {
            served: served_api_version.to_string(),
            storage: storage_api_version.to_string(),
        }
    }
}

impl Convert for SameSchema {
    fn to_storage(&self, obj: Value) -> Result<Value, AdmitError> {
        Ok(set_api_version(obj, &self.storage))
    }

    fn to_served(&self, obj: Value) -> Result<Value, ConvertError> {
        Ok(set_api_version(obj, &self.served))
    }
}

/// Sets `apiVersion` on an object (a no-op on anything that is not an object).
pub fn set_api_version(mut obj: Value, api_version: &str) -> Value {
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(api_version.to_string()));
    }
    obj
}

/// The [`KindOps`] of a served version that is not the storage version: converts, then admits
/// in the storage version. It takes the object in the served version and `old` as stored, and
/// returns the storage form, so that any caller of a served entry's ops stores the right thing.
pub struct Converted {
    pub(crate) convert: Arc<dyn Convert>,
    pub(crate) storage: Arc<dyn KindOps>,
}

impl KindOps for Converted {
    fn admit(&self, info: &KindInfo, obj: Value, old: Option<&Value>) -> Result<Value, AdmitError> {
        let stored = self.convert.to_storage(obj)?;
        self.storage.admit(info, stored, old)
    }
}

#[cfg(test)]
mod tests;
