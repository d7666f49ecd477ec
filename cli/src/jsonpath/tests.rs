//! Unit tests of the JSONPath templates and paths.

use super::*;
use serde_json::json;

fn pods() -> Value {
    json!({"kind": "List", "items": [
        {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "web"}},
         "spec": {"containers": [{"name": "c1", "image": "nginx"}, {"name": "c2", "image": "redis"}]},
         "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Scheduled", "status": "True"}]}},
        {"metadata": {"name": "b"},
         "spec": {"containers": [{"name": "c", "image": "busybox"}], "priority": 5},
         "status": {"phase": "Pending"}}
    ]})
}

fn render(t: &str, v: &Value) -> String {
    Template::parse(t)
        .and_then(|t| t.render(v))
        .unwrap_or_else(|e| panic!("{t}: {e}"))
}

#[test]
fn fields_indexes_and_wildcards() {
    let v = pods();
    assert_eq!(render("{.kind}", &v), "List");
    assert_eq!(render("{.items[0].metadata.name}", &v), "a");
    assert_eq!(render("{.items[-1].metadata.name}", &v), "b");
    assert_eq!(render("{.items[*].metadata.name}", &v), "a b");
    assert_eq!(render("{$.items[*].metadata.name}", &v), "a b");
    assert_eq!(
        render("{.items[0].spec.containers[*].image}", &v),
        "nginx redis"
    );
    assert_eq!(render("{.items[*].spec.containers[*].name}", &v), "c1 c2 c");
    assert_eq!(render("{.items[0:1].metadata.name}", &v), "a");
    assert_eq!(render("{.items[::2].metadata.name}", &v), "a");
    assert_eq!(render("{.items[1].spec.priority}", &v), "5");
    assert_eq!(
        render("{.items[0].metadata.*}", &v),
        "{\"app.kubernetes.io/name\":\"web\"} a"
    );
    assert_eq!(
        render("{.items[0].metadata.labels.app\\.kubernetes\\.io/name}", &v),
        "web"
    );
    assert_eq!(
        render("{.items[0].metadata.labels['app.kubernetes.io/name']}", &v),
        "web"
    );
    assert_eq!(
        render("{.items[0].spec.containers[0]}", &v),
        r#"{"image":"nginx","name":"c1"}"#
    );
    assert_eq!(render("{.items[0,1].metadata.name}", &v), "a b");
    assert_eq!(render("{..image}", &v), "nginx redis busybox");
}

#[test]
fn missing_is_empty_and_bounds_are_errors() {
    let v = pods();
    assert_eq!(render("{.nope}", &v), "");
    assert_eq!(render("{.items[*].metadata.labels.tier}", &v), "");
    assert_eq!(render("x{.items[1].status.conditions[*].type}y", &v), "xy");
    let t = Template::parse("{.items[5]}").unwrap();
    assert_eq!(
        t.render(&v).unwrap_err().to_string(),
        "array index out of bounds: index 5, length 2"
    );
    let t = Template::parse("{.kind[0]}").unwrap();
    assert!(t.render(&v).is_err());
}

#[test]
fn range_text_and_quoted_literals() {
    let v = pods();
    assert_eq!(
        render(
            "{range .items[*]}{.metadata.name}{\"\\t\"}{.status.phase}{\"\\n\"}{end}",
            &v
        ),
        "a\tRunning\nb\tPending\n"
    );
    assert_eq!(
        render("{range .items[*]}[{.metadata.name}]{end}!", &v),
        "[a][b]!"
    );
    // Nested ranges.
    assert_eq!(
        render(
            "{range .items[*]}{.metadata.name}:{range .spec.containers[*]}{.name},{end};{end}",
            &v
        ),
        "a:c1,c2,;b:c,;"
    );
    // Literal text outside braces is verbatim, as in kubectl.
    assert_eq!(render("name={.items[0].metadata.name}\\n", &v), "name=a\\n");
    assert_eq!(render("{'}'}", &v), "}");
}

#[test]
fn filters() {
    let v = pods();
    assert_eq!(
        render("{.items[?(@.status.phase==\"Running\")].metadata.name}", &v),
        "a"
    );
    assert_eq!(
        render("{.items[?(@.status.phase!='Running')].metadata.name}", &v),
        "b"
    );
    assert_eq!(
        render(
            "{.items[0].status.conditions[?(@.type==\"Ready\")].status}",
            &v
        ),
        "True"
    );
    assert_eq!(
        render("{.items[?(@.spec.priority)].metadata.name}", &v),
        "b"
    );
    assert_eq!(
        render("{.items[?(@.spec.priority>=5)].metadata.name}", &v),
        "b"
    );
    assert_eq!(
        render("{.items[?(@.spec.priority<5)].metadata.name}", &v),
        ""
    );
}

#[test]
fn parse_errors() {
    for (t, msg) in [
        ("{.a", "unclosed action"),
        ("{end}", "not in range, nothing to end"),
        ("{range .items[*]}{.a}", "unclosed range: missing {end}"),
        ("{.items[x]}", "invalid array index x"),
        ("{.items[0}", "unterminated array"),
        ("{metadata.name}", "unrecognized identifier metadata"),
        (
            "{.a[?(@.b=~\"x\")]}",
            "unrecognized filter operator in @.b=~\"x\"",
        ),
    ] {
        assert_eq!(
            Template::parse(t).map(|_| ()).unwrap_err().to_string(),
            msg,
            "{t}"
        );
    }
}

#[test]
fn relaxed_paths() {
    let v = json!({"metadata": {"name": "x"}, "a": [1, 2]});
    for p in [
        "metadata.name",
        ".metadata.name",
        "{metadata.name}",
        "{.metadata.name}",
    ] {
        let path = relaxed(p).unwrap();
        assert_eq!(path.first(&v).unwrap(), Some(&json!("x")), "{p}");
    }
    assert_eq!(
        relaxed(".a[1]").unwrap().first(&v).unwrap(),
        Some(&json!(2))
    );
    assert!(relaxed("").is_err());
    assert!(relaxed("{a}{b}").is_err());
}

#[test]
fn text_of_values() {
    assert_eq!(text(&json!("s")), "s");
    assert_eq!(text(&json!(3)), "3");
    assert_eq!(text(&json!(1.5)), "1.5");
    assert_eq!(text(&json!(true)), "true");
    assert_eq!(text(&json!({"b": 1, "a": [true]})), r#"{"a":[true],"b":1}"#);
}
