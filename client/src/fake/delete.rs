//! Deletion on the fake, as the server's `service/delete.rs`: preconditions, finalizers,
//! graceful pod deletion, the Orphan/Foreground propagation finalizers and namespace termination
//! (marked `Terminating`; its content is the namespace controller's, and it goes once it has no
//! finalizers of either kind and no content).

use rudder_api::meta;
use rudder_proto as pb;
use serde_json::{Value, json};

use super::store::{
    KindMeta, NAMESPACE_KEY, ObjKey, SYSTEM_NAMESPACES, State, deleted, format_time, parse,
};
use crate::conn::ClientError;

impl State {
    pub fn delete(&mut self, req: pb::DeleteRequest) -> Result<pb::DeleteResponse, ClientError> {
        let k = KindMeta::resolve(&req.kind)?;
        let propagation = meta::propagation_finalizer(&req.propagation_policy)
            .map_err(ClientError::BadRequest)?;
        let key = (k.key.clone(), k.object_ns(&req.namespace), req.name.clone());
        if k.is("v1", "Namespace") && SYSTEM_NAMESPACES.contains(&req.name.as_str()) {
            return Err(ClientError::Forbidden(format!(
                "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                req.name
            )));
        }
        let res = self.delete_object(
            &k,
            &key,
            &req.precondition_uid,
            req.precondition_resource_version,
            req.grace_period_seconds,
            propagation,
        )?;
        if res.deleted {
            self.after_delete(&key.1);
        }
        Ok(res)
    }

    /// Deletes one object, or marks it when finalizers, a grace period or content hold it.
    fn delete_object(
        &mut self,
        k: &KindMeta,
        key: &ObjKey,
        uid: &str,
        rv: u64,
        grace: Option<i64>,
        propagation: Option<&str>,
    ) -> Result<pb::DeleteResponse, ClientError> {
        let old = self.stored(k, key)?;
        let mut v = parse(&old.json)?;
        if !uid.is_empty() && meta::uid(&v) != uid {
            let why = format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta::uid(&v)
            );
            return Err(k.conflict(&key.2, why));
        }
        if rv != 0 && rv != old.resource_version {
            let why = format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                old.resource_version
            );
            return Err(k.conflict(&key.2, why));
        }
        if grace.is_some_and(|g| g < 0) {
            return Err(ClientError::BadRequest(
                "gracePeriodSeconds: Invalid value: must be >= 0".into(),
            ));
        }
        let pod_grace = if k.is("v1", "Pod") {
            meta::pod_deletion_grace(&v, grace)
        } else {
            0
        };
        let is_ns = k.is("v1", "Namespace");
        // A namespace waits for its controller's token and for its content to go.
        let ns_held =
            is_ns && (!meta::spec_finalizers(&v).is_empty() || self.namespace_has_content(&key.2));
        if let Some(f) = propagation
            && !meta::is_deleting(&v)
        {
            meta::add_finalizer(&mut v, f);
        }
        let hold = !meta::finalizers(&v).is_empty() || pod_grace > 0 || ns_held;
        if hold && meta::is_deleting(&v) {
            // Already terminating: a second delete only reports the state.
            return Ok(deleted(old, false));
        }
        if !hold {
            return Ok(deleted(self.commit(key.clone(), v, true), true));
        }
        let now = self.now();
        let at = now
            .checked_add(jiff::SignedDuration::from_secs(pod_grace))
            .unwrap_or(now);
        let m = meta::metadata_mut(&mut v);
        m.insert("deletionTimestamp".into(), Value::String(format_time(at)));
        m.insert("deletionGracePeriodSeconds".into(), json!(pod_grace));
        if is_ns && let Value::Object(root) = &mut v {
            let status = root.entry("status").or_insert_with(|| json!({}));
            if !status.is_object() {
                *status = json!({});
            }
            status["phase"] = json!("Terminating");
        }
        Ok(deleted(self.commit(key.clone(), v, false), false))
    }

    fn namespace_has_content(&self, ns: &str) -> bool {
        self.objects.keys().any(|k| k.1 == ns)
    }

    /// After an object is gone: a terminating namespace that is now empty goes too.
    pub(super) fn after_delete(&mut self, ns: &str) {
        if !ns.is_empty() {
            self.finish_namespace(ns);
        }
    }

    fn finish_namespace(&mut self, ns: &str) {
        let key = (NAMESPACE_KEY.to_string(), String::new(), ns.to_string());
        let Some(Ok(v)) = self.objects.get(&key).map(|o| parse(&o.json)) else {
            return;
        };
        let ns_kind = Some(pb::KindRef {
            api_version: "v1".into(),
            kind: "Namespace".into(),
        });
        let Ok(k) = KindMeta::resolve(&ns_kind) else {
            return;
        };
        if meta::is_deleting(&v) && self.removable(&k, &key, &v) {
            self.commit(key, v, true);
        }
    }

    /// Whether an object being deleted may now be removed: no finalizers left, and for a
    /// namespace no `spec.finalizers` and no content either.
    pub(super) fn removable(&self, k: &KindMeta, key: &ObjKey, v: &Value) -> bool {
        meta::finalizers(v).is_empty()
            && (!k.is("v1", "Namespace")
                || (meta::spec_finalizers(v).is_empty() && !self.namespace_has_content(&key.2)))
    }
}
