//! Translating the pod spec into what the runtime creates: the sandbox (hostname, IP, host
//! ports, /etc/hosts entries, DNS) and each container (command, env, mounts, user, resources).
//!
//! Resources as kubelet sets cgroups: a CPU request becomes CPU shares (1024 per core, at least
//! 2), a CPU limit a CFS quota over a 100 ms period, a memory limit the memory limit.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use rudder_api::k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use rudder_api::resources::{container_limits, container_requests};

use super::PodContext;
use super::env::{self, EnvContext};
use crate::runtime::{ContainerSpec, HostPort, Mount, Owner, Protocol, Resources, SandboxSpec};
use crate::volumes::PodVolumes;

/// Kubernetes' CFS period (100 ms) and the smallest quota it sets (1 ms).
const CPU_PERIOD: i64 = 100_000;
const MIN_QUOTA: i64 = 1_000;
const MIN_SHARES: i64 = 2;

pub fn owner(ctx: &PodContext, pod: &Pod, uid: &str) -> Owner {
    Owner {
        node: ctx.node_name.clone(),
        pod_uid: uid.to_string(),
        pod_name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
    }
}

/// The pod's hostname: `spec.hostname`, else its name, cut to 63 characters as kubelet does.
pub fn hostname(pod: &Pod) -> String {
    let h = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    h.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

pub fn sandbox_spec(ctx: &PodContext, pod: &Pod, uid: &str, ip: Ipv4Addr) -> SandboxSpec {
    let spec = pod.spec.clone().unwrap_or_default();
    let host = hostname(pod);
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut extra_hosts = Vec::new();
    if let Some(sub) = spec.subdomain.as_ref().filter(|s| !s.is_empty()) {
        extra_hosts.push(format!("{host}.{sub}.{ns}.svc.cluster.local:{ip}"));
    }
    for a in spec.host_aliases.iter().flatten() {
        for name in a.hostnames.iter().flatten() {
            extra_hosts.push(format!("{name}:{}", a.ip));
        }
    }
    let mut host_ports = Vec::new();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for p in c.ports.iter().flatten() {
            let (Some(hp), Ok(cp)) = (p.host_port, u16::try_from(p.container_port)) else {
                continue;
            };
            let Ok(hp) = u16::try_from(hp) else { continue };
            if hp == 0 {
                continue;
            }
            host_ports.push(HostPort {
                host_ip: p.host_ip.clone().unwrap_or_default(),
                host_port: hp,
                container_port: cp,
                protocol: if p.protocol.as_deref() == Some("UDP") {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
            });
        }
    }
    let cluster_dns = ctx
        .cluster_dns
        .as_deref()
        .map(|server| (server, ctx.cluster_domain.as_str()));
    let (dns_servers, dns_search, dns_options) = dns(cluster_dns, &spec, &ns);
    SandboxSpec {
        owner: owner(ctx, pod, uid),
        hostname: host,
        network: ctx.network.clone(),
        ip,
        host_ports,
        extra_hosts,
        dns_servers,
        dns_search,
        dns_options,
    }
}

/// The pod's resolver settings by its `dnsPolicy`, as kubelet sets them:
/// - `ClusterFirst` (the default): the cluster DNS server, the search paths
///   `<ns>.svc.<domain> svc.<domain> <domain>` and `ndots:5`, so a Service's short name
///   resolves within the pod's namespace; for a host-network pod it means `Default`.
/// - `ClusterFirstWithHostNet`: the same, also for host-network pods.
/// - `Default`: the node's own resolution (nothing here: the engine's resolver forwards to the
///   host's servers).
/// - `None`: only what `dnsConfig` gives.
///
/// Then `dnsConfig` adds its nameservers and searches (duplicates dropped) and its options,
/// which replace options of the same name. With no cluster DNS configured, `ClusterFirst`
/// falls back to `Default`.
fn dns(
    cluster_dns: Option<(&str, &str)>,
    spec: &PodSpec,
    ns: &str,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let host_network = spec.host_network == Some(true);
    let cluster = match spec.dns_policy.as_deref().unwrap_or("ClusterFirst") {
        "ClusterFirst" => !host_network,
        "ClusterFirstWithHostNet" => true,
        _ => false,
    };
    let (mut servers, mut search, mut options) = (vec![], vec![], vec![]);
    if let (true, Some((server, domain))) = (cluster, cluster_dns) {
        let d = domain.trim_end_matches('.');
        servers.push(server.to_string());
        search = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.to_string()];
        options.push("ndots:5".to_string());
    }
    if let Some(cfg) = &spec.dns_config {
        for s in cfg.nameservers.iter().flatten() {
            if !servers.contains(s) {
                servers.push(s.clone());
            }
        }
        for s in cfg.searches.iter().flatten() {
            if !search.contains(s) {
                search.push(s.clone());
            }
        }
        for o in cfg.options.iter().flatten() {
            let Some(name) = o.name.clone() else { continue };
            options.retain(|have: &String| have.split(':').next() != Some(name.as_str()));
            options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    (servers, search, options)
}

/// Where a container instance's termination message lands on the node.
pub fn termination_log(ctx: &PodContext, uid: &str, name: &str, attempt: u32) -> PathBuf {
    ctx.pods_dir
        .join(uid)
        .join("containers")
        .join(name)
        .join(format!("{attempt}-termination-log"))
}

pub fn resources(c: &Container) -> Resources {
    let req = container_requests(c);
    let lim = container_limits(c);
    Resources {
        cpu_shares: Some((req.milli_cpu * 1024 / 1000).max(MIN_SHARES)),
        cpu_quota: (lim.milli_cpu > 0).then(|| (lim.milli_cpu * CPU_PERIOD / 1000).max(MIN_QUOTA)),
        cpu_period: (lim.milli_cpu > 0).then_some(CPU_PERIOD),
        memory_bytes: (lim.memory > 0).then_some(lim.memory),
    }
}

/// The user to run as: the container's securityContext over the pod's.
fn user(pod: &Pod, c: &Container) -> Option<String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let uid = csc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|s| s.run_as_user));
    let gid = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group));
    match (uid, gid) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        // A group alone keeps the image's user.
        (None, Some(g)) => Some(format!("0:{g}")),
        (None, None) => None,
    }
}

