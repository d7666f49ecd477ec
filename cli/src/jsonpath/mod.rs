//! kubectl's JSONPath templates (`-o jsonpath=`, `-o custom-columns=`, `--sort-by`, and the
//! `jsonPath` of a custom kind's printer columns), evaluated over an object's JSON.
//!
//! What it guarantees, as kubectl's implementation does:
//! - A template is literal text with `{...}` actions. Literal text is printed verbatim (a `\n`
//!   typed outside braces stays two characters, as in kubectl); inside an action, a quoted
//!   string (`{"\n"}`, `{'\t'}`) prints with its escapes resolved.
//! - Paths: `.field` (`\.` escapes a dot inside a key), `['key']`, `[0]`, `[-1]`, `[1:3]`,
//!   `[::2]`, `[*]` and `.*`, unions `[0,2]` / `['a','b']`, recursive descent `..name`, filters
//!   `[?(@.type=="Ready")]` with `==`, `!=`, `<`, `>`, `<=`, `>=` or bare existence, a leading
//!   `$` or `@`. `{range PATH}...{end}` repeats its body for each result.
//! - Missing fields and `null` give no result, never an error (kubectl's default
//!   `--allow-missing-template-keys=true`); an index outside an array is an error, as in kubectl.
//! - Several results of one action print separated by one space; strings print bare, numbers
//!   and booleans as JSON, objects and arrays as compact JSON.
//!
//! Not supported: kubectl's regular-expression filter `=~`.

use serde_json::Value;

/// A template or path that does not parse, or an evaluation that failed (an index out of
/// bounds). The message is kubectl's where kubectl has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonPathError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, JsonPathError> {
    Err(JsonPathError(msg.into()))
}

/// One step of a path, applied to every current value in turn.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `.name` or `['name']`: the member of an object.
    Field(String),
    /// `.*` or `[*]`: every member of an object or element of an array.
    Wildcard,
    /// `[i]`, `[a:b:c]`: kubectl's slice parameters (see `slice`).
    Slice(SliceSpec),
    /// `[a,b]`: the results of each alternative, in order.
    Union(Vec<Path>),
    /// `..`: the value and all its descendants that have children, in document order.
    Recursive,
    Filter(Box<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct SliceSpec {
    start: Option<i64>,
    end: Option<i64>,
    step: Option<i64>,
    /// `[i]`: the end is `i + 1`, taken from the index as written (so `[-1]` is the last).
    single: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Path,
    /// None: keep elements where `left` exists.
    cmp: Option<(CmpOp, Operand)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Value),
    Path(Path),
}

/// A parsed path: `.items[*].metadata.name`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Path {
    steps: Vec<Step>,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Path),
    Range(Path, Vec<Node>),
}

/// A parsed template: `{range .items[*]}{.metadata.name}{"\n"}{end}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, JsonPathError> {
        let mut stack: Vec<(Path, Vec<Node>)> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                nodes.push(Node::Text(rest.to_string()));
                break;
            };
            if open > 0 {
                nodes.push(Node::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = action_end(after)?;
            let action = after[..close].trim();
            rest = &after[close + 1..];
            if action == "end" {
                let Some((path, outer)) = stack.pop() else {
                    return err("not in range, nothing to end");
                };
                let body = std::mem::replace(&mut nodes, outer);
                nodes.push(Node::Range(path, body));
            } else if let Some(p) = action.strip_prefix("range")
                && p.starts_with([' ', '\t', '.', '$', '@', '['])
            {
                stack.push((Path::parse(p.trim())?, std::mem::take(&mut nodes)));
            } else if action.starts_with(['"', '\'']) {
                nodes.push(Node::Text(unquote(action)?));
            } else {
                nodes.push(Node::Path(Path::parse(action)?));
            }
        }
        if !stack.is_empty() {
            return err("unclosed range: missing {end}");
        }
        Ok(Template { nodes })
    }

    /// Renders the template against `root`.
    pub fn render(&self, root: &Value) -> Result<String, JsonPathError> {
        let mut out = String::new();
        render_nodes(&self.nodes, root, &mut out)?;
        Ok(out)
    }
}

fn render_nodes(nodes: &[Node], cur: &Value, out: &mut String) -> Result<(), JsonPathError> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Path(p) => {
                let vals = p.eval(cur)?;
                let texts: Vec<String> = vals.into_iter().map(text).collect();
                out.push_str(&texts.join(" "));
            }
            Node::Range(p, body) => {
                for v in p.eval(cur)? {
                    render_nodes(body, v, out)?;
                }
            }
        }
    }
    Ok(())
}

