//! The fake's objects and the write semantics, following the server's service layer
//! (`apiserver/src/service/`): server-owned fields, preconditions, no-op writes, generation,
//! the status subresource, finalizers, graceful pod deletion, binding and namespaces.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rudder_api::Registry;
use rudder_api::meta;
use rudder_proto as pb;
use serde_json::{Value, json};

use super::merge_patch;
use super::watch::{Change, Snapshots, Watcher};
use crate::clock::SharedClock;
use crate::conn::ClientError;

/// Kind key (`apiVersion/Kind`), namespace ("" when cluster-scoped), name.
pub(super) type ObjKey = (String, String, String);

/// Fields a client may not set on create.
const SERVER_OWNED: [&str; 7] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
    "managedFields",
];

/// Metadata only the server sets; kept from the stored object on every update.
const SERVER_META: [&str; 5] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
];

/// Namespaces the server creates at start and refuses to delete.
pub(super) const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

pub(super) const NAMESPACE_KEY: &str = "v1/Namespace";

/// Characters of generated name suffixes, as the server's (no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// What the fake knows of a request's kind, from the built-in registry when it is there.
pub(super) struct KindMeta {
    pub key: String,
    api_version: String,
    pub kind: String,
    /// `None` for a kind the registry does not know: namespaced exactly when given one.
    namespaced: Option<bool>,
    has_status: bool,
    /// Fields a selector may name besides metadata's; `None` when the kind is unknown.
    pub selectable: Option<&'static [&'static str]>,
    plural: String,
}

impl KindMeta {
    pub fn resolve(k: &Option<pb::KindRef>) -> Result<Self, ClientError> {
        let k = k
            .as_ref()
            .ok_or_else(|| ClientError::Invalid("kind: Required value".into()))?;
        match Registry::builtin().resolve(&k.api_version, &k.kind) {
            Ok(info) => Ok(KindMeta {
                key: format!("{}/{}", info.api_version(), info.kind),
                api_version: info.api_version(),
                kind: info.kind.to_string(),
                namespaced: Some(info.namespaced),
                has_status: info.has_status,
                selectable: Some(info.selectable_fields),
                plural: info.qualified_plural(),
            }),
            Err(e) if k.api_version.is_empty() => Err(ClientError::Invalid(e.to_string())),
            Err(_) => Ok(KindMeta {
                key: format!("{}/{}", k.api_version, k.kind),
                api_version: k.api_version.clone(),
                kind: k.kind.clone(),
                namespaced: None,
                has_status: false,
                selectable: None,
                plural: k.kind.to_lowercase(),
            }),
        }
    }

    pub(super) fn is(&self, api_version: &str, kind: &str) -> bool {
        self.api_version == api_version && self.kind == kind
    }

    /// The namespace of a request naming one object.
    pub fn object_ns(&self, ns: &str) -> String {
        match self.namespaced {
            Some(true) if ns.is_empty() => "default".into(),
            Some(false) => String::new(),
            _ => ns.to_string(),
        }
    }

    /// The namespace a list or watch covers ("" for all).
    pub fn list_ns(&self, ns: &str) -> String {
        match self.namespaced {
            Some(false) => String::new(),
            _ => ns.to_string(),
        }
    }

    /// The namespace of a create or update, from the body and the request.
    fn body_ns(&self, body: &Value, req_ns: &str) -> Result<String, ClientError> {
        let b = meta::namespace(body);
        match self.namespaced {
            Some(false) => Ok(String::new()),
            Some(true) if !b.is_empty() && !req_ns.is_empty() && b != req_ns => {
                Err(ClientError::BadRequest(format!(
                    "the namespace of the provided object ({b}) does not match the namespace sent on the request ({req_ns})"
                )))
            }
            _ if !b.is_empty() => Ok(b.to_string()),
            Some(true) if req_ns.is_empty() => Ok("default".into()),
            _ => Ok(req_ns.to_string()),
        }
    }

