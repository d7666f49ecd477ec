//! `rudder status`: each component's process and health, and the API server's figures.

use super::{
    APISERVER, DataDirArgs, addr_file, alive, component_healthy, components, is_ours, read_pid,
    read_trimmed,
};
use crate::error::{CliError, Result};
use crate::printers::Table;
use crate::util;

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints the components and the server's statistics. Exit code 0 when everything is running
/// and healthy, 3 otherwise (as `systemctl status`), so scripts can test it.
pub async fn status(args: DataDirArgs) -> Result<i32> {
    let dir = &args.data_dir;
    let mut ok = true;
    let mut rows = Vec::new();
    let mut stats_addr = None;
    for (c, bin) in components(dir) {
        let c = c.as_str();
        let pid = read_pid(dir, c);
        let is_alive = pid.is_some_and(|p| alive(p) && is_ours(p, bin));
        let addr = read_trimmed(&addr_file(dir, c)).unwrap_or_default();
        let health = if is_alive && !addr.is_empty() {
            match component_healthy(dir, c, &addr).await {
                Ok(()) => {
                    if c == APISERVER {
                        stats_addr = Some(addr.clone());
                    }
                    "ok".to_string()
                }
                Err(e) => e,
            }
        } else {
            "-".to_string()
        };
        ok &= is_alive && health == "ok";
        rows.push(vec![
            c.to_string(),
            pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            if is_alive { "yes" } else { "no" }.to_string(),
            health,
            if addr.is_empty() { "-".into() } else { addr },
        ]);
    }
    let t = Table {
        headers: ["COMPONENT", "PID", "ALIVE", "HEALTH", "ADDRESS"]
            .map(String::from)
            .to_vec(),
        rows,
    };
    util::out(&t.render(true))?;
    if let Some(addr) = stats_addr {
        let c = super::admin_client(dir, &[addr.as_str()]).map_err(crate::CliError::msg)?;
        match c.stats().await {
            Ok(s) => {
                let writable = if s.writable {
                    "yes".to_string()
                } else {
                    format!("no ({})", s.unwritable_reason)
                };
                util::out(&format!(
                    "\nresourceVersion: {}\nobjects:         {}\nstore size:      {}\ndisk free:       {}\nwatchers:        {}\nwritable:        {writable}\n",
                    s.resource_version,
                    s.object_count,
                    bytes(s.store_size_bytes),
                    bytes(s.disk_free_bytes),
                    s.watchers,
                ))?;
                if let Some(r) = &s.raft {
                    let lagging: Vec<String> = r
                        .members
                        .iter()
                        .filter(|m| m.lag > 0)
                        .map(|m| format!("{} behind by {}", m.id, m.lag))
                        .collect();
                    util::out(&format!(
                        "replication:     member {} of {}, {} in term {}, leader {}, applied {} of {}{}\n",
                        r.id,
                        r.members.len(),
                        r.role,
                        r.term,
                        if r.leader == 0 {
                            "unknown".to_string()
                        } else {
                            r.leader.to_string()
                        },
                        r.applied_index,
                        r.last_log_index,
                        if lagging.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", lagging.join(", "))
                        },
                    ))?;
                }
                let alarms = if s.alarms.is_empty() {
                    "none".to_string()
                } else {
                    s.alarms.join("; ")
                };
                util::out(&format!("alarms:          {alarms}\n"))?;
                if !s.last_backup.is_empty() {
                    util::out(&format!("last backup:     {}\n", s.last_backup))?;
                }
                ok &= s.writable;
            }
            Err(e) => {
                eprintln!("{}", CliError::from(e));
                ok = false;
            }
        }
    } else if !dir.exists() {
        util::outln(&format!(
            "\nno cluster in {} (start one with `rudder up`)",
            dir.display()
        ))?;
    }
    Ok(if ok { 0 } else { 3 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
