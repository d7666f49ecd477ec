//! One module per controller, each exposing its [`Descriptor`].

pub mod configrollout;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod garbagecollector;
pub mod job;
pub mod loadbalancer;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod serviceaccount;
pub mod statefulset;
pub mod taintmanager;
pub mod ttlafterfinished;

use crate::runner::Descriptor;

/// Every controller, in the order they start.
pub fn all() -> Vec<Descriptor> {
    vec![
        replicaset::DESCRIPTOR,
        replicaset::RC_DESCRIPTOR,
        deployment::DESCRIPTOR,
        daemonset::DESCRIPTOR,
        statefulset::DESCRIPTOR,
        configrollout::DESCRIPTOR,
        job::DESCRIPTOR,
        ttlafterfinished::DESCRIPTOR,
        cronjob::DESCRIPTOR,
        garbagecollector::DESCRIPTOR,
        namespace::DESCRIPTOR,
        serviceaccount::DESCRIPTOR,
        nodelifecycle::DESCRIPTOR,
        taintmanager::DESCRIPTOR,
        podgc::DESCRIPTOR,
        nodeipam::DESCRIPTOR,
        endpointslice::DESCRIPTOR,
        endpoints::DESCRIPTOR,
        loadbalancer::DESCRIPTOR,
        disruption::DESCRIPTOR,
    ]
}
