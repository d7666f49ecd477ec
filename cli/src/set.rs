//! `rudder set image`, `set env` and `set resources`: kubectl's edits of a pod template (or a
//! pod's own spec), for every kind that has one: deployments, replica sets, daemon sets,
//! stateful sets, replication controllers, jobs, cron jobs and pods.
//!
//! Each reads the objects, changes their containers and writes them back guarded by the
//! resourceVersion read. All input is checked, against every object, before the first write,
//! so that bad input changes nothing on the server.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;

use clap::{ArgAction, Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::rollout::target::{self, ObjRef, Outcome, Selection};
use crate::util::{self, DryRun};

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(subcommand)]
    pub command: SetCommand,
}

#[derive(Debug, Subcommand)]
pub enum SetCommand {
    /// Update the image of containers in a pod template: CONTAINER=IMAGE or *=IMAGE.
    Image(ImageArgs),
    /// Update environment variables in a pod template: KEY=VALUE, KEY- to remove.
    Env(EnvArgs),
    /// Update resource requests and limits in a pod template.
    Resources(ResourcesArgs),
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// TYPE NAME... or TYPE/NAME..., then CONTAINER=IMAGE pairs.
    pub args: Vec<String>,
    #[command(flatten)]
    pub sel: Selection,
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// TYPE NAME... or TYPE/NAME..., then KEY=VALUE and KEY- changes (`-` reads KEY=VALUE
    /// lines from stdin).
    pub args: Vec<String>,
    #[command(flatten)]
    pub sel: Selection,
    /// The containers to change, by name; `*` and `?` match any characters.
    #[arg(short = 'c', long = "containers", default_value = "*")]
    pub containers: String,
    /// Add a variable for each key of this config map or secret (configmap/NAME, secret/NAME).
    #[arg(long)]
    pub from: Option<String>,
    /// With --from: only these keys (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub keys: Vec<String>,
    /// Prepended to every variable name set.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// A KEY=VALUE to set (repeatable).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Print the containers' environment after the changes, and write nothing.
    #[arg(long)]
    pub list: bool,
    /// Allow changing variables that already have a value (the default).
    #[arg(long, action = ArgAction::Set, default_value_t = true, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub overwrite: bool,
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
}

#[derive(Debug, Args)]
pub struct ResourcesArgs {
    /// TYPE NAME... or TYPE/NAME...
    pub args: Vec<String>,
    #[command(flatten)]
    pub sel: Selection,
    /// The containers to change, by name; `*` and `?` match any characters.
    #[arg(short = 'c', long = "containers", default_value = "*")]
    pub containers: String,
    /// Limits to set, e.g. cpu=200m,memory=512Mi.
    #[arg(long, default_value = "")]
    pub limits: String,
    /// Requests to set, e.g. cpu=100m,memory=256Mi.
    #[arg(long, default_value = "")]
    pub requests: String,
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
}

pub async fn run(ctx: &Ctx, args: SetArgs) -> Result<()> {
    match args.command {
        SetCommand::Image(a) => image(ctx, a).await,
        SetCommand::Env(a) => env(ctx, a).await,
        SetCommand::Resources(a) => resources(ctx, a).await,
    }
}

const NO_RESOURCES: &str =
    "one or more resources must be specified as <resource> <name> or <resource>/<name>";

/// Splits `TYPE NAME... K=V... K-...` into the resource arguments and the pairs (kubectl's
/// rule: a pair has `=` after its first character, or ends in `-`; all come after the
/// resources).
fn split_pairs(args: &[String], what: &str) -> Result<(Vec<String>, Vec<String>)> {
    let is_pair =
        |s: &str| s.get(1..).is_some_and(|r| r.contains('=')) || (s.ends_with('-') && s != "-");
    let mut resources = Vec::new();
    let mut pairs = Vec::new();
    for a in args {
        match (pairs.is_empty(), is_pair(a)) {
            (true, false) => resources.push(a.clone()),
            (_, true) => pairs.push(a.clone()),
            (false, false) => {
                return Err(CliError::msg(format!(
                    "all resources must be specified before {what} changes: {a}"
                )));
            }
        }
    }
    Ok((resources, pairs))
}

