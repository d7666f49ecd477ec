//! The agent: registers the node, then keeps one [`PodWorker`] per pod bound to it.
//!
//! - Pods come from a shared informer on `spec.nodeName=<node>`. Every change reconciles the
//!   whole set (at most a node's worth of pods): a new uid is admitted (or rejected) and gets a
//!   worker; a uid gone from the cache has its worker told so, and the worker stops and removes
//!   the containers.
//! - The runtime is relisted every `relist_period` (kubelet's PLEG): a worker whose containers
//!   changed (one exited, say) is woken; containers of pods the agent does not know, once the
//!   informer has synced, are removed, as are volume directories of such pods.
//! - At start-up the containers found are handed to their pods' workers (adoption), so a
//!   restarted agent restarts nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rudder_api::k8s_openapi::api::core::v1::Pod;
use rudder_api::resources::{Resources, pod_requests};
use rudder_client::Api;
use rudder_client::cache::CachedObject;
use rudder_client::clock::SharedClock;
use rudder_client::events::EventRecorder;
use rudder_client::informer::InformerFactory;
use rudder_client::reflector::ReflectorConfig;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::host::{HostFacts, HostProbe};
use crate::node::{self, NodeConfig, NodeError};
use crate::objects::ApiObjects;
use crate::pod::PodContext;
use crate::pod::ipam::{Cidr, Ipam, IpamError};
use crate::pod::probes::Prober;
use crate::pod::worker::{PodWorker, WorkerInput};
use crate::runtime::{ContainerInfo, ContainerRuntime, NetworkSpec, RuntimeError, State};
use crate::volumes::Volumes;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: NodeConfig,
    pub data_dir: PathBuf,
    /// The engine network pods join and its subnet (which must hold the pod CIDR).
    pub network: String,
    pub network_subnet: String,
    /// The engine network that carries the Service range on this host (name, subnet), so a
    /// packet for a Service address stays on the node even when no proxy rule catches it.
    pub service_network: Option<(String, String)>,
    /// The DNS server `ClusterFirst` pods use (the proxy's on this node), if any.
    pub cluster_dns: Option<String>,
    /// The cluster DNS domain (search paths).
    pub cluster_domain: String,
    pub allow_privileged: bool,
    pub relist_period: Duration,
    /// How often running pods' projected volumes are refreshed (ConfigMap updates reach
    /// running pods within this, as kubelet's sync period).
    pub volume_refresh: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("container engine: {0}")]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("pod CIDR {pod} is not inside the pod network {net}")]
    CidrOutside { pod: String, net: String },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

struct WorkerHandle {
    tx: watch::Sender<Option<Arc<CachedObject>>>,
    wake: Arc<Notify>,
    /// What admission counted for it (released when it ends or finishes).
    requests: Resources,
    host_ports: Vec<(String, u16)>,
}

/// What admission counts for a pod: its requests and host ports (protocol, port).
type Admitted = (Resources, Vec<(String, u16)>);

/// Kubelet's node admission: the pod must fit what is left of allocatable, have a free pod
/// slot and free host ports. `Err` is (reason, message) for the Failed status.
fn admit(
    pod: &Pod,
    admitted: &[&WorkerHandle],
    alloc: &node::Allocatable,
    allow_privileged: bool,
) -> Result<Admitted, (String, String)> {
    let req = pod_requests(pod);
    let mut used = Resources::default();
    for w in admitted {
        used.add(&w.requests);
    }
    let reject = |what: &str, requested: i64, used: i64, cap: i64| {
        Err((
            format!("OutOf{what}"),
            format!(
                "Pod was rejected: Node didn't have enough resource: {what}, requested: {requested}, used: {used}, capacity: {cap}"
            ),
        ))
    };
    if admitted.len() as i64 >= alloc.pods {
        return reject("pods", 1, admitted.len() as i64, alloc.pods);
    }
    if req.milli_cpu > 0 && used.milli_cpu + req.milli_cpu > alloc.cpu_milli {
        return reject("cpu", req.milli_cpu, used.milli_cpu, alloc.cpu_milli);
    }
    if req.memory > 0 && used.memory + req.memory > alloc.memory {
        return reject("memory", req.memory, used.memory, alloc.memory);
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ports = Vec::new();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        if !allow_privileged && c.security_context.as_ref().and_then(|s| s.privileged) == Some(true)
        {
            return Err((
                "Forbidden".into(),
                format!(
                    "Pod was rejected: container {} is privileged, which this node does not allow",
                    c.name
                ),
            ));
        }
        for p in c.ports.iter().flatten() {
            if let Some(hp) = p
                .host_port
                .filter(|h| *h > 0)
                .and_then(|h| u16::try_from(h).ok())
            {
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                if admitted
                    .iter()
                    .any(|w| w.host_ports.contains(&(proto.clone(), hp)))
                {
                    return Err((
                        "NodePorts".into(),
                        format!(
                            "Pod was rejected: node didn't have free ports for the requested pod ports ({proto}/{hp})"
                        ),
                    ));
                }
                ports.push((proto, hp));
            }
        }
    }
    Ok((req, ports))
}

