//! `rudder label`, `annotate` and `patch`: small changes sent as patches.

use clap::Args;
use rudder_client::proto as pb;
use serde_json::{Map, Value, json};

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::kinds::ResourceType;
use crate::util::{self, DryRun};

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// KIND NAME... or KIND/NAME..., then key=value and key- arguments.
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Allow changing a key that already has a different value.
    #[arg(long)]
    pub overwrite: bool,
    /// Act on the objects matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
}

/// Which metadata map `label`/`annotate` edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Labels,
    Annotations,
}

impl Field {
    fn key(self) -> &'static str {
        match self {
            Field::Labels => "labels",
            Field::Annotations => "annotations",
        }
    }
    fn verb(self) -> &'static str {
        match self {
            Field::Labels => "labeled",
            Field::Annotations => "annotated",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Field::Labels => "label",
            Field::Annotations => "annotation",
        }
    }
}

/// `k=v` sets, `k-` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set(String, String),
    Remove(String),
}

/// Splits the positional arguments into resource arguments and changes: changes are the
/// trailing ones containing `=` or ending in `-`.
pub fn split_changes(args: &[String]) -> Result<(Vec<String>, Vec<Change>)> {
    let is_change = |a: &str| a.contains('=') || (a.ends_with('-') && !a.contains('/'));
    let first = args.iter().position(|a| is_change(a)).unwrap_or(args.len());
    let (res, ch) = args.split_at(first);
    let mut changes = Vec::new();
    for c in ch {
        if let Some((k, v)) = c.split_once('=') {
            changes.push(Change::Set(k.to_string(), v.to_string()));
        } else if let Some(k) = c.strip_suffix('-') {
            changes.push(Change::Remove(k.to_string()));
        } else {
            return Err(CliError::msg(format!(
                "invalid argument \"{c}\": expected key=value or key-"
            )));
        }
    }
    if changes.is_empty() {
        return Err(CliError::msg(
            "at least one key=value or key- change is required",
        ));
    }
    Ok((res.to_vec(), changes))
}

/// The merge patch for the changes against the current map, enforcing `--overwrite`.
/// Returns `None` when nothing would change.
pub fn label_patch(
    field: Field,
    current: &std::collections::BTreeMap<String, String>,
    changes: &[Change],
    overwrite: bool,
) -> Result<Option<Value>> {
    let mut m = Map::new();
    for c in changes {
        match c {
            Change::Set(k, v) => match current.get(k) {
                Some(old) if old == v => {}
                Some(old) if !overwrite => {
                    return Err(CliError::msg(format!(
                        "'{k}' already has a value ({old}), and --overwrite is false"
                    )));
                }
                _ => {
                    m.insert(k.clone(), Value::String(v.clone()));
                }
            },
            Change::Remove(k) => {
                if current.contains_key(k) {
                    m.insert(k.clone(), Value::Null);
                } else {
                    eprintln!("{} \"{k}\" not found.", field.noun());
                }
            }
        }
    }
    if m.is_empty() {
        return Ok(None);
    }
    Ok(Some(json!({"metadata": {field.key(): m}})))
}

async fn send_patch(
    ctx: &Ctx,
    t: &ResourceType,
    name: &str,
    patch_type: pb::PatchType,
    patch: &Value,
    status: bool,
    dry: DryRun,
) -> Result<Value> {
    let o = ctx
        .client()?
        .patch(pb::PatchRequest {
            kind: Some(t.kind_ref()),
            namespace: t.scope(&ctx.namespace).to_string(),
            name: name.to_string(),
            patch_type: patch_type as i32,
            patch: util::to_json_bytes(patch),
            status,
            options: dry.options(),
        })
        .await?;
    util::decode(&o)
}

