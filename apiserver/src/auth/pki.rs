//! The cluster's certificate authority: made by the first master, then used to issue every
//! serving and client certificate.
//!
//! The PKI directory (`--pki-dir`, by default `<data-dir>/pki`) holds `ca.crt` and `ca.key`
//! (mode 0600) and, written when the CA is made, one credentials file per built-in identity under
//! `credentials/`: `admin.yaml` (group `system:masters`), `scheduler.yaml`,
//! `controller-manager.yaml` and `proxy.yaml`. Masters of one cluster share the CA: on one host
//! they are given the same directory, on several hosts `ca.crt` and `ca.key` are copied to each
//! before it first starts (docs/security.md). A master's serving certificate is not stored: it
//! is issued at every start, and again before it expires, from the CA.
//!
//! Certificates are ECDSA P-256. Client certificates carry the user as the subject's common name
//! and the groups as organisations, as Kubernetes reads them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rudder_client::tls::{Credentials, write_private};

/// How long the CA is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long issued certificates are valid unless configured otherwise.
pub const CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Issued certificates start this long in the past, for clocks slightly behind.
const BACKDATE: Duration = Duration::from_secs(300);

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn rc(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Invalid(format!("{what}: {e}"))
}

fn time_of(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// Built-in identities whose credentials the CA's creation writes: file stem, user, groups.
pub const BUILTIN_CREDENTIALS: [(&str, &str, &[&str]); 4] = [
    ("admin", "admin", &["system:masters"]),
    ("scheduler", "system:kube-scheduler", &[]),
    ("controller-manager", "system:kube-controller-manager", &[]),
    ("proxy", "system:kube-proxy", &["system:node-proxiers"]),
];

impl Ca {
    /// A new CA valid from `now`.
    pub fn generate(now: SystemTime) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(rc("CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "rudder-ca");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = time_of(now - BACKDATE);
        params.not_after = time_of(now + CA_LIFETIME);
        let cert = params.self_signed(&key).map_err(rc("CA certificate"))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA in `cert_pem`, signing with `key_pem`.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(rc("ca.key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(rc("ca.crt"))?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's key, PEM, for writing `ca.key`.
    fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    fn leaf_params(now: SystemTime, lifetime: Duration) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.not_before = time_of(now - BACKDATE);
        params.not_after = time_of(now + lifetime);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        params
    }

    fn subject(user: &str, groups: &[&str]) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        for g in groups {
            dn.push(DnType::OrganizationName, *g);
        }
        dn.push(DnType::CommonName, user);
        dn
    }

    fn client_params(
        user: &str,
        groups: &[&str],
        now: SystemTime,
        lifetime: Duration,
    ) -> CertificateParams {
        let mut params = Self::leaf_params(now, lifetime);
        params.distinguished_name = Self::subject(user, groups);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
    }

    /// A client certificate for `user` in `groups`, with a new key.
    pub fn issue_client(
        &self,
        user: &str,
        groups: &[&str],
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(rc("client key"))?;
        let cert = Self::client_params(user, groups, now, lifetime)
            .signed_by(&key, &self.issuer)
            .map_err(rc("client certificate"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for `user` in `groups` over the key of a certificate signing
    /// request (PEM). The request's own subject and extensions are ignored: the identity is
    /// the one the caller was allowed to have.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        user: &str,
        groups: &[&str],
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            PkiError::Invalid(format!("csr: not a valid certificate signing request: {e}"))
        })?;
        let cert = Self::client_params(user, groups, now, lifetime)
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(rc("client certificate"))?;
        Ok(cert.pem())
    }

    /// A serving certificate for the given DNS names and IP addresses.
    pub fn issue_server(
        &self,
        names: &[String],
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(rc("server key"))?;
        let mut params = Self::leaf_params(now, lifetime);
        params.distinguished_name = Self::subject("rudder-apiserver", &[]);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            // Masters also present it to each other as clients on the Raft port.
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        for n in names {
            params
                .subject_alt_names
                .push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(
                        n.clone()
                            .try_into()
                            .map_err(|e| PkiError::Invalid(format!("--tls-san {n:?}: {e}")))?,
                    ),
                });
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rc("server certificate"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Credentials for `user` in `groups` to reach `servers`.
    pub fn credentials(
        &self,
        user: &str,
        groups: &[&str],
        servers: &[String],
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Credentials, PkiError> {
        let issued = self.issue_client(user, groups, now, lifetime)?;
        Ok(Credentials {
            servers: servers.to_vec(),
            certificate_authority: self.cert_pem.clone(),
            client_certificate: Some(issued.cert_pem),
            client_key: Some(issued.key_pem),
            token: None,
        })
    }
}

/// The files of a PKI directory.
#[derive(Debug, Clone)]
pub struct PkiDir {
    pub dir: PathBuf,
}

impl PkiDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PkiDir { dir: dir.into() }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// A built-in identity's credentials file.
    pub fn credentials(&self, stem: &str) -> PathBuf {
        self.dir.join("credentials").join(format!("{stem}.yaml"))
    }

    /// Loads the CA, or makes one and the built-in credentials (for `servers`) when the
    /// directory holds none. Masters started together on one directory agree on one CA: it is
    /// written to a private directory and renamed into place, and a master that loses the race
    /// loads the winner's.
    pub fn load_or_create(&self, servers: &[String], now: SystemTime) -> Result<Ca, PkiError> {
        if self.ca_key().exists() {
            return self.load();
        }
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let staging = parent.join(format!(
            ".{}.{}",
            self.dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "pki".into()),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&staging);
        let ca = Ca::generate(now)?;
        let staged = PkiDir::new(&staging);
        write_file(&staged.ca_cert(), ca.cert_pem.as_bytes())?;
        write_file(&staged.ca_key(), ca.key_pem().as_bytes())?;
        for (stem, user, groups) in BUILTIN_CREDENTIALS {
            let c = ca.credentials(user, groups, servers, now, CERT_LIFETIME)?;
            c.save(&staged.credentials(stem))
                .map_err(|e| PkiError::Invalid(e.to_string()))?;
        }
        // An existing, empty directory (made by an operator) is replaced; one with files is not.
        let _ = std::fs::remove_dir(&self.dir);
        match std::fs::rename(&staging, &self.dir) {
            Ok(()) => {
                tracing::info!(dir = %self.dir.display(), "made the cluster CA and the built-in credentials");
                Ok(ca)
            }
            Err(_) if self.ca_key().exists() => {
                let _ = std::fs::remove_dir_all(&staging);
                self.load()
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(io(&self.dir)(e))
            }
        }
    }

    pub fn load(&self) -> Result<Ca, PkiError> {
        let cert = std::fs::read_to_string(self.ca_cert()).map_err(io(&self.ca_cert()))?;
        let key = std::fs::read_to_string(self.ca_key()).map_err(io(&self.ca_key()))?;
        Ca::from_pem(&cert, &key)
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    write_private(path, data).map_err(|e| PkiError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_signs_clients_and_servers_and_reloads() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = PkiDir::new(dir.path().join("pki"));
        let now = SystemTime::now();
        let ca = pki
            .load_or_create(&["127.0.0.1:6443".into()], now)
            .expect("create");
        let again = pki.load_or_create(&[], now).expect("load");
        assert_eq!(
            ca.cert_pem(),
            again.cert_pem(),
            "the second call loads the first CA"
        );
        let admin = Credentials::load(&pki.credentials("admin")).expect("admin credentials");
        assert_eq!(admin.certificate_authority, ca.cert_pem());
        let (u, g) = super::super::authn::subject_of(
            &rudder_client::tls::parse_certs(
                admin.client_certificate.as_deref().expect("cert"),
                "cert",
            )
            .expect("pem")[0],
        )
        .expect("subject");
        assert_eq!(
            (u.as_str(), g),
            ("admin", vec!["system:masters".to_string()])
        );
        let mode = std::fs::metadata(pki.ca_key())
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
            .expect("mode");
        assert_eq!(mode & 0o077, 0, "ca.key is readable by its owner only");
        ca.issue_server(
            &["127.0.0.1".into(), "localhost".into()],
            now,
            CERT_LIFETIME,
        )
        .expect("server");
    }

    #[test]
    fn a_signed_request_gets_the_identity_given_not_the_one_asked() {
        let ca = Ca::generate(SystemTime::now()).expect("ca");
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::default();
        p.distinguished_name = Ca::subject("admin", &["system:masters"]);
        let csr = p.serialize_request(&key).expect("csr").pem().expect("pem");
        let pem = ca
            .sign_request(
                &csr,
                "system:node:n1",
                &["system:nodes"],
                SystemTime::now(),
                CERT_LIFETIME,
            )
            .expect("sign");
        let cert = &rudder_client::tls::parse_certs(&pem, "cert").expect("pem")[0];
        let (u, g) = super::super::authn::subject_of(cert).expect("subject");
        assert_eq!(u, "system:node:n1");
        assert_eq!(g, vec!["system:nodes".to_string()]);
        assert!(
            ca.sign_request("garbage", "u", &[], SystemTime::now(), CERT_LIFETIME)
                .is_err()
        );
    }
}
