//! Hairpin mode on a sandbox's bridge port, so a pod reaches itself through its own Service.
//!
//! With `br_netfilter` (which Docker loads), the proxy's DNAT runs as the frame enters the
//! bridge; when the chosen endpoint is the sender itself, the bridge would have to send the
//! frame back out of the port it came in by, which a bridge port refuses unless its
//! `hairpin_mode` is on (Kubernetes' kubelet `--hairpin-mode=hairpin-veth`, the bridge CNI
//! plugin's `hairpinMode`). The port is the host end of the sandbox's veth: the interface whose
//! index is the sandbox's `eth0` `iflink`, read through the sandbox's own /sys.
//!
//! Possible only when the engine runs on this host (the agent reads /proc and /sys); elsewhere
//! the pod keeps working except for reaching itself through a Service.

use std::path::Path;

/// Turns hairpin mode on for the bridge port of the process `pid`'s `eth0`.
pub(super) fn enable(pid: i64) -> Result<String, String> {
    enable_in(Path::new("/proc"), Path::new("/sys/class/net"), pid)
}

fn read_trimmed(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("reading {}: {e}", p.display()))
}

fn enable_in(proc: &Path, host_net: &Path, pid: i64) -> Result<String, String> {
    let iflink = read_trimmed(&proc.join(format!("{pid}/root/sys/class/net/eth0/iflink")))?;
    let entries =
        std::fs::read_dir(host_net).map_err(|e| format!("listing {}: {e}", host_net.display()))?;
    for entry in entries.flatten() {
        let dir = entry.path();
        if read_trimmed(&dir.join("ifindex")).ok().as_deref() != Some(iflink.as_str()) {
            continue;
        }
        let mode = dir.join("brport/hairpin_mode");
        std::fs::write(&mode, "1").map_err(|e| format!("writing {}: {e}", mode.display()))?;
        return Ok(entry.file_name().to_string_lossy().into_owned());
    }
    Err(format!(
        "no host interface with index {iflink} (the sandbox's peer)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_peer_by_index_and_sets_its_port() {
        let root = tempfile::tempdir().unwrap();
        let proc = root.path().join("proc");
        let net = root.path().join("net");
        std::fs::create_dir_all(proc.join("42/root/sys/class/net/eth0")).unwrap();
        std::fs::write(proc.join("42/root/sys/class/net/eth0/iflink"), "61\n").unwrap();
        for (name, index) in [("veth-a", "60"), ("veth-b", "61")] {
            std::fs::create_dir_all(net.join(name).join("brport")).unwrap();
            std::fs::write(net.join(name).join("ifindex"), format!("{index}\n")).unwrap();
            std::fs::write(net.join(name).join("brport/hairpin_mode"), "0\n").unwrap();
        }
        assert_eq!(enable_in(&proc, &net, 42).as_deref(), Ok("veth-b"));
        let mode =
            |n: &str| std::fs::read_to_string(net.join(n).join("brport/hairpin_mode")).unwrap();
        assert_eq!(mode("veth-b"), "1");
        assert_eq!(mode("veth-a"), "0\n", "only the sandbox's own port");
        let err = enable_in(&proc, &net, 7).unwrap_err();
        assert!(err.contains("7/root/sys/class/net/eth0/iflink"), "{err}");
    }
}
