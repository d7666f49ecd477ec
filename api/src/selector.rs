//! Label and field selectors, with Kubernetes' string syntax and semantics.
//!
//! Label selector strings: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, joined
//! by commas (all must hold). `LabelSelector` objects (`matchLabels`, `matchExpressions`) convert
//! to the same [`LabelSelector`]. An empty selector matches everything.
//!
//! Field selectors: `f=v`, `f==v`, `f!=v` joined by commas, on the fields a kind declares
//! selectable (see the registry). Values may escape `\,` `\=` `\\`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

/// A selector that could not be parsed or converted, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// One requirement on a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    pub fn key(&self) -> &str {
        match self {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k,
        }
    }

    fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            Requirement::Equals(k, v) => get(k).as_deref() == Some(v.as_str()),
            // As Kubernetes: `a!=b` also matches objects without label `a`.
            Requirement::NotEquals(k, v) => get(k).as_deref() != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
        match self {
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", set(vs)),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", set(vs)),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

/// A conjunction of label requirements. `Default` is the empty selector (matches everything);
/// [`LabelSelector::nothing`] matches nothing (a nil `LabelSelector` in some APIs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty() && !self.nothing
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Parses Kubernetes' selector string syntax.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut p = Parser { s, pos: 0 };
        let mut requirements = Vec::new();
        p.skip_ws();
        if p.at_end() {
            return Ok(Self::default());
        }
        loop {
            requirements.push(p.requirement()?);
            p.skip_ws();
            if p.at_end() {
                break;
            }
            p.expect(',')?;
        }
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `LabelSelector` object (`matchLabels` + `matchExpressions`).
    pub fn from_object(sel: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            validate_key(k)?;
            validate_value(v)?;
            requirements.push(Requirement::Equals(k.clone(), v.clone()));
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            validate_key(&e.key)?;
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let r = match e.operator.as_str() {
                "In" | "NotIn" => {
                    if values.is_empty() {
                        return Err(SelectorError(format!(
                            "matchExpressions[{i}].values: must be specified when `operator` is 'In' or 'NotIn'"
                        )));
                    }
                    for v in &values {
                        validate_value(v)?;
                    }
                    if e.operator == "In" {
                        Requirement::In(e.key.clone(), values)
                    } else {
                        Requirement::NotIn(e.key.clone(), values)
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if !values.is_empty() {
                        return Err(SelectorError(format!(
                            "matchExpressions[{i}].values: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                        )));
                    }
                    if e.operator == "Exists" {
                        Requirement::Exists(e.key.clone())
                    } else {
                        Requirement::DoesNotExist(e.key.clone())
                    }
                }
                other => {
                    return Err(SelectorError(format!(
                        "matchExpressions[{i}].operator: Unsupported value: \"{other}\": supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\""
                    )));
                }
            };
            requirements.push(r);
        }
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Whether labels given as a lookup function satisfy every requirement.
    pub fn matches_fn(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(get))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_fn(&|k| labels.get(k).cloned())
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        write!(f, "{}", parts.join(","))
    }
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_`, `.`, beginning and ending alphanumeric.
pub fn validate_key(k: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !is_dns_subdomain(p))
    {
        return Err(SelectorError(format!(
            "invalid label key \"{k}\": prefix part must be a DNS subdomain"
        )));
    }
    if name.is_empty() || name.len() > 63 || !is_qualified_name_part(name) {
        return Err(SelectorError(format!(
            "invalid label key \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)"
        )));
    }
    Ok(())
}

/// Checks a label value: empty, or at most 63 characters like a key's name part.
pub fn validate_value(v: &str) -> Result<(), SelectorError> {
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > 63 || !is_qualified_name_part(v) {
        return Err(SelectorError(format!(
            "invalid label value \"{v}\": must be 63 characters or less and must be empty or begin and end with an alphanumeric character with '-', '_', '.' between"
        )));
    }
    Ok(())
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// RFC 1123 subdomain: lowercase alphanumeric labels with `-`, separated by `.`.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label_body)
}

/// RFC 1123 label, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_label_body(s)
}

fn is_dns_label_body(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
        // Advance by the character's UTF-8 width: a multi-byte space must not split a character.
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }

    fn expect(&mut self, c: char) -> Result<(), SelectorError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            Ok(())
        } else {
            Err(self.err(&format!("expected '{c}'")))
        }
    }

    fn err(&self, what: &str) -> SelectorError {
        let found = match self.peek() {
            Some(c) => format!("'{c}'"),
            None => "end of input".into(),
        };
        SelectorError(format!(
            "unable to parse requirement: {what} at position {} of \"{}\", found {found}",
            self.pos, self.s
        ))
    }

    /// An identifier: key or value characters.
    fn word(&mut self) -> &str {
        self.skip_ws();
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/') {
                self.pos += 1;
            } else {
                break;
            }
        }
        &self.s[start..self.pos]
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        self.skip_ws();
        if self.peek() == Some('!') {
            self.pos += 1;
            let key = self.word().to_string();
            if key.is_empty() {
                return Err(self.err("expected a label key after '!'"));
            }
            validate_key(&key)?;
            return Ok(Requirement::DoesNotExist(key));
        }
        let key = self.word().to_string();
        if key.is_empty() {
            return Err(self.err("expected a label key"));
        }
        validate_key(&key)?;
        self.skip_ws();
        let rest = &self.s[self.pos..];
        if rest.is_empty() || rest.starts_with(',') {
            return Ok(Requirement::Exists(key));
        }
        if let Some(r) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
            self.pos = self.s.len() - r.len();
            let v = self.word().to_string();
            validate_value(&v)?;
            return Ok(Requirement::Equals(key, v));
        }
        if let Some(r) = rest.strip_prefix("!=") {
            self.pos = self.s.len() - r.len();
            let v = self.word().to_string();
            validate_value(&v)?;
            return Ok(Requirement::NotEquals(key, v));
        }
        let op = self.word().to_string();
        let negate = match op.as_str() {
            "in" => false,
            "notin" => true,
            _ => return Err(self.err("expected one of '=', '==', '!=', 'in', 'notin'")),
        };
        self.expect('(')?;
        self.skip_ws();
        if self.peek() == Some(')') {
            return Err(self.err("for 'in', 'notin' operators, values set can't be empty"));
        }
        let mut values = BTreeSet::new();
        loop {
            let v = self.word().to_string();
            validate_value(&v)?;
            values.insert(v);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.err("expected ',' or ')'")),
            }
        }
        Ok(if negate {
            Requirement::NotIn(key, values)
        } else {
            Requirement::In(key, values)
        })
    }
}

/// One field requirement: `field=value` or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub negate: bool,
}

/// A conjunction of field requirements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Parses `a=b,c!=d`; `\` escapes `,`, `=`, `!` and `\` in values.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_unescaped(s, ',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, value, negate) = if let Some((f, v)) = split_once_unescaped(part, "!=") {
                (f, v, true)
            } else if let Some((f, v)) = split_once_unescaped(part, "==") {
                (f, v, false)
            } else if let Some((f, v)) = split_once_unescaped(part, "=") {
                (f, v, false)
            } else {
                return Err(SelectorError(format!(
                    "invalid field selector: \"{part}\": expected field=value, field==value or field!=value"
                )));
            };
            let field = field.trim();
            if field.is_empty() {
                return Err(SelectorError(format!(
                    "invalid field selector: \"{part}\": empty field name"
                )));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                value: unescape(value.trim()),
                negate,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Checks that every field is one `allowed` says a kind can select on.
    pub fn check_fields(
        &self,
        allowed: &dyn Fn(&str) -> bool,
        kind: &str,
    ) -> Result<(), SelectorError> {
        for r in &self.requirements {
            if !allowed(&r.field) {
                return Err(SelectorError(format!(
                    "field label not supported: \"{}\" for kind {kind}",
                    r.field
                )));
            }
        }
        Ok(())
    }

    pub fn matches(&self, get: &dyn Fn(&str) -> String) -> bool {
        self.requirements
            .iter()
            .all(|r| (get(&r.field) == r.value) != r.negate)
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

fn split_once_unescaped<'a>(s: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        if s[i..].starts_with(op) {
            return Some((&s[..i], &s[i + op.len()..]));
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_every_operator() {
        let s =
            LabelSelector::parse("app=web, tier in (a, b),!canary,env!=prod,track notin (x),zone")
                .unwrap();
        assert_eq!(s.requirements().len(), 6);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("zone", "z")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("zone", "z"),
            ("canary", "")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c"), ("zone", "z")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("zone", "z"),
            ("env", "prod")
        ])));
        assert!(LabelSelector::parse("").unwrap().matches(&labels(&[])));
        assert_eq!(LabelSelector::parse("a==b").unwrap().to_string(), "a=b");
    }

    #[test]
    fn rejects_bad_selectors() {
        for bad in ["a=(", "a in (b", "=b", "a b", "a in ()", "-a=b", "a=b,"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Running").unwrap();
        let get = |k: &str| match k {
            "spec.nodeName" => "n1".to_string(),
            "status.phase" => "Pending".to_string(),
            _ => String::new(),
        };
        assert!(f.matches(&get));
        let f = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert_eq!(f.requirements[0].value, "a,b");
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
