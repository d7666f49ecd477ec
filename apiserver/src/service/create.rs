//! Create: server-managed fields, generateName, status reset, admission, proposal.

use rudder_api::meta;
use rudder_proto as pb;
use serde_json::{Value, json};

use super::{Api, Identity, dry_run};
use crate::error::ApiError;
use crate::state::Expect;

/// Fields a client may not set on create; the server owns them.
const SERVER_OWNED: [&str; 7] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
    "managedFields",
];

impl Api {
    pub async fn create(
        &self,
        id: &Identity,
        req: pb::CreateRequest,
    ) -> Result<pb::Object, ApiError> {
        let info = self.kind(&req.kind)?;
        let mut obj = self.parse_body(&info, &req.json)?;
        let body_ns = meta::namespace(&obj).to_string();
        let ns = if !info.namespaced {
            String::new()
        } else if !body_ns.is_empty() {
            if !req.namespace.is_empty() && req.namespace != body_ns {
                return Err(ApiError::BadRequest(format!(
                    "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({})",
                    req.namespace
                )));
            }
            body_ns
        } else if !req.namespace.is_empty() {
            req.namespace.clone()
        } else {
            "default".to_string()
        };
        self.authorize(id, "create", &info, &ns, meta::name(&obj), "")?;
        self.check_escalation(id, &info, &ns, &obj)?;
        if meta::resource_version(&obj) != 0 || !meta::str_field(&obj, "resourceVersion").is_empty()
        {
            return Err(ApiError::BadRequest(
                "metadata.resourceVersion: Invalid value: resourceVersion should not be set on objects to be created".into(),
            ));
        }
        {
            let m = meta::metadata_mut(&mut obj);
            for f in SERVER_OWNED {
                m.remove(f);
            }
            if info.namespaced {
                m.insert("namespace".into(), Value::String(ns.clone()));
            } else {
                m.remove("namespace");
            }
        }
        reset_status_on_create(info.kind, info.has_status, &mut obj);
        super::namespace::require_finalizer(&info, &mut obj);

        let given_name = meta::name(&obj).to_string();
        let generate = meta::str_field(&obj, "generateName").to_string();
        if given_name.is_empty() && generate.is_empty() {
            return Err(ApiError::invalid(
                &info,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
        // A generated name can collide; Kubernetes leaves the retry to the client, we retry a few
        // times because the suffix space is large and a collision is pure bad luck.
        // Also retried: losing a race for an automatically allocated Service IP or node port.
        let attempts = 5;
        let mut last_err = None;
        for _ in 0..attempts {
            let name = if given_name.is_empty() {
                format!("{generate}{}", self.ids.name_suffix())
            } else {
                given_name.clone()
            };
            let mut candidate = obj.clone();
            meta::metadata_mut(&mut candidate).insert("name".into(), Value::String(name.clone()));
            let key = self.key(&info, &ns, &name);
            if !dry_run(&req.options) {
                self.store
                    .writable()
                    .map_err(ApiError::InsufficientStorage)?;
            }
            if info.namespaced && self.store.get(&self.namespace_key(&ns)).is_none() {
                return Err(ApiError::NotFound {
                    resource: "namespaces".into(),
                    name: ns,
                });
            }
            if info.group.is_empty() && info.kind == "Pod" {
                default_toleration_seconds(&mut candidate, &self.config);
            }
            let mut admitted = self.admit(&info, &name, candidate, None)?;
            {
                let uid = self.ids.uid();
                let m = meta::metadata_mut(&mut admitted);
                m.insert("uid".into(), Value::String(uid.clone()));
                m.insert("creationTimestamp".into(), Value::String(self.now()));
                m.insert("generation".into(), json!(1));
                if info.group == "batch" && info.kind == "Job" {
                    generate_job_selector(&mut admitted, &uid, &name);
                }
                super::update::daemonset_template_generation(&info, None, &mut admitted, 1);
            }
            let auto_allocated = self.allocate_service(&info, &key, &mut admitted, None)?;
            let cmd = self.put_command(&info, key.clone(), Expect::Absent, admitted)?;
            if dry_run(&req.options) {
                if self.store.get(&key).is_some() {
                    return Err(ApiError::already_exists(&info, &name));
                }
                return Ok(self.dry_run_object(&info, &key, &cmd));
            }
            match self.propose(&info, cmd).await {
                Ok(ev) => return Ok(self.to_pb(&info, &ev.key, &ev.object)),
                Err(e @ ApiError::AlreadyExists { .. }) if given_name.is_empty() => {
                    last_err = Some(e)
                }
                Err(e @ ApiError::Invalid { .. }) if auto_allocated => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| ApiError::Internal("name generation failed".into())))
    }

    pub(crate) fn namespace_key(&self, ns: &str) -> crate::state::ObjKey {
        crate::state::ObjKey {
            kind: std::sync::Arc::from(crate::state::NAMESPACE_KIND),
            namespace: String::new(),
            name: ns.to_string(),
        }
    }
}

/// Status is not the client's to set on create (Kubernetes' PrepareForCreate), except on Nodes,
/// whose agent reports it from the start.
fn reset_status_on_create(kind: &str, has_status: bool, obj: &mut Value) {
    if !has_status || kind == "Node" {
        return;
    }
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    match kind {
        "Pod" => {
            map.insert("status".into(), json!({"phase": "Pending"}));
        }
        "Namespace" => {
            map.insert("status".into(), json!({"phase": "Active"}));
        }
        _ => {
            map.remove("status");
        }
    }
}

/// Kubernetes' job strategy at create: unless `spec.manualSelector` is true or a selector is
/// given, the selector is `batch.kubernetes.io/controller-uid=<uid>` and the pod template gets
/// the controller-uid and job-name labels (new and legacy spellings). It needs the uid, so it
/// runs after admission; what it adds matches by construction.
fn generate_job_selector(job: &mut Value, uid: &str, name: &str) {
    let manual = job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
    if manual || job.pointer("/spec/selector").is_some_and(|s| !s.is_null()) {
        return;
    }
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if !template.is_object() {
        return;
    }
    let meta = template
        .as_object_mut()
        .map(|t| t.entry("metadata").or_insert_with(|| json!({})));
    let Some(labels) = meta.and_then(|m| {
        if !m.is_object() {
            return None;
        }
        let l = m
            .as_object_mut()?
            .entry("labels")
            .or_insert_with(|| json!({}));
        l.as_object_mut()
    }) else {
        return;
    };
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", uid),
        ("batch.kubernetes.io/job-name", name),
        ("controller-uid", uid),
        ("job-name", name),
    ] {
        labels.insert(k.into(), Value::String(v.into()));
    }
}

/// Kubernetes' DefaultTolerationSeconds admission: a pod that tolerates neither
/// `node.kubernetes.io/not-ready:NoExecute` nor `node.kubernetes.io/unreachable:NoExecute`
/// (a toleration with that key or none, and that effect or none) gets one for each, with the
/// configured `tolerationSeconds` (300 by default), so that its pods leave a lost node five
/// minutes after it was tainted rather than at once.
fn default_toleration_seconds(pod: &mut Value, cfg: &super::ApiConfig) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if tolerations.is_null() {
        *tolerations = json!([]);
    }
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    let tolerates = |key: &str| {
        list.iter().any(|t| {
            let field = |f: &str| t.get(f).and_then(Value::as_str).unwrap_or("");
            (field("key") == key || field("key").is_empty())
                && (field("effect") == "NoExecute" || field("effect").is_empty())
        })
    };
    let missing: Vec<(&str, i64)> = [
        (
            "node.kubernetes.io/not-ready",
            cfg.default_not_ready_toleration_seconds,
        ),
        (
            "node.kubernetes.io/unreachable",
            cfg.default_unreachable_toleration_seconds,
        ),
    ]
    .into_iter()
    .filter(|(k, _)| !tolerates(k))
    .collect();
    for (key, seconds) in missing {
        list.push(
            json!({"key": key, "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": seconds}),
        );
    }
    if list.is_empty() {
        spec.remove("tolerations");
    }
}

#[cfg(test)]
mod toleration_tests {
    use super::*;

