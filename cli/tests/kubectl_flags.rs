//! End-to-end tests of kubectl's flags and exit codes that `rudder` mirrors: usage errors exit 1,
//! `get NAME -A` is refused, `delete` waits by default and passes `--cascade` through, and
//! `get`'s `--no-headers`, `-o jsonpath=`, `-o custom-columns=`, `--sort-by` and `-L`.

mod common;

use std::time::{Duration, Instant};

use common::{Server, run_rudder};

/// A config map held by a finalizer: deleting it only marks it until the finalizer goes.
fn held(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  finalizers: [example.com/hold]\n"
    )
}

fn release(s: &Server, name: &str) {
    s.run(&[
        "patch",
        "cm",
        name,
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .ok();
}

#[test]
fn usage_errors_exit_1_help_and_version_0() {
    let s = Server::start();
    // Missing argument, unknown flag, unknown command: clap's errors, kubectl's exit code.
    for args in [
        &["get"][..],
        &["get", "pods", "--bogus"],
        &["frobnicate"],
        &["delete", "cm", "x", "--wait=maybe"],
    ] {
        let o = s.run(args);
        assert_eq!(o.code, 1, "{args:?}: {}", o.stderr);
        assert!(o.stderr.starts_with("error: "), "{args:?}: {}", o.stderr);
    }
    // Bad flag values found by rudder itself.
    assert_eq!(
        s.run(&["get", "cm", "-o", "yml"]).err_line(),
        "error: unable to match a printer suitable for the output format \"yml\", allowed formats are: custom-columns,custom-columns-file,json,jsonpath,jsonpath-file,name,wide,yaml"
    );
    assert_eq!(
        s.run(&["delete", "cm", "x", "--cascade=bogus"]).err_line(),
        "error: invalid cascade value (bogus). Must be \"background\", \"foreground\", or \"orphan\""
    );
    let h = s.run(&["--help"]);
    assert_eq!(h.code, 0, "{}", h.stderr);
    assert!(h.stdout.contains("Usage: rudder"), "{}", h.stdout);
    let h = s.run(&["get", "--help"]);
    assert_eq!(h.code, 0, "{}", h.stderr);
    assert!(h.stdout.contains("--sort-by"), "{}", h.stdout);
    let v = s.run(&["--version"]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(v.stdout.starts_with("rudder "), "{}", v.stdout);
    // Bare `rudder`: help, success (as bare kubectl).
    let bare = s.run(&[]);
    assert_eq!(bare.code, 0, "{}", bare.stderr);
    assert!(bare.stdout.contains("Usage: rudder"), "{}", bare.stdout);
    // `diff` keeps its own meaning: 2 when it could not diff.
    assert_eq!(s.run(&["diff", "-f", "/nonexistent.yaml"]).code, 2);
}

#[test]
fn get_by_name_across_all_namespaces_is_refused() {
    let s = Server::start();
    s.run(&["create", "configmap", "web"]).ok();
    for args in [
        &["get", "cm", "web", "-A"][..],
        &["get", "cm/web", "--all-namespaces"],
        &["-A", "get", "configmaps", "web", "-o", "name"],
        &["delete", "cm", "web", "-A"],
        &["describe", "cm", "web", "-A"],
    ] {
        assert_eq!(
            s.run(args).err_line(),
            "error: a resource cannot be retrieved by name across all namespaces",
            "{args:?}"
        );
    }
    // Nothing was deleted, and cluster-scoped kinds take names with -A, as in kubectl.
    s.run(&["get", "cm", "web"]).ok();
    assert_eq!(
        s.run(&["get", "ns", "default", "-A", "-o", "name"]).ok(),
        "namespace/default\n"
    );
    // Listing across namespaces still works.
    assert!(s.run(&["get", "cm", "-A"]).ok().contains("web"));
}

#[test]
fn delete_waits_until_the_object_is_gone() {
    let s = Server::start();
    let f = s.file("held.yaml", &held("held"));
    s.run(&["apply", "-f", &f]).ok();
    let addr = s.addr.clone();
    let home = s.home().to_path_buf();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        run_rudder(
            Some(&addr),
            &home,
            &[
                "patch",
                "cm",
                "held",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
            None,
            &[],
        )
    });
    let start = Instant::now();
    assert_eq!(
        s.run(&["delete", "cm", "held"]).ok(),
        "configmap \"held\" deleted\n"
    );
    let took = start.elapsed();
    releaser.join().unwrap().ok();
    assert!(
        took >= Duration::from_millis(1400),
        "returned after {took:?}, before the finalizer was removed"
    );
    assert_eq!(
        s.run(&["get", "cm", "held"]).err_line(),
        "Error from server (NotFound): configmaps \"held\" not found"
    );
}

#[test]
fn delete_wait_false_returns_at_once_and_timeout_bounds_the_wait() {
    let s = Server::start();
    let f = s.file("held.yaml", &format!("{}---\n{}", held("a"), held("b")));
    s.run(&["apply", "-f", &f]).ok();
    let start = Instant::now();
    assert_eq!(
        s.run(&["delete", "cm", "a", "--wait=false"]).ok(),
        "configmap \"a\" deleted\n"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    let still = s.run(&[
        "get",
        "cm",
        "a",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!still.ok().is_empty(), "marked for deletion, still present");

    let start = Instant::now();
    let o = s.run(&["delete", "cm", "b", "--timeout=1s"]);
    assert_eq!(o.stdout, "configmap \"b\" deleted\n");
    assert_eq!(
        o.err_line(),
        "error: timed out waiting for the condition on configmaps/b"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    release(&s, "a");
    release(&s, "b");
    assert_eq!(s.run(&["get", "cm", "-o", "name"]).ok(), "");
}

#[test]
fn cascade_is_spelled_as_kubectl_and_sets_the_propagation_finalizer() {
    let s = Server::start();
    // No controller-manager here: an Orphan or Foreground delete leaves the object held by the
    // garbage collector's finalizer, as the server stores it.
    let finalizers = |name: &str| {
        s.run(&["get", "cm", name, "-o", "jsonpath={.metadata.finalizers}"])
            .ok()
            .to_string()
    };
    for (name, flag, finalizer) in [
        ("o", "--cascade=orphan", "orphan"),
        ("f", "--cascade=foreground", "foregroundDeletion"),
    ] {
        s.run(&["create", "configmap", name]).ok();
        assert_eq!(
            s.run(&["delete", "cm", name, flag, "--wait=false"]).ok(),
            format!("configmap \"{name}\" deleted\n")
        );
        assert!(finalizers(name).contains(finalizer), "{}", finalizers(name));
    }
    // The deprecated boolean: kubectl's warning, then the same request as --cascade=orphan.
    s.run(&["create", "configmap", "c"]).ok();
    let o = s.run(&["delete", "cm", "c", "--cascade=false", "--wait=false"]);
    assert_eq!(o.ok(), "configmap \"c\" deleted\n");
    assert_eq!(
        o.stderr,
        "warning: --cascade=false is deprecated (boolean value) and can be replaced with --cascade=orphan.\n"
    );
    assert!(finalizers("c").contains("orphan"), "{}", finalizers("c"));
    s.run(&["create", "configmap", "b"]).ok();
    assert_eq!(
        s.run(&["delete", "cm", "b", "--cascade=background"]).ok(),
        "configmap \"b\" deleted\n"
    );
    s.run(&["create", "configmap", "d"]).ok();
    let o = s.run(&["delete", "cm", "d", "--cascade=true"]);
    assert_eq!(o.ok(), "configmap \"d\" deleted\n");
    assert_eq!(
        o.stderr,
        "warning: --cascade=true is deprecated (boolean value) and can be replaced with --cascade=background.\n"
    );
    assert!(
        s.run(&["delete", "cm", "x", "--cascade=sideways"])
            .err_line()
            .contains("invalid cascade value (sideways)")
    );
}

#[test]
fn get_output_formats_sorting_and_label_columns() {
    let s = Server::start();
    let f = s.file(
        "cms.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, labels: {tier: fe, app.kubernetes.io/name: web}}\ndata: {k1: '1', k2: '2'}\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: '1', size: 10Gi}\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, labels: {tier: be}}\ndata: {size: 512Mi}\n",
    );
    s.run(&["apply", "-f", &f]).ok();

    let t = s.run(&["get", "cm", "--no-headers"]).ok().to_string();
    let names: Vec<&str> = t
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "{t}");

    // JSONPath over the List, and over one object asked for by name.
    assert_eq!(
        s.run(&["get", "cm", "-o", "jsonpath={.items[*].metadata.name}"])
            .ok(),
        "a b c"
    );
    assert_eq!(
        s.run(&[
            "get",
            "cm",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}={.data.size}{"\n"}{end}"#
        ])
        .ok(),
        "a=10Gi\nb=\nc=512Mi\n"
    );
    assert_eq!(
        s.run(&["get", "cm", "b", "-o", "jsonpath={.metadata.labels.tier}"])
            .ok(),
        "fe"
    );
    assert_eq!(
        s.run(&["get", "cm", "-o", "jsonpath={.items[7]}"])
            .err_line(),
        "error: error executing jsonpath \"{.items[7]}\": array index out of bounds: index 7, length 3"
    );

    // Custom columns, with and without the header.
    let t = s
        .run(&[
            "get",
            "cm",
            "-o",
            "custom-columns=NAME:.metadata.name,TIER:.metadata.labels.tier",
        ])
        .ok()
        .to_string();
    let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            vec!["NAME", "TIER"],
            vec!["a", "<none>"],
            vec!["b", "fe"],
            vec!["c", "be"]
        ]
    );
    let t = s
        .run(&[
            "get",
            "cm",
            "--no-headers",
            "-o",
            "custom-columns=N:metadata.name",
        ])
        .ok()
        .to_string();
    assert_eq!(t, "a\nb\nc\n");

    // --sort-by: quantities by value, missing first; descending key order is the user's to ask.
    assert_eq!(
        s.run(&["get", "cm", "--sort-by=.data.size", "-o", "name"])
            .ok(),
        "configmap/b\nconfigmap/c\nconfigmap/a\n"
    );
    let t = s
        .run(&[
            "get",
            "cm",
            "--sort-by={.metadata.labels.tier}",
            "--no-headers",
        ])
        .ok()
        .to_string();
    let names: Vec<&str> = t
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["a", "c", "b"], "{t}");
    assert_eq!(
        s.run(&[
            "get",
            "cm",
            "--sort-by=.data.size",
            "-o",
            "jsonpath={.items[*].metadata.name}"
        ])
        .ok(),
        "b c a"
    );

    // -L: one upper-cased column per key (its last path segment), before LABELS.
    let t = s
        .run(&[
            "get",
            "cm",
            "-L",
            "tier",
            "-L",
            "app.kubernetes.io/name",
            "--show-labels",
        ])
        .ok()
        .to_string();
    let header: Vec<&str> = t.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "DATA", "AGE", "TIER", "NAME", "LABELS"]);
    let b = t.lines().find(|l| l.starts_with("b ")).unwrap_or("");
    let cells: Vec<&str> = b.split_whitespace().collect();
    assert_eq!(
        cells[3..],
        ["fe", "web", "app.kubernetes.io/name=web,tier=fe"],
        "{t}"
    );
    let t = s
        .run(&["get", "cm", "--label-columns=tier,nope", "--no-headers"])
        .ok()
        .to_string();
    assert!(
        t.lines().any(|l| l.split_whitespace().last() == Some("be")),
        "{t}"
    );
}

