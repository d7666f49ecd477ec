//! RBAC as Kubernetes evaluates it, over the store's Roles, ClusterRoles and bindings.
//!
//! A ClusterRoleBinding grants its ClusterRole's rules everywhere; a RoleBinding grants its Role's
//! (or a ClusterRole's) rules in its own namespace only. A rule matches when its verbs, API
//! groups and resources (`*`, `pods`, `pods/log`, `*/scale`) cover the request, and its
//! resourceNames, if any, hold the request's name; non-resource rules match paths exactly or by
//! a trailing `*`. A ClusterRole with an aggregationRule holds, in addition to its own rules, the
//! rules of every ClusterRole its selectors match (resolved here at evaluation, so it applies at
//! once; nothing is written back into the object).
//!
//! Every request reads the store's latest snapshot: a compiled rule set is kept and rebuilt when
//! one of the four RBAC kinds changed (a pointer comparison of their persistent maps), so a
//! binding change applies to the next request after its write is acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rudder_api::k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use rudder_api::selector::LabelSelector;
use serde::Deserialize;
use serde_json::Value;

use super::authz::{Attributes, Authorizer, Decision};
use crate::service::Identity;
use crate::state::{KindObjects, State};
use crate::store::Store;

pub const GROUP: &str = "rbac.authorization.k8s.io";
const KINDS: [&str; 4] = [
    "rbac.authorization.k8s.io/Role",
    "rbac.authorization.k8s.io/ClusterRole",
    "rbac.authorization.k8s.io/RoleBinding",
    "rbac.authorization.k8s.io/ClusterRoleBinding",
];

/// One PolicyRule.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

