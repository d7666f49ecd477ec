//! The deterministic state machine: commands in, object versions and events out.
//!
//! Every write is a [`Command`] carrying everything its effect depends on (the object bytes, uid
//! and timestamps were fixed by the proposer). [`State::evaluate`] checks only preconditions
//! (existence, resourceVersion, namespace) against the current state, so applying the same log
//! to the same state always gives the same result — on one master today, on every Raft member
//! later. The log position of the command becomes the object's `resourceVersion`.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

/// Key-value string pairs (labels, selectable fields), sorted where lookups need it.
pub type Pairs = Vec<(String, String)>;

/// What the store indexes of an object besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct ObjIndex {
    pub labels: Pairs,
    pub fields: Pairs,
    pub claims: Vec<String>,
}

/// Group and kind, e.g. `apps/Deployment`, `/Pod` for the core group.
pub type KindKey = Arc<str>;

/// Where an object lives: kind, namespace ("" for cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub kind: KindKey,
    pub namespace: String,
    pub name: String,
}

/// The kind key of namespaces, which the state machine consults for namespaced creates.
pub const NAMESPACE_KIND: &str = "/Namespace";

/// One stored version of an object.
#[derive(Debug)]
pub struct StoredObject {
    pub rv: u64,
    /// The object's JSON, `metadata.resourceVersion` included.
    pub json: Bytes,
    /// Labels, sorted by key, for label selectors without parsing the JSON.
    pub labels: Vec<(String, String)>,
    /// Values of the kind's selectable fields, for field selectors.
    pub fields: Vec<(String, String)>,
    pub deleting: bool,
    /// Unique resources this object holds (a Service's cluster IP, a node port): no two
    /// objects may hold the same claim.
    pub claims: Vec<String>,
}

impl StoredObject {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.labels[i].1.as_str())
    }

    pub fn field(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The object must not exist (create).
    Absent,
    /// The object must exist at exactly this version.
    Version(u64),
}

/// A write, as appended to the log.
#[derive(Debug, Clone)]
pub enum Command {
    Put {
        key: ObjKey,
        expect: Expect,
        /// JSON without `metadata.resourceVersion`; the state machine adds it.
        object: Bytes,
        labels: Vec<(String, String)>,
        fields: Vec<(String, String)>,
        deleting: bool,
        claims: Vec<String>,
    },
    Delete {
        key: ObjKey,
        expect: Expect,
    },
}

impl Command {
    pub fn key(&self) -> &ObjKey {
        match self {
            Command::Put { key, .. } | Command::Delete { key, .. } => key,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// The effect of one applied command, shared by the state, the history and every watcher.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub key: ObjKey,
    /// The new version; for `Deleted`, the last version re-stamped with the deletion's version.
    pub object: Arc<StoredObject>,
    /// The version before this change, if any.
    pub prev: Option<Arc<StoredObject>>,
    /// `prev` re-stamped with this event's version, made once on first use and shared by every
    /// watcher the change takes out of its selection.
    prev_restamped: std::sync::OnceLock<Option<Arc<StoredObject>>>,
}

impl Event {
    pub fn new(
        rv: u64,
        kind: EventType,
        key: ObjKey,
        object: Arc<StoredObject>,
        prev: Option<Arc<StoredObject>>,
    ) -> Event {
        Event {
            rv,
            kind,
            key,
            object,
            prev,
            prev_restamped: std::sync::OnceLock::new(),
        }
    }

    /// The version before this change with this change's `resourceVersion`: what a watcher
    /// whose selector the object just left receives as DELETED, as Kubernetes' watch cache does.
    pub fn prev_at_this_version(&self) -> Option<&Arc<StoredObject>> {
        self.prev_restamped
            .get_or_init(|| {
                self.prev.as_ref().map(|p| {
                    Arc::new(StoredObject {
                        rv: self.rv,
                        json: set_resource_version(&p.json, self.rv),
                        labels: p.labels.clone(),
                        fields: p.fields.clone(),
                        deleting: p.deleting,
                        claims: p.claims.clone(),
                    })
                })
            })
            .as_ref()
    }
}

/// Why a command's preconditions failed. Deterministic: every member decides the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("the object has been modified (stored version {stored}, expected {expected})")]
    Conflict { stored: u64, expected: u64 },
    #[error("namespace {0} not found")]
    NamespaceNotFound(String),
    #[error("namespace {0} is being terminated")]
    NamespaceTerminating(String),
    #[error("namespace {0} still has content")]
    NamespaceNotEmpty(String),
    #[error("{0} is already allocated")]
    ClaimTaken(String),
}

/// Objects of one kind by namespace and name: a persistent map, so a clone shares every node
/// and costs O(1); a change copies only the path to the changed entry.
type Objects = imbl::OrdMap<(String, String), Arc<StoredObject>>;

/// The objects of one kind; cloning is O(1), and `ptr_eq` tells whether the kind changed.
pub type KindObjects = Objects;

/// The current version of every object.
///
/// Cloning is O(1) (persistent maps): the writer publishes a clone after every commit as the
/// immutable snapshot readers use, and goes on changing its own copy.
#[derive(Default, Clone)]
pub struct State {
    kinds: imbl::HashMap<KindKey, Objects>,
    /// Which object holds each claim.
    claims: imbl::HashMap<String, ObjKey>,
    /// Position of the last applied command.
    pub rv: u64,
}

/// Pending effects of commands earlier in the same batch, not yet in [`State`].
#[derive(Default)]
pub struct Overlay {
    objects: HashMap<ObjKey, Option<Arc<StoredObject>>>,
    /// Claims taken (`Some`) or released (`None`) by the batch so far.
    claims: HashMap<String, Option<ObjKey>>,
}

impl Overlay {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an evaluated event so later commands of the batch see it.
    pub fn record(&mut self, ev: &Event) {
        if let Some(prev) = &ev.prev {
            for c in &prev.claims {
                self.claims.insert(c.clone(), None);
            }
        }
        if ev.kind == EventType::Deleted {
            self.objects.insert(ev.key.clone(), None);
        } else {
            for c in &ev.object.claims {
                self.claims.insert(c.clone(), Some(ev.key.clone()));
            }
            self.objects.insert(ev.key.clone(), Some(ev.object.clone()));
        }
    }
}

impl State {
    /// The objects of one kind (`group/Kind`), if any exist.
    pub fn objects_of(&self, kind: &str) -> Option<&KindObjects> {
        self.kinds.get(kind)
    }

