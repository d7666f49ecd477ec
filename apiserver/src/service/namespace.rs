//! Namespaces as Kubernetes' namespace registry keeps them; the content is the namespace
//! controller's (controller-manager), not the server's.
//!
//! - At create, `spec.finalizers` gets `kubernetes` (appended to any the client gave), as
//!   Kubernetes' `PrepareForCreate`: the namespace controller's token, which it removes once it
//!   has deleted everything in the namespace.
//! - An update or patch keeps `spec.finalizers` as stored; only [`Api::finalize`] (Kubernetes'
//!   `namespaces/{name}/finalize` subresource) changes it, and it changes nothing else.
//! - Deleting a namespace sets `deletionTimestamp` and `status.phase: Terminating` and deletes
//!   nothing in it ([`super::delete`]); creates into it are refused by the store
//!   (`NamespaceTerminating`, Forbidden "... because it is being terminated").
//! - A terminating namespace is removed once both `metadata.finalizers` and `spec.finalizers`
//!   are empty (Kubernetes' `ShouldDeleteNamespaceDuringUpdate`), by the write that empties the
//!   last one. One difference: the store never removes a namespace that still holds objects
//!   (Kubernetes would orphan them), so such a namespace stays `Terminating` until its last
//!   object goes, and that removal takes it ([`Api::after_delete`]).

use std::sync::Arc;

use rudder_api::meta;
use rudder_api::registry::KindInfo;
use rudder_proto as pb;
use serde_json::Value;

use super::{Api, Identity, dry_run};
use crate::error::ApiError;
use crate::state::{Command, Expect, NAMESPACE_KIND, ObjKey};

pub(crate) fn is_namespace(info: &KindInfo) -> bool {
    info.group.is_empty() && info.kind == "Namespace"
}

/// At create: the namespace controller's token is always there.
pub(crate) fn require_finalizer(info: &KindInfo, ns: &mut Value) {
    if is_namespace(info) {
        meta::require_namespace_finalizer(ns);
    }
}

/// On an update or patch: `spec.finalizers` stays as stored (only `finalize` changes it).
pub(crate) fn keep_spec_finalizers(info: &KindInfo, old: &Value, new: &mut Value) {
    if is_namespace(info) {
        meta::set_spec_finalizers(new, old.pointer("/spec/finalizers").cloned());
    }
}

impl Api {
    /// Whether an object being deleted may now be removed: it has no finalizers left, and a
    /// namespace also no `spec.finalizers` and no content.
    pub(crate) fn removable(&self, info: &KindInfo, key: &ObjKey, obj: &Value) -> bool {
        if !meta::finalizers(obj).is_empty() {
            return false;
        }
        !is_namespace(info)
            || (meta::spec_finalizers(obj).is_empty()
                && !self.store.snapshot().namespace_has_content(&key.name))
    }

    /// Sets a namespace's `spec.finalizers` (the `namespaces/{name}/finalize` subresource): only
    /// that field of the request's object is read; a `metadata.resourceVersion` in it is a
    /// precondition. A terminating namespace left with no finalizers of either kind (and no
    /// content) is removed.
    pub async fn finalize(
        &self,
        id: &Identity,
        req: pb::UpdateRequest,
    ) -> Result<pb::Object, ApiError> {
        let info = match &req.kind {
            None => self
                .registry
                .by_api_version_kind("v1", "Namespace")
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .clone(),
            Some(_) => self.kind(&req.kind)?,
        };
        let body = self.parse_body(&info, &req.json)?;
        let name = meta::name(&body).to_string();
        self.authorize(id, "update", &info, "", &name, "finalize")?;
        if !is_namespace(&info) {
            return Err(ApiError::NotFound {
                resource: format!("{}/finalize", info.qualified_plural()),
                name,
            });
        }
        if name.is_empty() {
            return Err(ApiError::invalid(
                &info,
                "",
                "metadata.name: Required value",
            ));
        }
        let wanted = body.pointer("/spec/finalizers").cloned();
        let key = self.key(&info, "", &name);
        let client_rv = meta::resource_version(&body);
        let dry = dry_run(&req.options);
        self.guaranteed_update(&info, &key, client_rv, false, dry, move |_, old| {
            let mut new = old.clone();
            meta::set_spec_finalizers(&mut new, wanted.clone());
            Ok(new)
        })
        .await
    }

    /// After an object is gone: if its namespace is terminating, has no finalizers left and is
    /// now empty, remove it.
    pub(crate) async fn after_delete(&self, key: &ObjKey) {
        if !key.namespace.is_empty() {
            self.finish_namespace(&key.namespace).await;
        }
    }

    async fn finish_namespace(&self, ns: &str) {
        let ns_key = ObjKey {
            kind: Arc::from(NAMESPACE_KIND),
            namespace: String::new(),
            name: ns.to_string(),
        };
        let Some(obj) = self.store.get(&ns_key) else {
            return;
        };
        if !obj.deleting {
            return;
        }
        let Ok(info) = self.registry.by_api_version_kind("v1", "Namespace") else {
            return;
        };
        let Ok(value) = Self::parse_stored(&obj) else {
            return;
        };
        if !self.removable(info, &ns_key, &value) {
            return;
        }
        // Losing a race here is fine: whoever changed the namespace will come back through here.
        if let Err(e) = self
            .propose(
                info,
                Command::Delete {
                    key: ns_key,
                    expect: Expect::Version(obj.rv),
                },
            )
            .await
        {
            tracing::debug!(namespace = ns, error = %e, "namespace removal deferred");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ns_info() -> &'static KindInfo {
        rudder_api::Registry::builtin()
            .by_api_version_kind("v1", "Namespace")
            .map(|a| a.as_ref())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn create_appends_the_kubernetes_finalizer_once() {
        let mut bare = json!({"metadata": {"name": "a"}});
        require_finalizer(ns_info(), &mut bare);
        assert_eq!(meta::spec_finalizers(&bare), ["kubernetes"]);
        let mut given =
            json!({"metadata": {"name": "a"}, "spec": {"finalizers": ["example.com/x"]}});
        require_finalizer(ns_info(), &mut given);
        assert_eq!(
            meta::spec_finalizers(&given),
            ["example.com/x", "kubernetes"]
        );
        require_finalizer(ns_info(), &mut given);
        assert_eq!(
            meta::spec_finalizers(&given),
            ["example.com/x", "kubernetes"]
        );
    }

    #[test]
    fn updates_keep_the_stored_spec_finalizers() {
        let old = json!({"spec": {"finalizers": ["kubernetes"]}});
        let mut new = json!({"metadata": {"name": "a"}});
        keep_spec_finalizers(ns_info(), &old, &mut new);
        assert_eq!(meta::spec_finalizers(&new), ["kubernetes"]);
        let mut emptied = json!({"spec": {"finalizers": []}});
        keep_spec_finalizers(ns_info(), &old, &mut emptied);
        assert_eq!(meta::spec_finalizers(&emptied), ["kubernetes"]);
        let mut none = json!({"spec": {"finalizers": ["x/y"]}});
        keep_spec_finalizers(ns_info(), &json!({}), &mut none);
        assert!(none.pointer("/spec/finalizers").is_none());
    }
}