/// The container as the runtime creates it. `Err` is the CreateContainerConfigError message.
pub async fn container_spec(
    ctx: &PodContext,
    pod: &Pod,
    c: &Container,
    uid: &str,
    attempt: u32,
    pod_ip: Option<Ipv4Addr>,
    volumes: Option<&PodVolumes>,
) -> Result<ContainerSpec, String> {
    let ip = pod_ip.map(|i| i.to_string()).unwrap_or_default();
    let ectx = EnvContext {
        pod,
        node_name: &ctx.node_name,
        host_ip: &ctx.host_ip,
        pod_ip: &ip,
        node_allocatable_cpu_milli: ctx.allocatable_cpu_milli,
        node_allocatable_memory_bytes: ctx.allocatable_memory,
    };
    let envs = env::container_env(&ectx, c, &*ctx.objects)
        .await
        .map_err(|e| e.to_string())?;
    let expand = |v: &Option<Vec<String>>| {
        v.as_ref()
            .map(|v| v.iter().map(|s| env::expand(s, &envs)).collect::<Vec<_>>())
    };
    let mut mounts: Vec<Mount> = match volumes {
        Some(v) => ctx.volumes.mounts_for(v, c).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let term_path = c
        .termination_message_path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/dev/termination-log".into());
    let log = termination_log(ctx, uid, &c.name, attempt);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(&log, b"").map_err(|e| format!("creating {}: {e}", log.display()))?;
    mounts.push(Mount {
        source: log,
        target: term_path,
        read_only: false,
    });
    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    if privileged && !ctx.allow_privileged {
        return Err(format!(
            "container {} asks for privileged mode, which this node does not allow (--allow-privileged)",
            c.name
        ));
    }
    Ok(ContainerSpec {
        owner: owner(ctx, pod, uid),
        name: c.name.clone(),
        attempt,
        image: c.image.clone().unwrap_or_default(),
        entrypoint: expand(&c.command),
        cmd: expand(&c.args),
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        env: envs,
        mounts,
        user: user(pod, c),
        read_only_rootfs: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        privileged,
        resources: resources(c),
        tty: c.tty.unwrap_or(false),
        stdin: c.stdin.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cgroup_values_from_requests_and_limits() {
        let c: Container = serde_json::from_value(json!({"name": "a", "resources": {
            "requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}))
        .expect("container");
        let r = resources(&c);
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!(r.cpu_quota, Some(50_000));
        assert_eq!(r.cpu_period, Some(100_000));
        assert_eq!(r.memory_bytes, Some(64 << 20));
        let none: Container = serde_json::from_value(json!({"name": "a"})).expect("container");
        assert_eq!(
            resources(&none),
            Resources {
                cpu_shares: Some(2),
                ..Resources::default()
            }
        );
    }

    #[test]
    fn dns_follows_the_policy_then_dns_config() {
        let spec = |v: serde_json::Value| -> PodSpec {
            let mut v = v;
            v["containers"] = json!([]);
            serde_json::from_value(v).expect("spec")
        };
        let cluster = Some(("10.88.0.1", "cluster.local"));
        let (servers, search, options) = dns(cluster, &spec(json!({})), "shop");
        assert_eq!(servers, ["10.88.0.1"]);
        assert_eq!(
            search,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(options, ["ndots:5"]);
        let host = spec(json!({"hostNetwork": true}));
        assert!(
            dns(cluster, &host, "shop").0.is_empty(),
            "ClusterFirst on the host network is Default"
        );
        let with_host = spec(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}));
        assert_eq!(dns(cluster, &with_host, "shop").0, ["10.88.0.1"]);
        assert!(
            dns(cluster, &spec(json!({"dnsPolicy": "Default"})), "shop")
                .0
                .is_empty()
        );
        assert!(
            dns(None, &spec(json!({})), "shop").0.is_empty(),
            "no cluster DNS: Default"
        );
        let merged = spec(
            json!({"dnsConfig": {"nameservers": ["192.0.2.53", "10.88.0.1"],
            "searches": ["corp.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
        );
        let (servers, search, options) = dns(cluster, &merged, "shop");
        assert_eq!(servers, ["10.88.0.1", "192.0.2.53"]);
        assert_eq!(search.last().map(String::as_str), Some("corp.example"));
        assert_eq!(
            options,
            ["ndots:2", "edns0"],
            "an option replaces the one of its name"
        );
        let none = spec(json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["192.0.2.53"]}}));
        let (servers, search, options) = dns(cluster, &none, "shop");
        assert_eq!(
            (servers, search.len(), options.len()),
            (vec!["192.0.2.53".to_string()], 0, 0)
        );
    }

    #[test]
    fn hostnames_and_users() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "web-0"},
            "spec": {"containers": [], "securityContext": {"runAsUser": 1000, "runAsGroup": 3000}}}))
        .expect("pod");
        assert_eq!(hostname(&p), "web-0");
        let c: Container =
            serde_json::from_value(json!({"name": "a", "securityContext": {"runAsUser": 7}}))
                .expect("container");
        assert_eq!(user(&p, &c).as_deref(), Some("7:3000"));
        let long: Pod = serde_json::from_value(
            json!({"metadata": {"name": format!("{}-x", "a".repeat(62))},
            "spec": {"containers": []}}),
        )
        .expect("pod");
        assert_eq!(hostname(&long), "a".repeat(62));
    }
}
