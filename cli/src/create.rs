//! `rudder create`: namespaces, config maps, generic and docker-registry secrets, jobs, or
//! objects from files.
//!
//! A docker-registry secret is kubectl's: type `kubernetes.io/dockerconfigjson`, its
//! `.dockerconfigjson` either built from the `--docker-*` flags
//! (`{"auths":{SERVER:{"username","password","email","auth":base64(user:password)}}}`, empty
//! fields left out) or read with `--from-file` from a docker `config.json` (checked to be JSON).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use clap::{Args, Subcommand};
use rudder_client::proto as pb;
use serde_json::{Value, json};

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::get::{self, Output};
use crate::kinds::ResourceType;
use crate::util::{self, DryRun};

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// Create a namespace.
    #[command(alias = "ns")]
    Namespace {
        name: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Create a config map from literals and files.
    #[command(alias = "cm")]
    Configmap(DataArgs),
    /// Create a secret.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Create a job from an image, or from a cron job's template (`--from=cronjob/NAME`).
    Job(JobArgs),
}

#[derive(Debug, Args)]
pub struct JobArgs {
    pub name: String,
    /// The image of the job's one container.
    #[arg(long)]
    pub image: Option<String>,
    /// The cron job to instantiate, `cronjob/NAME`.
    #[arg(long)]
    pub from: Option<String>,
    /// The container's command (after `--`), with `--image`.
    #[arg(last = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// A Job instantiating a cron job by hand, as kubectl's `createJobFromCronJob`: the template's
/// labels, annotations (plus `cronjob.kubernetes.io/instantiate: manual`) and spec, and a
/// controller reference to the cron job (without `blockOwnerDeletion`, as kubectl).
pub fn job_from_cronjob(name: &str, ns: &str, cronjob: &Value) -> Value {
    let tmpl = cronjob
        .pointer("/spec/jobTemplate")
        .cloned()
        .unwrap_or_default();
    let mut annotations = json!({"cronjob.kubernetes.io/instantiate": "manual"});
    if let Some(Value::Object(a)) = tmpl.pointer("/metadata/annotations") {
        for (k, v) in a {
            annotations[k] = v.clone();
        }
    }
    let mut job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": cronjob.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
                "uid": cronjob.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
                "controller": true,
            }],
        },
        "spec": tmpl.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    if let Some(l) = tmpl.pointer("/metadata/labels").filter(|l| l.is_object()) {
        job["metadata"]["labels"] = l.clone();
    }
    job
}

/// A Job running `image` once, as kubectl's `createJobWithImage`.
pub fn job_with_image(name: &str, ns: &str, image: &str, command: &[String]) -> Value {
    let mut container = json!({"name": name, "image": image});
    if !command.is_empty() {
        container["command"] = json!(command);
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"template": {"spec": {"containers": [container], "restartPolicy": "Never"}}},
    })
}

