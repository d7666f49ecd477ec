//! Update, update-status, patch and bind: read-modify-write with optimistic concurrency.
//!
//! Semantics as Kubernetes has them:
//! - A client-given `metadata.resourceVersion` is a precondition: stale → Conflict.
//! - Without one, the server retries internally when it loses a race (GuaranteedUpdate).
//! - For kinds with a status subresource, an update keeps the stored status and an update-status
//!   keeps everything but the status.
//! - uid, creationTimestamp, deletionTimestamp and generation are the server's: generation grows
//!   when anything other than metadata and status changes.
//! - A write that changes nothing is not stored: the stored object is returned as it is, with its
//!   version unchanged.
//! - Removing the last finalizer of an object being deleted deletes it (a namespace also needs
//!   its `spec.finalizers` empty and no content; only `finalize` changes those finalizers).

use std::sync::Arc;

use rudder_api::meta;
use rudder_api::registry::KindInfo;
use rudder_proto as pb;
use serde_json::{Value, json};

use super::{Api, Identity, UPDATE_RETRIES, dry_run};
use crate::error::ApiError;
use crate::state::{Command, Expect, ObjKey, StoredObject};

/// Metadata fields only the server sets; kept from the stored object on every update.
const SERVER_META: [&str; 5] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
];

impl Api {
    pub async fn update(
        &self,
        id: &Identity,
        req: pb::UpdateRequest,
    ) -> Result<pb::Object, ApiError> {
        self.update_common(id, req, false).await
    }

    pub async fn update_status(
        &self,
        id: &Identity,
        req: pb::UpdateRequest,
    ) -> Result<pb::Object, ApiError> {
        self.update_common(id, req, true).await
    }

    async fn update_common(
        &self,
        id: &Identity,
        req: pb::UpdateRequest,
        status: bool,
    ) -> Result<pb::Object, ApiError> {
        let info = self.kind(&req.kind)?;
        let obj = self.parse_body(&info, &req.json)?;
        let name = meta::name(&obj).to_string();
        if name.is_empty() {
            return Err(ApiError::invalid(
                &info,
                "",
                "metadata.name: Required value",
            ));
        }
        let ns = if info.namespaced {
            match (meta::namespace(&obj), req.namespace.as_str()) {
                ("", "") => "default".to_string(),
                ("", r) => r.to_string(),
                (b, r) if !r.is_empty() && b != r => {
                    return Err(ApiError::BadRequest(format!(
                        "the namespace of the provided object ({b}) does not match the namespace sent on the request ({r})"
                    )));
                }
                (b, _) => b.to_string(),
            }
        } else {
            String::new()
        };
        let sub = if status { "status" } else { "" };
        self.authorize(id, "update", &info, &ns, &name, sub)?;
        self.check_escalation(id, &info, &ns, &obj)?;
        let key = self.key(&info, &ns, &name);
        let client_rv = meta::resource_version(&obj);
        let dry = dry_run(&req.options);
        let info_c = info.clone();
        self.guaranteed_update(&info, &key, client_rv, status, dry, move |_, old| {
            let mut new = obj.clone();
            super::namespace::keep_spec_finalizers(&info_c, old, &mut new);
            Ok(new)
        })
        .await
    }

    /// Applies a JSON merge patch or JSON patch to the stored object, then updates as above.
    pub async fn patch(
        &self,
        id: &Identity,
        req: pb::PatchRequest,
    ) -> Result<pb::Object, ApiError> {
        let info = self.kind(&req.kind)?;
        let ns = if info.namespaced && req.namespace.is_empty() {
            "default".to_string()
        } else {
            req.namespace.clone()
        };
        let sub = if req.status { "status" } else { "" };
        self.authorize(id, "patch", &info, &ns, &req.name, sub)?;
        let key = self.key(&info, &ns, &req.name);
        if req.patch.len() > super::MAX_OBJECT_BYTES {
            return Err(ApiError::TooLarge {
                size: req.patch.len(),
                limit: super::MAX_OBJECT_BYTES,
            });
        }
        let patch: Value = serde_json::from_slice(&req.patch)
            .map_err(|e| ApiError::BadRequest(format!("invalid patch: {e}")))?;
        let kind = pb::PatchType::try_from(req.patch_type).unwrap_or(pb::PatchType::Unspecified);
        let json_patch = match kind {
            pb::PatchType::Json => Some(
                serde_json::from_value::<json_patch::Patch>(patch.clone())
                    .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?,
            ),
            pb::PatchType::Merge | pb::PatchType::Unspecified => {
                if !patch.is_object() {
                    return Err(ApiError::BadRequest(
                        "invalid merge patch: must be a JSON object".into(),
                    ));
                }
                None
            }
        };
        // The patch may carry a resourceVersion as a precondition, as in Kubernetes.
        let client_rv = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let dry = dry_run(&req.options);
        let name = req.name.clone();
        let info_c = info.clone();
        let (api, who, ns_c) = (self.clone(), id.clone(), ns.clone());
        self.guaranteed_update(&info, &key, client_rv, req.status, dry, move |_, old| {
            let mut doc = old.clone();
            match &json_patch {
                Some(p) => json_patch::patch(&mut doc, p).map_err(|e| {
                    ApiError::invalid(
                        &info_c,
                        &name,
                        format!("the JSON patch could not be applied: {e}"),
                    )
                })?,
                None => json_patch::merge(&mut doc, &patch),
            }
            api.check_escalation(&who, &info_c, &ns_c, &doc)?;
            super::namespace::keep_spec_finalizers(&info_c, old, &mut doc);
            Ok(doc)
        })
        .await
    }

