//! [`FakeApi`]: an in-memory API server for tests, with the real resourceVersion semantics.
//!
//! Guarantees, as the real server's contract states them:
//! - one global, monotonic resourceVersion; every write (create, update, patch, delete) takes the
//!   next one and is appended to a bounded history;
//! - a write carrying a non-zero stale `metadata.resourceVersion` fails with `Conflict`;
//! - a watch from version N replays every matching change after N, then follows live changes,
//!   with no gap or duplicate (registration and replay happen under one lock); from 0 it first
//!   sends a synthetic ADDED per matching object; from a version older than the history window it
//!   sends one ERROR `Expired` (410) event and ends;
//! - paginated lists (limit/continue) are served from a snapshot taken by the first page, so every
//!   page is consistent at the first page's version.
//!
//! Test controls: [`FakeApi::fail_next`] injects errors per operation, [`FakeApi::drop_watches`]
//! ends every watch stream, [`FakeApi::cut_watches_too_slow`] ends them with a `TooSlow` ERROR,
//! [`FakeApi::compact`] empties the history, [`FakeApi::send_bookmarks`] sends BOOKMARKs, and
//! [`FakeApi::calls`] counts calls per operation.
//!
//! Caveats: no admission, defaulting or validation; the fake does not know kinds' scopes (an
//! empty namespace means cluster-scoped); `update` stores the object as given (status included);
//! only JSON merge patches are supported; `creationTimestamp` is not set.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use rudder_api::meta;
use rudder_api::selector::{FieldSelector, LabelSelector};
use rudder_proto as pb;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::api::{
    Api, ApiFuture, CODE_EXPIRED, CODE_TOO_SLOW, REASON_EXPIRED, REASON_TOO_SLOW, WatchEvent,
    WatchStream,
};
use crate::conn::ClientError;

/// An operation of [`Api`], for fault injection and call counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Get,
    List,
    Watch,
    Create,
    Update,
    UpdateStatus,
    Patch,
    Delete,
    Bind,
}

/// The in-memory API server. Share it as `Arc<FakeApi>` (it implements [`Api`]).
#[derive(Default)]
pub struct FakeApi {
    state: Mutex<State>,
}

type ObjKey = (String, String, String);
type Sink = mpsc::UnboundedSender<Result<WatchEvent, ClientError>>;

struct State {
    rv: u64,
    uid_seq: u64,
    objects: BTreeMap<ObjKey, pb::Object>,
    history: VecDeque<(ObjKey, WatchEvent)>,
    history_cap: usize,
    watchers: Vec<Watcher>,
    faults: HashMap<Op, VecDeque<ClientError>>,
    calls: HashMap<Op, usize>,
    watch_versions: Vec<u64>,
    snapshots: HashMap<String, (u64, Vec<pb::Object>)>,
    token_seq: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            rv: 0,
            uid_seq: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_cap: 1000,
            watchers: Vec::new(),
            faults: HashMap::new(),
            calls: HashMap::new(),
            watch_versions: Vec::new(),
            snapshots: HashMap::new(),
            token_seq: 0,
        }
    }
}

/// What a list or watch selects.
struct Filter {
    kind: String,
    namespace: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn new(
        kind: &Option<pb::KindRef>,
        ns: &str,
        labels: &str,
        fields: &str,
    ) -> Result<Self, ClientError> {
        let invalid = |e: rudder_api::selector::SelectorError| ClientError::Invalid(e.0);
        Ok(Filter {
            kind: kind_key(kind),
            namespace: ns.to_string(),
            labels: LabelSelector::parse(labels).map_err(invalid)?,
            fields: FieldSelector::parse(fields).map_err(invalid)?,
        })
    }

    fn matches(&self, key: &ObjKey, obj: &pb::Object) -> bool {
        if key.0 != self.kind || (!self.namespace.is_empty() && key.1 != self.namespace) {
            return false;
        }
        if self.labels.is_empty() && self.fields.is_empty() {
            return true;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&obj.json) else {
            return false;
        };
        self.labels.matches(&meta::labels(&v)) && self.fields.matches(&|f| meta::field_value(&v, f))
    }
}

