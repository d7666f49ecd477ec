//! The nftables data plane: one table (`ip rudder-proxy` by default) that NATs Service
//! addresses to endpoints, rewritten by one `nft -f` transaction per sync.
//!
//! Layout of the table (as kube-proxy's nftables mode):
//! - `nat-prerouting` / `nat-output` (hooks at `dstnat`, -100) jump to `services`, which looks the
//!   packet's `daddr . l4proto . dport` up in the verdict map `service-ips` (cluster and external
//!   IPs), and for addresses local to the node (not loopback) `l4proto . dport` in
//!   `service-nodeports`.
//! - Each Service port has a chain for cluster traffic (`svc-…`) and one for node-port and
//!   external traffic (`ext-…`) that pick an endpoint chain with `numgen random`, after
//!   ClientIP affinity (a per-endpoint dynamic set of recent clients, with the Service's
//!   timeout) has had its say. Each endpoint chain (`ep-…`) DNATs to the endpoint.
//! - Masquerade: external traffic under `externalTrafficPolicy: Cluster`, hairpin traffic (a pod
//!   reaching itself through its Service) and, with a cluster CIDR set, cluster-IP traffic from
//!   outside it get the mark that `nat-postrouting` masquerades; Local external traffic keeps
//!   the client's address.
//! - Ports without endpoints are rejected (`filter-*` chains before NAT, ICMP port
//!   unreachable / TCP reset) rather than left to time out; external traffic under a Local
//!   policy with no local endpoint is dropped, as Kubernetes does.
//!
//! The first sync replaces whatever table a previous run left; later syncs flush and refill
//! the chains and maps and delete the chains no longer wanted, so the affinity sets (kept
//! while their Service's timeout is unchanged) survive syncs. Connections already tracked keep
//! their NAT binding, so an endpoint that leaves gets no new connections while open ones drain.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use super::{DataPlane, DataPlaneError};
use crate::services::{Backend, Desired, ServicePort};

/// The mark bit that asks `nat-postrouting` to masquerade (kube-proxy's 0x4000).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// How the table is built.
#[derive(Debug, Clone)]
pub struct NftOptions {
    pub table: String,
    /// Pod addresses: cluster-IP traffic from outside is masqueraded so replies come back
    /// through this node. `None`: only hairpin and external traffic is.
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
}

impl Default for NftOptions {
    fn default() -> Self {
        NftOptions {
            table: "rudder-proxy".into(),
            cluster_cidr: None,
        }
    }
}

/// What a sync leaves installed, so the next one can remove what is no longer wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    pub chains: BTreeSet<String>,
    /// Affinity set name → its timeout in seconds.
    pub sets: std::collections::BTreeMap<String, u64>,
}

