use std::time::Duration;

use super::*;
use crate::services::Protocol;

fn port(name: &str, backends: &[(&str, u16)]) -> ServicePort {
    let backends: Vec<Backend> = backends
        .iter()
        .map(|(ip, port)| Backend {
            ip: ip.parse().unwrap(),
            port: *port,
        })
        .collect();
    ServicePort {
        service: format!("ns/{name}"),
        port_name: String::new(),
        protocol: Protocol::Tcp,
        cluster_ips: vec!["10.89.0.10".parse().unwrap()],
        port: 80,
        node_port: None,
        external_ips: vec![],
        affinity: None,
        cluster_backends: backends.clone(),
        external_backends: backends,
        external_local: false,
    }
}

fn lines_with<'a>(script: &'a str, needle: &str) -> Vec<&'a str> {
    script.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn a_first_sync_replaces_the_table_and_later_ones_do_not() {
    let d = Desired {
        ports: vec![port("web", &[("10.88.1.2", 8080), ("10.88.1.3", 8080)])],
    };
    let (first, installed) = render(&d, &NftOptions::default(), None);
    assert!(first.contains("delete table ip rudder-proxy\n"), "{first}");
    let (second, again) = render(&d, &NftOptions::default(), Some(&installed));
    assert!(!second.contains("delete table"), "{second}");
    assert_eq!(installed, again);
    assert_eq!(
        installed.chains.len(),
        3,
        "one service chain, two endpoint chains"
    );
    let pick = lines_with(&first, "numgen random mod 2");
    assert_eq!(pick.len(), 1, "{first}");
    assert_eq!(lines_with(&first, "dnat to 10.88.1.2:8080").len(), 1);
    assert!(
        first.contains(
            "add element ip rudder-proxy service-ips { 10.89.0.10 . tcp . 80 : goto svc-"
        )
    );
}

#[test]
fn chains_no_longer_wanted_are_emptied_first_and_deleted_last() {
    let two = Desired {
        ports: vec![port("web", &[("10.88.1.2", 8080), ("10.88.1.3", 8080)])],
    };
    let (_, installed) = render(&two, &NftOptions::default(), None);
    let one = Desired {
        ports: vec![port("web", &[("10.88.1.2", 8080)])],
    };
    let (script, now) = render(&one, &NftOptions::default(), Some(&installed));
    let gone: Vec<&String> = installed.chains.difference(&now.chains).collect();
    assert_eq!(gone.len(), 1);
    assert!(gone[0].ends_with("__10.88.1.3/8080"));
    let flush = script
        .find(&format!("flush chain ip rudder-proxy {}", gone[0]))
        .unwrap();
    let delete = script
        .find(&format!("delete chain ip rudder-proxy {}", gone[0]))
        .unwrap();
    let last_element = script.rfind("add element").unwrap();
    assert!(flush < delete && last_element < delete, "{script}");
}

#[test]
fn no_endpoints_rejects_and_a_local_policy_drops() {
    let mut p = port("web", &[]);
    p.node_port = Some(30080);
    let (script, _) = render(
        &Desired {
            ports: vec![p.clone()],
        },
        &NftOptions::default(),
        None,
    );
    assert!(
        script
            .contains("add element ip rudder-proxy no-endpoint-services { 10.89.0.10 . tcp . 80 }")
    );
    assert!(script.contains("add element ip rudder-proxy no-endpoint-nodeports { tcp . 30080 }"));
    assert!(
        !script.contains("add element ip rudder-proxy service-ips"),
        "nothing to NAT: {script}"
    );
    p.external_local = true;
    let (script, _) = render(&Desired { ports: vec![p] }, &NftOptions::default(), None);
    assert!(
        script.contains("service-nodeports { tcp . 30080 : drop }"),
        "{script}"
    );
}

#[test]
fn masquerading_follows_policy_hairpin_and_cluster_cidr() {
    let mut p = port("web", &[("10.88.1.2", 8080)]);
    p.node_port = Some(30080);
    let opts = NftOptions {
        cluster_cidr: Some(("10.88.0.0".parse().unwrap(), 16)),
        ..Default::default()
    };
    let (script, _) = render(
        &Desired {
            ports: vec![p.clone()],
        },
        &opts,
        None,
    );
    assert_eq!(
        lines_with(&script, "ip saddr != 10.88.0.0/16 jump mark-for-masquerade").len(),
        1
    );
    assert_eq!(
        lines_with(&script, "ip saddr 10.88.1.2 jump mark-for-masquerade").len(),
        1
    );
    let ext: Vec<&str> = lines_with(&script, " ext-");
    assert!(
        ext.iter().any(|l| l.ends_with("jump mark-for-masquerade")),
        "{script}"
    );
    p.external_local = true;
    let (script, _) = render(&Desired { ports: vec![p] }, &opts, None);
    let ext: Vec<&str> = lines_with(&script, "add rule ip rudder-proxy ext-");
    assert!(
        !ext.iter().any(|l| l.ends_with("jump mark-for-masquerade")),
        "{script}"
    );
}

#[test]
fn affinity_sets_survive_syncs_until_their_timeout_changes() {
    let mut p = port("web", &[("10.88.1.2", 8080)]);
    p.affinity = Some(Duration::from_secs(60));
    let d = Desired {
        ports: vec![p.clone()],
    };
    let (first, installed) = render(&d, &NftOptions::default(), None);
    assert_eq!(
        lines_with(&first, "flags dynamic,timeout; timeout 60s").len(),
        1
    );
    assert_eq!(lines_with(&first, "update @aff-").len(), 1);
    let (second, _) = render(&d, &NftOptions::default(), Some(&installed));
    assert!(
        !second.contains("delete set"),
        "same timeout: the set and its clients stay"
    );
    p.affinity = Some(Duration::from_secs(30));
    let (third, now) = render(
        &Desired {
            ports: vec![p.clone()],
        },
        &NftOptions::default(),
        Some(&installed),
    );
    assert_eq!(lines_with(&third, "delete set").len(), 1, "{third}");
    p.affinity = None;
    let (fourth, _) = render(
        &Desired { ports: vec![p] },
        &NftOptions::default(),
        Some(&now),
    );
    assert_eq!(lines_with(&fourth, "delete set").len(), 1, "{fourth}");
}
