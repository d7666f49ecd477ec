//! The nftables data plane against the kernel, inside network namespaces this test creates:
//! a "node" namespace holding the rules and the client, joined by a veth pair to a "pod"
//! namespace where busybox httpd serves as two endpoints. Traffic goes only to addresses inside
//! those namespaces. Needs root, `ip`, `nft` and /bin/busybox (the CI script installs it); fails
//! loudly without them.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rudder_proxy::dataplane::DataPlane;
use rudder_proxy::dataplane::nft::{Nft, NftCommand, NftOptions};
use rudder_proxy::services::{Backend, Desired, Protocol, ServicePort};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces and the servers in them; all removed on drop, also when a test fails.
struct Net {
    node: String,
    pod: String,
    subnet: u32,
    servers: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Net {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        for ns in [&self.node, &self.pod] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Net {
    fn new() -> Net {
        assert!(
            std::path::Path::new("/bin/busybox").exists(),
            "this test needs /bin/busybox (Debian's busybox-static)"
        );
        let n = std::process::id() % 200 + NEXT.fetch_add(1, Ordering::SeqCst) * 7 % 50;
        let subnet = n % 250 + 1;
        let node = format!("rp-node-{}-{subnet}", std::process::id());
        let pod = format!("rp-pod-{}-{subnet}", std::process::id());
        let net = Net {
            node: node.clone(),
            pod: pod.clone(),
            subnet,
            servers: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        sh(&["ip", "netns", "add", &node]);
        sh(&["ip", "netns", "add", &pod]);
        let (a, b) = (format!("rpn{subnet}"), format!("rpp{subnet}"));
        sh(&[
            "ip", "-n", &node, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &pod,
        ]);
        let s = subnet;
        for (ns, dev, host) in [(&node, &a, 1), (&pod, &b, 2), (&pod, &b, 3)] {
            let addr = format!("10.250.{s}.{host}/24");
            sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev]);
        }
        for (ns, dev) in [(&node, &a), (&pod, &b)] {
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip",
            "-n",
            &pod,
            "route",
            "add",
            "default",
            "via",
            &format!("10.250.{s}.1"),
        ]);
        // The Service range is routed to the pod link, as Rudder's Docker network covers it, so
        // a Service address never follows a default route out.
        sh(&[
            "ip",
            "-n",
            &node,
            "route",
            "add",
            &format!("10.251.{s}.0/24"),
            "dev",
            &a,
        ]);
        net
    }

    fn ip(&self, host: u8) -> String {
        format!("10.250.{}.{host}", self.subnet)
    }

    fn service_ip(&self) -> String {
        format!("10.251.{}.10", self.subnet)
    }

    /// busybox httpd on `ip:8080` in the pod namespace answering with `body`.
    fn serve(&mut self, ip: &str, body: &str) {
        let root = self.dir.path().join(ip);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), body).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.pod,
                "/bin/busybox",
                "httpd",
                "-f",
                "-p",
            ])
            .arg(format!("{ip}:8080"))
            .arg("-h")
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("httpd starts");
        self.servers.push(child);
    }

    /// GET from the node namespace: the body, or the error busybox printed.
    fn get(&self, url: &str) -> Result<String, String> {
        let out = Command::new("ip")
            // busybox's `-T` crashes; coreutils' timeout bounds the call instead.
            .args([
                "netns",
                "exec",
                &self.node,
                "timeout",
                "3",
                "/bin/busybox",
                "wget",
                "-q",
                "-O",
                "-",
                url,
            ])
            .output()
            .expect("wget runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn dataplane(&self) -> Nft {
        Nft::new(
            NftOptions::default(),
            Box::new(NftCommand {
                netns: Some(self.node.clone()),
            }),
        )
    }
}

fn service(net: &Net, backends: &[&str], node_port: Option<u16>) -> Desired {
    let backends: Vec<Backend> = backends
        .iter()
        .map(|ip| Backend {
            ip: ip.parse().unwrap(),
            port: 8080,
        })
        .collect();
    Desired {
        ports: vec![ServicePort {
            service: "default/web".into(),
            port_name: String::new(),
            protocol: Protocol::Tcp,
            cluster_ips: vec![net.service_ip().parse().unwrap()],
            port: 80,
            node_port,
            external_ips: vec![],
            affinity: None,
            cluster_backends: backends.clone(),
            external_backends: backends,
            external_local: false,
        }],
    }
}

