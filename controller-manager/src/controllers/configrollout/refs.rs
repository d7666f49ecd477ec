//! Which ConfigMaps and Secrets a pod template references, and the version string of them.
//!
//! A reference is any place a container reads a config from: `env[].valueFrom`
//! (`configMapKeyRef`, `secretKeyRef`) and `envFrom[]` (`configMapRef`, `secretRef`) of every
//! container, init container and ephemeral container, and the `configMap`, `secret` and
//! `projected.sources[]` volumes. `imagePullSecrets` are not configs the pod reads (the node
//! uses them to pull), nor are the credentials of storage drivers (`csi.nodePublishSecretRef`
//! and the like), so they are left out.

use std::collections::BTreeMap;

use serde_json::Value;

/// The two kinds of config a template can reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    /// The lower-case prefix used in version strings and index values.
    pub fn prefix(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "configmap",
            ConfigKind::Secret => "secret",
        }
    }
}

/// One referenced config, by kind and name (in the template's namespace).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
}

impl ConfigRef {
    pub fn new(kind: ConfigKind, name: &str) -> ConfigRef {
        ConfigRef {
            kind,
            name: name.to_string(),
        }
    }

    /// `configmap/<name>` or `secret/<name>`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.kind.prefix(), self.name)
    }
}

/// Every config `template` (a `PodTemplateSpec`) references, each once, mapped to whether some
/// reference to it is required (`optional` unset or false). Nameless references are skipped.
pub fn references(template: &Value) -> BTreeMap<ConfigRef, bool> {
    let mut out = BTreeMap::new();
    let mut add = |kind: ConfigKind, r: &Value, name_field: &str| {
        let Some(name) = r.get(name_field).and_then(Value::as_str) else {
            return;
        };
        if name.is_empty() {
            return;
        }
        let required = !r.get("optional").and_then(Value::as_bool).unwrap_or(false);
        *out.entry(ConfigRef::new(kind, name)).or_insert(false) |= required;
    };
    let Some(spec) = template.get("spec") else {
        return out;
    };
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in items(spec.get(list)) {
            for e in items(c.get("env")) {
                let from = e.get("valueFrom");
                if let Some(r) = from.and_then(|f| f.get("configMapKeyRef")) {
                    add(ConfigKind::ConfigMap, r, "name");
                }
                if let Some(r) = from.and_then(|f| f.get("secretKeyRef")) {
                    add(ConfigKind::Secret, r, "name");
                }
            }
            for e in items(c.get("envFrom")) {
                if let Some(r) = e.get("configMapRef") {
                    add(ConfigKind::ConfigMap, r, "name");
                }
                if let Some(r) = e.get("secretRef") {
                    add(ConfigKind::Secret, r, "name");
                }
            }
        }
    }
    for v in items(spec.get("volumes")) {
        if let Some(r) = v.get("configMap") {
            add(ConfigKind::ConfigMap, r, "name");
        }
        if let Some(r) = v.get("secret") {
            add(ConfigKind::Secret, r, "secretName");
        }
        for s in items(v.pointer("/projected/sources")) {
            if let Some(r) = s.get("configMap") {
                add(ConfigKind::ConfigMap, r, "name");
            }
            if let Some(r) = s.get("secret") {
                add(ConfigKind::Secret, r, "name");
            }
        }
    }
    out
}

fn items(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// The version of a referenced config: its resourceVersion, or `None` while it does not exist.
pub type Versions = BTreeMap<ConfigRef, Option<u64>>;

/// `configmap/a=12,secret/b=absent`: sorted by kind then name (which is also the string's
/// order, `configmap` sorting before `secret`). Object names cannot hold `,` `=` or `@`, so the
/// string parses back unambiguously.
pub fn version_string(v: &Versions) -> String {
    v.iter()
        .map(|(r, rv)| format!("{}={}", r.label(), render(*rv)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A resourceVersion, or `absent`.
pub fn render(rv: Option<u64>) -> String {
    rv.map_or_else(|| "absent".to_string(), |rv| rv.to_string())
}

/// A version string parsed back to `label → version`; `None` when it is not one.
pub fn parse_version_string(s: &str) -> Option<BTreeMap<String, String>> {
    if s.is_empty() {
        return Some(BTreeMap::new());
    }
    s.split(',')
        .map(|item| {
            let (label, version) = item.split_once('=')?;
            label.contains('/').then_some(())?;
            Some((label.to_string(), version.to_string()))
        })
        .collect()
}
