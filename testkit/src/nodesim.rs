//! A node simulator: registers Nodes and plays the node agent for the pods bound to them,
//! without containers, so controller tests can run hundreds of pods in one process.
//!
//! What it does, per pod bound to one of its nodes (Kubernetes' kubelet, reduced to status):
//! - a new pod becomes Running with a pod IP, and by its [`Fate`] Ready (the default), never
//!   ready, crash-looping (Running, not ready, restartCount rising, CrashLoopBackOff), or
//!   finished (Succeeded or Failed, each container terminated with exit code 0 or 1);
//! - a pod being deleted is confirmed at once (a delete with grace period 0), as the node agent
//!   does after stopping its containers;
//! - a pod whose node it stopped ([`NodeSim::stop_node`]) is left as it is, as on a dead node.
//!
//! Each live node renews its heartbeat Lease `kube-node-lease/<node>` every
//! [`LEASE_RENEW_INTERVAL`] (or [`NodeSim::set_lease_interval`]) on the simulator's clock, as
//! the node agent does, so the node
//! lifecycle controller keeps it Ready; a stopped node's Lease goes stale. [`NodeSim::resume_node`]
//! brings a stopped node back: it reports Ready again, renews its Lease, reports its pods'
//! status afresh and confirms the deletions that waited.
//!
//! The fate of a pod comes from the function given to [`NodeSim::start_with`]; the default
//! ([`fate_by_image`]) reads the first container's image name: `...crash...`,
//! `...notready...`, `...succeed...`, `...fail...`, anything else Ready. Status writes are merge
//! patches of the status subresource, as the node agent writes them. The simulator works on the
//! real API server and on the client's fake alike (it only uses the `Api` trait). A test turns
//! a running pod Ready or not with [`NodeSim::set_ready`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rudder_client::Api;
use rudder_client::cache::CachedObject;
use rudder_client::clock::SharedClock;
use rudder_client::conn::kind_ref;
use rudder_client::informer::InformerFactory;
use rudder_client::proto as pb;
use rudder_client::reflector::ReflectorEvent;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// What becomes of a simulated pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Ready,
    NeverReady,
    CrashLoop,
    Succeed,
    Fail,
}

/// The default fate: by the first container's image name.
pub fn fate_by_image(pod: &Value) -> Fate {
    let image = pod
        .pointer("/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap_or("");
    if image.contains("crash") {
        Fate::CrashLoop
    } else if image.contains("notready") {
        Fate::NeverReady
    } else if image.contains("succeed") {
        Fate::Succeed
    } else if image.contains("fail") {
        Fate::Fail
    } else {
        Fate::Ready
    }
}

type FateFn = Arc<dyn Fn(&Value) -> Fate + Send + Sync>;

/// A fate under the test's control: pods become Ready while the returned flag is set (it
/// starts set) and never ready otherwise, so a test can hold replacements unready.
pub fn ready_while_set() -> (Arc<std::sync::atomic::AtomicBool>, FateFn) {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = Arc::clone(&flag);
    let fate: FateFn = Arc::new(move |_| {
        if f.load(std::sync::atomic::Ordering::SeqCst) {
            Fate::Ready
        } else {
            Fate::NeverReady
        }
    });
    (flag, fate)
}

/// How often a live node renews its Lease (the node agent's default is 10 s; the node
/// lifecycle controller's grace period is 40 s).
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(3);

struct Shared {
    api: Arc<dyn Api>,
    clock: SharedClock,
    fate: FateFn,
    /// Nodes that act; a stopped node's pods are left alone.
    live: Mutex<BTreeSet<String>>,
    /// Pod uid → restarts so far, for crash loops.
    restarts: Mutex<HashMap<String, i64>>,
    lease_every: Mutex<Duration>,
    lease_changed: tokio::sync::Notify,
    index: HashMap<String, usize>,
}

/// Simulated nodes; stops on drop.
pub struct NodeSim {
    shared: Arc<Shared>,
    pods: rudder_client::cache::Reader,
    cancel: CancellationToken,
}

impl Drop for NodeSim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Ready node with room for plenty of pods.
pub fn node_json(name: &str) -> Value {
    let capacity =
        json!({"cpu": "32", "memory": "128Gi", "pods": "250", "ephemeral-storage": "500Gi"});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "status": {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "simulated node"},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "simulated node"},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "simulated node"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated node"},
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        },
    })
}

