//! The load-balancer controller (name `service-lb`): gives Services of type LoadBalancer an
//! address from a configured pool (`--load-balancer-pool`, a CIDR) and writes it to
//! `status.loadBalancer.ingress`, as bare-metal load balancers (MetalLB) and the cloud
//! controller-manager's service controller do. The proxy then answers that address on every
//! node like an external IP.
//!
//! - Off without a pool. Services with `spec.loadBalancerClass` belong to another
//!   implementation and are left alone.
//! - A Service asking for `spec.loadBalancerIP` gets it when it is in the pool and free; else
//!   an `AllocationFailed` Event says why and the Service waits. Otherwise it gets the lowest
//!   free address (a CIDR's network and broadcast addresses excluded below /31).
//! - An address stays with its Service; one no longer of type LoadBalancer has its status
//!   cleared, so the address returns to the pool. An address outside the pool (the pool
//!   changed) is replaced.
//! - A Service the pool cannot serve yet (exhausted, or its asked address taken) looks again
//!   every 2 s, so an address given back goes to a waiting Service.
//! - One worker, and the addresses handed out in this term are remembered until the cache shows
//!   them, so two Services never get the same address from a cache that lags.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use rudder_client::Api;
use rudder_client::cache::{CachedObject, Reader};
use rudder_client::controller::{Action, Controller, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::workqueue::Key;
use rudder_client::write;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::str_at;

/// How often a Service waiting for an address looks again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(2);

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "service-lb",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// A pool of addresses: an IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    first: u32,
    last: u32,
}

impl std::str::FromStr for Pool {
    type Err = String;

    fn from_str(s: &str) -> Result<Pool, String> {
        let bad =
            || format!("--load-balancer-pool {s:?}: expected an IPv4 CIDR such as 192.168.50.0/28");
        let (ip, bits) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let bits: u32 = bits.parse().ok().filter(|b| *b <= 32).ok_or_else(bad)?;
        let size = 1u64 << (32 - bits);
        let base = u32::from(ip) & (u32::MAX.checked_shl(32 - bits).unwrap_or(0));
        let last = (u64::from(base) + size - 1) as u32;
        Ok(if bits < 31 {
            Pool {
                first: base + 1,
                last: last - 1,
            }
        } else {
            Pool { first: base, last }
        })
    }
}

impl Pool {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }

    /// The lowest address of the pool not in `used`.
    pub fn lowest_free(&self, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        (self.first..=self.last)
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
    }
}

pub struct Ctx {
    api: Arc<dyn Api>,
    services: Reader,
    pool: Pool,
    events: EventRecorder,
    /// Service key → the address written this term, until the cache shows it.
    assigned: Mutex<BTreeMap<String, Ipv4Addr>>,
}

async fn run(env: Env, cancel: CancellationToken) {
    let Some(pool) = env.load_balancer_pool else {
        return;
    };
    let services = env.informers.for_kind("v1", "Service");
    let (events, events_task) = env.recorder("service-lb");
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        services: services.reader(),
        pool,
        events,
        assigned: Mutex::default(),
    });
    Controller::new(ctx)
        .named("service-lb")
        .workers(1)
        .watches(services.subscribe(), self_mapper())
        .run(reconcile, policy, cancel)
        .await;
    events_task.abort();
}

fn ingress_ips(svc: &Value) -> Vec<Ipv4Addr> {
    svc.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("ip")?.as_str()?.parse().ok())
        .collect()
}

