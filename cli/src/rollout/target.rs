//! What `rollout`, `scale` and `set` share: naming the objects to act on (`KIND NAME`,
//! `KIND/NAME`, `-f FILE`, `KIND -l SELECTOR`, `KIND --all`), reading and writing them with a
//! resourceVersion precondition, and where each workload kind keeps its pod template.

use clap::Args;
use rudder_client::{ClientError, proto as pb};
use serde_json::Value;

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::kinds::ResourceType;
use crate::util::{self, DryRun};

/// How the objects are named on the command line, for every command here.
#[derive(Debug, Args, Default)]
pub struct Selection {
    /// Files or directories with the objects to act on.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Act on the objects of the given kind matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Act on every object of the given kind in the namespace.
    #[arg(long)]
    pub all: bool,
}

/// One object to act on.
#[derive(Debug, Clone)]
pub struct ObjRef {
    pub t: ResourceType,
    pub namespace: String,
    pub name: String,
}

impl ObjRef {
    /// `deployment.apps/web`: how kubectl names the object in output.
    pub fn display(&self) -> String {
        format!("{}/{}", self.t.qualified_singular(), self.name)
    }

    /// `deployments.apps "web"`: how kubectl names the object in per-object errors.
    pub fn quoted(&self) -> String {
        format!("{} \"{}\"", self.t.qualified_plural(), self.name)
    }
}

/// kubectl's `Kind.group` (`Deployment.apps`, `ConfigMap`), used in "not implemented" errors.
pub fn group_kind(t: &ResourceType) -> String {
    if t.group.is_empty() {
        t.kind.clone()
    } else {
        format!("{}.{}", t.kind, t.group)
    }
}

/// Resolves the positional arguments and `-f`/`-l`/`--all` into objects. `missing` is the error
/// when nothing names an object (each command has kubectl's own words for it); `verb` names the
/// command when a selector matches nothing ("no objects passed to scale").
pub async fn resolve(
    ctx: &Ctx,
    args: &[String],
    sel: &Selection,
    missing: &str,
    verb: &str,
) -> Result<Vec<ObjRef>> {
    let kinds = ctx.kinds().await?;
    let mut out = Vec::new();
    if !sel.files.is_empty() {
        if !args.is_empty() {
            return Err(CliError::msg("cannot give both resource arguments and -f"));
        }
        for m in util::read_manifests(&sel.files)? {
            let t = util::manifest_type(kinds, &m)?;
            let ns = match rudder_api::meta::namespace(&m.object) {
                "" => ctx.namespace.clone(),
                n => n.to_string(),
            };
            out.push(ObjRef {
                t: t.clone(),
                namespace: ns,
                name: rudder_api::meta::name(&m.object).to_string(),
            });
        }
        return Ok(out);
    }
    if args.is_empty() {
        return Err(CliError::msg(missing));
    }
    for target in util::parse_targets(args)? {
        let t = kinds.lookup(&target.kind)?;
        util::refuse_named_across_namespaces(ctx, t, target.names.as_deref())?;
        match target.names {
            Some(names) => {
                if sel.selector.is_some() || sel.all {
                    return Err(CliError::msg(
                        "name cannot be provided when a selector or --all is specified",
                    ));
                }
                out.extend(names.into_iter().map(|n| ObjRef {
                    t: t.clone(),
                    namespace: ctx.namespace.clone(),
                    name: n,
                }));
            }
            None => {
                if sel.selector.is_none() && !sel.all {
                    return Err(CliError::msg(
                        "resource(s) were provided, but no name was specified",
                    ));
                }
                let ns = if ctx.all_namespaces {
                    ""
                } else {
                    ctx.namespace.as_str()
                };
                let s = sel.selector.clone().unwrap_or_default();
                let (objs, _) = util::list_all(ctx.client()?, t, ns, &s, "", 500).await?;
                out.extend(objs.iter().map(|o| ObjRef {
                    t: t.clone(),
                    namespace: rudder_api::meta::namespace(o).to_string(),
                    name: rudder_api::meta::name(o).to_string(),
                }));
            }
        }
    }
    if out.is_empty() {
        return Err(CliError::msg(format!("no objects passed to {verb}")));
    }
    Ok(out)
}

pub async fn get(ctx: &Ctx, r: &ObjRef) -> Result<Value> {
    util::get_object(ctx.client()?, &r.t, &r.namespace, &r.name).await
}

/// Writes the whole object; its `metadata.resourceVersion` is the precondition.
pub async fn update(ctx: &Ctx, r: &ObjRef, obj: &Value, dry: DryRun) -> Result<Value> {
    let o = ctx
        .client()?
        .update(pb::UpdateRequest {
            kind: Some(r.t.kind_ref()),
            namespace: r.t.scope(&r.namespace).to_string(),
            json: util::to_json_bytes(obj),
            options: dry.options(),
        })
        .await?;
    util::decode(&o)
}

