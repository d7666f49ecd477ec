//! `rudder wait`: block until objects meet a condition or are deleted, using a watch.

use std::time::Duration;

use clap::Args;
use rudder_client::proto as pb;
use serde_json::Value;

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::kinds::ResourceType;
use crate::util;

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// KIND NAME... or KIND/NAME...
    #[arg(required = true)]
    pub args: Vec<String>,
    /// condition=NAME[=VALUE] or delete.
    #[arg(long = "for", required = true)]
    pub for_: String,
    /// How long to wait (e.g. 30s, 2m).
    #[arg(long, default_value = "30s")]
    pub timeout: String,
}

/// What to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    Delete,
    Condition { name: String, value: String },
}

pub fn parse_goal(s: &str) -> Result<Goal> {
    if s == "delete" {
        return Ok(Goal::Delete);
    }
    if let Some(rest) = s.strip_prefix("condition=") {
        let (name, value) = match rest.split_once('=') {
            Some((n, v)) => (n, v),
            None => (rest, "True"),
        };
        if name.is_empty() {
            return Err(CliError::msg("--for=condition= needs a condition name"));
        }
        return Ok(Goal::Condition {
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    Err(CliError::msg(format!(
        "unrecognized condition: \"{s}\" (use --for=delete or --for=condition=NAME[=VALUE])"
    )))
}

/// Whether the object has the condition with the value (both case-insensitive, as kubectl).
pub fn condition_met(obj: &Value, name: &str, value: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case(name))
                    && c.get("status")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.eq_ignore_ascii_case(value))
            })
        })
}

async fn wait_one(ctx: &Ctx, t: &ResourceType, name: &str, goal: &Goal) -> Result<()> {
    let client = ctx.client()?;
    let ns = t.scope(&ctx.namespace).to_string();
    // Read first: an absent object is done (delete) or an error (condition), and the object's
    // version is where the watch starts, so no change in between is missed.
    let check = |obj: &Value| match goal {
        Goal::Condition { name: c, value } => condition_met(obj, c, value),
        Goal::Delete => false,
    };
    let mut rv = 0;
    loop {
        if rv == 0 {
            match util::get_object(client, t, &ctx.namespace, name).await {
                Err(e) if e.is_not_found() && *goal == Goal::Delete => return Ok(()),
                Err(e) => return Err(e),
                Ok(o) => {
                    if check(&o) {
                        return Ok(());
                    }
                    rv = rudder_api::meta::resource_version(&o);
                }
            }
        }
        let mut stream = client
            .watch(pb::WatchRequest {
                kind: Some(t.kind_ref()),
                namespace: ns.clone(),
                label_selector: String::new(),
                field_selector: format!("metadata.name={name}"),
                resource_version: rv,
                allow_bookmarks: true,
                bookmark_interval_ms: 0,
            })
            .await?;
        while let Ok(Some(ev)) = stream.message().await {
            let ty = pb::EventType::try_from(ev.r#type).unwrap_or(pb::EventType::Unspecified);
            match ty {
                pb::EventType::Bookmark => rv = rv.max(ev.resource_version),
                pb::EventType::Error => {
                    // Too slow: resume where told; expired (no resume point): read again.
                    rv = ev.error.unwrap_or_default().resume_resource_version;
                    break;
                }
                pb::EventType::Deleted => {
                    if *goal == Goal::Delete {
                        return Ok(());
                    }
                    return Err(CliError::msg(format!(
                        "{}/{name} was deleted while waiting for the condition",
                        t.qualified_plural()
                    )));
                }
                _ => {
                    let Some(o) = ev.object else { continue };
                    rv = rv.max(o.resource_version);
                    if check(&util::decode(&o)?) {
                        return Ok(());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(ctx: &Ctx, args: WaitArgs) -> Result<()> {
    let goal = parse_goal(&args.for_)?;
    let timeout = util::parse_duration(&args.timeout)?;
    let kinds = ctx.kinds().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    for target in util::parse_targets(&args.args)? {
        let t = kinds.lookup(&target.kind)?;
        let Some(names) = target.names else {
            return Err(CliError::msg(
                "wait needs object names (KIND NAME or KIND/NAME)",
            ));
        };
        for name in names {
            let r = tokio::time::timeout_at(deadline, wait_one(ctx, t, &name, &goal)).await;
            match r {
                Ok(Ok(())) => {
                    let what = match goal {
                        Goal::Delete => "deleted",
                        Goal::Condition { .. } => "condition met",
                    };
                    util::outln(&format!("{}/{name} {what}", t.qualified_singular()))?;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(CliError::msg(format!(
                        "timed out waiting for the condition on {}/{name}",
                        t.qualified_plural()
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn goals_and_conditions() {
        assert_eq!(parse_goal("delete").unwrap(), Goal::Delete);
        assert_eq!(
            parse_goal("condition=Ready").unwrap(),
            Goal::Condition {
                name: "Ready".into(),
                value: "True".into()
            }
        );
        assert_eq!(
            parse_goal("condition=Available=false").unwrap(),
            Goal::Condition {
                name: "Available".into(),
                value: "false".into()
            }
        );
        assert!(parse_goal("jsonpath=x").is_err());
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(condition_met(&o, "ready", "true"));
        assert!(!condition_met(&o, "Ready", "False"));
        assert!(!condition_met(&json!({}), "Ready", "True"));
    }
}