async fn create_job(ctx: &Ctx, a: &JobArgs) -> Result<()> {
    let builtin = crate::kinds::Kinds::builtin();
    let job_type = builtin.lookup("job")?.clone();
    let obj = match (a.image.as_deref(), a.from.as_deref()) {
        (Some(image), None) => job_with_image(&a.name, &ctx.namespace, image, &a.command),
        (None, Some(from)) => {
            if !a.command.is_empty() {
                return Err(CliError::msg("cannot specify --from and command"));
            }
            let (kind, name) = from
                .split_once('/')
                .filter(|(k, n)| !k.is_empty() && !n.is_empty())
                .ok_or_else(|| {
                    CliError::msg(format!("--from must be cronjob/NAME, not \"{from}\""))
                })?;
            let t = builtin.lookup(kind)?;
            if (t.group.as_str(), t.kind.as_str()) != ("batch", "CronJob") {
                return Err(CliError::msg(format!(
                    "--from must name a cronjob, not a {}",
                    t.kind.to_lowercase()
                )));
            }
            let cronjob = util::get_object(ctx.client()?, t, &ctx.namespace, name).await?;
            job_from_cronjob(&a.name, &ctx.namespace, &cronjob)
        }
        _ => return Err(CliError::msg("either --image or --from must be specified")),
    };
    create_one(ctx, &job_type, obj, &a.common).await
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CreateArgs {
    /// Create the objects in these files (fails for ones that exist; see `apply`).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Option<CreateCommand>,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// A secret from literals and files (values base64-encoded into `data`).
    Generic(DataArgs),
    /// A `kubernetes.io/dockerconfigjson` secret, for pods' `imagePullSecrets`.
    DockerRegistry(DockerRegistryArgs),
}

/// The key a dockerconfigjson secret holds its config under.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";

#[derive(Debug, Args)]
pub struct DockerRegistryArgs {
    pub name: String,
    /// The registry's address, as image references name it (e.g. registry.example.com:5000).
    #[arg(long, default_value = "https://index.docker.io/v1/")]
    pub docker_server: String,
    /// The user to log in to the registry as.
    #[arg(long)]
    pub docker_username: Option<String>,
    /// That user's password.
    #[arg(long)]
    pub docker_password: Option<String>,
    /// An email address, stored with the credentials (registries ignore it).
    #[arg(long)]
    pub docker_email: Option<String>,
    /// [key=]path of a docker config.json (key: .dockerconfigjson); instead of the flags.
    #[arg(long = "from-file")]
    pub from_file: Vec<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// One registry's entry, fields in kubectl's order.
#[derive(serde::Serialize)]
struct DockerConfigEntry<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    username: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    password: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    email: &'a str,
    #[serde(skip_serializing_if = "String::is_empty")]
    auth: String,
}

/// The `.dockerconfigjson` for one registry, byte for byte as kubectl writes it.
pub fn docker_config_json(server: &str, username: &str, password: &str, email: &str) -> Vec<u8> {
    let entry = DockerConfigEntry {
        username,
        password,
        email,
        auth: base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")),
    };
    let auths = BTreeMap::from([("auths", BTreeMap::from([(server, entry)]))]);
    // A map of strings to a plain struct always serializes.
    serde_json::to_vec(&auths).unwrap_or_default()
}

/// The data of a docker-registry secret: from `--from-file` if given, else from the flags.
pub fn docker_registry_data(a: &DockerRegistryArgs) -> Result<BTreeMap<String, Vec<u8>>> {
    if a.from_file.is_empty() {
        let (Some(user), Some(password)) = (
            a.docker_username.as_deref().filter(|u| !u.is_empty()),
            a.docker_password.as_deref().filter(|p| !p.is_empty()),
        ) else {
            return Err(CliError::msg(
                "either --from-file or the combination of --docker-username, --docker-password and --docker-server is required",
            ));
        };
        if a.docker_server.is_empty() {
            return Err(CliError::msg("--docker-server must not be empty"));
        }
        let email = a.docker_email.as_deref().unwrap_or("");
        let config = docker_config_json(&a.docker_server, user, password, email);
        return Ok(BTreeMap::from([(
            DOCKER_CONFIG_JSON_KEY.to_string(),
            config,
        )]));
    }
    // As kubectl: a file named without a key is the config itself.
    let sources: Vec<String> = a
        .from_file
        .iter()
        .map(|f| {
            if f.contains('=') {
                f.clone()
            } else {
                format!("{DOCKER_CONFIG_JSON_KEY}={f}")
            }
        })
        .collect();
    let data = collect_data(&[], &sources)?;
    let Some(config) = data.get(DOCKER_CONFIG_JSON_KEY) else {
        return Err(CliError::msg(format!(
            "a docker-registry secret needs the key {DOCKER_CONFIG_JSON_KEY}"
        )));
    };
    if let Err(e) = serde_json::from_slice::<Value>(config) {
        return Err(CliError::msg(format!(
            "{DOCKER_CONFIG_JSON_KEY} is not a docker config.json: {e}"
        )));
    }
    Ok(data)
}

#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// none, client (print only) or server (server-side dry run).
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
    /// Print the object (yaml, json or name) instead of "created".
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

#[derive(Debug, Args)]
pub struct DataArgs {
    pub name: String,
    /// key=value; repeatable.
    #[arg(long = "from-literal")]
    pub from_literal: Vec<String>,
    /// [key=]path: the file's content under its base name (or key); a directory adds each file.
    #[arg(long = "from-file")]
    pub from_file: Vec<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Collects `--from-literal` and `--from-file` into key → bytes.
pub fn collect_data(literals: &[String], files: &[String]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut data = BTreeMap::new();
    let mut put = |k: String, v: Vec<u8>| -> Result<()> {
        if k.is_empty() {
            return Err(CliError::msg("data keys must not be empty"));
        }
        if data.insert(k.clone(), v).is_some() {
            return Err(CliError::msg(format!(
                "cannot add key \"{k}\", another key by that name already exists"
            )));
        }
        Ok(())
    };
    for l in literals {
        let Some((k, v)) = l.split_once('=') else {
            return Err(CliError::msg(format!(
                "invalid literal source \"{l}\", expected key=value"
            )));
        };
        put(k.to_string(), v.as_bytes().to_vec())?;
    }
    for f in files {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) => (Some(k.to_string()), p),
            None => (None, f.as_str()),
        };
        let p = Path::new(path);
        if p.is_dir() {
            if key.is_some() {
                return Err(CliError::msg(format!(
                    "cannot give a key for directory \"{path}\""
                )));
            }
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .map_err(|e| CliError::io(format!("reading {path}"), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| e.is_file())
                .collect();
            entries.sort();
            for e in entries {
                let k = e
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let v = std::fs::read(&e)
                    .map_err(|err| CliError::io(format!("reading {}", e.display()), err))?;
                put(k, v)?;
            }
        } else {
            let v = std::fs::read(p).map_err(|e| CliError::io(format!("reading {path}"), e))?;
            let k = key.unwrap_or_else(|| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            put(k, v)?;
        }
    }
    Ok(data)
}

pub fn configmap_object(name: &str, ns: &str, data: &BTreeMap<String, Vec<u8>>) -> Value {
    let mut text = serde_json::Map::new();
    let mut binary = serde_json::Map::new();
    for (k, v) in data {
        match std::str::from_utf8(v) {
            Ok(s) => {
                text.insert(k.clone(), Value::String(s.to_string()));
            }
            Err(_) => {
                binary.insert(
                    k.clone(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
                );
            }
        }
    }
    let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}});
    if !text.is_empty() {
        o["data"] = Value::Object(text);
    }
    if !binary.is_empty() {
        o["binaryData"] = Value::Object(binary);
    }
    o
}

