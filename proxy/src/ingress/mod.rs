//! Ingress on every node, as ingress-nginx serves it: HTTP and HTTPS entry points that route
//! requests by host and path to the ready endpoints of Services.
//!
//! - [`table`]: the routing table from Ingresses, IngressClasses, Services and EndpointSlices
//!   (pure); its doc states the matching and precedence rules.
//! - [`tls`]: certificates from `kubernetes.io/tls` Secrets and the SNI resolver.
//! - [`server`]: the HTTP and HTTPS servers; `forward`: routing and forwarding one request.
//! - [`sync`]: the proxy's sync loop refreshing the table and certificates from its informers.
//!
//! [`IngressState`] is what they share: the current table and certificates, each swapped whole
//! by the sync loop and read by every request or handshake.
//!
//! See `docs/proxy.md`.

mod forward;
pub mod server;
pub mod sync;
pub mod table;
pub mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};

use table::{Backend, Table};
use tls::Certs;

/// The table and certificates in force, and the round-robin positions.
#[derive(Default)]
pub struct IngressState {
    table: RwLock<Arc<Table>>,
    certs: RwLock<Arc<Certs>>,
    /// Backend id → the next endpoint's index; kept across table swaps, so a change elsewhere
    /// does not send every backend's next request to its first endpoint.
    next: Mutex<HashMap<String, usize>>,
    /// Written into served Ingresses' `status.loadBalancer.ingress`, when set.
    status_address: Option<IpAddr>,
}

impl std::fmt::Debug for IngressState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressState")
            .field("served", &self.table().served)
            .field("certificates", &self.certs().len())
            .finish()
    }
}

fn read<T>(l: &RwLock<Arc<T>>) -> Arc<T> {
    Arc::clone(&l.read().unwrap_or_else(|p| p.into_inner()))
}

impl IngressState {
    pub fn new() -> Arc<IngressState> {
        Arc::new(IngressState::default())
    }

    /// A state whose sync writes `ip` into the status of the Ingresses it serves.
    pub fn with_status_address(ip: IpAddr) -> Arc<IngressState> {
        Arc::new(IngressState {
            status_address: Some(ip),
            ..IngressState::default()
        })
    }

    pub fn status_address(&self) -> Option<IpAddr> {
        self.status_address
    }

    pub fn table(&self) -> Arc<Table> {
        read(&self.table)
    }

    pub fn certs(&self) -> Arc<Certs> {
        read(&self.certs)
    }

    /// Replaces the table when it differs. Returns whether it did.
    pub fn set_table(&self, table: Table) -> bool {
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        if **t == table {
            return false;
        }
        // Forget the positions of backends that are gone, so the map stays bounded.
        let ids: std::collections::HashSet<String> = table.backends().map(Backend::id).collect();
        self.next
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| ids.contains(id));
        *t = Arc::new(table);
        true
    }

    pub fn set_certs(&self, certs: Certs) {
        *self.certs.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certs);
    }

    /// The backend's endpoints in the order to try them: round-robin over the ready ones.
    pub fn endpoints(&self, backend: &Backend) -> Vec<SocketAddr> {
        let n = backend.endpoints.len();
        if n == 0 {
            return Vec::new();
        }
        let start = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let i = next.entry(backend.id()).or_insert(0);
            let start = *i % n;
            *i = start + 1;
            start
        };
        (0..n).map(|k| backend.endpoints[(start + k) % n]).collect()
    }
}
