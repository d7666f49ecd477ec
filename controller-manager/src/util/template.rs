//! Pods made from a controller's pod template, owned by it.

use serde_json::{Map, Value, json};

/// An owner reference to `owner` (its JSON), marked as the controller.
pub fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": owner.get("kind").cloned().unwrap_or(Value::Null),
        "name": owner.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "uid": owner.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// A pod for `template` (a `PodTemplateSpec`'s JSON) in `namespace`, named by the server from
/// `generate_name` unless `name` is given, controlled by `owner` (`controller.GetPodFromTemplate`:
/// the template's labels, annotations and finalizers, its spec as is).
pub fn pod_from_template(
    template: &Value,
    namespace: &str,
    owner: &Value,
    generate_name: &str,
    name: Option<&str>,
) -> Value {
    let mut meta = Map::new();
    match name {
        Some(n) => meta.insert("name".into(), json!(n)),
        None => meta.insert("generateName".into(), json!(generate_name)),
    };
    meta.insert("namespace".into(), json!(namespace));
    for field in ["labels", "annotations", "finalizers"] {
        if let Some(v) = template.pointer(&format!("/metadata/{field}")) {
            meta.insert(field.into(), v.clone());
        }
    }
    meta.insert("ownerReferences".into(), json!([controller_ref(owner)]));
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The prefix a controller's generated pod names start with (`controller.getPodsPrefix`): the
/// owner's name and a dash, shortened so the server's random suffix still fits in 63 characters.
pub fn generate_name_prefix(owner_name: &str) -> String {
    let max = 63 - 5 - 1;
    let mut p: String = owner_name.chars().take(max).collect();
    p.push('-');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_carries_template_and_controller_ref() {
        let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-abc", "uid": "u1"}});
        let tmpl = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let p = pod_from_template(&tmpl, "ns", &owner, "web-abc-", None);
        assert_eq!(p["metadata"]["generateName"], "web-abc-");
        assert_eq!(p["metadata"]["labels"]["app"], "web");
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(p["spec"]["containers"][0]["image"], "i");
        assert_eq!(generate_name_prefix(&"x".repeat(80)).len(), 58);
    }
}
