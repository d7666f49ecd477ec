//! ConfigMap and Secret validation: key syntax, the 1 MiB size limit, immutable objects, and
//! the keys each well-known Secret type requires.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::helpers::{Errs, Path, immutable};
use super::{FieldError, Validate};

/// Kubernetes caps ConfigMaps and Secrets at 1 MiB so that they fit in etcd and in watches.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

const KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// Kubernetes' `IsConfigMapKey`: the reason a key is not one.
fn config_key_problem(key: &str) -> Option<String> {
    if key.len() > 253 {
        Some("must be no more than 253 characters".into())
    } else if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some(KEY_MSG.into())
    } else if key == "." || key == ".." {
        Some(format!("must not be '{key}'"))
    } else if key.starts_with("..") {
        Some("must not start with '..'".into())
    } else {
        None
    }
}

/// Checks each key of a data map and adds up its size.
fn keys<'a>(
    errs: &mut Errs,
    path: &Path,
    entries: impl Iterator<Item = (&'a String, usize)>,
) -> usize {
    let mut total = 0;
    for (key, len) in entries {
        if let Some(problem) = config_key_problem(key) {
            errs.push(FieldError::invalid(path.key(key), key, problem));
        }
        total += key.len() + len;
    }
    total
}

fn too_big(errs: &mut Errs, field: &str, total: usize) {
    if total > MAX_DATA_BYTES {
        errs.push(FieldError::too_long(field, MAX_DATA_BYTES));
    }
}

/// Objects marked immutable keep their data and their mark; `changed` names each data field and
/// whether the update changes it.
fn immutable_object(
    errs: &mut Errs,
    old_immutable: Option<bool>,
    new_immutable: Option<bool>,
    changed: &[(&str, bool)],
) {
    if old_immutable != Some(true) {
        return;
    }
    const MSG: &str = "field is immutable when `immutable` is set";
    if new_immutable != Some(true) {
        errs.push(FieldError::forbidden("immutable", MSG));
    }
    for (field, _) in changed.iter().filter(|(_, c)| *c) {
        errs.push(FieldError::forbidden(*field, MSG));
    }
}

impl Validate for ConfigMap {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let data = self.data.as_ref();
        let binary = self.binary_data.as_ref();
        let mut total = keys(
            &mut errs,
            &Path::new("data"),
            data.into_iter().flatten().map(|(k, v)| (k, v.len())),
        );
        total += keys(
            &mut errs,
            &Path::new("binaryData"),
            binary.into_iter().flatten().map(|(k, v)| (k, v.0.len())),
        );
        for key in binary.into_iter().flatten().map(|(k, _)| k) {
            if data.is_some_and(|d| d.contains_key(key)) {
                errs.push(FieldError::invalid(
                    Path::new("binaryData").key(key),
                    key,
                    "duplicate of key present in data",
                ));
            }
        }
        too_big(&mut errs, "data", total);
        if let Some(old) = old {
            let changed = [
                ("data", self.data != old.data),
                ("binaryData", self.binary_data != old.binary_data),
            ];
            immutable_object(&mut errs, old.immutable, self.immutable, &changed);
        }
        errs
    }
}

/// Keys a Secret of a well-known type must carry.
fn required_keys(ty: &str) -> &'static [&'static str] {
    match ty {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    }
}

impl Validate for Secret {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let data = self.data.as_ref();
        let string_data = self.string_data.as_ref();
        let mut total = keys(
            &mut errs,
            &Path::new("data"),
            data.into_iter().flatten().map(|(k, v)| (k, v.0.len())),
        );
        total += keys(
            &mut errs,
            &Path::new("stringData"),
            string_data.into_iter().flatten().map(|(k, v)| (k, v.len())),
        );
        too_big(&mut errs, "data", total);
        // `stringData` is merged into `data` on write, so either may supply a required key.
        let has = |k: &str| {
            data.is_some_and(|d| d.contains_key(k))
                || string_data.is_some_and(|d| d.contains_key(k))
        };
        let ty = self.type_.as_deref().unwrap_or("Opaque");
        for key in required_keys(ty) {
            if !has(key) {
                errs.push(FieldError::required(Path::new("data").key(key)));
            }
        }
        if let Some(old) = old {
            immutable(&mut errs, &Path::new("type"), &self.type_, &old.type_);
            // `stringData` is write-only: any on an update would change `data`.
            let strings = self.string_data.as_ref().is_some_and(|m| !m.is_empty());
            let changed = [("data", self.data != old.data), ("stringData", strings)];
            immutable_object(&mut errs, old.immutable, self.immutable, &changed);
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::helpers::validate_json as errs;
    use serde_json::json;

    #[test]
    fn configmap_keys_and_sizes() {
        let v = json!({"metadata": {}, "data": {"game.properties": "x", "a b": "1", "..": "2", "..x": "3"},
            "binaryData": {"game.properties": "eA=="}});
        assert_eq!(errs::<ConfigMap>(v, None), vec![
            "data[..]: Invalid value: \"..\": must not be '..'".to_string(),
            "data[..x]: Invalid value: \"..x\": must not start with '..'".to_string(),
            format!("data[a b]: Invalid value: \"a b\": {KEY_MSG}"),
            "binaryData[game.properties]: Invalid value: \"game.properties\": duplicate of key present in data".to_string(),
        ]);
        let big = "x".repeat(MAX_DATA_BYTES);
        assert_eq!(
            errs::<ConfigMap>(json!({"metadata": {}, "data": {"k": big}}), None),
            vec!["data: Too long: may not be more than 1048576 bytes"]
        );
    }

    #[test]
    fn immutable_objects_keep_their_data() {
        let cm = |v: &str, imm: bool| json!({"metadata": {}, "data": {"k": v}, "immutable": imm});
        assert!(errs::<ConfigMap>(cm("2", false), Some(cm("1", false))).is_empty());
        assert!(errs::<ConfigMap>(cm("1", true), Some(cm("1", true))).is_empty());
        assert_eq!(
            errs::<ConfigMap>(cm("2", false), Some(cm("1", true))),
            vec![
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
    }

    #[test]
    fn secret_types() {
        let tls = json!({"metadata": {}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        assert_eq!(
            errs::<Secret>(tls, None),
            vec!["data[tls.key]: Required value"]
        );
        let docker = json!({"metadata": {}, "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "{}"}});
        assert!(errs::<Secret>(docker, None).is_empty());
        let s = |ty: &str| json!({"metadata": {}, "type": ty});
        assert_eq!(
            errs::<Secret>(s("Opaque"), Some(s("example.com/x"))),
            vec!["type: Invalid value: field is immutable"]
        );
    }
}
