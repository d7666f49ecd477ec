//! The routing table: which backend a request's host and path go to, computed from Ingresses,
//! IngressClasses, Services and EndpointSlices alone (pure), as ingress-nginx builds its
//! configuration.
//!
//! Which Ingresses are served:
//! - those of class `rudder` (`spec.ingressClassName`, or the legacy `kubernetes.io/ingress.class`
//!   annotation) or of any IngressClass whose `spec.controller` is `rudder.io/ingress`; class
//!   `rudder` is served even without an IngressClass object of that name;
//! - those without a class when one of Rudder's IngressClasses carries
//!   `ingressclass.kubernetes.io/is-default-class: "true"`, or when no IngressClass exists at all
//!   (a bare cluster works without one);
//! - no others: another controller's class, or no class while another controller's class is the
//!   default, is not ours.
//!
//! Hosts: a rule's host is exact (`foo.example.com`, compared case-blind) or a wildcard of one
//! label (`*.example.com` matches `a.example.com`, neither `example.com` nor `a.b.example.com`).
//! A request's host picks one rule set: the exact host's if any, else the wildcard's, else the
//! rules without a host. There is no fall-through between sets: a host with rules but no path
//! matching goes to the default backend (as an nginx `server` block has only its own locations).
//!
//! Paths: `Exact` matches the path as written; `Prefix` matches element-wise with a trailing
//! slash ignored (`/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`);
//! `ImplementationSpecific` (and a missing type) is treated as `Prefix`. The longest rule path
//! wins (a `Prefix` path counted without its trailing slash); at equal length `Exact` beats
//! `Prefix`. Rules of several Ingresses for one host merge; an equal host, path and type in two
//! Ingresses goes to the oldest (`metadata.creationTimestamp`, then namespace/name), as
//! ingress-nginx keeps the first Ingress that claimed a location. `spec.defaultBackend` of the
//! oldest served Ingress that has one takes what no rule matches.
//!
//! Backends: `service.port.number` is the Service port with that `port`, `.name` the one with
//! that name; its endpoints are the ready endpoints (`conditions.ready`, nil meaning ready) of
//! the Service's EndpointSlices on the slice port of the same name, pod IP and target port; no
//! traffic policy applies (ingress-nginx, too, sends to pod addresses directly). A missing
//! Service or port, an ExternalName Service or a `resource` backend gives a backend with no
//! endpoints and the reason, which the server answers 503 with.
//!
//! Canaries (ingress-nginx's `canary-weight`): an Ingress annotated `rudder.io/canary: "true"`
//! adds nothing of its own; each of its rules is attached to the primary rule with the same
//! host, path and type, and `rudder.io/canary-weight` (0 to 100, default 0) percent of that
//! rule's requests go to the canary's backend. A canary without a primary rule is ignored.
//!
//! TLS: `spec.tls[].hosts` of served Ingresses name the Secret (in the Ingress' namespace) whose
//! certificate answers those server names; the oldest Ingress wins a host named twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use crate::services::{SERVICE_NAME_LABEL, str_at};

/// The controller name Rudder's IngressClasses carry.
pub const CONTROLLER: &str = "rudder.io/ingress";
/// The class Rudder serves without an IngressClass object.
pub const CLASS: &str = "rudder";
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
pub const CANARY_ANNOTATION: &str = "rudder.io/canary";
pub const CANARY_WEIGHT_ANNOTATION: &str = "rudder.io/canary-weight";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    Exact,
    Prefix,
}

/// A Service port and where its traffic may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `namespace/name`.
    pub service: String,
    /// The port as the Ingress names it (a number or a name).
    pub port: String,
    /// Ready endpoints, sorted.
    pub endpoints: Vec<SocketAddr>,
    /// Why there are none, when that is not simply "none ready".
    pub problem: Option<String>,
}

impl Backend {
    /// `namespace/name:port`, as error pages and logs name it.
    pub fn id(&self) -> String {
        format!("{}:{}", self.service, self.port)
    }
}

/// Where a matched rule sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub backend: Backend,
    /// The Ingress the rule came from (`namespace/name`).
    pub ingress: String,
    /// A weighted canary: this percentage of requests goes to it.
    pub canary: Option<Canary>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    pub backend: Backend,
    pub ingress: String,
    /// 0 to 100.
    pub weight: u32,
}