/// The script for one sync and what it leaves installed. `prev` is `None` for a first sync
/// (or one after a failure): the table is then deleted and rebuilt.
pub fn render(
    desired: &Desired,
    opts: &NftOptions,
    prev: Option<&Installed>,
) -> (String, Installed) {
    let t = &opts.table;
    let mut s = String::new();
    let mut now = Installed::default();
    let w = &mut s;
    w.push_str(&table_header(t, prev.is_none()));
    let base = [
        (
            "nat-prerouting",
            "type nat hook prerouting priority -100; policy accept;",
        ),
        (
            "nat-output",
            "type nat hook output priority -100; policy accept;",
        ),
        (
            "nat-postrouting",
            "type nat hook postrouting priority 100; policy accept;",
        ),
        (
            "filter-input",
            "type filter hook input priority -110; policy accept;",
        ),
        (
            "filter-forward",
            "type filter hook forward priority -110; policy accept;",
        ),
        (
            "filter-output",
            "type filter hook output priority -110; policy accept;",
        ),
    ];
    for (name, hook) in base {
        let _ = writeln!(w, "add chain ip {t} {name} {{ {hook} }}");
    }
    for name in [
        "services",
        "mark-for-masquerade",
        "masquerading",
        "reject-chain",
        "endpoints-check",
    ] {
        let _ = writeln!(w, "add chain ip {t} {name}");
    }
    let maps = [
        (
            "map",
            "service-ips",
            "ipv4_addr . inet_proto . inet_service : verdict",
        ),
        (
            "map",
            "service-nodeports",
            "inet_proto . inet_service : verdict",
        ),
        (
            "set",
            "no-endpoint-services",
            "ipv4_addr . inet_proto . inet_service",
        ),
        ("set", "no-endpoint-nodeports", "inet_proto . inet_service"),
    ];
    for (kind, name, ty) in maps {
        let _ = writeln!(w, "add {kind} ip {t} {name} {{ type {ty}; }}");
        let _ = writeln!(w, "flush {kind} ip {t} {name}");
    }
    for name in [
        "nat-prerouting",
        "nat-output",
        "nat-postrouting",
        "filter-input",
        "filter-forward",
        "filter-output",
        "services",
        "mark-for-masquerade",
        "masquerading",
        "reject-chain",
        "endpoints-check",
    ] {
        let _ = writeln!(w, "flush chain ip {t} {name}");
    }
    // Emptied first, so nothing refers to a chain or set this sync deletes or redefines.
    for c in prev.iter().flat_map(|i| &i.chains) {
        let _ = writeln!(w, "flush chain ip {t} {c}");
    }
    let rule = |w: &mut String, chain: &str, body: &str| {
        let _ = writeln!(w, "add rule ip {t} {chain} {body}");
    };
    rule(w, "nat-prerouting", "jump services");
    rule(w, "nat-output", "jump services");
    rule(w, "nat-postrouting", "jump masquerading");
    for c in ["filter-input", "filter-forward", "filter-output"] {
        rule(w, c, "ct state new jump endpoints-check");
    }
    rule(
        w,
        "endpoints-check",
        "ip daddr . meta l4proto . th dport @no-endpoint-services goto reject-chain",
    );
    rule(
        w,
        "endpoints-check",
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport @no-endpoint-nodeports goto reject-chain",
    );
    rule(w, "reject-chain", "reject");
    rule(
        w,
        "mark-for-masquerade",
        &format!("meta mark set meta mark | {MASQUERADE_MARK:#x}"),
    );
    rule(
        w,
        "masquerading",
        &format!("meta mark & {MASQUERADE_MARK:#x} == 0 return"),
    );
    rule(
        w,
        "masquerading",
        &format!("meta mark set meta mark ^ {MASQUERADE_MARK:#x}"),
    );
    rule(w, "masquerading", "masquerade fully-random");
    rule(
        w,
        "services",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
    );
    rule(
        w,
        "services",
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
    );

    let mut ip_elems: Vec<String> = Vec::new();
    let mut np_elems: Vec<String> = Vec::new();
    let mut no_ep_ips: Vec<String> = Vec::new();
    let mut no_ep_nps: Vec<String> = Vec::new();
    for p in &desired.ports {
        let proto = p.protocol.nft();
        let base = chain_base(p);
        let svc_chain = format!("svc-{base}");
        let ext_chain = format!("ext-{base}");
        let endpoints: BTreeSet<Backend> = p
            .cluster_backends
            .iter()
            .chain(&p.external_backends)
            .copied()
            .collect();
        for b in &endpoints {
            let ep = ep_chain(&base, b);
            add_chain(w, t, &ep, &mut now);
            rule(
                w,
                &ep,
                &format!("ip saddr {} jump mark-for-masquerade", b.ip),
            );
            if let Some(timeout) = p.affinity {
                let set = affinity_set(&base, b);
                let secs = timeout.as_secs().max(1);
                let keep = prev.and_then(|i| i.sets.get(&set)) == Some(&secs);
                if !keep && prev.is_some_and(|i| i.sets.contains_key(&set)) {
                    let _ = writeln!(w, "delete set ip {t} {set}");
                }
                let _ = writeln!(
                    w,
                    "add set ip {t} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {secs}s; }}"
                );
                now.sets.insert(set.clone(), secs);
                rule(w, &ep, &format!("update @{set} {{ ip saddr }}"));
            }
            rule(
                w,
                &ep,
                &format!("meta l4proto {proto} dnat to {}:{}", b.ip, b.port),
            );
        }
        // Cluster traffic.
        if p.cluster_backends.is_empty() {
            for ip in &p.cluster_ips {
                no_ep_ips.push(format!("{ip} . {proto} . {}", p.port));
            }
        } else {
            add_chain(w, t, &svc_chain, &mut now);
            if let Some((net, len)) = opts.cluster_cidr {
                rule(
                    w,
                    &svc_chain,
                    &format!("ip saddr != {net}/{len} jump mark-for-masquerade"),
                );
            }
            pick(w, t, &svc_chain, &base, p, &p.cluster_backends);
            for ip in &p.cluster_ips {
                ip_elems.push(format!("{ip} . {proto} . {} : goto {svc_chain}", p.port));
            }
        }
        // Node-port and external traffic.
        let has_external = p.node_port.is_some() || !p.external_ips.is_empty();
        if !has_external {
            continue;
        }
        let verdict = if p.external_backends.is_empty() {
            if !p.external_local {
                // Rejected as for cluster traffic.
                for ip in &p.external_ips {
                    no_ep_ips.push(format!("{ip} . {proto} . {}", p.port));
                }
                if let Some(np) = p.node_port {
                    no_ep_nps.push(format!("{proto} . {np}"));
                }
                continue;
            }
            "drop".to_string()
        } else {
            add_chain(w, t, &ext_chain, &mut now);
            if !p.external_local {
                rule(w, &ext_chain, "jump mark-for-masquerade");
            }
            pick(w, t, &ext_chain, &base, p, &p.external_backends);
            format!("goto {ext_chain}")
        };
        for ip in &p.external_ips {
            ip_elems.push(format!("{ip} . {proto} . {} : {verdict}", p.port));
        }
        if let Some(np) = p.node_port {
            np_elems.push(format!("{proto} . {np} : {verdict}"));
        }
    }
    elements(w, t, "service-ips", &ip_elems);
    elements(w, t, "service-nodeports", &np_elems);
    elements(w, t, "no-endpoint-services", &no_ep_ips);
    elements(w, t, "no-endpoint-nodeports", &no_ep_nps);
    // Stale chains and sets go last, once nothing refers to them.
    if let Some(prev) = prev {
        for c in prev.chains.difference(&now.chains) {
            let _ = writeln!(w, "delete chain ip {t} {c}");
        }
        for set in prev.sets.keys().filter(|s| !now.sets.contains_key(*s)) {
            let _ = writeln!(w, "delete set ip {t} {set}");
        }
    }
    (s, now)
}

