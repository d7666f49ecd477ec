//! `rudder rollout history` and `rollout undo` (for daemon sets and stateful sets see
//! [`revisions`]). A deployment's revisions are the replica sets it controls (an
//! `ownerReferences` entry with `controller: true` and the deployment's uid), numbered by their
//! `deployment.kubernetes.io/revision` annotation. Undo is kubectl's client-side rollback: the
//! chosen replica set's pod template (without its `pod-template-hash` label) and annotations are
//! written back into the deployment.

use std::collections::BTreeMap;
use std::io::Write as _;

use clap::Args;
use serde_json::{Map, Value};

use super::revisions;
use super::status::revision_of;
use super::target::{self, ObjRef, Selection};
use super::template;
use crate::Ctx;
use crate::error::{CliError, Result};
use crate::util::{self, DryRun};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const HASH_LABEL: &str = "pod-template-hash";

/// Deployment annotations a rollback keeps from the deployment and never copies from the replica
/// set: the controller's own bookkeeping and apply's record (kubectl's list).
const KEEP_ON_ROLLBACK: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// TYPE NAME or TYPE/NAME (deployment).
    pub args: Vec<String>,
    #[command(flatten)]
    pub sel: Selection,
    /// Show this revision's pod template instead of the list.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub revision: i64,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    /// TYPE NAME or TYPE/NAME (deployment).
    pub args: Vec<String>,
    #[command(flatten)]
    pub sel: Selection,
    /// The revision to roll back to (0, the default: the one before the current).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub to_revision: i64,
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
}

fn require_deployment(r: &ObjRef, what: &str) -> Result<()> {
    if r.t.group == "apps" && r.t.kind == "Deployment" {
        return Ok(());
    }
    Err(CliError::msg(format!(
        "no {what} has been implemented for {:?}",
        target::group_kind(&r.t)
    )))
}

