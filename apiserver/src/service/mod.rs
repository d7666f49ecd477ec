//! The API's logic as a plain async interface, independent of gRPC: the tonic handlers in
//! [`crate::grpc`] are thin wrappers, tests call this directly, and a Kubernetes-compatible HTTP
//! front can later sit on the same functions.
//!
//! Every write goes: resolve the kind → decode strictly → server-managed fields → defaults and
//! validation (the kind's [`rudder_api::registry::KindOps`]) → a [`Command`] proposed to the
//! store. Preconditions the store re-checks deterministically (existence, resourceVersion,
//! namespace) are also checked here first for a clear error without a round trip through the log.
//!
//! Versions: a request names one served version of a kind. Its object is decoded and defaulted
//! in that version, converted to the kind's storage version and admitted and stored there;
//! every reply and watch event is converted back to the version asked for ([`convert`]).

pub mod allocate;
mod authorize;
mod convert;
mod create;
mod delete;
mod events;
mod evict;
mod list;
mod namespace;
mod update;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_api::registry::{AdmitError, KindInfo, Registry};
use rudder_api::{decode, meta};
use rudder_proto as pb;
use serde_json::Value;

use crate::clock::{Clock, Ids, format_time};
use crate::error::ApiError;
use crate::state::{ApplyError, Command, Expect, KindKey, ObjIndex, ObjKey, StoredObject};
use crate::store::{Store, StoreError};

/// Kubernetes' limit on one stored object (etcd's request limit).
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// How many times a write without a client-given resourceVersion is retried after losing a race.
const UPDATE_RETRIES: usize = 8;

/// Namespaces that exist from the start and cannot be deleted.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The caller, as established by the authentication layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity {
            user: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
}

/// Tunables of the API layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Default interval between BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Events last seen longer ago than this are deleted (kube-apiserver's `--event-ttl`).
    pub event_ttl: Duration,
    /// How long a watch or continue token from a version above the store's waits for the store
    /// to catch up before it is refused as too large (Kubernetes waits ~3 s).
    pub resource_version_wait: Duration,
    /// `tolerationSeconds` of the `node.kubernetes.io/not-ready:NoExecute` toleration every pod
    /// without one gets (`--default-not-ready-toleration-seconds`).
    pub default_not_ready_toleration_seconds: i64,
    /// The same for `node.kubernetes.io/unreachable:NoExecute`
    /// (`--default-unreachable-toleration-seconds`).
    pub default_unreachable_toleration_seconds: i64,
    /// Where Service cluster IPs come from (`--service-cluster-ip-range`).
    pub service_range: allocate::ServiceRange,
    /// Scheduled backups and the store alarm.
    pub maintenance: crate::maintenance::MaintenanceConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bookmark_interval: Duration::from_secs(10),
            event_ttl: Duration::from_secs(3600),
            resource_version_wait: Duration::from_secs(3),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
            service_range: allocate::ServiceRange::default(),
            maintenance: crate::maintenance::MaintenanceConfig::default(),
        }
    }
}

/// The API: the registry, the store, and injected time and randomness.
#[derive(Clone)]
pub struct Api {
    pub(crate) store: Store,
    pub(crate) registry: &'static Registry,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ids: Arc<Ids>,
    pub(crate) config: ApiConfig,
    pub(crate) watchers: Arc<std::sync::atomic::AtomicU64>,
    /// Cancelled when the server stops: every watch stream ends, so a graceful stop does not
    /// wait for clients that never hang up.
    pub(crate) closing: tokio_util::sync::CancellationToken,
    /// Stored objects shown in other served versions, converted once per version.
    pub(crate) conversions: Arc<convert::Conversions>,
    /// What the maintenance task last found (alarms, the last backup).
    pub(crate) health: Arc<crate::maintenance::Health>,
    /// Who may do what ([`authorize`]); everything is allowed until the server sets it.
    pub(crate) authz: Arc<crate::auth::authz::Chain>,
    /// The RBAC authorizer, for the escalation check (`None`: RBAC is off).
    pub(crate) rbac: Option<Arc<crate::auth::rbac::Rbac>>,
}

/// The store key of a kind: `group/Kind`.
pub fn kind_key(info: &KindInfo) -> KindKey {
    Arc::from(format!("{}/{}", info.group, info.kind))
}