struct Watcher {
    filter: Filter,
    bookmarks: bool,
    last_rv: u64,
    tx: Sink,
}

impl Watcher {
    /// Sends an event; false when the receiver is gone.
    fn send(&mut self, ev: WatchEvent, rv: u64) -> bool {
        self.last_rv = self.last_rv.max(rv);
        self.tx.send(Ok(ev)).is_ok()
    }
}

fn kind_key(k: &Option<pb::KindRef>) -> String {
    k.as_ref()
        .map(|k| format!("{}/{}", k.api_version, k.kind))
        .unwrap_or_default()
}

fn watch_error(code: i32, reason: &str, resume: u64) -> WatchEvent {
    WatchEvent::Error(pb::WatchError {
        code,
        reason: reason.to_string(),
        message: format!("watch ended: {reason}"),
        resume_resource_version: resume,
    })
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn parse(json: &[u8]) -> Result<Value, ClientError> {
    let v: Value = serde_json::from_slice(json)
        .map_err(|e| ClientError::Invalid(format!("request body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ClientError::Invalid(
            "request body is not a JSON object".into(),
        ));
    }
    Ok(v)
}

fn not_found(key: &ObjKey) -> ClientError {
    ClientError::NotFound(format!(
        "{} \"{}\" not found in namespace \"{}\"",
        key.0, key.2, key.1
    ))
}

impl State {
    fn enter(&mut self, op: Op) -> Result<(), ClientError> {
        *self.calls.entry(op).or_default() += 1;
        match self.faults.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The oldest version a watch may start from without missing a change.
    fn oldest_resumable(&self) -> u64 {
        match self.history.front() {
            Some((_, ev)) => event_rv(ev).saturating_sub(1),
            None => self.rv,
        }
    }

    /// Stores `value` (or removes it for DELETED) under the next version, records the change
    /// and fans it out to matching watchers.
    fn commit(&mut self, key: ObjKey, mut value: Value, deleted: bool) -> pb::Object {
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
        let ev = if deleted {
            self.objects.remove(&key);
            WatchEvent::Deleted(obj.clone())
        } else if self.objects.insert(key.clone(), obj.clone()).is_some() {
            WatchEvent::Modified(obj.clone())
        } else {
            WatchEvent::Added(obj.clone())
        };
        self.watchers
            .retain_mut(|w| !w.filter.matches(&key, &obj) || w.send(ev.clone(), rv));
        self.history.push_back((key, ev));
        while self.history.len() > self.history_cap {
            self.history.pop_front();
        }
        obj
    }

    /// Key and stored object for a write request's body.
    fn locate(&self, kind: &Option<pb::KindRef>, ns: &str, v: &Value) -> ObjKey {
        let ns = match meta::namespace(v) {
            "" => ns,
            own => own,
        };
        (kind_key(kind), ns.to_string(), meta::name(v).to_string())
    }

    fn check_rv(&self, key: &ObjKey, v: &Value) -> Result<&pb::Object, ClientError> {
        let cur = self.objects.get(key).ok_or_else(|| not_found(key))?;
        let want = meta::resource_version(v);
        if want != 0 && want != cur.resource_version {
            return Err(ClientError::Conflict(format!(
                "the object has been modified (version {want}, now {}); please apply your changes to the latest version and try again",
                cur.resource_version
            )));
        }
        Ok(cur)
    }

    fn write(
        &mut self,
        req: pb::UpdateRequest,
        status_only: bool,
    ) -> Result<pb::Object, ClientError> {
        let mut v = parse(&req.json)?;
        let key = self.locate(&req.kind, &req.namespace, &v);
        let cur = parse(&self.check_rv(&key, &v)?.json)?;
        if status_only {
            let status = v.get("status").cloned().unwrap_or(Value::Null);
            v = cur;
            if let Value::Object(m) = &mut v {
                m.insert("status".into(), status);
            }
        } else {
            // Identity fields are the server's, whatever the client sent.
            for f in ["uid", "creationTimestamp"] {
                if let Some(x) = meta::metadata(&cur).and_then(|m| m.get(f)) {
                    meta::metadata_mut(&mut v).insert(f.into(), x.clone());
                }
            }
        }
        Ok(self.commit(key, v, false))
    }
}

fn event_rv(ev: &WatchEvent) -> u64 {
    match ev {
        WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
            o.resource_version
        }
        WatchEvent::Bookmark(rv) => *rv,
        WatchEvent::Error(e) => e.resume_resource_version,
    }
}

impl FakeApi {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A fake keeping only the last `cap` changes, so older watches expire sooner.
    pub fn with_history(cap: usize) -> Arc<Self> {
        let f = Self::default();
        f.lock().history_cap = cap.max(1);
        Arc::new(f)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the fake from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next call of `op` fails with `err` (errors queue up in order).
    pub fn fail_next(&self, op: Op, err: ClientError) {
        self.lock().faults.entry(op).or_default().push_back(err);
    }

    /// The next `n` calls of `op` fail with `err`.
    pub fn fail_times(&self, op: Op, err: ClientError, n: usize) {
        for _ in 0..n {
            self.fail_next(op, err.clone());
        }
    }

    /// Forgets every injected fault not yet consumed.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// How many times `op` was called (failed calls included).
    pub fn calls(&self, op: Op) -> usize {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// The versions every watch so far asked to start from, in order.
    pub fn watch_versions(&self) -> Vec<u64> {
        self.lock().watch_versions.clone()
    }

    /// The current store version.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Open watch streams whose receiver is still alive.
    pub fn watcher_count(&self) -> usize {
        let mut st = self.lock();
        st.watchers.retain(|w| !w.tx.is_closed());
        st.watchers.len()
    }

    /// Ends every watch stream without an ERROR event (a dropped connection).
    pub fn drop_watches(&self) {
        self.lock().watchers.clear();
    }

    /// Ends every watch with a `TooSlow` ERROR carrying the version it had reached.
    pub fn cut_watches_too_slow(&self) {
        for mut w in std::mem::take(&mut self.lock().watchers) {
            let rv = w.last_rv;
            w.send(watch_error(CODE_TOO_SLOW, REASON_TOO_SLOW, rv), rv);
        }
    }

    /// Drops the whole change history: watches from any past version now get `Expired`.
    pub fn compact(&self) {
        self.lock().history.clear();
    }

    /// Sends a BOOKMARK at the current version to every watch that asked for them.
    pub fn send_bookmarks(&self) {
        let mut st = self.lock();
        let rv = st.rv;
        st.watchers
            .retain_mut(|w| !w.bookmarks || w.send(WatchEvent::Bookmark(rv), rv));
    }

    /// The stored JSON of an object, for assertions.
    pub fn get_json(&self, kind: &pb::KindRef, ns: &str, name: &str) -> Option<Value> {
        let key = (
            kind_key(&Some(kind.clone())),
            ns.to_string(),
            name.to_string(),
        );
        let st = self.lock();
        serde_json::from_slice(&st.objects.get(&key)?.json).ok()
    }

    /// Every stored object of a kind, for assertions.
    pub fn list_json(&self, kind: &pb::KindRef) -> Vec<Value> {
        let k = kind_key(&Some(kind.clone()));
        let st = self.lock();
        st.objects
            .iter()
            .filter(|(key, _)| key.0 == k)
            .filter_map(|(_, o)| serde_json::from_slice(&o.json).ok())
            .collect()
    }

    fn do_get(&self, req: pb::GetRequest) -> Result<pb::Object, ClientError> {
        let mut st = self.lock();
        st.enter(Op::Get)?;
        let key = (kind_key(&req.kind), req.namespace, req.name);
        st.objects.get(&key).cloned().ok_or_else(|| not_found(&key))
    }

    fn do_list(&self, req: pb::ListRequest) -> Result<pb::ListResponse, ClientError> {
        let mut st = self.lock();
        st.enter(Op::List)?;
        let (rv, mut items) = if req.continue_token.is_empty() {
            let f = Filter::new(
                &req.kind,
                &req.namespace,
                &req.label_selector,
                &req.field_selector,
            )?;
            let items = st
                .objects
                .iter()
                .filter(|(k, o)| f.matches(k, o))
                .map(|(_, o)| o.clone());
            (st.rv, items.collect::<Vec<_>>())
        } else {
            st.snapshots.remove(&req.continue_token).ok_or_else(|| {
                ClientError::Expired("the continue token is no longer valid; relist".into())
            })?
        };
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit as usize
        };
        let mut continue_token = String::new();
        if items.len() > limit {
            let rest = items.split_off(limit);
            st.token_seq += 1;
            continue_token = format!("c{}", st.token_seq);
            st.snapshots.insert(continue_token.clone(), (rv, rest));
        }
        let remaining = st
            .snapshots
            .get(&continue_token)
            .map_or(0, |(_, r)| r.len() as u64);
        Ok(pb::ListResponse {
            items,
            resource_version: rv,
            continue_token,
            remaining_item_count: remaining,
        })
    }

    fn do_watch(&self, req: pb::WatchRequest) -> Result<WatchStream, ClientError> {
        let mut st = self.lock();
        st.enter(Op::Watch)?;
        st.watch_versions.push(req.resource_version);
        let filter = Filter::new(
            &req.kind,
            &req.namespace,
            &req.label_selector,
            &req.field_selector,
        )?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut w = Watcher {
            filter,
            bookmarks: req.allow_bookmarks,
            last_rv: req.resource_version,
            tx,
        };
        let from = req.resource_version;
        if from == 0 {
            let rv = st.rv;
            for (k, o) in &st.objects {
                if w.filter.matches(k, o) {
                    w.send(WatchEvent::Added(o.clone()), o.resource_version);
                }
            }
            w.last_rv = rv;
        } else if from < st.oldest_resumable() {
            w.send(watch_error(CODE_EXPIRED, REASON_EXPIRED, 0), 0);
            return Ok(UnboundedReceiverStream::new(rx).boxed());
        } else {
            for (k, ev) in &st.history {
                let rv = event_rv(ev);
                let obj = match ev {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o,
                    _ => continue,
                };
                if rv > from && w.filter.matches(k, obj) {
                    w.send(ev.clone(), rv);
                }
            }
        }
        st.watchers.push(w);
        Ok(UnboundedReceiverStream::new(rx).boxed())
    }

    fn do_create(&self, req: pb::CreateRequest) -> Result<pb::Object, ClientError> {
        let mut st = self.lock();
        st.enter(Op::Create)?;
        let mut v = parse(&req.json)?;
        let mut key = st.locate(&req.kind, &req.namespace, &v);
        if key.2.is_empty() {
            let prefix = meta::str_field(&v, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ClientError::Invalid("metadata.name: Required value".into()));
            }
            st.uid_seq += 1;
            key.2 = format!("{prefix}{:05x}", st.uid_seq);
        }
        if st.objects.contains_key(&key) {
            return Err(ClientError::AlreadyExists(format!(
                "{} \"{}\" already exists",
                key.0, key.2
            )));
        }
        st.uid_seq += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", st.uid_seq);
        let m = meta::metadata_mut(&mut v);
        m.insert("name".into(), Value::String(key.2.clone()));
        if !key.1.is_empty() {
            m.insert("namespace".into(), Value::String(key.1.clone()));
        }
        m.insert("uid".into(), Value::String(uid));
        if let (Value::Object(root), Some(k)) = (&mut v, &req.kind) {
            root.insert("apiVersion".into(), Value::String(k.api_version.clone()));
            root.insert("kind".into(), Value::String(k.kind.clone()));
        }
        Ok(st.commit(key, v, false))
    }

    fn do_update(&self, req: pb::UpdateRequest, op: Op) -> Result<pb::Object, ClientError> {
        let mut st = self.lock();
        st.enter(op)?;
        st.write(req, op == Op::UpdateStatus)
    }

    fn do_patch(&self, req: pb::PatchRequest) -> Result<pb::Object, ClientError> {
        let mut st = self.lock();
        st.enter(Op::Patch)?;
        if req.patch_type != pb::PatchType::Merge as i32 {
            return Err(ClientError::Invalid(
                "the fake supports merge patches only".into(),
            ));
        }
        let key = (kind_key(&req.kind), req.namespace, req.name);
        let cur = st.objects.get(&key).ok_or_else(|| not_found(&key))?;
        let mut v = parse(&cur.json)?;
        let patch: Value = serde_json::from_slice(&req.patch)
            .map_err(|e| ClientError::Invalid(format!("patch is not JSON: {e}")))?;
        merge_patch(&mut v, &patch);
        Ok(st.commit(key, v, false))
    }

    fn do_delete(&self, req: pb::DeleteRequest) -> Result<pb::DeleteResponse, ClientError> {
        let mut st = self.lock();
        st.enter(Op::Delete)?;
        let key = (kind_key(&req.kind), req.namespace, req.name);
        let cur = st.objects.get(&key).ok_or_else(|| not_found(&key))?;
        let v = parse(&cur.json)?;
        let rv_mismatch = req.precondition_resource_version != 0
            && req.precondition_resource_version != cur.resource_version;
        if rv_mismatch
            || (!req.precondition_uid.is_empty() && req.precondition_uid != meta::uid(&v))
        {
            return Err(ClientError::Conflict("delete precondition failed".into()));
        }
        let object = st.commit(key, v, true);
        Ok(pb::DeleteResponse {
            object: Some(object),
            deleted: true,
        })
    }
}

impl FakeApi {
    fn do_bind(&self, req: pb::BindRequest) -> Result<pb::Object, ClientError> {
        let mut st = self.lock();
        st.enter(Op::Bind)?;
        if req.node_name.is_empty() {
            return Err(ClientError::Invalid("target.name: Required value".into()));
        }
        let ns = if req.namespace.is_empty() {
            "default".to_string()
        } else {
            req.namespace
        };
        let key = ("v1/Pod".to_string(), ns, req.name);
        let cur = st.objects.get(&key).ok_or_else(|| not_found(&key))?;
        let mut v = parse(&cur.json)?;
        if !req.uid.is_empty() && meta::uid(&v) != req.uid {
            return Err(ClientError::Conflict(format!(
                "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                req.uid,
                meta::uid(&v)
            )));
        }
        if meta::is_deleting(&v) {
            return Err(ClientError::Conflict(format!(
                "pod {} is being deleted, cannot be assigned to a host",
                key.2
            )));
        }
        let current = v
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !current.is_empty() {
            return Err(ClientError::Conflict(format!(
                "pod {} is already assigned to node \"{current}\"",
                key.2
            )));
        }
        if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), Value::String(req.node_name));
        }
        Ok(st.commit(key, v, false))
    }
}

