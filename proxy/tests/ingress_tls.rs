//! Ingress over HTTPS, in process: certificates made by rcgen (a test CA and leaves) in
//! `kubernetes.io/tls` Secrets, the real HTTPS server, and an HTTP/2 client over rustls that
//! trusts only the test CA. SNI picks between an exact and a wildcard certificate, a bad and a
//! missing Secret only cost their own hosts, and a Secret update rotates the certificate
//! without a restart.

mod ingress_support;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ingress_support::{Harness, backend, path_rule, wait_for};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names`: (PEM chain, PEM key, DER of the leaf).
    fn leaf(&self, names: &[&str]) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secret(name: &str, crt: &str, key: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
           "type": "kubernetes.io/tls", "data": {"tls.crt": b64(crt), "tls.key": b64(key)}})
}

fn client_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn handshake(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::clone(cfg))
        .connect(name, tcp)
        .await
}

fn peer_leaf(s: &Tls) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// `GET path` over HTTP/2 on an established TLS connection: the body.
async fn h2_get(s: Tls, host: &str, path: &str) -> String {
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("an HTTP/2 connection");
    tokio::spawn(conn);
    let req = Request::get(format!("https://{host}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_http2_is_served_and_a_secret_update_rotates_it() {
    let h = Harness::start().await;
    let (alpha, beta) = (backend("alpha").await, backend("beta").await);
    h.service("alpha", &[alpha]).await;
    h.service("beta", &[beta]).await;
    let ca = Ca::new();
    let (a_crt, a_key, a_der) = ca.leaf(&["a.test"]);
    let (b_crt, b_key, b_der) = ca.leaf(&["*.b.test"]);
    let a_secret = h
        .create("v1", "Secret", secret("a-tls", &a_crt, &a_key))
        .await;
    h.create("v1", "Secret", secret("b-tls", &b_crt, &b_key))
        .await;
    // A key that does not belong to the certificate.
    let (_, other_key, _) = ca.leaf(&["bad.test"]);
    h.create("v1", "Secret", secret("bad-tls", &a_crt, &other_key))
        .await;
    h.ingress(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                     "metadata": {"name": "secure"},
                     "spec": {
                         "tls": [{"hosts": ["a.test"], "secretName": "a-tls"},
                                 {"hosts": ["*.b.test"], "secretName": "b-tls"},
                                 {"hosts": ["bad.test"], "secretName": "bad-tls"},
                                 {"hosts": ["missing.test"], "secretName": "nope"}],
                         "rules": [
                             {"host": "a.test", "http": {"paths": [path_rule("/", "Prefix", "alpha")]}},
                             {"host": "*.b.test", "http": {"paths": [path_rule("/", "Prefix", "beta")]}},
                             {"host": "bad.test", "http": {"paths": [path_rule("/", "Prefix", "beta")]}}]}}))
        .await;
    h.wait_route("x.b.test", "/", "default/beta").await;
    wait_for("two usable certificates", || h.state.certs().len() == 2).await;
    let cfg = client_config(&ca);

    let s = handshake(h.https, &cfg, "a.test").await.expect("a.test");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(peer_leaf(&s), a_der, "a.test's own certificate");
    let body = h2_get(s, "a.test", "/hello").await;
    assert!(body.starts_with("alpha GET /hello\n"), "{body}");
    assert!(body.contains("x-forwarded-proto: https\n"), "{body}");
    assert!(body.contains("host: a.test\n"), "{body}");

    let s = handshake(h.https, &cfg, "x.b.test")
        .await
        .expect("x.b.test");
    assert_eq!(peer_leaf(&s), b_der, "the wildcard certificate");
    let body = h2_get(s, "x.b.test", "/").await;
    assert!(body.starts_with("beta "), "{body}");

    // A bad Secret, a missing one and a name no entry covers: no certificate, the handshake
    // fails; the others above were served all the same.
    for name in ["bad.test", "missing.test", "y.z.b.test", "other.test"] {
        assert!(
            handshake(h.https, &cfg, name).await.is_err(),
            "{name} got a certificate"
        );
    }

    // Rotation: the Secret's new certificate answers the next handshake.
    let (a2_crt, a2_key, a2_der) = ca.leaf(&["a.test"]);
    let mut updated = a_secret.clone();
    updated["data"] = json!({"tls.crt": b64(&a2_crt), "tls.key": b64(&a2_key)});
    h.update("v1", "Secret", updated).await;
    wait_for("the rotated certificate", || {
        h.state
            .certs()
            .for_name("a.test")
            .is_some_and(|k| k.cert[0] == a2_der)
    })
    .await;
    // A new client: the old one would resume its session, which keeps the certificate it was
    // established with (resumption skips the certificate, as it should).
    let cfg = client_config(&ca);
    let s = handshake(h.https, &cfg, "a.test").await.expect("a.test");
    assert_eq!(
        peer_leaf(&s),
        a2_der,
        "the new certificate, without a restart"
    );
    let body = h2_get(s, "a.test", "/").await;
    assert!(body.starts_with("alpha "), "{body}");
}
