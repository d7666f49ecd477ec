//! Ingress in the proxy's sync loop: informers for Ingresses, IngressClasses and Secrets beside
//! the loop's Services and EndpointSlices; every pass rebuilds the table and the certificates
//! from the caches and swaps them into the [`IngressState`] (the table only when it changed).
//! A Secret problem is logged once when it appears, not on every pass.

use std::sync::Arc;

use rudder_client::cache::Reader;
use rudder_client::informer::{InformerFactory, Subscription};
use serde_json::Value;

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
}

impl IngressSync {
    /// Registers the informers (before the factory starts) and their subscriptions.
    pub fn new(
        state: Arc<IngressState>,
        informers: &InformerFactory,
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
            state,
            ingresses: ingresses.reader(),
            classes: classes.reader(),
            secrets: secrets.reader(),
            problems: Vec::new(),
        };
        (sync, subs)
    }

    /// One pass, from the same reading of Services and EndpointSlices as the data plane's.
    pub fn refresh(&mut self, services: &[&Value], slices: &[&Value]) {
        let ing = self.ingresses.list();
        let cls = self.classes.list();
        let ing: Vec<&Value> = ing.iter().map(|o| &o.value).collect();
        let cls: Vec<&Value> = cls.iter().map(|o| &o.value).collect();
        let table = build(&ing, &cls, services, slices);
        let (certs, problems) = load(&table, |ns, name| self.secrets.get(ns, name));
        for p in problems.iter().filter(|p| !self.problems.contains(p)) {
            tracing::warn!("{p}");
        }
        self.problems = problems;
        self.state.set_certs(certs);
        let served = table.served.len();
        if self.state.set_table(table) {
            tracing::debug!(ingresses = served, "ingress table updated");
        }
    }
}
