//! End-to-end tests: `rudder` against a real `rudder-apiserver`.

mod common;

use common::{Server, run_rudder};
use serde_json::Value;

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: fe}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: nginx
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
";

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

#[test]
fn apply_get_describe_diff() {
    let s = Server::start();
    let f = s.file("web.yaml", DEPLOY);
    assert_eq!(
        s.run(&["apply", "-f", &f]).ok(),
        "deployment.apps/web created\nservice/web created\n"
    );
    assert_eq!(
        s.run(&["apply", "-f", &f]).ok(),
        "deployment.apps/web unchanged\nservice/web unchanged\n"
    );
    // diff: nothing to change → exit 0, no output.
    let d = s.run(&["diff", "-f", &f]);
    assert_eq!((d.code, d.stdout.as_str()), (0, ""), "{}", d.stderr);

    // Someone else adds a label; the file changes replicas and drops the "tier" label.
    s.run(&["label", "deploy", "web", "owner=ops"]).ok();
    let changed = DEPLOY
        .replace("replicas: 2", "replicas: 3")
        .replace(", tier: fe", "");
    let f2 = s.file("web2.yaml", &changed);
    let d = s.run(&["diff", "-f", &f2]);
    assert_eq!(d.code, 1, "{}", d.stderr);
    assert!(
        d.stdout.contains("-  replicas: 2\n+  replicas: 3\n"),
        "{}",
        d.stdout
    );
    assert!(d.stdout.contains("-    tier: fe\n"), "{}", d.stdout);
    // Server dry run changes nothing.
    assert_eq!(
        s.run(&["apply", "-f", &f2, "--dry-run=server"]).ok(),
        "deployment.apps/web configured (server dry run)\nservice/web unchanged\n"
    );
    assert_eq!(
        s.run(&["apply", "-f", &f2, "--dry-run=client"]).ok(),
        "deployment.apps/web configured (dry run)\nservice/web unchanged\n"
    );
    let live = json(s.run(&["get", "deploy", "web", "-o", "json"]).ok());
    assert_eq!(live["spec"]["replicas"], 2);
    assert_eq!(
        s.run(&["apply", "-f", &f2]).ok(),
        "deployment.apps/web configured\nservice/web unchanged\n"
    );
    let live = json(s.run(&["get", "deploy/web", "-o", "json"]).ok());
    assert_eq!(live["spec"]["replicas"], 3);
    let labels = &live["metadata"]["labels"];
    assert_eq!(
        labels["tier"],
        Value::Null,
        "removed from the file: deleted"
    );
    assert_eq!(labels["owner"], "ops", "set by someone else: kept");
    assert_eq!(labels["app"], "web");

    // Output formats.
    let list = json(s.run(&["get", "deploy", "-o", "json"]).ok());
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let y = s.run(&["get", "svc", "-o", "yaml"]).ok().to_string();
    assert!(y.contains("kind: List\n") && y.contains("name: web"), "{y}");
    let y = s.run(&["get", "svc", "web", "-o", "yaml"]).ok().to_string();
    assert!(
        y.contains("kind: Service\n") && !y.contains("kind: List"),
        "{y}"
    );
    assert_eq!(
        s.run(&["get", "deploy,svc", "-o", "name"]).ok(),
        "deployment.apps/web\nservice/web\n"
    );
    let wide = s
        .run(&["get", "deployments.apps", "-o", "wide"])
        .ok()
        .to_string();
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(
        wide.lines().nth(1).unwrap_or("").starts_with("web "),
        "{wide}"
    );
    let t = s.run(&["get", "svc"]).ok().to_string();
    assert!(t.starts_with("NAME "), "{t}");
    assert!(t.contains("80/TCP"), "{t}");
    let a = s.run(&["get", "deploy", "-A"]).ok().to_string();
    assert!(a.starts_with("NAMESPACE "), "{a}");

    // Selectors.
    assert_eq!(
        s.run(&["get", "deploy", "-l", "owner=ops", "-o", "name"])
            .ok(),
        "deployment.apps/web\n"
    );
    let none = s.run(&["get", "deploy", "-l", "owner=nobody"]);
    assert_eq!(none.ok(), "");
    assert_eq!(none.stderr, "No resources found in default namespace.\n");
    assert_eq!(
        s.run(&[
            "get",
            "svc",
            "--field-selector",
            "metadata.name=web",
            "-o",
            "name"
        ])
        .ok(),
        "service/web\n"
    );
    assert_eq!(
        s.run(&[
            "get",
            "svc",
            "--field-selector",
            "metadata.name=x",
            "-o",
            "name"
        ])
        .ok(),
        ""
    );
    // Pagination: chunk of 1 still returns everything.
    s.run(&["create", "configmap", "a"]).ok();
    s.run(&["create", "configmap", "b"]).ok();
    assert_eq!(
        s.run(&["get", "cm", "--chunk-size", "1", "-o", "name"])
            .ok(),
        "configmap/a\nconfigmap/b\n"
    );

    let desc = s.run(&["describe", "deploy", "web"]).ok().to_string();
    assert!(desc.starts_with("Name:"), "{desc}");
    assert!(
        desc.contains("Namespace:") && desc.contains("default"),
        "{desc}"
    );
    assert!(desc.contains("owner=ops"), "{desc}");
    assert!(desc.contains("3 desired"), "{desc}");
    assert!(desc.contains("Image:") && desc.contains("nginx"), "{desc}");
    assert!(desc.contains("Events:"), "{desc}");

    // A new object shows in diff as all additions.
    let cm = s.file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fresh}\ndata: {k: v}\n",
    );
    let d = s.run(&["diff", "-f", &cm]);
    assert_eq!(d.code, 1);
    assert!(d.stdout.contains("+kind: ConfigMap"), "{}", d.stdout);
    s.run(&["get", "cm", "fresh"]).err_line();
}

