//! The slice reconciler: from the slices a Service has and the endpoints it should have, the
//! fewest writes that get there (Kubernetes' `Reconciler`), as a pure [`plan`].
//!
//! Per address type, and within it per port set:
//! 1. every existing slice keeps the endpoints still desired (updated in place when their
//!    conditions, node or zone changed) and drops the others; a slice left empty is deleted, a
//!    changed one updated, one whose labels no longer match the Service's relabelled;
//! 2. the endpoints not yet placed fill the slices being updated anyway, fullest first, up to
//!    the maximum per slice (a write that happens anyway costs nothing more);
//! 3. what is still left goes to new slices of the maximum size, and a remainder smaller than
//!    that into the unchanged slice it fills closest to full, or a new slice.
//!
//! Slices of a port set or address type no longer desired are deleted, as are slices of an
//! older Service of the same name (another owner uid). A Service with no endpoints at all keeps
//! one empty placeholder slice, so consumers can tell "no endpoints" from "not processed". A
//! creation and a deletion in the same pass become one update of the slice that would have been
//! deleted, so churn is one write where it could have been two.

use std::collections::{BTreeMap, BTreeSet};

use super::desired::{Content, Endpoint, EndpointKey, Group, Labels, Port, port_key};

/// A slice the Service has now.
#[derive(Debug, Clone, PartialEq)]
pub struct Existing {
    pub name: String,
    /// Controlled by this Service (its uid), not by an older one of the same name.
    pub owned: bool,
    pub content: Content,
}

/// The writes a reconcile makes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<Content>,
    /// Slice name → its new content.
    pub update: Vec<(String, Content)>,
    pub delete: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// The plan for one Service: its `existing` slices, the `desired` endpoint groups per address
/// type (each type the Service supports has an entry), the labels its slices must carry, and
/// the maximum endpoints per slice.
pub fn plan(
    existing: &[Existing],
    desired: &BTreeMap<String, BTreeMap<Vec<Port>, Group>>,
    labels: &Labels,
    max: usize,
) -> Plan {
    let max = max.max(1);
    let mut out = Plan::default();
    // Slices of an address type the Service no longer has go.
    for e in existing {
        if !desired.contains_key(&e.content.address_type) {
            out.delete.push(e.name.clone());
        }
    }
    for (address_type, groups) in desired {
        let of_type: Vec<&Existing> = existing
            .iter()
            .filter(|e| &e.content.address_type == address_type)
            .collect();
        let p = by_address_type(address_type, &of_type, groups, labels, max);
        out.create.extend(p.create);
        out.update.extend(p.update);
        out.delete.extend(p.delete);
    }
    out
}

