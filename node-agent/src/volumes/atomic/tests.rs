use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rudder_client::clock::ManualClock;
use rustix::fs::{Mode, OFlags};

use super::*;

fn payload(files: &[(&str, &str, u32)]) -> Payload {
    files
        .iter()
        .map(|(p, d, m)| {
            let file = FileProjection {
                data: d.as_bytes().to_vec(),
                mode: *m,
            };
            (p.to_string(), file)
        })
        .collect()
}

fn versions(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("..") && n != DATA_DIR)
        .collect();
    v.sort();
    v
}

fn link(dir: &Path, name: &str) -> String {
    std::fs::read_link(dir.join(name))
        .expect("readlink")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn writes_versioned_dir_data_link_and_visible_links() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let clock = ManualClock::new(7);
    let p = payload(&[("a", "one", 0o644), ("dir/b", "two", 0o600)]);
    assert!(write(dir, &p, &clock).expect("write"));

    let version = link(dir, DATA_DIR);
    assert!(
        version.starts_with("..2025_01_01_00_00_00."),
        "named from the injected clock: {version}"
    );
    assert_eq!(versions(dir), vec![version.clone()]);
    assert_eq!(link(dir, "a"), "..data/a");
    assert_eq!(link(dir, "dir"), "..data/dir");
    assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "one");
    assert_eq!(
        std::fs::read_to_string(dir.join("dir/b")).expect("b"),
        "two"
    );
    let mode = |p: &str| std::fs::metadata(dir.join(p)).expect("stat").mode() & 0o777;
    assert_eq!(mode("a"), 0o644);
    assert_eq!(mode("dir/b"), 0o600);
    assert_eq!(mode(&version), 0o755);
}

#[test]
fn rewrites_only_on_change_and_drops_the_old_version() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let clock = ManualClock::new(1);
    let v1 = payload(&[("a", "one", 0o644), ("b", "bee", 0o644)]);
    assert!(write(dir, &v1, &clock).expect("write"));
    let first = link(dir, DATA_DIR);

    assert!(!write(dir, &v1, &clock).expect("same again"), "unchanged");
    assert_eq!(link(dir, DATA_DIR), first);

    let mode_change = payload(&[("a", "one", 0o600), ("b", "bee", 0o644)]);
    assert!(
        write(dir, &mode_change, &clock).expect("mode"),
        "mode change"
    );
    let second = link(dir, DATA_DIR);
    assert_ne!(second, first);
    assert_eq!(versions(dir), vec![second.clone()], "old version removed");

    let removed = payload(&[("a", "uno", 0o600)]);
    assert!(write(dir, &removed, &clock).expect("content"));
    assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "uno");
    assert!(
        std::fs::symlink_metadata(dir.join("b")).is_err(),
        "the link of a removed name is gone"
    );

    let added_name = payload(&[("a", "uno", 0o600), ("c", "", 0o644)]);
    assert!(write(dir, &added_name, &clock).expect("name"), "new name");
    assert_eq!(link(dir, "c"), "..data/c");
}

#[test]
fn invalid_paths_are_refused_before_writing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1);
    for bad in [
        "../x",
        "a/../../x",
        "/etc/passwd",
        "..data",
        "..2020/x",
        "",
        ".",
        "./",
    ] {
        let err = write(tmp.path(), &payload(&[(bad, "x", 0o644)]), &clock)
            .expect_err(&format!("{bad:?} must be refused"));
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).expect("dir").count(),
        0,
        "nothing written"
    );
    let ok = payload(&[("./x//y", "v", 0o644)]);
    write(tmp.path(), &ok, &clock).expect("normalised");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("x/y")).expect("x/y"),
        "v"
    );
}

#[test]
fn leftovers_of_an_interrupted_write_are_cleaned_and_foreign_entries_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let clock = ManualClock::new(3);
    std::fs::create_dir(dir.join("..2020_01_01_00_00_00.1")).expect("stray version");
    std::fs::write(dir.join("..2020_01_01_00_00_00.1/a"), "old").expect("stray file");
    std::os::unix::fs::symlink("..2020_01_01_00_00_00.1", dir.join(DATA_DIR_TMP)).expect("tmp");
    std::fs::write(dir.join("mine"), "not the writer's").expect("foreign file");
    std::os::unix::fs::symlink("/elsewhere", dir.join("foreign-link")).expect("foreign link");

    write(dir, &payload(&[("a", "new", 0o644)]), &clock).expect("write");
    let current = link(dir, DATA_DIR);
    assert_eq!(versions(dir), vec![current]);
    assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "new");
    assert_eq!(
        std::fs::read_to_string(dir.join("mine")).expect("kept"),
        "not the writer's"
    );
    assert_eq!(link(dir, "foreign-link"), "/elsewhere");
}

/// Reads every file of the version `..data` points to, through one directory handle. `None`:
/// the version was replaced (and is being removed) while reading.
fn read_one_version(dir: &Path, names: &[&str]) -> Option<Vec<String>> {
    let fd = rustix::fs::openat(
        rustix::fs::CWD,
        dir.join(DATA_DIR),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut out = Vec::new();
    for name in names {
        match rustix::fs::openat(&fd, *name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(f) => {
                let mut s = String::new();
                std::fs::File::from(f).read_to_string(&mut s).expect("read");
                out.push(s);
            }
            Err(_) => {
                // Missing from a version that is still current means a half-written set.
                let opened = rustix::fs::fstat(&fd).expect("fstat");
                let now = std::fs::metadata(dir.join(DATA_DIR));
                let current = opened.st_nlink > 0
                    && now.is_ok_and(|m| m.ino() == opened.st_ino && m.dev() == opened.st_dev);
                assert!(!current, "{name} missing from the current version");
                return None;
            }
        }
    }
    Some(out)
}

#[test]
fn a_reader_following_data_never_sees_a_half_written_set() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let names = ["a", "b", "sub/c"];
    let version_payload = |n: usize| {
        // Large enough that writing a set takes a while.
        let body = format!("{n:06}:").repeat(8 * 1024);
        names
            .iter()
            .map(|p| {
                let f = FileProjection {
                    data: body.clone().into_bytes(),
                    mode: 0o644,
                };
                (p.to_string(), f)
            })
            .collect::<Payload>()
    };
    let clock = ManualClock::new(9);
    write(&dir, &version_payload(0), &clock).expect("first");

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (dir, done) = (dir.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let (mut consistent, mut last) = (0usize, 0usize);
                while !done.load(Ordering::Acquire) {
                    let Some(files) = read_one_version(&dir, &names) else {
                        continue;
                    };
                    let tags: Vec<&str> = files.iter().map(|f| &f[..6]).collect();
                    assert!(
                        tags.iter().all(|t| *t == tags[0]),
                        "mixed versions {tags:?}"
                    );
                    assert!(
                        files.iter().all(|f| f.len() == 7 * 8 * 1024),
                        "truncated file"
                    );
                    let n: usize = tags[0].parse().expect("tag");
                    assert!(n >= last, "went back from version {last} to {n}");
                    last = n;
                    consistent += 1;
                }
                consistent
            })
        })
        .collect();
    for n in 1..=300 {
        write(&dir, &version_payload(n), &clock).expect("update");
    }
    done.store(true, Ordering::Release);
    for r in readers {
        let reads = r.join().expect("reader panicked");
        assert!(
            reads > 20,
            "the reader ran too little to prove anything: {reads}"
        );
    }
    assert_eq!(versions(&dir).len(), 1);
}
