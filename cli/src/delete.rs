//! `rudder delete`: by name, `KIND/NAME`, file, label selector or `--all`.

use std::time::{Duration, Instant};

use clap::Args;
use rudder_client::proto as pb;

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
    /// Wait until the objects are gone.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "60s")]
    pub timeout: String,
    /// Treat "not found" as success.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Background (default), Foreground or Orphan.
    #[arg(long)]
    pub cascade: Option<String>,
}

/// One object to delete.
struct Victim {
    rtype: ResourceType,
    namespace: String,
    name: String,
}

pub async fn run(ctx: &Ctx, args: DeleteArgs) -> Result<()> {
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
    } else {
        if args.args.is_empty() {
            return Err(CliError::msg(
                "you must provide one or more resources by argument or filename (rudder delete KIND NAME, KIND/NAME, -f FILE, -l SELECTOR or --all)",
            ));
        }
        for target in util::parse_targets(&args.args)? {
            let t = kinds.lookup(&target.kind)?;
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
    let mut deleted = Vec::new();
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
                propagation_policy: args.cascade.clone().unwrap_or_default(),
            })
            .await;
        match r {
            Ok(_) => {
                util::outln(&format!(
                    "{} \"{}\" deleted",
                    v.rtype.qualified_singular(),
                    v.name
                ))?;
                deleted.push(v);
            }
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e) => {
                eprintln!("{}", CliError::from(e));
                failed = true;
            }
        }
    }
    if args.wait {
        let deadline = Instant::now() + util::parse_duration(&args.timeout)?;
        for v in deleted {
            wait_gone(ctx, &v.rtype, &v.namespace, &v.name, deadline).await?;
        }
    }
    if failed {
        Err(CliError::Reported)
    } else {
        Ok(())
    }
}

/// Polls until the object is gone (finalizers and grace periods may hold it for a while).
async fn wait_gone(
    ctx: &Ctx,
    t: &ResourceType,
    ns: &str,
    name: &str,
    deadline: Instant,
) -> Result<()> {
    let client = ctx.client()?;
    loop {
        match util::get_object(client, t, ns, name).await {
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(CliError::msg(format!(
                "timed out waiting for {}/{name} to be deleted",
                t.qualified_plural()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
