//! `rudder rollout pause`, `resume` and `restart`: kubectl's object pauser, resumer and
//! restarter. Pausing flips a deployment's `spec.paused`; restarting stamps the pod template
//! with `kubectl.kubernetes.io/restartedAt`, which rolls every pod (deployments, daemon sets and
//! stateful sets). As kubectl, an object that cannot be changed is reported and the others are
//! still done. Also Rudder's `promote [--full]` and `abort` of a canary: they write the
//! Deployment's `rudder.io/canary-action` annotation, which the controller acts on and removes
//! (see the controller-manager docs).

use clap::Args;
use serde_json::{Map, Value};

use super::target::{self, ObjRef, Outcome, Selection};
use crate::Ctx;
use crate::error::{CliError, Result};
use crate::util::{self, DryRun};

pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
pub const CANARY_STEPS: &str = "rudder.io/canary-steps";
pub const CANARY_ACTION: &str = "rudder.io/canary-action";

#[derive(Debug, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Skip the remaining canary steps and roll the rest out at once.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// TYPE NAME... or TYPE/NAME...
    pub args: Vec<String>,
    #[command(flatten)]
    pub sel: Selection,
}

/// Which of the three commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Restart,
    Promote { full: bool },
    Abort,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Pause => "paused",
            Action::Resume => "resumed",
            Action::Restart => "restarted",
            Action::Promote { .. } => "promoted",
            Action::Abort => "aborted",
        }
    }

    fn command(self) -> &'static str {
        match self {
            Action::Pause => "rollout pause",
            Action::Resume => "rollout resume",
            Action::Restart => "rollout restart",
            Action::Promote { .. } => "rollout promote",
            Action::Abort => "rollout abort",
        }
    }
}

fn is_deployment(r: &ObjRef) -> bool {
    r.t.group == "apps" && r.t.kind == "Deployment"
}

fn paused(obj: &Value) -> bool {
    obj.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)
}

/// Now as Go's RFC 3339 (seconds, local offset, `Z` for UTC), as kubectl stamps it.
pub fn rfc3339_now() -> String {
    let now = jiff::Zoned::now();
    let s = now.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
    match s.strip_suffix("+00:00") {
        Some(base) => format!("{base}Z"),
        None => s,
    }
}

