//! The security seam: every request passes one tower layer that establishes who is calling.
//!
//! Handlers receive the outcome ([`Authenticated`]) from the request's extensions and never look
//! at credentials themselves; a refused caller's request reaches the handler only to be answered
//! `UNAUTHENTICATED` with the reason. Layout:
//! - [`pki`]: the cluster CA, issuing serving and client certificates.
//! - [`tls`]: the API port's TLS (handshakes, the renewable serving certificate, peer info).
//! - [`authn`]: certificates and bearer tokens to an [`Identity`].
//! - [`authz`]: the request's attributes, and the authorizers (RBAC, the Node authorizer).
//! - [`node`]: the Node authorizer (a node agent touches only its own pods and what they use).
//! - [`rbac`]: Kubernetes' RBAC evaluation over the store's Roles and bindings.
//! - [`secure`]: the settings and the prepared state of a secured API port.
//! - [`policy`]: the default roles and bindings every cluster starts with.

pub mod authn;
pub mod authz;
pub mod node;
pub mod pki;
pub mod policy;
pub mod rbac;
pub mod secure;
pub mod tls;

use std::sync::Arc;
use std::task::{Context, Poll};

pub use authn::Authenticator;

use crate::service::Identity;

/// The authentication layer's verdict on a request.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Result<Identity, String>);

/// The tower layer that runs the authenticator and records its verdict in the request.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let verdict = self
            .auth
            .authenticate(req.headers(), req.extensions().get::<tls::PeerInfo>());
        if let Err(why) = &verdict {
            let remote = req
                .extensions()
                .get::<tls::PeerInfo>()
                .and_then(|p| p.remote);
            tracing::debug!(?remote, reason = %why, "request not authenticated");
        }
        req.extensions_mut().insert(Authenticated(verdict));
        self.inner.call(req)
    }
}

/// The caller of a tonic request, or `UNAUTHENTICATED` with the reason. A request without a
/// verdict (a server assembled without the layer) is refused: the seam fails closed.
pub fn identity<T>(req: &tonic::Request<T>) -> Result<Identity, tonic::Status> {
    match req.extensions().get::<Authenticated>() {
        Some(Authenticated(Ok(id))) => Ok(id.clone()),
        Some(Authenticated(Err(why))) => Err(tonic::Status::unauthenticated(why.clone())),
        None => Err(tonic::Status::unauthenticated(
            "no identity: the authentication layer did not run",
        )),
    }
}
