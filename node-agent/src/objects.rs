//! The API objects a pod's configuration reads: ConfigMaps and Secrets (env vars, volumes),
//! PersistentVolumeClaims and PersistentVolumes (claims), ServiceAccounts (image pull
//! secrets), behind one object-safe trait.
//!
//! [`ObjectSource`] answers `Ok(None)` for an object that does not exist, so that callers decide
//! what absence means (an `optional` reference is skipped, a required one is an error).
//! [`ApiObjects`] reads through the API server with one GET per call; a caching source can
//! replace it without touching callers.
//!
//! [`ConfigError`] is what the agent shows as a container's waiting message (reason
//! `CreateContainerConfigError`) or in a volume's failure event, so its messages use
//! Kubernetes' wording where kubelet has one and always name the object and the key.

use std::sync::Arc;

use futures::future::BoxFuture;
use rudder_api::k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret, ServiceAccount,
};
use rudder_api::typed::Object;
use rudder_client::api::{Api, decode_json};
use rudder_client::conn::{ClientError, kind_ref};
use rudder_proto as pb;

/// Why a container's environment or a pod's volumes could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("persistentvolumeclaim {0:?} not found")]
    PvcNotFound(String),
    #[error("persistentvolumeclaim {0:?} is not bound")]
    PvcNotBound(String),
    #[error("persistentvolume {0:?} not found")]
    PvNotFound(String),
    /// The claim names a volume whose `claimRef` is another claim.
    #[error("persistentvolume {pv:?} is bound to claim {bound_to}, not {claim}")]
    PvBoundElsewhere {
        pv: String,
        claim: String,
        bound_to: String,
    },
    /// The API server could not be asked (transient: the same call may succeed later).
    #[error("couldn't get {kind} {name}: {message}")]
    Api {
        kind: String,
        name: String,
        message: String,
    },
    /// A field reference the agent cannot resolve (Kubernetes' wording).
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    /// A resource reference the agent cannot resolve (Kubernetes' wording, odd space included).
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    /// A `resourceFieldRef.containerName` that is not a container of the pod.
    #[error("container {0} not found")]
    ContainerNotFound(String),
    /// A volume mount naming a volume the pod does not declare.
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    VolumeNotFound { volume: String, container: String },
    /// Setting up one volume failed; `source` says why. Kubelet's event wording.
    #[error("MountVolume.SetUp failed for volume {volume:?} : {source}")]
    Volume {
        volume: String,
        source: Box<ConfigError>,
    },
    /// Anything else, already worded for the user (names the field or path concerned).
    #[error("{0}")]
    Invalid(String),
    /// A filesystem or mount operation on the node failed.
    #[error("{0}")]
    Io(String),
}

impl ConfigError {
    /// Whether retrying the same configuration later may succeed without anything changing
    /// in the pod's objects (the API server or the node was unavailable).
    pub fn is_transient(&self) -> bool {
        match self {
            ConfigError::Api { .. } | ConfigError::Io(_) => true,
            ConfigError::Volume { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// Wraps an error as the failure of volume `volume`.
    pub fn in_volume(self, volume: &str) -> ConfigError {
        ConfigError::Volume {
            volume: volume.to_string(),
            source: Box::new(self),
        }
    }

    /// An I/O error with what was being done and on which path.
    pub fn io(what: &str, path: &std::path::Path, err: &std::io::Error) -> ConfigError {
        ConfigError::Io(format!("{what} {}: {err}", path.display()))
    }
}

/// A boxed lookup, so that [`ObjectSource`] is object safe.
pub type ObjectFuture<'a, T> = BoxFuture<'a, Result<Option<T>, ConfigError>>;

/// Where a pod's referenced objects come from. `Ok(None)`: the object does not exist.
pub trait ObjectSource: Send + Sync {
    fn config_map<'a>(&'a self, namespace: &'a str, name: &'a str) -> ObjectFuture<'a, ConfigMap>;
    fn secret<'a>(&'a self, namespace: &'a str, name: &'a str) -> ObjectFuture<'a, Secret>;
    fn pvc<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> ObjectFuture<'a, PersistentVolumeClaim>;
    fn pv<'a>(&'a self, name: &'a str) -> ObjectFuture<'a, PersistentVolume>;
    fn service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> ObjectFuture<'a, ServiceAccount>;
}

/// [`ObjectSource`] over the API: a GET per call, `NotFound` as `None`.
#[derive(Clone)]
pub struct ApiObjects {
    api: Arc<dyn Api>,
}

impl ApiObjects {
    pub fn new(api: Arc<dyn Api>) -> Self {
        ApiObjects { api }
    }

