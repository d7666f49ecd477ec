//! The service account controller, as Kubernetes' `serviceaccount` controller: every active
//! namespace has a ServiceAccount named `default`, made again if deleted.
//!
//! Keys are namespaces. A namespace is looked at when it is added or changes, and when a
//! ServiceAccount in it is deleted (after a relist of ServiceAccounts, which can hide
//! deletions, every namespace is). A namespace that is not `Active` (terminating) is left
//! alone, and a create refused because the namespace began terminating meanwhile is not an
//! error. The cache may not have seen a ServiceAccount just made, so a create that finds it
//! there already (`AlreadyExists`) is success. The ServiceAccount is made bare
//! (`metadata.name` only), as Kubernetes makes it; tokens come with the security work.

use std::sync::Arc;

use bytes::Bytes;
use rudder_client::Api;
use rudder_client::cache::Reader;
use rudder_client::conn::kind_ref;
use rudder_client::controller::{Action, Controller, Mapper, self_mapper};
use rudder_client::proto as pb;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "serviceaccount",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// The ServiceAccounts every namespace gets (kube-controller-manager's default list).
pub const NAMES: [&str; 1] = ["default"];

pub struct Ctx {
    pub api: Arc<dyn Api>,
    pub namespaces: Reader,
    pub accounts: Reader,
}

async fn run(env: Env, cancel: CancellationToken) {
    let namespaces = env.informers.for_kind("v1", "Namespace");
    let accounts = env.informers.for_kind("v1", "ServiceAccount");
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        namespaces: namespaces.reader(),
        accounts: accounts.reader(),
    });
    Controller::new(ctx)
        .named("serviceaccount")
        .workers(env.workers)
        .watches(namespaces.subscribe(), self_mapper())
        .watches(accounts.subscribe(), account_mapper(namespaces.reader()))
        .run(reconcile, policy, cancel)
        .await;
}

/// A deleted ServiceAccount maps to its namespace; a relist to every namespace.
pub fn account_mapper(namespaces: Reader) -> Mapper {
    Box::new(move |ev| match ev {
        ReflectorEvent::Deleted(sa) if NAMES.contains(&sa.name.as_str()) => {
            vec![sa.namespace.clone()]
        }
        ReflectorEvent::Restarted(_) => namespaces.keys(),
        _ => Vec::new(),
    })
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(ns) = ctx.namespaces.get_key(&key) else {
        return Ok(Action::AwaitChange);
    };
    let phase = ns.value.pointer("/status/phase").and_then(|p| p.as_str());
    if ns.is_deleting() || phase.is_some_and(|p| p != "Active") {
        return Ok(Action::AwaitChange);
    }
    for name in NAMES {
        if ctx.accounts.get(&ns.name, name).is_some() {
            continue;
        }
        let body = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns.name}});
        match ctx
            .api
            .create(pb::CreateRequest {
                kind: Some(kind_ref("v1", "ServiceAccount")),
                namespace: ns.name.clone(),
                json: Bytes::from(body.to_string()),
                options: None,
            })
            .await
        {
            Ok(_) => tracing::debug!(namespace = %ns.name, name, "created ServiceAccount"),
            Err(rudder_client::ClientError::AlreadyExists(_)) => {}
            // The namespace began terminating (or went) after the cache saw it.
            Err(rudder_client::ClientError::Forbidden(_)) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::AwaitChange)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rudder_client::cache::CachedObject;
    use rudder_client::cache::Store;
    use serde_json::json;

    use super::*;

    fn obj(kind: &str, ns: &str, name: &str) -> Arc<CachedObject> {
        let v = json!({"apiVersion": "v1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "uid": format!("{ns}-{name}")}});
        let wire = pb::Object {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
            resource_version: 1,
            json: Bytes::from(v.to_string()),
        };
        Arc::new(CachedObject::from_wire(&wire).unwrap_or_else(|| panic!("object")))
    }

    #[test]
    fn deleted_defaults_map_to_their_namespace_and_relists_to_all() {
        let (mut store, reader) = Store::new();
        store.apply(obj("Namespace", "", "a"));
        store.apply(obj("Namespace", "", "b"));
        let m = account_mapper(reader);
        assert_eq!(
            m(&ReflectorEvent::Deleted(obj(
                "ServiceAccount",
                "a",
                "default"
            ))),
            ["a"]
        );
        assert!(
            m(&ReflectorEvent::Deleted(obj(
                "ServiceAccount",
                "a",
                "robot"
            )))
            .is_empty()
        );
        assert!(
            m(&ReflectorEvent::Added(obj(
                "ServiceAccount",
                "a",
                "default"
            )))
            .is_empty()
        );
        let mut all = m(&ReflectorEvent::Restarted(Vec::new()));
        all.sort();
        assert_eq!(all, ["a", "b"]);
    }
}