/// The replica sets the deployment controls, each with its revision (those without a readable
/// revision are left out, as kubectl leaves them out).
async fn revisions(ctx: &Ctx, deploy: &Value, ns: &str) -> Result<Vec<(i64, Value)>> {
    let kinds = ctx.kinds().await?;
    let rs_type = kinds.by_gvk("apps/v1", "ReplicaSet")?;
    let selector =
        target::selector_string(deploy.pointer("/spec/selector").unwrap_or(&Value::Null))?;
    let (items, _) = util::list_all(ctx.client()?, rs_type, ns, &selector, "", 500).await?;
    let uid = rudder_api::meta::uid(deploy);
    let mut out: Vec<(i64, Value)> = items
        .into_iter()
        .filter(|rs| target::controlled_by(rs, uid))
        .filter_map(|rs| revision_of(&rs).ok().map(|n| (n, rs)))
        .collect();
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

fn annotation<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// kubectl's history text for one deployment: the REVISION/CHANGE-CAUSE table, or one
/// revision's template (with the replica set's change cause among its annotations).
fn history_text(revs: &[(i64, Value)], revision: i64) -> Result<String> {
    if revs.is_empty() {
        return Ok("No rollout history found.".to_string());
    }
    // One entry per revision; a later replica set with the same number wins, as in kubectl.
    let by_rev: BTreeMap<i64, &Value> = revs.iter().map(|(n, rs)| (*n, rs)).collect();
    if revision > 0 {
        let Some(rs) = by_rev.get(&revision) else {
            return Err(CliError::msg("unable to find the specified revision"));
        };
        let mut tpl = rs.pointer("/spec/template").cloned().unwrap_or_default();
        let cause = annotation(rs, CHANGE_CAUSE);
        if !cause.is_empty() {
            let meta = rudder_api::meta::metadata_mut(&mut tpl);
            let ann = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(a) = ann.as_object_mut() {
                a.insert(CHANGE_CAUSE.into(), Value::String(cause.to_string()));
            }
        }
        return Ok(template::describe(&tpl));
    }
    let mut tw = tabwriter::TabWriter::new(Vec::new()).padding(2);
    let _ = writeln!(tw, "REVISION\tCHANGE-CAUSE");
    for (n, rs) in &by_rev {
        let cause = match annotation(rs, CHANGE_CAUSE) {
            "" => "<none>",
            c => c,
        };
        let _ = writeln!(tw, "{n}\t{cause}");
    }
    let bytes = tw
        .into_inner()
        .map_err(|e| CliError::msg(format!("formatting the history: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub async fn history(ctx: &Ctx, args: HistoryArgs) -> Result<()> {
    if args.revision < 0 {
        return Err(CliError::msg(format!(
            "revision must be a positive integer: {}",
            args.revision
        )));
    }
    let refs = target::resolve(
        ctx,
        &args.args,
        &args.sel,
        "required resource not specified",
        "rollout history",
    )
    .await?;
    for r in &refs {
        let text = if revisions::has_controller_revisions(r) {
            revisions::history_text(ctx, r, args.revision).await?
        } else {
            require_deployment(r, "history viewer")?;
            let deploy = target::get(ctx, r).await?;
            let revs = revisions(ctx, &deploy, &r.namespace).await?;
            history_text(&revs, args.revision)?
        };
        let with = if args.revision > 0 {
            format!("with revision #{}", args.revision)
        } else {
            String::new()
        };
        // kubectl prints the name, its note, then the text on the following lines.
        util::outln(&format!("{} {with}\n{text}", r.display()))?;
    }
    Ok(())
}

/// The template without the hash label, with empty maps and lists dropped: kubectl compares
/// templates semantically, where an empty map equals an absent one.
fn normalized_template(tpl: &Value) -> Value {
    fn prune(v: &Value) -> Option<Value> {
        match v {
            Value::Null => None,
            Value::Object(m) => {
                let m: Map<String, Value> = m
                    .iter()
                    .filter_map(|(k, v)| prune(v).map(|v| (k.clone(), v)))
                    .collect();
                (!m.is_empty()).then_some(Value::Object(m))
            }
            Value::Array(a) if a.is_empty() => None,
            Value::Array(a) => Some(Value::Array(
                a.iter().map(|v| prune(v).unwrap_or(Value::Null)).collect(),
            )),
            other => Some(other.clone()),
        }
    }
    let mut t = tpl.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH_LABEL);
    }
    prune(&t).unwrap_or(Value::Null)
}

/// Which replica set to roll back to: the given revision, or the highest below the latest.
fn pick<'a>(revs: &'a [(i64, Value)], to: i64, deploy_name: &str) -> Result<(i64, &'a Value)> {
    if to < 0 {
        return Err(CliError::msg(format!(
            "unable to find specified revision {to} in history"
        )));
    }
    if to > 0 {
        return revs
            .iter()
            .rev()
            .find(|(n, _)| *n == to)
            .map(|(n, rs)| (*n, rs))
            .ok_or_else(|| {
                CliError::msg(format!("unable to find specified revision {to} in history"))
            });
    }
    let latest = revs.last().map(|(n, _)| *n);
    revs.iter()
        .rev()
        .find(|(n, _)| Some(*n) != latest)
        .map(|(n, rs)| (*n, rs))
        .ok_or_else(|| {
            CliError::msg(format!(
                "no rollout history found for deployment {deploy_name:?}"
            ))
        })
}

/// The deployment rolled back to the replica set: its template (hash label removed) and its
/// annotations, keeping the deployment's own bookkeeping annotations.
pub fn rolled_back(deploy: &Value, rs: &Value) -> Value {
    let mut d = deploy.clone();
    let mut tpl = rs.pointer("/spec/template").cloned().unwrap_or_default();
    if let Some(l) = tpl
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH_LABEL);
    }
    let mut ann = Map::new();
    for (k, v) in rudder_api::meta::annotations(deploy) {
        if KEEP_ON_ROLLBACK.contains(&k.as_str()) {
            ann.insert(k, Value::String(v));
        }
    }
    for (k, v) in rudder_api::meta::annotations(rs) {
        if !KEEP_ON_ROLLBACK.contains(&k.as_str()) {
            ann.insert(k, Value::String(v));
        }
    }
    if let Some(spec) = d.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("template".into(), tpl);
    }
    let meta = rudder_api::meta::metadata_mut(&mut d);
    if ann.is_empty() {
        meta.remove("annotations");
    } else {
        meta.insert("annotations".into(), Value::Object(ann));
    }
    d
}

pub async fn undo(ctx: &Ctx, args: UndoArgs) -> Result<()> {
    let refs = target::resolve(
        ctx,
        &args.args,
        &args.sel,
        "required resource not specified",
        "rollout undo",
    )
    .await?;
    for r in &refs {
        if revisions::has_controller_revisions(r) {
            revisions::undo(ctx, r, args.to_revision, args.dry_run).await?;
            continue;
        }
        require_deployment(r, "rollbacker")?;
        undo_one(ctx, r, &args).await?;
    }
    Ok(())
}

