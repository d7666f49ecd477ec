//! Small checks every kind's validation is built from: a field path builder and one function per
//! recurring rule (enumerations, ports, counts, int-or-percent, names, labels, quantities,
//! immutability), each pushing Kubernetes' wording onto an error list.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{FieldError, NameRule, check_name};
use crate::quantity::{Quantity, parse_quantity};
use crate::selector::{LabelSelector, is_dns_subdomain, validate_key, validate_value};

/// The error list every check appends to.
pub(crate) type Errs = Vec<FieldError>;

/// A field path as Kubernetes prints it: `spec.template.spec.containers[0].ports[1].name`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Path(String);

impl Path {
    /// A path starting at `root` (empty for the object itself).
    pub fn new(root: &str) -> Self {
        Path(root.to_string())
    }

    /// `path.name`.
    pub fn child(&self, name: &str) -> Path {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    /// `path[i]`.
    pub fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }

    /// `path[key]`, for map entries.
    pub fn key(&self, key: &str) -> Path {
        Path(format!("{}[{key}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&Path> for String {
    fn from(p: &Path) -> String {
        p.0.clone()
    }
}

impl From<Path> for String {
    fn from(p: Path) -> String {
        p.0
    }
}

pub(crate) const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";

/// `value` must be one of `supported`.
pub(crate) fn enum_value(errs: &mut Errs, path: &Path, value: &str, supported: &[&str]) {
    if !supported.contains(&value) {
        errs.push(FieldError::not_supported(path, value, supported));
    }
}

/// An optional enumeration: absent is fine, present must be supported.
pub(crate) fn opt_enum(errs: &mut Errs, path: &Path, value: Option<&str>, supported: &[&str]) {
    if let Some(v) = value {
        enum_value(errs, path, v, supported);
    }
}

/// A required string: reports `Required value` when absent or empty, else returns it.
pub(crate) fn required_str<'a>(
    errs: &mut Errs,
    path: &Path,
    value: Option<&'a str>,
) -> Option<&'a str> {
    match value {
        Some(v) if !v.is_empty() => Some(v),
        _ => {
            errs.push(FieldError::required(path));
            None
        }
    }
}

/// A TCP/UDP port number.
pub(crate) fn port_number(errs: &mut Errs, path: &Path, port: i32) {
    if !(1..=65535).contains(&port) {
        errs.push(FieldError::invalid(path, port, PORT_RANGE_MSG));
    }
}

/// A count or duration that must be at least `min`.
pub(crate) fn at_least(errs: &mut Errs, path: &Path, value: Option<impl Into<i64>>, min: i64) {
    if let Some(v) = value.map(Into::into)
        && v < min
    {
        errs.push(FieldError::invalid(
            path,
            v,
            format!("must be greater than or equal to {min}"),
        ));
    }
}

/// Shorthand for the common `>= 0` rule.
pub(crate) fn non_negative(errs: &mut Errs, path: &Path, value: Option<impl Into<i64>>) {
    at_least(errs, path, value, 0);
}

/// An int-or-string that is a non-negative integer or a percentage (`25%`), optionally at most
/// 100%. Returns `(value, is_percent)` when valid.
pub(crate) fn int_or_percent(
    errs: &mut Errs,
    path: &Path,
    v: &IntOrString,
    at_most_100_percent: bool,
) -> Option<(i64, bool)> {
    let (n, pct) = match v {
        IntOrString::Int(i) => (i64::from(*i), false),
        IntOrString::String(s) => {
            let parsed = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<i64>().ok());
            match parsed {
                Some(n) => (n, true),
                None => {
                    errs.push(FieldError::invalid(
                        path,
                        s,
                        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    ));
                    return None;
                }
            }
        }
    };
    if n < 0 {
        errs.push(FieldError::invalid(
            path,
            n,
            "must be greater than or equal to 0",
        ));
        return None;
    }
    if pct && at_most_100_percent && n > 100 {
        errs.push(FieldError::invalid(
            path,
            format!("{n}%"),
            "must not be greater than 100%",
        ));
        return None;
    }
    Some((n, pct))
}

/// Kubernetes' `IsValidPortName` (IANA service name): the reason when it is not one.
pub(crate) fn iana_svc_name(name: &str) -> Result<(), &'static str> {
    if name.len() > 15 {
        Err("must be no more than 15 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Err("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    } else if name.contains("--") {
        Err("must not contain consecutive hyphens")
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        Err("must contain at least one letter (a-z)")
    } else if name.starts_with('-') || name.ends_with('-') {
        Err("must not begin or end with a hyphen")
    } else {
        Ok(())
    }
}