impl Rule {
    /// Whether this rule allows the request.
    pub fn allows(&self, a: &Attributes<'_>) -> bool {
        if !has(&self.verbs, a.verb) {
            return false;
        }
        if !a.is_resource() {
            return self.non_resource_urls.iter().any(|u| {
                u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        if !has(&self.api_groups, a.group) {
            return false;
        }
        // As Kubernetes' ResourceMatches: `*` is every resource and subresource, otherwise
        // `pods` or `pods/log` exactly, or `*/log` for that subresource of any resource.
        let resource_ok = self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if a.subresource.is_empty() {
                return r == a.resource;
            }
            match r.split_once('/') {
                Some((res, sub)) => (res == "*" || res == a.resource) && sub == a.subresource,
                None => false,
            }
        });
        resource_ok
            && (self.resource_names.is_empty()
                || (!a.name.is_empty() && self.resource_names.iter().any(|n| n == a.name)))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RoleObj {
    rules: Vec<Rule>,
    aggregation_rule: Option<Aggregation>,
    metadata: Meta,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Aggregation {
    cluster_role_selectors: Vec<metav1::LabelSelector>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Meta {
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

impl Subject {
    pub fn matches(&self, id: &Identity, binding_ns: &str) -> bool {
        match self.kind.as_str() {
            "User" => self.name == id.user,
            "Group" => id.groups.contains(&self.name),
            "ServiceAccount" => {
                let ns = if self.namespace.is_empty() {
                    binding_ns
                } else {
                    &self.namespace
                };
                id.user == format!("system:serviceaccount:{ns}:{}", self.name)
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RoleRef {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct BindingObj {
    subjects: Vec<Subject>,
    #[serde(rename = "roleRef")]
    role_ref: RoleRef,
}

/// A binding's subjects and the rules its role grants them.
type Grant = (Vec<Subject>, Arc<Vec<Rule>>);

/// The RBAC kinds' maps a compiled rule set was made from, and the rule set.
type Cached = (Vec<Option<KindObjects>>, Arc<Compiled>);

/// The rules in force, compiled from one snapshot.
#[derive(Debug, Default)]
pub struct Compiled {
    cluster_roles: HashMap<String, Arc<Vec<Rule>>>,
    roles: HashMap<(String, String), Arc<Vec<Rule>>>,
    /// ClusterRoleBindings: subjects and the rules they get.
    cluster_bindings: Vec<Grant>,
    /// RoleBindings by namespace.
    bindings: HashMap<String, Vec<Grant>>,
}

fn parse<T: Default + for<'de> Deserialize<'de>>(json: &[u8], what: &str) -> T {
    serde_json::from_slice(json).unwrap_or_else(|e| {
        tracing::warn!(error = %e, what, "RBAC object ignored: it cannot be read");
        T::default()
    })
}

impl Compiled {
    pub fn from_state(state: &State) -> Compiled {
        let mut c = Compiled::default();
        let mut raw_cluster: Vec<(String, RoleObj)> = Vec::new();
        for ((_, name), o) in state.range(KINDS[1], "", None) {
            raw_cluster.push((name.clone(), parse(&o.json, "ClusterRole")));
        }
        for (name, role) in &raw_cluster {
            let mut rules = role.rules.clone();
            if let Some(agg) = &role.aggregation_rule {
                let selectors: Vec<LabelSelector> = agg
                    .cluster_role_selectors
                    .iter()
                    .filter_map(|s| LabelSelector::from_object(s).ok())
                    .collect();
                for (other, r) in &raw_cluster {
                    if other != name && selectors.iter().any(|s| s.matches(&r.metadata.labels)) {
                        rules.extend(r.rules.iter().cloned());
                    }
                }
            }
            c.cluster_roles.insert(name.clone(), Arc::new(rules));
        }
        for ((ns, name), o) in state.range(KINDS[0], "", None) {
            let role: RoleObj = parse(&o.json, "Role");
            c.roles
                .insert((ns.clone(), name.clone()), Arc::new(role.rules));
        }
        let empty = Arc::new(Vec::new());
        for (_, o) in state.range(KINDS[3], "", None) {
            let b: BindingObj = parse(&o.json, "ClusterRoleBinding");
            if b.role_ref.kind == "ClusterRole" {
                let rules = c
                    .cluster_roles
                    .get(&b.role_ref.name)
                    .cloned()
                    .unwrap_or_else(|| empty.clone());
                c.cluster_bindings.push((b.subjects, rules));
            }
        }
        for ((ns, _), o) in state.range(KINDS[2], "", None) {
            let b: BindingObj = parse(&o.json, "RoleBinding");
            let rules = match b.role_ref.kind.as_str() {
                "ClusterRole" => c.cluster_roles.get(&b.role_ref.name).cloned(),
                "Role" => c.roles.get(&(ns.clone(), b.role_ref.name.clone())).cloned(),
                _ => None,
            }
            .unwrap_or_else(|| empty.clone());
            c.bindings
                .entry(ns.clone())
                .or_default()
                .push((b.subjects, rules));
        }
        c
    }

    /// Every rule `id` holds in `namespace` (cluster-wide ones included).
    pub fn rules_for<'a>(
        &'a self,
        id: &'a Identity,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        let cluster = self
            .cluster_bindings
            .iter()
            .filter(move |(s, _)| s.iter().any(|s| s.matches(id, "")))
            .flat_map(|(_, r)| r.iter());
        let local = self
            .bindings
            .get(namespace)
            .filter(|_| !namespace.is_empty())
            .into_iter()
            .flatten()
            .filter(move |(s, _)| s.iter().any(|s| s.matches(id, namespace)))
            .flat_map(|(_, r)| r.iter());
        cluster.chain(local)
    }

    pub fn allows(&self, id: &Identity, a: &Attributes<'_>) -> bool {
        self.rules_for(id, a.namespace).any(|r| r.allows(a))
    }

    /// The rules of a role reference as a binding in `namespace` would grant them.
    pub fn role_rules(&self, role_ref: &RoleRef, namespace: &str) -> Option<Arc<Vec<Rule>>> {
        match role_ref.kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&role_ref.name).cloned(),
            "Role" => self
                .roles
                .get(&(namespace.to_string(), role_ref.name.clone()))
                .cloned(),
            _ => None,
        }
    }
}

/// Whether the holder of `held` may grant `wanted` (Kubernetes' escalation check): every
/// verb × group × resource × name the wanted rule names must be allowed by a held rule, a `*`
/// only by a held `*`.
pub fn covers(held: &[&Rule], wanted: &Rule) -> bool {
    let or_empty = |v: &[String]| -> Vec<String> {
        if v.is_empty() {
            vec![String::new()]
        } else {
            v.to_vec()
        }
    };
    for verb in &wanted.verbs {
        for path in &wanted.non_resource_urls {
            let a = Attributes {
                verb,
                path,
                ..Default::default()
            };
            if !held.iter().any(|h| h.allows(&a)) {
                return false;
            }
        }
        for group in &wanted.api_groups {
            for res in &wanted.resources {
                let (resource, sub) = res.split_once('/').unwrap_or((res, ""));
                for name in or_empty(&wanted.resource_names) {
                    let a = Attributes {
                        verb,
                        group,
                        resource,
                        subresource: sub,
                        name: &name,
                        ..Default::default()
                    };
                    // The wanted rule's `*` stands for itself: held rules match it only with
                    // their own `*` (`has` treats a held `*` as covering any literal).
                    if !held.iter().any(|h| h.allows(&a)) {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// The RBAC authorizer over a store.
pub struct Rbac {
    store: Store,
    cache: Mutex<Option<Cached>>,
}

impl Rbac {
    pub fn new(store: Store) -> Self {
        Rbac {
            store,
            cache: Mutex::new(None),
        }
    }

    /// The rules compiled from the latest snapshot.
    pub fn compiled(&self) -> Arc<Compiled> {
        let state = self.store.snapshot();
        let maps: Vec<Option<KindObjects>> =
            KINDS.iter().map(|k| state.objects_of(k).cloned()).collect();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, c)) = cache.as_ref() {
            let same = seen.iter().zip(&maps).all(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => a.ptr_eq(b),
                (None, None) => true,
                _ => false,
            });
            if same {
                return c.clone();
            }
        }
        let c = Arc::new(Compiled::from_state(&state));
        *cache = Some((maps, c.clone()));
        c
    }
}

impl Authorizer for Rbac {
    fn authorize(&self, id: &Identity, a: &Attributes<'_>) -> Decision {
        if self.compiled().allows(id, a) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }
}

/// A role's or binding's JSON parsed for the escalation check.
pub fn rules_of(json: &Value) -> Vec<Rule> {
    json.get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

pub fn role_ref_of(json: &Value) -> RoleRef {
    json.get("roleRef")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