/// Shell-style name matching with `*` (any run) and `?` (any one character).
fn glob(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| m(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && m(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && m(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

/// The containers (then the init containers) of a pod spec whose names match `pattern`.
fn containers_mut<'a>(spec: &'a mut Value, pattern: &str) -> Vec<&'a mut Map<String, Value>> {
    let Some(spec) = spec.as_object_mut() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut init = None;
    let mut main = None;
    for (k, v) in spec.iter_mut() {
        match k.as_str() {
            "containers" => main = v.as_array_mut(),
            "initContainers" => init = v.as_array_mut(),
            _ => {}
        }
    }
    for list in [main, init].into_iter().flatten() {
        for c in list.iter_mut().filter_map(Value::as_object_mut) {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            if glob(pattern, name) {
                out.push(c);
            }
        }
    }
    out
}

/// Prints each changed object's line; unchanged ones print nothing (kubectl's empty patch).
fn report(done: Vec<(ObjRef, Outcome)>, what: &str, dry: DryRun) -> Result<()> {
    for (r, o) in done {
        if let Outcome::Changed(_) = o {
            util::outln(&format!("{} {what}{}", r.display(), dry.suffix()))?;
        }
    }
    Ok(())
}

// ---- set image ----

fn parse_images(pairs: &[String]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut invalid = Vec::new();
    for p in pairs {
        match p.split_once('=') {
            Some((c, i)) if !c.is_empty() => {
                if i.is_empty() {
                    return Err(CliError::msg(format!(
                        "invalid image update {p:?}: the image for container {c:?} must not be empty"
                    )));
                }
                out.retain(|(n, _)| n != c);
                out.push((c.to_string(), i.to_string()));
            }
            _ => invalid.push(p.as_str()),
        }
    }
    if !invalid.is_empty() {
        return Err(CliError::msg(format!(
            "invalid image format: {}",
            invalid.join(", ")
        )));
    }
    if out.is_empty() {
        return Err(CliError::msg("at least one image update is required"));
    }
    if out.len() > 1 && out.iter().any(|(c, _)| c == "*") {
        return Err(CliError::msg(
            "all containers are already specified by *, but saw more than one container_name=container_image pairs",
        ));
    }
    Ok(out)
}

fn set_images(r: &ObjRef, obj: &mut Value, images: &[(String, String)]) -> Result<()> {
    let spec = target::pod_spec_mut(r, obj)?;
    for (name, image) in images {
        // A name is exact here; `*` alone means every container and init container.
        let cs: Vec<_> = containers_mut(spec, "*")
            .into_iter()
            .filter(|c| name == "*" || c.get("name").and_then(Value::as_str) == Some(name))
            .collect();
        if cs.is_empty() {
            return Err(CliError::msg(format!(
                "unable to find container named {name:?}"
            )));
        }
        for c in cs {
            c.insert("image".into(), Value::String(image.clone()));
        }
    }
    Ok(())
}

async fn image(ctx: &Ctx, args: ImageArgs) -> Result<()> {
    let (res, pairs) = split_pairs(&args.args, "image")?;
    if res.is_empty() && args.sel.files.is_empty() {
        return Err(CliError::msg(NO_RESOURCES));
    }
    let images = parse_images(&pairs)?;
    let refs = target::resolve(ctx, &res, &args.sel, NO_RESOURCES, "set image").await?;
    let done = target::modify_all(ctx, &refs, args.dry_run, |r, obj| {
        set_images(r, obj, &images)
    })
    .await?;
    report(done, "image updated", args.dry_run)
}

// ---- set env ----

const ENV_NAME_RULE: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name', or 'MY_ENV.NAME', or 'MyEnv1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";

fn check_env_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CliError::msg(format!(
            "{name:?} is not a valid key name: {ENV_NAME_RULE}"
        )))
    }
}

