use std::sync::Mutex as StdMutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Records the scripts instead of running nft; the redirect rules are the kernel's part.
#[derive(Clone, Default)]
struct Scripts(Arc<StdMutex<Vec<String>>>);

impl NftRunner for Scripts {
    fn run<'a>(&'a self, script: &'a str) -> BoxFuture<'a, Result<(), String>> {
        self.0.lock().unwrap().push(script.to_string());
        Box::pin(async { Ok(()) })
    }
}

/// A backend on 127.0.0.1 that answers every connection with `name`.
async fn backend(name: &'static str) -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = c.write_all(name.as_bytes()).await;
            });
        }
    });
    Backend {
        ip: Ipv4Addr::LOCALHOST,
        port,
    }
}

/// A port nothing listens on.
async fn closed() -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    Backend {
        ip: Ipv4Addr::LOCALHOST,
        port,
    }
}

fn port(backends: Vec<Backend>) -> ServicePort {
    ServicePort {
        service: "ns/web".into(),
        port_name: String::new(),
        protocol: Protocol::Tcp,
        cluster_ips: vec!["10.96.0.10".parse().unwrap()],
        port: 80,
        node_port: Some(30080),
        external_ips: vec![],
        affinity: None,
        cluster_backends: backends.clone(),
        external_backends: backends,
        external_local: false,
    }
}

async fn ask(local: u16) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out).await;
    out
}

fn plane() -> (Userspace, Scripts) {
    let scripts = Scripts::default();
    let mut u = Userspace::new("rudder-proxy-us", Box::new(scripts.clone()));
    u.bind = Ipv4Addr::LOCALHOST;
    (u, scripts)
}

#[tokio::test]
async fn connections_go_round_robin_and_skip_a_refusing_endpoint() {
    let (a, b, dead) = (backend("a").await, backend("b").await, closed().await);
    let (mut u, scripts) = plane();
    u.sync(&Desired {
        ports: vec![port(vec![a, dead, b])],
    })
    .await
    .unwrap();
    let local = u.listener_port("ns/web").unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(ask(local).await);
    }
    assert!(
        seen.iter().all(|s| s == "a" || s == "b"),
        "the refusing endpoint is skipped: {seen:?}"
    );
    assert!(
        seen.contains(&"a".to_string()) && seen.contains(&"b".to_string()),
        "{seen:?}"
    );
    let script = scripts.0.lock().unwrap()[0].clone();
    assert!(
        script.contains(&format!(
            "ip daddr 10.96.0.10 tcp dport 80 redirect to :{local}"
        )),
        "{script}"
    );
    assert!(
        script.contains(&format!("tcp dport 30080 redirect to :{local}")),
        "{script}"
    );
    assert!(
        script.contains("delete table ip rudder-proxy-us"),
        "the first sync replaces the table"
    );
}

#[tokio::test]
async fn endpoints_change_in_place_and_a_gone_port_stops_listening() {
    let (a, b) = (backend("a").await, backend("b").await);
    let (mut u, scripts) = plane();
    u.sync(&Desired {
        ports: vec![port(vec![a])],
    })
    .await
    .unwrap();
    let local = u.listener_port("ns/web").unwrap();
    assert_eq!(ask(local).await, "a");
    u.sync(&Desired {
        ports: vec![port(vec![b])],
    })
    .await
    .unwrap();
    assert_eq!(u.listener_port("ns/web"), Some(local), "the same listener");
    for _ in 0..3 {
        assert_eq!(ask(local).await, "b");
    }
    // No endpoints: the listener goes and the port is rejected by the rules.
    u.sync(&Desired {
        ports: vec![port(vec![])],
    })
    .await
    .unwrap();
    assert_eq!(u.listener_port("ns/web"), None);
    let last = scripts.0.lock().unwrap().last().unwrap().clone();
    assert!(
        last.contains("ct state new ip daddr 10.96.0.10 tcp dport 80 reject"),
        "{last}"
    );
    assert!(
        !last.contains("delete table"),
        "later syncs do not rebuild the table"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(("127.0.0.1", local)).await.is_err(),
        "stopped listening"
    );
}

#[tokio::test]
async fn client_ip_affinity_keeps_a_client_on_its_endpoint() {
    let (a, b) = (backend("a").await, backend("b").await);
    let (mut u, _) = plane();
    let mut p = port(vec![a, b]);
    p.affinity = Some(Duration::from_secs(60));
    u.sync(&Desired { ports: vec![p] }).await.unwrap();
    let local = u.listener_port("ns/web").unwrap();
    let first = ask(local).await;
    for _ in 0..5 {
        assert_eq!(ask(local).await, first);
    }
}
