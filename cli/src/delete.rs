//! `rudder delete`: by name, `KIND/NAME`, file, label selector or `--all`.
//!
//! As kubectl: each object's `deleted` line prints as its delete is accepted; then, unless
//! `--wait=false`, the command waits until every deleted object is gone (finalizers and grace
//! periods may hold one for a while), watching it by name. An object counts as gone when it is
//! absent or when an object of the same name but another uid replaced it. `--timeout` bounds
//! the wait (`0`, the default, waits forever). `--cascade` is kubectl's flag: `background`
//! (default), `orphan`, `foreground`, or the deprecated `true`/`false`; the server decides
//! what it supports, and its refusal is printed as any server error.
//!
//! A namespace goes only once the controller-manager's namespace controller has deleted what is
//! in it. While the wait for one lasts longer than [`NAMESPACE_NOTE_AFTER`], and when it times
//! out, the command says on stderr that the namespace is terminating and what holds it: the
//! controller's conditions (what remains, finalizers, failures) or, if no controller has
//! reported, the objects still in it.

use std::time::Duration;

/// How long a namespace may take before the wait says what holds it.
pub const NAMESPACE_NOTE_AFTER: Duration = Duration::from_secs(5);

use clap::{ArgAction, Args};
use rudder_client::proto as pb;
use serde_json::Value;

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::kinds::ResourceType;
use crate::util;

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// KIND NAME..., KIND/NAME..., or KIND with -l/--all.
    pub args: Vec<String>,
    /// Files or directories with the objects to delete.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Delete the objects matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Delete every object of the kind in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Seconds to let the objects terminate (default: the kind's).
    #[arg(long)]
    pub grace_period: Option<i64>,
    /// Wait until the objects are gone (the default); --wait=false returns at once.
    #[arg(long, action = ArgAction::Set, default_value_t = true, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub wait: bool,
    /// How long to wait for the objects to go (0: forever).
    #[arg(long, default_value = "0s")]
    pub timeout: String,
    /// Treat "not found" as success.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// background (default), orphan or foreground: what happens to the objects' dependents.
    #[arg(long, default_value = "background", num_args = 0..=1, require_equals = true,
          default_missing_value = "background", value_name = "STRATEGY")]
    pub cascade: String,
}

/// `--cascade`: kubectl's deletion propagation strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cascade {
    Background,
    Orphan,
    Foreground,
}

impl Cascade {
    /// The DeleteRequest's `propagation_policy`.
    pub fn policy(self) -> &'static str {
        match self {
            Cascade::Background => "Background",
            Cascade::Orphan => "Orphan",
            Cascade::Foreground => "Foreground",
        }
    }
}

/// Parses `--cascade` as kubectl does: the three strategies, or a boolean (Go's spellings:
/// `true`/`false`, `1`/`0`, `t`/`f`, ...) that is deprecated and comes with kubectl's warning.
pub fn parse_cascade(s: &str) -> Result<(Cascade, Option<String>)> {
    let deprecated = |c: Cascade, name: &str| {
        Ok((
            c,
            Some(format!(
                "warning: --cascade={s} is deprecated (boolean value) and can be replaced with --cascade={name}."
            )),
        ))
    };
    match s {
        "background" => Ok((Cascade::Background, None)),
        "orphan" => Ok((Cascade::Orphan, None)),
        "foreground" => Ok((Cascade::Foreground, None)),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => deprecated(Cascade::Background, "background"),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => deprecated(Cascade::Orphan, "orphan"),
        _ => Err(CliError::msg(format!(
            "invalid cascade value ({s}). Must be \"background\", \"foreground\", or \"orphan\""
        ))),
    }
}

/// One object to delete.
struct Victim {
    rtype: ResourceType,
    namespace: String,
    name: String,
}

