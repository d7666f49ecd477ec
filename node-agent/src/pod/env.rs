//! A container's environment, resolved as kubelet resolves it.
//!
//! [`container_env`] applies, in order:
//! 1. `envFrom`: every key of the ConfigMap's `data` or the Secret's `data`, prefixed with
//!    `prefix`; keys that are not valid variable names (`[-._a-zA-Z][-._a-zA-Z0-9]*`) are
//!    skipped; a missing object is skipped when `optional`, else an error.
//! 2. `env`, in declaration order: a non-empty `value` has its `$(VAR)` references expanded
//!    against the variables defined so far ([`expand`]); otherwise `valueFrom` is resolved:
//!    `configMapKeyRef` / `secretKeyRef` (a missing object or key leaves the variable unset when
//!    `optional`), `fieldRef` ([`field_value`]) or `resourceFieldRef` ([`resource_value`]).
//!
//! A later definition of a name replaces the value of an earlier one (an `env` entry overrides
//! an `envFrom` key); the result holds each name once, at its first position.
//!
//! Not done: the service-link variables (`<SVC>_SERVICE_HOST`, ...) kubelet adds for every
//! Service in the namespace are left out; pods find services through DNS. `fileKeyRef` (alpha in
//! Kubernetes 1.34) is refused.

use std::collections::HashMap;

use rudder_api::k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVarSource, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret,
};
use rudder_api::quantity::Quantity;

use crate::objects::{ConfigError, ObjectSource, secret_data};

/// What the environment of a pod's containers is resolved against.
#[derive(Debug, Clone, Copy)]
pub struct EnvContext<'a> {
    pub pod: &'a Pod,
    /// This node's name (used when the pod's `spec.nodeName` is empty).
    pub node_name: &'a str,
    pub host_ip: &'a str,
    /// The sandbox's address; empty until it has one.
    pub pod_ip: &'a str,
    /// Node allocatable CPU in millicores: the value of `limits.cpu` for a container without
    /// a CPU limit (0: unknown, the value stays 0).
    pub node_allocatable_cpu_milli: i64,
    /// Node allocatable memory in bytes, for `limits.memory` likewise.
    pub node_allocatable_memory_bytes: i64,
}

/// The environment of container `c` of `ctx.pod`. See the module documentation for the rules.
pub async fn container_env(
    ctx: &EnvContext<'_>,
    c: &Container,
    objects: &dyn ObjectSource,
) -> Result<Vec<(String, String)>, ConfigError> {
    let namespace = pod_namespace(ctx.pod);
    let mut cache = ObjectCache::new(objects, namespace);
    let mut env = EnvList::default();

    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        // Validation allows one of the two per entry; a malformed one uses the first, as
        // kubelet's switch does.
        let entries: Vec<(String, String)> = if let Some(r) = &from.config_map_ref {
            match cache.config_map(&r.name).await? {
                Some(cm) => cm.data.iter().flatten().map(clone_pair).collect(),
                None if r.optional == Some(true) => continue,
                None => return Err(ConfigError::ConfigMapNotFound(r.name.clone())),
            }
        } else if let Some(r) = &from.secret_ref {
            match cache.secret(&r.name).await? {
                Some(s) => secret_strings(s),
                None if r.optional == Some(true) => continue,
                None => return Err(ConfigError::SecretNotFound(r.name.clone())),
            }
        } else {
            continue;
        };
        for (k, v) in entries {
            let name = format!("{prefix}{k}");
            if is_env_var_name(&name) {
                env.set(name, v);
            }
        }
    }

    for var in c.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) if !v.is_empty() => expand_with(v, |n| env.get(n)),
            (_, Some(from)) => match value_from(ctx, c, from, &mut cache).await? {
                Some(v) => v,
                // An optional reference to something missing leaves the variable unset.
                None => continue,
            },
            _ => String::new(),
        };
        env.set(var.name.clone(), value);
    }
    Ok(env.vars)
}

/// `$(VAR)` expansion of a command or argument against a container's final environment, as
/// Kubernetes does it: `$$` is a literal `$`, a reference to an unknown variable (or an
/// unterminated `$(`) is kept verbatim. When a name occurs twice, the later value wins.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    expand_with(s, |name| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    })
}

