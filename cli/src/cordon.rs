//! `rudder cordon` and `uncordon`: mark nodes unschedulable (`spec.unschedulable: true`) or
//! schedulable again, as kubectl does. The scheduler then leaves a cordoned node out of new
//! placements (its node controller adds the `node.kubernetes.io/unschedulable` taint); pods
//! already there keep running. A node already in the asked state is reported as such and not
//! written.

use clap::Args;
use serde_json::Value;

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::rollout::target::{self, Outcome, Selection};
use crate::util::{self, DryRun};

#[derive(Debug, Args)]
pub struct CordonArgs {
    /// NODE... (or `-l` with a label selector).
    pub nodes: Vec<String>,
    #[command(flatten)]
    pub sel: Selection,
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
}

/// Sets or clears `spec.unschedulable` (cleared: the field removed, as kubectl leaves it).
fn mark(node: &mut Value, unschedulable: bool) -> Result<()> {
    let spec = node
        .as_object_mut()
        .ok_or_else(|| CliError::msg("the node is not an object"))?
        .entry("spec")
        .or_insert_with(|| Value::Object(Default::default()));
    let spec = spec
        .as_object_mut()
        .ok_or_else(|| CliError::msg("the node's spec is not an object"))?;
    if unschedulable {
        spec.insert("unschedulable".into(), Value::Bool(true));
    } else {
        spec.remove("unschedulable");
    }
    Ok(())
}

/// `cordon` (`unschedulable`) or `uncordon`.
pub async fn run(ctx: &Ctx, args: CordonArgs, unschedulable: bool) -> Result<()> {
    let verb = if unschedulable { "cordon" } else { "uncordon" };
    if args.nodes.is_empty() && args.sel.selector.is_none() {
        return Err(CliError::msg(format!(
            "USAGE: {verb} NODE [flags]: name a node, or select nodes with -l"
        )));
    }
    let mut words = vec!["node".to_string()];
    words.extend(args.nodes.iter().cloned());
    let refs = target::resolve(
        ctx,
        &words,
        &args.sel,
        "you must name one or more nodes",
        verb,
    )
    .await?;
    if let Some(r) = refs.iter().find(|r| r.t.kind != "Node") {
        return Err(CliError::msg(format!("{} is not a node", r.quoted())));
    }
    let done = target::modify_all(ctx, &refs, args.dry_run, |_, n| mark(n, unschedulable)).await?;
    for (r, outcome) in done {
        let what = match outcome {
            Outcome::Unchanged => format!("already {verb}ed"),
            Outcome::Changed(_) => format!("{verb}ed"),
        };
        util::outln(&format!("{} {what}{}", r.display(), args.dry_run.suffix()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn marks_and_clears_the_field() {
        let mut n = json!({"metadata": {"name": "n1"}});
        mark(&mut n, true).unwrap();
        assert_eq!(n["spec"]["unschedulable"], true);
        mark(&mut n, false).unwrap();
        assert!(n["spec"].get("unschedulable").is_none(), "{n}");
    }
}