pub async fn run(ctx: &Ctx, args: DeleteArgs) -> Result<()> {
    // Flags first, before any request, as kubectl validates them.
    let (cascade, warning) = parse_cascade(&args.cascade)?;
    let timeout = util::parse_duration(&args.timeout)?;
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    let client = ctx.client()?;
    let kinds = ctx.kinds().await?;
    let mut victims = Vec::new();
    if !args.files.is_empty() {
        if !args.args.is_empty() {
            return Err(CliError::msg("cannot give both resource arguments and -f"));
        }
        for m in util::read_manifests(&args.files)? {
            let t = util::manifest_type(kinds, &m)?;
            let ns = match rudder_api::meta::namespace(&m.object) {
                "" => ctx.namespace.clone(),
                n => n.to_string(),
            };
            victims.push(Victim {
                rtype: t.clone(),
                namespace: ns,
                name: rudder_api::meta::name(&m.object).to_string(),
            });
        }
        // Namespaces last: deleting one removes what is in it (the namespace controller
        // does, at once), so the files' own objects would otherwise be reported NotFound.
        victims.sort_by_key(|v| v.rtype.group.is_empty() && v.rtype.kind == "Namespace");
    } else {
        if args.args.is_empty() {
            return Err(CliError::msg(
                "you must provide one or more resources by argument or filename (rudder delete KIND NAME, KIND/NAME, -f FILE, -l SELECTOR or --all)",
            ));
        }
        for target in util::parse_targets(&args.args)? {
            let t = kinds.lookup(&target.kind)?;
            util::refuse_named_across_namespaces(ctx, t, target.names.as_deref())?;
            match target.names {
                Some(names) => {
                    if args.selector.is_some() || args.all {
                        return Err(CliError::msg(
                            "name cannot be provided when a selector or --all is specified",
                        ));
                    }
                    victims.extend(names.into_iter().map(|n| Victim {
                        rtype: t.clone(),
                        namespace: ctx.namespace.clone(),
                        name: n,
                    }))
                }
                None => {
                    if args.selector.is_none() && !args.all {
                        return Err(CliError::msg(format!(
                            "resource(s) were provided, but no name was specified; use a name, -l SELECTOR or --all to delete {}",
                            t.plural
                        )));
                    }
                    let ns = if ctx.all_namespaces {
                        ""
                    } else {
                        ctx.namespace.as_str()
                    };
                    let sel = args.selector.clone().unwrap_or_default();
                    let (objs, _) = util::list_all(client, t, ns, &sel, "", 500).await?;
                    if objs.is_empty() {
                        eprintln!("No resources found");
                    }
                    victims.extend(objs.iter().map(|o| Victim {
                        rtype: t.clone(),
                        namespace: rudder_api::meta::namespace(o).to_string(),
                        name: rudder_api::meta::name(o).to_string(),
                    }));
                }
            }
        }
    }
    let mut failed = false;
    // Deleted but possibly still present (finalizers, grace): what `--wait` waits for.
    let mut pending: Vec<(&Victim, String)> = Vec::new();
    for v in &victims {
        let r = client
            .delete(pb::DeleteRequest {
                kind: Some(v.rtype.kind_ref()),
                namespace: v.rtype.scope(&v.namespace).to_string(),
                name: v.name.clone(),
                precondition_uid: String::new(),
                precondition_resource_version: 0,
                grace_period_seconds: args.grace_period,
                options: None,
                propagation_policy: cascade.policy().to_string(),
            })
            .await;
        match r {
            Ok(resp) => {
                util::outln(&format!(
                    "{} \"{}\" deleted",
                    v.rtype.qualified_singular(),
                    v.name
                ))?;
                if !resp.deleted {
                    let uid = match &resp.object {
                        Some(o) => rudder_api::meta::uid(&util::decode(o)?).to_string(),
                        None => String::new(),
                    };
                    pending.push((v, uid));
                }
            }
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e) => {
                eprintln!("{}", CliError::from(e));
                failed = true;
            }
        }
    }
    if args.wait && !pending.is_empty() {
        let all = async {
            for (v, uid) in &pending {
                wait_gone_noting(ctx, v, uid).await?;
            }
            Ok::<(), CliError>(())
        };
        if timeout.is_zero() {
            all.await?;
        } else if let Ok(r) = tokio::time::timeout(timeout, all).await {
            r?;
        } else {
            // Name the first object still present, as kubectl names the one it gave up on.
            for (v, uid) in &pending {
                if !is_gone(ctx, v, uid).await? {
                    if is_namespace(v) {
                        eprintln!("{}", namespace_state(ctx, kinds, &v.name).await?);
                    }
                    return Err(CliError::msg(format!(
                        "timed out waiting for the condition on {}/{}",
                        v.rtype.qualified_plural(),
                        v.name
                    )));
                }
            }
        }
    }
    if failed {
        Err(CliError::Reported)
    } else {
        Ok(())
    }
}