pub fn secret_object(name: &str, ns: &str, data: &BTreeMap<String, Vec<u8>>) -> Value {
    let enc: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    let mut o = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": ns}});
    if !enc.is_empty() {
        o["data"] = Value::Object(enc);
    }
    o
}

/// Creates one object and reports it as kubectl does.
pub async fn create_one(
    ctx: &Ctx,
    t: &ResourceType,
    obj: Value,
    common: &CommonArgs,
) -> Result<()> {
    let out = match common.output.as_deref() {
        None => None,
        o => Some(Output::parse(o)?),
    };
    let ns = match rudder_api::meta::namespace(&obj) {
        "" => ctx.namespace.clone(),
        n => n.to_string(),
    };
    let result = if common.dry_run == DryRun::Client {
        obj
    } else {
        let o = ctx
            .client()?
            .create(pb::CreateRequest {
                kind: Some(t.kind_ref()),
                namespace: t.scope(&ns).to_string(),
                json: util::to_json_bytes(&obj),
                options: common.dry_run.options(),
            })
            .await?;
        util::decode(&o)?
    };
    match out {
        Some(Output::Name) => util::outln(&util::ref_name(t, &result)),
        Some(o) if o.is_structured() => get::print_structured(&o, &result),
        _ => util::outln(&format!(
            "{} created{}",
            util::ref_name(t, &result),
            common.dry_run.suffix()
        )),
    }
}