/// kubectl's name for a variable from a config map or secret key: other characters become
/// `_`, letters upper case.
fn key_to_env_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The variables to set (name, whole entry) and the names to remove.
type EnvChanges = (Vec<(String, Value)>, Vec<String>);

fn parse_env(specs: &[String], stdin: &mut dyn FnMut() -> Result<String>) -> Result<EnvChanges> {
    let mut set: Vec<(String, Value)> = Vec::new();
    let mut remove = Vec::new();
    let add = |k: &str, v: &str, set: &mut Vec<(String, Value)>| -> Result<()> {
        check_env_name(k)?;
        set.push((k.to_string(), json!({"name": k, "value": v})));
        Ok(())
    };
    for spec in specs {
        if spec == "-" {
            for line in stdin()?.lines() {
                let line = line.trim_end_matches('\r');
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((k, v)) = line.split_once('=') else {
                    return Err(CliError::msg(format!(
                        "invalid environment variable: {line}"
                    )));
                };
                add(k, v, &mut set)?;
            }
        } else if let Some((k, v)) = spec.split_once('=') {
            add(k, v, &mut set)?;
        } else if let Some(k) = spec.strip_suffix('-') {
            remove.push(k.to_string());
        } else {
            return Err(CliError::msg(format!(
                "unknown environment variable: {spec}"
            )));
        }
    }
    if remove.iter().any(|k| set.iter().any(|(n, _)| n == k)) {
        return Err(CliError::msg(
            "can not both modify and remove the same environment variable in the same command",
        ));
    }
    Ok((set, remove))
}

/// The variables for `--from`: one per key, referring to the config map's or secret's key.
async fn env_from(ctx: &Ctx, from: &str, keys: &[String]) -> Result<Vec<(String, Value)>> {
    let targets = util::parse_targets(&[from.to_string()])?;
    let (Some(t), true) = (targets.first(), targets.len() == 1) else {
        return Err(CliError::msg("--from takes one TYPE/NAME"));
    };
    let Some([name]) = t.names.as_deref() else {
        return Err(CliError::msg(format!(
            "--from needs a name: configmap/NAME or secret/NAME, not {from:?}"
        )));
    };
    let rt = ctx.kinds().await?.lookup(&t.kind)?;
    let ref_key = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "ConfigMap") => "configMapKeyRef",
        ("", "Secret") => "secretKeyRef",
        _ => return Err(CliError::msg("unsupported resource specified in --from")),
    };
    let obj = util::get_object(ctx.client()?, rt, &ctx.namespace, name).await?;
    let data: BTreeSet<&str> = obj
        .get("data")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    Ok(data
        .into_iter()
        .filter(|k| keys.is_empty() || keys.iter().any(|w| w == k))
        .map(|k| {
            let n = key_to_env_name(k);
            let entry = json!({"name": n, "valueFrom": {ref_key: {"name": name, "key": k}}});
            (n, entry)
        })
        .collect())
}