/// The value of a `fieldRef` of the pod, for env vars and downward API files.
///
/// Supported: `metadata.name`, `.namespace`, `.uid`, `.labels`, `.annotations` (whole maps
/// as `key="value"` lines, sorted), `metadata.labels['k']`, `metadata.annotations['k']` (empty
/// when absent), `spec.nodeName` (and its old alias `spec.host`), `spec.serviceAccountName`,
/// `status.podIP`, `status.podIPs`, `status.hostIP`, `status.hostIPs`.
pub fn field_value(ctx: &EnvContext<'_>, fs: &ObjectFieldSelector) -> Result<String, ConfigError> {
    if let Some(v) = fs
        .api_version
        .as_deref()
        .filter(|v| *v != "v1" && !v.is_empty())
    {
        return Err(ConfigError::Invalid(format!(
            "unsupported pod version: {v}"
        )));
    }
    let pod = ctx.pod;
    let meta = &pod.metadata;
    let path = fs.field_path.as_str();
    if let Some((base, key)) = split_subscript(path) {
        let map = match base {
            "metadata.labels" => &meta.labels,
            "metadata.annotations" => &meta.annotations,
            _ => return Err(ConfigError::UnsupportedFieldPath(path.to_string())),
        };
        return Ok(map
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default());
    }
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => pod_namespace(pod).to_string(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.iter().flatten()),
        "metadata.annotations" => format_map(meta.annotations.iter().flatten()),
        "spec.nodeName" | "spec.host" => spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| ctx.node_name.to_string()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        // Single-stack: the lists hold the one address.
        "status.podIP" | "status.podIPs" => ctx.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.to_string(),
        _ => return Err(ConfigError::UnsupportedFieldPath(path.to_string())),
    })
}

/// The value of a `resourceFieldRef`: `limits.` or `requests.` followed by `cpu`, `memory`,
/// `ephemeral-storage` or `hugepages-<size>`, divided by `divisor` (default 1) and rounded up,
/// CPU counted in millicores first, as Kubernetes does (250m with divisor 1 is `1`). A missing
/// or zero CPU or memory limit is the node's allocatable amount; a missing ephemeral-storage
/// limit reads 0 (kubelet uses allocatable storage, which this agent does not track).
///
/// `containerName` picks the container (required in volumes); without it, `default` is used.
pub fn resource_value(
    ctx: &EnvContext<'_>,
    fs: &ResourceFieldSelector,
    default: Option<&Container>,
) -> Result<String, ConfigError> {
    let container = match fs.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => find_container(ctx.pod, name)
            .ok_or_else(|| ConfigError::ContainerNotFound(name.to_string()))?,
        None => default.ok_or_else(|| {
            ConfigError::Invalid(format!(
                "resourceFieldRef {:?} needs a containerName",
                fs.resource
            ))
        })?,
    };
    let unsupported = || ConfigError::UnsupportedResource(fs.resource.clone());
    let (is_limit, name) = if let Some(n) = fs.resource.strip_prefix("limits.") {
        (true, n)
    } else if let Some(n) = fs.resource.strip_prefix("requests.") {
        (false, n)
    } else {
        return Err(unsupported());
    };
    let is_cpu = name == "cpu";
    let allocatable = match name {
        "cpu" => ctx.node_allocatable_cpu_milli,
        "memory" => ctx.node_allocatable_memory_bytes,
        // The agent does not track allocatable storage, and hugepages are never defaulted.
        "ephemeral-storage" => 0,
        n if n.starts_with("hugepages-") => 0,
        _ => return Err(unsupported()),
    };
    let parse = |q: &rudder_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
        Quantity::try_from(q)
            .map_err(|e| ConfigError::Invalid(format!("resourceFieldRef {}: {e}", fs.resource)))
    };
    let resources = container.resources.as_ref();
    let list = resources.and_then(|r| if is_limit { &r.limits } else { &r.requests }.as_ref());
    let amount = match list.and_then(|l| l.get(name)) {
        Some(q) => parse(q)?,
        None => Quantity::from_units(0),
    };
    // Measured in millicores for CPU, in whole units (bytes) otherwise; both rounded up.
    let measure = |q: &Quantity| if is_cpu { q.milli_value() } else { q.value() };
    let mut value = measure(&amount);
    if is_limit && value == 0 {
        value = i128::from(allocatable);
    }
    let divisor = match &fs.divisor {
        Some(d) => parse(d)?,
        None => Quantity::from_units(1),
    };
    // A zero divisor means the default, 1.
    let divisor = match (divisor.is_zero(), is_cpu) {
        (true, true) => 1000,
        (true, false) => 1,
        (false, _) => measure(&divisor),
    };
    if divisor <= 0 {
        return Err(ConfigError::Invalid(format!(
            "resourceFieldRef {}: divisor must be positive",
            fs.resource
        )));
    }
    Ok(ceil_div(value, divisor).to_string())
}

