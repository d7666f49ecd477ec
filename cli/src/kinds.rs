//! Resource types as people name them (`deploy`, `deployments.apps`, `Pod`) resolved to kinds.
//!
//! The server's discovery is the source of truth, so that custom resources work as soon as the
//! server serves them; the built-in registry is only a fallback for servers without discovery.
//! Names resolve to a kind's preferred version; a manifest may use any served version.

use rudder_client::{Client, ClientError, proto as pb};

use crate::error::{CliError, Result};

/// One resource type, as discovery describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    pub has_status: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployment.apps`, `pod`: how kubectl names the type in output.
    pub fn qualified_singular(&self) -> String {
        qualify(&self.singular, &self.group)
    }

    /// `deployments.apps`, `pods`: how server messages name the type.
    pub fn qualified_plural(&self) -> String {
        qualify(&self.plural, &self.group)
    }

    pub fn kind_ref(&self) -> pb::KindRef {
        rudder_client::conn::kind_ref(&self.api_version(), &self.kind)
    }

    /// The namespace to use for this type: the given one when namespaced, else none.
    pub fn scope<'a>(&self, ns: &'a str) -> &'a str {
        if self.namespaced { ns } else { "" }
    }

    fn names(&self) -> Vec<String> {
        let mut n = vec![
            self.plural.clone(),
            self.singular.clone(),
            self.kind.to_lowercase(),
            self.qualified_plural(),
            self.qualified_singular(),
            qualify(&self.kind.to_lowercase(), &self.group),
        ];
        n.extend(self.short_names.iter().cloned());
        n
    }
}

fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}

impl From<&pb::ApiResource> for ResourceType {
    fn from(r: &pb::ApiResource) -> Self {
        ResourceType {
            group: r.group.clone(),
            version: r.version.clone(),
            kind: r.kind.clone(),
            plural: r.plural.clone(),
            singular: if r.singular.is_empty() {
                r.kind.to_lowercase()
            } else {
                r.singular.clone()
            },
            short_names: r.short_names.clone(),
            namespaced: r.namespaced,
            has_status: r.has_status,
        }
    }
}

/// The resource types a server serves.
#[derive(Debug, Clone)]
pub struct Kinds {
    /// One per kind, in its preferred version.
    types: Vec<ResourceType>,
    /// The kinds' other served versions, for manifests that name them.
    other_versions: Vec<ResourceType>,
}

impl Kinds {
    pub fn new(types: Vec<ResourceType>) -> Self {
        Kinds {
            types,
            other_versions: Vec::new(),
        }
    }

    /// From discovery, which lists every served version; a server that predates versions lists
    /// one entry per kind and no storage version.
    fn from_discovery(resources: &[pb::ApiResource]) -> Self {
        let (preferred, others): (Vec<_>, Vec<_>) = resources
            .iter()
            .partition(|r| r.preferred || r.storage_version.is_empty());
        Kinds {
            types: preferred.into_iter().map(ResourceType::from).collect(),
            other_versions: others.into_iter().map(ResourceType::from).collect(),
        }
    }

    /// The kinds compiled into this binary.
    pub fn builtin() -> Self {
        Kinds::from_discovery(&rudder_client::api::builtin_discovery().resources)
    }

    /// Asks the server; falls back to the built-in kinds only when the server answers but has
    /// no discovery (an unreachable server is an error the user must see).
    pub async fn discover(client: &Client) -> Result<Self> {
        match client.api_resources().await {
            Ok(resp) if !resp.resources.is_empty() => Ok(Kinds::from_discovery(&resp.resources)),
            Ok(_) => Ok(Kinds::builtin()),
            Err(ClientError::Other(_)) => Ok(Kinds::builtin()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn all(&self) -> &[ResourceType] {
        &self.types
    }

    /// Resolves what a person typed, case-insensitively. An ambiguous name prefers the core
    /// group, as kubectl does for `events`.
    pub fn lookup(&self, name: &str) -> Result<&ResourceType> {
        let lower = name.to_lowercase();
        let matches: Vec<&ResourceType> = self
            .types
            .iter()
            .filter(|t| t.names().iter().any(|n| n.eq_ignore_ascii_case(&lower)))
            .collect();
        match matches.as_slice() {
            [] => Err(CliError::msg(format!(
                "the server doesn't have a resource type \"{name}\""
            ))),
            [one] => Ok(one),
            many => many
                .iter()
                .find(|t| t.group.is_empty())
                .copied()
                .ok_or_else(|| {
                    CliError::msg(format!(
                        "resource type \"{name}\" is ambiguous: {}",
                        many.iter()
                            .map(|t| t.qualified_plural())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }),
        }
    }

    /// The type of a manifest's `apiVersion` and `kind`.
    pub fn by_gvk(&self, api_version: &str, kind: &str) -> Result<&ResourceType> {
        self.types
            .iter()
            .chain(&self.other_versions)
            .find(|t| t.kind == kind && t.api_version() == api_version)
            .ok_or_else(|| {
                CliError::msg(format!(
                    "no matches for kind \"{kind}\" in version \"{api_version}\""
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_every_name() {
        let k = Kinds::builtin();
        for n in [
            "deploy",
            "deployments",
            "deployment",
            "Deployment",
            "deployments.apps",
            "deployment.apps",
        ] {
            assert_eq!(k.lookup(n).unwrap().kind, "Deployment", "{n}");
        }
        assert_eq!(k.lookup("po").unwrap().qualified_singular(), "pod");
        assert_eq!(
            k.lookup("nope").unwrap_err().to_string(),
            "error: the server doesn't have a resource type \"nope\""
        );
        let d = k.by_gvk("apps/v1", "Deployment").unwrap();
        assert_eq!(d.qualified_singular(), "deployment.apps");
        assert!(k.by_gvk("v1", "Deployment").is_err());
        // Every served version for manifests; names resolve to the preferred one.
        let hpa = k
            .by_gvk("autoscaling/v1", "HorizontalPodAutoscaler")
            .unwrap();
        assert_eq!(hpa.version, "v1");
        assert_eq!(k.lookup("hpa").unwrap().version, "v2");
        assert_eq!(
            k.all()
                .iter()
                .filter(|t| t.plural == "horizontalpodautoscalers")
                .count(),
            1
        );
    }
}
