//! A secured API port: what the server needs to serve mutual TLS, authenticate, authorize and
//! sign certificates, prepared from [`Security`] at start-up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::authn::{Authenticator, CaVerifier, StaticTokens, TokenAuthenticator};
use super::pki::{CERT_LIFETIME, Ca, PkiDir, PkiError};
use super::tls::ServingCert;
use crate::clock::Clock;

/// How requests are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// The Node authorizer, then RBAC (the default).
    Rbac,
    /// Every authenticated request is allowed.
    AlwaysAllow,
}

/// The security settings of a server (`rudder-apiserver`'s defaults: TLS, RBAC, no anonymous).
#[derive(Debug, Clone)]
pub struct Security {
    pub pki_dir: PathBuf,
    /// Extra names and addresses for the serving certificate, beyond localhost, the loopback
    /// addresses, the listen address and the host name.
    pub sans: Vec<String>,
    /// Addresses clients use, written into the built-in credentials when the CA is made.
    pub servers: Vec<String>,
    pub anonymous: bool,
    pub token_file: Option<PathBuf>,
    pub authorization: AuthorizationMode,
    /// Lifetime of the serving certificate and of certificates this server signs.
    pub cert_lifetime: Duration,
}

impl Security {
    pub fn new(pki_dir: impl Into<PathBuf>) -> Self {
        Security {
            pki_dir: pki_dir.into(),
            sans: Vec::new(),
            servers: Vec::new(),
            anonymous: false,
            token_file: None,
            authorization: AuthorizationMode::Rbac,
            cert_lifetime: CERT_LIFETIME,
        }
    }
}

/// A server's security, ready to serve.
pub struct Secured {
    pub ca: Arc<Ca>,
    pub verifier: Arc<CaVerifier>,
    pub serving: Arc<ServingCert>,
    pub authenticator: Arc<Authenticator>,
    pub names: Vec<String>,
    pub settings: Security,
}

impl Secured {
    /// Loads or makes the CA and issues the serving certificate for `names`.
    pub fn prepare(
        settings: Security,
        listen: std::net::SocketAddr,
        clock: Arc<dyn Clock>,
    ) -> Result<Secured, PkiError> {
        let pki = PkiDir::new(&settings.pki_dir);
        let ca = Arc::new(pki.load_or_create(&settings.servers, SystemTime::now())?);
        let verifier = Arc::new(CaVerifier::new(ca.cert_pem()).map_err(PkiError::Invalid)?);
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if !listen.ip().is_unspecified() {
            names.push(listen.ip().to_string());
        }
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            names.push(h.trim().to_string());
        }
        names.extend(settings.sans.iter().cloned());
        names.retain(|n| !n.is_empty());
        names.sort();
        names.dedup();
        let mut tokens: Vec<Arc<dyn TokenAuthenticator>> = Vec::new();
        if let Some(f) = &settings.token_file {
            tokens.push(Arc::new(StaticTokens::load(f).map_err(PkiError::Invalid)?));
        }
        let secured = Secured {
            ca,
            verifier,
            serving: Arc::new(ServingCert::default()),
            authenticator: Arc::new(Authenticator::new(tokens, settings.anonymous, clock)),
            names,
            settings,
        };
        secured.renew_serving()?;
        Ok(secured)
    }

    /// Issues a new serving certificate and uses it for new connections.
    pub fn renew_serving(&self) -> Result<(), PkiError> {
        let issued =
            self.ca
                .issue_server(&self.names, SystemTime::now(), self.settings.cert_lifetime)?;
        let key = rudder_client::tls::certified_key(&issued.cert_pem, &issued.key_pem)
            .map_err(|e| PkiError::Invalid(e.to_string()))?;
        self.serving.set(key);
        Ok(())
    }

    /// Renews the serving certificate each time two thirds of its lifetime have passed.
    pub async fn renew_forever(self: Arc<Self>) {
        let every = self.settings.cert_lifetime * 2 / 3;
        loop {
            tokio::time::sleep(every.max(Duration::from_secs(1))).await;
            match self.renew_serving() {
                Ok(()) => tracing::info!("renewed the serving certificate"),
                Err(e) => tracing::error!(error = %e, "cannot renew the serving certificate"),
            }
        }
    }
}
