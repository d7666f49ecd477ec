//! Authentication: who a request comes from, as Kubernetes establishes it.
//!
//! In order: a bearer token (`authorization: Bearer ...`) is checked by each token
//! authenticator (the static token file, bootstrap tokens); a token that none accepts is
//! refused, never treated as anonymous. Without a token, a client certificate verified against
//! the cluster CA names the user (subject CN) and groups (subject O). Without either the caller
//! is `system:anonymous`, which is refused unless anonymous requests were enabled.
//! Every authenticated caller is also in `system:authenticated`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::tls::PeerInfo;
use crate::clock::Clock;
use crate::service::Identity;

pub const AUTHENTICATED: &str = "system:authenticated";

/// The user and groups a certificate's subject names.
pub fn subject_of(cert: &CertificateDer<'_>) -> Result<(String, Vec<String>), String> {
    let (_, x) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("client certificate cannot be parsed: {e}"))?;
    let subject = x.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .filter(|u| !u.is_empty())
        .ok_or("client certificate has no subject common name (the user)")?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    Ok((user, groups))
}

/// What a connection's client certificate proved.
#[derive(Debug, Clone)]
pub enum PeerCert {
    Verified {
        user: String,
        groups: Vec<String>,
        not_after: SystemTime,
    },
    /// Presented but not accepted, and why.
    Refused(String),
}

/// Verifies client certificate chains against the cluster CA.
#[derive(Debug)]
pub struct CaVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl CaVerifier {
    pub fn new(ca_pem: &str) -> Result<CaVerifier, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rudder_client::tls::parse_certs(ca_pem, "ca.crt").map_err(|e| e.to_string())? {
            roots.add(c).map_err(|e| format!("ca.crt: {e}"))?;
        }
        let inner = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            rudder_client::tls::provider(),
        )
        .build()
        .map_err(|e| format!("ca.crt: {e}"))?;
        Ok(CaVerifier { inner })
    }

    /// The CA's subject names, sent as hints in the certificate request.
    pub fn subjects(&self) -> Vec<rustls::DistinguishedName> {
        self.inner.root_hint_subjects().to_vec()
    }

    /// Checks a presented chain (leaf first) now.
    pub fn verify_peer(&self, chain: &[CertificateDer<'static>]) -> PeerCert {
        self.verify_at(chain, SystemTime::now())
    }

    pub fn verify_at(&self, chain: &[CertificateDer<'static>], now: SystemTime) -> PeerCert {
        let Some((leaf, rest)) = chain.split_first() else {
            return PeerCert::Refused("no client certificate".into());
        };
        let at = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        if let Err(e) = self.inner.verify_client_cert(leaf, rest, at) {
            return PeerCert::Refused(format!("client certificate refused: {}", describe(&e)));
        }
        let not_after = x509_parser::parse_x509_certificate(leaf)
            .map(|(_, x)| x.validity().not_after.timestamp())
            .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
            .unwrap_or(now);
        match subject_of(leaf) {
            Ok((user, groups)) => PeerCert::Verified {
                user,
                groups,
                not_after,
            },
            Err(e) => PeerCert::Refused(e),
        }
    }
}

fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        // A foreign CA of the same name shows as a bad signature.
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "it is not signed by this cluster's CA".into()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("it has expired ({e}); get a new one (renewal, or `rudder admin` on a master)")
        }
        other => other.to_string(),
    }
}

/// Checks bearer tokens of one kind. `None`: not a token this authenticator knows.
pub trait TokenAuthenticator: Send + Sync + 'static {
    fn authenticate_token(&self, token: &str) -> Option<Result<Identity, String>>;
}

/// Kubernetes' static token file: `token,user,uid[,"group1,group2"]` per line.
#[derive(Debug, Default)]
pub struct StaticTokens {
    tokens: HashMap<String, Identity>,
}

impl StaticTokens {
    pub fn parse(text: &str) -> Result<StaticTokens, String> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (fields, groups) = match line.split_once(",\"") {
                Some((head, g)) => (head, g.trim_end_matches('"')),
                None => (line, ""),
            };
            let mut f = fields.split(',').map(str::trim);
            let (Some(token), Some(user)) = (f.next(), f.next()) else {
                return Err(format!(
                    "line {}: expected token,user,uid[,\"groups\"]",
                    i + 1
                ));
            };
            if token.is_empty() || user.is_empty() {
                return Err(format!(
                    "line {}: the token and the user must not be empty",
                    i + 1
                ));
            }
            let mut groups: Vec<String> = groups
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect();
            // A bare fourth field (no quotes) holds one group.
            groups.extend(f.nth(1).filter(|g| !g.is_empty()).map(str::to_string));
            tokens.insert(
                token.to_string(),
                Identity {
                    user: user.to_string(),
                    groups,
                },
            );
        }
        Ok(StaticTokens { tokens })
    }

    pub fn load(path: &Path) -> Result<StaticTokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl TokenAuthenticator for StaticTokens {
    fn authenticate_token(&self, token: &str) -> Option<Result<Identity, String>> {
        self.tokens.get(token).cloned().map(Ok)
    }
}

/// Establishes the caller of each request.
pub struct Authenticator {
    tokens: Vec<Arc<dyn TokenAuthenticator>>,
    anonymous: bool,
    clock: Arc<dyn Clock>,
}

impl Authenticator {
    pub fn new(
        tokens: Vec<Arc<dyn TokenAuthenticator>>,
        anonymous: bool,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Authenticator {
            tokens,
            anonymous,
            clock,
        }
    }

