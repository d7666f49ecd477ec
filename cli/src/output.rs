//! `-o` formats and `--sort-by`, as kubectl's `get` has them.
//!
//! - `-o jsonpath=TEMPLATE` / `-o jsonpath-file=FILE`: the template is applied to the object
//!   when one object was asked for by name, else to a `kind: List` holding every object (so
//!   templates say `{.items[*]...}`), as kubectl does. Nothing is added to the output (no
//!   newline).
//! - `-o custom-columns=HEADER:PATH,...` / `-o custom-columns-file=FILE` (first line headers,
//!   second line paths, separated by spaces): one table over all objects; paths are kubectl's
//!   relaxed form (`.a.b`, `a.b`, `{.a.b}`); several results are joined with `,`; none is
//!   `<none>`.
//! - `--sort-by=PATH` orders objects by the first value the path selects: objects without one
//!   first, then numbers numerically, strings that are both quantities (`500m`, `2Gi`) by
//!   value, other strings in natural order (`pod-2` before `pod-10`), `false` before `true`.
//!   The sort is stable, so equal keys keep the server's (name) order.

use std::cmp::Ordering;

use serde_json::Value;

use crate::error::{CliError, Result};
use crate::jsonpath::{self, Path, Template};
use crate::printers::Table;

/// A parsed `-o` value.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Table { wide: bool },
    Json,
    Yaml,
    Name,
    JsonPath { template: Template, source: String },
    CustomColumns(Vec<CustomColumn>),
}

/// One `HEADER:PATH` of `-o custom-columns`.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomColumn {
    pub header: String,
    pub path: Path,
}

const FORMATS: &str =
    "custom-columns,custom-columns-file,json,jsonpath,jsonpath-file,name,wide,yaml";

impl Output {
    pub fn parse(o: Option<&str>) -> Result<Self> {
        let o = o.unwrap_or("");
        let (format, arg) = match o.split_once('=') {
            Some((f, a)) => (f, Some(a)),
            None => (o, None),
        };
        Ok(match (format, arg) {
            ("", None) => Output::Table { wide: false },
            ("wide", None) => Output::Table { wide: true },
            ("json", None) => Output::Json,
            ("yaml", None) => Output::Yaml,
            ("name", None) => Output::Name,
            ("jsonpath", a) => jsonpath_output(a.unwrap_or(""))?,
            ("jsonpath-file", a) => jsonpath_output(&read_template(a.unwrap_or(""))?)?,
            ("custom-columns", a) => Output::CustomColumns(parse_custom_columns(a.unwrap_or(""))?),
            ("custom-columns-file", a) => {
                Output::CustomColumns(parse_custom_columns_file(&read_template(a.unwrap_or(""))?)?)
            }
            _ => {
                return Err(CliError::msg(format!(
                    "unable to match a printer suitable for the output format \"{o}\", allowed formats are: {FORMATS}"
                )));
            }
        })
    }

    /// JSON, YAML and JSONPath print one object as itself and several as a `List`.
    pub fn is_structured(&self) -> bool {
        matches!(self, Output::Json | Output::Yaml | Output::JsonPath { .. })
    }
}

fn read_template(path: &str) -> Result<String> {
    if path.is_empty() {
        return Err(CliError::msg(
            "template format specified but no template file given",
        ));
    }
    std::fs::read_to_string(path)
        .map_err(|e| CliError::msg(format!("error reading template {path}, {e}")))
}

fn jsonpath_output(text: &str) -> Result<Output> {
    if text.is_empty() {
        return Err(CliError::msg(
            "template format specified but no template given",
        ));
    }
    let template = Template::parse(text)
        .map_err(|e| CliError::msg(format!("error parsing jsonpath {text}, {e}")))?;
    Ok(Output::JsonPath {
        template,
        source: text.to_string(),
    })
}

/// `NAME:.metadata.name,IMAGE:.spec.containers[*].image`, kubectl's syntax and messages.
pub fn parse_custom_columns(spec: &str) -> Result<Vec<CustomColumn>> {
    if spec.is_empty() {
        return Err(CliError::msg(
            "custom-columns format specified but no custom columns given",
        ));
    }
    spec.split(',')
        .map(|part| {
            let Some((header, path)) = part.split_once(':') else {
                return Err(CliError::msg(format!(
                    "unexpected custom-columns spec: {part}, expected <header>:<json-path-expr>"
                )));
            };
            Ok(CustomColumn {
                header: header.to_string(),
                path: jsonpath::relaxed(path).map_err(|e| CliError::msg(e.to_string()))?,
            })
        })
        .collect()
}