    /// Parses a body, filling in or checking its apiVersion and kind.
    fn parse_body(&self, json: &[u8]) -> Result<Value, ClientError> {
        let mut v = parse(json)?;
        for (field, want) in [("apiVersion", &self.api_version), ("kind", &self.kind)] {
            match v.get(field).and_then(Value::as_str) {
                None | Some("") => {
                    if let Value::Object(m) = &mut v {
                        m.insert(field.into(), Value::String(want.clone()));
                    }
                }
                Some(got) if got != want => {
                    return Err(ClientError::Invalid(format!(
                        "the {field} in the data ({got}) does not match the expected {field} ({want})"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(v)
    }

    pub fn not_found(&self, name: &str) -> ClientError {
        ClientError::NotFound(format!("{} \"{name}\" not found", self.plural))
    }

    fn modified(&self, name: &str) -> ClientError {
        ClientError::Conflict(format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            self.plural
        ))
    }

    pub(super) fn conflict(&self, name: &str, why: String) -> ClientError {
        ClientError::Conflict(format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            self.plural
        ))
    }
}

/// Kubernetes' `Time` format: RFC 3339 with whole seconds, UTC (as the server writes it).
pub(super) fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(super) fn parse(json: &[u8]) -> Result<Value, ClientError> {
    let v: Value = serde_json::from_slice(json)
        .map_err(|e| ClientError::Invalid(format!("request body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ClientError::Invalid("expected a JSON object".into()));
    }
    Ok(v)
}

/// An object version re-stamped with another resourceVersion (deletions, selector exits).
pub(super) fn restamp(obj: &pb::Object, rv: u64) -> pb::Object {
    let mut o = obj.clone();
    if let Ok(mut v) = serde_json::from_slice::<Value>(&obj.json) {
        meta::metadata_mut(&mut v).insert("resourceVersion".into(), Value::String(rv.to_string()));
        o.json = serde_json::to_vec(&v).unwrap_or_default().into();
    }
    o.resource_version = rv;
    o
}

pub(super) fn deleted(object: pb::Object, deleted: bool) -> pb::DeleteResponse {
    pb::DeleteResponse {
        object: Some(object),
        deleted,
    }
}

/// The whole fake server state, behind one lock.
pub(super) struct State {
    pub rv: u64,
    seq: u64,
    pub objects: BTreeMap<ObjKey, pb::Object>,
    pub history: VecDeque<Change>,
    pub history_cap: usize,
    pub watchers: Vec<Watcher>,
    pub watch_versions: Vec<u64>,
    pub snapshots: Snapshots,
    pub token_seq: u64,
    pub next_watcher: u64,
    pub bookmark_interval: Option<Duration>,
    clock: SharedClock,
    require_namespaces: bool,
}

impl State {
    pub fn new(history_cap: usize, clock: SharedClock, require_namespaces: bool) -> Self {
        State {
            rv: 0,
            seq: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            watchers: Vec::new(),
            watch_versions: Vec::new(),
            snapshots: Snapshots::new(),
            token_seq: 0,
            next_watcher: 0,
            bookmark_interval: None,
            clock,
            require_namespaces,
        }
    }

    /// Creates the namespaces the server starts with.
    pub fn bootstrap_namespaces(&mut self) {
        for ns in SYSTEM_NAMESPACES {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let req = pb::CreateRequest {
                kind: Some(pb::KindRef {
                    api_version: "v1".into(),
                    kind: "Namespace".into(),
                }),
                json: body.to_string().into(),
                ..Default::default()
            };
            if let Err(e) = self.create(req) {
                tracing::warn!(namespace = ns, error = %e, "fake: bootstrap namespace");
            }
        }
    }

    pub(super) fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }

    /// Stores `value` (or removes the object, for a deletion) under the next version and
    /// publishes the change.
    pub(super) fn commit(&mut self, key: ObjKey, mut value: Value, delete: bool) -> pb::Object {
        self.rv += 1;
        let rv = self.rv;
        meta::metadata_mut(&mut value)
            .insert("resourceVersion".into(), Value::String(rv.to_string()));
        let (api_version, kind) = key.0.rsplit_once('/').unwrap_or(("", key.0.as_str()));
        let obj = pb::Object {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: key.1.clone(),
            name: key.2.clone(),
            resource_version: rv,
            json: serde_json::to_vec(&value).unwrap_or_default().into(),
        };
        let prev = if delete {
            self.objects.remove(&key)
        } else {
            self.objects.insert(key.clone(), obj.clone())
        };
        self.publish(Change {
            key,
            rv,
            deleted: delete,
            object: obj.clone(),
            prev,
        });
        obj
    }

    pub(super) fn stored(&self, k: &KindMeta, key: &ObjKey) -> Result<pb::Object, ClientError> {
        self.objects
            .get(key)
            .cloned()
            .ok_or_else(|| k.not_found(&key.2))
    }

    /// A generated-name suffix: five characters, as the server's, spread over the alphabet.
    fn suffix(&mut self) -> String {
        self.seq += 1;
        let n = SUFFIX_ALPHABET.len() as u64;
        let mut x = self.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
        (0..5)
            .map(|_| {
                let c = SUFFIX_ALPHABET[(x % n) as usize] as char;
                x /= n;
                c
            })
            .collect()
    }

    /// Refuses creates into a missing (when required) or terminating namespace.
    fn check_namespace(&self, k: &KindMeta, ns: &str, name: &str) -> Result<(), ClientError> {
        let key = (NAMESPACE_KEY.to_string(), String::new(), ns.to_string());
        match self.objects.get(&key) {
            None if self.require_namespaces => Err(ClientError::NotFound(format!(
                "namespaces \"{ns}\" not found"
            ))),
            Some(o) if parse(&o.json).is_ok_and(|v| meta::is_deleting(&v)) => {
                Err(ClientError::Forbidden(format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    k.plural
                )))
            }
            _ => Ok(()),
        }
    }

    pub fn create(&mut self, req: pb::CreateRequest) -> Result<pb::Object, ClientError> {
        let k = KindMeta::resolve(&req.kind)?;
        let mut v = k.parse_body(&req.json)?;
        let ns = k.body_ns(&v, &req.namespace)?;
        if meta::resource_version(&v) != 0 || !meta::str_field(&v, "resourceVersion").is_empty() {
            return Err(ClientError::BadRequest(
                "metadata.resourceVersion: Invalid value: resourceVersion should not be set on objects to be created".into(),
            ));
        }
        {
            let m = meta::metadata_mut(&mut v);
            for f in SERVER_OWNED {
                m.remove(f);
            }
            if ns.is_empty() {
                m.remove("namespace");
            } else {
                m.insert("namespace".into(), Value::String(ns.clone()));
            }
        }
        reset_status_on_create(&k, &mut v);
        if k.is("v1", "Namespace") {
            meta::require_namespace_finalizer(&mut v);
        }
        let given = meta::name(&v).to_string();
        let generate = meta::str_field(&v, "generateName").to_string();
        if given.is_empty() && generate.is_empty() {
            return Err(ClientError::Invalid(
                "metadata.name: Required value: name or generateName is required".into(),
            ));
        }
        if !ns.is_empty() {
            self.check_namespace(&k, &ns, &given)?;
        }
        let name = if given.is_empty() {
            loop {
                let n = format!("{generate}{}", self.suffix());
                if !self
                    .objects
                    .contains_key(&(k.key.clone(), ns.clone(), n.clone()))
                {
                    break n;
                }
            }
        } else {
            given
        };
        let key = (k.key.clone(), ns, name.clone());
        if self.objects.contains_key(&key) {
            return Err(ClientError::AlreadyExists(format!(
                "{} \"{name}\" already exists",
                k.plural
            )));
        }
        self.seq += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.seq);
        let created = format_time(self.now());
        let m = meta::metadata_mut(&mut v);
        m.insert("name".into(), Value::String(name));
        m.insert("uid".into(), Value::String(uid));
        m.insert("creationTimestamp".into(), Value::String(created));
        m.insert("generation".into(), json!(1));
        Ok(self.commit(key, v, false))
    }

    pub fn update(
        &mut self,
        req: pb::UpdateRequest,
        status: bool,
    ) -> Result<pb::Object, ClientError> {
        let k = KindMeta::resolve(&req.kind)?;
        let obj = k.parse_body(&req.json)?;
        let name = meta::name(&obj).to_string();
        if name.is_empty() {
            return Err(ClientError::Invalid("metadata.name: Required value".into()));
        }
        let ns = k.body_ns(&obj, &req.namespace)?;
        let key = (k.key.clone(), ns, name);
        let client_rv = meta::resource_version(&obj);
        let is_ns = k.is("v1", "Namespace");
        self.guaranteed_update(&k, key, client_rv, status, |old| {
            let mut new = obj;
            if is_ns {
                keep_spec_finalizers(old, &mut new);
            }
            Ok(new)
        })
    }

    /// A namespace's `spec.finalizers` from the request's object, nothing else (the server's
    /// `finalize`).
    pub fn finalize(&mut self, req: pb::UpdateRequest) -> Result<pb::Object, ClientError> {
        let kind = req.kind.clone().or_else(|| {
            Some(pb::KindRef {
                api_version: "v1".into(),
                kind: "Namespace".into(),
            })
        });
        let k = KindMeta::resolve(&kind)?;
        let body = k.parse_body(&req.json)?;
        let name = meta::name(&body).to_string();
        if !k.is("v1", "Namespace") {
            return Err(ClientError::NotFound(format!(
                "{}/finalize \"{name}\" not found",
                k.plural
            )));
        }
        if name.is_empty() {
            return Err(ClientError::Invalid("metadata.name: Required value".into()));
        }
        let wanted = body.pointer("/spec/finalizers").cloned();
        let key = (k.key.clone(), String::new(), name);
        let client_rv = meta::resource_version(&body);
        self.guaranteed_update(&k, key, client_rv, false, |old| {
            let mut new = old.clone();
            meta::set_spec_finalizers(&mut new, wanted);
            Ok(new)
        })
    }

    pub fn patch(&mut self, req: pb::PatchRequest) -> Result<pb::Object, ClientError> {
        let k = KindMeta::resolve(&req.kind)?;
        let key = (k.key.clone(), k.object_ns(&req.namespace), req.name.clone());
        let patch: Value = serde_json::from_slice(&req.patch)
            .map_err(|e| ClientError::Invalid(format!("invalid patch: {e}")))?;
        if req.patch_type == pb::PatchType::Json as i32 {
            return Err(ClientError::Invalid(
                "the fake supports JSON merge patches only".into(),
            ));
        }
        if !patch.is_object() {
            return Err(ClientError::Invalid(
                "invalid merge patch: must be a JSON object".into(),
            ));
        }
        // A resourceVersion in the patch is a precondition, as in Kubernetes.
        let client_rv = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let is_ns = k.is("v1", "Namespace");
        self.guaranteed_update(&k, key, client_rv, req.status, |old| {
            let mut doc = old.clone();
            merge_patch(&mut doc, &patch);
            if is_ns {
                keep_spec_finalizers(old, &mut doc);
            }
            Ok(doc)
        })
    }

    /// Read-modify-write with the stored object; see the server's `guaranteed_update`.
    fn guaranteed_update(
        &mut self,
        k: &KindMeta,
        key: ObjKey,
        client_rv: u64,
        status: bool,
        mutate: impl FnOnce(&Value) -> Result<Value, ClientError>,
    ) -> Result<pb::Object, ClientError> {
        if status && !k.has_status {
            return Err(ClientError::NotFound(format!(
                "{}/status \"{}\" not found",
                k.plural, key.2
            )));
        }
        let old = self.stored(k, &key)?;
        if client_rv != 0 && client_rv != old.resource_version {
            return Err(k.modified(&key.2));
        }
        let old_v = parse(&old.json)?;
        let requested = mutate(&old_v)?;
        let Some(new_v) = prepare_update(k, &key, &old_v, requested, status)? else {
            return Ok(old);
        };
        if meta::is_deleting(&old_v) && self.removable(k, &key, &new_v) {
            // As the server: the object goes as it was stored, finalizers and all.
            let gone = self.commit(key.clone(), old_v, true);
            self.after_delete(&key.1);
            return Ok(gone);
        }
        Ok(self.commit(key, new_v, false))
    }

    pub fn bind(&mut self, req: pb::BindRequest) -> Result<pb::Object, ClientError> {
        let k = KindMeta::resolve(&Some(pb::KindRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
        }))?;
        if req.node_name.is_empty() {
            return Err(ClientError::Invalid(format!(
                "Pod \"{}\" is invalid: target.name: Required value",
                req.name
            )));
        }
        let key = (k.key.clone(), k.object_ns(&req.namespace), req.name.clone());
        let cur = self.stored(&k, &key)?;
        let mut v = parse(&cur.json)?;
        if !req.uid.is_empty() && meta::uid(&v) != req.uid {
            let why = format!(
                "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                req.uid,
                meta::uid(&v)
            );
            return Err(k.conflict(&req.name, why));
        }
        if meta::is_deleting(&v) {
            let why = format!(
                "pod {} is being deleted, cannot be assigned to a host",
                req.name
            );
            return Err(k.conflict(&req.name, why));
        }
        let current = v
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !current.is_empty() {
            let why = format!("pod {} is already assigned to node \"{current}\"", req.name);
            return Err(k.conflict(&req.name, why));
        }
        if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), Value::String(req.node_name));
        }
        let now = format_time(self.now());
        set_condition(&mut v, "PodScheduled", "True", &now);
        Ok(self.commit(key, v, false))
    }
}

