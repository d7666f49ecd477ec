//! Delete: preconditions, finalizers, graceful pod deletion and namespace termination.
//!
//! - An object with finalizers is not removed: it gets `deletionTimestamp` and stays until the
//!   last finalizer is removed (by an update), which then deletes it.
//! - A pod bound to a node is deleted gracefully: it gets `deletionTimestamp` (now + grace) and
//!   `deletionGracePeriodSeconds`, and its node agent removes it once the containers stopped. A
//!   pod not on a node, or deleted with grace period 0, goes at once.
//! - A namespace is held by its `spec.finalizers` (the namespace controller's `kubernetes`) as
//!   by metadata finalizers, and by any content: it gets `deletionTimestamp` and
//!   `status.phase: Terminating`, and nothing in it is touched here. The namespace controller
//!   deletes the content and then finalizes it; see [`super::namespace`].
//! - Propagation: Background (the default) deletes the object and leaves its dependents to the
//!   garbage collector; Orphan and Foreground add Kubernetes' `orphan` / `foregroundDeletion`
//!   finalizer, which the garbage collector removes once it has released the dependents (Orphan)
//!   or once they are gone (Foreground).

use std::sync::Arc;

use rudder_api::meta;
use rudder_api::registry::KindInfo;
use rudder_proto as pb;
use serde_json::{Value, json};

use super::{Api, Identity, SYSTEM_NAMESPACES, UPDATE_RETRIES, dry_run, namespace};
use crate::error::ApiError;
use crate::state::{Command, Expect, ObjKey};

impl Api {
    pub async fn delete(
        &self,
        id: &Identity,
        req: pb::DeleteRequest,
    ) -> Result<pb::DeleteResponse, ApiError> {
        let info = self.kind(&req.kind)?;
        let propagation =
            meta::propagation_finalizer(&req.propagation_policy).map_err(ApiError::BadRequest)?;
        let ns = if info.namespaced && req.namespace.is_empty() {
            "default".to_string()
        } else {
            req.namespace.clone()
        };
        self.authorize(id, "delete", &info, &ns, &req.name, "")?;
        let key = self.key(&info, &ns, &req.name);
        if info.kind == "Namespace"
            && info.group.is_empty()
            && SYSTEM_NAMESPACES.contains(&req.name.as_str())
        {
            return Err(ApiError::Forbidden(format!(
                "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                req.name
            )));
        }
        let res = self
            .delete_object(
                &info,
                &key,
                (&req.precondition_uid, req.precondition_resource_version),
                req.grace_period_seconds,
                propagation,
                dry_run(&req.options),
            )
            .await?;
        if !dry_run(&req.options) && res.deleted {
            self.after_delete(&key).await;
        }
        Ok(res)
    }

    /// Deletes one object, or marks it for deletion when finalizers or a grace period hold it.
    async fn delete_object(
        &self,
        info: &Arc<KindInfo>,
        key: &ObjKey,
        (uid, rv): (&str, u64),
        grace: Option<i64>,
        propagation: Option<&str>,
        dry: bool,
    ) -> Result<pb::DeleteResponse, ApiError> {
        for _ in 0..UPDATE_RETRIES {
            let old = self
                .store
                .get(key)
                .ok_or_else(|| ApiError::not_found(info, &key.name))?;
            let mut obj = Self::parse_stored(&old)?;
            if !uid.is_empty() && meta::uid(&obj) != uid {
                return Err(ApiError::conflict(
                    info,
                    &key.name,
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&obj)
                    ),
                ));
            }
            if rv != 0 && rv != old.rv {
                return Err(ApiError::conflict(
                    info,
                    &key.name,
                    format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        old.rv
                    ),
                ));
            }
            if grace.is_some_and(|g| g < 0) {
                return Err(ApiError::BadRequest(
                    "gracePeriodSeconds: Invalid value: must be >= 0".into(),
                ));
            }
            // Orphan or Foreground: the garbage collector's finalizer holds the object until
            // its dependents are released or gone.
            if let Some(f) = propagation
                && !old.deleting
            {
                meta::add_finalizer(&mut obj, f);
            }
            let finalizers = meta::finalizers(&obj);
            let pod_grace = if info.kind == "Pod" && info.group.is_empty() {
                meta::pod_deletion_grace(&obj, grace)
            } else {
                0
            };
            let is_ns = namespace::is_namespace(info);
            // A namespace waits for its controller's token and for its content to go.
            let ns_held = is_ns
                && (!meta::spec_finalizers(&obj).is_empty()
                    || self.store.snapshot().namespace_has_content(&key.name));
            let hold = !finalizers.is_empty() || pod_grace > 0 || ns_held;
            if hold && old.deleting {
                // Already terminating: a second delete only reports the state.
                return Ok(pb::DeleteResponse {
                    object: Some(self.to_pb(info, key, &old)),
                    deleted: false,
                });
            }
            let cmd = if hold {
                let now = self.clock.now();
                let at = now
                    .checked_add(jiff::SignedDuration::from_secs(pod_grace))
                    .unwrap_or(now);
                {
                    let m = meta::metadata_mut(&mut obj);
                    m.insert(
                        "deletionTimestamp".into(),
                        Value::String(crate::clock::format_time(at)),
                    );
                    m.insert("deletionGracePeriodSeconds".into(), json!(pod_grace));
                }
                if is_ns && let Some(root) = obj.as_object_mut() {
                    let status = root.entry("status").or_insert_with(|| json!({}));
                    if !status.is_object() {
                        *status = json!({});
                    }
                    status["phase"] = json!("Terminating");
                }
                self.put_command(info, key.clone(), Expect::Version(old.rv), obj)?
            } else {
                Command::Delete {
                    key: key.clone(),
                    expect: Expect::Version(old.rv),
                }
            };
            let deleted = matches!(cmd, Command::Delete { .. });
            if dry {
                let mut o = self.dry_run_object(info, key, &cmd);
                if deleted {
                    o.json = old.json.clone();
                }
                return Ok(pb::DeleteResponse {
                    object: Some(o),
                    deleted,
                });
            }
            match self.propose(info, cmd).await {
                Ok(ev) => {
                    return Ok(pb::DeleteResponse {
                        object: Some(self.to_pb(info, &ev.key, &ev.object)),
                        deleted,
                    });
                }
                Err(ApiError::Conflict { .. }) if rv == 0 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::modified(info, &key.name))
    }
}