/// kubectl's merge of a container's variables: removed ones go, changed ones are replaced in
/// place, new ones are appended in order.
fn update_env(existing: &[Value], set: &[(String, Value)], remove: &[String]) -> Vec<Value> {
    let name = |e: &Value| {
        e.get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut covered: BTreeSet<String> = remove.iter().cloned().collect();
    let mut out = Vec::new();
    for e in existing {
        let n = name(e);
        if covered.contains(&n) {
            continue;
        }
        match set.iter().rev().find(|(k, _)| *k == n) {
            Some((_, newer)) => {
                covered.insert(n);
                out.push(newer.clone());
            }
            None => out.push(e.clone()),
        }
    }
    for (k, e) in set {
        if covered.insert(k.clone()) {
            out.push(e.clone());
        }
    }
    out
}

fn ref_string(vf: &Value) -> String {
    let s = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if let Some(r) = vf.get("configMapKeyRef") {
        return format!("configmap {}, key {}", s(r, "name"), s(r, "key"));
    }
    if let Some(r) = vf.get("secretKeyRef") {
        return format!("secret {}, key {}", s(r, "name"), s(r, "key"));
    }
    if let Some(r) = vf.get("fieldRef") {
        return format!("field path {}", s(r, "fieldPath"));
    }
    if let Some(r) = vf.get("resourceFieldRef") {
        let c = s(r, "containerName");
        let prefix = if c.is_empty() {
            String::new()
        } else {
            format!("{c}/")
        };
        return format!("resource field {prefix}{}", s(r, "resource"));
    }
    "invalid valueFrom".to_string()
}

/// Applies the env changes to one object; with `list`, also renders kubectl's listing.
fn change_env(
    r: &ObjRef,
    obj: &mut Value,
    args: &EnvArgs,
    set: &[(String, Value)],
    remove: &[String],
    listing: Option<&mut String>,
) -> Result<()> {
    let spec = target::pod_spec_mut(r, obj)?;
    let cs = containers_mut(spec, &args.containers);
    if cs.is_empty() {
        return Err(CliError::msg(format!(
            "{} does not have any containers matching {:?}",
            r.display(),
            args.containers
        )));
    }
    let mut text = String::new();
    for c in cs {
        let existing: Vec<Value> = c
            .get("env")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !args.overwrite {
            for (k, e) in set {
                let value = |x: &Value| {
                    x.get("value")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                if let Some(cur) = existing
                    .iter()
                    .find(|x| x.get("name").and_then(Value::as_str) == Some(k))
                    && value(cur) != value(e)
                {
                    return Err(CliError::msg(format!(
                        "'{k}' already has a value ({}), and --overwrite is false",
                        value(cur)
                    )));
                }
            }
        }
        let updated = update_env(&existing, set, remove);
        let cname = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        text.push_str(&format!("# {} {}, container {cname}\n", r.t.kind, r.name));
        for e in &updated {
            let n = e.get("name").and_then(Value::as_str).unwrap_or_default();
            match e.get("valueFrom") {
                None => {
                    let v = e.get("value").and_then(Value::as_str).unwrap_or_default();
                    text.push_str(&format!("{n}={v}\n"));
                }
                Some(vf) => text.push_str(&format!("# {n} from {}\n", ref_string(vf))),
            }
        }
        if updated.is_empty() {
            c.remove("env");
        } else {
            c.insert("env".into(), Value::Array(updated));
        }
    }
    if let Some(l) = listing {
        l.push_str(&text);
    }
    Ok(())
}

async fn env(ctx: &Ctx, args: EnvArgs) -> Result<()> {
    let (res, pairs) = split_pairs(&args.args, "environment").map_err(|_| {
        CliError::msg(format!(
            "all resources must be specified before environment changes: {}",
            args.args.join(" ")
        ))
    })?;
    if res.is_empty() && args.sel.files.is_empty() {
        return Err(CliError::msg(NO_RESOURCES));
    }
    if !args.keys.is_empty() && args.from.is_none() {
        return Err(CliError::msg(
            "when specifying --keys, a configmap or secret must be provided with --from",
        ));
    }
    let specs: Vec<String> = args.env.iter().chain(&pairs).cloned().collect();
    let mut read_stdin = || {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::io("reading stdin", e))?;
        Ok(s)
    };
    let (mut set, remove) = parse_env(&specs, &mut read_stdin)?;
    if let Some(from) = &args.from {
        set.extend(env_from(ctx, from, &args.keys).await?);
    }
    for (k, e) in set.iter_mut() {
        if !args.prefix.is_empty() {
            *k = format!("{}{k}", args.prefix);
            e["name"] = Value::String(k.clone());
        }
        check_env_name(k)?;
    }
    if set.is_empty() && remove.is_empty() && !args.list {
        return Err(CliError::msg(
            "at least one environment variable must be provided",
        ));
    }
    let refs = target::resolve(ctx, &res, &args.sel, NO_RESOURCES, "set env").await?;
    if args.list {
        // kubectl's listing shows the environment as it would be, and writes nothing.
        let mut out = String::new();
        for r in &refs {
            let mut obj = target::get(ctx, r).await?;
            change_env(r, &mut obj, &args, &set, &remove, Some(&mut out))?;
        }
        return util::out(&out);
    }
    let done = target::modify_all(ctx, &refs, args.dry_run, |r, obj| {
        change_env(r, obj, &args, &set, &remove, None)
    })
    .await?;
    report(done, "env updated", args.dry_run)
}

// ---- set resources ----

/// `cpu=200m,memory=512Mi` as canonical quantities; `flag` names the option in errors.
fn parse_resource_list(spec: &str, flag: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if spec.is_empty() {
        return Ok(out);
    }
    for stmt in spec.split(',') {
        let parts: Vec<&str> = stmt.split('=').collect();
        let [name, value] = parts.as_slice() else {
            return Err(CliError::msg(format!(
                "invalid {flag} {stmt:?}: expected <resource>=<value>"
            )));
        };
        if name.is_empty() {
            return Err(CliError::msg(format!(
                "invalid {flag} {stmt:?}: the resource name is empty"
            )));
        }
        let q = rudder_api::quantity::parse_quantity(value)
            .map_err(|e| CliError::msg(format!("invalid {flag} value for {name}: {e}")))?;
        if q.is_negative() {
            return Err(CliError::msg(format!(
                "invalid {flag} value for {name}: {value:?} must be greater than or equal to 0"
            )));
        }
        out.insert(name.to_string(), q.to_string());
    }
    Ok(out)
}

fn change_resources(
    r: &ObjRef,
    obj: &mut Value,
    pattern: &str,
    limits: &BTreeMap<String, String>,
    requests: &BTreeMap<String, String>,
) -> Result<()> {
    let spec = target::pod_spec_mut(r, obj)?;
    let cs = containers_mut(spec, pattern);
    if cs.is_empty() {
        return Err(CliError::msg(format!(
            "unable to find container named {pattern}"
        )));
    }
    for c in cs {
        let res = c
            .entry("resources")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(res) = res.as_object_mut() else {
            return Err(CliError::msg(format!(
                "{} has malformed resources",
                r.display()
            )));
        };
        for (section, new) in [("limits", limits), ("requests", requests)] {
            if new.is_empty() {
                continue;
            }
            let m = res
                .entry(section)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(m) = m.as_object_mut() {
                for (k, v) in new {
                    m.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
        // What the server would refuse: a request above its limit.
        let q = |section: &str, k: &str| {
            res.get(section)
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .and_then(|s| rudder_api::quantity::parse_quantity(s).ok())
        };
        let names: Vec<String> = res
            .get("requests")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for k in names {
            if let (Some(req), Some(lim)) = (q("requests", &k), q("limits", &k))
                && req > lim
            {
                let cname = c.get("name").and_then(Value::as_str).unwrap_or_default();
                return Err(CliError::msg(format!(
                    "container {cname:?} of {}: requests.{k} ({req}) must be less than or equal to limits.{k} ({lim})",
                    r.display()
                )));
            }
        }
    }
    Ok(())
}

async fn resources(ctx: &Ctx, args: ResourcesArgs) -> Result<()> {
    if args.args.is_empty() && args.sel.files.is_empty() {
        return Err(CliError::msg(NO_RESOURCES));
    }
    if args.limits.is_empty() && args.requests.is_empty() {
        return Err(CliError::msg(
            "you must specify an update to requests or limits (in the form of --requests/--limits)",
        ));
    }
    let limits = parse_resource_list(&args.limits, "--limits")?;
    let requests = parse_resource_list(&args.requests, "--requests")?;
    let refs = target::resolve(ctx, &args.args, &args.sel, NO_RESOURCES, "set resources").await?;
    let done = target::modify_all(ctx, &refs, args.dry_run, |r, obj| {
        change_resources(r, obj, &args.containers, &limits, &requests)
    })
    .await?;
    // kubectl reports an object the change leaves as it was, and fails for it.
    let mut unchanged = false;
    for (r, o) in done {
        match o {
            Outcome::Changed(_) => util::outln(&format!(
                "{} resource requirements updated{}",
                r.display(),
                args.dry_run.suffix()
            ))?,
            Outcome::Unchanged => {
                eprintln!(
                    "info: {}/{} was not changed",
                    r.t.qualified_plural(),
                    r.name
                );
                unchanged = true;
            }
        }
    }
    if unchanged {
        return Err(CliError::Reported);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pairs_images_and_globs() {
        let (r, p) = split_pairs(&v(&["deploy", "web", "c=nginx:2", "d-"]), "image").unwrap();
        assert_eq!((r, p), (v(&["deploy", "web"]), v(&["c=nginx:2", "d-"])));
        assert_eq!(
            split_pairs(&v(&["deploy/web", "c=x", "deploy/b"]), "image")
                .unwrap_err()
                .to_string(),
            "error: all resources must be specified before image changes: deploy/b"
        );
        assert_eq!(
            parse_images(&v(&["c-"])).unwrap_err().to_string(),
            "error: invalid image format: c-"
        );
        assert!(parse_images(&v(&["*=a", "c=b"])).is_err());
        assert!(parse_images(&v(&["c="])).is_err());
        assert!(glob("*", "anything") && glob("we?-*", "web-1") && !glob("db", "web"));
    }

    #[test]
    fn env_parsing_and_merge() {
        let mut no_stdin = || Ok("A=1\n# comment\n\nB=2\n".to_string());
        let (set, remove) = parse_env(&v(&["X=1", "Y-", "-"]), &mut no_stdin).unwrap();
        let names: Vec<&str> = set.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["X", "A", "B"]);
        assert_eq!(remove, ["Y"]);
        assert_eq!(
            parse_env(&v(&["1X=1"]), &mut no_stdin)
                .unwrap_err()
                .to_string(),
            format!("error: \"1X\" is not a valid key name: {ENV_NAME_RULE}")
        );
        assert!(parse_env(&v(&["X=1", "X-"]), &mut no_stdin).is_err());
        assert_eq!(key_to_env_name("db.host-name"), "DB_HOST_NAME");
        let existing = vec![
            json!({"name": "X", "value": "0"}),
            json!({"name": "Y", "value": "y"}),
            json!({"name": "Z", "value": "z"}),
        ];
        let got = update_env(&existing, &set, &remove);
        assert_eq!(
            got,
            vec![
                json!({"name": "X", "value": "1"}),
                json!({"name": "Z", "value": "z"}),
                json!({"name": "A", "value": "1"}),
                json!({"name": "B", "value": "2"}),
            ]
        );
    }

    #[test]
    fn resource_lists() {
        let m = parse_resource_list("cpu=0.5,memory=512Mi", "--limits").unwrap();
        assert_eq!(m["cpu"], "500m");
        assert_eq!(m["memory"], "512Mi");
        assert_eq!(
            parse_resource_list("cpu", "--limits")
                .unwrap_err()
                .to_string(),
            "error: invalid --limits \"cpu\": expected <resource>=<value>"
        );
        assert!(parse_resource_list("cpu=lots", "--requests").is_err());
        assert!(parse_resource_list("cpu=-1", "--requests").is_err());
    }
}