/// The object to store from the stored one and the requested one, or `None` when nothing
/// would change; see the server's `prepare_update` (admission aside).
fn prepare_update(
    k: &KindMeta,
    key: &ObjKey,
    old: &Value,
    mut new: Value,
    status: bool,
) -> Result<Option<Value>, ClientError> {
    let name = key.2.as_str();
    let new_uid = meta::uid(&new).to_string();
    if !new_uid.is_empty() && new_uid != meta::uid(old) {
        let why = format!(
            "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {}",
            meta::uid(old)
        );
        return Err(k.conflict(name, why));
    }
    if meta::name(&new) != name {
        return Err(ClientError::Invalid(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta::name(&new)
        )));
    }
    new = meta::separate_status(new, old, status, k.has_status);
    {
        let old_meta = meta::metadata(old).cloned().unwrap_or_default();
        let m = meta::metadata_mut(&mut new);
        for f in SERVER_META {
            match old_meta.get(f) {
                Some(v) => m.insert(f.to_string(), v.clone()),
                None => m.remove(f),
            };
        }
        m.remove("resourceVersion");
        m.remove("selfLink");
        if key.1.is_empty() {
            m.remove("namespace");
        } else {
            m.insert("namespace".into(), Value::String(key.1.clone()));
        }
    }
    if meta::is_deleting(old) {
        let before = meta::finalizers(old);
        if let Some(added) = meta::finalizers(&new)
            .into_iter()
            .find(|f| !before.contains(f))
        {
            return Err(ClientError::Forbidden(format!(
                "{} \"{name}\" is forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]",
                k.plural
            )));
        }
    }
    let generation = meta::generation(old).max(1);
    let generation = if meta::content_differs(old, &new) {
        generation + 1
    } else {
        generation
    };
    meta::metadata_mut(&mut new).insert("generation".into(), json!(generation));
    let mut old_cmp = old.clone();
    meta::metadata_mut(&mut old_cmp).remove("resourceVersion");
    if old_cmp == new {
        return Ok(None);
    }
    Ok(Some(new))
}

