//! Node IPAM, as Kubernetes' `node-ipam-controller` with the range allocator: with
//! `allocate_node_cidrs` and a `cluster_cidr`, every node without `spec.podCIDR` gets the
//! lowest free `/node_cidr_mask_size` range of the cluster CIDR (`spec.podCIDR` and
//! `spec.podCIDRs`), which its node agent then uses for pod addresses.
//!
//! The ranges in use are read from the Nodes themselves at each allocation (so a restart
//! rebuilds them, and a range a node already carries is never handed out again), plus the
//! ranges this process assigned whose write the cache has not shown yet. A deleted node's
//! range is free again as soon as the cache drops the node. The write is a merge patch guarded
//! by the node's resourceVersion, so a node that got a CIDR meanwhile (its agent's
//! `--pod-cidr`) is not overwritten. When the cluster CIDR is exhausted the node gets the
//! Event CIDRNotAvailable and is tried again later.
//!
//! Differences from Kubernetes: IPv4 only (one range per node); the lowest free range is
//! taken, where Kubernetes' allocator moves round-robin from the last one it gave.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rudder_client::Api;
use rudder_client::cache::Reader;
use rudder_client::controller::{Action, Controller, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::workqueue::Key;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::controllers::nodelifecycle::lock;
use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::{merge_patch, str_at};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "node-ipam",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// How long an exhausted cluster CIDR waits before a node is tried again.
const EXHAUSTED_RETRY: Duration = Duration::from_secs(30);

/// An IPv4 range, `base/prefix` with the host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub base: u32,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an IPv4 CIDR (a.b.c.d/n)");
        let (ip, len) = s.trim().split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Cidr {
            base: u32::from(ip) & mask(prefix),
            prefix,
        })
    }

    /// Whether `other` lies inside this range.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && other.base & mask(self.prefix) == self.base
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Cuts node ranges out of the cluster CIDR.
#[derive(Debug, Clone)]
pub struct Ranges {
    cluster: Cidr,
    node_prefix: u8,
}

impl Ranges {
    pub fn new(cluster: &str, node_prefix: u8) -> Result<Ranges, String> {
        let cluster = Cidr::parse(cluster).map_err(|e| format!("--cluster-cidr: {e}"))?;
        if node_prefix < cluster.prefix || node_prefix > 30 {
            return Err(format!(
                "--node-cidr-mask-size {node_prefix} must lie between the cluster CIDR's /{} and /30",
                cluster.prefix
            ));
        }
        Ok(Ranges {
            cluster,
            node_prefix,
        })
    }

    fn count(&self) -> u64 {
        1u64 << (self.node_prefix - self.cluster.prefix)
    }

    fn nth(&self, i: u64) -> Cidr {
        let size = 1u64 << (32 - u32::from(self.node_prefix));
        Cidr {
            base: (u64::from(self.cluster.base) + i * size) as u32,
            prefix: self.node_prefix,
        }
    }

    /// The lowest range that overlaps none of `used`: every used range marks the node ranges
    /// it lies in or spans, then the first unmarked one is taken.
    pub fn lowest_free(&self, used: &BTreeSet<Cidr>) -> Option<Cidr> {
        let shift = 32 - u32::from(self.node_prefix);
        let index = |addr: u32| u64::from(addr.wrapping_sub(self.cluster.base)) >> shift;
        let mut taken = BTreeSet::new();
        for u in used {
            if self.cluster.covers(u) {
                let first = index(u.base);
                let span = 1u64 << self.node_prefix.saturating_sub(u.prefix);
                taken.extend(first..first + span);
            } else if u.covers(&self.cluster) {
                return None;
            }
        }
        (0..self.count())
            .find(|i| !taken.contains(i))
            .map(|i| self.nth(i))
    }
}

pub struct Ctx {
    api: Arc<dyn Api>,
    events: EventRecorder,
    nodes: Reader,
    ranges: Ranges,
    /// Ranges assigned by this process that the cache may not show yet, by node.
    assigned: Mutex<HashMap<String, Cidr>>,
}