/// How kubectl prints one result: strings bare, objects and arrays as compact JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        // Serialising a `Value` cannot fail.
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Where the action that starts at `s` (just after `{`) ends: the first `}` outside quotes.
fn action_end(s: &str) -> Result<usize, JsonPathError> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '}' => return Ok(i),
                '\n' | '\r' => return err("unclosed action"),
                _ => {}
            },
        }
    }
    err("unclosed action")
}

/// Resolves a quoted string's escapes (`\n`, `\t`, `\r`, `\\`, `\"`, `\'`, `\uXXXX`).
fn unquote(s: &str) -> Result<String, JsonPathError> {
    let bad = || JsonPathError(format!("unquote string {s} error invalid syntax"));
    let mut chars = s.chars();
    let q = chars.next().ok_or_else(bad)?;
    if s.len() < 2 || !s.ends_with(q) {
        return Err(bad());
    }
    let inner = &s[1..s.len() - 1];
    let mut out = String::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next().ok_or_else(bad)? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            'u' => {
                let hex: String = it.by_ref().take(4).collect();
                let n = u32::from_str_radix(&hex, 16).map_err(|_| bad())?;
                out.push(char::from_u32(n).ok_or_else(bad)?);
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// kubectl's relaxed path for `custom-columns` and `--sort-by`: `a.b`, `.a.b`, `{a.b}` and
/// `{.a.b}` all mean `{.a.b}`.
pub fn relaxed(expr: &str) -> Result<Path, JsonPathError> {
    let inner = match expr.strip_prefix('{').and_then(|e| e.strip_suffix('}')) {
        Some(i) => i,
        None => expr,
    };
    let inner = inner.strip_prefix('.').unwrap_or(inner);
    if inner.is_empty() || inner.contains(['{', '}']) {
        return err(
            "unexpected path string, expected a 'name1.name2' or '.name1.name2' or '{name1.name2}' or '{.name1.name2}'",
        );
    }
    // `[0]` right after the (stripped) dot stays an index: `.[0]` is not a field.
    if inner.starts_with('[') {
        Path::parse(inner)
    } else {
        Path::parse(&format!(".{inner}"))
    }
}

impl Path {
    /// Parses the inside of one action: `.items[*].metadata.name`, `$.spec`, `@`.
    pub fn parse(s: &str) -> Result<Path, JsonPathError> {
        let mut p = Parser { s, pos: 0 };
        let steps = p.steps()?;
        Ok(Path { steps })
    }

    /// Every value the path selects in `root`, in document order.
    pub fn eval<'v>(&self, root: &'v Value) -> Result<Vec<&'v Value>, JsonPathError> {
        eval_steps(&self.steps, vec![root])
    }

    /// The first value selected, if any: what a table cell or a sort key uses.
    pub fn first<'v>(&self, root: &'v Value) -> Result<Option<&'v Value>, JsonPathError> {
        Ok(self.eval(root)?.into_iter().next())
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    fn steps(&mut self) -> Result<Vec<Step>, JsonPathError> {
        let mut steps = Vec::new();
        while let Some(c) = self.rest().chars().next() {
            if self.rest().starts_with("..") {
                if steps.last() == Some(&Step::Recursive) {
                    return err("invalid multiple recursive descent");
                }
                self.pos += 2;
                steps.push(Step::Recursive);
                if self
                    .rest()
                    .starts_with(|c: char| c.is_alphanumeric() || c == '_')
                {
                    steps.push(self.field()?);
                }
            } else if self.rest().starts_with("[?(") {
                self.pos += 3;
                steps.push(self.filter()?);
            } else {
                match c {
                    ' ' | '\t' | '$' | '@' => self.pos += 1,
                    '.' => {
                        self.pos += 1;
                        steps.push(self.field()?);
                    }
                    '[' => {
                        self.pos += 1;
                        steps.push(self.bracket()?);
                    }
                    c if c.is_alphanumeric() || c == '_' => {
                        let word: String = self
                            .rest()
                            .chars()
                            .take_while(|c| !is_terminator(*c))
                            .collect();
                        return err(format!("unrecognized identifier {word}"));
                    }
                    other => return err(format!("unrecognized character in action: {other:?}")),
                }
            }
        }
        Ok(steps)
    }

    /// A field name up to the next unescaped terminator; `\` escapes the next character.
    fn field(&mut self) -> Result<Step, JsonPathError> {
        let mut name = String::new();
        let mut chars = self.rest().char_indices().peekable();
        let mut used = self.rest().len();
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                if let Some((_, n)) = chars.next() {
                    name.push(n);
                }
                continue;
            }
            if is_terminator(c) {
                used = i;
                break;
            }
            name.push(c);
        }
        self.pos += used;
        Ok(if name == "*" {
            Step::Wildcard
        } else {
            Step::Field(name)
        })
    }

    /// The inside of `[...]` (the `[` consumed): index, slice, key, wildcard or union.
    fn bracket(&mut self) -> Result<Step, JsonPathError> {
        let Some(end) = self.rest().find(']') else {
            return err("unterminated array");
        };
        let text = self.rest()[..end].to_string();
        self.pos += end + 1;
        bracket_step(text.trim())
    }

    /// `@.a.b OP value)]` or `@.a)]` (the `[?(` consumed).
    fn filter(&mut self) -> Result<Step, JsonPathError> {
        let rest = self.rest();
        let mut quote: Option<char> = None;
        let mut close = None;
        for (i, c) in rest.char_indices() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' => quote = Some(c),
                None if c == ')' => {
                    close = Some(i);
                    break;
                }
                None => {}
            }
        }
        let Some(close) = close else {
            return err("unterminated filter");
        };
        if !rest[close + 1..].starts_with(']') {
            return err("unclosed array expect ]");
        }
        let text = rest[..close].trim().to_string();
        self.pos += close + 2;
        let ops = [
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ];
        let found = text
            .find(['=', '!', '<', '>', '~'])
            .map(|i| (i, &text[i..]));
        let Some((i, tail)) = found else {
            return Ok(Step::Filter(Box::new(Filter {
                left: Path::parse(&text)?,
                cmp: None,
            })));
        };
        let Some((sym, op)) = ops.iter().find(|(sym, _)| tail.starts_with(sym)) else {
            return err(format!("unrecognized filter operator in {text}"));
        };
        let right = tail[sym.len()..].trim();
        Ok(Step::Filter(Box::new(Filter {
            left: Path::parse(text[..i].trim())?,
            cmp: Some((*op, operand(right)?)),
        })))
    }
}