fn is_namespace(v: &Victim) -> bool {
    v.rtype.group.is_empty() && v.rtype.kind == "Namespace"
}

/// [`wait_gone`], saying once what holds a namespace that takes long.
async fn wait_gone_noting(ctx: &Ctx, v: &Victim, uid: &str) -> Result<()> {
    let wait = wait_gone(ctx, v, uid);
    if !is_namespace(v) {
        return wait.await;
    }
    tokio::pin!(wait);
    tokio::select! {
        r = &mut wait => return r,
        _ = tokio::time::sleep(NAMESPACE_NOTE_AFTER) => {}
    }
    let kinds = ctx.kinds().await?;
    eprintln!("{}", namespace_state(ctx, kinds, &v.name).await?);
    wait.await
}

/// The namespace controller's condition types that name what holds a namespace.
const HOLDING_CONDITIONS: [&str; 5] = [
    "NamespaceDeletionDiscoveryFailure",
    "NamespaceDeletionGroupVersionParsingFailure",
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
];

/// One line on a terminating namespace: what its controller reports holds it, or, when no
/// controller has reported, what is still in it.
async fn namespace_state(ctx: &Ctx, kinds: &crate::kinds::Kinds, name: &str) -> Result<String> {
    let client = ctx.client()?;
    let Ok(ns_type) = kinds.lookup("namespaces") else {
        return Ok(format!("namespace \"{name}\" is terminating"));
    };
    let ns = match util::get_object(client, ns_type, "", name).await {
        Err(e) if e.is_not_found() => return Ok(format!("namespace \"{name}\" is gone")),
        r => r?,
    };
    let reported: Vec<&Value> = ns
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter(|c| HOLDING_CONDITIONS.contains(&c["type"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    let holding: Vec<&str> = reported
        .iter()
        .filter(|c| c["status"] == "True")
        .filter_map(|c| c["message"].as_str())
        .collect();
    let mut fs = rudder_api::meta::spec_finalizers(&ns);
    fs.extend(rudder_api::meta::finalizers(&ns));
    let held_by = if fs.is_empty() {
        String::new()
    } else {
        format!("; finalizers: {}", fs.join(", "))
    };
    if !holding.is_empty() {
        return Ok(format!(
            "namespace \"{name}\" is terminating: {}{held_by}",
            holding.join("; ")
        ));
    }
    if !reported.is_empty() {
        return Ok(format!(
            "namespace \"{name}\" is terminating: its content is gone{held_by}"
        ));
    }
    let mut left = Vec::new();
    for t in kinds.all().iter().filter(|t| t.namespaced) {
        let (objs, _) = util::list_all(client, t, name, "", "", 500).await?;
        if !objs.is_empty() {
            left.push(format!("{} ({})", t.qualified_plural(), objs.len()));
        }
    }
    let content = if left.is_empty() {
        "it is empty".to_string()
    } else {
        format!("it still holds {}", left.join(", "))
    };
    Ok(format!(
        "namespace \"{name}\" is terminating, and no namespace controller has reported on it (is rudder-controller-manager running?): {content}{held_by}"
    ))
}

/// Whether the object is absent, or replaced by one with another uid.
async fn is_gone(ctx: &Ctx, v: &Victim, uid: &str) -> Result<bool> {
    match util::get_object(ctx.client()?, &v.rtype, &v.namespace, &v.name).await {
        Err(e) if e.is_not_found() => Ok(true),
        Err(e) => Err(e),
        Ok(o) => Ok(!uid.is_empty() && rudder_api::meta::uid(&o) != uid),
    }
}

/// Waits until the object is gone: reads it, then watches it by name from the version read,
/// so that no change in between is missed; reads again whenever the watch ends.
async fn wait_gone(ctx: &Ctx, v: &Victim, uid: &str) -> Result<()> {
    let client = ctx.client()?;
    let same = |o: &Value| uid.is_empty() || rudder_api::meta::uid(o) == uid;
    loop {
        let rv = match util::get_object(client, &v.rtype, &v.namespace, &v.name).await {
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
            Ok(o) if !same(&o) => return Ok(()),
            Ok(o) => rudder_api::meta::resource_version(&o),
        };
        let mut stream = client
            .watch(pb::WatchRequest {
                kind: Some(v.rtype.kind_ref()),
                namespace: v.rtype.scope(&v.namespace).to_string(),
                label_selector: String::new(),
                field_selector: format!("metadata.name={}", v.name),
                resource_version: rv,
                allow_bookmarks: true,
                bookmark_interval_ms: 0,
            })
            .await?;
        while let Ok(Some(ev)) = stream.message().await {
            let ty = pb::EventType::try_from(ev.r#type).unwrap_or(pb::EventType::Unspecified);
            let obj = match &ev.object {
                Some(o) => Some(util::decode(o)?),
                None => None,
            };
            match (ty, obj) {
                (pb::EventType::Deleted, Some(o)) if same(&o) => return Ok(()),
                (pb::EventType::Added | pb::EventType::Modified, Some(o)) if !same(&o) => {
                    return Ok(());
                }
                // Expired or too slow: read again rather than trust a resume point.
                (pb::EventType::Error, _) => break,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cascade_values_as_kubectl() {
        assert_eq!(
            parse_cascade("background").unwrap(),
            (Cascade::Background, None)
        );
        assert_eq!(parse_cascade("orphan").unwrap(), (Cascade::Orphan, None));
        assert_eq!(
            parse_cascade("foreground").unwrap(),
            (Cascade::Foreground, None)
        );
        assert_eq!(
            parse_cascade("true").unwrap(),
            (
                Cascade::Background,
                Some("warning: --cascade=true is deprecated (boolean value) and can be replaced with --cascade=background.".into())
            )
        );
        assert_eq!(
            parse_cascade("false").unwrap(),
            (
                Cascade::Orphan,
                Some("warning: --cascade=false is deprecated (boolean value) and can be replaced with --cascade=orphan.".into())
            )
        );
        assert_eq!(parse_cascade("0").unwrap().0, Cascade::Orphan);
        assert_eq!(parse_cascade("T").unwrap().0, Cascade::Background);
        for bad in ["Orphan", "yes", ""] {
            assert_eq!(
                parse_cascade(bad).unwrap_err().to_string(),
                format!(
                    "error: invalid cascade value ({bad}). Must be \"background\", \"foreground\", or \"orphan\""
                )
            );
        }
        assert_eq!(Cascade::Orphan.policy(), "Orphan");
        assert_eq!(Cascade::Foreground.policy(), "Foreground");
        assert_eq!(Cascade::Background.policy(), "Background");
    }

    #[test]
    fn wait_and_cascade_flags() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut v = vec!["rudder", "delete"];
            v.extend_from_slice(args);
            match crate::Cli::try_parse_from(v).map(|c| c.command) {
                Ok(crate::Command::Delete(d)) => Ok(d),
                Ok(_) => panic!("not delete"),
                Err(e) => Err(e),
            }
        };
        let d = parse(&["cm", "x"]).unwrap();
        assert!(d.wait, "waits by default, as kubectl");
        assert_eq!(
            (d.timeout.as_str(), d.cascade.as_str()),
            ("0s", "background")
        );
        assert!(!parse(&["cm", "x", "--wait=false"]).unwrap().wait);
        assert!(parse(&["--wait", "cm", "x"]).unwrap().wait);
        assert_eq!(
            parse(&["cm", "x", "--cascade=orphan"]).unwrap().cascade,
            "orphan"
        );
        assert_eq!(
            parse(&["cm", "x", "--cascade"]).unwrap().cascade,
            "background"
        );
        // As pflag: a bare --cascade takes no separate value; "orphan" is a name here.
        assert_eq!(
            parse(&["cm", "--cascade", "orphan"]).unwrap().args,
            ["cm", "orphan"]
        );
        assert!(parse(&["cm", "x", "--wait=maybe"]).is_err());
    }
}
