//! The Job controller's writes to pods: claiming (adoption adds the tracking finalizer), creating,
//! deleting, removing the tracking finalizer, and the record of finalizer removals the cache has
//! not shown yet.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rudder_api::selector::LabelSelector;
use rudder_client::cache::CachedObject;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use rudder_client::{Api, ClientError};
use serde_json::{Map, json};

use super::spec::{IndexInfo, JobSpec, pod_for};
use super::{Ctx, TRACKING_FINALIZER};
use crate::claim::claim_with;
use crate::error::Error;
use crate::podwrite;

/// Uids of pods whose tracking finalizer the controller removed and whose cached copy may still
/// show it, per Job (Kubernetes' `finalizerExpectations`). Such a pod was counted already; until
/// the cache catches up it must not be counted again.
#[derive(Debug, Default)]
pub struct FinalizerRemovals {
    jobs: Mutex<HashMap<Key, HashSet<String>>>,
}

impl FinalizerRemovals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, HashSet<String>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn expect(&self, job: &str, uid: &str) {
        self.lock()
            .entry(job.to_string())
            .or_default()
            .insert(uid.to_string());
    }

    pub fn observed(&self, job: &str, uid: &str) {
        let mut m = self.lock();
        if let Some(s) = m.get_mut(job) {
            s.remove(uid);
            if s.is_empty() {
                m.remove(job);
            }
        }
    }

    pub fn expected(&self, job: &str) -> HashSet<String> {
        self.lock().get(job).cloned().unwrap_or_default()
    }

    pub fn forget(&self, job: &str) {
        self.lock().remove(job);
    }

    /// Lowers the record for a pod event: a pod deleted, or updated without the finalizer.
    pub fn observe(&self, ev: &ReflectorEvent) {
        let gone: Vec<&Arc<CachedObject>> = match ev {
            ReflectorEvent::Deleted(p) => vec![p],
            ReflectorEvent::Updated { new, .. } if !new.has_finalizer(TRACKING_FINALIZER) => {
                vec![new]
            }
            ReflectorEvent::Restarted(all) => all
                .iter()
                .filter(|p| !p.has_finalizer(TRACKING_FINALIZER))
                .collect(),
            _ => Vec::new(),
        };
        for p in gone {
            if let Some(r) = p.controller_ref().filter(|r| r.kind == "Job") {
                self.observed(
                    &rudder_client::cache::object_key(&p.namespace, &r.name),
                    p.uid(),
                );
            }
        }
    }
}

/// Claims the Job's pods among `candidates`: adopts matching orphans (adding the tracking
/// finalizer unless the Job is finished, so their end is counted), releases owned pods that
/// stopped matching (dropping the finalizer). Returns the pods the Job controls.
pub async fn claim(
    api: &dyn Api,
    job: &CachedObject,
    selector: &LabelSelector,
    candidates: Vec<Arc<CachedObject>>,
    track: bool,
) -> Result<Vec<Arc<CachedObject>>, Error> {
    claim_with(api, job, selector, candidates, |pod, adopting| {
        let mut fs: Vec<String> = pod
            .finalizers()
            .into_iter()
            .filter(|f| f != TRACKING_FINALIZER)
            .collect();
        if adopting && track {
            fs.push(TRACKING_FINALIZER.into());
        }
        let mut m = Map::new();
        m.insert("finalizers".into(), json!(fs));
        m
    })
    .await
}

/// Creates one pod for the Job (an index's, for an indexed Job).
pub async fn create(
    ctx: &Ctx,
    job: &CachedObject,
    spec: &JobSpec,
    index: Option<IndexInfo>,
) -> Result<(), Error> {
    let pod = pod_for(job, spec, index);
    podwrite::create(ctx.api.as_ref(), &ctx.events, &job.value, &pod).await?;
    Ok(())
}

/// Removes the tracking finalizer from a pod (gone already is fine).
pub async fn remove_finalizer(api: &dyn Api, pod: &CachedObject) -> Result<(), ClientError> {
    match rudder_client::write::remove_finalizer(api, pod, TRACKING_FINALIZER).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes a pod of the Job. With `untrack`, the tracking finalizer goes first, so the pod is
/// not counted at all (pods removed for suspension or surplus parallelism, as Kubernetes'
/// `deleteJobPods`); without, the finalizer stays and the pod is counted as failed once
/// finished (pods removed because the Job fails, `deleteActivePods`).
pub async fn delete(
    ctx: &Ctx,
    job: &CachedObject,
    pod: &CachedObject,
    untrack: bool,
) -> Result<(), Error> {
    let key = job.key();
    if untrack && pod.has_finalizer(TRACKING_FINALIZER) {
        // The cache may show the pod with its finalizer a while longer: not a pod to count.
        ctx.finalizers.expect(&key, pod.uid());
    }
    if untrack && let Err(e) = remove_finalizer(ctx.api.as_ref(), pod).await {
        ctx.finalizers.observed(&key, pod.uid());
        ctx.events
            .warning(&job.value, "FailedDelete", &format!("Error deleting: {e}"));
        return Err(e.into());
    }
    Ok(podwrite::delete(ctx.api.as_ref(), &ctx.events, &job.value, pod).await?)
}
