//! A secured API server, in-process, as the binary runs it by default: mutual TLS, certificate
//! and token authentication, RBAC with the default policy, the Node authorizer, escalation
//! checks, certificate signing and the serving certificate's renewal.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rudder_apiserver::auth::pki::{Ca, PkiDir};
use rudder_apiserver::auth::secure::Security;
use rudder_apiserver::{Server, ServerConfig};
use rudder_client::conn::{ClientConfig, kind_ref};
use rudder_client::proto as pb;
use rudder_client::tls::Credentials;
use rudder_client::{Client, ClientError};
use serde_json::json;

struct Secure {
    server: Option<Server>,
    dir: tempfile::TempDir,
    addr: String,
}

impl Secure {
    async fn start_with(f: impl FnOnce(&mut Security)) -> Secure {
        let dir = tempfile::tempdir().expect("tmp");
        let mut config = ServerConfig::new(dir.path().join("data"));
        let mut sec = Security::new(dir.path().join("pki"));
        f(&mut sec);
        config.security = Some(sec);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = Server::start(config, listener)
            .await
            .expect("server starts");
        let addr = server.addr.to_string();
        Secure {
            server: Some(server),
            dir,
            addr,
        }
    }

    async fn start() -> Secure {
        Self::start_with(|_| {}).await
    }

    fn pki(&self) -> PkiDir {
        PkiDir::new(self.dir.path().join("pki"))
    }

    fn ca(&self) -> Ca {
        self.pki().load().expect("ca")
    }

    fn credentials(&self, stem: &str) -> Credentials {
        Credentials::load(&self.pki().credentials(stem)).expect("credentials")
    }

    fn client(&self, c: &Credentials) -> Client {
        let config = ClientConfig {
            request_timeout: Duration::from_secs(5),
            ..Default::default()
        };
        Client::with_credentials(&[self.addr.as_str()], config, c).expect("client")
    }

    fn admin(&self) -> Client {
        self.client(&self.credentials("admin"))
    }