async fn wait_serving(net: &Net, url: &str) {
    for _ in 0..50 {
        if net.get(url).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered");
}

/// The namespaces with endpoints `pod-a` at .2 and `pod-b` at .3, both answering.
async fn two_pods() -> (Net, String, String) {
    let mut net = Net::new();
    let (a, b) = (net.ip(2), net.ip(3));
    net.serve(&a, "pod-a");
    net.serve(&b, "pod-b");
    wait_serving(&net, &format!("http://{a}:8080/")).await;
    wait_serving(&net, &format!("http://{b}:8080/")).await;
    (net, a, b)
}

#[tokio::test]
async fn cluster_ip_and_node_port_spread_over_endpoints_and_follow_syncs() {
    let (net, a, b) = two_pods().await;

    let mut dp = net.dataplane();
    let vip = format!("http://{}/", net.service_ip());
    assert!(
        net.get(&vip).is_err(),
        "nothing answers before the first sync"
    );
    dp.sync(&service(&net, &[&a, &b], Some(30080)))
        .await
        .expect("sync");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        seen.insert(net.get(&vip).expect("the cluster IP answers"));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["pod-a", "pod-b"],
        "connections spread over both endpoints"
    );
    let node_port = format!("http://{}:30080/", net.ip(1));
    assert!(net.get(&node_port).is_ok_and(|b| b.starts_with("pod-")));

    // One endpoint leaves: new connections go only to the other.
    dp.sync(&service(&net, &[&b], Some(30080)))
        .await
        .expect("sync");
    for _ in 0..10 {
        assert_eq!(net.get(&vip).as_deref(), Ok("pod-b"));
    }
    // None left: refused at once, not a timeout.
    dp.sync(&service(&net, &[], Some(30080)))
        .await
        .expect("sync");
    let started = std::time::Instant::now();
    let err = net.get(&vip).expect_err("no endpoint: rejected");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "rejected quickly: {err}"
    );
    assert!(net.get(&node_port).is_err());

    dp.cleanup().await.expect("cleanup");
    let out = Command::new("ip")
        .args(["netns", "exec", &net.node, "nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("rudder-proxy"),
        "cleanup removes the table"
    );
}

#[tokio::test]
async fn a_refused_transaction_applies_nothing_and_the_next_sync_rebuilds() {
    let mut net = Net::new();
    let a = net.ip(2);
    net.serve(&a, "pod-a");
    wait_serving(&net, &format!("http://{a}:8080/")).await;
    let mut dp = net.dataplane();
    dp.sync(&service(&net, &[&a], None)).await.expect("sync");
    let vip = format!("http://{}/", net.service_ip());
    assert_eq!(net.get(&vip).as_deref(), Ok("pod-a"));

    // A table name nft refuses: the whole transaction fails and the old rules stay.
    let mut bad = Nft::new(
        NftOptions {
            table: "bad name".into(),
            ..Default::default()
        },
        Box::new(NftCommand {
            netns: Some(net.node.clone()),
        }),
    );
    let err = bad
        .sync(&service(&net, &[], None))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("nftables"), "{err}");
    assert_eq!(net.get(&vip).as_deref(), Ok("pod-a"));
    // Another process's leftovers: a fresh data plane replaces the table whole.
    let mut fresh = net.dataplane();
    fresh.sync(&service(&net, &[], None)).await.expect("sync");
    assert!(net.get(&vip).is_err());
}

#[tokio::test]
async fn client_ip_affinity_keeps_a_client_on_one_endpoint() {
    let (net, a, b) = two_pods().await;
    let mut d = service(&net, &[&a, &b], None);
    d.ports[0].affinity = Some(Duration::from_secs(60));
    let mut dp = net.dataplane();
    dp.sync(&d).await.expect("sync");
    let vip = format!("http://{}/", net.service_ip());
    let first = net.get(&vip).expect("answers");
    for _ in 0..20 {
        assert_eq!(
            net.get(&vip).as_ref(),
            Ok(&first),
            "one client, one endpoint"
        );
    }
    // A resync with the same timeout keeps the client where it was.
    dp.sync(&d).await.expect("sync");
    for _ in 0..5 {
        assert_eq!(net.get(&vip).as_ref(), Ok(&first));
    }
}

/// The userspace plane's redirect table is accepted by the kernel as one transaction (its
/// listeners live in this process's namespace, so the forwarding itself is tested in-process).
#[tokio::test]
async fn the_userspace_redirect_rules_apply() {
    let net = Net::new();
    let mut dp = rudder_proxy::dataplane::userspace::Userspace::new(
        "rudder-proxy-us",
        Box::new(NftCommand {
            netns: Some(net.node.clone()),
        }),
    );
    let a = net.ip(2);
    let mut d = service(&net, &[&a], Some(30080));
    d.ports.push(service(&net, &[], None).ports.remove(0));
    d.ports[1].service = "default/empty".into();
    d.ports[1].cluster_ips = vec![format!("10.251.{}.11", net.subnet).parse().unwrap()];
    dp.sync(&d).await.expect("the kernel takes the table");
    dp.sync(&d).await.expect("and a second sync");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.node,
            "nft",
            "list",
            "table",
            "ip",
            "rudder-proxy-us",
        ])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&out.stdout);
    assert!(rules.contains("redirect to :"), "{rules}");
    assert!(rules.contains("reject"), "{rules}");
    dp.cleanup().await.expect("cleanup");
}
