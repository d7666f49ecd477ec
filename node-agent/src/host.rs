//! Facts about the host the agent runs on: fixed ones read once at start-up ([`HostFacts`]:
//! CPUs, memory, disk, identity) and the ones the pressure conditions sample
//! ([`HostProbe::sample`]). The probe is a trait so tests set memory, disk and PID headroom.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
    /// Size of the filesystem holding the data directory.
    pub disk_bytes: i64,
    pub arch: String,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

/// What the pressure conditions look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostSample {
    pub memory_available: u64,
    pub disk_available: u64,
    pub disk_total: u64,
    pub pids_used: u64,
    pub pid_max: u64,
    /// CPU time spent busy since boot, all CPUs, in nanoseconds.
    pub cpu_busy_ns: u64,
}

pub trait HostProbe: Send + Sync + 'static {
    fn sample(&self) -> HostSample;
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `/proc/meminfo`'s value for `key`, in bytes.
fn meminfo(key: &str) -> u64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// Busy CPU time from `/proc/stat`'s first line (everything but idle and iowait).
fn cpu_busy_ns() -> u64 {
    let stat = read("/proc/stat");
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    // USER_HZ is 100 on Linux: a tick is 10 ms.
    total.saturating_sub(idle) * 10_000_000
}

fn disk(path: &Path) -> (u64, u64) {
    match rustix::fs::statvfs(path) {
        Ok(s) => (
            s.f_blocks.saturating_mul(s.f_frsize),
            s.f_bavail.saturating_mul(s.f_frsize),
        ),
        Err(_) => (0, 0),
    }
}

impl HostFacts {
    /// Reads the host; `data_dir` is where pods' files live (its filesystem is the node's
    /// ephemeral storage).
    pub fn read(data_dir: &Path) -> HostFacts {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        HostFacts {
            cpu_milli: i64::try_from(cpus).unwrap_or(1) * 1000,
            memory_bytes: i64::try_from(meminfo("MemTotal")).unwrap_or(0),
            disk_bytes: i64::try_from(disk(data_dir).0).unwrap_or(0),
            arch: match std::env::consts::ARCH {
                "x86_64" => "amd64".into(),
                "aarch64" => "arm64".into(),
                other => other.into(),
            },
            kernel: read("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// Samples `/proc` and the data directory's filesystem.
pub struct ProcHost {
    data_dir: PathBuf,
}

impl ProcHost {
    pub fn new(data_dir: &Path) -> Self {
        ProcHost {
            data_dir: data_dir.to_path_buf(),
        }
    }
}

impl HostProbe for ProcHost {
    fn sample(&self) -> HostSample {
        let (total, avail) = disk(&self.data_dir);
        let pids_used = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                    })
                    .count() as u64
            })
            .unwrap_or(0);
        HostSample {
            memory_available: meminfo("MemAvailable"),
            disk_available: avail,
            disk_total: total,
            pids_used,
            pid_max: read("/proc/sys/kernel/pid_max").parse().unwrap_or(0),
            cpu_busy_ns: cpu_busy_ns(),
        }
    }
}

/// A host whose sample tests set.
#[derive(Debug, Clone)]
pub struct FakeHost(Arc<Mutex<HostSample>>);

impl FakeHost {
    /// Plenty of everything.
    pub fn new() -> Self {
        FakeHost(Arc::new(Mutex::new(HostSample {
            memory_available: 8 << 30,
            disk_available: 50 << 30,
            disk_total: 100 << 30,
            pids_used: 100,
            pid_max: 4_194_304,
            cpu_busy_ns: 0,
        })))
    }

    pub fn set(&self, s: HostSample) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

impl Default for FakeHost {
    fn default() -> Self {
        Self::new()
    }
}

impl HostProbe for FakeHost {
    fn sample(&self) -> HostSample {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Facts for tests: 4 CPUs, 8 GiB.
pub fn test_facts() -> HostFacts {
    HostFacts {
        cpu_milli: 4000,
        memory_bytes: 8 << 30,
        disk_bytes: 100 << 30,
        arch: "amd64".into(),
        kernel: "6.1.0".into(),
        os_image: "Test Linux".into(),
        machine_id: "m".into(),
        boot_id: "b".into(),
    }
}