async fn run(env: Env, cancel: CancellationToken) {
    let cfg = env.nodes.ipam.clone();
    if !cfg.allocate_node_cidrs {
        return;
    }
    let ranges = match cfg
        .cluster_cidr
        .as_deref()
        .map(|c| Ranges::new(c, cfg.node_cidr_mask_size))
    {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            tracing::error!(error = %e, "node IPAM cannot run");
            return;
        }
        None => {
            tracing::error!("node IPAM cannot run: --allocate-node-cidrs needs --cluster-cidr");
            return;
        }
    };
    let nodes = env.informers.for_kind("v1", "Node");
    let (events, events_task) = env.recorder("node-ipam");
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        events,
        nodes: nodes.reader(),
        ranges,
        assigned: Mutex::default(),
    });
    Controller::new(ctx)
        .named("node-ipam")
        .workers(1)
        .watches(nodes.subscribe(), self_mapper())
        .run(reconcile, policy, cancel)
        .await;
    events_task.abort();
}

/// Allocates a range to one node if it has none. One worker runs it, so two nodes are never
/// given a range at the same moment.
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(node) = ctx.nodes.get_key(&key) else {
        lock(&ctx.assigned).remove(&key);
        return Ok(Action::AwaitChange);
    };
    if !str_at(&node.value, "/spec/podCIDR").is_empty() {
        lock(&ctx.assigned).remove(&key);
        return Ok(Action::AwaitChange);
    }
    let cidr = {
        let mut assigned = lock(&ctx.assigned);
        // Ranges the Nodes carry, and ours in flight for nodes still without one.
        let nodes = &ctx.nodes;
        assigned.retain(|n, _| {
            nodes
                .get("", n)
                .is_some_and(|o| str_at(&o.value, "/spec/podCIDR").is_empty())
        });
        match assigned.get(&key) {
            Some(c) => Some(*c),
            None => {
                let mut used: BTreeSet<Cidr> = ctx
                    .nodes
                    .list()
                    .iter()
                    .filter_map(|n| Cidr::parse(str_at(&n.value, "/spec/podCIDR")).ok())
                    .collect();
                used.extend(assigned.values().copied());
                let free = ctx.ranges.lowest_free(&used);
                if let Some(c) = free {
                    assigned.insert(key.clone(), c);
                }
                free
            }
        }
    };
    let Some(cidr) = cidr else {
        ctx.events.warning(
            &node.value,
            "CIDRNotAvailable",
            &format!("Node {key} status is now: CIDRNotAvailable"),
        );
        return Ok(Action::Requeue(EXHAUSTED_RETRY));
    };
    let c = cidr.to_string();
    let patch = json!({
        "metadata": {"resourceVersion": node.resource_version.to_string()},
        "spec": {"podCIDR": c, "podCIDRs": [c]},
    });
    match ctx.api.patch(merge_patch(&node, &patch)).await {
        Ok(_) => {
            tracing::info!(node = %key, cidr = %c, "assigned the node's pod CIDR");
            Ok(Action::AwaitChange)
        }
        Err(e) if e.is_not_found() => {
            lock(&ctx.assigned).remove(&key);
            Ok(Action::AwaitChange)
        }
        Err(e) => {
            ctx.events.warning(
                &node.value,
                "CIDRAssignmentFailed",
                &format!("Node {key} status is now: CIDRAssignmentFailed"),
            );
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cs: &[&str]) -> BTreeSet<Cidr> {
        cs.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    #[test]
    fn cidrs_parse_and_nest() {
        let c = Cidr::parse("10.88.7.9/16").unwrap();
        assert_eq!(c.to_string(), "10.88.0.0/16", "host bits dropped");
        assert!(c.covers(&Cidr::parse("10.88.3.0/24").unwrap()));
        assert!(!c.covers(&Cidr::parse("10.89.3.0/24").unwrap()));
        assert!(!Cidr::parse("10.88.3.0/24").unwrap().covers(&c));
        for bad in ["10.88.0.0", "10.88.0.0/33", "fd00::/64", "x/8"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_lowest_free_range_skips_used_and_overlapping_ones() {
        let r = Ranges::new("10.88.0.0/16", 24).unwrap();
        assert_eq!(
            r.lowest_free(&set(&[])).unwrap().to_string(),
            "10.88.0.0/24"
        );
        assert_eq!(
            r.lowest_free(&set(&["10.88.0.0/24", "10.88.2.0/24"]))
                .unwrap()
                .to_string(),
            "10.88.1.0/24"
        );
        // A larger range set by hand blocks every /24 inside it; one outside is ignored.
        assert_eq!(
            r.lowest_free(&set(&["10.88.0.0/23", "192.168.0.0/24"]))
                .unwrap()
                .to_string(),
            "10.88.2.0/24"
        );
        let tiny = Ranges::new("10.0.0.0/23", 24).unwrap();
        assert_eq!(
            tiny.lowest_free(&set(&["10.0.0.0/24", "10.0.1.0/24"])),
            None,
            "exhausted"
        );
        assert!(Ranges::new("10.0.0.0/16", 8).is_err());
        assert!(Ranges::new("10.0.0.0/16", 31).is_err());
    }

    use crate::controllers::nodelifecycle::testutil::{Harness, settle};

    async fn cidr_of(h: &Harness, node: &str) -> String {
        let n = h.get("Node", "", node).await;
        assert_eq!(n["spec"]["podCIDRs"][0], n["spec"]["podCIDR"], "{n}");
        str_at(&n, "/spec/podCIDR").to_string()
    }

    async fn create_node(h: &Harness, name: &str, cidr: Option<&str>) {
        let mut node =
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}});
        if let Some(c) = cidr {
            node["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
        }
        h.api
            .create(rudder_client::proto::CreateRequest {
                kind: Some(rudder_client::conn::kind_ref("v1", "Node")),
                json: node.to_string().into(),
                ..Default::default()
            })
            .await
            .expect("create node");
    }

    #[tokio::test(start_paused = true)]
    async fn nodes_get_distinct_free_ranges_and_a_deleted_nodes_range_is_reused() {
        let h = Harness::start(&["node-ipam"], &["n1", "n2"], |c| {
            c.ipam.allocate_node_cidrs = true;
            c.ipam.cluster_cidr = Some("10.88.0.0/16".into());
            c.ipam.node_cidr_mask_size = 24;
        })
        .await;
        // One range set by hand: never handed out again.
        create_node(&h, "manual", Some("10.88.2.0/24")).await;
        settle(1).await;
        let mut got = vec![cidr_of(&h, "n1").await, cidr_of(&h, "n2").await];
        got.sort();
        assert_eq!(got, ["10.88.0.0/24", "10.88.1.0/24"]);
        create_node(&h, "n3", None).await;
        settle(1).await;
        assert_eq!(
            cidr_of(&h, "n3").await,
            "10.88.3.0/24",
            "skips the manual one"
        );
        assert_eq!(cidr_of(&h, "manual").await, "10.88.2.0/24", "left alone");
        let freed = cidr_of(&h, "n1").await;
        h.delete("Node", "", "n1").await;
        settle(1).await;
        create_node(&h, "n4", None).await;
        settle(1).await;
        assert_eq!(
            cidr_of(&h, "n4").await,
            freed,
            "the deleted node's range is free again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_cluster_cidr_is_an_event_and_nothing_else() {
        let h = Harness::start(&["node-ipam"], &["n1", "n2"], |c| {
            c.ipam.allocate_node_cidrs = true;
            c.ipam.cluster_cidr = Some("10.0.0.0/24".into());
            c.ipam.node_cidr_mask_size = 24;
        })
        .await;
        settle(1).await;
        let a = str_at(&h.get("Node", "", "n1").await, "/spec/podCIDR").to_string();
        let b = str_at(&h.get("Node", "", "n2").await, "/spec/podCIDR").to_string();
        let mut got = [a, b];
        got.sort();
        assert_eq!(got, ["", "10.0.0.0/24"], "one range for two nodes");
        assert!(
            h.events()
                .await
                .iter()
                .any(|(r, _)| r == "CIDRNotAvailable")
        );
    }
}
