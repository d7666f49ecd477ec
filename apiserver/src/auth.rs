//! The security seam: every request passes one tower layer that establishes who is calling.
//!
//! Handlers receive the [`Identity`] from the request's extensions and never look at credentials
//! themselves. Mutual TLS, bearer tokens, RBAC and audit logging plug in here, behind
//! [`Authenticator`]. Today the only authenticator treats every caller as anonymous, which
//! matches a single-user local cluster listening on loopback.

use std::sync::Arc;
use std::task::{Context, Poll};

use crate::service::Identity;

/// Establishes the caller's identity from request headers.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(&self, headers: &http::HeaderMap) -> Identity;
}

/// Everyone is `system:anonymous`.
pub struct Anonymous;

impl Authenticator for Anonymous {
    fn authenticate(&self, _headers: &http::HeaderMap) -> Identity {
        Identity::anonymous()
    }
}

/// The tower layer that runs the authenticator and records the identity in the request.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<dyn Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<dyn Authenticator>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, auth: self.auth.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<dyn Authenticator>,
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
        let id = self.auth.authenticate(req.headers());
        req.extensions_mut().insert(id);
        self.inner.call(req)
    }
}
