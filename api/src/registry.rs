//! The kind registry: one entry per kind, driving the API server, the CLI and validation.
//!
//! An entry holds the kind's names (group, version, kind, plural, singular, short names), its
//! scope, whether it has a status subresource, the fields a field selector may test, and its
//! [`KindOps`]: how to decode, default and validate it. Built-in kinds are typed k8s-openapi
//! structs; custom resources will add entries at run time with schema-driven ops, which is why the
//! registry is data, not a `match` over kinds.
//!
//! There is one entry per served version. Exactly one version of a kind is its storage version;
//! every other entry carries the [`Convert`] to and from it (see [`crate::convert`]). Names
//! people type (`hpa`, `deployments.apps`) resolve to the storage version, which is also the
//! preferred one for built-in kinds. An apiVersion the kind's group does not serve, or one
//! Kubernetes removed ([`crate::removed`]), is refused as kubectl refuses it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::convert::{Convert, Converted};
use crate::decode::{DecodeError, from_value_lenient, from_value_strict};
use crate::defaults::Defaulting;
use crate::validation::{FieldError, NameRule, Validate, validate_object_meta};

/// What the registry knows of one kind.
#[derive(Clone)]
pub struct KindInfo {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Whether `status` is a subresource: updates keep the stored status and status updates keep
    /// the stored spec.
    pub has_status: bool,
    /// How `metadata.name` is validated.
    pub name_rule: NameRule,
    /// JSON paths (dotted) a field selector may test, besides `metadata.name` and
    /// `metadata.namespace`.
    pub selectable_fields: &'static [&'static str],
    pub ops: Arc<dyn KindOps>,
    /// The version objects of this kind are stored in; `version` itself on the storage entry.
    pub storage_version: &'static str,
    /// How an object in `version` becomes the storage version and back; `None` on the storage
    /// entry.
    pub conversion: Option<Arc<dyn Convert>>,
}

impl std::fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KindInfo({}/{})", self.api_version(), self.kind)
    }
}

impl KindInfo {
    /// `v1` for the core group, else `group/version`.
    pub fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }

    /// The apiVersion objects of this kind are stored in.
    pub fn storage_api_version(&self) -> String {
        group_version(self.group, self.storage_version)
    }

    /// Whether this entry is its kind's storage version (no conversion needed).
    pub fn is_storage(&self) -> bool {
        self.conversion.is_none()
    }

    /// kubectl's name for the resource type: `deployment.apps`, `pod`.
    pub fn qualified_singular(&self) -> String {
        if self.group.is_empty() {
            self.singular.to_string()
        } else {
            format!("{}.{}", self.singular, self.group)
        }
    }

    /// kubectl's `resource.group` form: `deployments.apps`, `pods`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Why an object was not admitted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{}", render_field_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn render_field_errors(errs: &[FieldError]) -> String {
    errs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per-kind admission: strict decode, defaults, validation.
pub trait KindOps: Send + Sync {
    /// Decodes `obj` strictly, fills Kubernetes' defaults and validates it (against `old` on an
    /// update, for immutable fields). Returns the normalised object as JSON.
    fn admit(&self, info: &KindInfo, obj: Value, old: Option<&Value>) -> Result<Value, AdmitError>;
}

/// [`KindOps`] for a typed k8s-openapi kind.
pub struct Typed<K>(std::marker::PhantomData<fn() -> K>);

impl<K> Typed<K> {
    pub fn new() -> Self {
        Typed(std::marker::PhantomData)
    }
}

impl<K> Default for Typed<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> KindOps for Typed<K>
where
    K: DeserializeOwned
        + Serialize
        + Defaulting
        + Validate
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    fn admit(&self, info: &KindInfo, obj: Value, old: Option<&Value>) -> Result<Value, AdmitError> {
        let mut typed: K = from_value_strict(obj)?;
        typed.apply_defaults();
        let old_typed: Option<K> = match old {
            Some(v) => Some(from_value_lenient(v.clone())?),
            None => None,
        };
        let mut errs = validate_object_meta(typed.metadata(), info);
        errs.extend(typed.validate(old_typed.as_ref()));
        if !errs.is_empty() {
            return Err(AdmitError::Invalid(errs));
        }
        serde_json::to_value(&typed).map_err(|e| DecodeError::Shape(e.to_string()).into())
    }
}

/// Every kind the server serves, with lookups by apiVersion/kind and by the names people type.
#[derive(Debug, Clone)]
pub struct Registry {
    kinds: Vec<Arc<KindInfo>>,
    by_gvk: HashMap<(String, String), usize>,
    by_name: HashMap<String, Vec<usize>>,
}

/// A kind that is not in the registry, named as the request named it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no kind \"{kind}\" is registered in version \"{api_version}\"")]
    UnknownKind { api_version: String, kind: String },
    /// A kind served in other versions than this one, or a version Kubernetes removed: kubectl's
    /// (and the RESTMapper's) words.
    #[error("no matches for kind \"{kind}\" in version \"{api_version}\"")]
    NoMatch { api_version: String, kind: String },
    #[error("the server doesn't have a resource type \"{0}\"")]
    UnknownResource(String),
    #[error("resource type \"{name}\" is ambiguous: {candidates}")]
    Ambiguous { name: String, candidates: String },
}

impl Registry {
    /// An empty registry; see [`Registry::builtin`] for the served kinds.
    pub fn empty() -> Self {
        Registry {
            kinds: Vec::new(),
            by_gvk: HashMap::new(),
            by_name: HashMap::new(),
        }
    }

