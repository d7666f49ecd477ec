//! RBAC validation: policy rules of Roles and ClusterRoles, and the role references and subjects
//! of RoleBindings and ClusterRoleBindings.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::helpers::{Errs, Path, dns_subdomain, enum_value, immutable, required_str};
use super::{FieldError, NameRule, Validate, check_name};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// `namespaced`: rules of a Role, which cannot grant non-resource URLs (those are cluster-wide).
fn rules(errs: &mut Errs, rules: Option<&Vec<PolicyRule>>, namespaced: bool) {
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let p = Path::new("rules").index(i);
        if rule.verbs.is_empty() {
            errs.push(FieldError::required(p.child("verbs")));
        }
        let urls = rule
            .non_resource_urls
            .as_ref()
            .is_some_and(|u| !u.is_empty());
        let resources = rule.resources.as_ref().is_some_and(|r| !r.is_empty());
        let groups = rule.api_groups.as_ref().is_some_and(|g| !g.is_empty());
        if urls {
            let up = p.child("nonResourceURLs");
            let value = rule.non_resource_urls.clone().unwrap_or_default().join(",");
            if namespaced {
                errs.push(FieldError::invalid(
                    &up,
                    &value,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            } else if resources || groups {
                errs.push(FieldError::invalid(
                    &up,
                    &value,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if !groups {
            errs.push(FieldError::required(p.child("apiGroups")));
        }
        if !resources {
            errs.push(FieldError::required(p.child("resources")));
        }
    }
}

impl Validate for Role {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        rules(&mut errs, self.rules.as_ref(), true);
        errs
    }
}

impl Validate for ClusterRole {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        rules(&mut errs, self.rules.as_ref(), false);
        errs
    }
}

/// A binding's roleRef (with the kinds it may name), its subjects, and roleRef immutability:
/// pointing an existing binding at another role would silently change who may do what.
fn binding(
    role_ref: &RoleRef,
    subjects: Option<&Vec<Subject>>,
    old_ref: Option<&RoleRef>,
    ref_kinds: &[&str],
    cluster: bool,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rp = Path::new("roleRef");
    enum_value(
        &mut errs,
        &rp.child("apiGroup"),
        &role_ref.api_group,
        &[RBAC_GROUP],
    );
    enum_value(&mut errs, &rp.child("kind"), &role_ref.kind, ref_kinds);
    if let Some(name) = required_str(&mut errs, &rp.child("name"), Some(role_ref.name.as_str()))
        && let Err(detail) = check_name(name, NameRule::PathSegment)
    {
        errs.push(FieldError::invalid(rp.child("name"), name, detail));
    }
    for (i, s) in subjects.into_iter().flatten().enumerate() {
        subject(&mut errs, s, &Path::new("subjects").index(i), cluster);
    }
    if let Some(old_ref) = old_ref {
        immutable(&mut errs, &rp, role_ref, old_ref);
    }
    errs
}

fn subject(errs: &mut Errs, s: &Subject, p: &Path, cluster: bool) {
    required_str(errs, &p.child("name"), Some(s.name.as_str()));
    let group = s.api_group.as_deref().unwrap_or("");
    match s.kind.as_str() {
        "ServiceAccount" => {
            if !group.is_empty() {
                enum_value(errs, &p.child("apiGroup"), group, &[""]);
            }
            if !s.name.is_empty() {
                dns_subdomain(errs, &p.child("name"), &s.name);
            }
            // A cluster binding has no namespace of its own to default the account's from.
            if cluster && s.namespace.as_deref().unwrap_or("").is_empty() {
                errs.push(FieldError::required(p.child("namespace")));
            }
        }
        "User" | "Group" => enum_value(errs, &p.child("apiGroup"), group, &[RBAC_GROUP]),
        other => enum_value(
            errs,
            &p.child("kind"),
            other,
            &["ServiceAccount", "User", "Group"],
        ),
    }
}

/// Bindings differ only in the role kinds they may reference and whether they are cluster-wide.
macro_rules! binding_kind {
    ($t:ty, $ref_kinds:expr, $cluster:expr) => {
        impl Validate for $t {
            fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
                let old_ref = old.map(|o| &o.role_ref);
                binding(
                    &self.role_ref,
                    self.subjects.as_ref(),
                    old_ref,
                    $ref_kinds,
                    $cluster,
                )
            }
        }
    };
}

binding_kind!(RoleBinding, &["Role", "ClusterRole"], false);
binding_kind!(ClusterRoleBinding, &["ClusterRole"], true);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::helpers::validate_json as errs;
    use serde_json::{Value, json};

    #[test]
    fn role_rules() {
        let role = |rules: Value| json!({"metadata": {}, "rules": rules});
        assert!(
            errs::<Role>(
                role(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])),
                None
            )
            .is_empty()
        );
        assert_eq!(
            errs::<Role>(
                role(
                    json!([{"resources": ["pods"], "verbs": []}, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}])
                ),
                None
            ),
            vec![
                "rules[0].verbs: Required value",
                "rules[0].apiGroups: Required value",
                "rules[1].nonResourceURLs: Invalid value: \"/healthz\": namespaced rules cannot apply to non-resource URLs",
            ]
        );
        assert!(
            errs::<ClusterRole>(
                role(json!([{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}])),
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn bindings() {
        let rb = |kind: &str, name: &str, subjects: Value| {
            json!({"metadata": {},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": name}, "subjects": subjects})
        };
        let jane = json!([{"kind": "User", "name": "jane", "apiGroup": RBAC_GROUP}]);
        assert!(errs::<RoleBinding>(rb("Role", "pod-reader", jane.clone()), None).is_empty());
        assert_eq!(
            errs::<RoleBinding>(
                rb("Role", "secret-reader", jane.clone()),
                Some(rb("Role", "pod-reader", jane.clone()))
            ),
            vec!["roleRef: Invalid value: field is immutable"]
        );
        assert_eq!(
            errs::<ClusterRoleBinding>(
                rb(
                    "Role",
                    "r",
                    json!([{"kind": "ServiceAccount", "name": "default"}, {"kind": "Robot", "name": "r2"}])
                ),
                None
            ),
            vec![
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[0].namespace: Required value",
                "subjects[1].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
            ]
        );
    }
}