    /// Everyone is `system:anonymous`: a plaintext in-process server for tests.
    pub fn anonymous_only(clock: Arc<dyn Clock>) -> Self {
        Self::new(Vec::new(), true, clock)
    }

    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&PeerInfo>,
    ) -> Result<Identity, String> {
        let mut id = self.authenticate_inner(headers, peer)?;
        if id.user != "system:anonymous" && !id.groups.iter().any(|g| g == AUTHENTICATED) {
            id.groups.push(AUTHENTICATED.into());
        }
        Ok(id)
    }

    fn authenticate_inner(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&PeerInfo>,
    ) -> Result<Identity, String> {
        if let Some(v) = headers.get(http::header::AUTHORIZATION) {
            let token = v
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or("authorization header: expected \"Bearer <token>\"")?;
            for t in &self.tokens {
                if let Some(r) = t.authenticate_token(token) {
                    return r;
                }
            }
            return Err("invalid bearer token (unknown, expired or revoked)".into());
        }
        match peer.and_then(|p| p.cert.as_deref()) {
            Some(PeerCert::Verified {
                user,
                groups,
                not_after,
            }) => {
                let now = SystemTime::UNIX_EPOCH
                    + Duration::from_secs(self.clock.now().as_second().max(0) as u64);
                if now > *not_after {
                    return Err(
                        "client certificate refused: it expired while the connection was open"
                            .into(),
                    );
                }
                Ok(Identity {
                    user: user.clone(),
                    groups: groups.clone(),
                })
            }
            Some(PeerCert::Refused(why)) => Err(why.clone()),
            None if self.anonymous => Ok(Identity::anonymous()),
            None => Err(
                "anonymous requests are refused: present a client certificate signed by the cluster CA, or a bearer token (the credentials file `rudder up` writes, or --token)"
                    .into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_token_file_lines() {
        let t = StaticTokens::parse(
            "# operators\nt1,alice,1,\"ops,dev\"\nt2,bob,2\nt3,carol,3,viewers\n",
        )
        .expect("parse");
        let id = |tok| t.authenticate_token(tok).expect("known").expect("ok");
        assert_eq!(id("t1").groups, vec!["ops".to_string(), "dev".to_string()]);
        assert_eq!(id("t2").user, "bob");
        assert_eq!(id("t3").groups, vec!["viewers".to_string()]);
        assert!(t.authenticate_token("t4").is_none());
        let e = StaticTokens::parse("lonely\n").expect_err("bad");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn unknown_tokens_and_missing_credentials_are_refused() {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let tokens = StaticTokens::parse("good,alice,1\n").expect("parse");
        let a = Authenticator::new(vec![Arc::new(tokens)], false, clock.clone());
        let mut h = http::HeaderMap::new();
        assert!(
            a.authenticate(&h, None)
                .expect_err("anon")
                .contains("anonymous")
        );
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer bad".parse().expect("hdr"),
        );
        assert!(
            a.authenticate(&h, None)
                .expect_err("bad")
                .contains("invalid bearer token")
        );
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer good".parse().expect("hdr"),
        );
        let id = a.authenticate(&h, None).expect("good");
        assert_eq!(id.user, "alice");
        assert!(id.groups.contains(&AUTHENTICATED.to_string()));
        let open = Authenticator::anonymous_only(clock);
        assert_eq!(
            open.authenticate(&http::HeaderMap::new(), None)
                .expect("anon"),
            Identity::anonymous()
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Random bytes as a certificate, a chain or a token file never panic the parsers or
        /// the verifier, and never authenticate.
        #[test]
        fn malformed_certificates_and_token_files_do_not_panic(
            der in proptest::collection::vec(any::<u8>(), 0..600),
            second in proptest::collection::vec(any::<u8>(), 0..200),
            text in "[ -~\n,\"]{0,300}",
        ) {
            let _ = subject_of(&CertificateDer::from(der.clone()));
            let ca = super::super::pki::Ca::generate(SystemTime::now()).expect("ca");
            let v = CaVerifier::new(ca.cert_pem()).expect("verifier");
            let chain = vec![CertificateDer::from(der), CertificateDer::from(second)];
            prop_assert!(matches!(v.verify_peer(&chain), PeerCert::Refused(_)));
            if let Ok(t) = StaticTokens::parse(&text) {
                let _ = t.authenticate_token(&text);
            }
            let _ = rudder_client::tls::Credentials::parse(&text);
            let _ = ca.sign_request(&text, "u", &[], SystemTime::now(), Duration::from_secs(60));
        }

        /// A certificate from the CA with any one bit flipped is refused: every bit is either
        /// signed, part of the signature, or DER framing.
        #[test]
        fn tampered_certificates_are_refused(at in 0usize..2000, bit in 0u8..8) {
            let ca = super::super::pki::Ca::generate(SystemTime::now()).expect("ca");
            let issued = ca
                .issue_client("alice", &["dev"], SystemTime::now(), Duration::from_secs(600))
                .expect("issue");
            let mut der = rudder_client::tls::parse_certs(&issued.cert_pem, "c").expect("pem")[0].to_vec();
            let i = at % der.len();
            der[i] ^= 1 << bit;
            let v = CaVerifier::new(ca.cert_pem()).expect("verifier");
            let verdict = v.verify_peer(&[CertificateDer::from(der)]);
            prop_assert!(matches!(verdict, PeerCert::Refused(_)), "{:?}", verdict);
        }
    }
}
