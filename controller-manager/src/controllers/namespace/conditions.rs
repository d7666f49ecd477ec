//! What one pass over a terminating namespace found, and the conditions Kubernetes' namespace
//! deleter reports it with. Pure: built from [`Findings`], merged into the namespace's
//! conditions with [`merge`].
//!
//! The five condition types are the controller's own. Each is `True` with a failure reason and
//! message while that failure holds, and `False` with its success reason otherwise:
//!
//! | type | True (reason: message) | False (reason) |
//! |---|---|---|
//! | NamespaceDeletionDiscoveryFailure | DiscoveryFailed: the discovery error | ResourcesDiscovered |
//! | NamespaceDeletionGroupVersionParsingFailure | GroupVersionParsingFailed: `unexpected GroupVersion string: ...` | ParsedGroupVersions |
//! | NamespaceDeletionContentFailure | ContentDeletionFailed: `Failed to delete all resource types, N remaining: ...` | ContentDeleted |
//! | NamespaceContentRemaining | SomeResourcesRemain: `Some resources are remaining: pods. has 3 resource instances` | ContentRemoved |
//! | NamespaceFinalizersRemaining | SomeFinalizersRemain: `Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances` | ContentHasNoFinalizers |
//!
//! Lists inside messages are sorted, so a pass that finds the same thing writes nothing. A
//! condition's `lastTransitionTime` moves only when its status flips; other conditions of the
//! namespace are kept as they are.

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
pub const GV_PARSING_FAILURE: &str = "NamespaceDeletionGroupVersionParsingFailure";
pub const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
pub const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
pub const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";

/// The owned types in Kubernetes' order, with their success reason and message.
const OWNED: [(&str, &str, &str); 5] = [
    (
        DISCOVERY_FAILURE,
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        GV_PARSING_FAILURE,
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        CONTENT_FAILURE,
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        CONTENT_REMAINING,
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        FINALIZERS_REMAINING,
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

/// What a pass over the namespace found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Discovery failed: nothing could be listed.
    pub discovery: Option<String>,
    /// Discovered resources whose group/version does not parse.
    pub group_versions: Vec<String>,
    /// Failures listing or deleting content, one per resource.
    pub content: Vec<String>,
    /// Objects still present, by `<plural>.<group>` (`pods.`, `deployments.apps`).
    pub remaining: BTreeMap<String, usize>,
    /// Objects still present, by each finalizer they carry.
    pub finalizers: BTreeMap<String, usize>,
}

impl Findings {
    /// Whether anything failed (the namespace is then not finalized; the pass is retried).
    pub fn failed(&self) -> bool {
        self.discovery.is_some() || !self.group_versions.is_empty() || !self.content.is_empty()
    }

    /// Objects still present.
    pub fn remaining_total(&self) -> usize {
        self.remaining.values().sum()
    }

    /// The failing conditions as `(type, reason, message)`.
    pub fn failing(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut out = Vec::new();
        if let Some(e) = &self.discovery {
            out.push((DISCOVERY_FAILURE, "DiscoveryFailed", e.clone()));
        }
        if !self.group_versions.is_empty() {
            out.push((
                GV_PARSING_FAILURE,
                "GroupVersionParsingFailed",
                self.group_versions.join(", "),
            ));
        }
        if !self.content.is_empty() {
            out.push((
                CONTENT_FAILURE,
                "ContentDeletionFailed",
                content_failure_message(&self.content),
            ));
        }
        if let Some(m) = remaining_message(&self.remaining) {
            out.push((CONTENT_REMAINING, "SomeResourcesRemain", m));
        }
        if let Some(m) = finalizers_message(&self.finalizers) {
            out.push((FINALIZERS_REMAINING, "SomeFinalizersRemain", m));
        }
        out
    }
}

/// `<plural>.<group>`, as Kubernetes names a resource in these messages (`pods.` for the core
/// group).
pub fn resource_name(plural: &str, group: &str) -> String {
    format!("{plural}.{group}")
}

/// Kubernetes' spelling of a GroupVersionResource in errors: `apps/v1, Resource=deployments`,
/// `/v1, Resource=pods`.
pub fn gvr_name(group: &str, version: &str, plural: &str) -> String {
    format!("{group}/{version}, Resource={plural}")
}

/// "Some resources are remaining: ..." or `None` when nothing remains.
pub fn remaining_message(remaining: &BTreeMap<String, usize>) -> Option<String> {
    listing(remaining, |r, n| format!("{r} has {n} resource instances"))
        .map(|l| format!("Some resources are remaining: {l}"))
}

/// "Some content in the namespace has finalizers remaining: ..." or `None`.
pub fn finalizers_message(finalizers: &BTreeMap<String, usize>) -> Option<String> {
    listing(finalizers, |f, n| format!("{f} in {n} resource instances"))
        .map(|l| format!("Some content in the namespace has finalizers remaining: {l}"))
}

/// The non-zero counts, each as `item`, sorted and joined; `None` when there are none.
fn listing(counts: &BTreeMap<String, usize>, item: fn(&str, usize) -> String) -> Option<String> {
    let parts = sorted(
        counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| item(k, *n)),
    );
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// "Failed to delete all resource types, N remaining: ...".
pub fn content_failure_message(errors: &[String]) -> String {
    let msgs = sorted(errors.iter().cloned());
    format!(
        "Failed to delete all resource types, {} remaining: {}",
        msgs.len(),
        msgs.join(", ")
    )
}

fn sorted(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = items.collect();
    v.sort();
    v
}

fn field<'a>(c: &'a Value, name: &str) -> &'a str {
    c.get(name).and_then(Value::as_str).unwrap_or("")
}

