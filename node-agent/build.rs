//! Compiles the sandbox's pause process (`pause/pause.rs`, std only) into a static binary in
//! `OUT_DIR`, which `runtime::docker` embeds and turns into the pause image. The image tag is a
//! hash of the binary (`RUDDER_PAUSE_HASH`), so a changed binary gets a new image.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=pause/pause.rs");
    println!("cargo:rerun-if-changed=build.rs");

    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let target = env::var("TARGET").expect("cargo sets TARGET for build scripts");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let source = manifest_dir.join("pause").join("pause.rs");
    let output = out_dir.join("pause");

    // The image is FROM scratch: no dynamic loader, no libc, so the binary must be static.
    let result = Command::new(&rustc)
        .arg("--edition=2024")
        .arg("--crate-name=pause")
        .arg("--crate-type=bin")
        .arg("--target")
        .arg(&target)
        .args(["-C", "target-feature=+crt-static"])
        .args(["-C", "opt-level=s"])
        .args(["-C", "panic=abort"])
        .args(["-C", "strip=symbols"])
        .arg("-o")
        .arg(&output)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("running {rustc} to build the pause binary: {e}"));
    if !result.status.success() {
        panic!(
            "building the pause binary with {rustc} failed ({}):\n{}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }

    let binary = std::fs::read(&output)
        .unwrap_or_else(|e| panic!("reading the pause binary {}: {e}", output.display()));
    println!("cargo:rustc-env=RUDDER_PAUSE_HASH={:016x}", fnv1a(&binary));
}

/// FNV-1a, 64 bits: a stable content hash without a dependency (not for security: it only
/// names a cache entry).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}