#[test]
fn apply_from_directory_and_stdin_into_namespace() {
    let s = Server::start();
    s.run(&["create", "namespace", "dev"]).ok();
    let dir = s.home().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("a.json"),
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let d = dir.display().to_string();
    assert_eq!(
        s.run(&["apply", "-n", "dev", "-f", &d]).ok(),
        "configmap/a created\nconfigmap/b created\n"
    );
    assert_eq!(
        s.run_stdin(
            &["apply", "-n", "dev", "-f", "-"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
        )
        .ok(),
        "configmap/c created\n"
    );
    assert_eq!(
        s.run(&["get", "cm", "-n", "dev", "-o", "name"]).ok(),
        "configmap/a\nconfigmap/b\nconfigmap/c\n"
    );
    assert_eq!(s.run(&["get", "cm", "-o", "name"]).ok(), "");
}

#[test]
fn create_label_annotate_patch_delete_wait() {
    let s = Server::start();
    assert_eq!(
        s.run(&["create", "namespace", "dev"]).ok(),
        "namespace/dev created\n"
    );
    let conf = s.file("app.conf", "x=1\n");
    assert_eq!(
        s.run(&[
            "create",
            "configmap",
            "cfg",
            "--from-literal",
            "a=1",
            "--from-file",
            &conf
        ])
        .ok(),
        "configmap/cfg created\n"
    );
    let cm = json(s.run(&["get", "cm", "cfg", "-o", "json"]).ok());
    assert_eq!(cm["data"]["a"], "1");
    assert_eq!(cm["data"]["app.conf"], "x=1\n");
    assert_eq!(
        s.run(&[
            "create",
            "secret",
            "generic",
            "sec",
            "--from-literal",
            "p=hunter2"
        ])
        .ok(),
        "secret/sec created\n"
    );
    let sec = json(s.run(&["get", "secret", "sec", "-o", "json"]).ok());
    assert_eq!(sec["data"]["p"], "aHVudGVyMg==");
    let y = s
        .run(&[
            "create",
            "configmap",
            "dry",
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .ok()
        .to_string();
    assert!(y.contains("name: dry"), "{y}");
    assert_eq!(
        s.run(&["create", "ns", "x", "--dry-run=server"]).ok(),
        "namespace/x created (server dry run)\n"
    );
    s.run(&["get", "ns", "x"]).err_line();

    // label / annotate
    assert_eq!(
        s.run(&["label", "cm", "cfg", "app=web", "tier=fe"]).ok(),
        "configmap/cfg labeled\n"
    );
    assert_eq!(
        s.run(&["label", "cm", "cfg", "app=db"]).err_line(),
        "error: 'app' already has a value (web), and --overwrite is false"
    );
    s.run(&["label", "cm/cfg", "app=db", "tier-", "--overwrite"])
        .ok();
    let cm = json(s.run(&["get", "cm", "cfg", "-o", "json"]).ok());
    assert_eq!(cm["metadata"]["labels"], serde_json::json!({"app": "db"}));
    assert_eq!(
        s.run(&["annotate", "cm", "cfg", "note=hello"]).ok(),
        "configmap/cfg annotated\n"
    );
    let cm = json(s.run(&["get", "cm", "cfg", "-o", "json"]).ok());
    assert_eq!(cm["metadata"]["annotations"]["note"], "hello");

    // patch
    assert_eq!(
        s.run(&["patch", "cm", "cfg", "-p", r#"{"data":{"b":"2"}}"#])
            .ok(),
        "configmap/cfg patched\n"
    );
    assert_eq!(
        s.run(&[
            "patch",
            "cm",
            "cfg",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/data/a"}]"#
        ])
        .ok(),
        "configmap/cfg patched\n"
    );
    let cm = json(s.run(&["get", "cm", "cfg", "-o", "json"]).ok());
    assert_eq!(cm["data"]["b"], "2");
    assert_eq!(cm["data"]["a"], Value::Null);

    // edit through a scripted editor
    let o = s.run_env(&["edit", "cm", "cfg"], &[("EDITOR", "sed -i s/hello/bye/")]);
    assert_eq!(o.ok(), "configmap/cfg edited\n");
    let cm = json(s.run(&["get", "cm", "cfg", "-o", "json"]).ok());
    assert_eq!(cm["metadata"]["annotations"]["note"], "bye");
    assert_eq!(
        s.run_env(&["edit", "cm", "cfg"], &[("EDITOR", "true")])
            .ok(),
        "Edit cancelled, no changes made.\n"
    );

    // delete by name, label, file, --all
    s.run(&["create", "cm", "one"]).ok();
    s.run(&["create", "cm", "two"]).ok();
    s.run(&["label", "cm", "two", "gone=yes"]).ok();
    assert_eq!(
        s.run(&["delete", "cm", "one"]).ok(),
        "configmap \"one\" deleted\n"
    );
    assert_eq!(
        s.run(&["delete", "cm", "-l", "gone=yes"]).ok(),
        "configmap \"two\" deleted\n"
    );
    let f = s.file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: three}\n",
    );
    s.run(&["apply", "-f", &f]).ok();
    assert_eq!(
        s.run(&["delete", "-f", &f]).ok(),
        "configmap \"three\" deleted\n"
    );
    assert_eq!(
        s.run(&["delete", "cm", "one"]).err_line(),
        "Error from server (NotFound): configmaps \"one\" not found"
    );
    s.run(&["delete", "cm", "one", "--ignore-not-found"]).ok();

    // wait --for=delete: returns once another process deletes it.
    let addr = s.addr.clone();
    let home = s.home().to_path_buf();
    let deleter = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        run_rudder(Some(&addr), &home, &["delete", "secret", "sec"], None, &[])
    });
    assert_eq!(
        s.run(&["wait", "secret/sec", "--for=delete", "--timeout=20s"])
            .ok(),
        "secret/sec deleted\n"
    );
    deleter.join().unwrap().ok();
    let to = s.run(&["wait", "cm", "cfg", "--for=condition=Ready", "--timeout=1s"]);
    assert_eq!(
        to.err_line(),
        "error: timed out waiting for the condition on configmaps/cfg"
    );

    assert_eq!(
        s.run(&["delete", "cm", "--all"]).ok(),
        "configmap \"cfg\" deleted\n"
    );
}

#[test]
fn errors_are_one_line() {
    let s = Server::start();
    assert_eq!(
        s.run(&["get", "widgets"]).err_line(),
        "error: the server doesn't have a resource type \"widgets\""
    );
    let bad = s.file("bad.yaml", "a: [1\n");
    let e = s.run(&["apply", "-f", &bad]).err_line().to_string();
    assert!(
        e.starts_with(&format!("error: error parsing {bad}: invalid YAML")),
        "{e}"
    );
    let uf = s.file(
        "uf.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndataa: {a: b}\n",
    );
    let e = s.run(&["apply", "-f", &uf]).err_line().to_string();
    // kubectl: strict decoding errors are BadRequest (validation errors are Invalid).
    assert!(e.starts_with("Error from server (BadRequest): "), "{e}");
    assert!(e.contains("unknown field \"dataa\""), "{e}");
    let uk = s.file(
        "uk.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
    );
    let e = s.run(&["apply", "-f", &uk]).err_line().to_string();
    assert_eq!(
        e,
        format!(
            "error: resource mapping not found for name: \"x\" namespace: \"\" from \"{uk}\": no matches for kind \"Widget\" in version \"example.com/v1\""
        )
    );
    assert_eq!(
        s.run(&["get", "deploy", "nope"]).err_line(),
        "Error from server (NotFound): deployments.apps \"nope\" not found"
    );
    // Unreachable server: one line naming the address.
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let o = run_rudder(Some(&addr), s.home(), &["get", "pods"], None, &[]);
    let e = o.err_line();
    assert!(
        e.starts_with(&format!("error: no API server reachable at {addr}")),
        "{e}"
    );
    // Usage errors exit 1, as kubectl's (clap's own code would be 2).
    assert_eq!(s.run(&["get"]).code, 1);

    let ar = s.run(&["api-resources"]).ok().to_string();
    let header: Vec<&str> = ar.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    assert!(
        ar.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["deployments", "deploy", "apps/v1", "true", "Deployment"]),
        "{ar}"
    );
    let v = s.run(&["version"]).ok().to_string();
    assert!(
        v.starts_with("Client Version: v") && v.contains("Server Version: v"),
        "{v}"
    );
}