/// Labels, selectable field values and claims of an object, as the store indexes them.
pub fn index_object(info: &KindInfo, obj: &Value) -> ObjIndex {
    let labels = meta::labels(obj).into_iter().collect();
    let fields = info
        .selectable_fields
        .iter()
        .map(|f| (f.to_string(), meta::field_value(obj, f)))
        .collect();
    ObjIndex {
        labels,
        fields,
        claims: allocate::claims_of(info, obj),
    }
}

impl Api {
    pub fn new(
        store: Store,
        registry: &'static Registry,
        clock: Arc<dyn Clock>,
        ids: Arc<Ids>,
        config: ApiConfig,
    ) -> Self {
        Api {
            store,
            registry,
            clock,
            ids,
            config,
            watchers: Arc::default(),
            closing: tokio_util::sync::CancellationToken::new(),
            conversions: Arc::default(),
            health: Arc::default(),
            authz: Arc::new(crate::auth::authz::Chain(vec![Arc::new(
                crate::auth::authz::AlwaysAllow,
            )])),
            rbac: None,
        }
    }

    /// Authorizes every request with RBAC (and the Node authorizer before it), and makes the
    /// default roles at bootstrap.
    pub fn with_rbac(mut self) -> Self {
        let rbac = Arc::new(crate::auth::rbac::Rbac::new(self.store.clone()));
        let node = Arc::new(crate::auth::node::NodeAuthorizer::new(self.store.clone()));
        self.authz = Arc::new(crate::auth::authz::Chain(vec![node, rbac.clone()]));
        self.rbac = Some(rbac);
        self
    }