/// The start of a sync's script: the table, made afresh on a first sync (`add` then `delete`
/// in one transaction removes any table a previous run left and does not fail without one).
pub(super) fn table_header(t: &str, fresh: bool) -> String {
    if fresh {
        format!("add table ip {t}\ndelete table ip {t}\nadd table ip {t}\n")
    } else {
        format!("add table ip {t}\n")
    }
}

/// A script removing the table, whether or not it exists.
pub(super) fn delete_table(t: &str) -> String {
    format!("add table ip {t}\ndelete table ip {t}\n")
}

/// Affinity first (a client seen recently goes back to its endpoint), then a random pick.
fn pick(w: &mut String, t: &str, chain: &str, base: &str, p: &ServicePort, backends: &[Backend]) {
    if p.affinity.is_some() {
        for b in backends {
            let _ = writeln!(
                w,
                "add rule ip {t} {chain} ip saddr @{} goto {}",
                affinity_set(base, b),
                ep_chain(base, b)
            );
        }
    }
    let arms: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : goto {}", ep_chain(base, b)))
        .collect();
    let _ = writeln!(
        w,
        "add rule ip {t} {chain} numgen random mod {} vmap {{ {} }}",
        backends.len(),
        arms.join(", ")
    );
}

fn add_chain(w: &mut String, t: &str, name: &str, now: &mut Installed) {
    if now.chains.insert(name.to_string()) {
        let _ = writeln!(w, "add chain ip {t} {name}");
    }
}