/// `delete -f` of a directory holding a namespace and objects in it: the namespace goes last,
/// so the objects are reported deleted rather than NotFound (as the README's tour does it). The
/// wait for the namespace ends once the controller-manager's namespace controller emptied it.
#[test]
fn delete_of_files_deletes_namespaces_last() {
    let mut s = Server::start();
    s.start_controller_manager();
    let ns = s.file(
        "00-namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tour\n",
    );
    let cm = s.file(
        "10-cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: tour\n",
    );
    s.run(&["apply", "-f", &ns, "-f", &cm]).ok();
    assert_eq!(
        s.run(&["delete", "-f", &ns, "-f", &cm]).ok(),
        "configmap \"web\" deleted\nnamespace \"tour\" deleted\n"
    );
}

/// Without a controller-manager nothing empties a deleted namespace: the wait says it is
/// terminating and what is still in it, and `--timeout` ends it naming the namespace.
#[test]
fn deleting_a_namespace_without_a_controller_says_what_holds_it() {
    let s = Server::start();
    s.run(&["create", "namespace", "stays"]).ok();
    s.run(&["create", "configmap", "cfg", "-n", "stays"]).ok();
    let out = s.run(&["delete", "namespace", "stays", "--timeout=7s"]);
    assert_eq!(out.stdout, "namespace \"stays\" deleted\n");
    assert_eq!(out.code, 1, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let note = "namespace \"stays\" is terminating, and no namespace controller has reported on it (is rudder-controller-manager running?): it still holds configmaps (1); finalizers: kubernetes";
    assert_eq!(
        lines,
        [
            note,
            note,
            "error: timed out waiting for the condition on namespaces/stays"
        ],
        "{}",
        out.stderr
    );
    assert!(
        s.run(&["get", "namespace", "stays"])
            .ok()
            .contains("Terminating"),
        "still terminating"
    );
}

/// With a controller-manager, a namespace held by a finalizer on its content: the wait names
/// what the namespace controller reports, and `describe` shows its conditions.
#[test]
fn deleting_a_namespace_held_by_a_finalizer_names_it() {
    let mut s = Server::start();
    s.start_controller_manager();
    s.run(&["create", "namespace", "held"]).ok();
    let cm = s.file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\n  namespace: held\n  finalizers: [example.com/x]\n",
    );
    s.run(&["apply", "-f", &cm]).ok();
    let out = s.run(&["delete", "namespace", "held", "--timeout=7s"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let note = "namespace \"held\" is terminating: Some resources are remaining: configmaps. has 1 resource instances; Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances; finalizers: kubernetes";
    assert_eq!(
        out.stderr.lines().collect::<Vec<_>>(),
        [
            note,
            note,
            "error: timed out waiting for the condition on namespaces/held"
        ],
        "{}",
        out.stderr
    );
    let d = s.run(&["describe", "namespace", "held"]).ok().to_string();
    assert!(d.contains("Status:") && d.contains("Terminating"), "{d}");
    assert!(
        d.contains("NamespaceFinalizersRemaining")
            && d.contains("SomeFinalizersRemain")
            && d.contains("example.com/x in 1 resource instances"),
        "{d}"
    );
    s.run(&[
        "patch",
        "cm",
        "keep",
        "-n",
        "held",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .ok();
    s.run(&["wait", "--for=delete", "namespace/held", "--timeout=30s"])
        .ok();
}
