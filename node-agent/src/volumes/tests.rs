//! Volume setup, mounts and teardown against real directories. The tmpfs cases mount for
//! real: they need root (as the agent does) and fail loudly without it.

use std::os::unix::fs::MetadataExt;

use rudder_api::typed::Object;
use rudder_client::clock::ManualClock;
use serde_json::{Value, json};

use super::*;
use crate::objects::testing::MemObjects;

const TMPFS_MAGIC: u32 = 0x0102_1994;

/// A pods root in a temporary directory. Dropping it unmounts whatever a test left mounted
/// there, failed or not, before the directory is removed.
struct Fixture {
    tmp: tempfile::TempDir,
    vols: Volumes,
    objects: MemObjects,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vols = Volumes::new(tmp.path().join("pods"))
            .with_clock(ManualClock::shared(5))
            .with_allocatable(2000, 1 << 30);
        Fixture {
            tmp,
            vols,
            objects: MemObjects::default(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    async fn setup(&self, pod: &Pod) -> Result<PodVolumes, ConfigError> {
        let ctx = VolumeContext {
            node_name: "n1",
            pod_ip: "10.88.0.9",
            host_ip: "192.168.1.5",
        };
        self.vols.setup(pod, &ctx, &self.objects).await
    }

    async fn setup_ok(&self, pod: &Pod) -> PodVolumes {
        self.setup(pod).await.expect("volumes set up")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Err(e) = tmpfs::unmount_all_under(self.tmp.path()) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn pod(volumes: Value) -> Pod {
    pod_with(volumes, json!([{"name": "app", "image": "i"}]))
}

fn pod_with(volumes: Value, containers: Value) -> Pod {
    Pod::from_json(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1",
            "labels": {"app": "web"}, "annotations": {"build": "42"}},
        "spec": {"nodeName": "n1", "volumes": volumes, "containers": containers},
    }))
    .expect("pod json")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .mode()
        & 0o777
}

fn mounted(p: &Path) -> bool {
    tmpfs::is_mount_point(p).expect("mountinfo")
}

fn on_tmpfs(p: &Path) -> bool {
    rustix::fs::statfs(p).expect("statfs").f_type as u32 == TMPFS_MAGIC
}

fn vol<'a>(v: &'a PodVolumes, name: &str) -> &'a PodVolume {
    v.get(name)
        .unwrap_or_else(|| panic!("volume {name} missing"))
}

#[tokio::test]
async fn empty_dirs_on_disk_and_in_memory_with_teardown() {
    let f = Fixture::new();
    let p = pod(json!([
        {"name": "scratch", "emptyDir": {}},
        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "big", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}},
    ]));
    let v = f.setup_ok(&p).await;
    let scratch = &vol(&v, "scratch").path;
    assert_eq!(
        *scratch,
        f.path("pods/uid-1/volumes/kubernetes.io~empty-dir/scratch")
    );
    assert_eq!(mode(scratch), 0o777);
    assert!(!mounted(scratch));
    assert!(!vol(&v, "scratch").read_only);

    let mem = vol(&v, "mem").path.clone();
    assert!(
        mounted(&mem),
        "a memory emptyDir must be a tmpfs mount (needs root)"
    );
    let size = |p: &Path| {
        let s = rustix::fs::statvfs(p).expect("statvfs");
        s.f_blocks * s.f_frsize
    };
    assert_eq!(size(&mem), 16 << 20);
    assert_eq!(mode(&mem), 0o777);
    // Capped at the node's allocatable memory (1Gi here).
    assert_eq!(size(&vol(&v, "big").path), 1 << 30);
    std::fs::write(mem.join("f"), "x").expect("writable");

    // Idempotent: a second setup neither remounts nor loses data.
    f.setup_ok(&p).await;
    let pod_dir = f.vols.pod_dir("uid-1");
    assert_eq!(tmpfs::mounts_under(&pod_dir).expect("mounts").len(), 2);
    assert_eq!(read(&mem.join("f")), "x");

    assert_eq!(f.vols.pod_uids().expect("uids"), vec!["uid-1".to_string()]);
    f.vols.teardown("uid-1").await.expect("teardown");
    assert!(
        tmpfs::mounts_under(f.tmp.path())
            .expect("mounts")
            .is_empty()
    );
    assert!(!pod_dir.exists());
    assert!(f.vols.pod_uids().expect("uids").is_empty());
    f.vols.teardown("uid-1").await.expect("teardown of nothing");
    assert!(
        f.vols.teardown("../x").await.is_err(),
        "uid must be one name"
    );

    let bad = pod(json!([{"name": "h", "emptyDir": {"medium": "HugePages"}}]));
    let err = f.setup(&bad).await.expect_err("hugepages");
    assert!(
        err.to_string().contains("emptyDir medium \"HugePages\""),
        "{err}"
    );
}