    /// Ends every open watch stream, and any opened later: the server is stopping.
    pub fn close_watches(&self) {
        self.closing.cancel();
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Conversions of stored objects to another served version made so far.
    pub fn conversions(&self) -> u64 {
        self.conversions.made()
    }

    /// Watches currently open.
    pub fn watch_count(&self) -> u64 {
        self.watchers.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn registry(&self) -> &'static Registry {
        self.registry
    }

    /// Creates the namespaces that exist from the start, if missing.
    pub async fn bootstrap(&self) -> Result<(), ApiError> {
        for ns in SYSTEM_NAMESPACES {
            let body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let req = pb::CreateRequest {
                kind: Some(pb::KindRef {
                    api_version: "v1".into(),
                    kind: "Namespace".into(),
                }),
                namespace: String::new(),
                json: Bytes::from(body.to_string()),
                options: None,
            };
            match self
                .create(
                    &Identity {
                        user: "system:apiserver".into(),
                        groups: vec!["system:masters".into()],
                    },
                    req,
                )
                .await
            {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if self.rbac.is_some() {
            self.create_default_policy().await?;
        }
        Ok(())
    }

    /// The server acting for itself (bootstrap, the store alarm, an authorized eviction's
    /// delete).
    pub fn server_identity() -> Identity {
        Identity {
            user: "system:apiserver".into(),
            groups: vec!["system:masters".into()],
        }
    }

    /// The default roles and bindings ([`crate::auth::policy`]) that do not exist yet.
    async fn create_default_policy(&self) -> Result<(), ApiError> {
        let me = Identity {
            user: "system:apiserver".into(),
            groups: vec!["system:masters".into()],
        };
        for obj in crate::auth::policy::defaults() {
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            let req = pb::CreateRequest {
                kind: Some(pb::KindRef {
                    api_version: "rbac.authorization.k8s.io/v1".into(),
                    kind,
                }),
                namespace: String::new(),
                json: Bytes::from(obj.to_string()),
                options: None,
            };
            match self.create(&me, req).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Resolves a request's kind through the registry.
    pub(crate) fn kind(&self, r: &Option<pb::KindRef>) -> Result<Arc<KindInfo>, ApiError> {
        let r = r
            .as_ref()
            .ok_or_else(|| ApiError::BadRequest("kind: Required value".into()))?;
        self.registry
            .resolve(&r.api_version, &r.kind)
            .cloned()
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }

    pub(crate) fn key(&self, info: &KindInfo, namespace: &str, name: &str) -> ObjKey {
        ObjKey {
            kind: kind_key(info),
            namespace: if info.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    pub(crate) fn now(&self) -> String {
        format_time(self.clock.now())
    }

    /// The wire form of a stored object, in the version `info` serves.
    pub(crate) fn to_pb(&self, info: &KindInfo, key: &ObjKey, obj: &StoredObject) -> pb::Object {
        let (api_version, json) = self.conversions.show(info, &obj.json);
        pb::Object {
            api_version,
            kind: info.kind.to_string(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            resource_version: obj.rv,
            json,
        }
    }

    /// A request's object, in the version `info` serves, as the storage version with its kind's
    /// storage entry: decoded strictly and defaulted in the client's version, then converted.
    pub(crate) fn to_storage(
        &self,
        info: &Arc<KindInfo>,
        name: &str,
        obj: Value,
    ) -> Result<(Arc<KindInfo>, Value), ApiError> {
        let Some(convert) = info.conversion.as_ref() else {
            return Ok((info.clone(), obj));
        };
        let stored = convert
            .to_storage(obj)
            .map_err(|e| admit_error(info, name, e))?;
        let storage = self
            .registry
            .storage_of(info)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok((storage.clone(), stored))
    }

    /// A stored object as `info`'s version shows it, for a change the client makes in it.
    pub(crate) fn served_form<'a>(
        &self,
        info: &KindInfo,
        stored: &'a Value,
    ) -> Result<std::borrow::Cow<'a, Value>, ApiError> {
        match info.conversion.as_ref() {
            None => Ok(std::borrow::Cow::Borrowed(stored)),
            Some(c) => c
                .to_served(stored.clone())
                .map(std::borrow::Cow::Owned)
                .map_err(|e| ApiError::Internal(e.to_string())),
        }
    }

    pub async fn get(&self, id: &Identity, req: pb::GetRequest) -> Result<pb::Object, ApiError> {
        let info = self.kind(&req.kind)?;
        let ns = self.request_namespace(&info, &req.namespace);
        self.authorize(id, "get", &info, &ns, &req.name, "")?;
        let key = self.key(&info, &ns, &req.name);
        if !req.allow_stale {
            self.store
                .read_barrier()
                .await
                .map_err(|e| self.store_error(&info, &key, e))?;
        }
        let obj = self
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found(&info, &req.name))?;
        Ok(self.to_pb(&info, &key, &obj))
    }

    /// Namespace of a request for a namespaced kind: as given, `default` when empty.
    fn request_namespace(&self, info: &KindInfo, ns: &str) -> String {
        if !info.namespaced {
            String::new()
        } else if ns.is_empty() {
            "default".into()
        } else {
            ns.to_string()
        }
    }

    /// Parses a request body, checking its size and that its apiVersion/kind are the request's
    /// (filling them in when absent).
    pub(crate) fn parse_body(&self, info: &KindInfo, json: &[u8]) -> Result<Value, ApiError> {
        if json.len() > MAX_OBJECT_BYTES {
            return Err(ApiError::TooLarge {
                size: json.len(),
                limit: MAX_OBJECT_BYTES,
            });
        }
        let mut obj = decode::parse_json(json).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let want_av = info.api_version();
        let map = obj
            .as_object_mut()
            .ok_or_else(|| ApiError::BadRequest("expected a JSON object".into()))?;
        match map.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("apiVersion".into(), Value::String(want_av.clone()));
            }
            Some(av) if av != want_av => {
                let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
                // Name the object's own apiVersion/kind when it is not served at all.
                if let Err(e) = self
                    .registry
                    .by_api_version_kind(av, if kind.is_empty() { info.kind } else { kind })
                {
                    return Err(ApiError::BadRequest(e.to_string()));
                }
                return Err(ApiError::BadRequest(format!(
                    "the API version in the data ({av}) does not match the expected API version ({want_av})"
                )));
            }
            Some(_) => {}
        }
        match map.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("kind".into(), Value::String(info.kind.to_string()));
            }
            Some(k) if k != info.kind => {
                return Err(ApiError::BadRequest(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    info.kind
                )));
            }
            Some(_) => {}
        }
        Ok(obj)
    }

    /// Runs the kind's admission (strict decode, defaults, validation).
    pub(crate) fn admit(
        &self,
        info: &KindInfo,
        name: &str,
        obj: Value,
        old: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let mut admitted = info
            .ops
            .admit(info, obj, old)
            .map_err(|e| admit_error(info, name, e))?;
        if info.group.is_empty() && info.kind == "Secret" {
            fold_string_data(&mut admitted);
        }
        Ok(admitted)
    }