    fn keys(pod: &Value) -> Vec<(String, i64)> {
        pod["spec"]["tolerations"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        (
                            t["key"].as_str().unwrap_or("").to_string(),
                            t["tolerationSeconds"].as_i64().unwrap_or(-1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn pods_get_both_tolerations_unless_they_have_their_own() {
        let cfg = super::super::ApiConfig {
            default_unreachable_toleration_seconds: 60,
            ..Default::default()
        };
        let mut plain = json!({"spec": {"containers": []}});
        default_toleration_seconds(&mut plain, &cfg);
        assert_eq!(
            keys(&plain),
            [
                ("node.kubernetes.io/not-ready".to_string(), 300),
                ("node.kubernetes.io/unreachable".to_string(), 60)
            ]
        );
        assert_eq!(plain["spec"]["tolerations"][0]["operator"], "Exists");
        assert_eq!(plain["spec"]["tolerations"][0]["effect"], "NoExecute");

        let mut own = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        default_toleration_seconds(&mut own, &cfg);
        assert_eq!(
            keys(&own),
            [
                ("node.kubernetes.io/unreachable".to_string(), 5),
                ("node.kubernetes.io/not-ready".to_string(), 300)
            ],
            "its own unreachable toleration stays, not-ready is added"
        );

        let mut everything = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut everything, &cfg);
        assert_eq!(keys(&everything).len(), 1, "tolerates every taint already");

        let mut no_schedule = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}]}});
        default_toleration_seconds(&mut no_schedule, &cfg);
        assert_eq!(
            keys(&no_schedule).len(),
            3,
            "a NoSchedule toleration does not count"
        );
    }
}