/// The change the action makes to one object, or why it cannot (kubectl's reasons).
fn apply(
    action: Action,
    r: &ObjRef,
    obj: &mut Value,
    stamp: &str,
) -> std::result::Result<(), String> {
    match action {
        Action::Pause | Action::Resume => {
            if !is_deployment(r) {
                return Err(if action == Action::Pause {
                    "pausing is not supported".into()
                } else {
                    "resuming is not supported".into()
                });
            }
            match (action, paused(obj)) {
                (Action::Pause, true) => return Err("is already paused".into()),
                (Action::Resume, false) => return Err("is not paused".into()),
                _ => {}
            }
            let spec = obj
                .get_mut("spec")
                .and_then(Value::as_object_mut)
                .ok_or("has no spec")?;
            spec.insert("paused".into(), Value::Bool(action == Action::Pause));
        }
        Action::Promote { .. } | Action::Abort => {
            if !is_deployment(r) {
                return Err("is not a deployment: canaries are deployments'".into());
            }
            let has_steps = obj
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(CANARY_STEPS))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !has_steps {
                return Err(format!("has no canary steps (annotation {CANARY_STEPS})"));
            }
            let what = match action {
                Action::Promote { full: true } => "promote-full",
                Action::Promote { full: false } => "promote",
                _ => "abort",
            };
            let meta = obj
                .get_mut("metadata")
                .and_then(Value::as_object_mut)
                .ok_or("has no metadata")?;
            meta.entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .ok_or("has malformed annotations")?
                .insert(CANARY_ACTION.into(), Value::String(what.into()));
        }
        Action::Restart => {
            let restartable = r.t.group == "apps"
                && matches!(
                    r.t.kind.as_str(),
                    "Deployment" | "DaemonSet" | "StatefulSet"
                );
            if !restartable {
                return Err("restarting is not supported".into());
            }
            if is_deployment(r) && paused(obj) {
                return Err("can't restart paused deployment (run rollout resume first)".into());
            }
            let tpl = obj
                .pointer_mut("/spec/template")
                .and_then(Value::as_object_mut)
                .ok_or("has no pod template")?;
            let meta = tpl
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            let ann = meta
                .as_object_mut()
                .ok_or("has a malformed pod template")?
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            ann.as_object_mut()
                .ok_or("has malformed pod template annotations")?
                .insert(RESTARTED_AT.into(), Value::String(stamp.to_string()));
        }
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, args: ControlArgs, action: Action) -> Result<()> {
    let refs = target::resolve(
        ctx,
        &args.args,
        &args.sel,
        "required resource not specified",
        action.command(),
    )
    .await?;
    let stamp = rfc3339_now();
    let mut errors = Vec::new();
    for r in &refs {
        let res = target::modify(ctx, r, DryRun::None, |obj| {
            apply(action, r, obj, &stamp)
                .map_err(|why| CliError::msg(format!("{} {why}", r.quoted())))
        })
        .await;
        match res {
            Ok(Outcome::Changed(_)) => {
                util::outln(&format!("{} {}", r.display(), action.verb()))?;
            }
            // The same second's stamp twice: kubectl's empty patch.
            Ok(Outcome::Unchanged) => errors.push(CliError::msg(format!(
                "failed to create patch for {}: empty patch",
                r.name
            ))),
            Err(e) => errors.push(e),
        }
    }
    target::finish(errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kinds;
    use serde_json::json;

    fn obj_ref(kind: &str) -> ObjRef {
        ObjRef {
            t: Kinds::builtin().lookup(kind).unwrap().clone(),
            namespace: "default".into(),
            name: "web".into(),
        }
    }

    #[test]
    fn promote_and_abort_write_the_canary_action() {
        let d = obj_ref("deploy");
        let mut plain = json!({"metadata": {}, "spec": {}});
        assert_eq!(
            apply(Action::Abort, &d, &mut plain, "t").unwrap_err(),
            "has no canary steps (annotation rudder.io/canary-steps)"
        );
        let mut o = json!({"metadata": {"annotations": {CANARY_STEPS: "10%,pause"}}, "spec": {}});
        apply(Action::Promote { full: false }, &d, &mut o, "t").unwrap();
        assert_eq!(o["metadata"]["annotations"][CANARY_ACTION], "promote");
        apply(Action::Promote { full: true }, &d, &mut o, "t").unwrap();
        assert_eq!(o["metadata"]["annotations"][CANARY_ACTION], "promote-full");
        apply(Action::Abort, &d, &mut o, "t").unwrap();
        assert_eq!(o["metadata"]["annotations"][CANARY_ACTION], "abort");
        assert!(apply(Action::Abort, &obj_ref("ds"), &mut o, "t").is_err());
    }

    #[test]
    fn pause_resume_restart_rules() {
        let d = obj_ref("deploy");
        let mut o = json!({"spec": {"template": {"spec": {}}}});
        apply(Action::Pause, &d, &mut o, "t").unwrap();
        assert_eq!(o["spec"]["paused"], true);
        assert_eq!(
            apply(Action::Pause, &d, &mut o, "t").unwrap_err(),
            "is already paused"
        );
        assert_eq!(
            apply(Action::Restart, &d, &mut o, "t").unwrap_err(),
            "can't restart paused deployment (run rollout resume first)"
        );
        apply(Action::Resume, &d, &mut o, "t").unwrap();
        assert_eq!(
            apply(Action::Resume, &d, &mut o, "t").unwrap_err(),
            "is not paused"
        );
        apply(Action::Restart, &d, &mut o, "2024-01-02T03:04:05Z").unwrap();
        assert_eq!(
            o["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
            "2024-01-02T03:04:05Z"
        );
        let ds = obj_ref("ds");
        assert_eq!(
            apply(Action::Pause, &ds, &mut o, "t").unwrap_err(),
            "pausing is not supported"
        );
        apply(Action::Restart, &ds, &mut o, "t").unwrap();
        assert_eq!(
            apply(Action::Restart, &obj_ref("rs"), &mut o, "t").unwrap_err(),
            "restarting is not supported"
        );
        let now = rfc3339_now();
        assert!(now.parse::<jiff::Timestamp>().is_ok(), "{now}");
    }
}