    /// Adds (or replaces) a kind's served version. Only a storage entry is found by the names
    /// people type; any other version only by its apiVersion and kind.
    pub fn register(&mut self, info: KindInfo) {
        let key = (info.api_version(), info.kind.to_string());
        let idx = match self.by_gvk.get(&key) {
            Some(&i) => {
                self.kinds[i] = Arc::new(info);
                i
            }
            None => {
                self.kinds.push(Arc::new(info));
                self.kinds.len() - 1
            }
        };
        self.by_gvk.insert(key, idx);
        let k = self.kinds[idx].clone();
        if !k.is_storage() {
            return;
        }
        let mut names: Vec<String> = vec![
            k.plural.to_string(),
            k.singular.to_string(),
            k.kind.to_lowercase(),
            k.qualified_plural(),
            k.qualified_singular(),
        ];
        names.extend(k.short_names.iter().map(|s| s.to_string()));
        for n in names {
            let entry = self.by_name.entry(n).or_default();
            if !entry.contains(&idx) {
                entry.push(idx);
            }
        }
    }

    /// Serves a registered kind in one more version, converted to and from its storage version
    /// (`storage_api_version`) by `convert`. Admission of the new version's entry converts, then
    /// admits in the storage version.
    pub fn serve_version(
        &mut self,
        storage_api_version: &str,
        kind: &str,
        version: &'static str,
        convert: Arc<dyn Convert>,
    ) -> Result<(), LookupError> {
        let storage = self.by_api_version_kind(storage_api_version, kind)?.clone();
        let mut info = KindInfo::clone(&storage);
        info.version = version;
        info.ops = Arc::new(Converted {
            convert: convert.clone(),
            storage: storage.ops.clone(),
        });
        info.conversion = Some(convert);
        self.register(info);
        Ok(())
    }

    /// The kinds Rudder serves out of the box.
    pub fn builtin() -> &'static Registry {
        static REG: OnceLock<Registry> = OnceLock::new();
        REG.get_or_init(crate::builtin::build_builtin)
    }

    /// One entry per kind: its storage version.
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<KindInfo>> {
        self.kinds.iter().filter(|k| k.is_storage())
    }

    /// Every served version of every kind.
    pub fn served(&self) -> impl Iterator<Item = &Arc<KindInfo>> {
        self.kinds.iter()
    }

    /// The storage entry of `info`'s kind (`info` itself when it is one).
    pub fn storage_of(&self, info: &KindInfo) -> Result<&Arc<KindInfo>, LookupError> {
        self.by_api_version_kind(&info.storage_api_version(), info.kind)
    }

    /// Looks a kind up by `apiVersion` and `kind`, as written in a manifest.
    pub fn by_api_version_kind(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<&Arc<KindInfo>, LookupError> {
        if let Some(&i) = self
            .by_gvk
            .get(&(api_version.to_string(), kind.to_string()))
        {
            return Ok(&self.kinds[i]);
        }
        let (api_version, kind_s) = (api_version.to_string(), kind.to_string());
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let known_kind = crate::removed::removed(&api_version, kind).is_some()
            || self
                .kinds
                .iter()
                .any(|k| k.group == group && k.kind == kind);
        Err(if known_kind {
            LookupError::NoMatch {
                api_version,
                kind: kind_s,
            }
        } else {
            LookupError::UnknownKind {
                api_version,
                kind: kind_s,
            }
        })
    }

    /// Looks a kind up by what a person types: plural, singular, kind, short name, optionally
    /// qualified by group (`deployments.apps`), case-insensitively.
    pub fn by_resource_name(&self, name: &str) -> Result<&Arc<KindInfo>, LookupError> {
        let lower = name.to_lowercase();
        match self.by_name.get(&lower).map(Vec::as_slice) {
            Some([one]) => Ok(&self.kinds[*one]),
            Some(many) if !many.is_empty() => {
                // Prefer the core group, as kubectl does for `events`.
                if let Some(&i) = many.iter().find(|&&i| self.kinds[i].group.is_empty()) {
                    return Ok(&self.kinds[i]);
                }
                Err(LookupError::Ambiguous {
                    name: name.to_string(),
                    candidates: many
                        .iter()
                        .map(|&i| self.kinds[i].qualified_plural())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
            _ => Err(LookupError::UnknownResource(name.to_string())),
        }
    }

    /// Resolves a request's kind reference, which may carry apiVersion+kind, or a resource name
    /// in `kind` with an empty apiVersion.
    pub fn resolve(&self, api_version: &str, kind: &str) -> Result<&Arc<KindInfo>, LookupError> {
        if api_version.is_empty() {
            self.by_resource_name(kind)
        } else {
            self.by_api_version_kind(api_version, kind)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let r = Registry::builtin();
        assert_eq!(r.by_resource_name("deploy").unwrap().kind, "Deployment");
        assert_eq!(
            r.by_resource_name("Deployments.apps").unwrap().kind,
            "Deployment"
        );
        assert_eq!(r.by_resource_name("po").unwrap().kind, "Pod");
        assert_eq!(
            r.by_api_version_kind("autoscaling/v2", "HorizontalPodAutoscaler")
                .unwrap()
                .plural,
            "horizontalpodautoscalers"
        );
        let e = r
            .by_api_version_kind("example.com/v1", "Widget")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no kind \"Widget\" is registered in version \"example.com/v1\""
        );
        assert_eq!(r.kinds().count(), 31);
    }
}