    async fn get<T: Object>(&self, namespace: &str, name: &str) -> Result<Option<T>, ConfigError> {
        let api_err = |message: String| ConfigError::Api {
            kind: T::KIND.to_lowercase(),
            name: if namespace.is_empty() {
                name.to_string()
            } else {
                format!("{namespace}/{name}")
            },
            message,
        };
        let req = pb::GetRequest {
            kind: Some(kind_ref(T::API_VERSION, T::KIND)),
            namespace: namespace.to_string(),
            name: name.to_string(),
            allow_stale: false,
        };
        let obj = match self.api.get(req).await {
            Ok(obj) => obj,
            Err(ClientError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(api_err(e.to_string())),
        };
        let json = decode_json(&obj).map_err(|e| api_err(e.to_string()))?;
        T::from_json(json)
            .map(Some)
            .map_err(|e| api_err(format!("undecodable object: {e}")))
    }
}

impl ObjectSource for ApiObjects {
    fn config_map<'a>(&'a self, namespace: &'a str, name: &'a str) -> ObjectFuture<'a, ConfigMap> {
        Box::pin(self.get(namespace, name))
    }

    fn secret<'a>(&'a self, namespace: &'a str, name: &'a str) -> ObjectFuture<'a, Secret> {
        Box::pin(self.get(namespace, name))
    }

    fn pvc<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> ObjectFuture<'a, PersistentVolumeClaim> {
        Box::pin(self.get(namespace, name))
    }

    fn pv<'a>(&'a self, name: &'a str) -> ObjectFuture<'a, PersistentVolume> {
        Box::pin(self.get("", name))
    }

    fn service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> ObjectFuture<'a, ServiceAccount> {
        Box::pin(self.get(namespace, name))
    }
}

