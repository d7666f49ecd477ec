//! The Node object: registration, capacity and allocatable, conditions, and the heartbeat Lease.
//!
//! As kubelet: the agent creates its Node (or takes over an existing one, merging its labels),
//! renews `kube-node-lease/<node>` every `lease_renew` (the heartbeat the node lifecycle
//! controller watches), and writes the Node's status when a condition changes or every
//! `status_report` at the latest. Ready follows the container engine: when it stops answering
//! the node turns NotReady with the engine's error, and Ready again when it returns. The
//! status is also rewritten when the Node's conditions on the server differ from what the
//! agent last wrote (the node lifecycle controller set them Unknown while the agent was cut
//! off), so a node that comes back is Ready again at once.
//!
//! A node without `--pod-cidr` and without `spec.podCIDR` waits (up to `pod_cidr_wait`) for
//! the controller-manager's node IPAM to assign one ([`wait_for_pod_cidr`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rudder_client::Api;
use rudder_client::clock::SharedClock;
use rudder_client::conn::{ClientError, kind_ref};
use rudder_proto as pb;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::host::{HostFacts, HostProbe};
use crate::runtime::ContainerRuntime;

/// Memory, disk and PID headroom under which the node reports pressure (kubelet's default
/// hard eviction thresholds: memory.available < 100Mi, nodefs.available < 10%).
pub const MEMORY_AVAILABLE_MIN: u64 = 100 * 1024 * 1024;
pub const DISK_AVAILABLE_MIN_PERCENT: u64 = 10;
pub const PID_AVAILABLE_MIN_PERCENT: u64 = 5;

/// What the agent registers.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    /// Taints as Kubernetes objects (`{"key","value","effect"}`).
    pub taints: Vec<Value>,
    pub pod_cidr: Option<String>,
    pub reserved_cpu_milli: i64,
    pub reserved_memory: i64,
    pub max_pods: i64,
    pub lease_renew: Duration,
    pub lease_duration_seconds: i64,
    pub status_check: Duration,
    pub status_report: Duration,
    /// How long to wait for node IPAM to set `spec.podCIDR` when none is given.
    pub pod_cidr_wait: Duration,
}

impl NodeConfig {
    pub fn new(name: &str, address: &str) -> Self {
        NodeConfig {
            name: name.to_string(),
            address: address.to_string(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            pod_cidr: None,
            reserved_cpu_milli: 0,
            reserved_memory: 0,
            max_pods: 110,
            lease_renew: Duration::from_secs(10),
            lease_duration_seconds: 40,
            status_check: Duration::from_secs(10),
            status_report: Duration::from_secs(300),
            pod_cidr_wait: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("registering node {node}: {source}")]
    Register { node: String, source: ClientError },
    #[error(
        "node {node} got no pod CIDR within {waited:?}: pass --pod-cidr, set spec.podCIDR on the Node, or run the controller-manager with --allocate-node-cidrs --cluster-cidr"
    )]
    NoPodCidr { node: String, waited: Duration },
    #[error("node {node} has pod CIDR {stored}, not {flag} as --pod-cidr says")]
    PodCidrMismatch {
        node: String,
        stored: String,
        flag: String,
    },
}

/// CPU (millicores) and memory (bytes) the pods may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_milli: i64,
    pub memory: i64,
    pub pods: i64,
}

pub fn allocatable(facts: &HostFacts, cfg: &NodeConfig) -> Allocatable {
    Allocatable {
        cpu_milli: (facts.cpu_milli - cfg.reserved_cpu_milli).max(0),
        memory: (facts.memory_bytes - cfg.reserved_memory).max(0),
        pods: cfg.max_pods,
    }
}

fn kib(bytes: i64) -> String {
    format!("{}Ki", bytes / 1024)
}

