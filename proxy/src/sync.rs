//! The sync loop: Services and EndpointSlices from shared informers, the desired map computed
//! from the caches, and the data plane synced with it.
//!
//! Level-triggered, as kube-proxy's `syncProxyRules`: any change marks the map dirty; a sync
//! recomputes the whole map from the caches and applies it when it differs from the last one
//! applied, at most once per `min_sync_interval` (bursts of changes, say a rollout, coalesce
//! into one transaction), and re-applies it every `sync_period` even unchanged, repairing rules
//! someone else removed. A failed sync is retried after `min_sync_interval`, doubling up to
//! `sync_period`. The DNS zone and, when Ingress is served, its table and certificates are
//! rebuilt from the same caches on every pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rudder_client::Api;
use rudder_client::cache::Reader;
use rudder_client::clock::SharedClock;
use rudder_client::informer::{InformerFactory, Subscription};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::dataplane::DataPlane;
use crate::dns::server::SharedZone;
use crate::dns::zone::Zone;
use crate::ingress::IngressState;
use crate::ingress::sync::IngressSync;
use crate::services::{Desired, desired};

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name (`internalTrafficPolicy`/`externalTrafficPolicy: Local`).
    pub node_name: String,
    /// Least time between two syncs.
    pub min_sync_interval: Duration,
    /// Most time between two syncs (a full re-apply).
    pub sync_period: Duration,
    /// The cluster DNS domain.
    pub cluster_domain: String,
    /// Ingress served: the loop also watches Ingresses, IngressClasses and Secrets and keeps
    /// this state's table and certificates current.
    pub ingress: Option<Arc<IngressState>>,
}

impl Config {
    pub fn new(node_name: &str) -> Config {
        Config {
            node_name: node_name.to_string(),
            min_sync_interval: Duration::from_millis(100),
            sync_period: Duration::from_secs(30),
            cluster_domain: "cluster.local".into(),
            ingress: None,
        }
    }
}

/// What the health endpoint and tests read: when the last sync succeeded, and how many.
#[derive(Debug, Default)]
pub struct SyncStatus {
    /// Milliseconds since the Unix epoch of the last successful sync (0: none yet).
    pub last_ok_ms: AtomicI64,
    pub syncs: AtomicI64,
    pub failures: AtomicI64,
}

/// Runs until `cancel`: watches, computes and syncs. Removes nothing on exit (a restarted
/// proxy takes over the table; `cleanup` is the operator's choice).
pub async fn run(
    api: Arc<dyn Api>,
    clock: SharedClock,
    cfg: Config,
    mut plane: Box<dyn DataPlane>,
    zone: Option<SharedZone>,
    status: Arc<SyncStatus>,
    cancel: CancellationToken,
) {
    let informers = InformerFactory::new(Arc::clone(&api), Arc::clone(&clock));
    let services = informers.for_kind("v1", "Service");
    let slices = informers.for_kind("discovery.k8s.io/v1", "EndpointSlice");
    let mut subs = vec![services.subscribe(), slices.subscribe()];
    let (services, slices) = (services.reader(), slices.reader());
    let mut ingress = cfg.ingress.clone().map(|state| {
        let (ingress, more) = IngressSync::new(state, &informers, Arc::clone(&api));
        subs.extend(more);
        ingress
    });
    informers.start(&cancel);
    if !informers.wait_for_cache_sync(&cancel).await {
        return;
    }
    let mut last: Option<Desired> = None;
    let mut backoff = cfg.min_sync_interval;
    let mut next_full = tokio::time::Instant::now() + cfg.sync_period;
    loop {
        let (want, fresh) = compute(&services, &slices, &cfg, zone.is_some(), ingress.as_mut());
        if let (Some(zone), Some(fresh)) = (&zone, fresh) {
            let mut z = zone.write().unwrap_or_else(|p| p.into_inner());
            if **z != fresh {
                *z = Arc::new(fresh);
            }
        }
        let full = tokio::time::Instant::now() >= next_full;
        if full || last.as_ref() != Some(&want) {
            match plane.sync(&want).await {
                Ok(()) => {
                    status.syncs.fetch_add(1, Ordering::Relaxed);
                    status
                        .last_ok_ms
                        .store(clock.now().as_millisecond(), Ordering::Relaxed);
                    tracing::debug!(ports = want.ports.len(), "data plane synced");
                    last = Some(want);
                    backoff = cfg.min_sync_interval;
                    next_full = tokio::time::Instant::now() + cfg.sync_period;
                }
                Err(e) => {
                    status.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, retry_in = ?backoff, "data plane sync failed");
                    last = None;
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(cfg.sync_period);
                    continue;
                }
            }
        }
        // Coalesce: wait at least the interval, then for a change or the full period.
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(cfg.min_sync_interval) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changed(&mut subs) => {}
            _ = tokio::time::sleep_until(next_full) => {}
        }
        drain(&mut subs);
    }
}

/// The desired map and, when DNS is served, the zone, from one reading of the caches; the
/// Ingress table is refreshed from the same reading.
fn compute(
    services: &Reader,
    slices: &Reader,
    cfg: &Config,
    dns: bool,
    ingress: Option<&mut IngressSync>,
) -> (Desired, Option<Zone>) {
    let svc = services.list();
    let sl = slices.list();
    let svc_values: Vec<&Value> = svc.iter().map(|o| &o.value).collect();
    let slice_values: Vec<&Value> = sl.iter().map(|o| &o.value).collect();
    if let Some(ingress) = ingress {
        ingress.refresh(&svc_values, &slice_values);
    }
    let zone = dns.then(|| Zone::build(&cfg.cluster_domain, &svc_values, &slice_values));
    (desired(&svc_values, &slice_values, &cfg.node_name), zone)
}

/// Resolves when any subscription has an event (which stays queued for [`drain`]).
async fn changed(subs: &mut [Subscription]) {
    let waits = subs.iter_mut().map(|s| Box::pin(s.recv()));
    drop(futures::future::select_all(waits).await);
}

/// Discards queued events: the next sync reads the caches whole.
fn drain(subs: &mut [Subscription]) {
    for s in subs.iter_mut() {
        while s.try_recv().is_some() {}
    }
}