    pub fn get(&self, key: &ObjKey) -> Option<&Arc<StoredObject>> {
        self.kinds
            .get(&key.kind)?
            .get(&(key.namespace.clone(), key.name.clone()))
    }

    fn get_with<'a>(&'a self, overlay: &'a Overlay, key: &ObjKey) -> Option<&'a Arc<StoredObject>> {
        match overlay.objects.get(key) {
            Some(pending) => pending.as_ref(),
            None => self.get(key),
        }
    }

    /// Who holds `claim`, counting the batch's pending changes.
    fn claim_holder<'a>(&'a self, overlay: &'a Overlay, claim: &str) -> Option<&'a ObjKey> {
        match overlay.claims.get(claim) {
            Some(pending) => pending.as_ref(),
            None => self.claims.get(claim),
        }
    }

    /// Whether `claim` is held by an object other than `key`.
    pub fn claim_taken(&self, claim: &str, key: &ObjKey) -> bool {
        self.claims.get(claim).is_some_and(|k| k != key)
    }

    /// Every object, kind by kind, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (ObjKey, &Arc<StoredObject>)> + '_ {
        self.kinds.iter().flat_map(|(kind, objs)| {
            objs.iter().map(move |((ns, name), o)| {
                (
                    ObjKey {
                        kind: kind.clone(),
                        namespace: ns.clone(),
                        name: name.clone(),
                    },
                    o,
                )
            })
        })
    }

    /// Number of objects of every kind.
    pub fn len(&self) -> usize {
        self.kinds.values().map(imbl::OrdMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Objects of a kind in key order, optionally in one namespace, starting after `after`.
    pub fn range<'a>(
        &'a self,
        kind: &str,
        namespace: &'a str,
        after: Option<&(String, String)>,
    ) -> impl Iterator<Item = (&'a (String, String), &'a Arc<StoredObject>)> + 'a {
        let start = match after {
            Some(k) => Bound::Excluded(k.clone()),
            None if namespace.is_empty() => Bound::Unbounded,
            None => Bound::Included((namespace.to_string(), String::new())),
        };
        self.kinds
            .get(kind)
            .into_iter()
            .flat_map(move |m| m.range((start.clone(), Bound::Unbounded)))
            .take_while(move |((ns, _), _)| namespace.is_empty() || ns == namespace)
    }

