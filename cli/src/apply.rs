//! `rudder apply -f`: create what is missing, three-way merge what exists.
//!
//! The configuration applied is stored on the object in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, exactly as kubectl does, so that
//! the next apply knows which fields it owns and may delete (see [`crate::merge`]).

use clap::Args;
use rudder_client::{Client, proto as pb};
use serde_json::Value;

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::kinds::ResourceType;
use crate::merge;
use crate::util::{self, DryRun, Manifest};

pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Files, directories or - (stdin) with the objects to apply.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// none, client (print only) or server (server-side dry run).
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
}

/// What apply will do to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Create,
    /// A merge patch to send; the live object it was computed against.
    Patch(Value),
    Unchanged,
}

/// A manifest object made ready to apply: its type, namespace, name and the object to send
/// (with the last-applied annotation set).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub rtype: ResourceType,
    pub namespace: String,
    pub name: String,
    pub object: Value,
}

/// Metadata fields the server owns: copying them from a file (`get -o yaml > f`) must not turn
/// into preconditions or changes.
const SERVER_OWNED: &[&str] = &[
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Sets the namespace, drops server-owned metadata and records the last-applied annotation.
pub fn prepare(ctx: &Ctx, rtype: &ResourceType, m: &Manifest) -> Result<Prepared> {
    let mut obj = m.object.clone();
    let meta = rudder_api::meta::metadata_mut(&mut obj);
    for f in SERVER_OWNED {
        meta.remove(*f);
    }
    if rtype.namespaced {
        let has_ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        if !has_ns {
            meta.insert("namespace".into(), Value::String(ctx.namespace.clone()));
        }
    }
    if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
        ann.remove(LAST_APPLIED);
        if ann.is_empty() {
            meta.remove("annotations");
        }
    }
    let last_applied = serde_json::to_string(&obj).unwrap_or_default();
    let meta = rudder_api::meta::metadata_mut(&mut obj);
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Value::Object(a) = ann {
        a.insert(LAST_APPLIED.into(), Value::String(last_applied));
    }
    Ok(Prepared {
        rtype: rtype.clone(),
        namespace: rudder_api::meta::namespace(&obj).to_string(),
        name: rudder_api::meta::name(&obj).to_string(),
        object: obj,
    })
}

/// The last-applied configuration recorded on a live object, if any.
pub fn last_applied(live: &Value) -> Option<Value> {
    rudder_api::meta::annotations(live)
        .get(LAST_APPLIED)
        .and_then(|s| serde_json::from_str(s).ok())
}

/// Computes what to do against the live object (`None`: absent).
pub fn plan(p: &Prepared, live: Option<&Value>) -> Plan {
    let Some(live) = live else {
        return Plan::Create;
    };
    let mut original = last_applied(live);
    let mut modified = p.object.clone();
    if p.rtype.has_status {
        // Status is a subresource: a patch of the object cannot change it, so it must not make
        // the object look changed either.
        for v in original.iter_mut().chain(std::iter::once(&mut modified)) {
            if let Value::Object(m) = v {
                m.remove("status");
            }
        }
    }
    let patch = merge::three_way(original.as_ref(), &modified, live);
    if merge::is_empty_patch(&patch) {
        Plan::Unchanged
    } else {
        Plan::Patch(patch)
    }
}

/// Reads the live object; `None` when it does not exist.
pub async fn live(client: &Client, p: &Prepared) -> Result<Option<Value>> {
    match util::get_object(client, &p.rtype, &p.namespace, &p.name).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends the plan (unless a client dry run); returns the resulting object when one was sent.
pub async fn execute(
    client: &Client,
    p: &Prepared,
    plan: &Plan,
    dry: DryRun,
) -> Result<Option<Value>> {
    if dry == DryRun::Client {
        return Ok(None);
    }
    match plan {
        Plan::Unchanged => Ok(None),
        Plan::Create => {
            let o = client
                .create(pb::CreateRequest {
                    kind: Some(p.rtype.kind_ref()),
                    namespace: p.rtype.scope(&p.namespace).to_string(),
                    json: util::to_json_bytes(&p.object),
                    options: dry.options(),
                })
                .await?;
            Ok(Some(util::decode(&o)?))
        }
        Plan::Patch(patch) => {
            let o = client
                .patch(pb::PatchRequest {
                    kind: Some(p.rtype.kind_ref()),
                    namespace: p.rtype.scope(&p.namespace).to_string(),
                    name: p.name.clone(),
                    patch_type: pb::PatchType::Merge as i32,
                    patch: util::to_json_bytes(patch),
                    status: false,
                    options: dry.options(),
                })
                .await?;
            Ok(Some(util::decode(&o)?))
        }
    }
}

pub async fn run(ctx: &Ctx, args: ApplyArgs) -> Result<()> {
    let manifests = util::read_manifests(&args.files)?;
    let client = ctx.client()?;
    let kinds = ctx.kinds().await?;
    let mut failed = false;
    for m in &manifests {
        let r = async {
            let rtype = util::manifest_type(kinds, m)?;
            let p = prepare(ctx, rtype, m)?;
            let live = live(client, &p).await.map_err(|e| {
                e.with_context(format!(
                    "error when retrieving current configuration of \"{}\"",
                    m.source
                ))
            })?;
            let plan = plan(&p, live.as_ref());
            let verb = match plan {
                Plan::Create => "created",
                Plan::Patch(_) => "configured",
                Plan::Unchanged => "unchanged",
            };
            execute(client, &p, &plan, args.dry_run)
                .await
                .map_err(|e| {
                    let op = if plan == Plan::Create {
                        "creating"
                    } else {
                        "patching"
                    };
                    e.with_context(format!("error when {op} \"{}\"", m.source))
                })?;
            let suffix = if plan == Plan::Unchanged {
                ""
            } else {
                args.dry_run.suffix()
            };
            util::outln(&format!(
                "{}/{} {verb}{suffix}",
                rtype.qualified_singular(),
                p.name
            ))
        }
        .await;
        if let Err(e) = r {
            if e.is_broken_pipe() {
                return Err(e);
            }
            eprintln!("{e}");
            failed = true;
        }
    }
    if failed {
        Err(CliError::Reported)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kinds;
    use serde_json::json;

    fn ctx() -> Ctx {
        Ctx::new(vec!["127.0.0.1:1".into()], "dev".into(), false)
    }

    #[test]
    fn prepare_sets_namespace_and_annotation() {
        let kinds = Kinds::builtin();
        let m = Manifest {
            source: "f".into(),
            object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "resourceVersion": "9"}, "data": {"a": "1"}}),
        };
        let t = kinds.lookup("cm").unwrap();
        let p = prepare(&ctx(), t, &m).unwrap();
        assert_eq!(p.namespace, "dev");
        let la = last_applied(&p.object).unwrap();
        assert_eq!(
            la,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "dev"}, "data": {"a": "1"}})
        );
        assert_eq!(plan(&p, None), Plan::Create);
        // Live equal to what was applied (plus server fields): unchanged.
        let mut live = p.object.clone();
        live["metadata"]["uid"] = json!("u");
        assert_eq!(plan(&p, Some(&live)), Plan::Unchanged);
        // The file drops a key: the patch deletes it.
        let m2 = Manifest {
            source: "f".into(),
            object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c"}, "data": {}}),
        };
        let p2 = prepare(&ctx(), t, &m2).unwrap();
        let Plan::Patch(patch) = plan(&p2, Some(&live)) else {
            panic!("expected a patch")
        };
        assert_eq!(patch["data"], json!({"a": null}));
        assert!(patch["metadata"]["annotations"][LAST_APPLIED].is_string());
    }
}