fn cpu(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn node_ref() -> pb::KindRef {
    kind_ref("v1", "Node")
}

/// Creates the Node or merges our labels into the existing one; returns the pod CIDR to use,
/// `None` when neither the flag nor the Node has one yet.
pub async fn register(
    api: &dyn Api,
    cfg: &NodeConfig,
    facts: &HostFacts,
) -> Result<Option<String>, NodeError> {
    let err = |source| NodeError::Register {
        node: cfg.name.clone(),
        source,
    };
    let get = pb::GetRequest {
        kind: Some(node_ref()),
        namespace: String::new(),
        name: cfg.name.clone(),
        allow_stale: false,
    };
    let mut labels = cfg.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), cfg.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), facts.arch.clone());
    let existing = match api.get(get).await {
        Ok(o) => Some(rudder_client::api::decode_json(&o).map_err(err)?),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(err(e)),
    };
    let cidr = match existing {
        None => {
            let mut spec = json!({"taints": cfg.taints});
            if let Some(c) = &cfg.pod_cidr {
                spec["podCIDR"] = json!(c);
                spec["podCIDRs"] = json!([c]);
            }
            let node = json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": cfg.name, "labels": labels},
                "spec": spec,
            });
            let req = pb::CreateRequest {
                kind: Some(node_ref()),
                namespace: String::new(),
                json: serde_json::to_vec(&node).unwrap_or_default().into(),
                options: None,
            };
            match api.create(req).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() || matches!(e, ClientError::AlreadyExists(_)) => {}
                Err(e) => return Err(err(e)),
            }
            cfg.pod_cidr.clone()
        }
        Some(node) => {
            let stored = node
                .pointer("/spec/podCIDR")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            let mut patch = json!({"metadata": {"labels": labels}});
            match (&stored, &cfg.pod_cidr) {
                (Some(s), Some(f)) if s != f => {
                    return Err(NodeError::PodCidrMismatch {
                        node: cfg.name.clone(),
                        stored: s.clone(),
                        flag: f.clone(),
                    });
                }
                (None, Some(f)) => {
                    patch["spec"] = json!({"podCIDR": f, "podCIDRs": [f]});
                }
                _ => {}
            }
            let req = pb::PatchRequest {
                kind: Some(node_ref()),
                namespace: String::new(),
                name: cfg.name.clone(),
                patch_type: pb::PatchType::Merge as i32,
                patch: serde_json::to_vec(&patch).unwrap_or_default().into(),
                status: false,
                options: None,
            };
            api.patch(req).await.map_err(err)?;
            stored.or_else(|| cfg.pod_cidr.clone())
        }
    };
    Ok(cidr)
}

/// How often [`wait_for_pod_cidr`] looks at the Node.
pub const POD_CIDR_POLL: Duration = Duration::from_secs(1);

/// Waits until the Node's `spec.podCIDR` is set (by the controller-manager's node IPAM), up to
/// `cfg.pod_cidr_wait`, reading the Node every [`POD_CIDR_POLL`].
pub async fn wait_for_pod_cidr(
    api: &dyn Api,
    cfg: &NodeConfig,
    clock: &SharedClock,
) -> Result<String, NodeError> {
    tracing::info!(
        node = %cfg.name,
        timeout = ?cfg.pod_cidr_wait,
        "no --pod-cidr and no spec.podCIDR yet: waiting for the controller-manager's node IPAM to assign one"
    );
    let deadline = clock.instant() + cfg.pod_cidr_wait;
    loop {
        let get = pb::GetRequest {
            kind: Some(node_ref()),
            namespace: String::new(),
            name: cfg.name.clone(),
            allow_stale: false,
        };
        match api.get(get).await {
            Ok(o) => {
                let cidr = rudder_client::api::decode_json(&o)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/spec/podCIDR")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .filter(|c| !c.is_empty());
                if let Some(c) = cidr {
                    tracing::info!(node = %cfg.name, cidr = %c, "node IPAM assigned the pod CIDR");
                    return Ok(c);
                }
            }
            Err(e) => {
                tracing::warn!(node = %cfg.name, error = %e, "reading the Node for its pod CIDR failed")
            }
        }
        if clock.instant() >= deadline {
            return Err(NodeError::NoPodCidr {
                node: cfg.name.clone(),
                waited: cfg.pod_cidr_wait,
            });
        }
        tokio::time::sleep(POD_CIDR_POLL).await;
    }
}

