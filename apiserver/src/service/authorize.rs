//! Every verb asks the authorizers before it acts, and RBAC writes pass the escalation check:
//! no one creates a role or binding granting rights they do not hold themselves, unless they
//! hold `escalate` on roles or `bind` on the role bound (as in Kubernetes).

use rudder_api::KindInfo;
use serde_json::Value;

use super::{Api, Identity};
use crate::auth::authz::Attributes;
use crate::auth::rbac::{self, Compiled, Rule};
use crate::error::ApiError;

impl Api {
    /// May `id` do `verb` to the named object (or the collection, with an empty name)?
    pub(crate) fn authorize(
        &self,
        id: &Identity,
        verb: &str,
        info: &KindInfo,
        namespace: &str,
        name: &str,
        subresource: &str,
    ) -> Result<(), ApiError> {
        self.authorize_with(
            id,
            &Attributes {
                verb,
                group: info.group,
                resource: info.plural,
                subresource,
                namespace: if info.namespaced { namespace } else { "" },
                name,
                ..Default::default()
            },
        )
    }

    pub(crate) fn authorize_with(&self, id: &Identity, a: &Attributes<'_>) -> Result<(), ApiError> {
        self.authz.check(id, a).map_err(ApiError::Forbidden)
    }

    /// May `id` call a non-resource path?
    pub fn authorize_path(&self, id: &Identity, verb: &str, path: &str) -> Result<(), ApiError> {
        self.authorize_with(
            id,
            &Attributes {
                verb,
                path,
                ..Default::default()
            },
        )
    }

    /// The escalation check for a Role, ClusterRole or binding about to be stored as `obj`.
    pub(crate) fn check_escalation(
        &self,
        id: &Identity,
        info: &KindInfo,
        namespace: &str,
        obj: &Value,
    ) -> Result<(), ApiError> {
        if info.group != rbac::GROUP || id.groups.iter().any(|g| g == "system:masters") {
            return Ok(());
        }
        let Some(rbac) = self.rbac.as_ref() else {
            return Ok(());
        };
        let compiled = rbac.compiled();
        let ns = if info.namespaced { namespace } else { "" };
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let (wanted, verb, resource): (Vec<Rule>, &str, &str) = match info.kind {
            "Role" | "ClusterRole" => (rbac::rules_of(obj), "escalate", info.plural),
            "RoleBinding" | "ClusterRoleBinding" => {
                let r = rbac::role_ref_of(obj);
                let rules = compiled
                    .role_rules(&r, ns)
                    .map(|r| r.as_ref().clone())
                    .unwrap_or_default();
                let resource = if r.kind == "Role" {
                    "roles"
                } else {
                    "clusterroles"
                };
                // `bind` is asked about the role bound, not the binding.
                let bind = Attributes {
                    verb: "bind",
                    group: rbac::GROUP,
                    resource,
                    namespace: ns,
                    name: &r.name,
                    ..Default::default()
                };
                if compiled.allows(id, &bind) {
                    return Ok(());
                }
                (rules, "", "")
            }
            _ => return Ok(()),
        };
        if !verb.is_empty() {
            let esc = Attributes {
                verb,
                group: rbac::GROUP,
                resource,
                namespace: ns,
                name,
                ..Default::default()
            };
            if compiled.allows(id, &esc) {
                return Ok(());
            }
        }
        match first_not_held(&compiled, id, ns, &wanted) {
            None => Ok(()),
            Some(r) => Err(ApiError::Forbidden(format!(
                "{} \"{name}\" is forbidden: user \"{}\" is attempting to grant RBAC permissions not currently held: {}",
                info.plural,
                id.user,
                serde_json::json!({
                    "verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources,
                    "resourceNames": r.resource_names, "nonResourceURLs": r.non_resource_urls,
                })
            ))),
        }
    }
}

fn first_not_held<'a>(
    compiled: &Compiled,
    id: &Identity,
    namespace: &str,
    wanted: &'a [Rule],
) -> Option<&'a Rule> {
    let held: Vec<&Rule> = compiled.rules_for(id, namespace).collect();
    wanted.iter().find(|w| !rbac::covers(&held, w))
}