/// Labels or annotations as kubelet writes a whole map: `key="value"` lines sorted by key,
/// values quoted as Go's `%q` quotes them, no trailing newline.
pub fn format_map<'a>(entries: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut pairs: Vec<_> = entries.collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn value_from(
    ctx: &EnvContext<'_>,
    c: &Container,
    from: &EnvVarSource,
    cache: &mut ObjectCache<'_>,
) -> Result<Option<String>, ConfigError> {
    let namespace = cache.namespace;
    if let Some(fs) = &from.field_ref {
        return field_value(ctx, fs).map(Some);
    }
    if let Some(fs) = &from.resource_field_ref {
        return resource_value(ctx, fs, Some(c)).map(Some);
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional == Some(true);
        let Some(cm) = cache.config_map(&r.name).await? else {
            return if optional {
                Ok(None)
            } else {
                Err(ConfigError::ConfigMapNotFound(r.name.clone()))
            };
        };
        return match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(ConfigError::ConfigMapKeyNotFound {
                namespace: namespace.to_string(),
                name: r.name.clone(),
                key: r.key.clone(),
            }),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional == Some(true);
        let Some(secret) = cache.secret(&r.name).await? else {
            return if optional {
                Ok(None)
            } else {
                Err(ConfigError::SecretNotFound(r.name.clone()))
            };
        };
        return match secret_data(secret).remove(&r.key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            None if optional => Ok(None),
            None => Err(ConfigError::SecretKeyNotFound {
                namespace: namespace.to_string(),
                name: r.name.clone(),
                key: r.key.clone(),
            }),
        };
    }
    if from.file_key_ref.is_some() {
        return Err(ConfigError::Invalid(format!(
            "container {:?}: fileKeyRef is not supported by this node",
            c.name
        )));
    }
    Ok(Some(String::new()))
}

/// The pod's namespace (`default` when unset, as the API server defaults it).
pub(crate) fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
}

fn find_container<'p>(pod: &'p Pod, name: &str) -> Option<&'p Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// Objects fetched once per resolution, so that one container reads one version of each.
struct ObjectCache<'o> {
    objects: &'o dyn ObjectSource,
    namespace: &'o str,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl<'o> ObjectCache<'o> {
    fn new(objects: &'o dyn ObjectSource, namespace: &'o str) -> Self {
        ObjectCache {
            objects,
            namespace,
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    async fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>, ConfigError> {
        if !self.config_maps.contains_key(name) {
            let got = self.objects.config_map(self.namespace, name).await?;
            self.config_maps.insert(name.to_string(), got);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }

    async fn secret(&mut self, name: &str) -> Result<Option<&Secret>, ConfigError> {
        if !self.secrets.contains_key(name) {
            let got = self.objects.secret(self.namespace, name).await?;
            self.secrets.insert(name.to_string(), got);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }
}

/// Variables in first-definition order; a redefinition replaces the value in place.
#[derive(Default)]
struct EnvList {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl EnvList {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }
}

fn clone_pair((k, v): (&String, &String)) -> (String, String) {
    (k.clone(), v.clone())
}

/// Secret values as strings (bytes that are not UTF-8 are replaced, env vars being strings).
fn secret_strings(secret: &Secret) -> Vec<(String, String)> {
    secret_data(secret)
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

/// Kubernetes' `IsEnvVarName`.
fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_');
    match chars.next() {
        Some(c) if ok_first(c) => chars.all(|c| ok_first(c) || c.is_ascii_digit()),
        _ => false,
    }
}

/// `base['key']` → `(base, key)`, as Kubernetes' `SplitMaybeSubscriptedPath`.
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (base, key) = inner.split_once("['")?;
    (!base.is_empty()).then_some((base, key))
}

fn expand_with<'e>(input: &str, lookup: impl Fn(&str) -> Option<&'e str>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' || i + 1 >= bytes.len() {
            i += 1;
            continue;
        }
        out.push_str(&input[checkpoint..i]);
        match bytes[i + 1] {
            b'$' => {
                out.push('$');
                i += 2;
            }
            b'(' => match input[i + 2..].find(')') {
                Some(len) => {
                    let name = &input[i + 2..i + 2 + len];
                    match lookup(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    i += 3 + len;
                }
                None => {
                    out.push_str("$(");
                    i += 2;
                }
            },
            // A `$` that starts nothing stays, and the next character is read normally.
            _ => {
                out.push('$');
                i += 1;
            }
        }
        checkpoint = i;
    }
    out.push_str(&input[checkpoint..]);
    out
}

fn ceil_div(n: i128, d: i128) -> i128 {
    let q = n.div_euclid(d);
    if n.rem_euclid(d) == 0 { q } else { q + 1 }
}

/// Go's `strconv.Quote`, for the characters that matter in labels and annotations. Rare
/// non-printing characters outside ASCII are escaped by a short list rather than Go's tables.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if !go_printable(c) => {
                let n = c as u32;
                if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn go_printable(c: char) -> bool {
    if c.is_ascii() {
        return true;
    }
    let format_char = matches!(c,
        '\u{ad}' | '\u{600}'..='\u{605}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}');
    !(c.is_control() || format_char || (c.is_whitespace() && c != ' '))
}

#[cfg(test)]
mod tests;
