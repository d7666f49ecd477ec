//! Helpers every command uses: decoding objects off the wire, reading manifests, printing,
//! listing with pagination, and parsing `KIND NAME` / `KIND/NAME` arguments.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use rudder_client::{Client, proto as pb};
use serde_json::Value;

use crate::error::{CliError, Result};
use crate::kinds::{Kinds, ResourceType};

/// The object JSON an API call returned.
pub fn decode(o: &pb::Object) -> Result<Value> {
    serde_json::from_slice(&o.json)
        .map_err(|e| CliError::msg(format!("server sent an undecodable object: {e}")))
}

pub fn to_json_bytes(v: &Value) -> bytes::Bytes {
    // Serialising a `Value` cannot fail: its keys are strings.
    serde_json::to_vec(v).unwrap_or_default().into()
}

pub fn to_yaml(v: &Value) -> Result<String> {
    yaml_serde::to_string(v).map_err(|e| CliError::msg(format!("rendering YAML: {e}")))
}

pub fn to_pretty_json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// Writes to stdout; errors (a closed pipe) surface as [`CliError::Io`].
pub fn out(s: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())
        .and_then(|_| o.flush())
        .map_err(|e| CliError::io("writing output", e))
}

pub fn outln(s: &str) -> Result<()> {
    out(&format!("{s}\n"))
}

/// One manifest object and where it came from (for messages).
#[derive(Debug, Clone)]
pub struct Manifest {
    pub source: String,
    pub object: Value,
}

/// Reads `-f` arguments: files, directories (their `.yaml`, `.yml`, `.json` files, sorted, not
/// recursive, as kubectl without `-R`) or `-` for stdin. Each may hold several documents.
pub fn read_manifests(paths: &[String]) -> Result<Vec<Manifest>> {
    if paths.is_empty() {
        return Err(CliError::msg("must specify at least one file with -f"));
    }
    let mut out = Vec::new();
    for p in paths {
        if p == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| CliError::io("reading stdin", e))?;
            parse_into(&text, "STDIN", &mut out)?;
            continue;
        }
        let path = Path::new(p);
        let meta = std::fs::metadata(path).map_err(|e| {
            CliError::msg(format!(
                "the path \"{p}\" does not exist or cannot be read: {e}"
            ))
        })?;
        if meta.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| CliError::io(format!("reading directory {p}"), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && matches!(
                            f.extension().and_then(|x| x.to_str()),
                            Some("yaml" | "yml" | "json")
                        )
                })
                .collect();
            files.sort();
            for f in files {
                read_file(&f, &mut out)?;
            }
        } else {
            read_file(path, &mut out)?;
        }
    }
    Ok(out)
}

fn read_file(path: &Path, out: &mut Vec<Manifest>) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
    parse_into(&text, &path.display().to_string(), out)
}

fn parse_into(text: &str, source: &str, out: &mut Vec<Manifest>) -> Result<()> {
    let docs = rudder_api::decode::parse_documents(text)
        .map_err(|e| CliError::msg(format!("error parsing {source}: {e}")))?;
    for d in docs {
        out.push(Manifest {
            source: source.to_string(),
            object: d,
        });
    }
    Ok(())
}

/// The resource type of a manifest object, with a kubectl-like error when it has none.
pub fn manifest_type<'k>(kinds: &'k Kinds, m: &Manifest) -> Result<&'k ResourceType> {
    let av = m
        .object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = m.object.get("kind").and_then(Value::as_str).unwrap_or("");
    if av.is_empty() || kind.is_empty() {
        return Err(CliError::msg(format!(
            "error validating \"{}\": apiVersion and kind must be set",
            m.source
        )));
    }
    if rudder_api::meta::name(&m.object).is_empty() {
        return Err(CliError::msg(format!(
            "error validating \"{}\": {kind} has no metadata.name",
            m.source
        )));
    }
    // kubectl's resource builder's words; its second line ("ensure CRDs are installed first")
    // is left out, as every error here is one line.
    kinds.by_gvk(av, kind).map_err(|e| {
        CliError::msg(format!(
            "resource mapping not found for name: \"{}\" namespace: \"{}\" from \"{}\": {}",
            rudder_api::meta::name(&m.object),
            rudder_api::meta::namespace(&m.object),
            m.source,
            strip_error(&e)
        ))
    })
}

/// The message of a [`CliError::Msg`] without its `error: ` prefix, for nesting.
pub fn strip_error(e: &CliError) -> String {
    let s = e.to_string();
    s.strip_prefix("error: ").unwrap_or(&s).to_string()
}

/// `KIND NAME...`, `KIND/NAME...` or `KIND[,KIND]` (no names): what a command is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: String,
    /// None: every object of the kind (subject to selectors).
    pub names: Option<Vec<String>>,
}