    /// Whether any object other than the namespace itself lives in `namespace`.
    pub fn namespace_has_content(&self, namespace: &str) -> bool {
        self.kinds.iter().any(|(kind, objs)| {
            kind.as_ref() != NAMESPACE_KIND
                && objs
                    .range((namespace.to_string(), String::new())..)
                    .next()
                    .is_some_and(|((ns, _), _)| ns == namespace)
        })
    }

    /// Whether `namespace` holds anything, counting the batch's pending changes.
    fn namespace_has_content_with(&self, overlay: &Overlay, namespace: &str) -> bool {
        let pending_add = overlay.objects.iter().any(|(k, v)| {
            v.is_some() && k.namespace == namespace && k.kind.as_ref() != NAMESPACE_KIND
        });
        pending_add
            || self.kinds.iter().any(|(kind, objs)| {
                kind.as_ref() != NAMESPACE_KIND
                    && objs
                        .range((namespace.to_string(), String::new())..)
                        .take_while(|((ns, _), _)| ns == namespace)
                        // Skips only what the batch deleted, so this stops at the first survivor.
                        .any(|((ns, name), _)| {
                            let k = ObjKey {
                                kind: kind.clone(),
                                namespace: ns.clone(),
                                name: name.clone(),
                            };
                            !matches!(overlay.objects.get(&k), Some(None))
                        })
            })
    }

    /// Checks a command's preconditions at log position `index` and computes its effect, without
    /// changing the state. Earlier commands of the same batch are seen through `overlay`.
    pub fn evaluate(
        &self,
        overlay: &Overlay,
        index: u64,
        cmd: &Command,
    ) -> Result<Event, ApplyError> {
        let key = cmd.key();
        let current = self.get_with(overlay, key);
        match cmd {
            Command::Put {
                expect,
                object,
                labels,
                fields,
                deleting,
                claims,
                ..
            } => {
                check_expect(current, *expect)?;
                if let Some(c) = claims
                    .iter()
                    .find(|c| self.claim_holder(overlay, c).is_some_and(|k| k != key))
                {
                    return Err(ApplyError::ClaimTaken(c.clone()));
                }
                if current.is_none() && !key.namespace.is_empty() {
                    let ns_key = ObjKey {
                        kind: Arc::from(NAMESPACE_KIND),
                        namespace: String::new(),
                        name: key.namespace.clone(),
                    };
                    match self.get_with(overlay, &ns_key) {
                        None => return Err(ApplyError::NamespaceNotFound(key.namespace.clone())),
                        Some(ns) if ns.deleting => {
                            return Err(ApplyError::NamespaceTerminating(key.namespace.clone()));
                        }
                        Some(_) => {}
                    }
                }
                let stored = Arc::new(StoredObject {
                    rv: index,
                    json: set_resource_version(object, index),
                    labels: labels.clone(),
                    fields: fields.clone(),
                    deleting: *deleting,
                    claims: claims.clone(),
                });
                let kind = if current.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                Ok(Event::new(
                    index,
                    kind,
                    key.clone(),
                    stored,
                    current.cloned(),
                ))
            }
            Command::Delete { expect, .. } => {
                check_expect(current, *expect)?;
                let Some(cur) = current else {
                    return Err(ApplyError::NotFound);
                };
                // The delete was decided on an empty namespace, but a create may have committed
                // since (or earlier in this batch): removing the namespace now would orphan it.
                if key.kind.as_ref() == NAMESPACE_KIND
                    && self.namespace_has_content_with(overlay, &key.name)
                {
                    return Err(ApplyError::NamespaceNotEmpty(key.name.clone()));
                }
                let last = Arc::new(StoredObject {
                    rv: index,
                    json: set_resource_version(&cur.json, index),
                    labels: cur.labels.clone(),
                    fields: cur.fields.clone(),
                    deleting: true,
                    claims: cur.claims.clone(),
                });
                Ok(Event::new(
                    index,
                    EventType::Deleted,
                    key.clone(),
                    last,
                    Some(cur.clone()),
                ))
            }
        }
    }

    /// Applies an evaluated event.
    pub fn commit(&mut self, ev: &Event) {
        let objs = self.kinds.entry(ev.key.kind.clone()).or_default();
        let k = (ev.key.namespace.clone(), ev.key.name.clone());
        if let Some(prev) = &ev.prev {
            for c in &prev.claims {
                self.claims.remove(c);
            }
        }
        if ev.kind != EventType::Deleted {
            for c in &ev.object.claims {
                self.claims.insert(c.clone(), ev.key.clone());
            }
        }
        match ev.kind {
            EventType::Deleted => {
                objs.remove(&k);
            }
            _ => {
                objs.insert(k, ev.object.clone());
            }
        }
        self.rv = self.rv.max(ev.rv);
    }

