//! Certificates for HTTPS: the `kubernetes.io/tls` Secrets that served Ingresses name in
//! `spec.tls`, loaded into rustls keys, and the resolver that picks one by SNI.
//!
//! - A Secret is used when its type is `kubernetes.io/tls` and `data` holds `tls.crt` (a PEM
//!   chain, leaf first) and `tls.key` (a PEM private key, PKCS#8, PKCS#1 or SEC1) that belong
//!   together. A missing or bad Secret is reported (the sync loop logs each problem once, when
//!   it appears) and its hosts get no certificate; every other host is still served.
//! - The server name picks the entry for the exact host, else the `*.` wildcard of its parent
//!   (one label, as host rules). A handshake without SNI, or for a name no entry covers, gets no
//!   certificate and fails: there is no fallback certificate (ingress-nginx serves a self-signed
//!   "fake" one).
//! - The store is rebuilt from the caches on every sync pass and swapped whole, so a Secret
//!   that changes is served from the next handshake on, without a restart; open connections
//!   keep the certificate they agreed on.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use rudder_client::cache::CachedObject;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::Value;

use super::IngressState;
use super::table::{Table, normalize_host};
use crate::services::str_at;

pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Host pattern (exact or `*.` wildcard, lower case) → its certificate.
#[derive(Debug, Default, Clone)]
pub struct Certs {
    by_host: BTreeMap<String, Arc<CertifiedKey>>,
}

impl Certs {
    /// The certificate for a server name: exact, else a one-label wildcard.
    pub fn for_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = normalize_host(name);
        if let Some(k) = self.by_host.get(&name) {
            return Some(Arc::clone(k));
        }
        let (first, rest) = name.split_once('.')?;
        if first.is_empty() {
            return None;
        }
        self.by_host.get(&format!("*.{rest}")).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_host.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }
}

/// The ring provider, which Rudder links everywhere (never the process default, which another
/// linked crate could have installed differently).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the certificates the table's TLS hosts name. `secret(namespace, name)` reads a Secret
/// from the cache. Returns the store and one line per host whose Secret cannot be used.
pub fn load(
    table: &Table,
    secret: impl Fn(&str, &str) -> Option<Arc<CachedObject>>,
) -> (Certs, Vec<String>) {
    let provider = provider();
    let mut certs = Certs::default();
    let mut problems = Vec::new();
    // A Secret named by several hosts is parsed once.
    let mut parsed: BTreeMap<(String, String), Result<Arc<CertifiedKey>, String>> = BTreeMap::new();
    for t in &table.tls {
        let key = (t.namespace.clone(), t.secret.clone());
        let got = parsed
            .entry(key)
            .or_insert_with(|| match secret(&t.namespace, &t.secret) {
                None => Err("does not exist".into()),
                Some(s) => certified_key(&s.value, &provider).map(Arc::new),
            });
        match got {
            Ok(k) => {
                certs.by_host.insert(t.host.clone(), Arc::clone(k));
            }
            Err(why) => problems.push(format!(
                "TLS secret {}/{} for host {} (Ingress {}) {why}; the host has no certificate",
                t.namespace, t.secret, t.host, t.ingress
            )),
        }
    }
    (certs, problems)
}

/// A `kubernetes.io/tls` Secret as a rustls key, or why not (a phrase after the Secret's name).
pub fn certified_key(secret: &Value, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let ty = str_at(secret, "/type");
    if ty != TLS_SECRET_TYPE {
        return Err(format!("has type {ty:?}, not {TLS_SECRET_TYPE:?}"));
    }
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let b64 = secret
            .pointer("/data")
            .and_then(|d| d.get(name))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("has no data.{name}"))?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("data.{name} is not base64: {e}"))
    };
    let (crt, key) = (field("tls.crt")?, field("tls.key")?);
    let chain = CertificateDer::pem_slice_iter(&crt)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("data.tls.crt is not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("data.tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| format!("data.tls.key is not a PEM private key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("data.tls.crt and data.tls.key cannot be used together: {e}"))
}

/// Picks the certificate by SNI from the current store.
#[derive(Debug)]
pub struct SniResolver {
    pub(super) state: Arc<IngressState>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        let found = self.state.certs().for_name(name);
        if found.is_none() {
            tracing::debug!(server_name = name, "no Ingress certificate for this name");
        }
        found
    }
}

/// The rustls server configuration: ring, TLS 1.2 and 1.3, ALPN h2 then http/1.1, certificates
/// by SNI from `state`.
pub fn server_config(state: Arc<IngressState>) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { state }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests;