/// A named port (container port name, target port name).
pub(crate) fn port_name(errs: &mut Errs, path: &Path, name: &str) {
    if let Err(detail) = iana_svc_name(name) {
        errs.push(FieldError::invalid(path, name, detail));
    }
}

/// A port given by number or by IANA name.
pub(crate) fn port_number_or_name(errs: &mut Errs, path: &Path, port: &IntOrString) {
    match port {
        IntOrString::Int(n) => port_number(errs, path, *n),
        IntOrString::String(s) => port_name(errs, path, s),
    }
}

/// An RFC 1123 label.
pub(crate) fn dns_label(errs: &mut Errs, path: &Path, value: &str) {
    if let Err(detail) = check_name(value, NameRule::Label) {
        errs.push(FieldError::invalid(path, value, detail));
    }
}

/// An RFC 1123 subdomain.
pub(crate) fn dns_subdomain(errs: &mut Errs, path: &Path, value: &str) {
    if let Err(detail) = check_name(value, NameRule::Subdomain) {
        errs.push(FieldError::invalid(path, value, detail));
    }
}

/// Records `value` as seen, reporting a duplicate if it already was.
pub(crate) fn unique(errs: &mut Errs, path: &Path, value: &str, seen: &mut HashSet<String>) {
    if !seen.insert(value.to_string()) {
        errs.push(FieldError::duplicate(path, value));
    }
}

/// A map of labels (or label-like pairs: node selectors, service selectors).
pub(crate) fn label_map(errs: &mut Errs, path: &Path, labels: Option<&BTreeMap<String, String>>) {
    for (k, v) in labels.into_iter().flatten() {
        if let Err(e) = validate_key(k) {
            errs.push(FieldError::invalid(path, k, e.0));
        }
        if let Err(e) = validate_value(v) {
            errs.push(FieldError::invalid(path.key(k), v, e.0));
        }
    }
}

/// A `LabelSelector` object; returns the parsed selector when valid.
pub(crate) fn label_selector(
    errs: &mut Errs,
    path: &Path,
    sel: &metav1::LabelSelector,
) -> Option<LabelSelector> {
    match LabelSelector::from_object(sel) {
        Ok(s) => Some(s),
        Err(e) => {
            errs.push(FieldError::invalid(path, selector_string(sel), e.0));
            None
        }
    }
}

/// A selector as the one-line string people write, for error messages.
pub(crate) fn selector_string(sel: &metav1::LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(format!("{} {} ({values})", e.key, e.operator));
    }
    parts.join(",")
}

/// Labels as `k=v,k2=v2`, for error messages.
pub(crate) fn labels_string(labels: Option<&BTreeMap<String, String>>) -> String {
    labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A field that may not change on update.
pub(crate) fn immutable<T: PartialEq>(errs: &mut Errs, path: &Path, new: &T, old: &T) {
    if new != old {
        errs.push(FieldError::immutable(path));
    }
}

/// A resource quantity; returns its value when it parses.
pub(crate) fn quantity(errs: &mut Errs, path: &Path, q: &K8sQuantity) -> Option<Quantity> {
    match parse_quantity(&q.0) {
        Ok(v) => Some(v),
        Err(e) => {
            // The quantity error already names the input; keep only its reason.
            let msg = e.to_string();
            let reason = msg
                .split_once(" is invalid: ")
                .map_or(msg.as_str(), |(_, r)| r);
            errs.push(FieldError::invalid(path, &q.0, reason));
            None
        }
    }
}

/// A resource list (requests or limits): every quantity parses and is not negative.
pub(crate) fn resource_list(
    errs: &mut Errs,
    path: &Path,
    list: Option<&BTreeMap<String, K8sQuantity>>,
) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::new();
    for (name, q) in list.into_iter().flatten() {
        let p = path.key(name);
        if let Err(e) = validate_key(name) {
            errs.push(FieldError::invalid(&p, name, e.0));
        }
        if let Some(v) = quantity(errs, &p, q) {
            if v.is_negative() {
                errs.push(FieldError::invalid(
                    &p,
                    &q.0,
                    "must be greater than or equal to 0",
                ));
            } else {
                out.insert(name.clone(), v);
            }
        }
    }
    out
}