/// One path rule of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    pub path: String,
    pub kind: PathKind,
    pub route: Route,
    /// (creationTimestamp, namespace/name) of its Ingress: the tie-break.
    age: (String, String),
}

impl PathRule {
    fn weight(&self) -> usize {
        match self.kind {
            PathKind::Exact => self.path.len(),
            PathKind::Prefix => self.path.trim_end_matches('/').len(),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self.kind {
            PathKind::Exact => self.path == path,
            PathKind::Prefix => prefix_matches(&self.path, path),
        }
    }

    /// Precedence: longer first, Exact before Prefix, older first.
    fn order_key(&self) -> (std::cmp::Reverse<usize>, PathKind, &(String, String)) {
        (std::cmp::Reverse(self.weight()), self.kind, &self.age)
    }
}

/// Kubernetes' element-wise prefix match, trailing slashes ignored.
pub fn prefix_matches(rule: &str, path: &str) -> bool {
    let rule = rule.trim_end_matches('/');
    if rule.is_empty() {
        return true;
    }
    match path.strip_prefix(rule) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A host (pattern) served over TLS with the certificate of a Secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TlsHost {
    /// Exact or `*.` wildcard, lower case.
    pub host: String,
    pub namespace: String,
    pub secret: String,
    pub ingress: String,
}

/// The whole table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    exact: BTreeMap<String, Vec<PathRule>>,
    /// Keyed by the suffix after `*.`.
    wildcard: BTreeMap<String, Vec<PathRule>>,
    any_host: Vec<PathRule>,
    default_backend: Option<Route>,
    /// Sorted by host, one entry per host.
    pub tls: Vec<TlsHost>,
    /// `namespace/name` of every Ingress served, sorted.
    pub served: Vec<String>,
}

/// What [`Table::route`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Match<'a> {
    Rule(&'a PathRule),
    Default(&'a Route),
    None,
}

impl Match<'_> {
    pub fn route(&self) -> Option<&Route> {
        match self {
            Match::Rule(r) => Some(&r.route),
            Match::Default(r) => Some(r),
            Match::None => None,
        }
    }
}

impl Table {
    /// The route for a request to `host` (any case, with or without a port) and `path` (the
    /// URI's path, without the query).
    pub fn route(&self, host: &str, path: &str) -> Match<'_> {
        let host = normalize_host(host);
        let rules = self
            .exact
            .get(&host)
            .or_else(|| {
                let (first, rest) = host.split_once('.')?;
                (!first.is_empty()).then_some(())?;
                self.wildcard.get(rest)
            })
            .unwrap_or(&self.any_host);
        if let Some(rule) = rules.iter().find(|r| r.matches(path)) {
            return Match::Rule(rule);
        }
        match &self.default_backend {
            Some(d) => Match::Default(d),
            None => Match::None,
        }
    }

    /// The TLS entry for a server name: exact, else a one-label wildcard.
    pub fn tls_for(&self, name: &str) -> Option<&TlsHost> {
        let name = normalize_host(name);
        let find = |h: &str| {
            self.tls
                .binary_search_by(|t| t.host.as_str().cmp(h))
                .ok()
                .map(|i| &self.tls[i])
        };
        find(&name).or_else(|| {
            let (first, rest) = name.split_once('.')?;
            (!first.is_empty()).then_some(())?;
            find(&format!("*.{rest}"))
        })
    }

    /// Every backend the table can send to (rules, canaries, the default), for diagnostics.
    pub fn backends(&self) -> impl Iterator<Item = &Backend> {
        let rules = self
            .exact
            .values()
            .chain(self.wildcard.values())
            .chain(std::iter::once(&self.any_host))
            .flatten()
            .map(|r| &r.route);
        rules
            .chain(self.default_backend.iter())
            .flat_map(|r| std::iter::once(&r.backend).chain(r.canary.iter().map(|c| &c.backend)))
    }
}

