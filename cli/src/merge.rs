//! `apply`'s three-way merge, producing an RFC 7386 JSON merge patch.
//!
//! Inputs: `original` (the configuration applied last time, from the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation), `modified` (the configuration
//! being applied now) and `current` (the live object). The patch:
//! - sets every field of `modified` that differs from `current`;
//! - deletes (sets to null) fields that were in `original` but are no longer in `modified`;
//! - leaves alone fields that only `current` has (set by the server's defaults or by others).
//!
//! Lists are atoms, as in a merge patch: a list that differs is replaced whole. To decide whether
//! a list differs, elements are compared with the same three-way rule, so that fields the server
//! defaulted inside list elements (a container's `imagePullPolicy`) do not make every apply
//! report a change. Strategic merge (merging lists by key) is a later improvement.

use serde_json::{Map, Value};

/// The merge patch turning `current` into "current with `modified` applied". An empty object
/// means nothing to change.
pub fn three_way(original: Option<&Value>, modified: &Value, current: &Value) -> Value {
    match (modified, current) {
        (Value::Object(m), Value::Object(c)) => {
            Value::Object(diff_maps(original.and_then(Value::as_object), m, c))
        }
        _ => modified.clone(),
    }
}

fn diff_maps(
    original: Option<&Map<String, Value>>,
    modified: &Map<String, Value>,
    current: &Map<String, Value>,
) -> Map<String, Value> {
    let mut patch = Map::new();
    for (k, mv) in modified {
        let ov = original.and_then(|o| o.get(k));
        match current.get(k) {
            None => {
                if !mv.is_null() {
                    patch.insert(k.clone(), mv.clone());
                }
            }
            Some(cv) => match (mv, cv) {
                (Value::Object(mm), Value::Object(cm)) => {
                    let sub = diff_maps(ov.and_then(Value::as_object), mm, cm);
                    if !sub.is_empty() {
                        patch.insert(k.clone(), Value::Object(sub));
                    }
                }
                (Value::Array(ma), Value::Array(ca)) => {
                    if !lists_agree(ov.and_then(Value::as_array), ma, ca) {
                        patch.insert(k.clone(), mv.clone());
                    }
                }
                _ => {
                    if mv != cv {
                        patch.insert(k.clone(), mv.clone());
                    }
                }
            },
        }
    }
    if let Some(o) = original {
        for k in o.keys() {
            if !modified.contains_key(k) && current.get(k).is_some_and(|v| !v.is_null()) {
                patch.insert(k.clone(), Value::Null);
            }
        }
    }
    patch
}

/// Whether the live list already is what `modified` asks for: same length and, element by
/// element, nothing to patch (the original's element at the same index drives deletions).
fn lists_agree(original: Option<&Vec<Value>>, modified: &[Value], current: &[Value]) -> bool {
    if modified.len() != current.len() {
        return false;
    }
    modified.iter().zip(current).enumerate().all(|(i, (m, c))| {
        let o = original.and_then(|o| o.get(i));
        match (m, c) {
            (Value::Object(mm), Value::Object(cm)) => {
                diff_maps(o.and_then(Value::as_object), mm, cm).is_empty()
            }
            (Value::Array(ma), Value::Array(ca)) => {
                lists_agree(o.and_then(Value::as_array), ma, ca)
            }
            _ => m == c,
        }
    })
}

/// Whether a merge patch changes nothing.
pub fn is_empty_patch(p: &Value) -> bool {
    p.as_object().is_some_and(Map::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn adds_changes_and_removes_fields() {
        let original = json!({"spec": {"replicas": 1, "paused": false}, "metadata": {"name": "w"}});
        let modified =
            json!({"spec": {"replicas": 3, "minReadySeconds": 5}, "metadata": {"name": "w"}});
        let current = json!({"spec": {"replicas": 1, "paused": false, "revisionHistoryLimit": 10},
                             "metadata": {"name": "w", "uid": "u"}});
        let p = three_way(Some(&original), &modified, &current);
        assert_eq!(
            p,
            json!({"spec": {"replicas": 3, "minReadySeconds": 5, "paused": null}})
        );
    }

    #[test]
    fn unchanged_config_gives_an_empty_patch() {
        let cfg = json!({"metadata": {"name": "w", "labels": {"a": "1"}}, "spec": {"x": [1, 2]}});
        let mut current = cfg.clone();
        current["metadata"]["resourceVersion"] = json!("7");
        current["status"] = json!({"ready": true});
        assert!(is_empty_patch(&three_way(Some(&cfg), &cfg, &current)));
    }

    #[test]
    fn nested_maps_recurse_and_keep_fields_owned_by_others() {
        let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let modified = json!({"metadata": {"labels": {"a": "1"}}});
        // "c" was added by someone else (not in last-applied): it must survive.
        let current = json!({"metadata": {"labels": {"a": "1", "b": "2", "c": "3"}}});
        let p = three_way(Some(&original), &modified, &current);
        assert_eq!(p, json!({"metadata": {"labels": {"b": null}}}));
    }

    #[test]
    fn removed_field_already_gone_is_not_patched() {
        let original = json!({"a": 1, "b": 2});
        let modified = json!({"a": 1});
        let current = json!({"a": 1});
        assert!(is_empty_patch(&three_way(
            Some(&original),
            &modified,
            &current
        )));
    }

    #[test]
    fn lists_are_replaced_whole() {
        let original = json!({"spec": {"args": ["a", "b"]}});
        let modified = json!({"spec": {"args": ["a", "c"]}});
        let current = json!({"spec": {"args": ["a", "b"]}});
        assert_eq!(
            three_way(Some(&original), &modified, &current),
            json!({"spec": {"args": ["a", "c"]}})
        );
        // A shorter list replaces too.
        let modified = json!({"spec": {"args": ["a"]}});
        assert_eq!(
            three_way(Some(&original), &modified, &current),
            json!({"spec": {"args": ["a"]}})
        );
    }

    #[test]
    fn defaults_inside_list_elements_do_not_count_as_changes() {
        let cfg = json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let current = json!({"spec": {"containers": [
            {"name": "c", "image": "nginx", "imagePullPolicy": "Always"}]}});
        assert!(is_empty_patch(&three_way(Some(&cfg), &cfg, &current)));
        // But a field removed from an element since the last apply does count, and the list is
        // replaced by the new configuration.
        let original =
            json!({"spec": {"containers": [{"name": "c", "image": "nginx", "args": ["x"]}]}});
        let current = json!({"spec": {"containers": [
            {"name": "c", "image": "nginx", "args": ["x"], "imagePullPolicy": "Always"}]}});
        assert_eq!(
            three_way(Some(&original), &cfg, &current),
            json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}})
        );
    }

    #[test]
    fn without_last_applied_nothing_is_deleted() {
        let modified = json!({"data": {"a": "1"}});
        let current = json!({"data": {"a": "0", "b": "2"}});
        assert_eq!(
            three_way(None, &modified, &current),
            json!({"data": {"a": "1"}})
        );
    }

    #[test]
    fn type_changes_replace_the_value() {
        let original = json!({"x": {"a": 1}});
        let modified = json!({"x": "flat"});
        let current = json!({"x": {"a": 1}});
        assert_eq!(
            three_way(Some(&original), &modified, &current),
            json!({"x": "flat"})
        );
    }
}
