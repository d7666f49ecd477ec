//! Ingress in the proxy's sync loop: informers for Ingresses, IngressClasses and Secrets beside
//! the loop's Services and EndpointSlices; every pass rebuilds the table and the certificates
//! from the caches and swaps them into the [`IngressState`] (the table only when it changed).
//! A Secret problem is logged once when it appears, not on every pass.
//!
//! With a status address ([`IngressState::with_status_address`]), every served Ingress whose
//! `status.loadBalancer.ingress` is not `[{ip: <address>}]` gets it written (one write per
//! Ingress in flight; a failed write is tried again on a later pass). Several proxies with
//! different addresses would overwrite each other: there is one per host under `rudder up`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rudder_client::Api;
use rudder_client::cache::{CachedObject, Reader};
use rudder_client::conn::kind_ref;
use rudder_client::informer::{InformerFactory, Subscription};
use rudder_client::proto as pb;
use serde_json::{Value, json};

use super::IngressState;
use super::table::build;
use super::tls::load;

/// The Ingress part of the sync loop.
pub struct IngressSync {
    state: Arc<IngressState>,
    ingresses: Reader,
    classes: Reader,
    secrets: Reader,
    problems: Vec<String>,
    status: Option<StatusWriter>,
}

/// Writes `status.loadBalancer.ingress` of served Ingresses.
struct StatusWriter {
    api: Arc<dyn Api>,
    ip: IpAddr,
    /// `namespace/name` of writes in flight.
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl IngressSync {
    /// Registers the informers (before the factory starts) and their subscriptions.
    pub fn new(
        state: Arc<IngressState>,
        informers: &InformerFactory,
        api: Arc<dyn Api>,
    ) -> (IngressSync, Vec<Subscription>) {
        let ingresses = informers.for_kind("networking.k8s.io/v1", "Ingress");
        let classes = informers.for_kind("networking.k8s.io/v1", "IngressClass");
        let secrets = informers.for_kind("v1", "Secret");
        let subs = vec![
            ingresses.subscribe(),
            classes.subscribe(),
            secrets.subscribe(),
        ];
        let sync = IngressSync {
            state: Arc::clone(&state),
            ingresses: ingresses.reader(),
            classes: classes.reader(),
            secrets: secrets.reader(),
            problems: Vec::new(),
            status: state.status_address().map(|ip| StatusWriter {
                api,
                ip,
                in_flight: Arc::default(),
            }),
        };
        (sync, subs)
    }

    /// One pass, from the same reading of Services and EndpointSlices as the data plane's.
    pub fn refresh(&mut self, services: &[&Value], slices: &[&Value]) {
        let objects = self.ingresses.list();
        let cls = self.classes.list();
        let ing: Vec<&Value> = objects.iter().map(|o| &o.value).collect();
        let cls: Vec<&Value> = cls.iter().map(|o| &o.value).collect();
        let table = build(&ing, &cls, services, slices);
        let (certs, problems) = load(&table, |ns, name| self.secrets.get(ns, name));
        for p in problems.iter().filter(|p| !self.problems.contains(p)) {
            tracing::warn!("{p}");
        }
        self.problems = problems;
        self.state.set_certs(certs);
        if let Some(w) = &self.status {
            for o in objects
                .iter()
                .filter(|o| table.served.binary_search(&o.key()).is_ok())
            {
                w.ensure(o);
            }
        }
        let served = table.served.len();
        if self.state.set_table(table) {
            tracing::debug!(ingresses = served, "ingress table updated");
        }
    }
}

impl StatusWriter {
    /// Writes the address into the Ingress' status unless it is there or a write is under way.
    fn ensure(&self, o: &Arc<CachedObject>) {
        let want = json!([{"ip": self.ip.to_string()}]);
        if o.value.pointer("/status/loadBalancer/ingress") == Some(&want) {
            return;
        }
        let key = o.key();
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if !in_flight.insert(key.clone()) {
                return;
            }
        }
        let mut obj = o.value.clone();
        obj["status"] = json!({"loadBalancer": {"ingress": want}});
        let req = pb::UpdateRequest {
            kind: Some(kind_ref("networking.k8s.io/v1", "Ingress")),
            namespace: o.namespace.clone(),
            json: Bytes::from(obj.to_string()),
            options: None,
        };
        let (api, in_flight) = (Arc::clone(&self.api), Arc::clone(&self.in_flight));
        tokio::spawn(async move {
            if let Err(e) = api.update_status(req).await {
                tracing::debug!(ingress = %key, error = %e, "writing the Ingress status failed; a later pass retries");
            }
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
    }
}