/// A custom-columns file: headers on the first line, paths on the second.
pub fn parse_custom_columns_file(text: &str) -> Result<Vec<CustomColumn>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let headers: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let paths: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    if headers.len() != paths.len() {
        return Err(CliError::msg(format!(
            "number of headers ({}) and field specifications ({}) don't match",
            headers.len(),
            paths.len()
        )));
    }
    if headers.is_empty() {
        return Err(CliError::msg(
            "custom-columns format specified but no custom columns given",
        ));
    }
    headers
        .into_iter()
        .zip(paths)
        .map(|(h, p)| {
            Ok(CustomColumn {
                header: h.to_string(),
                path: jsonpath::relaxed(p).map_err(|e| CliError::msg(e.to_string()))?,
            })
        })
        .collect()
}

/// The custom-columns table of some objects.
pub fn custom_columns_table(cols: &[CustomColumn], objs: &[Value]) -> Result<Table> {
    let mut rows = Vec::with_capacity(objs.len());
    for o in objs {
        let mut row = Vec::with_capacity(cols.len());
        for c in cols {
            let vals = c.path.eval(o).map_err(|e| CliError::msg(e.to_string()))?;
            row.push(if vals.is_empty() {
                "<none>".to_string()
            } else {
                vals.into_iter()
                    .map(jsonpath::text)
                    .collect::<Vec<_>>()
                    .join(",")
            });
        }
        rows.push(row);
    }
    Ok(Table {
        headers: cols.iter().map(|c| c.header.clone()).collect(),
        rows,
    })
}

/// Renders a JSONPath template, with kubectl's wording on failure.
pub fn render_jsonpath(template: &Template, source: &str, v: &Value) -> Result<String> {
    template
        .render(v)
        .map_err(|e| CliError::msg(format!("error executing jsonpath \"{source}\": {e}")))
}

/// Parses `--sort-by`.
pub fn parse_sort_by(s: &str) -> Result<Path> {
    jsonpath::relaxed(s).map_err(|e| CliError::msg(format!("--sort-by: {e}")))
}

/// Sorts objects by the first value `path` selects in each (rules in the module docs).
pub fn sort_objects(objs: &mut Vec<Value>, path: &Path) -> Result<()> {
    let mut keyed: Vec<(Option<Value>, Value)> = Vec::with_capacity(objs.len());
    for o in objs.drain(..) {
        let key = path
            .first(&o)
            .map_err(|e| CliError::msg(format!("--sort-by: {e}")))?
            .cloned();
        keyed.push((key, o));
    }
    keyed.sort_by(|a, b| match (&a.0, &b.0) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => compare_values(x, y),
    });
    objs.extend(keyed.into_iter().map(|(_, o)| o));
    Ok(())
}