async fn undo_one(ctx: &Ctx, r: &ObjRef, args: &UndoArgs) -> Result<()> {
    let deploy = target::get(ctx, r).await?;
    let revs = revisions(ctx, &deploy, &r.namespace).await?;
    let (n, rs) = pick(&revs, args.to_revision, &r.name)?;
    if args.dry_run == DryRun::Client {
        // kubectl's client dry run prints the template it would restore as the operation.
        let tpl = template::describe(rs.pointer("/spec/template").unwrap_or(&Value::Null));
        return util::outln(&format!("{} {tpl} (dry run)", r.display()));
    }
    if deploy.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        return Err(CliError::msg(format!(
            "you cannot rollback a paused deployment; resume it first with 'rudder rollout resume deployment/{}' and try again",
            r.name
        )));
    }
    let current = normalized_template(deploy.pointer("/spec/template").unwrap_or(&Value::Null));
    let wanted = normalized_template(rs.pointer("/spec/template").unwrap_or(&Value::Null));
    if current == wanted {
        return util::outln(&format!(
            "{} skipped rollback (current template already matches revision {n})",
            r.display()
        ));
    }
    // Guarded by the resourceVersion read: a deployment changed since is not silently reverted.
    target::update(ctx, r, &rolled_back(&deploy, rs), args.dry_run)
        .await
        .map_err(|e| match e {
            CliError::Server { err, .. } => CliError::Server {
                err,
                context: format!("failed restoring revision {n}"),
            },
            other => other,
        })?;
    util::outln(&format!(
        "{} rolled back{}",
        r.display(),
        args.dry_run.suffix()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(rev: &str, image: &str, cause: Option<&str>) -> Value {
        let mut ann = json!({REVISION: rev});
        if let Some(c) = cause {
            ann[CHANGE_CAUSE] = json!(c);
        }
        json!({
            "metadata": {"name": format!("web-{rev}"), "annotations": ann},
            "spec": {"template": {
                "metadata": {"labels": {"app": "web", HASH_LABEL: format!("h{rev}")}},
                "spec": {"containers": [{"name": "c", "image": image}]}
            }}
        })
    }

    #[test]
    fn history_table_and_revisions() {
        let revs = vec![
            (1, rs("1", "nginx:1", Some("first"))),
            (3, rs("3", "nginx:3", None)),
        ];
        assert_eq!(
            history_text(&revs, 0).unwrap(),
            "REVISION  CHANGE-CAUSE\n1         first\n3         <none>\n"
        );
        let t = history_text(&revs, 1).unwrap();
        assert!(
            t.starts_with("Pod Template:\n  Labels:\tapp=web\n\tpod-template-hash=h1\n  Annotations:\tkubernetes.io/change-cause: first\n"),
            "{t}"
        );
        assert_eq!(
            history_text(&revs, 2).unwrap_err().to_string(),
            "error: unable to find the specified revision"
        );
        assert_eq!(history_text(&[], 0).unwrap(), "No rollout history found.");
        assert_eq!(pick(&revs, 0, "web").unwrap().0, 1);
        assert_eq!(pick(&revs, 3, "web").unwrap().0, 3);
        assert_eq!(
            pick(&revs, 2, "web").unwrap_err().to_string(),
            "error: unable to find specified revision 2 in history"
        );
        assert_eq!(
            pick(&revs[..1], 0, "web").unwrap_err().to_string(),
            "error: no rollout history found for deployment \"web\""
        );
    }

    #[test]
    fn rollback_copies_template_and_annotations() {
        let deploy = json!({
            "metadata": {"name": "web", "annotations": {
                REVISION: "3",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team": "a"
            }},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:3"}]}}}
        });
        let d = rolled_back(&deploy, &rs("1", "nginx:1", Some("first")));
        assert_eq!(
            d["metadata"]["annotations"],
            json!({REVISION: "3", "kubectl.kubernetes.io/last-applied-configuration": "{}", CHANGE_CAUSE: "first"})
        );
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"],
            json!({"app": "web"})
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:1"
        );
        // The hash label and empty maps do not make templates differ.
        let mut a = rs("1", "nginx:1", None)["spec"]["template"].clone();
        let b = d["spec"]["template"].clone();
        assert_eq!(normalized_template(&a), normalized_template(&b));
        a["metadata"]["annotations"] = json!({});
        assert_eq!(normalized_template(&a), normalized_template(&b));
        a["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert_ne!(normalized_template(&a), normalized_template(&b));
    }
}