fn fingerprint(cs: &[ContainerInfo]) -> Vec<(String, State, Option<i64>)> {
    let mut f: Vec<_> = cs
        .iter()
        .map(|c| (c.id.clone(), c.state, c.exit_code))
        .collect();
    f.sort_by(|a, b| a.0.cmp(&b.0));
    f
}

fn group(all: Vec<ContainerInfo>) -> BTreeMap<String, Vec<ContainerInfo>> {
    let mut m: BTreeMap<String, Vec<ContainerInfo>> = BTreeMap::new();
    for c in all {
        m.entry(c.owner.pod_uid.clone()).or_default().push(c);
    }
    m
}

/// The agent's boundaries: the API, the engine, the network (probes), the host, the clock.
pub struct Deps {
    pub api: Arc<dyn Api>,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub prober: Arc<dyn Prober>,
    pub host: Arc<dyn HostProbe>,
    pub facts: HostFacts,
    pub clock: SharedClock,
    /// The connection the relay (logs, exec, port-forward) uses; `None` runs without it.
    pub relay: Option<rudder_client::Client>,
}

/// Runs the agent until `cancel`. Containers keep running when the agent stops.
pub async fn run(
    deps: Deps,
    cfg: AgentConfig,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    let Deps {
        api,
        runtime,
        prober,
        host,
        facts,
        clock,
        relay,
    } = deps;
    let version = runtime.ping().await?;
    tracing::info!(node = %cfg.node.name, engine = %version, "container engine answers");
    let pods_dir = cfg.data_dir.join("pods");
    std::fs::create_dir_all(&pods_dir).map_err(|source| AgentError::DataDir {
        path: pods_dir.display().to_string(),
        source,
    })?;
    let pod_cidr = match node::register(&*api, &cfg.node, &facts).await? {
        Some(c) => c,
        None => node::wait_for_pod_cidr(&*api, &cfg.node, &clock).await?,
    };
    let cidr = Cidr::parse(&pod_cidr)?;
    let net = Cidr::parse(&cfg.network_subnet)?;
    if !net.covers(&cidr) {
        return Err(AgentError::CidrOutside {
            pod: cidr.to_string(),
            net: net.to_string(),
        });
    }
    let gateway = Ipv4Addr::from(u32::from(net.base) + 1);
    let engine_range = crate::pod::ipam::engine_range(&net, &cidr);
    runtime
        .ensure_network(&NetworkSpec {
            name: cfg.network.clone(),
            subnet: net.to_string(),
            gateway,
            ip_range: Some(engine_range.to_string()),
        })
        .await?;
    if let Some((name, subnet)) = &cfg.service_network {
        let range = Cidr::parse(subnet)?;
        // The bridge takes the range's last usable address, which the API server never hands
        // to a Service.
        let size = 1u32 << (32 - u32::from(range.prefix));
        runtime
            .ensure_network(&NetworkSpec {
                name: name.clone(),
                subnet: range.to_string(),
                gateway: Ipv4Addr::from(u32::from(range.base) + size - 2),
                ip_range: None,
            })
            .await?;
    }
    let alloc = node::allocatable(&facts, &cfg.node);
    let heartbeat = tokio::spawn(node::heartbeat(
        Arc::clone(&api),
        Arc::clone(&runtime),
        Arc::clone(&host),
        Arc::clone(&clock),
        cfg.node.clone(),
        facts.clone(),
        cancel.clone(),
    ));
    // One relay connection to every master, so that a session opened through any of them
    // finds this node (sessions are not relayed between masters).
    let relay_task = relay.map(|client| {
        let stats = Arc::new(crate::relay::HostStats {
            probe: Arc::clone(&host),
            facts: facts.clone(),
            summarizer: crate::summary::Summarizer::default(),
        });
        let links = client.each_server().into_iter().map(|one| {
            crate::relay::run(
                one,
                cfg.node.name.clone(),
                Arc::clone(&runtime),
                Arc::clone(&stats),
                Arc::clone(&clock),
                cancel.clone(),
            )
        });
        tokio::spawn(futures::future::join_all(links))
    });
    let (events, events_task) = EventRecorder::new(
        Arc::clone(&api),
        "kubelet",
        &cfg.node.name,
        Arc::clone(&clock),
        4096,
    );
    let ctx = Arc::new(PodContext {
        api: Arc::clone(&api),
        runtime: Arc::clone(&runtime),
        prober,
        objects: Arc::new(ApiObjects::new(Arc::clone(&api))),
        volumes: Volumes::new(pods_dir.clone())
            .with_clock(Arc::clone(&clock))
            .with_allocatable(alloc.cpu_milli, alloc.memory),
        clock: Arc::clone(&clock),
        events,
        node_name: cfg.node.name.clone(),
        host_ip: cfg.node.address.clone(),
        network: cfg.network.clone(),
        cluster_dns: cfg.cluster_dns.clone(),
        cluster_domain: cfg.cluster_domain.clone(),
        ipam: Mutex::new({
            let mut ipam = Ipam::new(cidr, gateway);
            ipam.exclude(engine_range);
            ipam
        }),
        allow_privileged: cfg.allow_privileged,
        pods_dir,
        allocatable_cpu_milli: alloc.cpu_milli,
        allocatable_memory: alloc.memory,
        volume_refresh: cfg.volume_refresh,
    });

    let factory = InformerFactory::new(Arc::clone(&api), Arc::clone(&clock));
    let mut rc = ReflectorConfig::new("v1", "Pod");
    rc.field_selector = format!("spec.nodeName={}", cfg.node.name);
    let pods = factory.informer(rc);
    let mut sub = pods.subscribe();
    factory.start(&cancel);
    if !factory.wait_for_cache_sync(&cancel).await {
        heartbeat.abort();
        return Ok(());
    }
    let reader = pods.reader();

    // Adoption: what runs now belongs to the pods that are still ours.
    let mut found = match runtime.list(&cfg.node.name).await {
        Ok(all) => group(all),
        Err(e) => {
            tracing::warn!(error = %e, "listing containers at start-up failed");
            BTreeMap::new()
        }
    };
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut last_seen: HashMap<String, Vec<(String, State, Option<i64>)>> = HashMap::new();
    let mut relist = tokio::time::interval(cfg.relist_period);
    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        // Reconcile the pod set with the workers.
        let cached = reader.list();
        let mut by_uid: BTreeMap<String, Arc<CachedObject>> = BTreeMap::new();
        for o in cached {
            by_uid.insert(o.uid().to_string(), o);
        }
        let mut new: Vec<(Arc<CachedObject>, Pod)> = Vec::new();
        for (uid, o) in &by_uid {
            match workers.get_mut(uid) {
                Some(w) => {
                    // A finished pod no longer holds resources or ports.
                    let phase = o.value.pointer("/status/phase").and_then(|v| v.as_str());
                    if matches!(phase, Some("Succeeded" | "Failed")) {
                        w.requests = Resources::default();
                        w.host_ports.clear();
                    }
                    w.tx.send_replace(Some(Arc::clone(o)));
                }
                None => {
                    if let Ok(p) = o.typed::<Pod>() {
                        new.push((Arc::clone(o), (*p).clone()));
                    }
                }
            }
        }
        for (uid, w) in &workers {
            if !by_uid.contains_key(uid) {
                w.tx.send_replace(None);
            }
        }
        // Pods that already run here are admitted first, then the rest by age, as kubelet
        // does after a restart.
        new.sort_by_key(|(o, p)| {
            (
                !found.contains_key(o.uid()),
                p.metadata.creation_timestamp.clone().map(|t| t.0),
            )
        });
        for (o, p) in new {
            let uid = o.uid().to_string();
            let adopted = found.remove(&uid).unwrap_or_default();
            let terminal = matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            let (rejected, requests, host_ports) = if terminal || !adopted.is_empty() {
                (
                    None,
                    if terminal {
                        Resources::default()
                    } else {
                        pod_requests(&p)
                    },
                    vec![],
                )
            } else {
                let others: Vec<&WorkerHandle> = workers.values().collect();
                match admit(&p, &others, &alloc, cfg.allow_privileged) {
                    Ok((r, hp)) => (None, r, hp),
                    Err(reason) => (Some(reason), Resources::default(), vec![]),
                }
            };
            if let Some((reason, msg)) = &rejected {
                ctx.events.warning(&o.value, reason, msg);
            }
            let (tx, rx) = watch::channel(Some(Arc::clone(&o)));
            let wake = Arc::new(Notify::new());
            last_seen.insert(uid.clone(), fingerprint(&adopted));
            let worker = PodWorker::new(
                Arc::clone(&ctx),
                WorkerInput {
                    uid: uid.clone(),
                    desired: rx,
                    wake: Arc::clone(&wake),
                    adopted,
                    rejected,
                },
            );
            let u = uid.clone();
            tasks.spawn(async move {
                worker.run().await;
                u
            });
            workers.insert(
                uid,
                WorkerHandle {
                    tx,
                    wake,
                    requests,
                    host_ports,
                },
            );
        }
        // Containers whose pods are gone.
        for (uid, cs) in std::mem::take(&mut found) {
            if workers.contains_key(&uid) {
                continue;
            }
            tracing::info!(pod_uid = %uid, containers = cs.len(), "removing containers of a pod that is no longer bound here");
            for c in cs {
                let _ = runtime.remove_container(&c.id).await;
            }
            let _ = ctx.volumes.teardown(&uid).await;
        }

        tokio::select! {
            _ = cancel.cancelled() => break,
            ev = sub.recv() => {
                if ev.is_none() {
                    break;
                }
                // Take everything pending: one reconcile covers them all.
                while sub.try_recv().is_some() {}
            }
            Some(done) = tasks.join_next() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                    last_seen.remove(&uid);
                }
            }
            _ = relist.tick() => {
                match runtime.list(&cfg.node.name).await {
                    Ok(all) => {
                        let grouped = group(all);
                        for (uid, cs) in &grouped {
                            let fp = fingerprint(cs);
                            match workers.get(uid) {
                                Some(w) => {
                                    if last_seen.get(uid) != Some(&fp) {
                                        w.wake.notify_one();
                                        last_seen.insert(uid.clone(), fp);
                                    }
                                }
                                None => {
                                    found.insert(uid.clone(), cs.clone());
                                }
                            }
                        }
                        // Volume directories of pods that are neither known nor running.
                        if let Ok(uids) = ctx.volumes.pod_uids() {
                            let known: BTreeSet<&String> = workers.keys().chain(grouped.keys()).collect();
                            for uid in uids.iter().filter(|u| !known.contains(u)) {
                                let _ = ctx.volumes.teardown(uid).await;
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "relist failed"),
                }
            }
        }
    }
    // Workers end when their senders drop; containers keep running.
    drop(workers);
    while tasks.join_next().await.is_some() {}
    let _ = heartbeat.await;
    if let Some(t) = relay_task {
        let _ = t.await;
    }
    events_task.abort();
    Ok(())
}
