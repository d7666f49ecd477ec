use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::state::{ObjKey, StoredObject};

fn rule(v: Value) -> Rule {
    serde_json::from_value(v).expect("rule")
}

fn res<'a>(
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    sub: &'a str,
    name: &'a str,
) -> Attributes<'a> {
    Attributes {
        verb,
        group,
        resource,
        subresource: sub,
        namespace: "default",
        name,
        ..Default::default()
    }
}

#[test]
fn rules_match_verbs_groups_resources_subresources_and_names() {
    let r = rule(
        json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}),
    );
    assert!(r.allows(&res("get", "", "pods", "", "a")));
    assert!(r.allows(&res("get", "", "pods", "log", "a")));
    assert!(
        !r.allows(&res("get", "", "pods", "exec", "a")),
        "another subresource"
    );
    assert!(
        !r.allows(&res("delete", "", "pods", "", "a")),
        "another verb"
    );
    assert!(
        !r.allows(&res("get", "apps", "pods", "", "a")),
        "another group"
    );
    let any_scale = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/scale"]}));
    assert!(any_scale.allows(&res("update", "apps", "deployments", "scale", "d")));
    assert!(!any_scale.allows(&res("update", "apps", "deployments", "", "d")));
    let star = rule(json!({"verbs": ["patch"], "apiGroups": [""], "resources": ["*"]}));
    assert!(
        star.allows(&res("patch", "", "services", "status", "s")),
        "* covers subresources"
    );
    let named = rule(
        json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["one"]}),
    );
    assert!(named.allows(&res("get", "", "configmaps", "", "one")));
    assert!(!named.allows(&res("get", "", "configmaps", "", "two")));
    assert!(
        !named.allows(&res("list", "", "configmaps", "", "")),
        "a named rule never allows a list"
    );
    let urls = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]}));
    let path = |p| Attributes {
        verb: "get",
        path: p,
        ..Default::default()
    };
    assert!(urls.allows(&path("/healthz")));
    assert!(urls.allows(&path("/apis/x")));
    assert!(!urls.allows(&path("/admin/backup")));
    assert!(
        !urls.allows(&res("get", "", "pods", "", "")),
        "a path rule grants no resource"
    );
}

fn load(state: &mut State, kind: &str, ns: &str, obj: Value) {
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    let labels = obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    state.load(
        ObjKey {
            kind: kind.into(),
            namespace: ns.into(),
            name,
        },
        Arc::new(StoredObject {
            rv: 1,
            json: obj.to_string().into(),
            labels,
            fields: vec![],
            deleting: false,
            claims: vec![],
        }),
    );
}

fn user(u: &str, groups: &[&str]) -> Identity {
    Identity {
        user: u.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

#[test]
fn bindings_grant_in_their_scope_and_aggregation_unions_roles() {
    let mut s = State::default();
    load(
        &mut s,
        KINDS[1],
        "",
        json!({"metadata": {"name": "view"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}}),
    );
    load(
        &mut s,
        KINDS[1],
        "",
        json!({"metadata": {"name": "pods-read", "labels": {"agg": "view"}},
        "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}),
    );
    load(
        &mut s,
        KINDS[0],
        "team",
        json!({"metadata": {"name": "cm-edit"},
        "rules": [{"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"]}]}),
    );
    load(
        &mut s,
        KINDS[2],
        "team",
        json!({"metadata": {"name": "b1"},
        "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "alice"}]}),
    );
    load(
        &mut s,
        KINDS[2],
        "team",
        json!({"metadata": {"name": "b2"},
        "roleRef": {"kind": "Role", "name": "cm-edit"}, "subjects": [{"kind": "ServiceAccount", "name": "bot"}]}),
    );
    load(
        &mut s,
        KINDS[3],
        "",
        json!({"metadata": {"name": "ops"},
        "roleRef": {"kind": "ClusterRole", "name": "pods-read"}, "subjects": [{"kind": "Group", "name": "ops"}]}),
    );
    let c = Compiled::from_state(&s);
    let in_ns = |ns: &'static str, verb: &'static str, resource: &'static str| Attributes {
        verb,
        resource,
        namespace: ns,
        ..Default::default()
    };
    let alice = user("alice", &[]);
    assert!(
        c.allows(&alice, &in_ns("team", "list", "pods")),
        "view aggregates pods-read"
    );
    assert!(
        !c.allows(&alice, &in_ns("other", "list", "pods")),
        "a RoleBinding grants in its namespace only"
    );
    assert!(!c.allows(&alice, &in_ns("team", "delete", "pods")));
    let bot = user("system:serviceaccount:team:bot", &[]);
    assert!(c.allows(&bot, &in_ns("team", "delete", "configmaps")));
    assert!(!c.allows(&bot, &in_ns("team", "get", "secrets")));
    let ops = user("carol", &["ops"]);
    assert!(
        c.allows(&ops, &in_ns("anywhere", "get", "pods")),
        "a ClusterRoleBinding grants everywhere"
    );
    assert!(
        c.allows(&ops, &in_ns("", "list", "pods")),
        "and across namespaces"
    );
    assert!(
        !c.allows(&alice, &in_ns("", "list", "pods")),
        "a RoleBinding never grants across namespaces"
    );
}

#[test]
fn covers_refuses_grants_beyond_what_is_held() {
    let held = [rule(
        json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "configmaps"]}),
    )];
    let held: Vec<&Rule> = held.iter().collect();
    assert!(covers(
        &held,
        &rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}))
    ));
    assert!(!covers(
        &held,
        &rule(json!({"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}))
    ));
    assert!(
        !covers(
            &held,
            &rule(json!({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}))
        ),
        "a wanted * needs a held *"
    );
    assert!(!covers(
        &held,
        &rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}))
    ));
    let star = [rule(
        json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
    )];
    let star: Vec<&Rule> = star.iter().collect();
    assert!(covers(
        &star,
        &rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}))
    ));
    assert!(!covers(
        &star,
        &rule(json!({"verbs": ["get"], "nonResourceURLs": ["/admin/backup"]}))
    ));
}

proptest::proptest! {
    /// Arbitrary JSON as roles and bindings never panics the compiler or the evaluator.
    #[test]
    fn random_rbac_objects_do_not_panic(
        verbs in proptest::collection::vec("[a-z*]{0,6}", 0..4),
        resources in proptest::collection::vec("[a-z*/]{0,10}", 0..4),
        names in proptest::collection::vec("[a-z]{0,3}", 0..3),
        kind in "(User|Group|ServiceAccount|Other|)",
        junk in "[ -~]{0,40}",
    ) {
        let mut s = State::default();
        load(&mut s, KINDS[1], "", json!({"metadata": {"name": "r"},
            "rules": [{"verbs": verbs, "apiGroups": ["", "*"], "resources": resources.clone(), "resourceNames": names}],
            "aggregationRule": {"clusterRoleSelectors": [{"matchExpressions": [{"key": junk.clone(), "operator": junk.clone()}]}]}}));
        load(&mut s, KINDS[3], "", json!({"metadata": {"name": "b"}, "roleRef": {"kind": kind.clone(), "name": "r"},
            "subjects": [{"kind": kind, "name": "u"}]}));
        load(&mut s, KINDS[2], "ns", json!({"metadata": {"name": "x"}, "roleRef": junk.clone(), "subjects": junk}));
        let c = Compiled::from_state(&s);
        for r in &resources {
            let (res, sub) = r.split_once('/').unwrap_or((r, ""));
            let _ = c.allows(&user("u", &[]), &Attributes { verb: "get", resource: res, subresource: sub, namespace: "ns", ..Default::default() });
        }
    }
}