    /// A client for `user` in `groups`, certificate from the cluster CA.
    fn user(&self, user: &str, groups: &[&str]) -> Client {
        let c = self
            .ca()
            .credentials(
                user,
                groups,
                &[],
                SystemTime::now(),
                Duration::from_secs(3600),
            )
            .expect("issue");
        self.client(&c)
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

fn create(kind: (&str, &str), ns: &str, body: serde_json::Value) -> pb::CreateRequest {
    pb::CreateRequest {
        kind: Some(kind_ref(kind.0, kind.1)),
        namespace: ns.into(),
        json: body.to_string().into(),
        options: None,
    }
}

fn list(kind: (&str, &str), ns: &str) -> pb::ListRequest {
    pb::ListRequest {
        kind: Some(kind_ref(kind.0, kind.1)),
        namespace: ns.into(),
        ..Default::default()
    }
}

const POD: (&str, &str) = ("v1", "Pod");
const SECRET: (&str, &str) = ("v1", "Secret");
const RB: (&str, &str) = ("rbac.authorization.k8s.io/v1", "RoleBinding");

fn pod(name: &str, node: &str, secret: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
            "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]}]}})
}

fn binding(name: &str, role_kind: &str, role: &str, user: &str) -> serde_json::Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
}

#[tokio::test]
async fn callers_without_valid_credentials_are_refused_with_the_reason() {
    let s = Secure::start().await;
    let admin = s.admin();
    admin
        .list(list(POD, "default"))
        .await
        .expect("the admin lists");
    let who = admin.who_am_i().await.expect("whoami");
    assert_eq!(who.user, "admin");
    assert!(who.groups.contains(&"system:masters".to_string()));

    // Trusting the CA but presenting nothing.
    let anonymous = Credentials {
        certificate_authority: s.ca().cert_pem().to_string(),
        ..Default::default()
    };
    match s.client(&anonymous).list(list(POD, "default")).await {
        Err(ClientError::Unauthorized(m)) => {
            assert!(m.contains("anonymous requests are refused"), "{m}")
        }
        other => panic!("anonymous caller: {other:?}"),
    }

    // A certificate from another CA, trusting the right one.
    let foreign = Ca::generate(SystemTime::now())
        .expect("ca")
        .credentials(
            "admin",
            &["system:masters"],
            &[],
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .expect("issue");
    let foreign = Credentials {
        certificate_authority: s.ca().cert_pem().to_string(),
        ..foreign
    };
    match s.client(&foreign).list(list(POD, "default")).await {
        Err(ClientError::Unauthorized(m)) => {
            assert!(m.contains("not signed by this cluster's CA"), "{m}")
        }
        other => panic!("foreign certificate: {other:?}"),
    }

    // An expired certificate from the right CA.
    let expired = s
        .ca()
        .credentials(
            "admin",
            &["system:masters"],
            &[],
            SystemTime::now() - Duration::from_secs(7200),
            Duration::from_secs(3600),
        )
        .expect("issue");
    match s.client(&expired).list(list(POD, "default")).await {
        Err(ClientError::Unauthorized(m)) => assert!(m.contains("expired"), "{m}"),
        other => panic!("expired certificate: {other:?}"),
    }

    // A client that does not trust the server's CA never sends a request.
    let wrong_trust = Credentials {
        certificate_authority: Ca::generate(SystemTime::now())
            .expect("ca")
            .cert_pem()
            .to_string(),
        ..s.credentials("admin")
    };
    match s.client(&wrong_trust).list(list(POD, "default")).await {
        Err(ClientError::Unavailable(m)) => {
            assert!(m.to_lowercase().contains("certificate"), "{m}")
        }
        other => panic!("untrusted server: {other:?}"),
    }

    // Plaintext to a TLS port fails.
    let plain = Client::new(&[s.addr.as_str()]).expect("client");
    assert!(plain.list(list(POD, "default")).await.is_err());
    s.stop().await;
}

#[tokio::test]
async fn view_lists_but_cannot_delete_and_binding_changes_apply_at_once() {
    let s = Secure::start().await;
    let admin = s.admin();
    admin
        .create(create(POD, "default", pod("web", "n1", "s1")))
        .await
        .expect("pod");
    let viewer = s.user("vera", &[]);
    match viewer.list(list(POD, "default")).await {
        Err(ClientError::Forbidden(m)) => assert!(
            m.contains("User \"vera\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
            "{m}"
        ),
        other => panic!("before the binding: {other:?}"),
    }
    admin
        .create(create(
            RB,
            "default",
            binding("vera-view", "ClusterRole", "view", "vera"),
        ))
        .await
        .expect("binding");
    // The very next request sees the binding.
    let pods = viewer.list(list(POD, "default")).await.expect("view lists");
    assert_eq!(pods.items.len(), 1);
    match viewer.list(list(SECRET, "default")).await {
        Err(ClientError::Forbidden(_)) => {}
        other => panic!("view reads no secrets: {other:?}"),
    }
    match viewer
        .delete(pb::DeleteRequest {
            kind: Some(kind_ref("v1", "Pod")),
            namespace: "default".into(),
            name: "web".into(),
            ..Default::default()
        })
        .await
    {
        Err(ClientError::Forbidden(m)) => assert!(m.contains("cannot delete"), "{m}"),
        other => panic!("view deletes: {other:?}"),
    }
    match viewer.list(list(POD, "kube-system")).await {
        Err(ClientError::Forbidden(_)) => {}
        other => panic!("the binding is for default only: {other:?}"),
    }
    admin
        .delete(pb::DeleteRequest {
            kind: Some(kind_ref(RB.0, RB.1)),
            namespace: "default".into(),
            name: "vera-view".into(),
            ..Default::default()
        })
        .await
        .expect("unbind");
    match viewer.list(list(POD, "default")).await {
        Err(ClientError::Forbidden(_)) => {}
        other => panic!("after the binding is gone: {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn no_one_grants_rights_they_do_not_hold() {
    let s = Secure::start().await;
    let admin = s.admin();
    admin
        .create(create(
            RB,
            "default",
            binding("ann-admin", "ClusterRole", "admin", "ann"),
        ))
        .await
        .expect("binding");
    let ann = s.user("ann", &[]);
    // Namespace admins may hand out what they hold...
    ann.create(create(
        RB,
        "default",
        binding("bob-edit", "ClusterRole", "edit", "bob"),
    ))
    .await
    .expect("admin grants edit in its namespace");
    // ...but not cluster-admin, nor a role with more than they hold.
    match ann
        .create(create(
            RB,
            "default",
            binding("bob-root", "ClusterRole", "cluster-admin", "bob"),
        ))
        .await
    {
        Err(ClientError::Forbidden(m)) => assert!(m.contains("not currently held"), "{m}"),
        other => panic!("escalation through a binding: {other:?}"),
    }
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "nodes"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["delete"]}]});
    match ann
        .create(create(
            ("rbac.authorization.k8s.io/v1", "Role"),
            "default",
            role,
        ))
        .await
    {
        Err(ClientError::Forbidden(m)) => assert!(m.contains("not currently held"), "{m}"),
        other => panic!("escalation through a role: {other:?}"),
    }
    // Only masters sign certificates for others; anyone renews their own.
    let req = |user: &str, groups: Vec<String>| pb::SignCertificateRequest {
        user: user.into(),
        groups,
        ..Default::default()
    };
    match ann
        .sign_certificate(req("admin", vec!["system:masters".into()]))
        .await
    {
        Err(ClientError::Forbidden(m)) => assert!(m.contains("only its own"), "{m}"),
        other => panic!("signing for another: {other:?}"),
    }
    let renewed = ann
        .sign_certificate(req("ann", vec![]))
        .await
        .expect("renewal");
    let c = Credentials {
        certificate_authority: renewed.certificate_authority,
        client_certificate: Some(renewed.certificate),
        client_key: Some(renewed.private_key),
        ..Default::default()
    };
    assert_eq!(s.client(&c).who_am_i().await.expect("whoami").user, "ann");
    s.stop().await;
}

#[tokio::test]
async fn a_node_reads_only_what_its_own_pods_use() {
    let s = Secure::start().await;
    let admin = s.admin();
    for (name, node) in [("s1", "n1"), ("s2", "n2")] {
        admin
            .create(create(
                SECRET,
                "default",
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"k": "dg=="}}),
            ))
            .await
            .expect("secret");
        admin
            .create(create(
                POD,
                "default",
                pod(&format!("p-{node}"), node, name),
            ))
            .await
            .expect("pod");
    }
    let n1 = s.user("system:node:n1", &["system:nodes"]);
    let get = |name: &str| pb::GetRequest {
        kind: Some(kind_ref("v1", "Secret")),
        namespace: "default".into(),
        name: name.into(),
        allow_stale: false,
    };
    n1.get(get("s1")).await.expect("its own pod's secret");
    match n1.get(get("s2")).await {
        Err(ClientError::Forbidden(m)) => assert!(m.contains("no pod bound to node \"n1\""), "{m}"),
        other => panic!("another node's secret: {other:?}"),
    }
    match n1.list(list(SECRET, "default")).await {
        Err(ClientError::Forbidden(_)) => {}
        other => panic!("listing secrets: {other:?}"),
    }
    match n1.list(list(POD, "")).await {
        Err(ClientError::Forbidden(m)) => assert!(m.contains("spec.nodeName=n1"), "{m}"),
        other => panic!("listing every pod: {other:?}"),
    }
    let mine = n1
        .list(pb::ListRequest {
            field_selector: "spec.nodeName=n1".into(),
            ..list(POD, "")
        })
        .await
        .expect("its own pods");
    assert_eq!(mine.items.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn static_tokens_authenticate_and_unknown_ones_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("tokens.csv");
    std::fs::write(&file, "s3cret,olga,1,\"system:masters\"\n").expect("write");
    let s = Secure::start_with(|sec| sec.token_file = Some(file.clone())).await;
    let with_token = |t: &str| Credentials {
        certificate_authority: s.ca().cert_pem().to_string(),
        token: Some(t.into()),
        ..Default::default()
    };
    let who = s
        .client(&with_token("s3cret"))
        .who_am_i()
        .await
        .expect("token");
    assert_eq!(who.user, "olga");
    match s.client(&with_token("wrong")).who_am_i().await {
        Err(ClientError::Unauthorized(m)) => assert!(m.contains("invalid bearer token"), "{m}"),
        other => panic!("unknown token: {other:?}"),
    }
    s.stop().await;
}

/// The server's leaf certificate, from a fresh handshake.
async fn serving_cert(addr: &str, ca_pem: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rudder_client::tls::parse_certs(ca_pem, "ca").expect("pem") {
        roots.add(c).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(rudder_client::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("127.0.0.1".try_into().expect("name"), tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certs")[0].to_vec()
}

#[tokio::test]
async fn the_serving_certificate_is_renewed_without_a_restart() {
    let s = Secure::start_with(|sec| sec.cert_lifetime = Duration::from_secs(3)).await;
    let ca = s.ca().cert_pem().to_string();
    let first = serving_cert(&s.addr, &ca).await;
    let admin = s.admin();
    admin.who_am_i().await.expect("before renewal");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = serving_cert(&s.addr, &ca).await;
    assert_ne!(
        first, second,
        "a new certificate after two thirds of the lifetime"
    );
    admin.who_am_i().await.expect("after renewal");
    s.stop().await;
}