fn by_address_type(
    address_type: &str,
    existing: &[&Existing],
    groups: &BTreeMap<Vec<Port>, Group>,
    labels: &Labels,
    max: usize,
) -> Plan {
    let mut out = Plan::default();
    let mut by_ports: BTreeMap<Vec<Port>, Vec<&Existing>> = BTreeMap::new();
    for e in existing {
        if e.owned {
            by_ports
                .entry(port_key(&e.content.ports))
                .or_default()
                .push(e);
        } else {
            out.delete.push(e.name.clone());
        }
    }
    for (key, group) in groups {
        let slices = by_ports.get(key).map(Vec::as_slice).unwrap_or(&[]);
        let p = by_port_set(address_type, slices, group, labels, max);
        out.create.extend(p.create);
        out.update.extend(p.update);
        out.delete.extend(p.delete);
    }
    for (key, slices) in &by_ports {
        if !groups.contains_key(key) {
            out.delete.extend(slices.iter().map(|e| e.name.clone()));
        }
    }
    let placeholder = Content {
        address_type: address_type.to_string(),
        ports: Vec::new(),
        endpoints: Vec::new(),
        labels: labels.clone(),
    };
    if existing.len() == out.delete.len() && out.create.is_empty() {
        // Nothing would be left: keep (or make) one empty slice.
        let keep = match out.delete.as_slice() {
            [only] => existing
                .iter()
                .find(|e| &e.name == only)
                .is_some_and(|e| e.owned && e.content == placeholder),
            _ => false,
        };
        if keep {
            out.delete.clear();
        } else {
            out.create.push(placeholder);
        }
    }
    // A create and a delete make one update of the slice that would go (`finalize`); slices
    // of an older Service are never reused.
    let owned: BTreeSet<&str> = existing
        .iter()
        .filter(|e| e.owned)
        .map(|e| e.name.as_str())
        .collect();
    let mut i = 0;
    while i < out.delete.len() && !out.create.is_empty() {
        if owned.contains(out.delete[i].as_str()) {
            let name = out.delete.remove(i);
            if let Some(content) = out.create.pop() {
                out.update.push((name, content));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Steps 1-3 of the module doc for the slices of one port set.
fn by_port_set(
    address_type: &str,
    existing: &[&Existing],
    group: &Group,
    labels: &Labels,
    max: usize,
) -> Plan {
    let mut out = Plan::default();
    let mut left: BTreeMap<EndpointKey, Endpoint> = group.endpoints.clone();
    let mut updates: Vec<(String, Content)> = Vec::new();
    let mut unchanged: Vec<(String, Content)> = Vec::new();
    // 1. Keep what is still desired, in its place.
    for e in existing {
        let mut kept = Vec::new();
        let mut changed = false;
        for ep in &e.content.endpoints {
            if let Some(want) = left.remove(&ep.key()) {
                changed |= &want != ep;
                kept.push(want);
            }
        }
        let removed = kept.len() != e.content.endpoints.len();
        let relabel = &e.content.labels != labels;
        if (changed || removed) && kept.is_empty() {
            out.delete.push(e.name.clone());
            continue;
        }
        let mut content = e.content.clone();
        content.endpoints = kept;
        content.labels = labels.clone();
        if changed || removed || relabel {
            updates.push((e.name.clone(), content));
        } else {
            unchanged.push((e.name.clone(), content));
        }
    }
    // 2. Fill the slices written anyway, fullest first.
    updates.sort_by(|a, b| {
        b.1.endpoints
            .len()
            .cmp(&a.1.endpoints.len())
            .then_with(|| a.0.cmp(&b.0))
    });
    for (_, c) in updates.iter_mut() {
        fill(c, &mut left, max);
    }
    // 3. The rest: whole new slices, and a remainder into the unchanged slice it fills best.
    while !left.is_empty() {
        let fit = if left.len() < max {
            closest_to_full(&unchanged, left.len(), max)
        } else {
            None
        };
        match fit {
            Some(i) => {
                let (name, mut c) = unchanged.remove(i);
                fill(&mut c, &mut left, max);
                updates.push((name, c));
            }
            None => {
                let mut c = Content {
                    address_type: address_type.to_string(),
                    ports: group.ports.clone(),
                    endpoints: Vec::new(),
                    labels: labels.clone(),
                };
                fill(&mut c, &mut left, max);
                out.create.push(c);
            }
        }
    }
    out.update = updates;
    out
}

/// Moves endpoints from `left` into `c`, in key order, until it holds `max`.
fn fill(c: &mut Content, left: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    while c.endpoints.len() < max {
        match left.pop_first() {
            Some((_, ep)) => c.endpoints.push(ep),
            None => break,
        }
    }
}

/// The slice among `slices` that `n` more endpoints leave closest to full without passing
/// `max` (`getSliceToFill`).
fn closest_to_full(slices: &[(String, Content)], n: usize, max: usize) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, (_, c)) in slices.iter().enumerate() {
        let Some(room) = max.checked_sub(n + c.endpoints.len()) else {
            continue;
        };
        if best.is_none_or(|(_, r)| room < r) {
            best = Some((i, room));
            if room == 0 {
                break;
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::super::desired::{Target, port_key};
    use super::*;

    fn ep(i: usize, ready: bool) -> Endpoint {
        Endpoint {
            addresses: vec![format!("10.0.{}.{}", i / 250, i % 250 + 1)],
            ready: Some(ready),
            serving: Some(ready),
            terminating: Some(false),
            hostname: None,
            node_name: Some("n1".into()),
            zone: None,
            target: Some(Target {
                kind: "Pod".into(),
                namespace: "ns".into(),
                name: format!("p{i:04}"),
                uid: format!("u{i}"),
            }),
        }
    }

    fn http() -> Vec<Port> {
        vec![Port {
            name: "http".into(),
            port: Some(8080),
            protocol: "TCP".into(),
            app_protocol: None,
        }]
    }

    fn labels() -> Labels {
        [("kubernetes.io/service-name".to_string(), "web".to_string())].into()
    }

    fn group(ports: Vec<Port>, eps: impl IntoIterator<Item = Endpoint>) -> Group {
        Group {
            ports,
            endpoints: eps.into_iter().map(|e| (e.key(), e)).collect(),
        }
    }

    fn want(groups: Vec<Group>) -> BTreeMap<String, BTreeMap<Vec<Port>, Group>> {
        let m = groups
            .into_iter()
            .map(|g| (port_key(&g.ports), g))
            .collect();
        [("IPv4".to_string(), m)].into()
    }

    fn slice(name: &str, eps: impl IntoIterator<Item = Endpoint>) -> Existing {
        Existing {
            name: name.into(),
            owned: true,
            content: Content {
                address_type: "IPv4".into(),
                ports: http(),
                endpoints: eps.into_iter().collect(),
                labels: labels(),
            },
        }
    }

    fn sizes(contents: impl IntoIterator<Item = usize>) -> Vec<usize> {
        contents.into_iter().collect()
    }

    #[test]
    fn many_endpoints_are_cut_into_slices_of_the_maximum() {
        let p = plan(
            &[],
            &want(vec![group(http(), (0..250).map(|i| ep(i, true)))]),
            &labels(),
            100,
        );
        assert_eq!(
            sizes(p.create.iter().map(|c| c.endpoints.len())),
            vec![100, 100, 50]
        );
        assert!(p.update.is_empty() && p.delete.is_empty());
        assert!(
            p.create
                .iter()
                .all(|c| c.ports == http() && c.labels == labels())
        );
    }

    #[test]
    fn nothing_changes_when_everything_is_in_place() {
        let existing = vec![slice("a", (0..3).map(|i| ep(i, true)))];
        let p = plan(
            &existing,
            &want(vec![group(http(), (0..3).map(|i| ep(i, true)))]),
            &labels(),
            100,
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn a_changed_condition_is_one_update_in_place() {
        let existing = vec![
            slice("a", (0..3).map(|i| ep(i, true))),
            slice("b", (3..6).map(|i| ep(i, true))),
        ];
        let eps = (0..6).map(|i| ep(i, i != 4));
        let p = plan(&existing, &want(vec![group(http(), eps)]), &labels(), 100);
        assert!(p.create.is_empty() && p.delete.is_empty());
        assert_eq!(p.update.len(), 1);
        let (name, c) = &p.update[0];
        assert_eq!(name, "b");
        assert_eq!(c.endpoints[1].ready, Some(false));
        assert_eq!(c.endpoints.len(), 3);
    }

    #[test]
    fn new_endpoints_fill_slices_being_written_anyway_before_new_ones() {
        // "a" loses one endpoint (so it is written) and has room; "b" is full and unchanged.
        let existing = vec![
            slice("a", (0..5).map(|i| ep(i, true))),
            slice("b", (10..20).map(|i| ep(i, true))),
        ];
        let eps = (1..5).chain(10..20).chain(100..103).map(|i| ep(i, true));
        let p = plan(&existing, &want(vec![group(http(), eps)]), &labels(), 10);
        assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].0, "a");
        assert_eq!(p.update[0].1.endpoints.len(), 7);
    }

    #[test]
    fn a_remainder_goes_to_the_unchanged_slice_it_fills_best() {
        let existing = vec![
            slice("a", (0..5).map(|i| ep(i, true))),
            slice("b", (10..17).map(|i| ep(i, true))),
        ];
        let eps = (0..5).chain(10..17).chain(100..103).map(|i| ep(i, true));
        let p = plan(&existing, &want(vec![group(http(), eps)]), &labels(), 10);
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].0, "b", "7 + 3 fills b exactly");
        assert_eq!(p.update[0].1.endpoints.len(), 10);
        // Too many for any: a new slice.
        let eps = (0..5).chain(10..17).chain(100..106).map(|i| ep(i, true));
        let p = plan(&existing, &want(vec![group(http(), eps)]), &labels(), 10);
        assert!(p.update.is_empty());
        assert_eq!(sizes(p.create.iter().map(|c| c.endpoints.len())), vec![6]);
    }

    #[test]
    fn emptied_slices_go_and_a_create_reuses_one() {
        // Every endpoint of "a" and "b" is gone; three new ones arrive: one of them is reused
        // for the new endpoints, the other deleted.
        let existing = vec![slice("a", [ep(0, true)]), slice("b", [ep(1, true)])];
        let p = plan(
            &existing,
            &want(vec![group(http(), (5..8).map(|i| ep(i, true)))]),
            &labels(),
            100,
        );
        assert!(p.create.is_empty());
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.update[0].1.endpoints.len(), 3);
        assert_ne!(p.update[0].0, p.delete[0]);
    }

    #[test]
    fn no_endpoints_leaves_one_placeholder() {
        let p = plan(&[], &want(vec![]), &labels(), 100);
        assert_eq!(p.create.len(), 1);
        let placeholder = p.create[0].clone();
        assert!(placeholder.endpoints.is_empty() && placeholder.ports.is_empty());
        // A placeholder in place stays; a last emptied slice becomes the placeholder.
        let existing = vec![Existing {
            name: "a".into(),
            owned: true,
            content: placeholder.clone(),
        }];
        assert!(plan(&existing, &want(vec![]), &labels(), 100).is_empty());
        let existing = vec![slice("a", [ep(0, true)])];
        let p = plan(&existing, &want(vec![]), &labels(), 100);
        assert_eq!(p.update, vec![("a".to_string(), placeholder)]);
        assert!(p.create.is_empty() && p.delete.is_empty());
    }

    #[test]
    fn other_owners_other_port_sets_and_address_types_are_replaced() {
        let mut old = slice("old", [ep(0, true)]);
        old.owned = false;
        let mut v6 = slice("v6", []);
        v6.content.address_type = "IPv6".into();
        let mut other_ports = slice("ports", [ep(1, true)]);
        other_ports.content.ports[0].port = Some(9999);
        let existing = vec![old, v6, other_ports];
        let p = plan(
            &existing,
            &want(vec![group(http(), [ep(0, true), ep(1, true)])]),
            &labels(),
            100,
        );
        // The slice of the other port set is reused for the new one; the others go. The older
        // Service's slice is never reused.
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].0, "ports");
        assert_eq!(p.update[0].1.ports, http());
        assert_eq!(p.update[0].1.endpoints.len(), 2);
        let mut deleted = p.delete.clone();
        deleted.sort();
        assert_eq!(deleted, vec!["old".to_string(), "v6".to_string()]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn labels_follow_the_service() {
        let existing = vec![slice("a", [ep(0, true)])];
        let mut l = labels();
        l.insert("team".into(), "b".into());
        let p = plan(
            &existing,
            &want(vec![group(http(), [ep(0, true)])]),
            &l,
            100,
        );
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].1.labels, l);
    }

    #[test]
    fn duplicates_across_slices_are_dropped() {
        let existing = vec![
            slice("a", [ep(0, true), ep(1, true)]),
            slice("b", [ep(1, true), ep(2, true)]),
        ];
        let p = plan(
            &existing,
            &want(vec![group(http(), (0..3).map(|i| ep(i, true)))]),
            &labels(),
            100,
        );
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].0, "b");
        assert_eq!(p.update[0].1.endpoints, vec![ep(2, true)]);
    }
}
