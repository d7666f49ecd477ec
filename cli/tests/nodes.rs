//! `rudder cordon` and `uncordon` against a real API server.

mod common;

use common::Server;
use serde_json::Value;

/// Runs a command line (split on spaces) and asserts success with exactly this output.
#[track_caller]
fn ok(s: &Server, cmd: &str, out: &str) {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    assert_eq!(s.run(&args).ok(), out, "{cmd}");
}

fn node(s: &Server, name: &str) -> Value {
    let out = s.run(&["get", "node", name, "-o", "json"]);
    serde_json::from_str(out.ok()).expect("JSON")
}

#[test]
fn cordon_and_uncordon_mark_nodes_and_say_when_there_was_nothing_to_do() {
    let s = Server::start();
    for n in ["n1", "n2"] {
        let f = s.file(
            &format!("{n}.yaml"),
            &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n  labels: {{pool: a}}\n"),
        );
        s.run(&["apply", "-f", &f]).ok();
    }
    ok(&s, "cordon n1", "node/n1 cordoned\n");
    assert_eq!(node(&s, "n1")["spec"]["unschedulable"], true);
    ok(&s, "cordon n1", "node/n1 already cordoned\n");
    ok(
        &s,
        "cordon -l pool=a",
        "node/n1 already cordoned\nnode/n2 cordoned\n",
    );
    ok(
        &s,
        "uncordon n1 --dry-run",
        "node/n1 uncordoned (dry run)\n",
    );
    assert_eq!(
        node(&s, "n1")["spec"]["unschedulable"],
        true,
        "a dry run writes nothing"
    );
    ok(
        &s,
        "uncordon n1 n2",
        "node/n1 uncordoned\nnode/n2 uncordoned\n",
    );
    assert!(node(&s, "n1")["spec"].get("unschedulable").is_none());
    ok(&s, "uncordon n2", "node/n2 already uncordoned\n");
    assert_eq!(
        s.run(&["cordon"]).err_line(),
        "error: USAGE: cordon NODE [flags]: name a node, or select nodes with -l"
    );
    assert_eq!(
        s.run(&["cordon", "nope"]).err_line(),
        "Error from server (NotFound): nodes \"nope\" not found"
    );
}