/// The four conditions from one host sample and the engine's health.
pub fn conditions(
    engine: &Result<String, String>,
    sample: &crate::host::HostSample,
) -> Vec<(String, bool, String, String)> {
    let mem_low = sample.memory_available < MEMORY_AVAILABLE_MIN;
    let disk_low = sample.disk_total > 0
        && sample.disk_available * 100 < sample.disk_total * DISK_AVAILABLE_MIN_PERCENT;
    let pid_low = sample.pid_max > 0
        && (sample.pid_max.saturating_sub(sample.pids_used)) * 100
            < sample.pid_max * PID_AVAILABLE_MIN_PERCENT;
    let ready = match engine {
        Ok(_) => (
            true,
            "KubeletReady".to_string(),
            "rudder-node-agent is posting ready status".to_string(),
        ),
        Err(e) => (
            false,
            "KubeletNotReady".to_string(),
            format!("container runtime is down: {e}"),
        ),
    };
    vec![
        (
            "MemoryPressure".into(),
            mem_low,
            if mem_low {
                "KubeletHasInsufficientMemory"
            } else {
                "KubeletHasSufficientMemory"
            }
            .into(),
            if mem_low {
                "node has insufficient memory available"
            } else {
                "node has sufficient memory available"
            }
            .into(),
        ),
        (
            "DiskPressure".into(),
            disk_low,
            if disk_low {
                "KubeletHasDiskPressure"
            } else {
                "KubeletHasNoDiskPressure"
            }
            .into(),
            if disk_low {
                "node has disk pressure"
            } else {
                "node has no disk pressure"
            }
            .into(),
        ),
        (
            "PIDPressure".into(),
            pid_low,
            if pid_low {
                "KubeletHasInsufficientPID"
            } else {
                "KubeletHasSufficientPID"
            }
            .into(),
            if pid_low {
                "node has insufficient PID available"
            } else {
                "node has sufficient PID available"
            }
            .into(),
        ),
        ("Ready".into(), ready.0, ready.1, ready.2),
    ]
}

