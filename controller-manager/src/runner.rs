//! The one contract every controller sits behind, and the runner that starts the chosen ones.
//!
//! A controller is a [`Descriptor`]: a name (what `--controllers` selects) and a function that,
//! given the shared [`Env`], runs it until its token is cancelled. Inside, each controller builds
//! a `rudder_client::controller::Controller` over the shared informers, with the work queue,
//! expectations and its own event recorder, and a `reconcile(key, ctx) -> Result<Action, Error>`
//! that reads the caches (level-triggered) and may run any number of times. A controller keeps
//! no state of its own beyond what the runner gives it, so a new leader starts from the caches
//! alone.

use std::sync::Arc;

use futures::future::BoxFuture;
use rudder_client::Api;
use rudder_client::clock::SharedClock;
use rudder_client::events::EventRecorder;
use rudder_client::informer::InformerFactory;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// What every controller gets.
#[derive(Clone)]
pub struct Env {
    pub api: Arc<dyn Api>,
    pub clock: SharedClock,
    /// One list+watch per kind for the whole process.
    pub informers: Arc<InformerFactory>,
    /// Workers per controller (keys reconciled at once).
    pub workers: usize,
    /// Reported as the Events' source host.
    pub host: String,
    /// Most endpoints in one EndpointSlice.
    pub max_endpoints_per_slice: usize,
    /// Settings of the node controllers (lifecycle, pod GC, IPAM).
    pub nodes: crate::controllers::nodelifecycle::NodeControllers,
    /// Where LoadBalancer Services' addresses come from; `None`: the controller is off.
    pub load_balancer_pool: Option<crate::controllers::loadbalancer::Pool>,
}

impl Env {
    /// An event recorder reporting as `<name>-controller`, as Kubernetes' controllers do, with
    /// its sending task (the caller waits for it on shutdown).
    pub fn recorder(&self, name: &str) -> (EventRecorder, JoinHandle<()>) {
        EventRecorder::new(
            Arc::clone(&self.api),
            &format!("{name}-controller"),
            &self.host,
            Arc::clone(&self.clock),
            1024,
        )
    }
}

pub type RunFn = fn(Env, CancellationToken) -> BoxFuture<'static, ()>;

/// One controller as the runner knows it.
#[derive(Clone, Copy)]
pub struct Descriptor {
    pub name: &'static str,
    pub run: RunFn,
}

/// Picks controllers by a `--controllers` list, as kube-controller-manager reads it: `*` is
/// all, `name` adds one, `-name` removes one; later entries win. Unknown names are an error
/// naming the known ones.
pub fn select(all: &[Descriptor], spec: &[String]) -> Result<Vec<Descriptor>, String> {
    let known = |n: &str| all.iter().any(|d| d.name == n);
    let names: Vec<&str> = all.iter().map(|d| d.name).collect();
    let mut on = vec![false; all.len()];
    for entry in spec.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (name, enable) = match entry.strip_prefix('-') {
            Some(n) => (n, false),
            None => (entry, true),
        };
        if name == "*" {
            on.iter_mut().for_each(|o| *o = enable);
            continue;
        }
        if !known(name) {
            return Err(format!(
                "--controllers: unknown controller {name:?}; known: {}",
                names.join(", ")
            ));
        }
        if let Some(i) = all.iter().position(|d| d.name == name) {
            on[i] = enable;
        }
    }
    Ok(all
        .iter()
        .zip(on)
        .filter(|(_, on)| *on)
        .map(|(d, _)| *d)
        .collect())
}

/// Runs `controllers` until `cancel`, each in its own task; returns when all have stopped.
pub async fn run_all(env: Env, controllers: &[Descriptor], cancel: CancellationToken) {
    let mut set = JoinSet::new();
    for d in controllers {
        tracing::info!(controller = d.name, "starting controller");
        set.spawn((d.run)(env.clone(), cancel.clone()));
    }
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "a controller task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &'static str) -> Descriptor {
        Descriptor {
            name,
            run: |_, _| Box::pin(async {}),
        }
    }

    fn names(v: Vec<Descriptor>) -> Vec<&'static str> {
        v.into_iter().map(|d| d.name).collect()
    }

    #[test]
    fn selection_as_kube_controller_manager() {
        let all = [d("replicaset"), d("deployment"), d("job")];
        let s = |x: &[&str]| select(&all, &x.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            names(s(&["*"]).unwrap()),
            ["replicaset", "deployment", "job"]
        );
        assert_eq!(
            names(s(&["*", "-job"]).unwrap()),
            ["replicaset", "deployment"]
        );
        assert_eq!(names(s(&["job"]).unwrap()), ["job"]);
        assert!(names(s(&[]).unwrap()).is_empty());
        let err = s(&["*", "nope"]).err().unwrap();
        assert!(
            err.contains("unknown controller \"nope\"") && err.contains("replicaset"),
            "{err}"
        );
    }
}