#[tokio::test]
async fn config_map_volumes_keys_items_modes_and_updates() {
    let f = Fixture::new();
    f.objects.put_config_map(json!({
        "metadata": {"name": "app-config"},
        "data": {"app.conf": "port=80", "level": "debug"},
        "binaryData": {"logo.bin": "AAEC"},
    }));
    let p = pod(json!([
        {"name": "all", "configMap": {"name": "app-config"}},
        {"name": "some", "configMap": {"name": "app-config", "defaultMode": 0o600,
            "items": [{"key": "app.conf", "path": "etc/app.conf"},
                      {"key": "level", "path": "level.txt", "mode": 0o640}]}},
    ]));
    let v = f.setup_ok(&p).await;
    let all = vol(&v, "all");
    assert!(all.read_only);
    assert_eq!(read(&all.path.join("app.conf")), "port=80");
    assert_eq!(
        std::fs::read(all.path.join("logo.bin")).expect("binary"),
        vec![0, 1, 2]
    );
    assert_eq!(mode(&all.path.join("level")), 0o644);
    assert!(!mounted(&all.path), "configMap volumes live on disk");

    let some = &vol(&v, "some").path;
    assert_eq!(read(&some.join("etc/app.conf")), "port=80");
    assert_eq!(mode(&some.join("etc/app.conf")), 0o600);
    assert_eq!(mode(&some.join("level.txt")), 0o640);
    assert!(!some.join("level").exists(), "only the listed items");

    // Unchanged: no new version. Changed: the same directory shows the new contents.
    let version = std::fs::read_link(all.path.join(atomic::DATA_DIR)).expect("..data");
    f.setup_ok(&p).await;
    assert_eq!(
        std::fs::read_link(all.path.join(atomic::DATA_DIR)).expect("..data"),
        version
    );
    f.objects.put_config_map(json!({
        "metadata": {"name": "app-config"}, "data": {"app.conf": "port=8080"},
    }));
    let err = f.setup(&p).await.expect_err("level is gone but listed");
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"some\" : couldn't find key level in ConfigMap default/app-config"
    );
    // The other volume was refreshed all the same; the failing one keeps its last contents.
    assert_eq!(read(&all.path.join("app.conf")), "port=8080");
    assert!(!all.path.join("level").exists(), "removed key removed");
    assert_eq!(read(&some.join("level.txt")), "debug");
}

#[tokio::test]
async fn missing_config_maps_and_optional_ones() {
    let f = Fixture::new();
    f.objects
        .put_config_map(json!({"metadata": {"name": "present"}, "data": {"a": "1"}}));
    let p = pod(json!([
        {"name": "cfg", "configMap": {"name": "app-config"}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "maybe", "configMap": {"name": "app-config", "optional": true}},
        {"name": "partial", "configMap": {"name": "present", "optional": true,
            "items": [{"key": "a", "path": "a"}, {"key": "nope", "path": "nope"}]}},
    ]));
    let err = f.setup(&p).await.expect_err("required configmap missing");
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"cfg\" : configmap \"app-config\" not found"
    );
    // The other volumes were still set up.
    let base = f.path("pods/uid-1/volumes");
    assert!(base.join("kubernetes.io~empty-dir/scratch").is_dir());
    let maybe = base.join("kubernetes.io~configmap/maybe");
    let names: Vec<String> = std::fs::read_dir(&maybe)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "only ..data and its empty version: {names:?}"
    );
    assert!(names.iter().all(|n| n.starts_with("..")), "{names:?}");
    let partial = base.join("kubernetes.io~configmap/partial");
    assert_eq!(read(&partial.join("a")), "1");
    assert!(!partial.join("nope").exists());
}