#[test]
fn config_file_names_the_server() {
    let s = Server::start();
    std::fs::write(
        s.home().join("config"),
        format!("# test\nserver: {}\n", s.addr),
    )
    .unwrap();
    let o = run_rudder(
        None,
        s.home(),
        &["get", "ns", "default", "-o", "name"],
        None,
        &[],
    );
    assert_eq!(o.ok(), "namespace/default\n");
    // --server beats the config file.
    let bad = format!("127.0.0.1:{}", common::free_port());
    let o = run_rudder(None, s.home(), &["--server", &bad, "get", "ns"], None, &[]);
    assert!(o.err_line().contains(&bad));
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn up_status_down() {
    // Checked first so a missing binary fails with the clear message.
    common::apiserver_bin();
    let sched = common::rudder_bin().with_file_name("rudder-scheduler");
    assert!(
        sched.is_file(),
        "rudder-scheduler is not built at {}: run `cargo build -p rudder-scheduler` first",
        sched.display()
    );
    let cm = common::rudder_bin().with_file_name("rudder-controller-manager");
    assert!(
        cm.is_file(),
        "rudder-controller-manager is not built at {}: run `cargo build -p rudder-controller-manager` first",
        cm.display()
    );
    let proxy = common::rudder_bin().with_file_name("rudder-proxy");
    assert!(
        proxy.is_file(),
        "rudder-proxy is not built at {}: run `cargo build -p rudder-proxy` first",
        proxy.display()
    );
    let agent = common::rudder_bin().with_file_name("rudder-node-agent");
    assert!(
        agent.is_file(),
        "rudder-node-agent is not built at {}: run `cargo build -p rudder-node-agent` first",
        agent.display()
    );
    let home = tempfile::tempdir().unwrap();
    let cluster = common::LocalCluster::new("cli-test", 217, 219);
    // Stops the cluster and removes the node's containers and the networks even if an
    // assertion fails.
    let _down = cluster.guard(home.path());
    let (listen, health, cm_health, proxy_health, table, prefix) = (
        cluster.listen.as_str(),
        cluster.scheduler_health.as_str(),
        cluster.controller_manager_health.as_str(),
        cluster.proxy_health.as_str(),
        cluster.nft_table.as_str(),
        cluster.prefix.as_str(),
    );
    let run = |args: &[&str]| run_rudder(None, home.path(), args, None, &[]);
    let owned = cluster.up_args();
    let up_args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let up = run(&up_args);
    let out = up.ok().to_string();
    assert!(
        out.contains(&format!("export RUDDER_SERVER={listen}")),
        "{out}"
    );
    assert!(home.path().join("data/apiserver.pid").is_file());
    assert!(home.path().join("data/logs/apiserver.log").is_file());
    assert!(home.path().join("data/scheduler.pid").is_file());
    assert!(out.contains("scheduler started"), "{out}");
    assert!(out.contains("controller-manager started"), "{out}");
    let cfg = std::fs::read_to_string(home.path().join("config")).unwrap();
    let admin = home.path().join("data/pki/credentials/admin.yaml");
    assert_eq!(
        cfg,
        format!("server: {listen}\ncredentials: {}\n", admin.display())
    );
    // The config file now routes plain commands to it, as the admin.
    run(&["get", "ns", "default"]).ok();
    // Without a client certificate the cluster refuses the caller, and says why.
    let text = std::fs::read_to_string(&admin).unwrap();
    let ca = text
        .split("client-certificate:")
        .next()
        .unwrap_or_default()
        .to_string();
    std::fs::write(home.path().join("ca-only.yaml"), ca).unwrap();
    let refused = run(&["get", "ns", "--credentials", "ca-only.yaml"]);
    assert!(
        refused
            .err_line()
            .contains("anonymous requests are refused"),
        "{}",
        refused.stderr
    );
    let again = run(&up_args);
    assert!(again.ok().contains("already running"), "{}", again.stdout);
    let st = run(&["status", "--data-dir", "data"]);
    let text = st.ok().to_string();
    assert!(
        text.contains("apiserver") && text.contains(" yes ") && text.contains(" ok "),
        "{text}"
    );
    let sched_row = text
        .lines()
        .find(|l| l.starts_with("scheduler"))
        .unwrap_or_default();
    assert!(
        sched_row.contains(" yes ") && sched_row.contains(" ok ") && sched_row.contains(health),
        "{text}"
    );
    let cm_row = text
        .lines()
        .find(|l| l.starts_with("controller-manager"))
        .unwrap_or_default();
    assert!(
        cm_row.contains(" yes ") && cm_row.contains(" ok ") && cm_row.contains(cm_health),
        "the controller-manager joins up and status: {text}"
    );
    let proxy_row = text
        .lines()
        .find(|l| l.starts_with("proxy"))
        .unwrap_or_default();
    assert!(
        proxy_row.contains(" yes ")
            && proxy_row.contains(" ok ")
            && proxy_row.contains(proxy_health),
        "the proxy joins up and status: {text}"
    );
    let nft_table = || {
        std::process::Command::new("nft")
            .args(["list", "table", "ip", table])
            .output()
            .expect("nft runs")
    };
    wait_until("the proxy's first sync", || nft_table().status.success());
    let rules = String::from_utf8_lossy(&nft_table().stdout).into_owned();
    assert!(rules.contains("service-ips"), "{rules}");
    assert!(text.contains("objects:"), "{text}");
    let agent_row = text
        .lines()
        .find(|l| l.starts_with("node-agent-1"))
        .unwrap_or_default();
    assert!(
        agent_row.contains(" yes ") && agent_row.contains(" ok "),
        "the node agent joins up and status: {text}"
    );
    // The Service range sits on a local bridge: a Service address never leaves by the uplink.
    // (The agent answers health before it has set its networks up.)
    let inspect = || {
        let o = std::process::Command::new("docker")
            .args(["network", "inspect", "rudder-cli-test-svc", "--format"])
            .arg("{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}")
            .output()
            .expect("docker runs");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    wait_until("the services network", || !inspect().is_empty());
    assert_eq!(inspect(), "10.219.0.0/16 10.219.255.254");
    let svc = run_rudder(
        None,
        home.path(),
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: probe\nspec:\n  ports:\n  - port: 80\n",
        ),
        &[],
    );
    let got = run(&["get", "svc", "probe", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(
        got.ok().starts_with("10.219."),
        "the API server allocates from --service-cidr: {} {}",
        got.stdout,
        svc.stderr
    );
    // A LoadBalancer Service gets an address from the pool `up` gives the controller-manager:
    // the last /24 of the pod subnet.
    run_rudder(
        None,
        home.path(),
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: lb\nspec:\n  type: LoadBalancer\n  ports:\n  - port: 80\n",
        ),
        &[],
    )
    .ok();
    let lb = || {
        run(&[
            "get",
            "svc",
            "lb",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ])
        .stdout
    };
    wait_until("a LoadBalancer address", || lb().starts_with("10.217.255."));
    let nodes = run(&["get", "nodes"]);
    assert!(
        nodes.ok().contains(&format!("{prefix}-1")),
        "its node registered: {}",
        nodes.stdout
    );
    let down = run(&["down", "--data-dir", "data"]);
    let said = down.ok().to_string();
    assert!(said.contains("stopped"), "{said}");
    // The networks the node agent made go with the cluster.
    assert!(said.contains("removed network rudder-cli-test"), "{said}");
    let net = std::process::Command::new("docker")
        .args(["network", "inspect", "rudder-cli-test"])
        .output()
        .expect("docker runs");
    assert!(!net.status.success(), "down removes the pod network");
    assert!(
        home.path().join("data/apiserver").is_dir(),
        "plain down keeps the data"
    );
    assert!(!home.path().join("data/apiserver.pid").exists());
    assert!(!home.path().join("data/scheduler.pid").exists());
    assert!(!home.path().join("data/controller-manager.pid").exists());
    assert!(!home.path().join("data/node-agent-1.pid").exists());
    assert!(!home.path().join("data/proxy.pid").exists());
    assert!(
        !nft_table().status.success(),
        "down removes the proxy's table"
    );
    let st = run(&["status", "--data-dir", "data"]);
    assert_eq!(st.code, 3, "{}", st.stdout);
    let o = run(&["get", "ns"]);
    assert!(o.err_line().contains(listen));
    let purge = run(&["down", "--data-dir", "data", "--purge"]);
    assert!(purge.ok().contains("deleted"), "{}", purge.stdout);
    assert!(
        !home.path().join("data").exists(),
        "--purge deletes the data"
    );
}

/// A loopback port `p` with `p`, `p + 1` and `p + 2` all free now.
fn three_free_ports() -> u16 {
    loop {
        let p = common::free_port();
        let free = |q: u16| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok();
        if p < 65_000 && free(p + 1) && free(p + 2) {
            return p;
        }
    }
}

#[test]
fn up_with_three_masters_replicates_serves_sessions_through_each_and_survives_losing_one() {
    common::apiserver_bin();
    let home = tempfile::tempdir().unwrap();
    let mut cluster = common::LocalCluster::new("cli-masters", 227, 228);
    let api = three_free_ports();
    cluster.listen = format!("127.0.0.1:{api}");
    let _down = cluster.guard(home.path());
    let run = |args: &[&str]| run_rudder(None, home.path(), args, None, &[]);
    let mut args = cluster.up_args();
    let raft = three_free_ports().to_string();
    args.extend(["--masters".into(), "3".into(), "--raft-port".into(), raft]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let up = run(&args);
    let out = up.ok().to_string();
    let all = format!(
        "127.0.0.1:{api},127.0.0.1:{},127.0.0.1:{}",
        api + 1,
        api + 2
    );
    assert!(
        out.contains(&format!("export RUDDER_SERVER={all}")),
        "{out}"
    );
    for c in ["apiserver", "apiserver-2", "apiserver-3"] {
        assert!(home.path().join(format!("data/{c}.pid")).is_file(), "{c}");
        assert!(
            home.path().join(format!("data/{c}")).is_dir(),
            "{c}'s store"
        );
    }
    let st = run(&["status", "--data-dir", "data"]);
    let text = st.ok().to_string();
    for c in ["apiserver ", "apiserver-2 ", "apiserver-3 "] {
        let row = text.lines().find(|l| l.starts_with(c)).unwrap_or_default();
        assert!(row.contains(" yes ") && row.contains(" ok "), "{c}: {text}");
    }
    assert!(text.contains("replication:     member 1 of 3"), "{text}");
    assert!(text.contains("alarms:          none"), "{text}");
    // The node agent keeps its relay stream open to every master: logs through each of them.
    rudder_testkit::images::require_docker();
    let image = rudder_testkit::images::busybox();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: talk\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: sh\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo hello from the pod; sleep 3600\"]\n"
    );
    run_rudder(None, home.path(), &["apply", "-f", "-"], Some(&pod), &[]).ok();
    for i in 0..3u16 {
        let server = format!("127.0.0.1:{}", api + i);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let logs = run(&["--server", &server, "logs", "talk"]);
            if logs.code == 0 && logs.stdout.contains("hello from the pod") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log through master {}: {} {}",
                i + 1,
                logs.stdout,
                logs.stderr
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    // One master down: the others keep serving reads and writes through the same config.
    let pid: i32 = std::fs::read_to_string(home.path().join("data/apiserver-2.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let cm = run_rudder(
        None,
        home.path(),
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: survives\ndata:\n  k: v\n"),
        &[],
    );
    cm.ok();
    let got = run(&["get", "configmap", "survives", "-o", "jsonpath={.data.k}"]);
    assert_eq!(got.ok().trim(), "v");
    let down = run(&["down", "--data-dir", "data"]);
    down.ok();
    assert!(!home.path().join("data/apiserver-3.pid").exists());
}
