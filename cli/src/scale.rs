//! `rudder scale`: set `spec.replicas` of deployments, replica sets, stateful sets and
//! replication controllers, as kubectl does through the scale subresource. Here it is the kind's
//! own update, guarded by the resourceVersion read, so that `--current-replicas` and
//! `--resource-version` are checked against the very object that is written.

use clap::Args;
use serde_json::Value;

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::rollout::target::{self, ObjRef, Selection};
use crate::util::{self, DryRun};

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// TYPE NAME... or TYPE/NAME... (deployment, replicaset, statefulset, replicationcontroller).
    pub args: Vec<String>,
    #[command(flatten)]
    pub sel: Selection,
    /// The new desired number of replicas.
    #[arg(
        long,
        required = true,
        allow_negative_numbers = true,
        value_name = "COUNT"
    )]
    pub replicas: i64,
    /// Precondition: scale only if the current spec.replicas is this (-1, the default: any).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_name = "COUNT")]
    pub current_replicas: i64,
    /// Precondition: scale only if the object's resourceVersion is this.
    #[arg(long, value_name = "VERSION")]
    pub resource_version: Option<String>,
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
}

/// Whether the kind has `spec.replicas` to scale.
fn scalable(r: &ObjRef) -> bool {
    matches!(
        (r.t.group.as_str(), r.t.kind.as_str()),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") | ("", "ReplicationController")
    )
}

/// Checks the preconditions against the object and sets the new count.
fn rescale(obj: &mut Value, args: &ScaleArgs) -> Result<()> {
    // Unset replicas read as the API's default, 1.
    let current = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if args.current_replicas != -1 && current != args.current_replicas {
        return Err(CliError::msg(format!(
            "Expected replicas to be {}, was {current}",
            args.current_replicas
        )));
    }
    if let Some(want) = args.resource_version.as_deref() {
        let have = rudder_api::meta::str_field(obj, "resourceVersion").to_string();
        if have != want {
            return Err(CliError::msg(format!(
                "Expected resource version to be {want}, was {have}"
            )));
        }
    }
    let spec = obj
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| CliError::msg("the object has no spec to scale"))?;
    spec.insert("replicas".into(), Value::from(args.replicas));
    Ok(())
}

pub async fn run(ctx: &Ctx, args: ScaleArgs) -> Result<()> {
    // Flags first, before any request, as kubectl validates them.
    if args.replicas < 0 {
        return Err(CliError::msg(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0",
        ));
    }
    if args.current_replicas < -1 {
        return Err(CliError::msg(
            "The --current-replicas must specify an integer of -1 or greater",
        ));
    }
    let refs = target::resolve(
        ctx,
        &args.args,
        &args.sel,
        "you must provide one or more resources by argument or filename",
        "scale",
    )
    .await?;
    if args.resource_version.is_some() && refs.len() > 1 {
        return Err(CliError::msg(
            "cannot use --resource-version with multiple resources",
        ));
    }
    if let Some(r) = refs.iter().find(|r| !scalable(r)) {
        return Err(CliError::msg(format!(
            "cannot scale {}: only deployments, replicasets, statefulsets and replicationcontrollers have spec.replicas to scale",
            r.quoted()
        )));
    }
    let done = target::modify_all(ctx, &refs, args.dry_run, |_, obj| rescale(obj, &args)).await?;
    // Scaling to the current count is still "scaled", as kubectl says.
    for (r, _) in done {
        util::outln(&format!("{} scaled{}", r.display(), args.dry_run.suffix()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(replicas: i64, current: i64, rv: Option<&str>) -> ScaleArgs {
        ScaleArgs {
            args: vec![],
            sel: Selection::default(),
            replicas,
            current_replicas: current,
            resource_version: rv.map(String::from),
            dry_run: DryRun::None,
        }
    }

    #[test]
    fn preconditions() {
        let mut o = json!({"metadata": {"resourceVersion": "7"}, "spec": {"replicas": 2}});
        assert_eq!(
            rescale(&mut o, &args(5, 3, None)).unwrap_err().to_string(),
            "error: Expected replicas to be 3, was 2"
        );
        assert_eq!(
            rescale(&mut o, &args(5, -1, Some("6")))
                .unwrap_err()
                .to_string(),
            "error: Expected resource version to be 6, was 7"
        );
        rescale(&mut o, &args(5, 2, Some("7"))).unwrap();
        assert_eq!(o["spec"]["replicas"], 5);
    }
}