impl NodeSim {
    /// Registers `nodes` and starts simulating them with [`fate_by_image`].
    pub async fn start(
        api: Arc<dyn Api>,
        clock: SharedClock,
        nodes: &[&str],
    ) -> Result<NodeSim, rudder_client::ClientError> {
        Self::start_with(api, clock, nodes, Arc::new(fate_by_image)).await
    }

    pub async fn start_with(
        api: Arc<dyn Api>,
        clock: SharedClock,
        nodes: &[&str],
        fate: FateFn,
    ) -> Result<NodeSim, rudder_client::ClientError> {
        for n in nodes {
            let req = pb::CreateRequest {
                kind: Some(kind_ref("v1", "Node")),
                namespace: String::new(),
                json: Bytes::from(node_json(n).to_string()),
                options: None,
            };
            match api.create(req).await {
                Ok(_) | Err(rudder_client::ClientError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
            // A create may drop the status (the status subresource owns it): write it apart.
            report_ready(api.as_ref(), &clock, n).await?;
        }
        let shared = Arc::new(Shared {
            api: Arc::clone(&api),
            clock: Arc::clone(&clock),
            fate,
            live: Mutex::new(nodes.iter().map(|n| n.to_string()).collect()),
            restarts: Mutex::new(HashMap::new()),
            lease_every: Mutex::new(LEASE_RENEW_INTERVAL),
            lease_changed: tokio::sync::Notify::new(),
            index: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.to_string(), i + 1))
                .collect(),
        });
        let cancel = CancellationToken::new();
        let factory = InformerFactory::new(api, clock);
        let pods = factory.for_kind("v1", "Pod");
        let mut sub = pods.subscribe();
        factory.start(&cancel);
        let (s, c) = (Arc::clone(&shared), cancel.clone());
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = c.cancelled() => return,
                    ev = sub.recv() => ev,
                };
                let Some(ev) = ev else { return };
                let pods: Vec<Arc<CachedObject>> = match ev {
                    ReflectorEvent::Added(p) => vec![p],
                    ReflectorEvent::Updated { new, .. } => vec![new],
                    ReflectorEvent::Restarted(all) => all,
                    ReflectorEvent::Deleted(_) => continue,
                };
                for p in pods {
                    s.act(&p).await;
                }
            }
        });
        // Heartbeats: every live node's Lease, on the simulator's clock.
        let (s, c) = (Arc::clone(&shared), cancel.clone());
        tokio::spawn(async move {
            loop {
                let live: Vec<String> = lock(&s.live).iter().cloned().collect();
                for n in live {
                    if let Err(e) = renew_lease(s.api.as_ref(), &n, s.clock.now()).await {
                        tracing::warn!(node = %n, error = %e, "node simulator: lease renewal failed");
                    }
                }
                let every = *lock(&s.lease_every);
                tokio::select! {
                    _ = c.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                    _ = s.lease_changed.notified() => {}
                }
            }
        });
        // Crash loops restart on a timer, as the node agent's back-off would.
        let (s, c) = (Arc::clone(&shared), cancel.clone());
        let pods_reader = pods.reader();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = c.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                for p in pods_reader.list() {
                    if s.owns(&p) && (s.fate)(&p.value) == Fate::CrashLoop && !p.is_deleting() {
                        s.crash(&p).await;
                    }
                }
            }
        });
        Ok(NodeSim {
            shared,
            pods: pods.reader(),
            cancel,
        })
    }

    /// Renews Leases every `every` from now on (tests with a short node grace period need
    /// renewals well within it).
    pub fn set_lease_interval(&self, every: Duration) {
        *lock(&self.shared.lease_every) = every;
        self.shared.lease_changed.notify_one();
    }

    /// Stops acting for `node`, as if it died: its Lease is no longer renewed, its pods keep
    /// their last status and deletions are not confirmed.
    pub fn stop_node(&self, node: &str) {
        lock(&self.shared.live).remove(node);
    }

    /// Brings a stopped node back, as a node agent that restarts: the node reports Ready,
    /// renews its Lease, reports its pods' status afresh and confirms pending deletions.
    pub async fn resume_node(&self, node: &str) -> Result<(), rudder_client::ClientError> {
        lock(&self.shared.live).insert(node.to_string());
        report_ready(self.shared.api.as_ref(), &self.shared.clock, node).await?;
        renew_lease(self.shared.api.as_ref(), node, self.shared.clock.now()).await?;
        let mine = self
            .pods
            .by_index(rudder_client::cache::INDEX_NODE_NAME, node);
        for p in mine {
            if p.is_deleting() {
                self.shared.act(&p).await;
            } else {
                let status = self.shared.first_status(&p);
                self.shared.patch(&p, status).await;
            }
        }
        Ok(())
    }
}

