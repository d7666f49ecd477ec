//! A small HTTP/1.1 server for container tests, std only, compiled static by
//! `rudder_testkit::images::test_server()` and run FROM scratch.
//!
//! Environment:
//! - `PORT`: port(s) to listen on, comma-separated (default 8080).
//! - `FAIL_HEALTHZ=1` / `FAIL_READY=1`: `/healthz` / `/ready` fail from the start.
//! - `TERM_DELAY_MS`: on SIGTERM wait this long, then exit 0 (default 0).
//! - `IGNORE_SIGTERM=1`: ignore SIGTERM (only SIGKILL ends it).
//! - `EXIT_AFTER_MS` / `EXIT_CODE`: exit by itself after that long with that code.
//! - `WRITE_TERMINATION_MESSAGE`: written to `/dev/termination-log` on every exit.
//!
//! Routes (GET): `/env` (KEY=VALUE lines), `/file?path=P`, `/hostname`, `/healthz`, `/ready`,
//! `/fail/healthz`, `/fail/ready`, `/heal/healthz`, `/heal/ready`, `/exit?code=N`,
//! `/echo?msg=M`, `/fetch?addr=HOST:PORT&path=/x` (GETs from another server, returns its
//! status and body). One line on stdout at start and per request.

use std::ffi::c_int;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

static HEALTHY: AtomicBool = AtomicBool::new(true);
static READY: AtomicBool = AtomicBool::new(true);
static TERMINATED: AtomicBool = AtomicBool::new(false);

const SIGTERM: c_int = 15;
/// `SIG_IGN`.
const IGNORE: usize = 1;

unsafe extern "C" {
    fn signal(sig: c_int, handler: usize) -> usize;
}

extern "C" fn on_term(_sig: c_int) {
    // Async-signal-safe: only an atomic store; a thread acts on it.
    TERMINATED.store(true, Ordering::SeqCst);
}

fn env_ms(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

fn exit(code: i32) -> ! {
    if let Ok(msg) = std::env::var("WRITE_TERMINATION_MESSAGE") {
        let _ = std::fs::write("/dev/termination-log", msg);
    }
    println!("exiting with {code}");
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn main() {
    if std::env::var("FAIL_HEALTHZ").is_ok_and(|v| v == "1") {
        HEALTHY.store(false, Ordering::SeqCst);
    }
    if std::env::var("FAIL_READY").is_ok_and(|v| v == "1") {
        READY.store(false, Ordering::SeqCst);
    }
    let ignore_term = std::env::var("IGNORE_SIGTERM").is_ok_and(|v| v == "1");
    unsafe {
        if ignore_term {
            signal(SIGTERM, IGNORE);
        } else {
            signal(SIGTERM, on_term as extern "C" fn(c_int) as usize);
        }
    }
    thread::spawn(|| {
        while !TERMINATED.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(5));
        }
        println!("SIGTERM received");
        thread::sleep(Duration::from_millis(env_ms("TERM_DELAY_MS").unwrap_or(0)));
        exit(0)
    });
    if let Some(ms) = env_ms("EXIT_AFTER_MS") {
        let code = std::env::var("EXIT_CODE")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(ms));
            exit(code)
        });
    }

    let ports = std::env::var("PORT").unwrap_or_else(|_| "8080".to_string());
    let mut handles = Vec::new();
    for port in ports.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let listener = match TcpListener::bind(("0.0.0.0", port.parse::<u16>().unwrap_or(8080))) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {port}: {e}");
                exit(2)
            }
        };
        println!("listening on {port}");
        handles.push(thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                thread::spawn(move || handle(conn));
            }
        }));
    }
    let _ = std::io::stdout().flush();
    for h in handles {
        let _ = h.join();
    }
}

/// Percent-decoding of a query value (`+` is a space).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| decode(v))
    })
}

fn respond(conn: &mut TcpStream, status: u16, body: &[u8]) {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
    let _ = conn.flush();
}

fn handle(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(reader_conn) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader_conn);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Headers are read and ignored; requests carry no body.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    println!("{method} {target}");
    let _ = std::io::stdout().flush();
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let flag = |b: &AtomicBool| {
        if b.load(Ordering::SeqCst) {
            (200, "ok")
        } else {
            (500, "failing")
        }
    };
    match path {
        "/env" => {
            let mut vars: Vec<String> = std::env::vars()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect();
            vars.sort();
            respond(&mut conn, 200, vars.concat().as_bytes());
        }
        "/file" => match query(q, "path").map(std::fs::read) {
            Some(Ok(content)) => respond(&mut conn, 200, &content),
            Some(Err(e)) => respond(&mut conn, 404, e.to_string().as_bytes()),
            None => respond(&mut conn, 404, b"missing path"),
        },
        "/hostname" => {
            let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            respond(&mut conn, 200, name.trim().as_bytes());
        }
        "/healthz" => {
            let (s, b) = flag(&HEALTHY);
            respond(&mut conn, s, b.as_bytes());
        }
        "/ready" => {
            let (s, b) = flag(&READY);
            respond(&mut conn, s, b.as_bytes());
        }
        "/fail/healthz" | "/heal/healthz" | "/fail/ready" | "/heal/ready" => {
            let target = if path.ends_with("healthz") {
                &HEALTHY
            } else {
                &READY
            };
            target.store(path.starts_with("/heal"), Ordering::SeqCst);
            respond(&mut conn, 200, b"ok");
        }
        "/exit" => {
            let code = query(q, "code").and_then(|c| c.parse().ok()).unwrap_or(0);
            respond(&mut conn, 200, b"bye");
            exit(code)
        }
        "/echo" => respond(
            &mut conn,
            200,
            query(q, "msg").unwrap_or_default().as_bytes(),
        ),
        "/fetch" => {
            let addr = query(q, "addr").unwrap_or_default();
            let p = query(q, "path").unwrap_or_else(|| "/".to_string());
            match fetch(&addr, &p) {
                Ok((status, body)) => respond(&mut conn, status, &body),
                Err(e) => respond(&mut conn, 502, format!("fetch {addr}{p}: {e}").as_bytes()),
            }
        }
        _ => respond(&mut conn, 404, b"no such route"),
    }
}

fn fetch(addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    Ok((status, raw[split + 4..].to_vec()))
}