/// Exactly one of a group of alternatives (`set` names the ones present): none is `Required`
/// at `path`, each extra one is `Forbidden` at its own path.
pub(crate) fn exactly_one<S: AsRef<str>>(errs: &mut Errs, path: &Path, set: &[S], what: &str) {
    match set {
        [] => errs.push(FieldError::required(path)),
        [_] => {}
        [_, rest @ ..] => {
            for s in rest {
                errs.push(FieldError::forbidden(
                    path.child(s.as_ref()),
                    format!("may not specify more than 1 {what}"),
                ));
            }
        }
    }
}

/// How many of a one-of group are set; used for "exactly one of" rules.
pub(crate) fn count_set(flags: &[bool]) -> usize {
    flags.iter().filter(|b| **b).count()
}

pub(crate) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// `address/prefix` with a prefix no longer than the address.
pub(crate) fn is_cidr(s: &str) -> bool {
    let Some((ip, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    prefix.bytes().all(|b| b.is_ascii_digit()) && prefix.parse::<u8>().is_ok_and(|p| p <= max)
}

/// A DNS name that may start with a `*.` wildcard label (Ingress hosts).
pub(crate) fn is_wildcard_dns_subdomain(s: &str) -> bool {
    match s.strip_prefix("*.") {
        Some(rest) => is_dns_subdomain(rest),
        None => is_dns_subdomain(s),
    }
}

/// Test support: decodes `v` (and `old`) as `K`, validates, and renders each error.
#[cfg(test)]
pub(crate) fn validate_json<K: super::Validate + serde::de::DeserializeOwned>(
    v: serde_json::Value,
    old: Option<serde_json::Value>,
) -> Vec<String> {
    let new: K = serde_json::from_value(v).expect("test object decodes");
    let old: Option<K> = old.map(|o| serde_json::from_value(o).expect("old test object decodes"));
    new.validate(old.as_ref())
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = Path::new("spec")
            .child("containers")
            .index(0)
            .child("resources")
            .child("limits")
            .key("cpu");
        assert_eq!(p.as_str(), "spec.containers[0].resources.limits[cpu]");
        assert_eq!(Path::new("").child("data").as_str(), "data");
    }

    #[test]
    fn int_or_percent_rules() {
        let p = Path::new("x");
        let mut errs = Vec::new();
        assert_eq!(
            int_or_percent(&mut errs, &p, &IntOrString::String("25%".into()), true),
            Some((25, true))
        );
        assert_eq!(
            int_or_percent(&mut errs, &p, &IntOrString::Int(3), true),
            Some((3, false))
        );
        assert!(errs.is_empty());
        assert_eq!(
            int_or_percent(&mut errs, &p, &IntOrString::String("120%".into()), true),
            None
        );
        assert_eq!(
            int_or_percent(&mut errs, &p, &IntOrString::String("120%".into()), false),
            Some((120, true))
        );
        assert_eq!(
            int_or_percent(&mut errs, &p, &IntOrString::String("x%".into()), false),
            None
        );
        assert_eq!(
            int_or_percent(&mut errs, &p, &IntOrString::Int(-1), false),
            None
        );
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs[0],
            "x: Invalid value: \"120%\": must not be greater than 100%"
        );
        assert!(msgs[1].starts_with("x: Invalid value: \"x%\": a valid percent string"));
        assert_eq!(
            msgs[2],
            "x: Invalid value: -1: must be greater than or equal to 0"
        );
    }

    #[test]
    fn iana_names_and_addresses() {
        assert!(iana_svc_name("http").is_ok());
        assert!(iana_svc_name("web-2").is_ok());
        assert_eq!(
            iana_svc_name("8080"),
            Err("must contain at least one letter (a-z)")
        );
        assert_eq!(
            iana_svc_name("Http"),
            Err("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
        );
        assert_eq!(
            iana_svc_name("a--b"),
            Err("must not contain consecutive hyphens")
        );
        assert_eq!(
            iana_svc_name("-ab"),
            Err("must not begin or end with a hyphen")
        );
        assert_eq!(
            iana_svc_name("abcdefghijklmnop"),
            Err("must be no more than 15 characters")
        );
        assert!(is_cidr("10.244.0.0/24") && is_cidr("2001:db8::/64"));
        assert!(!is_cidr("10.244.0.0/33") && !is_cidr("10.244.0.0") && !is_cidr("x/1"));
        assert!(
            is_wildcard_dns_subdomain("*.example.com") && !is_wildcard_dns_subdomain("a.*.com")
        );
    }
}
