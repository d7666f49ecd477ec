//! Eviction on the fake, as the server's `service/evict.rs`: the same decision
//! (`rudder_api::eviction::decide`), the budget charged and the pod deleted under the fake's one
//! lock, so there is no race to guard. A dry run decides and writes nothing; it answers with
//! the pod as stored.

use rudder_api::eviction::{self, Refusal, Verdict};
use rudder_proto as pb;

use super::store::{KindMeta, State, deleted, parse};
use crate::conn::ClientError;

fn kind(api_version: &str, kind: &str) -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: api_version.into(),
        kind: kind.into(),
    })
}

impl State {
    pub fn evict(&mut self, req: pb::EvictRequest) -> Result<pb::DeleteResponse, ClientError> {
        let pods = KindMeta::resolve(&kind("v1", "Pod"))?;
        let pdbs = KindMeta::resolve(&kind("policy/v1", "PodDisruptionBudget"))?;
        let ns = pods.object_ns(&req.namespace);
        let opts =
            eviction::parse_eviction(&req.json, &req.name, &ns).map_err(ClientError::BadRequest)?;
        let dry = opts.dry_run || req.options.as_ref().is_some_and(|o| o.dry_run);
        let key = (pods.key.clone(), ns.clone(), req.name.clone());
        let stored = self.stored(&pods, &key)?;
        let pod = parse(&stored.json)?;
        let budgets = self
            .objects
            .iter()
            .filter(|(k, _)| k.0 == pdbs.key && k.1 == ns)
            .map(|(_, o)| parse(&o.json))
            .collect::<Result<Vec<_>, _>>()?;
        let now = super::store::format_time(self.now());
        let verdict = eviction::decide(&pod, &budgets, &now).map_err(|r| match r {
            Refusal::TooManyRequests(m) => ClientError::TooManyRequests(m),
            Refusal::Forbidden(m) => ClientError::Forbidden(m),
            Refusal::Internal(m) => ClientError::Other(format!("Internal: {m}")),
        })?;
        if dry {
            return Ok(deleted(stored, false));
        }
        let guard = match verdict {
            Verdict::Delete { guard } => guard,
            Verdict::Decrement { budget, updated } => {
                self.commit((pdbs.key.clone(), ns.clone(), budget), updated, false);
                false
            }
        };
        let precondition = match (guard, opts.precondition_resource_version) {
            (true, 0) => stored.resource_version,
            (_, given) => given,
        };
        self.delete(pb::DeleteRequest {
            kind: kind("v1", "Pod"),
            namespace: ns,
            name: req.name,
            precondition_uid: opts.precondition_uid,
            precondition_resource_version: precondition,
            grace_period_seconds: opts.grace_period_seconds,
            options: None,
            propagation_policy: opts.propagation_policy,
        })
    }
}