/// Writes the node's Ready status (every condition healthy, a fresh heartbeat).
async fn report_ready(
    api: &dyn Api,
    clock: &SharedClock,
    node: &str,
) -> Result<(), rudder_client::ClientError> {
    let mut status = node_json(node)["status"].clone();
    let now = format!("{:.0}", clock.now());
    if let Some(conds) = status["conditions"].as_array_mut() {
        for c in conds {
            c["lastHeartbeatTime"] = json!(now);
            c["lastTransitionTime"] = json!(now);
        }
    }
    api.patch(pb::PatchRequest {
        kind: Some(kind_ref("v1", "Node")),
        namespace: String::new(),
        name: node.to_string(),
        patch_type: pb::PatchType::Merge as i32,
        patch: Bytes::from(json!({ "status": status }).to_string()),
        status: true,
        options: None,
    })
    .await
    .map(|_| ())
}

/// Renews (or creates) the node's Lease `kube-node-lease/<node>`, as the node agent does.
pub async fn renew_lease(
    api: &dyn Api,
    node: &str,
    now: jiff::Timestamp,
) -> Result<(), rudder_client::ClientError> {
    let spec = json!({"holderIdentity": node, "leaseDurationSeconds": 40,
        "renewTime": format!("{now:.6}")});
    let kind = kind_ref("coordination.k8s.io/v1", "Lease");
    let req = pb::PatchRequest {
        kind: Some(kind.clone()),
        namespace: "kube-node-lease".into(),
        name: node.to_string(),
        patch_type: pb::PatchType::Merge as i32,
        patch: Bytes::from(json!({ "spec": spec }).to_string()),
        status: false,
        options: None,
    };
    match api.patch(req).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"}, "spec": spec});
            let req = pb::CreateRequest {
                kind: Some(kind),
                namespace: "kube-node-lease".into(),
                json: Bytes::from(lease.to_string()),
                options: None,
            };
            match api.create(req).await {
                Ok(_) | Err(rudder_client::ClientError::AlreadyExists(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

impl Shared {
    fn owns(&self, pod: &CachedObject) -> bool {
        let node = pod
            .value
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        !node.is_empty() && lock(&self.live).contains(node)
    }

    async fn act(&self, pod: &CachedObject) {
        if !self.owns(pod) {
            return;
        }
        if pod.is_deleting() {
            let req = pb::DeleteRequest {
                kind: Some(kind_ref("v1", "Pod")),
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                precondition_uid: pod.uid().to_string(),
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            let _ = self.api.delete(req).await;
            return;
        }
        let phase = pod
            .value
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if phase.is_empty() || phase == "Pending" {
            let status = self.first_status(pod);
            self.patch(pod, status).await;
        }
    }

    fn pod_ip(&self, pod: &CachedObject) -> String {
        let node = pod
            .value
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let n = self.index.get(node).copied().unwrap_or(0) % 250;
        let h = pod
            .uid()
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        format!("10.244.{n}.{}", 2 + h % 250)
    }

    fn first_status(&self, pod: &CachedObject) -> Value {
        let now = format!("{:.0}", self.clock.now());
        let fate = (self.fate)(&pod.value);
        let ready = fate == Fate::Ready;
        let cond = |ty: &str, ok: bool| json!({"type": ty, "status": if ok {"True"} else {"False"}, "lastTransitionTime": now});
        let containers: Vec<Value> = pod
            .value
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let name = c.get("name").cloned().unwrap_or(Value::Null);
                        let image = c.get("image").cloned().unwrap_or(Value::Null);
                        let state = match fate {
                            Fate::Succeed | Fate::Fail => json!({"terminated": {
                                "exitCode": if fate == Fate::Succeed {0} else {1},
                                "reason": if fate == Fate::Succeed {"Completed"} else {"Error"},
                                "startedAt": now, "finishedAt": now}}),
                            Fate::CrashLoop => json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}}),
                            _ => json!({"running": {"startedAt": now}}),
                        };
                        json!({"name": name, "image": image, "imageID": "", "ready": ready,
                               "restartCount": 0, "started": ready, "state": state,
                               "containerID": format!("sim://{}", pod.uid())})
                    })
                    .collect()
            })
            .unwrap_or_default();
        let phase = match fate {
            Fate::Succeed => "Succeeded",
            Fate::Fail => "Failed",
            _ => "Running",
        };
        json!({
            "phase": phase,
            "podIP": self.pod_ip(pod),
            "podIPs": [{"ip": self.pod_ip(pod)}],
            "hostIP": "127.0.0.1",
            "startTime": now,
            "conditions": [cond("PodScheduled", true), cond("Initialized", true), cond("ContainersReady", ready), cond("Ready", ready)],
            "containerStatuses": containers,
        })
    }

    async fn crash(&self, pod: &CachedObject) {
        let n = {
            let mut r = lock(&self.restarts);
            let n = r.entry(pod.uid().to_string()).or_insert(0);
            *n += 1;
            *n
        };
        let mut status = self.first_status(pod);
        if let Some(cs) = status
            .get_mut("containerStatuses")
            .and_then(Value::as_array_mut)
        {
            for c in cs {
                c["restartCount"] = json!(n);
            }
        }
        self.patch(pod, status).await;
    }

    async fn patch(&self, pod: &CachedObject, status: Value) {
        let req = pod_status_patch(&pod.namespace, &pod.name, &status);
        if let Err(e) = self.api.patch(req).await
            && !e.is_not_found()
        {
            tracing::warn!(pod = %pod.key(), error = %e, "node simulator: status write failed");
        }
    }
}

