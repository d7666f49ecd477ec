//! Which nodes a DaemonSet runs on, and how its pods are pinned to them (Kubernetes'
//! `NodeShouldRunDaemonPod`, `AddOrUpdateDaemonPodTolerations`,
//! `ReplaceDaemonSetPodNodeNameNodeAffinity`, `GetTargetNodeName`).
//!
//! A node is eligible when the template's `nodeName` (if any) names it, its labels satisfy the
//! template's `nodeSelector` and required node affinity, and it has no NoSchedule or NoExecute
//! taint the pod does not tolerate, counting the tolerations every daemon pod gets. A pod
//! already there may keep running unless an untolerated NoExecute taint, a selector or affinity
//! mismatch, or another `nodeName` says otherwise.

use serde_json::{Value, json};

use crate::util::str_at;
use crate::util::taints::tolerates;

/// Tolerations every daemon pod gets, as (key, effect); `network-unavailable` only with
/// `hostNetwork`.
const DAEMON_TOLERATIONS: [(&str, &str); 6] = [
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];
const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// Whether a daemon pod should be placed on a node, and whether one there may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub should_run: bool,
    pub should_continue: bool,
}

/// Adds the daemon tolerations to a pod spec (JSON), replacing a toleration with the same key,
/// operator, value and effect (say, one with `tolerationSeconds`), as
/// `AddOrUpdateTolerationInPodSpec`.
pub fn add_daemon_tolerations(spec: &mut Value) {
    let host_network = spec
        .get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut wanted: Vec<(&str, &str)> = DAEMON_TOLERATIONS.to_vec();
    if host_network {
        wanted.push((NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    let mut list: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (key, effect) in wanted {
        let t = json!({"key": key, "operator": "Exists", "effect": effect});
        let same = |x: &Value| {
            str_at(x, "/key") == key
                && str_at(x, "/operator") == "Exists"
                && str_at(x, "/value").is_empty()
                && str_at(x, "/effect") == effect
        };
        match list.iter().position(same) {
            Some(i) => list[i] = t,
            None => list.push(t),
        }
    }
    if let Some(m) = spec.as_object_mut() {
        m.insert("tolerations".into(), Value::Array(list));
    }
}

/// Pins a pod spec to `node` through required node affinity, one term
/// `matchFields metadata.name In [node]` replacing the required terms (the controller has
/// already matched the node against them), so that the scheduler binds it there.
pub fn pin_to_node(spec: &mut Value, node: &str) {
    let term =
        json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]});
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    let affinity = m.entry("affinity").or_insert_with(|| json!({}));
    if !affinity.is_object() {
        *affinity = json!({});
    }
    let na = &mut affinity["nodeAffinity"];
    if !na.is_object() {
        *na = json!({});
    }
    na["requiredDuringSchedulingIgnoredDuringExecution"] = json!({"nodeSelectorTerms": [term]});
}

/// The node a daemon pod is for: its `spec.nodeName`, or before binding the node its required
/// affinity pins it to.
pub fn target_node(pod: &Value) -> Option<String> {
    let bound = str_at(pod, "/spec/nodeName");
    if !bound.is_empty() {
        return Some(bound.to_string());
    }
    let terms = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?
        .as_array()?;
    terms.iter().find_map(|t| {
        t.get("matchFields")?.as_array()?.iter().find_map(|r| {
            let values = r.get("values")?.as_array()?;
            (str_at(r, "/key") == "metadata.name" && str_at(r, "/operator") == "In")
                .then_some(())
                .and(match values.as_slice() {
                    [Value::String(n)] => Some(n.clone()),
                    _ => None,
                })
        })
    })
}