fn elements(w: &mut String, t: &str, name: &str, elems: &[String]) {
    if !elems.is_empty() {
        let _ = writeln!(w, "add element ip {t} {name} {{ {} }}", elems.join(", "));
    }
}

/// A chain-name stem unique per Service port: a hash (names are case-folded by nobody, but
/// long and odd names must stay within nft's identifier rules) and a readable part.
fn chain_base(p: &ServicePort) -> String {
    let readable: String = format!("{}/{}/{}", p.service, p.protocol.nft(), p.port)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "/_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{:08x}-{readable}", fnv(&p.id()) as u32)
}

fn ep_chain(base: &str, b: &Backend) -> String {
    format!("ep-{base}__{}/{}", b.ip, b.port)
}

fn affinity_set(base: &str, b: &Backend) -> String {
    format!("aff-{base}__{}/{}", b.ip, b.port)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// Runs nft scripts: the seam between the renderer and the kernel.
pub trait NftRunner: Send + Sync {
    fn run<'a>(&'a self, script: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// The `nft` command, optionally inside a named network namespace (`ip netns exec`).
#[derive(Debug, Clone, Default)]
pub struct NftCommand {
    pub netns: Option<String>,
}

impl NftCommand {
    /// Whether nft can be run and may change rules here (it needs CAP_NET_ADMIN): a dry run of
    /// a table creation, which changes nothing.
    pub async fn probe(&self) -> Result<(), String> {
        let mut cmd = tokio::process::Command::new("nft");
        cmd.args(["--check", "add table ip rudder-proxy-probe"]);
        match cmd.output().await {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Err(format!("cannot run nft: {e}")),
        }
    }
}

impl NftRunner for NftCommand {
    fn run<'a>(&'a self, script: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut cmd = match &self.netns {
                Some(ns) => {
                    let mut c = tokio::process::Command::new("ip");
                    c.args(["netns", "exec", ns, "nft", "-f", "-"]);
                    c
                }
                None => {
                    let mut c = tokio::process::Command::new("nft");
                    c.args(["-f", "-"]);
                    c
                }
            };
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run nft: {e}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(script.as_bytes())
                    .await
                    .map_err(|e| format!("writing to nft: {e}"))?;
            }
            let out = child
                .wait_with_output()
                .await
                .map_err(|e| format!("waiting for nft: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        })
    }
}

/// The nftables data plane.
pub struct Nft {
    opts: NftOptions,
    runner: Box<dyn NftRunner>,
    installed: Option<Installed>,
}

impl Nft {
    pub fn new(opts: NftOptions, runner: Box<dyn NftRunner>) -> Nft {
        Nft {
            opts,
            runner,
            installed: None,
        }
    }
}

impl DataPlane for Nft {
    fn sync<'a>(&'a mut self, desired: &'a Desired) -> BoxFuture<'a, Result<(), DataPlaneError>> {
        Box::pin(async move {
            let (script, now) = render(desired, &self.opts, self.installed.as_ref());
            match self.runner.run(&script).await {
                Ok(()) => {
                    self.installed = Some(now);
                    Ok(())
                }
                Err(reason) => {
                    // What is installed is no longer known: rebuild from scratch next time.
                    self.installed = None;
                    Err(DataPlaneError::Apply {
                        plane: "nftables",
                        reason,
                    })
                }
            }
        })
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), DataPlaneError>> {
        Box::pin(async move {
            let t = &self.opts.table;
            let script = delete_table(t);
            self.installed = None;
            self.runner
                .run(&script)
                .await
                .map_err(|reason| DataPlaneError::Apply {
                    plane: "nftables",
                    reason,
                })
        })
    }
}

#[cfg(test)]
mod tests;