pub async fn run(ctx: &Ctx, args: CreateArgs) -> Result<()> {
    let Some(cmd) = args.command else {
        return create_files(ctx, &args.files, &args.common).await;
    };
    let builtin = crate::kinds::Kinds::builtin();
    // Namespaces, config maps and secrets are core kinds: no need to ask the server for them,
    // which keeps `--dry-run=client` working offline.
    let core = |n: &str| builtin.lookup(n).cloned();
    match cmd {
        CreateCommand::Namespace { name, common } => {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            create_one(ctx, &core("namespace")?, obj, &common).await
        }
        CreateCommand::Configmap(a) => {
            let data = collect_data(&a.from_literal, &a.from_file)?;
            let obj = configmap_object(&a.name, &ctx.namespace, &data);
            create_one(ctx, &core("configmap")?, obj, &a.common).await
        }
        CreateCommand::Secret(SecretCommand::Generic(a)) => {
            let data = collect_data(&a.from_literal, &a.from_file)?;
            let obj = secret_object(&a.name, &ctx.namespace, &data);
            create_one(ctx, &core("secret")?, obj, &a.common).await
        }
        CreateCommand::Secret(SecretCommand::DockerRegistry(a)) => {
            let data = docker_registry_data(&a)?;
            let mut obj = secret_object(&a.name, &ctx.namespace, &data);
            obj["type"] = json!(DOCKER_CONFIG_JSON_TYPE);
            create_one(ctx, &core("secret")?, obj, &a.common).await
        }
        CreateCommand::Job(a) => create_job(ctx, &a).await,
    }
}

async fn create_files(ctx: &Ctx, files: &[String], common: &CommonArgs) -> Result<()> {
    let kinds = ctx.kinds().await?;
    let mut failed = false;
    for m in util::read_manifests(files)? {
        let r = match util::manifest_type(kinds, &m) {
            Ok(t) => create_one(ctx, t, m.object.clone(), common)
                .await
                .map_err(|e| e.with_context(format!("error when creating \"{}\"", m.source))),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            eprintln!("{e}");
            failed = true;
        }
    }
    if failed {
        Err(CliError::Reported)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_from_literals_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.conf");
        std::fs::write(&f, "x=1\n").unwrap();
        let data = collect_data(
            &["a=1".into(), "b=x=y".into()],
            &[f.display().to_string(), format!("k={}", f.display())],
        )
        .unwrap();
        assert_eq!(data["a"], b"1");
        assert_eq!(data["b"], b"x=y");
        assert_eq!(data["app.conf"], b"x=1\n");
        assert_eq!(data["k"], b"x=1\n");
        assert!(collect_data(&["novalue".into()], &[]).is_err());
        assert!(collect_data(&["a=1".into(), "a=2".into()], &[]).is_err());
        let s = secret_object("s", "ns", &data);
        assert_eq!(s["data"]["a"], "MQ==");
        assert_eq!(s["type"], "Opaque");
        let c = configmap_object("c", "ns", &data);
        assert_eq!(c["data"]["b"], "x=y");
    }

    fn registry_args(argv: &[&str]) -> DockerRegistryArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: DockerRegistryArgs,
        }
        let mut full = vec!["x"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).expect("args").a
    }

    #[test]
    fn docker_registry_data_as_kubectl_writes_it() {
        assert_eq!(
            String::from_utf8(docker_config_json("r:5000", "u", "p", "u@x")).unwrap(),
            r#"{"auths":{"r:5000":{"username":"u","password":"p","email":"u@x","auth":"dTpw"}}}"#
        );
        let a = registry_args(&["s", "--docker-username=u", "--docker-password=p:w"]);
        let data = docker_registry_data(&a).unwrap();
        assert_eq!(
            String::from_utf8(data[DOCKER_CONFIG_JSON_KEY].clone()).unwrap(),
            r#"{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p:w","auth":"dTpwOnc="}}}"#,
            "Docker Hub by default; no email field without an email"
        );
        assert_eq!(data.len(), 1);
        let e = docker_registry_data(&registry_args(&["s", "--docker-username=u"])).unwrap_err();
        assert!(e.to_string().contains("--from-file"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, r#"{"auths":{"r":{"auth":"dTpw"}}}"#).unwrap();
        let path = cfg.display().to_string();
        let data = docker_registry_data(&registry_args(&["s", "--from-file", &path])).unwrap();
        assert_eq!(data[DOCKER_CONFIG_JSON_KEY], std::fs::read(&cfg).unwrap());
        let keyed = format!("other={path}");
        let e = docker_registry_data(&registry_args(&["s", "--from-file", &keyed])).unwrap_err();
        assert!(e.to_string().contains(".dockerconfigjson"), "{e}");
        std::fs::write(&cfg, "not json").unwrap();
        let e = docker_registry_data(&registry_args(&["s", "--from-file", &path])).unwrap_err();
        assert!(e.to_string().contains("not a docker config.json"), "{e}");
    }
}
