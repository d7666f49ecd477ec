//! Mutual TLS to the API servers, and the credentials a component or a person presents.
//!
//! A credentials file (YAML, written by the first master, `rudder up` or a node's join) holds the
//! cluster CA, the only root a server's certificate is checked against, and a client
//! certificate with its key, or a bearer token, or both:
//!
//! ```yaml
//! servers: [127.0.0.1:6443]
//! certificate-authority: |
//!   -----BEGIN CERTIFICATE-----
//! client-certificate: |
//!   -----BEGIN CERTIFICATE-----
//! client-key: |
//!   -----BEGIN PRIVATE KEY-----
//! ```
//!
//! The client certificate sits behind [`ClientIdentity`], which every new handshake reads, so a
//! renewed certificate is used from the next connection on without rebuilding the client.
//! Connections are made by [`TlsConnector`] (TCP, then rustls with ALPN `h2`), plugged into
//! tonic through [`crate::Client::with_connector`]'s seam.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tonic::transport::Uri;

/// The ring provider, which Rudder links everywhere (never the process default, which another
/// linked crate could have installed differently).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why credentials or TLS settings cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What a client presents to the API servers, as stored in a credentials file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Credentials {
    /// API server addresses these credentials are for (`host:port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// PEM certificates of the cluster CA.
    pub certificate_authority: String,
    /// PEM client certificate (its chain), issued by the cluster CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// PEM private key of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// A bearer token, sent on every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Credentials {
    /// Parses a credentials file's text.
    pub fn parse(text: &str) -> Result<Self, TlsError> {
        let c: Credentials = yaml_serde::from_str(text)
            .map_err(|e| TlsError::Invalid(format!("not a credentials file: {e}")))?;
        if c.client_certificate.is_some() != c.client_key.is_some() {
            return Err(TlsError::Invalid(
                "client-certificate and client-key: give both or neither".into(),
            ));
        }
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Self, TlsError> {
        let text = std::fs::read_to_string(path).map_err(|source| TlsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn to_yaml(&self) -> String {
        yaml_serde::to_string(self).unwrap_or_default()
    }

    /// Writes the file readable by its owner only, replacing any old one atomically (a
    /// renewal never leaves half a file behind).
    pub fn save(&self, path: &Path) -> Result<(), TlsError> {
        write_private(path, self.to_yaml().as_bytes())
    }
}

/// Writes `data` to `path` with mode 0600 through a synced temporary file and a rename.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// PEM certificates, or an error naming `field`.
pub fn parse_certs(pem: &str, field: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("{field}: not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!("{field}: holds no certificate")));
    }
    Ok(certs)
}

/// A certificate chain and its key, ready for rustls.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let chain = parse_certs(cert_pem, "client-certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Invalid(format!("client-key: not a PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        TlsError::Invalid(format!(
            "client-certificate and client-key cannot be used together: {e}"
        ))
    })
}

/// The client certificate handshakes present; replaceable while connections are open.
#[derive(Debug, Default)]
pub struct ClientIdentity {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ClientIdentity {
    /// Uses `cert_pem`/`key_pem` from the next handshake on.
    pub fn set(&self, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let key = Arc::new(certified_key(cert_pem, key_pem)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(key);
        Ok(())
    }

    pub fn is_set(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

impl ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn has_certs(&self) -> bool {
        self.is_set()
    }
}

/// TLS settings for connections to the API servers.
#[derive(Clone, Debug)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    /// The certificate presented, for renewal.
    pub identity: Arc<ClientIdentity>,
}

impl Tls {
    /// Trusts only `credentials`' CA and presents its client certificate, if any.
    pub fn new(credentials: &Credentials) -> Result<Tls, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in parse_certs(&credentials.certificate_authority, "certificate-authority")? {
            roots
                .add(c)
                .map_err(|e| TlsError::Invalid(format!("certificate-authority: {e}")))?;
        }
        let identity = Arc::new(ClientIdentity::default());
        if let (Some(cert), Some(key)) = (&credentials.client_certificate, &credentials.client_key)
        {
            identity.set(cert, key)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_cert_resolver(identity.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            identity,
        })
    }

    /// With a server verifier of the caller's (a pinned CA hash during a node's join).
    pub fn with_verifier(verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>) -> Tls {
        let identity = Arc::new(ClientIdentity::default());
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(identity.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Tls {
            config: Arc::new(config),
            identity,
        }
    }

    pub fn connector(&self, connect_timeout: Duration) -> TlsConnector {
        TlsConnector {
            tls: tokio_rustls::TlsConnector::from(self.config.clone()),
            connect_timeout,
        }
    }
}

/// Dials `host:port` from the request URI over TCP and runs the TLS handshake, checking the
/// server's certificate names that host.
#[derive(Clone)]
pub struct TlsConnector {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
}

type Connecting = Pin<
    Box<
        dyn Future<
                Output = Result<
                    TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
                    Box<dyn std::error::Error + Send + Sync>,
                >,
            > + Send,
    >,
>;

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let host = uri.host().ok_or("server address has no host")?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(6443);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| format!("{host} cannot name a TLS server: {e}"))?;
            let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| {
                    format!("connecting to {host}:{port} timed out after {timeout:?}")
                })??;
            tcp.set_nodelay(true)?;
            let stream = tokio::time::timeout(timeout, tls.connect(name, tcp))
                .await
                .map_err(|_| format!("TLS handshake with {host}:{port} timed out"))?
                .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_half_a_key_pair_and_unknown_fields() {
        let e = Credentials::parse("certificate-authority: x\nclient-certificate: y\n")
            .expect_err("half");
        assert!(e.to_string().contains("give both"), "{e}");
        let e = Credentials::parse("certificate-authority: x\ncert: y\n").expect_err("unknown");
        assert!(e.to_string().contains("cert"), "{e}");
    }

    #[test]
    fn round_trips_through_yaml() {
        let c = Credentials {
            servers: vec!["127.0.0.1:6443".into()],
            certificate_authority: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
                .into(),
            client_certificate: None,
            client_key: None,
            token: Some("abc".into()),
        };
        assert_eq!(Credentials::parse(&c.to_yaml()).expect("parse"), c);
    }

    #[test]
    fn a_ca_that_is_not_pem_is_named() {
        let c = Credentials {
            certificate_authority: "nope".into(),
            ..Default::default()
        };
        let e = Tls::new(&c).expect_err("bad ca");
        assert!(e.to_string().contains("certificate-authority"), "{e}");
    }
}
