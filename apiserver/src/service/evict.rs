//! Evict: the `pods/eviction` subresource, as Kubernetes' eviction REST. The decision is
//! [`rudder_api::eviction::decide`] (shared with the client's fake); this module reads the pod
//! and its namespace's PodDisruptionBudgets, writes the budget and deletes the pod.
//!
//! The race: the decision is made on what was read, so two evictions may both see one
//! disruption allowed. The guard is the budget write: it carries the budget's resourceVersion
//! as precondition, so of two evictions deciding on one version only one writes; the other
//! conflicts, re-reads (up to [`EVICTION_RETRIES`] times) and decides again on the decremented
//! budget, which then refuses it. A pod is deleted only after its budget write committed. As in
//! Kubernetes, the pod deletion can still fail after the budget was charged (the pod changed
//! under a precondition, the server stopped): the disruption controller forgets a recorded
//! disruption whose pod was not deleted within two minutes, which gives the allowance back.

use rudder_api::eviction::{self, Refusal, Verdict};
use rudder_api::meta;
use rudder_proto as pb;

use super::{Api, Identity, dry_run, kind_key};
use crate::error::ApiError;
use crate::state::Expect;

/// Times an eviction re-reads and decides again after losing the budget write to another.
const EVICTION_RETRIES: usize = 5;

impl Api {
    pub async fn evict(
        &self,
        id: &Identity,
        req: pb::EvictRequest,
    ) -> Result<pb::DeleteResponse, ApiError> {
        let pod_info = self.builtin("v1", "Pod")?;
        let pdb_info = self.builtin("policy/v1", "PodDisruptionBudget")?;
        let ns = if req.namespace.is_empty() {
            "default".to_string()
        } else {
            req.namespace.clone()
        };
        self.authorize(id, "create", &pod_info, &ns, &req.name, "eviction")?;
        let opts =
            eviction::parse_eviction(&req.json, &req.name, &ns).map_err(ApiError::BadRequest)?;
        let dry = opts.dry_run || dry_run(&req.options);
        let pod_key = self.key(&pod_info, &ns, &req.name);
        for _ in 0..EVICTION_RETRIES {
            let stored = self
                .store
                .get(&pod_key)
                .ok_or_else(|| ApiError::not_found(&pod_info, &req.name))?;
            let pod = Self::parse_stored(&stored)?;
            let snapshot = self.store.snapshot();
            let budgets = snapshot
                .range(&kind_key(&pdb_info), &ns, None)
                .map(|(_, o)| {
                    let mut v = Self::parse_stored(o)?;
                    meta::metadata_mut(&mut v)
                        .insert("resourceVersion".into(), o.rv.to_string().into());
                    Ok(v)
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            let verdict = eviction::decide(&pod, &budgets, &self.now()).map_err(|r| match r {
                Refusal::TooManyRequests(m) => ApiError::TooManyRequests(m),
                Refusal::Forbidden(m) => ApiError::Forbidden(m),
                Refusal::Internal(m) => ApiError::Internal(m),
            })?;
            let guard_rv = match verdict {
                Verdict::Delete { guard } => guard.then_some(stored.rv),
                Verdict::Decrement { budget, updated } => {
                    if !dry {
                        let key = self.key(&pdb_info, &ns, &budget);
                        let rv = meta::resource_version(&updated);
                        let cmd = self.put_command(&pdb_info, key, Expect::Version(rv), updated)?;
                        match self.propose(&pdb_info, cmd).await {
                            Ok(_) => {}
                            // Another eviction (or the controller) wrote the budget first.
                            Err(ApiError::Conflict { .. }) => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    None
                }
            };
            let precondition_rv = match (guard_rv, opts.precondition_resource_version) {
                (Some(rv), 0) => rv,
                (_, given) => given,
            };
            let delete = pb::DeleteRequest {
                kind: Some(pb::KindRef {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                }),
                namespace: ns.clone(),
                name: req.name.clone(),
                precondition_uid: opts.precondition_uid.clone(),
                precondition_resource_version: precondition_rv,
                grace_period_seconds: opts.grace_period_seconds,
                options: Some(pb::WriteOptions {
                    dry_run: dry,
                    ..req.options.clone().unwrap_or_default()
                }),
                propagation_policy: opts.propagation_policy.clone(),
            };
            // Authorized above as an eviction; the delete is the server's.
            return self.delete(&Api::server_identity(), delete).await;
        }
        Err(ApiError::TooManyRequests(format!(
            "Cannot evict pod {}: its disruption budget kept changing; try again",
            req.name
        )))
    }

    /// A built-in kind the server cannot be without.
    fn builtin(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<std::sync::Arc<rudder_api::KindInfo>, ApiError> {
        self.registry
            .by_api_version_kind(api_version, kind)
            .cloned()
            .map_err(|e| ApiError::Internal(e.to_string()))
    }
}