pub async fn label(ctx: &Ctx, args: LabelArgs, field: Field) -> Result<()> {
    let (res, changes) = split_changes(&args.args)?;
    let client = ctx.client()?;
    let kinds = ctx.kinds().await?;
    let targets = util::parse_targets(&res)?;
    let mut objects: Vec<(ResourceType, Value)> = Vec::new();
    for target in targets {
        let t = kinds.lookup(&target.kind)?;
        match target.names {
            Some(names) => {
                for n in names {
                    objects.push((
                        t.clone(),
                        util::get_object(client, t, &ctx.namespace, &n).await?,
                    ));
                }
            }
            None => {
                let Some(sel) = args.selector.as_deref() else {
                    return Err(CliError::msg(
                        "resource(s) were provided, but no name or -l selector was specified",
                    ));
                };
                let (objs, _) = util::list_all(client, t, &ctx.namespace, sel, "", 500).await?;
                objects.extend(objs.into_iter().map(|o| (t.clone(), o)));
            }
        }
    }
    for (t, obj) in objects {
        let current = match field {
            Field::Labels => rudder_api::meta::labels(&obj),
            Field::Annotations => rudder_api::meta::annotations(&obj),
        };
        let name = rudder_api::meta::name(&obj).to_string();
        match label_patch(field, &current, &changes, args.overwrite)? {
            None => util::outln(&format!(
                "{}/{name} not {}",
                t.qualified_singular(),
                field.verb()
            ))?,
            Some(p) => {
                if args.dry_run != DryRun::Client {
                    send_patch(
                        ctx,
                        &t,
                        &name,
                        pb::PatchType::Merge,
                        &p,
                        false,
                        args.dry_run,
                    )
                    .await?;
                }
                util::outln(&format!(
                    "{}/{name} {}{}",
                    t.qualified_singular(),
                    field.verb(),
                    args.dry_run.suffix()
                ))?;
            }
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct PatchArgs {
    /// KIND NAME or KIND/NAME.
    #[arg(required = true)]
    pub args: Vec<String>,
    /// The patch, as JSON or YAML.
    #[arg(short = 'p', long)]
    pub patch: String,
    /// merge (RFC 7386) or json (RFC 6902).
    #[arg(long = "type", default_value = "merge")]
    pub patch_type: String,
    /// Patch a subresource instead of the object (status).
    #[arg(long)]
    pub subresource: Option<String>,
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
    /// Print the result (yaml, json, name).
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

pub async fn patch(ctx: &Ctx, args: PatchArgs) -> Result<()> {
    let targets = util::parse_targets(&args.args)?;
    let [target] = targets.as_slice() else {
        return Err(CliError::msg("patch takes one KIND NAME"));
    };
    let Some(names) = &target.names else {
        return Err(CliError::msg("patch needs the name of the object"));
    };
    let patch: Value = yaml_serde::from_str(&args.patch)
        .map_err(|e| CliError::msg(format!("unable to parse \"{}\": {e}", args.patch)))?;
    let ptype = match args.patch_type.as_str() {
        "merge" => {
            if !patch.is_object() {
                return Err(CliError::msg("a merge patch must be a JSON object"));
            }
            pb::PatchType::Merge
        }
        "json" => {
            if !patch.is_array() {
                return Err(CliError::msg(
                    "a json patch must be a JSON array of operations",
                ));
            }
            pb::PatchType::Json
        }
        "strategic" => {
            return Err(CliError::msg(
                "strategic merge patches are not supported yet; use --type merge or json",
            ));
        }
        other => {
            return Err(CliError::msg(format!(
                "--type must be merge or json, not \"{other}\""
            )));
        }
    };
    let status = match args.subresource.as_deref() {
        None | Some("") => false,
        Some("status") => true,
        Some(other) => {
            return Err(CliError::msg(format!(
                "unsupported subresource \"{other}\" (only status)"
            )));
        }
    };
    let out = match args.output.as_deref() {
        None => None,
        o => Some(crate::get::Output::parse(o)?),
    };
    let kinds = ctx.kinds().await?;
    let t = kinds.lookup(&target.kind)?;
    for name in names {
        let before = util::get_object(ctx.client()?, t, &ctx.namespace, name).await?;
        let after = if args.dry_run == DryRun::Client {
            let mut v = before.clone();
            match ptype {
                pb::PatchType::Json => {
                    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                        .map_err(|e| CliError::msg(format!("invalid json patch: {e}")))?;
                    json_patch::patch(&mut v, &ops).map_err(|e| CliError::msg(e.to_string()))?;
                }
                _ => json_patch::merge(&mut v, &patch),
            }
            v
        } else {
            send_patch(ctx, t, name, ptype, &patch, status, args.dry_run).await?
        };
        match &out {
            Some(o) if o.is_structured() => crate::get::print_structured(o, &after)?,
            Some(crate::get::Output::Name) => util::outln(&util::ref_name(t, &after))?,
            _ => {
                let unchanged = if args.dry_run == DryRun::Client {
                    before == after
                } else {
                    rudder_api::meta::resource_version(&before)
                        == rudder_api::meta::resource_version(&after)
                };
                let note = if unchanged { " (no change)" } else { "" };
                util::outln(&format!(
                    "{}/{name} patched{note}{}",
                    t.qualified_singular(),
                    args.dry_run.suffix()
                ))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn changes_and_overwrite() {
        let args: Vec<String> = ["deploy", "web", "a=1", "b-"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (res, ch) = split_changes(&args).unwrap();
        assert_eq!(res, ["deploy", "web"]);
        assert_eq!(
            ch,
            [
                Change::Set("a".into(), "1".into()),
                Change::Remove("b".into())
            ]
        );
        let mut cur = BTreeMap::new();
        cur.insert("a".to_string(), "0".to_string());
        cur.insert("b".to_string(), "x".to_string());
        let e = label_patch(Field::Labels, &cur, &ch, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "error: 'a' already has a value (0), and --overwrite is false"
        );
        let p = label_patch(Field::Labels, &cur, &ch, true)
            .unwrap()
            .unwrap();
        assert_eq!(p, json!({"metadata": {"labels": {"a": "1", "b": null}}}));
        cur.insert("a".to_string(), "1".to_string());
        cur.remove("b");
        assert_eq!(label_patch(Field::Labels, &cur, &ch, false).unwrap(), None);
    }
}
