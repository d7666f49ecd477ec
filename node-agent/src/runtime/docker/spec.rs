//! Translation between the runtime's types and the Engine API's: container names, create
//! bodies for sandboxes and containers, and inspect answers back into [`ContainerInfo`].
//!
//! Only fields of API 1.41 (Docker 20.10) are set.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointIpamConfig,
    EndpointSettings, HostConfig, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};

use super::super::{
    ContainerInfo, ContainerSpec, Owner, Protocol, Role, SandboxSpec, State, labels, owner_labels,
    parse_labels,
};

/// Docker allows `[a-zA-Z0-9][a-zA-Z0-9_.-]*` in names; anything else becomes `-`.
fn name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn pod_prefix(owner: &Owner) -> String {
    let uid8: String = owner.pod_uid.chars().take(8).collect();
    format!(
        "rudder_{}_{}_{}",
        name_part(&owner.namespace),
        name_part(&owner.pod_name),
        name_part(&uid8)
    )
}

/// `rudder_<ns>_<pod>_<uid8>_POD`.
pub(super) fn sandbox_name(owner: &Owner) -> String {
    format!("{}_{}", pod_prefix(owner), labels::SANDBOX_NAME)
}

/// `rudder_<ns>_<pod>_<uid8>_<container>_<attempt>`.
pub(super) fn container_name(owner: &Owner, name: &str, attempt: u32) -> String {
    format!("{}_{}_{attempt}", pod_prefix(owner), name_part(name))
}

fn hash_map(m: BTreeMap<String, String>) -> HashMap<String, String> {
    m.into_iter().collect()
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn non_empty(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

pub(super) fn sandbox_body(spec: &SandboxSpec, image: &str) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for hp in &spec.host_ports {
        let key = format!("{}/{}", hp.container_port, protocol(hp.protocol));
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(hp.host_ip.clone()),
                host_port: Some(hp.host_port.to_string()),
            });
    }
    let endpoint = EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(spec.ip.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_string()),
        hostname: Some(spec.hostname.clone()),
        labels: Some(hash_map(owner_labels(&spec.owner, labels::SANDBOX_NAME, 0))),
        exposed_ports: non_empty(&exposed),
        host_config: Some(HostConfig {
            network_mode: Some(spec.network.clone()),
            // Containers join this IPC namespace; the engine's default may be "private".
            ipc_mode: Some("shareable".to_string()),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            extra_hosts: non_empty(&spec.extra_hosts),
            dns: non_empty(&spec.dns_servers),
            dns_search: non_empty(&spec.dns_search),
            dns_options: non_empty(&spec.dns_options),
            restart_policy: Some(no_restart()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(spec.network.clone(), endpoint)])),
        }),
        ..Default::default()
    }
}

fn no_restart() -> RestartPolicy {
    RestartPolicy {
        name: Some(RestartPolicyNameEnum::NO),
        maximum_retry_count: None,
    }
}

/// `KEY=VALUE` in first-appearance order, a later value of a key replacing an earlier one.
pub(super) fn env_list(env: &[(String, String)]) -> Vec<String> {
    let mut order: Vec<&str> = Vec::new();
    let mut last: HashMap<&str, &str> = HashMap::new();
    for (k, v) in env {
        if last.insert(k, v).is_none() {
            order.push(k);
        }
    }
    order
        .into_iter()
        .map(|k| format!("{k}={}", last.get(k).copied().unwrap_or_default()))
        .collect()
}