// === Readiness by hand ===

impl NodeSim {
    /// Turns a running pod Ready or not, as a readiness probe that starts passing or failing
    /// would: its `Ready` and `ContainersReady` conditions (with a fresh transition time when
    /// they change) and its containers' `ready` flags. The simulator never flips them back by
    /// itself. Reads the pod from the server, so it works right after the pod changed.
    pub async fn set_ready(
        &self,
        namespace: &str,
        name: &str,
        ready: bool,
    ) -> Result<(), rudder_client::ClientError> {
        let api = self.shared.api.as_ref();
        let got = api
            .get(pb::GetRequest {
                kind: Some(kind_ref("v1", "Pod")),
                namespace: namespace.to_string(),
                name: name.to_string(),
                allow_stale: false,
            })
            .await?;
        let pod = CachedObject::from_wire(&got).ok_or_else(|| {
            rudder_client::ClientError::Other(format!("pod {namespace}/{name} is unreadable"))
        })?;
        let now = format!("{:.0}", self.shared.clock.now());
        let flag = if ready { "True" } else { "False" };
        let list = |p: &str| {
            pod.value
                .pointer(p)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let mut conditions = list("/status/conditions");
        for c in conditions.iter_mut() {
            let ty = c.get("type").and_then(Value::as_str).unwrap_or("");
            if (ty == "Ready" || ty == "ContainersReady") && c["status"] != flag {
                c["status"] = json!(flag);
                c["lastTransitionTime"] = json!(now);
            }
        }
        let mut containers = list("/status/containerStatuses");
        for c in containers.iter_mut() {
            c["ready"] = json!(ready);
        }
        let status = json!({"conditions": conditions, "containerStatuses": containers});
        api.patch(pod_status_patch(namespace, name, &status))
            .await?;
        Ok(())
    }
}

/// A merge patch of a pod's status subresource, as the node agent writes it.
fn pod_status_patch(namespace: &str, name: &str, status: &Value) -> pb::PatchRequest {
    pb::PatchRequest {
        kind: Some(kind_ref("v1", "Pod")),
        namespace: namespace.to_string(),
        name: name.to_string(),
        patch_type: pb::PatchType::Merge as i32,
        patch: Bytes::from(json!({ "status": status }).to_string()),
        status: true,
        options: None,
    }
}
