//! Where the API server is: `--server`, then `$RUDDER_SERVER`, then the config file
//! (`$RUDDER_CONFIG` or `~/.rudder/config`), then `127.0.0.1:6443`.
//!
//! The config file is a tiny `key: value` file (a subset of YAML) so that people can edit it by
//! hand; `rudder up` rewrites only its `server:` line and keeps everything else.

use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};

pub const DEFAULT_SERVER: &str = "127.0.0.1:6443";

/// The config file's path: `$RUDDER_CONFIG`, else `~/.rudder/config`.
pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RUDDER_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".rudder").join("config"))
}

/// Reads one key from `key: value` text; the last occurrence wins. Comments (`#`) and blank lines
/// are ignored, and values may be quoted.
pub fn lookup(text: &str, key: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The key never contains ':' but the value (host:port) may: split at the first one.
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.trim() == key {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                .unwrap_or(v);
            found = Some(v.to_string());
        }
    }
    found.filter(|v| !v.is_empty())
}

/// Where the server address came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    ConfigFile(PathBuf),
    Default,
}

/// Picks the server addresses. `flag` is `--server` or `$RUDDER_SERVER` (clap merges the two,
/// the flag winning); `config_text` is the config file's contents, if it exists.
pub fn resolve_servers(flag: Option<&str>, config: Option<(&Path, &str)>) -> (Vec<String>, Source) {
    if let Some(f) = flag.map(str::trim).filter(|f| !f.is_empty()) {
        return (split_addrs(f), Source::Flag);
    }
    if let Some((path, text)) = config
        && let Some(s) = lookup(text, "server")
    {
        return (split_addrs(&s), Source::ConfigFile(path.to_path_buf()));
    }
    (vec![DEFAULT_SERVER.to_string()], Source::Default)
}

fn split_addrs(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// The config file's text, or `None` when it does not exist.
pub fn read_config(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::io(format!("reading {}", path.display()), e)),
    }
}

/// Returns `text` with `key: value` set, replacing an existing line or appending one.
pub fn set_key(text: &str, key: &str, value: &str) -> String {
    let mut out = Vec::new();
    let mut done = false;
    for line in text.lines() {
        let is_key = line
            .trim()
            .split_once(':')
            .is_some_and(|(k, _)| k.trim() == key && !line.trim_start().starts_with('#'));
        if is_key {
            if !done {
                out.push(format!("{key}: {value}"));
                done = true;
            }
        } else {
            out.push(line.to_string());
        }
    }
    if !done {
        out.push(format!("{key}: {value}"));
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// Writes `server: addr` into the config file, creating it and its directory as needed.
pub fn write_server(path: &Path, addr: &str) -> Result<()> {
    write_key(path, "server", addr)
}

/// Writes `key: value` into the config file, keeping its other lines.
pub fn write_key(path: &Path, key: &str, value: &str) -> Result<()> {
    let old = read_config(path)?.unwrap_or_default();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
    }
    std::fs::write(path, set_key(&old, key, value))
        .map_err(|e| CliError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_then_config_then_default() {
        let p = Path::new("/c");
        let cfg = "# mine\nserver: 10.0.0.1:7000\n";
        assert_eq!(
            resolve_servers(Some("a:1, b:2"), Some((p, cfg))),
            (vec!["a:1".to_string(), "b:2".to_string()], Source::Flag)
        );
        assert_eq!(
            resolve_servers(None, Some((p, cfg))),
            (
                vec!["10.0.0.1:7000".to_string()],
                Source::ConfigFile(p.to_path_buf())
            )
        );
        assert_eq!(
            resolve_servers(Some("  "), Some((p, "namespace: x\n"))),
            (vec![DEFAULT_SERVER.to_string()], Source::Default)
        );
        assert_eq!(resolve_servers(None, None).1, Source::Default);
    }

    #[test]
    fn lookup_handles_quotes_comments_and_last_wins() {
        let t = "server: 'a:1'\n# server: x\nnamespace: \"dev\"\nserver: b:2\n";
        assert_eq!(lookup(t, "server").as_deref(), Some("b:2"));
        assert_eq!(lookup(t, "namespace").as_deref(), Some("dev"));
        assert_eq!(lookup(t, "missing"), None);
        assert_eq!(lookup("server:\n", "server"), None);
    }

    #[test]
    fn set_key_replaces_or_appends() {
        assert_eq!(set_key("", "server", "a:1"), "server: a:1\n");
        assert_eq!(
            set_key("namespace: dev\nserver: old:1\n", "server", "a:1"),
            "namespace: dev\nserver: a:1\n"
        );
        assert_eq!(
            set_key("namespace: dev", "server", "a:1"),
            "namespace: dev\nserver: a:1\n"
        );
    }

    #[test]
    fn write_server_creates_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("config");
        write_server(&p, "127.0.0.1:9").unwrap();
        write_server(&p, "127.0.0.1:10").unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        assert_eq!(t, "server: 127.0.0.1:10\n");
    }
}
