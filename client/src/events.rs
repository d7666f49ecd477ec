//! The event recorder: core/v1 `Event`s about objects, as `kubectl describe` shows them.
//!
//! [`EventRecorder::record`] never blocks and never fails: it stamps the event with the injected
//! clock's wall time and hands it to a background task through a bounded channel; when the
//! channel is full the event is dropped with a log line (and counted in
//! [`EventRecorder::dropped`]), because a slow API server must not stall a controller.
//!
//! The background task aggregates repeats: the same (involved object, type, reason, message)
//! recorded again bumps `count` and `lastTimestamp` of the existing Event with a merge patch
//! instead of creating another. New Events are named `<object name>.<unique hex>` in the
//! object's namespace (`default` for cluster-scoped objects, as Kubernetes does).
//!
//! Caveats: best effort. The aggregation memory is bounded (oldest entries forgotten first) and
//! per process; a failed create is logged and dropped, not retried; if an aggregated Event was
//! deleted meanwhile, a fresh one is created with count 1. The task ends when every recorder
//! handle is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rudder_api::meta;
use rudder_proto as pb;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::Api;
use crate::clock::SharedClock;
use crate::conn::{ClientError, kind_ref};

/// Kubernetes' two event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Aggregated events remembered per process.
const AGGREGATION_CAPACITY: usize = 4096;

/// A handle to record events; clone freely.
#[derive(Clone)]
pub struct EventRecorder {
    tx: mpsc::Sender<Pending>,
    clock: SharedClock,
    dropped: Arc<AtomicU64>,
}

struct Pending {
    involved: Value,
    ty: EventType,
    reason: String,
    message: String,
    at: jiff::Timestamp,
}

/// What makes two events "the same" for aggregation.
type AggKey = (String, EventType, String, String);

struct Aggregated {
    namespace: String,
    name: String,
    count: i64,
}

struct Sink {
    api: Arc<dyn Api>,
    component: String,
    host: String,
    seen: HashMap<AggKey, Aggregated>,
    order: VecDeque<AggKey>,
    seq: u64,
}

/// Event timestamps are `Time`: RFC 3339 with whole seconds.
fn time(t: jiff::Timestamp) -> String {
    format!("{t:.0}")
}

fn object_reference(obj: &Value) -> Value {
    let s = |f: &str| obj.get(f).and_then(Value::as_str).unwrap_or("");
    json!({
        "apiVersion": s("apiVersion"),
        "kind": s("kind"),
        "namespace": meta::namespace(obj),
        "name": meta::name(obj),
        "uid": meta::uid(obj),
        "resourceVersion": meta::str_field(obj, "resourceVersion"),
    })
}

impl EventRecorder {
    /// A recorder for `component` on `host`, with its background task (`capacity` pending
    /// events at most).
    pub fn new(
        api: Arc<dyn Api>,
        component: &str,
        host: &str,
        clock: SharedClock,
        capacity: usize,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let sink = Sink {
            api,
            component: component.into(),
            host: host.into(),
            seen: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
        };
        let task = tokio::spawn(sink.run(rx));
        let recorder = EventRecorder {
            tx,
            clock,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (recorder, task)
    }

    /// Records an event about `obj` (its JSON, with apiVersion, kind and metadata).
    pub fn record(&self, obj: &Value, ty: EventType, reason: &str, message: &str) {
        let pending = Pending {
            involved: object_reference(obj),
            ty,
            reason: reason.into(),
            message: message.into(),
            at: self.clock.now(),
        };
        if let Err(e) = self.tx.try_send(pending) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(reason, message, error = %e, "dropping an event: recorder backlog full or closed");
        }
    }

    pub fn normal(&self, obj: &Value, reason: &str, message: &str) {
        self.record(obj, EventType::Normal, reason, message);
    }

    pub fn warning(&self, obj: &Value, reason: &str, message: &str) {
        self.record(obj, EventType::Warning, reason, message);
    }

    /// Events dropped because the backlog was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Sink {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>) {
        while let Some(p) = rx.recv().await {
            if let Err(e) = self.write(p).await {
                tracing::warn!(error = %e, "could not write an event");
            }
        }
    }

    async fn write(&mut self, p: Pending) -> Result<(), ClientError> {
        let s = |f: &str| p.involved[f].as_str().unwrap_or("").to_string();
        let object_id = format!(
            "{}/{}/{}/{}/{}",
            s("apiVersion"),
            s("kind"),
            s("namespace"),
            s("name"),
            s("uid")
        );
        let key = (object_id, p.ty, p.reason.clone(), p.message.clone());
        if let Some(agg) = self.seen.get_mut(&key) {
            agg.count += 1;
            let patch = json!({"count": agg.count, "lastTimestamp": time(p.at)});
            let req = pb::PatchRequest {
                kind: Some(kind_ref("v1", "Event")),
                namespace: agg.namespace.clone(),
                name: agg.name.clone(),
                patch_type: pb::PatchType::Merge as i32,
                patch: patch.to_string().into_bytes().into(),
                status: false,
                options: None,
            };
            match self.api.patch(req).await {
                Ok(_) => return Ok(()),
                // Deleted meanwhile (events expire): start over with a new one.
                Err(ClientError::NotFound(_)) => {
                    self.seen.remove(&key);
                    self.order.retain(|k| k != &key);
                }
                Err(e) => return Err(e),
            }
        }
        self.create(key, p).await
    }

    async fn create(&mut self, key: AggKey, p: Pending) -> Result<(), ClientError> {
        let namespace = match p.involved["namespace"].as_str() {
            Some(ns) if !ns.is_empty() => ns.to_string(),
            _ => "default".to_string(),
        };
        self.seq += 1;
        let unique = (p.at.as_nanosecond() as u64).wrapping_add(self.seq);
        let object_name = p.involved["name"].as_str().unwrap_or("");
        let name = format!("{object_name}.{unique:x}");
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": p.involved,
            "reason": p.reason,
            "message": p.message,
            "type": p.ty.as_str(),
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component,
            "reportingInstance": self.host,
            "firstTimestamp": time(p.at),
            "lastTimestamp": time(p.at),
            "count": 1,
        });
        let req = pb::CreateRequest {
            kind: Some(kind_ref("v1", "Event")),
            namespace: namespace.clone(),
            json: event.to_string().into_bytes().into(),
            options: None,
        };
        self.api.create(req).await?;
        if self.order.len() >= AGGREGATION_CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.order.push_back(key.clone());
        let agg = Aggregated {
            namespace,
            name,
            count: 1,
        };
        self.seen.insert(key, agg);
        Ok(())
    }
}
