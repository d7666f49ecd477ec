//! Authorization: may this caller do this to that?
//!
//! A request is described by its [`Attributes`] (Kubernetes' authorizer attributes: verb, API
//! group, resource, subresource, namespace, name; or a non-resource path). Authorizers run in
//! order; the first to allow or deny decides, and a request no authorizer allows is forbidden,
//! with a message in kube-apiserver's words naming the user, verb, resource and namespace.

use crate::service::Identity;

/// What a request wants to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    /// The plural resource name (`pods`); empty for a non-resource request.
    pub resource: &'a str,
    pub subresource: &'a str,
    /// Empty for cluster-scoped objects and for requests across all namespaces.
    pub namespace: &'a str,
    /// Empty for list, watch, create without a name, and collection deletes.
    pub name: &'a str,
    /// A non-resource request's path (`/healthz`, `/admin/backup`).
    pub path: &'a str,
    /// A list's or watch's field selector, for the Node authorizer (a node lists only its own
    /// pods).
    pub field_selector: &'a str,
}

impl Attributes<'_> {
    pub fn is_resource(&self) -> bool {
        self.path.is_empty()
    }

    /// kube-apiserver's forbidden message.
    pub fn forbidden(&self, id: &Identity, reason: &str) -> String {
        let mut m = if self.is_resource() {
            let res = if self.subresource.is_empty() {
                self.resource.to_string()
            } else {
                format!("{}/{}", self.resource, self.subresource)
            };
            let subject = if self.name.is_empty() {
                format!("{} is forbidden", self.resource)
            } else {
                format!("{} \"{}\" is forbidden", self.resource, self.name)
            };
            let scope = if self.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{}\"", self.namespace)
            };
            format!(
                "{subject}: User \"{}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}",
                id.user, self.verb, self.group
            )
        } else {
            format!(
                "forbidden: User \"{}\" cannot {} path \"{}\"",
                id.user, self.verb, self.path
            )
        };
        if !reason.is_empty() {
            m.push_str(": ");
            m.push_str(reason);
        }
        m
    }
}

/// One authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused outright; later authorizers are not asked.
    Deny(String),
    NoOpinion,
}

/// Decides requests of one kind of rule (RBAC, the Node authorizer).
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(&self, id: &Identity, a: &Attributes<'_>) -> Decision;
}

/// Allows everything: a plaintext in-process server for tests, or `--authorization-mode
/// AlwaysAllow`.
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _: &Identity, _: &Attributes<'_>) -> Decision {
        Decision::Allow
    }
}

/// Authorizers asked in order.
pub struct Chain(pub Vec<std::sync::Arc<dyn Authorizer>>);

impl Chain {
    /// `Ok` or the forbidden message.
    pub fn check(&self, id: &Identity, a: &Attributes<'_>) -> Result<(), String> {
        // The masters' own group, as in Kubernetes: never locked out by a broken policy.
        if id.groups.iter().any(|g| g == "system:masters") {
            return Ok(());
        }
        for z in &self.0 {
            match z.authorize(id, a) {
                Decision::Allow => return Ok(()),
                Decision::Deny(why) => return Err(a.forbidden(id, &why)),
                Decision::NoOpinion => {}
            }
        }
        Err(a.forbidden(id, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages_read_as_kubernetes_writes_them() {
        let id = Identity {
            user: "bob".into(),
            groups: vec![],
        };
        let a = Attributes {
            verb: "delete",
            resource: "pods",
            namespace: "default",
            name: "web",
            ..Default::default()
        };
        assert_eq!(
            Chain(vec![])
                .check(&id, &a)
                .expect_err("no authorizer allows"),
            "pods \"web\" is forbidden: User \"bob\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let masters = Identity {
            user: "root".into(),
            groups: vec!["system:masters".into()],
        };
        assert!(Chain(vec![]).check(&masters, &a).is_ok());
    }
}