    /// Loads an object read from storage at start-up.
    pub fn load(&mut self, key: ObjKey, obj: Arc<StoredObject>) {
        self.rv = self.rv.max(obj.rv);
        for c in &obj.claims {
            self.claims.insert(c.clone(), key.clone());
        }
        self.kinds
            .entry(key.kind)
            .or_default()
            .insert((key.namespace, key.name), obj);
    }
}

fn check_expect(current: Option<&Arc<StoredObject>>, expect: Expect) -> Result<(), ApplyError> {
    match (current, expect) {
        (Some(_), Expect::Absent) => Err(ApplyError::AlreadyExists),
        (None, Expect::Version(_)) => Err(ApplyError::NotFound),
        (Some(c), Expect::Version(v)) if c.rv != v => Err(ApplyError::Conflict {
            stored: c.rv,
            expected: v,
        }),
        _ => Ok(()),
    }
}

/// Returns `json` with `metadata.resourceVersion` set to `rv`, as the first key of `metadata`.
///
/// Done on bytes rather than by re-serialising: the proposer already produced the JSON once, and
/// this runs for every applied command. The scan tracks strings and nesting so that only the
/// top-level `metadata` key matches. An existing leading `resourceVersion` (written by an earlier
/// call) is replaced.
pub fn set_resource_version(json: &[u8], rv: u64) -> Bytes {
    let Some(open) = find_top_level_object(json, b"metadata") else {
        return Bytes::copy_from_slice(json);
    };
    let body = &json[open + 1..];
    const PREFIX: &[u8] = b"\"resourceVersion\":\"";
    let mut out = Vec::with_capacity(json.len() + 32);
    out.extend_from_slice(&json[..=open]);
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(rv.to_string().as_bytes());
    out.push(b'"');
    let rest = if let Some(after) = body.strip_prefix(PREFIX) {
        // Skip the old value and its closing quote.
        let end = after
            .iter()
            .position(|&b| b == b'"')
            .map_or(after.len(), |p| p + 1);
        &after[end..]
    } else {
        body
    };
    let rest_trim = rest
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(rest, |p| &rest[p..]);
    if !rest_trim.starts_with(b"}") && !rest_trim.starts_with(b",") {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Bytes::from(out)
}

/// Byte offset of the `{` that opens the value of top-level key `name`, if that value is an object.
fn find_top_level_object(json: &[u8], name: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    if json[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let s = &json[start..i.min(json.len())];
                i += 1;
                if depth == 1 && s == name {
                    let mut j = i;
                    while j < json.len() && json[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if j < json.len() && json[j] == b':' {
                        j += 1;
                        while j < json.len() && json[j].is_ascii_whitespace() {
                            j += 1;
                        }
                        if j < json.len() && json[j] == b'{' {
                            return Some(j);
                        }
                    }
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn resource_version_is_spliced_at_top_level_only() {
        let j = br#"{"apiVersion":"apps/v1","data":{"metadata":{"x":1},"s":"\"metadata\":{"},"kind":"K","metadata":{"name":"a"}}"#;
        let out = set_resource_version(j, 42);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["data"]["metadata"], serde_json::json!({"x":1}));
        let again = set_resource_version(&out, 43);
        let v: Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "43");
        assert_eq!(v["metadata"]["name"], "a");
        let empty = set_resource_version(br#"{"metadata":{}}"#, 7);
        let v: Value = serde_json::from_slice(&empty).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "7");
    }

    fn put(kind: &str, ns: &str, name: &str, expect: Expect) -> Command {
        Command::Put {
            key: ObjKey {
                kind: Arc::from(kind),
                namespace: ns.into(),
                name: name.into(),
            },
            expect,
            object: Bytes::from_static(br#"{"metadata":{"name":"x"}}"#),
            labels: vec![],
            fields: vec![],
            deleting: false,
            claims: vec![],
        }
    }

    #[test]
    fn preconditions_are_checked_deterministically() {
        let mut s = State::default();
        let ov = Overlay::new();
        let e = s
            .evaluate(&ov, 1, &put("/Pod", "default", "p", Expect::Absent))
            .unwrap_err();
        assert_eq!(e, ApplyError::NamespaceNotFound("default".into()));
        let ev = s
            .evaluate(&ov, 1, &put(NAMESPACE_KIND, "", "default", Expect::Absent))
            .unwrap();
        s.commit(&ev);
        let ev = s
            .evaluate(&ov, 2, &put("/Pod", "default", "p", Expect::Absent))
            .unwrap();
        assert_eq!(ev.kind, EventType::Added);
        s.commit(&ev);
        assert_eq!(
            s.evaluate(&ov, 3, &put("/Pod", "default", "p", Expect::Version(1)))
                .unwrap_err(),
            ApplyError::Conflict {
                stored: 2,
                expected: 1
            }
        );
        let ev = s
            .evaluate(&ov, 3, &put("/Pod", "default", "p", Expect::Version(2)))
            .unwrap();
        assert_eq!(ev.kind, EventType::Modified);
        assert_eq!(s.rv, 2);
    }
}

#[cfg(test)]
mod namespace_tests {
    use super::*;

    fn key(kind: &str, ns: &str, name: &str) -> ObjKey {
        ObjKey {
            kind: Arc::from(kind),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn put(k: ObjKey) -> Command {
        Command::Put {
            key: k,
            expect: Expect::Absent,
            object: Bytes::from_static(br#"{"metadata":{"name":"x"}}"#),
            labels: vec![],
            fields: vec![],
            deleting: false,
            claims: vec![],
        }
    }

    /// A state holding namespace `dev` (version 1), and the batch's evaluation of `cmds` in order.
    fn run_batch(state: &State, cmds: &[Command]) -> Vec<Result<Event, ApplyError>> {
        let mut overlay = Overlay::new();
        let mut index = state.rv;
        cmds.iter()
            .map(|c| {
                let r = state.evaluate(&overlay, index + 1, c);
                if let Ok(ev) = &r {
                    index += 1;
                    overlay.record(ev);
                }
                r
            })
            .collect()
    }

    fn with_namespace() -> State {
        let mut s = State::default();
        let ev = s
            .evaluate(&Overlay::new(), 1, &put(key(NAMESPACE_KIND, "", "dev")))
            .unwrap();
        s.commit(&ev);
        s
    }

    fn delete_ns() -> Command {
        Command::Delete {
            key: key(NAMESPACE_KIND, "", "dev"),
            expect: Expect::Version(1),
        }
    }

    #[test]
    fn a_namespace_with_content_cannot_be_deleted_whatever_the_order_in_a_batch() {
        let s = with_namespace();
        // Create first, then the delete that was decided on an empty namespace: refused.
        let r = run_batch(&s, &[put(key("/ConfigMap", "dev", "c")), delete_ns()]);
        assert!(r[0].is_ok());
        assert_eq!(
            r[1].as_ref().unwrap_err(),
            &ApplyError::NamespaceNotEmpty("dev".into())
        );
        // Delete first, then the create: the create finds no namespace.
        let r = run_batch(&s, &[delete_ns(), put(key("/ConfigMap", "dev", "c"))]);
        assert!(r[0].is_ok());
        assert_eq!(
            r[1].as_ref().unwrap_err(),
            &ApplyError::NamespaceNotFound("dev".into())
        );
    }

    #[test]
    fn content_already_committed_or_removed_in_the_batch_is_counted() {
        let mut s = with_namespace();
        let ev = s
            .evaluate(&Overlay::new(), 2, &put(key("/Pod", "dev", "p")))
            .unwrap();
        s.commit(&ev);
        assert_eq!(
            run_batch(&s, &[delete_ns()])[0].as_ref().unwrap_err(),
            &ApplyError::NamespaceNotEmpty("dev".into())
        );
        // The pod's deletion earlier in the same batch empties the namespace.
        let del_pod = Command::Delete {
            key: key("/Pod", "dev", "p"),
            expect: Expect::Version(2),
        };
        let mut del = delete_ns();
        if let Command::Delete { expect, .. } = &mut del {
            *expect = Expect::Version(1);
        }
        let r = run_batch(&s, &[del_pod, del]);
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        // Objects of other namespaces, and namespaces themselves, are not content.
        let mut s = with_namespace();
        let ev = s
            .evaluate(&Overlay::new(), 2, &put(key(NAMESPACE_KIND, "", "dev2")))
            .unwrap();
        s.commit(&ev);
        let ev = s
            .evaluate(&Overlay::new(), 3, &put(key("/Pod", "dev2", "p")))
            .unwrap();
        s.commit(&ev);
        assert!(run_batch(&s, &[delete_ns()])[0].is_ok());
    }
}