fn is_conflict(e: &CliError) -> bool {
    matches!(
        e,
        CliError::Server {
            err: ClientError::Conflict(_),
            ..
        }
    )
}

/// A change's result.
#[derive(Debug)]
pub enum Outcome {
    /// The change left the object as it was; nothing was written.
    Unchanged,
    /// Written (or, under `--dry-run=client`, only computed): the object after the change.
    Changed(Value),
}

/// Reads the object, applies `change` (an error there aborts before anything is written) and
/// writes the result guarded by the resourceVersion read; when someone else wrote in between,
/// reads and applies again, as kubectl's patch retries would.
pub async fn modify<F>(ctx: &Ctx, r: &ObjRef, dry: DryRun, change: F) -> Result<Outcome>
where
    F: Fn(&mut Value) -> Result<()>,
{
    const ATTEMPTS: usize = 5;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = get(ctx, r).await?;
        let mut after = before.clone();
        change(&mut after)?;
        if after == before {
            return Ok(Outcome::Unchanged);
        }
        if dry == DryRun::Client {
            return Ok(Outcome::Changed(after));
        }
        match update(ctx, r, &after, dry).await {
            Ok(o) => return Ok(Outcome::Changed(o)),
            Err(e) if is_conflict(&e) && attempt < ATTEMPTS => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Applies `change` to a copy of every object first, so that bad input fails before any object
/// is written; then writes them one by one.
pub async fn modify_all<F>(
    ctx: &Ctx,
    refs: &[ObjRef],
    dry: DryRun,
    change: F,
) -> Result<Vec<(ObjRef, Outcome)>>
where
    F: Fn(&ObjRef, &mut Value) -> Result<()>,
{
    for r in refs {
        let mut obj = get(ctx, r).await?;
        change(r, &mut obj)?;
    }
    let mut out = Vec::new();
    for r in refs {
        let o = modify(ctx, r, dry, |obj| change(r, obj)).await?;
        out.push((r.clone(), o));
    }
    Ok(out)
}

/// Ends a command that went on past per-object errors, as kubectl does: one error is the
/// command's error; several are printed one per line and the command fails.
pub fn finish(errors: Vec<CliError>) -> Result<()> {
    let mut errors = errors;
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            for e in &errors {
                eprintln!("{e}");
            }
            Err(CliError::Reported)
        }
    }
}

/// Where a kind keeps the pod spec it stamps pods from (a pod: its own spec), as a JSON pointer.
pub fn pod_spec_pointer(t: &ResourceType) -> Option<&'static str> {
    match (t.group.as_str(), t.kind.as_str()) {
        ("", "Pod") => Some("/spec"),
        ("", "ReplicationController")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job") => Some("/spec/template/spec"),
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// The object's pod spec, or kubectl's error for kinds without one.
pub fn pod_spec_mut<'a>(r: &ObjRef, obj: &'a mut Value) -> Result<&'a mut Value> {
    let Some(ptr) = pod_spec_pointer(&r.t) else {
        return Err(CliError::msg(format!(
            "{} is not a pod and has no pod template",
            r.display()
        )));
    };
    obj.pointer_mut(ptr)
        .filter(|v| v.is_object())
        .ok_or_else(|| CliError::msg(format!("{} has no pod spec at {ptr}", r.display())))
}

/// The label selector string of a `LabelSelector` object (`matchLabels` and
/// `matchExpressions`), for listing what a workload selects.
pub fn selector_string(sel: &Value) -> Result<String> {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let op = e
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default();
        parts.push(match op {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => {
                return Err(CliError::msg(format!(
                    "{other:?} is not a valid label selector operator"
                )));
            }
        });
    }
    Ok(parts.join(","))
}

/// Whether `obj` names `owner_uid` as its controller in `ownerReferences`.
pub fn controlled_by(obj: &Value, owner_uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|o| {
            o.get("controller").and_then(Value::as_bool) == Some(true)
                && o.get("uid").and_then(Value::as_str) == Some(owner_uid)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_and_owners() {
        let sel = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        });
        assert_eq!(
            selector_string(&sel).unwrap(),
            "app=web,tier in (a,b),!canary"
        );
        assert!(
            selector_string(&json!({"matchExpressions": [{"key": "k", "operator": "Near"}]}))
                .is_err()
        );
        let rs = json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "controller": false},
            {"uid": "u2", "controller": true}
        ]}});
        assert!(controlled_by(&rs, "u2"));
        assert!(!controlled_by(&rs, "u1"));
        assert!(!controlled_by(&json!({}), "u2"));
    }
}