/// Splits kubectl-style positional arguments into targets.
pub fn parse_targets(args: &[String]) -> Result<Vec<Target>> {
    let Some(first) = args.first() else {
        return Err(CliError::msg(
            "you must specify the type of resource, e.g. `rudder get pods`",
        ));
    };
    if first.contains('/') {
        let mut out: Vec<Target> = Vec::new();
        for a in args {
            let Some((k, n)) = a.split_once('/') else {
                return Err(CliError::msg(format!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (\"{a}\")"
                )));
            };
            if k.is_empty() || n.is_empty() {
                return Err(CliError::msg(format!("invalid resource \"{a}\"")));
            }
            match out.iter_mut().find(|t| t.kind == k) {
                Some(t) => t.names.get_or_insert_with(Vec::new).push(n.to_string()),
                None => out.push(Target {
                    kind: k.to_string(),
                    names: Some(vec![n.to_string()]),
                }),
            }
        }
        return Ok(out);
    }
    let names: Vec<String> = args[1..].to_vec();
    let kinds: Vec<&str> = first.split(',').filter(|k| !k.is_empty()).collect();
    if !names.is_empty() && kinds.len() > 1 {
        return Err(CliError::msg(
            "names cannot be given with several resource types; use KIND/NAME",
        ));
    }
    Ok(kinds
        .into_iter()
        .map(|k| Target {
            kind: k.to_string(),
            names: if names.is_empty() {
                None
            } else {
                Some(names.clone())
            },
        })
        .collect())
}

/// Lists every object of a type, `chunk` at a time (0: all at once) with continue tokens.
/// Returns the items and the list's resourceVersion (to start a watch from).
pub async fn list_all(
    client: &Client,
    t: &ResourceType,
    namespace: &str,
    label_selector: &str,
    field_selector: &str,
    chunk: u32,
) -> Result<(Vec<Value>, u64)> {
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let resp = client
            .list(pb::ListRequest {
                kind: Some(t.kind_ref()),
                namespace: t.scope(namespace).to_string(),
                label_selector: label_selector.to_string(),
                field_selector: field_selector.to_string(),
                limit: chunk,
                continue_token: token.clone(),
                allow_stale: false,
            })
            .await?;
        for o in &resp.items {
            items.push(decode(o)?);
        }
        if resp.continue_token.is_empty() {
            return Ok((items, resp.resource_version));
        }
        token = resp.continue_token;
    }
}

pub async fn get_object(client: &Client, t: &ResourceType, ns: &str, name: &str) -> Result<Value> {
    let o = client
        .get(pb::GetRequest {
            kind: Some(t.kind_ref()),
            namespace: t.scope(ns).to_string(),
            name: name.to_string(),
            allow_stale: false,
        })
        .await?;
    decode(&o)
}

/// kubectl refuses names with `-A` for namespaced kinds: a name means one object, and across
/// namespaces it would be ambiguous.
pub fn refuse_named_across_namespaces(
    ctx: &crate::Ctx,
    t: &ResourceType,
    names: Option<&[String]>,
) -> Result<()> {
    if ctx.all_namespaces && t.namespaced && names.is_some_and(|n| !n.is_empty()) {
        return Err(CliError::msg(
            "a resource cannot be retrieved by name across all namespaces",
        ));
    }
    Ok(())
}

/// `deployment.apps/web`: kubectl's name of an object in output.
pub fn ref_name(t: &ResourceType, obj: &Value) -> String {
    format!("{}/{}", t.qualified_singular(), rudder_api::meta::name(obj))
}

/// Parses `30s`, `1m30s`, `500ms`, `2h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || CliError::msg(format!("invalid duration \"{s}\": use e.g. 30s, 2m, 1h30m"));
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(secs);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// `--dry-run` values, as kubectl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum DryRun {
    #[default]
    None,
    Client,
    Server,
}

impl DryRun {
    /// The suffix kubectl puts after "created"/"configured".
    pub fn suffix(self) -> &'static str {
        match self {
            DryRun::None => "",
            DryRun::Client => " (dry run)",
            DryRun::Server => " (server dry run)",
        }
    }

    pub fn options(self) -> Option<pb::WriteOptions> {
        Some(pb::WriteOptions {
            dry_run: self == DryRun::Server,
            field_manager: "rudder".to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_targets(&s(&["deploy", "a", "b"])).unwrap(),
            vec![Target {
                kind: "deploy".into(),
                names: Some(s(&["a", "b"]))
            }]
        );
        let t = parse_targets(&s(&["po/a", "svc/b", "po/c"])).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].names, Some(s(&["a", "c"])));
        let t = parse_targets(&s(&["po,svc"])).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[1].names.is_none());
        assert!(parse_targets(&s(&["po/a", "b"])).is_err());
        assert!(parse_targets(&[]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("7x").is_err());
        assert!(parse_duration("").is_err());
    }
}
