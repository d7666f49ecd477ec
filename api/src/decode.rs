//! Strict decoding of manifests: YAML or JSON text → `serde_json::Value` → typed object.
//!
//! k8s-openapi silently drops unknown fields; here an unknown field is an error, and so is a value
//! of the wrong type, each naming the field path (`spec.template.spec.containers[0].comand`).

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A manifest that cannot be decoded. The message is one line naming the place and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid YAML{}: {message}", doc_suffix(*.document))]
    Yaml { document: usize, message: String },
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("{path}: unknown field \"{field}\"")]
    UnknownField { path: String, field: String },
    #[error("{path}: {message}")]
    WrongType { path: String, message: String },
    #[error("{0}")]
    Shape(String),
}

fn doc_suffix(document: usize) -> String {
    if document > 0 {
        format!(" in document {}", document + 1)
    } else {
        String::new()
    }
}

/// Parses YAML (possibly several `---`-separated documents) or JSON into values. Empty documents
/// are skipped; a `kind: List` document is expanded into its items.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, DecodeError> {
    let mut out = Vec::new();
    for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let value =
            <Value as serde::Deserialize>::deserialize(doc).map_err(|e| DecodeError::Yaml {
                document: i,
                message: e.to_string(),
            })?;
        match value {
            Value::Null => continue,
            Value::Object(ref map)
                if map.get("kind").and_then(Value::as_str) == Some("List")
                    && map.get("items").is_some() =>
            {
                if let Some(Value::Array(items)) = map.get("items") {
                    out.extend(items.iter().cloned());
                }
            }
            Value::Object(_) => out.push(value),
            other => {
                return Err(DecodeError::Shape(format!(
                    "document {} is not an object but {}",
                    i + 1,
                    type_name(&other)
                )));
            }
        }
    }
    Ok(out)
}

/// Parses one JSON object from bytes.
pub fn parse_json(bytes: &[u8]) -> Result<Value, DecodeError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    if !v.is_object() {
        return Err(DecodeError::Shape(format!(
            "expected a JSON object, found {}",
            type_name(&v)
        )));
    }
    Ok(v)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Receives the path of every field the target type does not know.
type UnknownFieldSink<'a> = &'a mut dyn for<'p> FnMut(serde_ignored::Path<'p>);

/// The one deserializer stack every typed decode goes through, strict or lenient.
///
/// Why one: serde code is instantiated per (type, deserializer) pair. The unknown-field sink is
/// a trait object, not a closure type, so the deserializer type is the same for every kind, and
/// the shared trees (a `PodSpec` inside Pods, Deployments, Jobs, ...) are compiled once rather
/// than once per embedding kind and again for a second, lenient stack. This is most of the API
/// crate's compile time (see docs/benchmarks.md, build time).
fn decode_with<T: DeserializeOwned>(
    value: Value,
    sink: UnknownFieldSink<'_>,
) -> Result<T, DecodeError> {
    let mut sink = sink;
    let de = serde_ignored::Deserializer::new(value, &mut sink);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = clean_path(&e.path().to_string());
        DecodeError::WrongType {
            path: if path.is_empty() {
                "<root>".into()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// Decodes `value` into `T`, refusing unknown fields and wrong types with the field path.
pub fn from_value_strict<T: DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    let mut unknown: Option<String> = None;
    let mut record = |path: serde_ignored::Path<'_>| {
        if unknown.is_none() {
            unknown = Some(path.to_string());
        }
    };
    let obj = decode_with(value, &mut record)?;
    match unknown {
        None => Ok(obj),
        Some(p) => {
            let p = clean_path(&ignored_path(&p));
            let (path, field) = match p.rfind('.') {
                Some(i) => (p[..i].to_string(), p[i + 1..].to_string()),
                None => ("<root>".to_string(), p),
            };
            let path = if path.is_empty() {
                "<root>".into()
            } else {
                path
            };
            Err(DecodeError::UnknownField { path, field })
        }
    }
}

/// Decodes without refusing unknown fields: for objects already stored, which passed the strict
/// check when written. Same deserializer stack as [`from_value_strict`], with a sink that
/// ignores what it is told.
pub fn from_value_lenient<T: DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    decode_with(value, &mut |_: serde_ignored::Path<'_>| {})
}

/// serde_ignored renders sequence indices as `.N`; Kubernetes paths use `[N]`.
fn ignored_path(p: &str) -> String {
    let mut out = String::new();
    for seg in p.split('.').filter(|s| !s.is_empty()) {
        if seg.chars().all(|c| c.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else if seg == "?" {
            continue;
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Drops the `?` segments serde_path_to_error uses for `Option` and tidies separators.
fn clean_path(p: &str) -> String {
    let mut out = String::new();
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('?') {
            rest = r;
            continue;
        }
        let c = rest.chars().next().unwrap_or('.');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    let mut s = out.replace("..", ".");
    while s.contains("..") {
        s = s.replace("..", ".");
    }
    s.trim_matches('.').replace(".[", "[")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let v = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
            "spec":{"containers":[{"name":"c","image":"i","comand":["x"]}]}});
        let e = from_value_strict::<Pod>(v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.containers[0]: unknown field \"comand\""
        );
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let v = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},
            "spec":{"replicas":"three","selector":{},"template":{}}});
        let e = from_value_strict::<Deployment>(v).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("spec.replicas: invalid type: string \"three\""),
            "{s}"
        );
    }

    #[test]
    fn multi_document_yaml() {
        let docs = parse_documents("a: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        let e = parse_documents("a: [1\n").unwrap_err();
        assert!(e.to_string().starts_with("invalid YAML"), "{e}");
    }
}