/// Whether this controller serves the Service.
fn wants_address(svc: &CachedObject) -> bool {
    str_at(&svc.value, "/spec/type") == "LoadBalancer"
        && str_at(&svc.value, "/spec/loadBalancerClass").is_empty()
        && !svc.is_deleting()
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let lock = || ctx.assigned.lock().unwrap_or_else(|e| e.into_inner());
    let Some(svc) = ctx.services.get_key(&key) else {
        lock().remove(&key);
        return Ok(Action::AwaitChange);
    };
    let have: Vec<Ipv4Addr> = ingress_ips(&svc.value);
    let ours = have.iter().any(|ip| ctx.pool.contains(*ip));
    if !wants_address(&svc) {
        lock().remove(&key);
        if ours && str_at(&svc.value, "/spec/loadBalancerClass").is_empty() {
            write::patch_status(
                ctx.api.as_ref(),
                &svc,
                json!({"loadBalancer": {"ingress": null}}),
            )
            .await?;
        }
        return Ok(Action::AwaitChange);
    }
    let asked = str_at(&svc.value, "/spec/loadBalancerIP");
    let asked_ip: Option<Ipv4Addr> = asked.parse().ok();
    if ours
        && have.iter().all(|ip| ctx.pool.contains(*ip))
        && asked_ip.is_none_or(|a| have.contains(&a))
    {
        lock().remove(&key);
        return Ok(Action::AwaitChange);
    }
    // Every address held by another Service, from the cache and from this term's writes.
    let me = key.clone();
    let mut used: Vec<Ipv4Addr> = ctx
        .services
        .list()
        .iter()
        .filter(|s| s.key() != me)
        .flat_map(|s| ingress_ips(&s.value))
        .collect();
    used.extend(lock().iter().filter(|(k, _)| **k != me).map(|(_, ip)| *ip));
    let ip = match (asked.is_empty(), asked_ip) {
        (true, _) => ctx.pool.lowest_free(&used),
        (false, Some(a)) if ctx.pool.contains(a) && !used.contains(&a) => Some(a),
        (false, Some(a)) if !ctx.pool.contains(a) => {
            let msg = format!("spec.loadBalancerIP {a} is not in the pool");
            ctx.events.warning(&svc.value, "AllocationFailed", &msg);
            return Ok(Action::AwaitChange);
        }
        (false, Some(a)) => {
            let msg = format!("spec.loadBalancerIP {a} is already in use");
            ctx.events.warning(&svc.value, "AllocationFailed", &msg);
            return Ok(Action::Requeue(RETRY));
        }
        (false, None) => {
            let msg = format!("spec.loadBalancerIP {asked:?} is not an IPv4 address");
            ctx.events.warning(&svc.value, "AllocationFailed", &msg);
            return Ok(Action::AwaitChange);
        }
    };
    let Some(ip) = ip else {
        ctx.events.warning(
            &svc.value,
            "AllocationFailed",
            "no address left in the load-balancer pool",
        );
        // Another Service may give one back; look again.
        return Ok(Action::Requeue(RETRY));
    };
    write::patch_status(
        ctx.api.as_ref(),
        &svc,
        json!({"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}),
    )
    .await?;
    lock().insert(me, ip);
    ctx.events.normal(
        &svc.value,
        "IPAllocated",
        &format!("Assigned IP [\"{ip}\"]"),
    );
    Ok(Action::AwaitChange)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_exclude_network_and_broadcast_and_hand_out_the_lowest_free() {
        let p: Pool = "192.168.50.0/29".parse().unwrap();
        assert!(!p.contains("192.168.50.0".parse().unwrap()));
        assert!(p.contains("192.168.50.6".parse().unwrap()));
        assert!(!p.contains("192.168.50.7".parse().unwrap()));
        let used: Vec<Ipv4Addr> = vec![
            "192.168.50.1".parse().unwrap(),
            "192.168.50.3".parse().unwrap(),
        ];
        assert_eq!(p.lowest_free(&used), Some("192.168.50.2".parse().unwrap()));
        let all: Vec<Ipv4Addr> = (1..=6).map(|i| Ipv4Addr::new(192, 168, 50, i)).collect();
        assert_eq!(p.lowest_free(&all), None);
        let one: Pool = "10.0.0.9/32".parse().unwrap();
        assert_eq!(one.lowest_free(&[]), Some("10.0.0.9".parse().unwrap()));
        assert!(
            "10.0.0.0"
                .parse::<Pool>()
                .unwrap_err()
                .contains("expected an IPv4 CIDR")
        );
    }
}