fn is_terminator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\r' | '\n' | '.' | ',' | '[' | ']' | '$' | '@' | '{' | '}'
    )
}

fn operand(s: &str) -> Result<Operand, JsonPathError> {
    if s.starts_with(['"', '\'']) {
        return Ok(Operand::Literal(Value::String(unquote(s)?)));
    }
    match s {
        "true" => return Ok(Operand::Literal(Value::Bool(true))),
        "false" => return Ok(Operand::Literal(Value::Bool(false))),
        _ => {}
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(Operand::Literal(Value::from(n)));
    }
    if let Ok(f) = s.parse::<f64>() {
        return Ok(Operand::Literal(Value::from(f)));
    }
    Ok(Operand::Path(Path::parse(s)?))
}

fn bracket_step(text: &str) -> Result<Step, JsonPathError> {
    if text == "*" {
        return Ok(Step::Wildcard);
    }
    if has_top_level_comma(text) {
        let alts = split_top_level(text)
            .into_iter()
            .map(|alt| {
                Ok(Path {
                    steps: vec![bracket_step(alt.trim())?],
                })
            })
            .collect::<Result<Vec<_>, JsonPathError>>()?;
        return Ok(Step::Union(alts));
    }
    if text.len() >= 2 && text.starts_with('\'') && text.ends_with('\'') {
        return Ok(Step::Field(text[1..text.len() - 1].to_string()));
    }
    if text.len() >= 2 && text.starts_with('"') && text.ends_with('"') {
        return Ok(Step::Field(unquote(text)?));
    }
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() > 3 || parts.is_empty() {
        return err(format!("invalid array index {text}"));
    }
    let num = |s: &str| -> Result<Option<i64>, JsonPathError> {
        let s = s.trim();
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse::<i64>()
                .map(Some)
                .map_err(|_| JsonPathError(format!("invalid array index {text}")))
        }
    };
    let start = num(parts[0])?;
    if parts.len() == 1 {
        if start.is_none() {
            return err(format!("invalid array index {text}"));
        }
        return Ok(Step::Slice(SliceSpec {
            start,
            end: None,
            step: None,
            single: true,
        }));
    }
    Ok(Step::Slice(SliceSpec {
        start,
        end: num(parts[1])?,
        step: match parts.get(2) {
            Some(p) => num(p)?,
            None => None,
        },
        single: false,
    }))
}

fn has_top_level_comma(s: &str) -> bool {
    split_top_level(s).len() > 1
}