/// kubectl's ordering of two sort keys.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => {
                let (i, j) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                i.partial_cmp(&j).unwrap_or(Ordering::Equal)
            }
        },
        (Value::String(x), Value::String(y)) => {
            use rudder_api::quantity::parse_quantity;
            match (parse_quantity(x), parse_quantity(y)) {
                (Ok(p), Ok(q)) => p.cmp(&q),
                _ => natural_cmp(x, y),
            }
        }
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        // Mixed or structured keys: some stable order rather than a failure.
        _ => rank(a)
            .cmp(&rank(b))
            .then_with(|| jsonpath::text(a).cmp(&jsonpath::text(b))),
    }
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// Natural order: runs of digits compare by value (`2` < `10`), with digits before other
/// characters; among equal values fewer leading zeros come first; everything else bytewise.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (da, db) = (a[i].is_ascii_digit(), b[j].is_ascii_digit());
        if da != db {
            return if da {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if !da {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
            continue;
        }
        let (za, zb) = (skip(a, i, |c| c == b'0'), skip(b, j, |c| c == b'0'));
        let (ea, eb) = (
            skip(a, za, |c| c.is_ascii_digit()),
            skip(b, zb, |c| c.is_ascii_digit()),
        );
        let ord = (ea - za)
            .cmp(&(eb - zb))
            .then_with(|| a[za..ea].cmp(&b[zb..eb]))
            .then_with(|| (za - i).cmp(&(zb - j)));
        if ord != Ordering::Equal {
            return ord;
        }
        i = ea;
        j = eb;
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn skip(s: &[u8], mut i: usize, pred: impl Fn(u8) -> bool) -> usize {
    while i < s.len() && pred(s[i]) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, extra: Value) -> Value {
        let mut p = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        if let (Value::Object(m), Value::Object(e)) = (&mut p, extra) {
            m.extend(e);
        }
        p
    }

    #[test]
    fn output_formats_parse() {
        assert_eq!(Output::parse(None).unwrap(), Output::Table { wide: false });
        assert_eq!(
            Output::parse(Some("wide")).unwrap(),
            Output::Table { wide: true }
        );
        assert!(matches!(
            Output::parse(Some("jsonpath={.a}")).unwrap(),
            Output::JsonPath { .. }
        ));
        assert_eq!(
            Output::parse(Some("jsonpath")).unwrap_err().to_string(),
            "error: template format specified but no template given"
        );
        assert_eq!(
            Output::parse(Some("jsonpath={.a")).unwrap_err().to_string(),
            "error: error parsing jsonpath {.a, unclosed action"
        );
        assert_eq!(
            Output::parse(Some("yml")).unwrap_err().to_string(),
            format!(
                "error: unable to match a printer suitable for the output format \"yml\", allowed formats are: {FORMATS}"
            )
        );
        assert!(Output::parse(Some("json=x")).is_err());
        assert_eq!(
            Output::parse(Some("custom-columns="))
                .unwrap_err()
                .to_string(),
            "error: custom-columns format specified but no custom columns given"
        );
        assert_eq!(
            Output::parse(Some("custom-columns=NAME"))
                .unwrap_err()
                .to_string(),
            "error: unexpected custom-columns spec: NAME, expected <header>:<json-path-expr>"
        );
    }

    #[test]
    fn custom_columns() {
        let cols = parse_custom_columns(
            "NAME:.metadata.name,IMAGES:.spec.containers[*].image,NODE:spec.nodeName,FIRST:{.spec.containers[0].name}",
        )
        .unwrap();
        let two = pod(
            "b",
            json!({"spec": {"nodeName": "n1", "containers": [
            {"name": "x", "image": "a"}, {"name": "y", "image": "b"}]}}),
        );
        let t = custom_columns_table(&cols, &[pod("a", json!({})), two]).unwrap();
        assert_eq!(
            t.render(true),
            "NAME   IMAGES   NODE     FIRST\n\
             a      nginx    <none>   c\n\
             b      a,b      n1       x\n"
        );
        assert_eq!(
            t.render(false),
            "a    nginx   <none>   c\nb    a,b     n1       x\n"
        );
        // An index past the end is an error, as in kubectl.
        let cols = parse_custom_columns("X:.spec.containers[3].name").unwrap();
        assert!(custom_columns_table(&cols, &[pod("a", json!({}))]).is_err());
        let cols =
            parse_custom_columns_file("NAME   IMAGE\n.metadata.name   .spec.containers[0].image\n")
                .unwrap();
        assert_eq!(
            custom_columns_table(&cols, &[pod("a", json!({}))])
                .unwrap()
                .rows,
            [["a", "nginx"]]
        );
        assert_eq!(
            parse_custom_columns_file("A B\n.a\n")
                .unwrap_err()
                .to_string(),
            "error: number of headers (2) and field specifications (1) don't match"
        );
    }

    #[test]
    fn natural_order() {
        let mut v = vec![
            "pod-10", "pod-2", "pod-1", "pod-02", "Pod", "pod", "a1b", "a01b",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "Pod", "a1b", "a01b", "pod", "pod-1", "pod-2", "pod-02", "pod-10"
            ]
        );
        assert_eq!(natural_cmp("x", "x"), Ordering::Equal);
        assert_eq!(natural_cmp("1x", "x"), Ordering::Less, "digits first");
    }

    #[test]
    fn sort_by_numbers_quantities_strings_and_missing() {
        let names = |v: &[Value]| -> Vec<String> {
            v.iter()
                .map(|o| rudder_api::meta::name(o).to_string())
                .collect()
        };
        let mut objs = vec![
            pod(
                "p10",
                json!({"status": {"restarts": 10, "mem": "1Gi", "start": "2024-01-01T00:00:10Z"}}),
            ),
            pod(
                "p2",
                json!({"status": {"restarts": 2, "mem": "512Mi", "start": "2024-01-01T00:00:05Z"}}),
            ),
            pod("none", json!({})),
            pod(
                "p3",
                json!({"status": {"restarts": 3, "mem": "2000M", "start": "2023-12-31T23:59:59Z"}}),
            ),
        ];
        sort_objects(&mut objs, &parse_sort_by(".status.restarts").unwrap()).unwrap();
        assert_eq!(names(&objs), ["none", "p2", "p3", "p10"]);
        sort_objects(&mut objs, &parse_sort_by("{.status.mem}").unwrap()).unwrap();
        assert_eq!(
            names(&objs),
            ["none", "p2", "p10", "p3"],
            "512Mi < 1Gi < 2000M"
        );
        sort_objects(&mut objs, &parse_sort_by("status.start").unwrap()).unwrap();
        assert_eq!(names(&objs), ["none", "p3", "p2", "p10"]);
        sort_objects(&mut objs, &parse_sort_by(".metadata.name").unwrap()).unwrap();
        assert_eq!(names(&objs), ["none", "p2", "p3", "p10"], "natural order");
        assert!(parse_sort_by("{a}{b}").is_err());
        assert_eq!(compare_values(&json!(false), &json!(true)), Ordering::Less);
        assert_eq!(compare_values(&json!(1.5), &json!(1)), Ordering::Greater);
    }
}