/// Runs a synchronous fake operation as an already-completed future.
fn ready<T: Send + 'static>(r: Result<T, ClientError>) -> ApiFuture<'static, T> {
    Box::pin(std::future::ready(r))
}

impl Api for FakeApi {
    fn get(&self, req: pb::GetRequest) -> ApiFuture<'_, pb::Object> {
        ready(self.do_get(req))
    }

    fn list(&self, req: pb::ListRequest) -> ApiFuture<'_, pb::ListResponse> {
        ready(self.do_list(req))
    }

    fn watch(&self, req: pb::WatchRequest) -> ApiFuture<'_, WatchStream> {
        ready(self.do_watch(req))
    }

    fn create(&self, req: pb::CreateRequest) -> ApiFuture<'_, pb::Object> {
        ready(self.do_create(req))
    }

    fn update(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        ready(self.do_update(req, Op::Update))
    }

    fn update_status(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        ready(self.do_update(req, Op::UpdateStatus))
    }

    fn patch(&self, req: pb::PatchRequest) -> ApiFuture<'_, pb::Object> {
        ready(self.do_patch(req))
    }

    fn delete(&self, req: pb::DeleteRequest) -> ApiFuture<'_, pb::DeleteResponse> {
        ready(self.do_delete(req))
    }

    fn bind(&self, req: pb::BindRequest) -> ApiFuture<'_, pb::Object> {
        ready(self.do_bind(req))
    }
}