/// The namespace's conditions after a pass: each owned type set to its failing variant or its
/// success variant, the first stored condition of that type updated in place (its
/// `lastTransitionTime` moved only when the status flips), missing ones appended in order; the
/// others kept.
pub fn merge(old: &[Value], findings: &Findings, now: &str) -> Vec<Value> {
    let failing = findings.failing();
    let mut out: Vec<Value> = old.to_vec();
    for (ty, ok_reason, ok_message) in OWNED {
        let (status, reason, message) = match failing.iter().find(|(t, _, _)| *t == ty) {
            Some((_, r, m)) => ("True", *r, m.clone()),
            None => ("False", ok_reason, ok_message.to_string()),
        };
        match out.iter_mut().find(|c| field(c, "type") == ty) {
            Some(c) => {
                if field(c, "status") != status {
                    c["lastTransitionTime"] = json!(now);
                }
                c["status"] = json!(status);
                c["reason"] = json!(reason);
                c["message"] = json!(message);
            }
            None => out.push(
                json!({"type": ty, "status": status, "lastTransitionTime": now,
                "reason": reason, "message": message}),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    #[test]
    fn messages_as_kubernetes_writes_them() {
        assert_eq!(resource_name("pods", ""), "pods.");
        assert_eq!(resource_name("deployments", "apps"), "deployments.apps");
        assert_eq!(gvr_name("", "v1", "pods"), "/v1, Resource=pods");
        assert_eq!(
            remaining_message(&counts(&[("pods.", 3)])).as_deref(),
            Some("Some resources are remaining: pods. has 3 resource instances")
        );
        assert_eq!(
            remaining_message(&counts(&[
                ("pods.", 2),
                ("configmaps.", 1),
                ("jobs.batch", 0)
            ]))
            .as_deref(),
            Some(
                "Some resources are remaining: configmaps. has 1 resource instances, pods. has 2 resource instances"
            )
        );
        assert_eq!(remaining_message(&counts(&[("pods.", 0)])), None);
        assert_eq!(
            finalizers_message(&counts(&[("example.com/x", 1)])).as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances"
            )
        );
        assert_eq!(finalizers_message(&BTreeMap::new()), None);
        assert_eq!(
            content_failure_message(&["b went wrong".into(), "a went wrong".into()]),
            "Failed to delete all resource types, 2 remaining: a went wrong, b went wrong"
        );
    }

    #[test]
    fn merge_sets_every_owned_type_and_keeps_the_rest() {
        let other = json!({"type": "Custom", "status": "True"});
        let findings = Findings {
            remaining: counts(&[("pods.", 3)]),
            ..Default::default()
        };
        let c = merge(std::slice::from_ref(&other), &findings, "T1");
        assert_eq!(c.len(), 6);
        assert_eq!(c[0], other);
        let by = |ty: &str| {
            c.iter()
                .find(|x| x["type"] == ty)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(
            by(CONTENT_REMAINING),
            json!({"type": CONTENT_REMAINING, "status": "True", "lastTransitionTime": "T1",
                "reason": "SomeResourcesRemain",
                "message": "Some resources are remaining: pods. has 3 resource instances"})
        );
        assert_eq!(by(DISCOVERY_FAILURE)["status"], "False");
        assert_eq!(by(DISCOVERY_FAILURE)["reason"], "ResourcesDiscovered");
        assert_eq!(by(FINALIZERS_REMAINING)["reason"], "ContentHasNoFinalizers");

        // Same findings later: nothing changes, times included.
        assert_eq!(merge(&c, &findings, "T2"), c);
        // Content gone: the flip moves the time; a message change alone does not.
        let gone = merge(&c, &Findings::default(), "T3");
        let by = |ty: &str| {
            gone.iter()
                .find(|x| x["type"] == ty)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(by(CONTENT_REMAINING)["status"], "False");
        assert_eq!(by(CONTENT_REMAINING)["reason"], "ContentRemoved");
        assert_eq!(by(CONTENT_REMAINING)["lastTransitionTime"], "T3");
        assert_eq!(by(DISCOVERY_FAILURE)["lastTransitionTime"], "T1");
        let more = Findings {
            remaining: counts(&[("pods.", 1)]),
            ..Default::default()
        };
        let c2 = merge(&c, &more, "T4");
        let rem = c2.iter().find(|x| x["type"] == CONTENT_REMAINING).cloned();
        assert_eq!(
            rem.as_ref().map(|r| r["lastTransitionTime"].clone()),
            Some(json!("T1"))
        );
    }

    #[test]
    fn failures_are_named() {
        let f = Findings {
            discovery: Some("the server is unavailable".into()),
            group_versions: vec!["unexpected GroupVersion string: a/b/c".into()],
            content: vec!["x".into()],
            finalizers: counts(&[("example.com/x", 2)]),
            ..Default::default()
        };
        assert!(f.failed());
        let types: Vec<_> = f.failing().iter().map(|(t, r, _)| (*t, *r)).collect();
        assert_eq!(
            types,
            [
                (DISCOVERY_FAILURE, "DiscoveryFailed"),
                (GV_PARSING_FAILURE, "GroupVersionParsingFailed"),
                (CONTENT_FAILURE, "ContentDeletionFailed"),
                (FINALIZERS_REMAINING, "SomeFinalizersRemain"),
            ]
        );
        assert!(!Findings::default().failed());
    }
}
