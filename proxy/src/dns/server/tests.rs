use std::time::Instant;

use hickory_proto::op::Query;
use serde_json::{Value, json};

use super::*;

fn zone() -> Zone {
    let svc = json!({"metadata": {"namespace": "ns", "name": "web"},
                     "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}});
    let ext = json!({"metadata": {"namespace": "ns", "name": "ext"},
                     "spec": {"type": "ExternalName", "externalName": "example.org"}});
    let s: Vec<&Value> = vec![&svc, &ext];
    Zone::build("cluster.local", &s, &[])
}

fn query(name: &str, ty: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
    m.to_vec().unwrap()
}

async fn ask(name: &str, ty: RecordType, cfg: &DnsConfig) -> Message {
    let reply = answer(&query(name, ty), &zone(), cfg)
        .await
        .expect("a reply");
    Message::from_vec(&reply).unwrap()
}

fn cfg() -> DnsConfig {
    DnsConfig::new("127.0.0.1:0".parse().unwrap())
}

#[tokio::test]
async fn cluster_names_are_answered_with_authority() {
    let m = ask("web.ns.svc.cluster.local.", RecordType::A, &cfg()).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(
        m.answers[0].data,
        RData::A(A("10.96.0.10".parse().unwrap()))
    );
    assert_eq!(m.answers[0].ttl, 5);

    let srv = ask(
        "_http._tcp.web.ns.svc.cluster.local.",
        RecordType::SRV,
        &cfg(),
    )
    .await;
    let RData::SRV(s) = &srv.answers[0].data else {
        panic!("{srv:?}")
    };
    assert_eq!(
        (s.port, s.target.to_ascii()),
        (80, "web.ns.svc.cluster.local.".to_string())
    );

    let cname = ask("ext.ns.svc.cluster.local.", RecordType::A, &cfg()).await;
    assert!(matches!(&cname.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "example.org."));

    let nx = ask("nope.ns.svc.cluster.local.", RecordType::A, &cfg()).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        matches!(nx.authorities[0].data, RData::SOA(_)),
        "NXDOMAIN carries the SOA"
    );

    let nodata = ask("web.ns.svc.cluster.local.", RecordType::AAAA, &cfg()).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty() && !nodata.authorities.is_empty());
}

#[tokio::test]
async fn other_names_go_upstream_and_fail_fast_without_one() {
    // No upstream: SERVFAIL at once.
    let started = Instant::now();
    let m = ask("example.org.", RecordType::A, &cfg()).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_millis(500));

    // An upstream that answers: its reply comes back as it is.
    let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        let (n, peer) = up.recv_from(&mut buf).await.unwrap();
        let req = Message::from_vec(&buf[..n]).unwrap();
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.add_queries(req.queries.iter().cloned());
        resp.add_answer(Record::from_rdata(
            req.queries[0].name().clone(),
            60,
            RData::A(A("192.0.2.80".parse().unwrap())),
        ));
        up.send_to(&resp.to_vec().unwrap(), peer).await.unwrap();
    });
    let mut c = cfg();
    c.upstreams = vec![up_addr];
    let m = ask("example.org.", RecordType::A, &c).await;
    assert_eq!(
        m.answers[0].data,
        RData::A(A("192.0.2.80".parse().unwrap()))
    );

    // A silent upstream costs its timeout, then SERVFAIL.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.upstreams = vec![silent.local_addr().unwrap()];
    c.upstream_timeout = Duration::from_millis(200);
    let m = ask("example.org.", RecordType::A, &c).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn the_server_answers_over_udp_and_tcp_and_follows_zone_swaps() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let shared: SharedZone = Arc::new(RwLock::new(Arc::new(Zone::build(
        "cluster.local",
        &[],
        &[],
    ))));
    let cancel = CancellationToken::new();
    tokio::spawn(serve(
        DnsConfig::new(addr),
        Arc::clone(&shared),
        cancel.clone(),
    ));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ask_udp = || async {
        for _ in 0..50 {
            client
                .send_to(&query("web.ns.svc.cluster.local.", RecordType::A), addr)
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(100), client.recv_from(&mut buf)).await
            {
                return Message::from_vec(&buf[..n]).unwrap();
            }
        }
        panic!("no DNS answer over UDP");
    };
    assert_eq!(
        ask_udp().await.metadata.response_code,
        ResponseCode::NXDomain
    );
    *shared.write().unwrap() = Arc::new(zone());
    assert_eq!(ask_udp().await.answers.len(), 1, "the new zone answers");

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let q = query("web.ns.svc.cluster.local.", RecordType::A);
    tcp.write_u16(q.len() as u16).await.unwrap();
    tcp.write_all(&q).await.unwrap();
    let n = tcp.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(n)];
    tcp.read_exact(&mut buf).await.unwrap();
    assert_eq!(Message::from_vec(&buf).unwrap().answers.len(), 1);
    cancel.cancel();
}

#[test]
fn upstreams_are_the_resolv_conf_nameservers() {
    let ups = upstreams_from_resolv_conf("# c\nnameserver 192.0.2.53\nsearch x\nnameserver ::1\n");
    assert_eq!(
        ups,
        [
            "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
}