#[tokio::test]
async fn secret_volumes_live_on_tmpfs() {
    let f = Fixture::new();
    f.objects.put_secret(json!({
        "metadata": {"name": "creds"},
        "data": {"password": "aHVudGVyMg==", "token": "dG9r"},
    }));
    let p = pod(json!([
        {"name": "s", "secret": {"secretName": "creds", "defaultMode": 0o440,
            "items": [{"key": "password", "path": "db/password", "mode": 0o400},
                      {"key": "token", "path": "token"}]}},
        {"name": "gone", "secret": {"secretName": "nope", "optional": true}},
    ]));
    let v = f.setup_ok(&p).await;
    let s = &vol(&v, "s").path;
    assert!(vol(&v, "s").read_only);
    assert!(mounted(s), "secret volumes are tmpfs mounts (needs root)");
    let data = s.join("..data");
    assert!(on_tmpfs(&data), "secret bytes must not reach the disk");
    assert_eq!(read(&s.join("db/password")), "hunter2");
    assert_eq!(mode(&s.join("db/password")), 0o400);
    assert_eq!(mode(&s.join("token")), 0o440);
    assert!(mounted(&vol(&v, "gone").path));

    let missing = pod(json!([{"name": "s", "secret": {"secretName": "nope"}}]));
    let mut other = missing.clone();
    other.metadata.uid = Some("uid-2".into());
    let err = f.setup(&other).await.expect_err("missing secret");
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"s\" : secret \"nope\" not found"
    );

    f.vols.teardown("uid-1").await.expect("teardown");
    f.vols.teardown("uid-2").await.expect("teardown");
    assert!(
        tmpfs::mounts_under(f.tmp.path())
            .expect("mounts")
            .is_empty()
    );
}

#[tokio::test]
async fn host_path_types() {
    let f = Fixture::new();
    let dir = f.path("host");
    std::fs::create_dir_all(dir.join("d")).expect("dir");
    std::fs::write(dir.join("file"), "x").expect("file");
    let sock = dir.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("socket");
    let s = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let cases: Vec<(String, &str, Option<String>)> = vec![
        (s("d"), "Directory", None),
        (s("new/deep"), "DirectoryOrCreate", None),
        (s("file"), "File", None),
        (s("made"), "FileOrCreate", None),
        (s("sock"), "Socket", None),
        (s("anything-missing"), "", None),
        (
            s("missing"),
            "Directory",
            Some(format!(
                "hostPath type check failed: {} is not a directory",
                s("missing")
            )),
        ),
        (
            s("file"),
            "Directory",
            Some(format!(
                "hostPath type check failed: {} is not a directory",
                s("file")
            )),
        ),
        (
            s("file"),
            "DirectoryOrCreate",
            Some(format!(
                "hostPath type check failed: {} is not a directory",
                s("file")
            )),
        ),
        (
            s("d"),
            "File",
            Some(format!(
                "hostPath type check failed: {} is not a file",
                s("d")
            )),
        ),
        (s("nodir/f"), "FileOrCreate", Some(String::new())),
        (
            s("file"),
            "Socket",
            Some(format!(
                "hostPath type check failed: {} is not a socket file",
                s("file")
            )),
        ),
        (
            s("file"),
            "CharDevice",
            Some(format!(
                "hostPath type check failed: {} is not a character device",
                s("file")
            )),
        ),
        ("/dev/null".into(), "CharDevice", None),
        (
            s("file"),
            "BlockDevice",
            Some(format!(
                "hostPath type check failed: {} is not a block device",
                s("file")
            )),
        ),
        (
            s("d"),
            "Weird",
            Some("Weird is an invalid volume type".into()),
        ),
        (
            "relative".into(),
            "",
            Some("hostPath \"relative\" must be an absolute path".into()),
        ),
    ];
    for (path, ty, want) in cases {
        let p = pod(json!([{"name": "h", "hostPath": {"path": path, "type": ty}}]));
        match (f.setup(&p).await, want) {
            (Ok(v), None) => {
                assert_eq!(vol(&v, "h").path, PathBuf::from(&path));
                assert!(!vol(&v, "h").read_only);
            }
            (Err(e), Some(want)) => {
                let prefix = "MountVolume.SetUp failed for volume \"h\" : ";
                let msg = e.to_string();
                assert!(msg.starts_with(prefix), "{msg}");
                if !want.is_empty() {
                    assert_eq!(&msg[prefix.len()..], want, "{path} {ty}");
                }
            }
            (got, want) => panic!("{path} {ty}: got {got:?}, wanted error {want:?}"),
        }
    }
    assert!(dir.join("new/deep").is_dir());
    assert_eq!(mode(&dir.join("made")), 0o644);
    assert!(dir.join("made").is_file());

    // Teardown leaves hostPath content alone.
    f.vols.teardown("uid-1").await.expect("teardown");
    assert_eq!(read(&dir.join("file")), "x");
}