    /// Assigns a pod to a node (the binding subresource).
    pub async fn bind(&self, id: &Identity, req: pb::BindRequest) -> Result<pb::Object, ApiError> {
        let info = self
            .registry
            .by_api_version_kind("v1", "Pod")
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .clone();
        if req.node_name.is_empty() {
            return Err(ApiError::invalid(
                &info,
                &req.name,
                "target.name: Required value",
            ));
        }
        let ns = if req.namespace.is_empty() {
            "default".to_string()
        } else {
            req.namespace.clone()
        };
        self.authorize(id, "create", &info, &ns, &req.name, "binding")?;
        let key = self.key(&info, &ns, &req.name);
        let dry = dry_run(&req.options);
        for _ in 0..UPDATE_RETRIES {
            let old = self
                .store
                .get(&key)
                .ok_or_else(|| ApiError::not_found(&info, &req.name))?;
            let mut pod = Self::parse_stored(&old)?;
            if !req.uid.is_empty() && meta::uid(&pod) != req.uid {
                return Err(ApiError::conflict(
                    &info,
                    &req.name,
                    format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        req.uid,
                        meta::uid(&pod)
                    ),
                ));
            }
            if old.deleting {
                return Err(ApiError::conflict(
                    &info,
                    &req.name,
                    format!(
                        "pod {} is being deleted, cannot be assigned to a host",
                        req.name
                    ),
                ));
            }
            let current = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !current.is_empty() {
                return Err(ApiError::conflict(
                    &info,
                    &req.name,
                    format!("pod {} is already assigned to node \"{current}\"", req.name),
                ));
            }
            if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("nodeName".into(), Value::String(req.node_name.clone()));
            }
            set_condition(&mut pod, "PodScheduled", "True", &self.now());
            let cmd = self.put_command(&info, key.clone(), Expect::Version(old.rv), pod)?;
            if dry {
                return Ok(self.dry_run_object(&info, &key, &cmd));
            }
            match self.propose(&info, cmd).await {
                Ok(ev) => return Ok(self.to_pb(&info, &ev.key, &ev.object)),
                Err(ApiError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::modified(&info, &req.name))
    }

