//! History and undo of daemon sets and stateful sets, from the ControllerRevisions they control
//! (kubectl's viewers and rollbackers for them). A revision's `data` is the patch its controller
//! recorded, `{"spec": {"template": {..., "$patch": "replace"}}}`: the whole pod template.

use std::collections::BTreeMap;
use std::io::Write as _;

use serde_json::Value;

use super::history::CHANGE_CAUSE;
use super::target::{self, ObjRef};
use super::template;
use crate::Ctx;
use crate::error::{CliError, Result};
use crate::util::{self, DryRun};

/// Whether the kind keeps its history in ControllerRevisions.
pub fn has_controller_revisions(r: &ObjRef) -> bool {
    r.t.group == "apps" && matches!(r.t.kind.as_str(), "DaemonSet" | "StatefulSet")
}

/// The revisions the object controls, by number (a later one with the same number wins).
async fn revisions(ctx: &Ctx, obj: &Value, ns: &str) -> Result<BTreeMap<i64, Value>> {
    let kinds = ctx.kinds().await?;
    let t = kinds.by_gvk("apps/v1", "ControllerRevision")?;
    let sel = target::selector_string(obj.pointer("/spec/selector").unwrap_or(&Value::Null))?;
    let (items, _) = util::list_all(ctx.client()?, t, ns, &sel, "", 500).await?;
    let uid = rudder_api::meta::uid(obj);
    Ok(items
        .into_iter()
        .filter(|cr| target::controlled_by(cr, uid))
        .map(|cr| (cr.get("revision").and_then(Value::as_i64).unwrap_or(0), cr))
        .collect())
}

/// The pod template a revision records.
fn recorded_template(cr: &Value) -> Value {
    let mut t = cr
        .pointer("/data/spec/template")
        .cloned()
        .unwrap_or_default();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    t
}

/// kubectl's history text: a table (stateful sets show no change causes), or one template.
pub async fn history_text(ctx: &Ctx, r: &ObjRef, revision: i64) -> Result<String> {
    let obj = target::get(ctx, r).await?;
    let revs = revisions(ctx, &obj, &r.namespace).await?;
    if revs.is_empty() {
        return Ok("No rollout history found.".to_string());
    }
    if revision > 0 {
        let cr = revs
            .get(&revision)
            .ok_or_else(|| CliError::msg("unable to find the specified revision"))?;
        return Ok(template::describe(&recorded_template(cr)));
    }
    let with_cause = r.t.kind == "DaemonSet";
    let mut tw = tabwriter::TabWriter::new(Vec::new()).padding(2);
    let _ = writeln!(
        tw,
        "{}",
        if with_cause {
            "REVISION\tCHANGE-CAUSE"
        } else {
            "REVISION"
        }
    );
    for (n, cr) in &revs {
        if with_cause {
            let cause = cr
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(CHANGE_CAUSE))
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .unwrap_or("<none>");
            let _ = writeln!(tw, "{n}\t{cause}");
        } else {
            let _ = writeln!(tw, "{n}");
        }
    }
    let bytes = tw
        .into_inner()
        .map_err(|e| CliError::msg(format!("formatting the history: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// kubectl's rollback for these kinds: the revision's template replaces the object's.
pub async fn undo(ctx: &Ctx, r: &ObjRef, to: i64, dry: DryRun) -> Result<()> {
    let not_found = || CliError::msg(format!("unable to find specified revision {to} in history"));
    if to < 0 {
        return Err(not_found());
    }
    let obj = target::get(ctx, r).await?;
    let revs = revisions(ctx, &obj, &r.namespace).await?;
    if to == 0 && revs.len() <= 1 {
        return Err(CliError::msg("no last revision to roll back to"));
    }
    let (n, cr) = if to == 0 {
        // The second highest: the one before the current.
        revs.iter().rev().nth(1).ok_or_else(not_found)?
    } else {
        revs.get_key_value(&to).ok_or_else(not_found)?
    };
    let tpl = recorded_template(cr);
    if dry == DryRun::Client {
        return util::outln(&format!(
            "{} {} (dry run)",
            r.display(),
            template::describe(&tpl)
        ));
    }
    if obj.pointer("/spec/template") == Some(&tpl) {
        return util::outln(&format!(
            "{} skipped rollback (current template already matches revision {n})",
            r.display()
        ));
    }
    let mut changed = obj.clone();
    if let Some(spec) = changed.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("template".into(), tpl);
    }
    target::update(ctx, r, &changed, dry)
        .await
        .map_err(|e| match e {
            CliError::Server { err, .. } => CliError::Server {
                err,
                context: format!("failed restoring revision {n}"),
            },
            other => other,
        })?;
    util::outln(&format!("{} rolled back{}", r.display(), dry.suffix()))
}