/// The Node status to write; `old` supplies transition times of unchanged conditions.
pub fn status(
    cfg: &NodeConfig,
    facts: &HostFacts,
    engine: &Result<String, String>,
    sample: &crate::host::HostSample,
    old: &Value,
    now: jiff::Timestamp,
) -> Value {
    let alloc = allocatable(facts, cfg);
    let now_s = crate::pod::status::time(now);
    let conds: Vec<Value> = conditions(engine, sample)
        .into_iter()
        .map(|(ty, ok, reason, message)| {
            let st = if ok { "True" } else { "False" };
            let since = old
                .get("conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == ty.as_str()))
                .filter(|c| c["status"] == st)
                .map(|c| c["lastTransitionTime"].clone())
                .unwrap_or_else(|| json!(now_s));
            json!({"type": ty, "status": st, "reason": reason, "message": message,
                   "lastHeartbeatTime": now_s, "lastTransitionTime": since})
        })
        .collect();
    json!({
        "capacity": {
            "cpu": cpu(facts.cpu_milli),
            "memory": kib(facts.memory_bytes),
            "pods": cfg.max_pods.to_string(),
            "ephemeral-storage": kib(facts.disk_bytes),
        },
        "allocatable": {
            "cpu": cpu(alloc.cpu_milli),
            "memory": kib(alloc.memory),
            "pods": alloc.pods.to_string(),
            "ephemeral-storage": kib(facts.disk_bytes),
        },
        "addresses": [
            {"type": "InternalIP", "address": cfg.address},
            {"type": "Hostname", "address": cfg.name},
        ],
        "nodeInfo": {
            "machineID": facts.machine_id,
            "systemUUID": facts.machine_id,
            "bootID": facts.boot_id,
            "kernelVersion": facts.kernel,
            "osImage": facts.os_image,
            "containerRuntimeVersion": match engine {
                Ok(v) => format!("docker://{v}"),
                Err(_) => "docker://unknown".to_string(),
            },
            "kubeletVersion": concat!("rudder-", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": facts.arch,
        },
        "conditions": conds,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    })
}

/// Conditions without heartbeat times, to tell whether anything but the heartbeat changed.
fn essence(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(cs) = s.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in cs {
            if let Some(m) = c.as_object_mut() {
                m.remove("lastHeartbeatTime");
            }
        }
    }
    s
}

/// Renews the Lease and reports the status until `cancel`.
pub async fn heartbeat(
    api: Arc<dyn Api>,
    runtime: Arc<dyn ContainerRuntime>,
    host: Arc<dyn HostProbe>,
    clock: SharedClock,
    cfg: NodeConfig,
    facts: HostFacts,
    cancel: CancellationToken,
) {
    let mut last_written: Option<(Value, tokio::time::Instant)> = None;
    let mut lease_at = clock.instant();
    let mut status_at = clock.instant();
    loop {
        let now = clock.instant();
        if now >= lease_at {
            if let Err(e) = renew_lease(&*api, &cfg, clock.now()).await {
                tracing::warn!(node = %cfg.name, error = %e, "renewing the node lease failed");
            }
            lease_at = now + cfg.lease_renew;
        }
        if now >= status_at {
            let engine = runtime.ping().await.map_err(|e| e.to_string());
            let sample = host.sample();
            let old = last_written
                .as_ref()
                .map(|(v, _)| v.clone())
                .unwrap_or(Value::Null);
            let st = status(&cfg, &facts, &engine, &sample, &old, clock.now());
            let mut changed = last_written
                .as_ref()
                .is_none_or(|(v, at)| essence(v) != essence(&st) || now >= *at + cfg.status_report);
            if !changed {
                changed = server_conditions_differ(&*api, &cfg.name, &st).await;
            }
            if changed {
                match write_status(&*api, &cfg.name, &st).await {
                    Ok(()) => last_written = Some((st, now)),
                    Err(e) => {
                        tracing::warn!(node = %cfg.name, error = %e, "writing node status failed")
                    }
                }
            }
            status_at = now + cfg.status_check;
        }
        let wake = lease_at.min(status_at);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// The conditions' type, status and reason.
fn condition_states(status: &Value) -> Vec<(String, String, String)> {
    let s = |c: &Value, f: &str| c.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    let mut v: Vec<_> = status
        .get("conditions")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| (s(c, "type"), s(c, "status"), s(c, "reason")))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Whether the Node's conditions on the server are not the ones in `status` (someone else,
/// the node lifecycle controller, changed them). A failed read is no reason to write.
async fn server_conditions_differ(api: &dyn Api, node: &str, status: &Value) -> bool {
    let get = pb::GetRequest {
        kind: Some(node_ref()),
        namespace: String::new(),
        name: node.to_string(),
        allow_stale: false,
    };
    match api
        .get(get)
        .await
        .map(|o| rudder_client::api::decode_json(&o))
    {
        Ok(Ok(v)) => {
            let ours = condition_states(status);
            let server: Vec<_> = condition_states(v.get("status").unwrap_or(&Value::Null))
                .into_iter()
                .filter(|(ty, _, _)| ours.iter().any(|(t, _, _)| t == ty))
                .collect();
            server != ours
        }
        _ => false,
    }
}

async fn write_status(api: &dyn Api, node: &str, status: &Value) -> Result<(), ClientError> {
    let req = pb::PatchRequest {
        kind: Some(node_ref()),
        namespace: String::new(),
        name: node.to_string(),
        patch_type: pb::PatchType::Merge as i32,
        patch: serde_json::to_vec(&json!({"status": status}))
            .unwrap_or_default()
            .into(),
        status: true,
        options: None,
    };
    api.patch(req).await.map(|_| ())
}

/// Creates or renews `kube-node-lease/<node>`.
pub async fn renew_lease(
    api: &dyn Api,
    cfg: &NodeConfig,
    now: jiff::Timestamp,
) -> Result<(), ClientError> {
    let micro = format!("{now:.6}");
    let lease_ref = kind_ref("coordination.k8s.io/v1", "Lease");
    let patch = json!({"spec": {
        "holderIdentity": cfg.name,
        "leaseDurationSeconds": cfg.lease_duration_seconds,
        "renewTime": micro,
    }});
    let req = pb::PatchRequest {
        kind: Some(lease_ref.clone()),
        namespace: "kube-node-lease".into(),
        name: cfg.name.clone(),
        patch_type: pb::PatchType::Merge as i32,
        patch: serde_json::to_vec(&patch).unwrap_or_default().into(),
        status: false,
        options: None,
    };
    match api.patch(req).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => {
            let mut lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": "kube-node-lease"},
                "spec": patch["spec"],
            });
            // Owned by the Node, so that deleting the Node deletes its Lease.
            if let Ok(node) = api
                .get(pb::GetRequest {
                    kind: Some(node_ref()),
                    namespace: String::new(),
                    name: cfg.name.clone(),
                    allow_stale: false,
                })
                .await
                && let Ok(v) = rudder_client::api::decode_json(&node)
            {
                lease["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "v1", "kind": "Node", "name": cfg.name,
                    "uid": v.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
                }]);
            }
            let req = pb::CreateRequest {
                kind: Some(lease_ref),
                namespace: "kube-node-lease".into(),
                json: serde_json::to_vec(&lease).unwrap_or_default().into(),
                ..Default::default()
            };
            api.create(req).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use rudder_client::clock::ManualClock;
    use rudder_client::fake::FakeApi;

    use super::*;
    use crate::host::{FakeHost, test_facts};
    use crate::runtime::fake::FakeRuntime;

    fn node_status(api: &FakeApi, name: &str) -> Value {
        api.get_json(&node_ref(), "", name)
            .map(|n| n["status"].clone())
            .unwrap_or(Value::Null)
    }

    async fn set_pod_cidr(api: &FakeApi, name: &str, cidr: &str) {
        api.patch(pb::PatchRequest {
            kind: Some(node_ref()),
            name: name.into(),
            patch_type: pb::PatchType::Merge as i32,
            patch: json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
                .to_string()
                .into(),
            ..Default::default()
        })
        .await
        .expect("patch");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_pod_cidr_the_agent_waits_for_node_ipam() {
        let clock: SharedClock = ManualClock::shared(1);
        let api = FakeApi::builder().clock(Arc::clone(&clock)).build();
        let cfg = NodeConfig::new("n1", "192.0.2.1");
        assert_eq!(
            register(api.as_ref(), &cfg, &test_facts())
                .await
                .expect("registers"),
            None
        );
        let assigner = {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                set_pod_cidr(&api, "n1", "10.88.3.0/24").await;
            })
        };
        let t0 = clock.instant();
        let cidr = wait_for_pod_cidr(api.as_ref(), &cfg, &clock)
            .await
            .expect("assigned");
        assert_eq!(cidr, "10.88.3.0/24");
        assert!(clock.instant() - t0 >= Duration::from_secs(5));
        assigner.await.expect("assigner");
        assert_eq!(
            register(api.as_ref(), &cfg, &test_facts())
                .await
                .expect("again"),
            Some("10.88.3.0/24".into()),
            "a restarted agent finds it on the Node"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_pod_cidr_gives_up_with_a_clear_error() {
        let clock: SharedClock = ManualClock::shared(1);
        let api = FakeApi::builder().clock(Arc::clone(&clock)).build();
        let mut cfg = NodeConfig::new("n1", "192.0.2.1");
        cfg.pod_cidr_wait = Duration::from_secs(30);
        register(api.as_ref(), &cfg, &test_facts())
            .await
            .expect("registers");
        let err = wait_for_pod_cidr(api.as_ref(), &cfg, &clock)
            .await
            .expect_err("times out");
        assert!(matches!(err, NodeError::NoPodCidr { .. }));
        assert!(err.to_string().contains("--allocate-node-cidrs"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn conditions_someone_else_changed_are_reported_again_at_once() {
        let clock: SharedClock = ManualClock::shared(1);
        let api = FakeApi::builder().clock(Arc::clone(&clock)).build();
        let mut cfg = NodeConfig::new("n1", "192.0.2.1");
        cfg.pod_cidr = Some("10.88.1.0/24".into());
        register(api.as_ref(), &cfg, &test_facts())
            .await
            .expect("registers");
        let cancel = CancellationToken::new();
        let beat = tokio::spawn(heartbeat(
            api.clone(),
            Arc::new(FakeRuntime::new(Arc::clone(&clock))),
            Arc::new(FakeHost::new()),
            Arc::clone(&clock),
            cfg.clone(),
            test_facts(),
            cancel.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ready = |s: &Value| {
            s["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"].clone())
        };
        assert_eq!(ready(&node_status(&api, "n1")), Some(json!("True")));
        // The node lifecycle controller marks the node Unknown while the agent was cut off.
        let mut unknown = node_status(&api, "n1");
        for c in unknown["conditions"].as_array_mut().expect("conditions") {
            c["status"] = json!("Unknown");
            c["reason"] = json!("NodeStatusUnknown");
        }
        api.patch(pb::PatchRequest {
            kind: Some(node_ref()),
            name: "n1".into(),
            patch_type: pb::PatchType::Merge as i32,
            patch: json!({"status": {"conditions": unknown["conditions"]}})
                .to_string()
                .into(),
            status: true,
            ..Default::default()
        })
        .await
        .expect("patch");
        tokio::time::sleep(cfg.status_check + Duration::from_secs(1)).await;
        assert_eq!(
            ready(&node_status(&api, "n1")),
            Some(json!("True")),
            "rewritten at the next check, not after status_report"
        );
        cancel.cancel();
        beat.await.expect("heartbeat");
    }
}