/// A Secret's bytes by key. `stringData` is folded over `data`, as the API server does on
/// write, so that a secret stored without that folding (the fake API) reads the same.
pub fn secret_data(secret: &Secret) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out: std::collections::BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// An in-memory [`ObjectSource`] for unit tests, filled from JSON.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Store {
        config_maps: HashMap<(String, String), ConfigMap>,
        secrets: HashMap<(String, String), Secret>,
        pvcs: HashMap<(String, String), PersistentVolumeClaim>,
        pvs: HashMap<String, PersistentVolume>,
        service_accounts: HashMap<(String, String), ServiceAccount>,
        gets: usize,
    }

    #[derive(Default)]
    pub(crate) struct MemObjects {
        store: Mutex<Store>,
    }

    fn key(v: &serde_json::Value) -> (String, String) {
        let meta = &v["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or("default");
        let name = meta["name"].as_str().expect("test object without a name");
        (ns.to_string(), name.to_string())
    }

    impl MemObjects {
        fn store(&self) -> std::sync::MutexGuard<'_, Store> {
            self.store.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub(crate) fn put_config_map(&self, v: serde_json::Value) {
            let cm = ConfigMap::from_json(v.clone()).expect("configmap json");
            self.store().config_maps.insert(key(&v), cm);
        }

        pub(crate) fn put_secret(&self, v: serde_json::Value) {
            let s = Secret::from_json(v.clone()).expect("secret json");
            self.store().secrets.insert(key(&v), s);
        }

        pub(crate) fn put_pvc(&self, v: serde_json::Value) {
            let c = PersistentVolumeClaim::from_json(v.clone()).expect("pvc json");
            self.store().pvcs.insert(key(&v), c);
        }

        pub(crate) fn put_pv(&self, v: serde_json::Value) {
            let pv = PersistentVolume::from_json(v.clone()).expect("pv json");
            self.store().pvs.insert(key(&v).1, pv);
        }

        /// How many lookups were made.
        pub(crate) fn gets(&self) -> usize {
            self.store().gets
        }

        fn lookup<T: Clone>(
            &self,
            pick: impl FnOnce(&Store) -> Option<&T>,
        ) -> Result<Option<T>, ConfigError> {
            let mut store = self.store();
            store.gets += 1;
            Ok(pick(&store).cloned())
        }
    }

    fn k(ns: &str, name: &str) -> (String, String) {
        (ns.to_string(), name.to_string())
    }

    impl ObjectSource for MemObjects {
        fn config_map<'a>(&'a self, ns: &'a str, name: &'a str) -> ObjectFuture<'a, ConfigMap> {
            let r = self.lookup(|s| s.config_maps.get(&k(ns, name)));
            Box::pin(async move { r })
        }

        fn secret<'a>(&'a self, ns: &'a str, name: &'a str) -> ObjectFuture<'a, Secret> {
            let r = self.lookup(|s| s.secrets.get(&k(ns, name)));
            Box::pin(async move { r })
        }

        fn pvc<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
        ) -> ObjectFuture<'a, PersistentVolumeClaim> {
            let r = self.lookup(|s| s.pvcs.get(&k(ns, name)));
            Box::pin(async move { r })
        }

        fn pv<'a>(&'a self, name: &'a str) -> ObjectFuture<'a, PersistentVolume> {
            let r = self.lookup(|s| s.pvs.get(name));
            Box::pin(async move { r })
        }

        fn service_account<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
        ) -> ObjectFuture<'a, ServiceAccount> {
            let r = self.lookup(|s| s.service_accounts.get(&k(ns, name)));
            Box::pin(async move { r })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rudder_client::fake::{FakeApi, Op};
    use serde_json::json;

    async fn create(fake: &FakeApi, kind: &str, ns: &str, body: serde_json::Value) {
        let req = pb::CreateRequest {
            kind: Some(kind_ref("v1", kind)),
            namespace: ns.to_string(),
            json: serde_json::to_vec(&body).expect("json").into(),
            options: None,
        };
        fake.create(req).await.expect("create");
    }

    #[tokio::test]
    async fn api_objects_reads_present_absent_and_reports_errors() {
        let fake = FakeApi::new();
        create(
            &fake,
            "ConfigMap",
            "default",
            json!({"metadata": {"name": "app-config"}, "data": {"k": "v"}}),
        )
        .await;
        create(
            &fake,
            "Secret",
            "default",
            json!({"metadata": {"name": "s"}, "data": {"a": "YWJj"}, "stringData": {"b": "x"}}),
        )
        .await;
        create(
            &fake,
            "PersistentVolume",
            "",
            json!({"metadata": {"name": "pv1"}, "spec": {"hostPath": {"path": "/d"}}}),
        )
        .await;
        let objects = ApiObjects::new(fake.clone());

        let cm = objects
            .config_map("default", "app-config")
            .await
            .expect("get");
        let data = cm.and_then(|c| c.data).expect("data");
        assert_eq!(data.get("k").map(String::as_str), Some("v"));
        assert!(
            objects
                .config_map("other", "app-config")
                .await
                .expect("get")
                .is_none()
        );
        let secret = objects
            .secret("default", "s")
            .await
            .expect("get")
            .expect("secret");
        let bytes = secret_data(&secret);
        assert_eq!(bytes.get("a").map(Vec::as_slice), Some(&b"abc"[..]));
        assert_eq!(bytes.get("b").map(Vec::as_slice), Some(&b"x"[..]));
        assert!(objects.pv("pv1").await.expect("get").is_some());
        assert!(objects.pvc("default", "data").await.expect("get").is_none());

        fake.fail_next(Op::Get, ClientError::Unavailable("down".into()));
        let err = objects.secret("default", "s").await.expect_err("must fail");
        assert_eq!(err.to_string(), "couldn't get secret default/s: down");
        assert!(err.is_transient());
    }

    #[test]
    fn messages_name_object_and_key() {
        let e = ConfigError::ConfigMapKeyNotFound {
            namespace: "default".into(),
            name: "app-config".into(),
            key: "db-url".into(),
        };
        assert_eq!(
            e.to_string(),
            "couldn't find key db-url in ConfigMap default/app-config"
        );
        assert_eq!(
            ConfigError::ConfigMapNotFound("app-config".into()).to_string(),
            "configmap \"app-config\" not found"
        );
        assert_eq!(
            ConfigError::PvcNotBound("data".into())
                .in_volume("v")
                .to_string(),
            "MountVolume.SetUp failed for volume \"v\" : persistentvolumeclaim \"data\" is not bound"
        );
    }
}