fn requirement(r: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> = r
        .get("values")
        .and_then(Value::as_array)
        .map(|vs| vs.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match str_at(r, "/operator") {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => !value.is_some_and(|v| values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => match (value.and_then(int), values.as_slice()) {
            (Some(v), [bound]) => {
                int(bound).is_some_and(|b| if op == "Gt" { v > b } else { v < b })
            }
            _ => false,
        },
        _ => false,
    }
}

/// One node selector term: all its expressions on labels and fields; an empty term matches
/// nothing.
fn term_matches(t: &Value, node: &Value) -> bool {
    let list = |f: &str| {
        t.get(f)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (exprs, fields) = (list("matchExpressions"), list("matchFields"));
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.pointer("/metadata/labels");
    exprs.iter().all(|r| {
        let v = labels
            .and_then(|l| l.get(str_at(r, "/key")))
            .and_then(Value::as_str);
        requirement(r, v)
    }) && fields.iter().all(|r| {
        let v = (str_at(r, "/key") == "metadata.name").then(|| str_at(node, "/metadata/name"));
        requirement(r, v)
    })
}

/// `nodeSelector` and required node affinity of a pod spec against a node.
fn fits_affinity(spec: &Value, node: &Value) -> bool {
    let selector_ok = spec
        .get("nodeSelector")
        .and_then(Value::as_object)
        .is_none_or(|sel| {
            sel.iter()
                .all(|(k, v)| node.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
        });
    let required = spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array);
    selector_ok && required.is_none_or(|terms| terms.iter().any(|t| term_matches(t, node)))
}

/// Whether the node has a taint with one of `effects` that no toleration tolerates.
fn untolerated(node: &Value, tolerations: &[Value], effects: &[&str]) -> bool {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .is_some_and(|taints| {
            taints.iter().any(|taint| {
                effects.contains(&str_at(taint, "/effect"))
                    && !tolerations.iter().any(|t| tolerates(t, taint))
            })
        })
}

/// Whether the DaemonSet whose pod template is `template` should run on `node`
/// (`NodeShouldRunDaemonPod`).
pub fn should_run(node: &Value, template: &Value) -> Fit {
    const NO: Fit = Fit {
        should_run: false,
        should_continue: false,
    };
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    let wanted = str_at(&spec, "/nodeName");
    if !wanted.is_empty() && wanted != str_at(node, "/metadata/name") {
        return NO;
    }
    if !fits_affinity(&spec, node) {
        return NO;
    }
    add_daemon_tolerations(&mut spec);
    let tolerations = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if untolerated(node, &tolerations, &["NoSchedule", "NoExecute"]) {
        // A pod already there stays unless a NoExecute taint evicts it.
        return Fit {
            should_run: false,
            should_continue: !untolerated(node, &tolerations, &["NoExecute"]),
        };
    }
    Fit {
        should_run: true,
        should_continue: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}})
    }

    fn tmpl(spec: Value) -> Value {
        json!({"metadata": {"labels": {"app": "d"}}, "spec": spec})
    }

    const YES: Fit = Fit {
        should_run: true,
        should_continue: true,
    };
    const NO: Fit = Fit {
        should_run: false,
        should_continue: false,
    };

    #[test]
    fn selectors_affinity_and_node_name() {
        let n = node("n1", json!({"disk": "ssd", "cores": "8"}), json!([]));
        assert_eq!(should_run(&n, &tmpl(json!({}))), YES);
        assert_eq!(
            should_run(&n, &tmpl(json!({"nodeSelector": {"disk": "ssd"}}))),
            YES
        );
        assert_eq!(
            should_run(&n, &tmpl(json!({"nodeSelector": {"disk": "hdd"}}))),
            NO
        );
        let aff = |exprs: Value| {
            tmpl(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": exprs}]}}}}),
            )
        };
        assert_eq!(
            should_run(
                &n,
                &aff(json!([{"key": "cores", "operator": "Gt", "values": ["4"]}]))
            ),
            YES
        );
        assert_eq!(
            should_run(
                &n,
                &aff(json!([{"key": "disk", "operator": "NotIn", "values": ["ssd"]}]))
            ),
            NO
        );
        assert_eq!(
            should_run(
                &n,
                &aff(json!([{"key": "gpu", "operator": "DoesNotExist"}]))
            ),
            YES
        );
        assert_eq!(should_run(&n, &tmpl(json!({"nodeName": "n2"}))), NO);
        assert_eq!(should_run(&n, &tmpl(json!({"nodeName": "n1"}))), YES);
    }

    #[test]
    fn taints_and_the_automatic_tolerations() {
        let t = tmpl(json!({}));
        let taint = |k: &str, e: &str| node("n", json!({}), json!([{"key": k, "effect": e}]));
        // Daemon pods tolerate cordoning, pressure and not-ready by default.
        for (k, e) in DAEMON_TOLERATIONS {
            assert_eq!(should_run(&taint(k, e), &t), YES, "{k}");
        }
        // network-unavailable only with hostNetwork.
        let net = taint(NETWORK_UNAVAILABLE, "NoSchedule");
        assert_eq!(
            should_run(&net, &t),
            Fit {
                should_run: false,
                should_continue: true
            }
        );
        assert_eq!(should_run(&net, &tmpl(json!({"hostNetwork": true}))), YES);
        // An untolerated NoSchedule keeps new pods off but lets one there stay; NoExecute
        // evicts it.
        assert_eq!(
            should_run(&taint("dedicated", "NoSchedule"), &t),
            Fit {
                should_run: false,
                should_continue: true
            }
        );
        assert_eq!(should_run(&taint("dedicated", "NoExecute"), &t), NO);
        assert_eq!(should_run(&taint("dedicated", "PreferNoSchedule"), &t), YES);
        let tolerant = tmpl(
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "", "effect": "NoExecute"}]}),
        );
        assert_eq!(should_run(&taint("dedicated", "NoExecute"), &tolerant), YES);
    }

    #[test]
    fn pods_are_pinned_through_node_affinity() {
        let mut spec = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]}},
            "podAntiAffinity": {"x": 1}},
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]});
        pin_to_node(&mut spec, "n7");
        add_daemon_tolerations(&mut spec);
        let pod = json!({"spec": spec});
        assert_eq!(target_node(&pod).as_deref(), Some("n7"));
        assert_eq!(pod["spec"]["affinity"]["podAntiAffinity"]["x"], 1);
        let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        assert_eq!(terms.as_array().unwrap().len(), 1);
        let tols = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tols.len(), 6, "{tols:?}");
        assert!(tols[0].get("tolerationSeconds").is_none(), "replaced");
        let bound = json!({"spec": {"nodeName": "n1"}});
        assert_eq!(target_node(&bound).as_deref(), Some("n1"));
        assert_eq!(target_node(&json!({"spec": {}})), None);
    }
}