pub(super) fn container_body(sandbox_id: &str, spec: &ContainerSpec) -> ContainerCreateBody {
    let joined = format!("container:{sandbox_id}");
    // Binds (not Mounts) so that a missing host directory is created, as kubelet's
    // dockershim did for hostPath volumes.
    let binds: Vec<String> = spec
        .mounts
        .iter()
        .map(|m| {
            format!(
                "{}:{}:{}",
                m.source.display(),
                m.target,
                if m.read_only { "ro" } else { "rw" }
            )
        })
        .collect();
    let r = &spec.resources;
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.cmd.clone(),
        working_dir: spec.working_dir.clone(),
        env: Some(env_list(&spec.env)),
        user: spec.user.clone(),
        tty: Some(spec.tty),
        open_stdin: Some(spec.stdin),
        labels: Some(hash_map(owner_labels(
            &spec.owner,
            &spec.name,
            spec.attempt,
        ))),
        // No hostname: the engine refuses one with a joined network namespace, and the UTS
        // namespace (so the hostname) is the sandbox's.
        host_config: Some(HostConfig {
            network_mode: Some(joined.clone()),
            ipc_mode: Some(joined),
            binds: non_empty(&binds),
            readonly_rootfs: Some(spec.read_only_rootfs),
            privileged: Some(spec.privileged),
            cpu_shares: r.cpu_shares,
            cpu_quota: r.cpu_quota,
            cpu_period: r.cpu_period,
            memory: r.memory_bytes,
            restart_policy: Some(no_restart()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's `/etc/resolv.conf` when it names its own servers. On a user-defined network the
/// engine writes its embedded resolver (127.0.0.11) there instead, forwarding to the servers
/// given; pods must see theirs, as kubelet's dockershim also ensured by rewriting the file.
pub(super) fn resolv_conf(spec: &SandboxSpec) -> Option<String> {
    if spec.dns_servers.is_empty() {
        return None;
    }
    let mut out = String::new();
    for s in &spec.dns_servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !spec.dns_search.is_empty() {
        out.push_str(&format!("search {}\n", spec.dns_search.join(" ")));
    }
    if !spec.dns_options.is_empty() {
        out.push_str(&format!("options {}\n", spec.dns_options.join(" ")));
    }
    Some(out)
}

/// The engine writes `0001-01-01T00:00:00Z` for "never".
pub(super) fn timestamp(s: Option<&str>) -> Option<jiff::Timestamp> {
    let t: jiff::Timestamp = s?.parse().ok()?;
    (t.as_second() > 0).then_some(t)
}

/// Reads back a container the agent created (or any other, with default ownership).
pub(super) fn info_from_inspect(r: ContainerInspectResponse) -> ContainerInfo {
    let config = r.config.unwrap_or_default();
    let labels: BTreeMap<String, String> = config.labels.unwrap_or_default().into_iter().collect();
    let (owner, name, attempt) = parse_labels(&labels).unwrap_or_else(|| {
        let name = r.name.clone().unwrap_or_default();
        (
            Owner::default(),
            name.trim_start_matches('/').to_string(),
            0,
        )
    });
    let role = if name == labels::SANDBOX_NAME {
        Role::Sandbox
    } else {
        Role::Container
    };
    let st = r.state.unwrap_or_default();
    let error = st.error.unwrap_or_default();
    let code = st.exit_code.unwrap_or(0);
    let state = match st.status {
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::STOPPING,
        ) => State::Running,
        Some(
            ContainerStateStatusEnum::EXITED
            | ContainerStateStatusEnum::DEAD
            | ContainerStateStatusEnum::REMOVING,
        ) => State::Exited,
        // A failed start leaves the engine's status at "created", with the error and an exit
        // code (127 for a missing executable): it ran as far as it will.
        _ if !error.is_empty() || code != 0 => State::Exited,
        _ => State::Created,
    };
    let ip = if role == Role::Sandbox {
        r.network_settings
            .and_then(|n| n.networks)
            .into_iter()
            .flatten()
            .filter_map(|(_, ep)| ep.ip_address)
            .find_map(|ip| ip.parse::<Ipv4Addr>().ok())
    } else {
        None
    };
    ContainerInfo {
        id: r.id.unwrap_or_default(),
        role,
        owner,
        name,
        attempt,
        image: config.image.unwrap_or_default(),
        image_id: r.image.unwrap_or_default(),
        state,
        exit_code: (state == State::Exited).then_some(code),
        oom_killed: st.oom_killed.unwrap_or(false),
        error,
        created_at: timestamp(r.created.as_deref()),
        started_at: timestamp(st.started_at.as_deref()),
        finished_at: timestamp(st.finished_at.as_deref()),
        ip,
    }
}

/// Splits `repo[:tag]` for a pull; no tag means `latest` (an empty tag would pull every tag).
/// A digest reference is pulled as it is.
pub(super) fn pull_reference(image: &str) -> (String, Option<String>) {
    if image.contains('@') {
        return (image.to_string(), None);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => {
            let repo = &image[..image.len() - tag.len() - 1];
            (repo.to_string(), Some(tag.to_string()))
        }
        None => (image.to_string(), Some("latest".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{HostPort, Mount};
    use bollard::models::{ContainerConfig, ContainerState};

    fn owner() -> Owner {
        Owner {
            node: "n1".into(),
            pod_uid: "0123456789abcdef".into(),
            pod_name: "web".into(),
            namespace: "default".into(),
        }
    }

    #[test]
    fn names_follow_the_kubelet_pattern() {
        assert_eq!(sandbox_name(&owner()), "rudder_default_web_01234567_POD");
        assert_eq!(
            container_name(&owner(), "app", 2),
            "rudder_default_web_01234567_app_2"
        );
        let odd = Owner {
            pod_name: "a b/c".into(),
            ..owner()
        };
        assert_eq!(sandbox_name(&odd), "rudder_default_a-b-c_01234567_POD");
    }

    #[test]
    fn env_keeps_first_order_and_last_value() {
        let env = [("A", "1"), ("B", "2"), ("A", "3")].map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(env_list(&env), ["A=3", "B=2"]);
    }

    #[test]
    fn sandbox_body_has_the_static_ip_ports_and_labels() {
        let spec = SandboxSpec {
            owner: owner(),
            hostname: "web".into(),
            network: "rudder".into(),
            ip: Ipv4Addr::new(10, 88, 0, 5),
            host_ports: vec![
                HostPort {
                    host_ip: String::new(),
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                },
                HostPort {
                    host_ip: "127.0.0.1".into(),
                    host_port: 8081,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                },
            ],
            extra_hosts: vec!["db:10.0.0.1".into()],
            dns_servers: vec![],
            dns_search: vec![],
            dns_options: vec![],
        };
        let b = sandbox_body(&spec, "rudder/pause:x");
        let hc = b.host_config.unwrap_or_default();
        let bindings = hc.port_bindings.unwrap_or_default();
        assert_eq!(bindings["80/tcp"].as_ref().map(Vec::len), Some(2));
        assert_eq!(b.exposed_ports, Some(vec!["80/tcp".to_string()]));
        assert_eq!(hc.dns, None);
        let ep = &b
            .networking_config
            .unwrap_or_default()
            .endpoints_config
            .unwrap_or_default()["rudder"];
        assert_eq!(
            ep.ipam_config
                .as_ref()
                .and_then(|c| c.ipv4_address.as_deref()),
            Some("10.88.0.5")
        );
        assert_eq!(
            b.labels.unwrap_or_default()[labels::CONTAINER],
            labels::SANDBOX_NAME
        );
        assert_eq!(resolv_conf(&spec), None, "no servers: the engine's file");
        let with_dns = SandboxSpec {
            dns_servers: vec!["10.96.0.10".into()],
            dns_search: vec!["a.svc".into(), "svc".into()],
            dns_options: vec!["ndots:5".into()],
            ..spec
        };
        assert_eq!(
            resolv_conf(&with_dns).as_deref(),
            Some("nameserver 10.96.0.10\nsearch a.svc svc\noptions ndots:5\n")
        );
    }

    #[test]
    fn container_body_joins_the_sandbox() {
        let spec = ContainerSpec {
            owner: owner(),
            name: "app".into(),
            image: "img".into(),
            mounts: vec![Mount {
                source: "/data".into(),
                target: "/d".into(),
                read_only: true,
            }],
            ..Default::default()
        };
        let b = container_body("sb1", &spec);
        let hc = b.host_config.unwrap_or_default();
        assert_eq!(hc.network_mode.as_deref(), Some("container:sb1"));
        assert_eq!(hc.ipc_mode.as_deref(), Some("container:sb1"));
        assert_eq!(hc.binds, Some(vec!["/data:/d:ro".to_string()]));
        assert_eq!(b.hostname, None);
    }

    #[test]
    fn a_failed_start_reads_as_exited_with_the_engines_code() {
        let r = ContainerInspectResponse {
            id: Some("c1".into()),
            config: Some(ContainerConfig {
                labels: Some(hash_map(owner_labels(&owner(), "app", 1))),
                image: Some("img".into()),
                ..Default::default()
            }),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::CREATED),
                exit_code: Some(127),
                error: Some("exec: \"/nope\": no such file or directory".into()),
                started_at: Some("0001-01-01T00:00:00Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let i = info_from_inspect(r);
        assert_eq!((i.state, i.exit_code), (State::Exited, Some(127)));
        assert_eq!(
            (i.role, i.name.as_str(), i.attempt),
            (Role::Container, "app", 1)
        );
        assert_eq!(i.started_at, None);
    }

    #[test]
    fn timestamps_parse_and_zero_is_none() {
        assert_eq!(timestamp(Some("0001-01-01T00:00:00Z")), None);
        let t = timestamp(Some("2024-05-01T10:00:00.123456789Z"));
        assert_eq!(t.map(|t| t.subsec_nanosecond()), Some(123_456_789));
    }

    #[test]
    fn pull_references() {
        let p = |s| pull_reference(s);
        assert_eq!(p("busybox"), ("busybox".into(), Some("latest".into())));
        assert_eq!(p("busybox:1.36"), ("busybox".into(), Some("1.36".into())));
        assert_eq!(
            p("127.0.0.1:5000/x/y"),
            ("127.0.0.1:5000/x/y".into(), Some("latest".into()))
        );
        assert_eq!(
            p("127.0.0.1:5000/x/y:v2"),
            ("127.0.0.1:5000/x/y".into(), Some("v2".into()))
        );
        assert_eq!(p("x@sha256:ab"), ("x@sha256:ab".into(), None));
    }
}