/// Splits on commas outside quotes.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == ',' => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            None => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn eval_steps<'v>(
    steps: &[Step],
    mut cur: Vec<&'v Value>,
) -> Result<Vec<&'v Value>, JsonPathError> {
    for step in steps {
        let mut next = Vec::new();
        match step {
            Step::Field(name) => {
                for v in cur {
                    if name.is_empty() {
                        next.push(v);
                    } else if let Some(x) = v.get(name.as_str())
                        && !x.is_null()
                    {
                        next.push(x);
                    }
                }
            }
            Step::Wildcard => {
                for v in cur {
                    match v {
                        Value::Object(m) => next.extend(m.values().filter(|x| !x.is_null())),
                        Value::Array(a) => next.extend(a.iter().filter(|x| !x.is_null())),
                        _ => {}
                    }
                }
            }
            Step::Slice(spec) => {
                for v in cur {
                    match v {
                        Value::Array(a) => next.extend(slice(a, *spec)?),
                        Value::Null => {}
                        other => {
                            return err(format!("{} is not array or slice", type_name(other)));
                        }
                    }
                }
            }
            Step::Union(alts) => {
                for alt in alts {
                    next.extend(eval_steps(&alt.steps, cur.clone())?);
                }
            }
            Step::Recursive => {
                for v in cur {
                    descend(v, &mut next);
                }
            }
            Step::Filter(f) => {
                for v in cur {
                    let Value::Array(items) = v else {
                        return err(format!(
                            "{} is not array or slice and cannot be filtered",
                            type_name(v)
                        ));
                    };
                    for item in items {
                        if keep(f, item)? {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    Ok(cur)
}

/// kubectl's `..`: a value with children, then its descendants with children.
fn descend<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    let children: Vec<&Value> = match v {
        Value::Object(m) => m.values().collect(),
        Value::Array(a) => a.iter().collect(),
        _ => return,
    };
    if children.is_empty() {
        return;
    }
    out.push(v);
    for c in children {
        descend(c, out);
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// kubectl's slice rules: negative bounds count from the end; out-of-range bounds are errors
/// (except an empty selection); the step must be positive.
fn slice(a: &[Value], s: SliceSpec) -> Result<Vec<&Value>, JsonPathError> {
    let len = a.len() as i64;
    let raw_start = s.start.unwrap_or(0);
    let mut start = raw_start;
    if start < 0 {
        start += len;
    }
    let mut end = if s.single {
        raw_start + 1
    } else {
        s.end.unwrap_or(len)
    };
    if end < 0 || (s.single && end == 0) {
        end += len;
    }
    if end == start {
        return Ok(Vec::new());
    }
    if start >= len || start < 0 {
        return err(format!(
            "array index out of bounds: index {raw_start}, length {len}"
        ));
    }
    if end > len || end < 0 {
        return err(format!(
            "array index out of bounds: index {}, length {len}",
            end - 1
        ));
    }
    if start > end {
        return err(format!(
            "starting index {start} is greater than ending index {end}"
        ));
    }
    let step = match s.step {
        Some(st) if st <= 0 => return err("step must be > 0"),
        Some(st) => st as usize,
        None => 1,
    };
    Ok(a[start as usize..end as usize]
        .iter()
        .step_by(step)
        .collect())
}

fn keep(f: &Filter, item: &Value) -> Result<bool, JsonPathError> {
    let lefts = f.left.eval(item)?;
    let Some((op, right)) = &f.cmp else {
        return Ok(!lefts.is_empty());
    };
    let left = match lefts.as_slice() {
        [] => return Ok(false),
        [one] => *one,
        _ => return err("can only compare one element at a time"),
    };
    let right = match right {
        Operand::Literal(v) => v,
        Operand::Path(p) => match p.eval(item)?.as_slice() {
            [] => return Ok(false),
            [one] => *one,
            _ => return err("can only compare one element at a time"),
        },
    };
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (left, right) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => a
                .as_f64()
                .zip(b.as_f64())
                .and_then(|(x, y)| x.partial_cmp(&y)),
        },
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    };
    // Values of different types are never equal, and not ordered (kubectl errors; a filter
    // that simply does not match is friendlier and loses nothing).
    Ok(match (op, ord) {
        (CmpOp::Eq, Some(o)) => o == Ordering::Equal,
        (CmpOp::Ne, Some(o)) => o != Ordering::Equal,
        (CmpOp::Ne, None) => true,
        (CmpOp::Lt, Some(o)) => o == Ordering::Less,
        (CmpOp::Gt, Some(o)) => o == Ordering::Greater,
        (CmpOp::Le, Some(o)) => o != Ordering::Greater,
        (CmpOp::Ge, Some(o)) => o != Ordering::Less,
        (_, None) => false,
    })
}

#[cfg(test)]
mod tests;