#[tokio::test]
async fn downward_api_files_follow_the_pod() {
    let f = Fixture::new();
    let containers = json!([{"name": "app", "image": "i",
        "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}}}]);
    let volumes = json!([{"name": "info", "downwardAPI": {"defaultMode": 0o444, "items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "build", "fieldRef": {"fieldPath": "metadata.annotations['build']"}, "mode": 0o400},
        {"path": "meta/name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu", "divisor": "1m"}},
        {"path": "mem_limit", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "requests.memory", "divisor": "1Mi"}},
    ]}}]);
    let mut p = pod_with(volumes, containers);
    let v = f.setup_ok(&p).await;
    let d = &vol(&v, "info").path;
    assert_eq!(read(&d.join("labels")), "app=\"web\"");
    assert_eq!(read(&d.join("build")), "42");
    assert_eq!(mode(&d.join("build")), 0o400);
    assert_eq!(mode(&d.join("labels")), 0o444);
    assert_eq!(read(&d.join("meta/name")), "web");
    assert_eq!(read(&d.join("cpu")), "500");
    assert_eq!(
        read(&d.join("mem_limit")),
        "1024",
        "allocatable without a limit"
    );
    assert_eq!(read(&d.join("mem")), "64");

    let labels = p.metadata.labels.get_or_insert_default();
    labels.insert("tier".into(), "front".into());
    f.setup_ok(&p).await;
    assert_eq!(read(&d.join("labels")), "app=\"web\"\ntier=\"front\"");

    let bad = pod(json!([{"name": "x", "downwardAPI": {"items": [
        {"path": "c", "resourceFieldRef": {"containerName": "ghost", "resource": "limits.cpu"}}]}}]));
    let err = f.setup(&bad).await.expect_err("ghost container");
    assert!(
        err.to_string().ends_with("container ghost not found"),
        "{err}"
    );
}