/// On an update or patch `spec.finalizers` stays as stored.
fn keep_spec_finalizers(old: &Value, new: &mut Value) {
    meta::set_spec_finalizers(new, old.pointer("/spec/finalizers").cloned());
}

/// Status is not the client's to set on create, except on Nodes, whose agent reports it.
fn reset_status_on_create(k: &KindMeta, obj: &mut Value) {
    if !k.has_status || k.is("v1", "Node") {
        return;
    }
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if k.is("v1", "Pod") {
        map.insert("status".into(), json!({"phase": "Pending"}));
    } else if k.is("v1", "Namespace") {
        map.insert("status".into(), json!({"phase": "Active"}));
    } else {
        map.remove("status");
    }
}

/// Sets a pod condition, replacing one of the same type.
fn set_condition(pod: &mut Value, kind: &str, status: &str, now: &str) {
    let Some(root) = pod.as_object_mut() else {
        return;
    };
    let st = root.entry("status").or_insert_with(|| json!({}));
    let Some(st) = st.as_object_mut() else { return };
    let conds = st.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conds.as_array_mut() else {
        return;
    };
    list.retain(|c| c.get("type").and_then(Value::as_str) != Some(kind));
    list.push(json!({"type": kind, "status": status, "lastTransitionTime": now}));
}