    /// Serialises an admitted object for storage (without resourceVersion) and builds the put.
    pub(crate) fn put_command(
        &self,
        info: &KindInfo,
        key: ObjKey,
        expect: Expect,
        mut obj: Value,
    ) -> Result<Command, ApiError> {
        meta::metadata_mut(&mut obj).remove("resourceVersion");
        let ObjIndex {
            labels,
            fields,
            claims,
        } = index_object(info, &obj);
        let deleting = meta::is_deleting(&obj);
        let bytes = serde_json::to_vec(&obj).map_err(|e| ApiError::Internal(e.to_string()))?;
        if bytes.len() > MAX_OBJECT_BYTES {
            return Err(ApiError::TooLarge {
                size: bytes.len(),
                limit: MAX_OBJECT_BYTES,
            });
        }
        Ok(Command::Put {
            key,
            expect,
            object: Bytes::from(bytes),
            labels,
            fields,
            deleting,
            claims,
        })
    }

    /// A dry-run result: what would be stored, at the current version.
    pub(crate) fn dry_run_object(
        &self,
        info: &KindInfo,
        key: &ObjKey,
        cmd: &Command,
    ) -> pb::Object {
        let (api_version, json) = match cmd {
            Command::Put { object, .. } => {
                let json =
                    crate::state::set_resource_version(object, self.store.resource_version());
                self.conversions.show(info, &json)
            }
            Command::Delete { .. } => (info.api_version(), Bytes::new()),
        };
        pb::Object {
            api_version,
            kind: info.kind.to_string(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            resource_version: self.store.resource_version(),
            json,
        }
    }

    /// Proposes a command and maps the store's refusals to API errors.
    pub(crate) async fn propose(
        &self,
        info: &KindInfo,
        cmd: Command,
    ) -> Result<Arc<crate::state::Event>, ApiError> {
        let key = cmd.key().clone();
        self.store
            .propose(cmd)
            .await
            .map_err(|e| self.store_error(info, &key, e))
    }

    pub(crate) fn store_error(&self, info: &KindInfo, key: &ObjKey, e: StoreError) -> ApiError {
        match e {
            StoreError::Rejected(ApplyError::NotFound) => ApiError::not_found(info, &key.name),
            StoreError::Rejected(ApplyError::AlreadyExists) => {
                ApiError::already_exists(info, &key.name)
            }
            StoreError::Rejected(ApplyError::Conflict { .. }) => {
                ApiError::modified(info, &key.name)
            }
            StoreError::Rejected(ApplyError::NamespaceNotFound(ns)) => ApiError::NotFound {
                resource: "namespaces".into(),
                name: ns,
            },
            // Content arrived after the delete was decided: the caller retries, and then marks
            // the namespace terminating instead.
            StoreError::Rejected(ApplyError::NamespaceNotEmpty(ns)) => {
                ApiError::conflict(info, &key.name, format!("namespace {ns} still has content"))
            }
            StoreError::Rejected(ApplyError::ClaimTaken(c)) => ApiError::invalid(
                info,
                &key.name,
                format!("{c}: provided value is already allocated"),
            ),
            StoreError::Rejected(ApplyError::NamespaceTerminating(ns)) => {
                ApiError::Forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    info.qualified_plural(),
                    key.name
                ))
            }
            StoreError::InsufficientStorage(r) => ApiError::InsufficientStorage(r),
            StoreError::ShuttingDown => {
                ApiError::Unavailable("the API server is shutting down".into())
            }
            StoreError::Unavailable(r) => ApiError::Unavailable(r),
        }
    }

    pub(crate) fn parse_stored(obj: &StoredObject) -> Result<Value, ApiError> {
        serde_json::from_slice(&obj.json)
            .map_err(|e| ApiError::Internal(format!("stored object unreadable: {e}")))
    }
}

fn admit_error(info: &KindInfo, name: &str, e: AdmitError) -> ApiError {
    match e {
        AdmitError::Decode(d) => ApiError::BadRequest(format!("{} \"{name}\": {d}", info.kind)),
        AdmitError::Invalid(_) => ApiError::invalid(info, name, e.to_string()),
    }
}

/// A Secret's `stringData` is write-only: its entries are stored base64-encoded in `data`
/// (winning over the same key there), and the field itself is never stored.
fn fold_string_data(secret: &mut Value) {
    use base64::Engine;
    let Some(map) = secret.as_object_mut() else {
        return;
    };
    let Some(Value::Object(plain)) = map.remove("stringData") else {
        return;
    };
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(data) = data.as_object_mut() {
        for (k, v) in plain {
            let text = v.as_str().unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
            data.insert(k, Value::String(encoded));
        }
    }
}

/// Reads a request's dry-run flag.
pub(crate) fn dry_run(o: &Option<pb::WriteOptions>) -> bool {
    o.as_ref().is_some_and(|o| o.dry_run)
}