/// Lower case, without a port or a trailing dot.
pub fn normalize_host(host: &str) -> String {
    let h = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// Ready endpoints of every Service port: (namespace, service) → slice port name → addresses.
type Endpoints = HashMap<(String, String), BTreeMap<String, BTreeSet<SocketAddr>>>;

fn ready_endpoints(slices: &[&Value]) -> Endpoints {
    let mut out: Endpoints = HashMap::new();
    for slice in slices {
        let Some(svc) = slice
            .pointer("/metadata/labels")
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let ns = str_at(slice, "/metadata/namespace");
        let entry = out.entry((ns.into(), svc.into())).or_default();
        for port in array(slice, "/ports") {
            let Some(number) = port.get("port").and_then(Value::as_u64) else {
                continue;
            };
            let Ok(number) = u16::try_from(number) else {
                continue;
            };
            let name = str_at(port, "/name");
            let addrs = entry.entry(name.to_string()).or_default();
            for ep in array(slice, "/endpoints") {
                let ready = ep
                    .pointer("/conditions/ready")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                for a in array(ep, "/addresses") {
                    if let Some(ip) = a.as_str().and_then(|a| a.parse::<IpAddr>().ok()) {
                        addrs.insert(SocketAddr::new(ip, number));
                    }
                }
            }
        }
    }
    out
}

fn array<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Which classes are Rudder's, and whether a class-less Ingress is.
struct Classes {
    ours: BTreeSet<String>,
    classless: bool,
}

fn classes(classes: &[&Value]) -> Classes {
    let mut ours = BTreeSet::from([CLASS.to_string()]);
    let mut default_ours = false;
    for c in classes {
        let name = str_at(c, "/metadata/name");
        let is_default = c
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
            .and_then(Value::as_str)
            == Some("true");
        if str_at(c, "/spec/controller") == CONTROLLER {
            ours.insert(name.to_string());
            default_ours |= is_default;
        } else if name == CLASS {
            // Someone else's controller owns the name.
            ours.remove(CLASS);
        }
    }
    Classes {
        ours,
        classless: default_ours || classes.is_empty(),
    }
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn served_by(ingress: &Value, c: &Classes) -> bool {
    let class = ingress
        .pointer("/spec/ingressClassName")
        .and_then(Value::as_str)
        .or_else(|| annotation(ingress, LEGACY_CLASS_ANNOTATION));
    match class {
        Some(name) => c.ours.contains(name),
        None => c.classless,
    }
}

/// Resolves an Ingress backend (`spec.defaultBackend` or a path's `backend`).
fn backend(
    ns: &str,
    b: &Value,
    services: &HashMap<(&str, &str), &Value>,
    eps: &Endpoints,
) -> Backend {
    let name = str_at(b, "/service/name");
    let (port, by_number) = match b.pointer("/service/port/number").and_then(Value::as_u64) {
        Some(n) => (n.to_string(), true),
        None => (str_at(b, "/service/port/name").to_string(), false),
    };
    let mut out = Backend {
        service: format!("{ns}/{name}"),
        port: port.clone(),
        endpoints: Vec::new(),
        problem: None,
    };
    if name.is_empty() {
        out.problem = Some(if b.get("resource").is_some() {
            "resource backends are not supported".into()
        } else {
            "the backend names no service".into()
        });
        return out;
    }
    let Some(svc) = services.get(&(ns, name)) else {
        out.problem = Some(format!("service {ns}/{name} does not exist"));
        return out;
    };
    if str_at(svc, "/spec/type") == "ExternalName" {
        out.problem = Some(format!(
            "service {ns}/{name} is an ExternalName service, which Ingress does not forward to"
        ));
        return out;
    }
    let svc_port = array(svc, "/spec/ports").find(|p| {
        if by_number {
            p.get("port").and_then(Value::as_u64).map(|n| n.to_string()) == Some(port.clone())
        } else {
            str_at(p, "/name") == port
        }
    });
    let Some(svc_port) = svc_port else {
        out.problem = Some(format!("service {ns}/{name} has no port {port}"));
        return out;
    };
    let port_name = str_at(svc_port, "/name");
    out.endpoints = eps
        .get(&(ns.to_string(), name.to_string()))
        .and_then(|m| m.get(port_name))
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    out
}

/// One served Ingress, read once.
struct Served<'a> {
    obj: &'a Value,
    ns: &'a str,
    key: String,
    age: (String, String),
    canary: Option<u32>,
}

/// The table from all objects.
pub fn build(
    ingresses: &[&Value],
    ingress_classes: &[&Value],
    services: &[&Value],
    slices: &[&Value],
) -> Table {
    let c = classes(ingress_classes);
    let eps = ready_endpoints(slices);
    let services: HashMap<(&str, &str), &Value> = services
        .iter()
        .map(|s| {
            (
                (
                    str_at(s, "/metadata/namespace"),
                    str_at(s, "/metadata/name"),
                ),
                *s,
            )
        })
        .collect();
    let mut served: Vec<Served> = ingresses
        .iter()
        .filter(|i| served_by(i, &c))
        .map(|i| {
            let ns = str_at(i, "/metadata/namespace");
            let key = format!("{ns}/{}", str_at(i, "/metadata/name"));
            let canary = (annotation(i, CANARY_ANNOTATION) == Some("true")).then(|| {
                annotation(i, CANARY_WEIGHT_ANNOTATION)
                    .and_then(|w| w.trim().parse::<u32>().ok())
                    .unwrap_or(0)
                    .min(100)
            });
            Served {
                obj: i,
                ns,
                age: (
                    str_at(i, "/metadata/creationTimestamp").to_string(),
                    key.clone(),
                ),
                key,
                canary,
            }
        })
        .collect();
    // Oldest first: the first claim of a host, path or TLS name is kept.
    served.sort_by(|a, b| a.age.cmp(&b.age));

    let mut table = Table::default();
    // (host or "" for any, path, kind) of the rules already claimed, for canaries and dedup.
    let mut claimed: BTreeSet<(String, String, PathKind)> = BTreeSet::new();
    let mut tls: BTreeMap<String, TlsHost> = BTreeMap::new();
    for ing in served.iter().filter(|s| s.canary.is_none()) {
        table.served.push(ing.key.clone());
        if table.default_backend.is_none()
            && let Some(d) = ing.obj.pointer("/spec/defaultBackend")
        {
            table.default_backend = Some(Route {
                backend: backend(ing.ns, d, &services, &eps),
                ingress: ing.key.clone(),
                canary: None,
            });
        }
        for t in array(ing.obj, "/spec/tls") {
            let secret = str_at(t, "/secretName");
            if secret.is_empty() {
                continue;
            }
            for h in array(t, "/hosts").filter_map(Value::as_str) {
                tls.entry(normalize_host(h)).or_insert_with(|| TlsHost {
                    host: normalize_host(h),
                    namespace: ing.ns.to_string(),
                    secret: secret.to_string(),
                    ingress: ing.key.clone(),
                });
            }
        }
        for (host, path, kind, b) in rules(ing.obj) {
            if !claimed.insert((host.clone(), path.clone(), kind)) {
                continue;
            }
            let rule = PathRule {
                path,
                kind,
                route: Route {
                    backend: backend(ing.ns, b, &services, &eps),
                    ingress: ing.key.clone(),
                    canary: None,
                },
                age: ing.age.clone(),
            };
            table.rules_mut(&host).push(rule);
        }
    }
    for ing in served.iter() {
        let Some(weight) = ing.canary else { continue };
        table.served.push(ing.key.clone());
        for (host, path, kind, b) in rules(ing.obj) {
            let Some(rule) = table
                .rules_mut(&host)
                .iter_mut()
                .find(|r| r.path == path && r.kind == kind)
            else {
                continue;
            };
            if rule.route.canary.is_none() {
                rule.route.canary = Some(Canary {
                    backend: backend(ing.ns, b, &services, &eps),
                    ingress: ing.key.clone(),
                    weight,
                });
            }
        }
    }
    for rules in table
        .exact
        .values_mut()
        .chain(table.wildcard.values_mut())
        .chain(std::iter::once(&mut table.any_host))
    {
        rules.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    }
    table.tls = tls.into_values().collect();
    table.served.sort();
    table
}

impl Table {
    fn rules_mut(&mut self, host: &str) -> &mut Vec<PathRule> {
        if host.is_empty() {
            &mut self.any_host
        } else if let Some(suffix) = host.strip_prefix("*.") {
            self.wildcard.entry(suffix.to_string()).or_default()
        } else {
            self.exact.entry(host.to_string()).or_default()
        }
    }
}

/// An Ingress' path rules: (normalized host or "", path, kind, backend).
fn rules(ingress: &Value) -> Vec<(String, String, PathKind, &Value)> {
    let mut out = Vec::new();
    for rule in array(ingress, "/spec/rules") {
        let host = normalize_host(str_at(rule, "/host"));
        for p in array(rule, "/http/paths") {
            let Some(b) = p.get("backend") else { continue };
            let kind = match str_at(p, "/pathType") {
                "Exact" => PathKind::Exact,
                _ => PathKind::Prefix,
            };
            let mut path = str_at(p, "/path").to_string();
            if path.is_empty() {
                path = "/".into();
            }
            out.push((host.clone(), path, kind, b));
        }
    }
    out
}

#[cfg(test)]
mod tests;