    /// Read-modify-write: `mutate` turns the stored object into the requested one; the result is
    /// merged with server-owned fields, admitted and proposed with the read version as
    /// precondition. Retried on a lost race unless the client gave a version.
    pub(crate) async fn guaranteed_update<F>(
        &self,
        info: &Arc<KindInfo>,
        key: &ObjKey,
        client_rv: u64,
        status: bool,
        dry: bool,
        mutate: F,
    ) -> Result<pb::Object, ApiError>
    where
        F: Fn(&StoredObject, &Value) -> Result<Value, ApiError>,
    {
        if status && !info.has_status {
            return Err(ApiError::NotFound {
                resource: format!("{}/status", info.qualified_plural()),
                name: key.name.clone(),
            });
        }
        for _ in 0..UPDATE_RETRIES {
            let old = self
                .store
                .get(key)
                .ok_or_else(|| ApiError::not_found(info, &key.name))?;
            if client_rv != 0 && client_rv != old.rv {
                return Err(ApiError::modified(info, &key.name));
            }
            let old_v = Self::parse_stored(&old)?;
            // The change is made in the version the client speaks, then stored converted.
            let requested = mutate(&old, self.served_form(info, &old_v)?.as_ref())?;
            let (storage, requested) = self.to_storage(info, &key.name, requested)?;
            let Some(new_v) = self.prepare_update(&storage, key, &old_v, requested, status)? else {
                return Ok(self.to_pb(info, key, &old));
            };
            let cmd = if old.deleting && self.removable(&storage, key, &new_v) {
                Command::Delete {
                    key: key.clone(),
                    expect: Expect::Version(old.rv),
                }
            } else {
                self.put_command(&storage, key.clone(), Expect::Version(old.rv), new_v)?
            };
            if dry {
                return Ok(self.dry_run_object(info, key, &cmd));
            }
            let deleted = matches!(cmd, Command::Delete { .. });
            match self.propose(info, cmd).await {
                Ok(ev) => {
                    if deleted {
                        self.after_delete(key).await;
                    }
                    return Ok(self.to_pb(info, &ev.key, &ev.object));
                }
                Err(ApiError::Conflict { .. }) if client_rv == 0 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::modified(info, &key.name))
    }

    /// Builds the object to store from the stored one and the requested one, or `None` when
    /// nothing would change.
    fn prepare_update(
        &self,
        info: &KindInfo,
        key: &ObjKey,
        old: &Value,
        mut new: Value,
        status: bool,
    ) -> Result<Option<Value>, ApiError> {
        let name = key.name.as_str();
        let new_uid = meta::uid(&new).to_string();
        if !new_uid.is_empty() && new_uid != meta::uid(old) {
            return Err(ApiError::conflict(
                info,
                name,
                format!(
                    "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {}",
                    meta::uid(old)
                ),
            ));
        }
        if meta::name(&new) != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta::name(&new)
            )));
        }
        new = meta::separate_status(new, old, status, info.has_status);
        {
            let old_meta = meta::metadata(old).cloned().unwrap_or_default();
            let m = meta::metadata_mut(&mut new);
            for f in SERVER_META {
                match old_meta.get(f) {
                    Some(v) => m.insert(f.to_string(), v.clone()),
                    None => m.remove(f),
                };
            }
            m.remove("resourceVersion");
            m.remove("selfLink");
            if info.namespaced {
                m.insert("namespace".into(), Value::String(key.namespace.clone()));
            } else {
                m.remove("namespace");
            }
        }
        if meta::is_deleting(old) {
            let before = meta::finalizers(old);
            if let Some(added) = meta::finalizers(&new)
                .into_iter()
                .find(|f| !before.contains(f))
            {
                return Err(ApiError::Forbidden(format!(
                    "{} \"{name}\" is forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]",
                    info.qualified_plural()
                )));
            }
        }
        // Keep (or allocate) the Service's IP and node ports before validation, which treats
        // them as immutable: a request that leaves them out means "as they are".
        self.allocate_service(info, key, &mut new, Some(old))?;
        let mut admitted = self.admit(info, name, new, Some(old))?;
        let generation = meta::generation(old).max(1);
        let generation = if meta::content_differs(old, &admitted) {
            generation + 1
        } else {
            generation
        };
        meta::metadata_mut(&mut admitted).insert("generation".into(), json!(generation));
        daemonset_template_generation(info, Some(old), &mut admitted, generation);
        let mut old_cmp = old.clone();
        meta::metadata_mut(&mut old_cmp).remove("resourceVersion");
        if old_cmp == admitted {
            return Ok(None);
        }
        Ok(Some(admitted))
    }
}

/// The annotation Kubernetes' DaemonSet strategy keeps: the generation of the DaemonSet's last
/// pod template change (pods are labelled `pod-template-generation` with it). Kept from the old
/// object, moved to `generation` when `spec.template` changed, `1` at create.
pub(crate) fn daemonset_template_generation(
    info: &KindInfo,
    old: Option<&Value>,
    new: &mut Value,
    generation: i64,
) {
    const KEY: &str = "deprecated.daemonset.template.generation";
    if info.group != "apps" || info.kind != "DaemonSet" {
        return;
    }
    let template_changed =
        old.is_none_or(|o| o.pointer("/spec/template") != new.pointer("/spec/template"));
    let value = match old
        .and_then(|o| o.pointer(&format!("/metadata/annotations/{}", KEY.replace('/', "~1"))))
    {
        Some(v) if !template_changed => v.clone(),
        _ => json!(generation.to_string()),
    };
    let m = meta::metadata_mut(new);
    let annotations = m.entry("annotations").or_insert_with(|| json!({}));
    if let Some(a) = annotations.as_object_mut() {
        a.insert(KEY.into(), value);
    }
}

/// Sets a pod condition, replacing one of the same type.
fn set_condition(pod: &mut Value, kind: &str, status: &str, now: &str) {
    let Some(root) = pod.as_object_mut() else {
        return;
    };
    let st = root.entry("status").or_insert_with(|| json!({}));
    let Some(st) = st.as_object_mut() else { return };
    let conds = st.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conds.as_array_mut() else {
        return;
    };
    list.retain(|c| c.get("type").and_then(Value::as_str) != Some(kind));
    list.push(json!({"type": kind, "status": status, "lastTransitionTime": now}));
}
