//! Records the git commit being built, for the Version call.

fn main() {
    println!("cargo:rerun-if-env-changed=RUDDER_GIT_COMMIT");
    // Re-read the commit when the checkout moves (where the git directory is a plain one).
    for p in ["../.git/HEAD", "../.git/refs/heads"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if std::env::var("RUDDER_GIT_COMMIT").is_ok() {
        return;
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if !commit.is_empty() {
        println!("cargo:rustc-env=RUDDER_GIT_COMMIT={commit}");
    }
}