#[tokio::test]
async fn projected_volumes_merge_sources() {
    let f = Fixture::new();
    f.objects
        .put_config_map(json!({"metadata": {"name": "ca"}, "data": {"ca.crt": "CERT"}}));
    f.objects
        .put_secret(json!({"metadata": {"name": "creds"}, "data": {"token": "dG9r"}}));
    let p = pod(json!([
        {"name": "all", "projected": {"defaultMode": 0o440, "sources": [
            {"configMap": {"name": "ca"}},
            {"secret": {"name": "creds", "items": [{"key": "token", "path": "auth/token", "mode": 0o400}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            {"serviceAccountToken": {"path": "sa-token"}},
            {"configMap": {"name": "missing", "optional": true}},
        ]}},
        {"name": "plain", "projected": {"sources": [{"configMap": {"name": "ca"}}]}},
    ]));
    let v = f.setup_ok(&p).await;
    let all = &vol(&v, "all").path;
    assert!(vol(&v, "all").read_only);
    assert_eq!(read(&all.join("ca.crt")), "CERT");
    assert_eq!(mode(&all.join("ca.crt")), 0o440);
    assert_eq!(read(&all.join("auth/token")), "tok");
    assert_eq!(mode(&all.join("auth/token")), 0o400);
    assert_eq!(read(&all.join("namespace")), "default");
    assert!(
        !all.join("sa-token").exists(),
        "service account tokens are skipped"
    );
    assert!(
        mounted(all),
        "a projected volume with a secret is a tmpfs (needs root)"
    );
    let plain = &vol(&v, "plain").path;
    assert!(!mounted(plain));
    assert_eq!(mode(&plain.join("ca.crt")), 0o644);

    let missing =
        pod(json!([{"name": "p", "projected": {"sources": [{"secret": {"name": "nope"}}]}}]));
    let err = f.setup(&missing).await.expect_err("missing secret");
    assert!(
        err.to_string().ends_with("secret \"nope\" not found"),
        "{err}"
    );
    f.vols.teardown("uid-1").await.expect("teardown");
}

#[tokio::test]
async fn claims_resolve_to_their_volume_directory() {
    let f = Fixture::new();
    let data = f.path("pv-data/one");
    f.objects
        .put_pvc(json!({"metadata": {"name": "data", "uid": "c-1"},
        "spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}}));
    f.objects
        .put_pv(json!({"metadata": {"name": "pv1"}, "spec": {
        "hostPath": {"path": data.to_string_lossy()},
        "claimRef": {"namespace": "default", "name": "data", "uid": "c-1"}}}));
    f.objects.put_pvc(
        json!({"metadata": {"name": "pending"}, "spec": {}, "status": {"phase": "Pending"}}),
    );
    f.objects.put_pvc(json!({"metadata": {"name": "lost"}, "spec": {"volumeName": "pv1"}, "status": {"phase": "Lost"}}));
    f.objects
        .put_pvc(json!({"metadata": {"name": "nopv"}, "spec": {"volumeName": "pv9"}}));
    f.objects
        .put_pvc(json!({"metadata": {"name": "thief"}, "spec": {"volumeName": "pv1"}}));
    f.objects
        .put_pvc(json!({"metadata": {"name": "nfs"}, "spec": {"volumeName": "pv-nfs"}}));
    f.objects.put_pv(
        json!({"metadata": {"name": "pv-nfs"}, "spec": {"nfs": {"server": "s", "path": "/x"}}}),
    );

    let p = pod(
        json!([{"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                       {"name": "ro", "persistentVolumeClaim": {"claimName": "data", "readOnly": true}}]),
    );
    let v = f.setup_ok(&p).await;
    assert_eq!(vol(&v, "d").path, data);
    assert!(!vol(&v, "d").read_only);
    assert!(vol(&v, "ro").read_only);
    assert_eq!(mode(&data), 0o777);
    std::fs::write(data.join("keep"), "me").expect("write");
    f.vols.teardown("uid-1").await.expect("teardown");
    assert_eq!(
        read(&data.join("keep")),
        "me",
        "claim data outlives the pod"
    );

    let cases = [
        ("missing", "persistentvolumeclaim \"missing\" not found"),
        ("pending", "persistentvolumeclaim \"pending\" is not bound"),
        ("lost", "persistentvolumeclaim \"lost\" is not bound"),
        ("nopv", "persistentvolume \"pv9\" not found"),
        (
            "thief",
            "persistentvolume \"pv1\" is bound to claim default/data, not default/thief",
        ),
        (
            "nfs",
            "persistentvolume \"pv-nfs\" has neither hostPath nor local: this node mounts only those",
        ),
    ];
    for (claim, want) in cases {
        let p = pod(json!([{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]));
        let err = f.setup(&p).await.expect_err(claim);
        assert_eq!(
            err.to_string(),
            format!("MountVolume.SetUp failed for volume \"d\" : {want}")
        );
    }
}

#[tokio::test]
async fn mounts_follow_volume_mounts() {
    let f = Fixture::new();
    f.objects
        .put_config_map(json!({"metadata": {"name": "cfg"}, "data": {"app.conf": "x"}}));
    let containers = json!([{"name": "app", "image": "i", "volumeMounts": [
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "scratch", "mountPath": "/logs", "subPath": "logs/app", "readOnly": true},
        {"name": "cfg", "mountPath": "/etc/app.conf", "subPath": "app.conf"},
        {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": false},
    ]}]);
    let p = pod_with(
        json!([{"name": "scratch", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}]),
        containers,
    );
    let v = f.setup_ok(&p).await;
    let c = &p.spec.as_ref().expect("spec").containers[0];
    let mounts = f.vols.mounts_for(&v, c).expect("mounts");
    let scratch = vol(&v, "scratch").path.clone();
    let cfg = vol(&v, "cfg").path.clone();
    assert_eq!(
        mounts[0],
        Mount {
            source: scratch.clone(),
            target: "/scratch".into(),
            read_only: false
        }
    );
    assert_eq!(
        mounts[1],
        Mount {
            source: scratch.join("logs/app"),
            target: "/logs".into(),
            read_only: true
        }
    );
    assert!(
        scratch.join("logs/app").is_dir(),
        "a missing subPath is created"
    );
    assert_eq!(
        mode(&scratch.join("logs/app")),
        0o777,
        "with the volume's mode"
    );
    // A subPath of a configMap key resolves to the file in the current version.
    let version = std::fs::read_link(cfg.join("..data")).expect("..data");
    assert_eq!(mounts[2].source, cfg.join(version).join("app.conf"));
    assert!(
        mounts[2].read_only && mounts[3].read_only,
        "configMap mounts are read-only"
    );

    let mount_of = |m: Value| {
        let mut c = c.clone();
        c.volume_mounts = Some(vec![serde_json::from_value(m).expect("mount json")]);
        f.vols.mounts_for(&v, &c)
    };
    let err = mount_of(json!({"name": "nope", "mountPath": "/x"})).expect_err("unknown volume");
    assert_eq!(
        err.to_string(),
        "cannot find volume \"nope\" to mount into container \"app\""
    );

    std::os::unix::fs::symlink("/etc", scratch.join("escape")).expect("symlink");
    for sub in ["escape", "escape/newdir", "../x", "/abs"] {
        let err =
            mount_of(json!({"name": "scratch", "mountPath": "/x", "subPath": sub})).expect_err(sub);
        assert!(
            err.to_string()
                .starts_with(&format!("failed to prepare subPath {sub:?}")),
            "{err}"
        );
    }
    assert!(
        !Path::new("/etc/newdir").exists(),
        "nothing created through the symlink"
    );
    let err = mount_of(json!({"name": "scratch", "mountPath": "/x", "subPathExpr": "$(POD)"}))
        .expect_err("subPathExpr");
    assert!(
        err.to_string().contains("subPathExpr is not supported"),
        "{err}"
    );
}

#[tokio::test]
async fn unsupported_volume_kinds_and_uids() {
    let f = Fixture::new();
    let p = pod(json!([{"name": "n", "nfs": {"server": "s", "path": "/x"}}]));
    let err = f.setup(&p).await.expect_err("nfs");
    assert!(
        err.to_string().contains("no volume plugin matched"),
        "{err}"
    );
    let mut no_uid = pod(json!([]));
    no_uid.metadata.uid = None;
    assert!(f.setup(&no_uid).await.is_err());
    let mut bad_uid = pod(json!([]));
    bad_uid.metadata.uid = Some("../../etc".into());
    assert!(f.setup(&bad_uid).await.is_err());
    assert!(f.setup_ok(&pod(json!([]))).await.is_empty());
}
