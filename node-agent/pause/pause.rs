//! The pod sandbox's infra process ("pause"): holds the pod's namespaces open and does nothing
//! else. As PID 1 of the pod it exits 0 on SIGTERM or SIGINT (PID 1 has no default signal
//! actions, so without handlers it could only be SIGKILLed) and reaps the zombies of processes
//! re-parented to it.
//!
//! Built by `node-agent/build.rs` as a static binary (std only, no libc crate) and embedded in
//! the node agent, which turns it into the `rudder/pause` image on first use.

use std::ffi::c_int;

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
const SIGCHLD: c_int = 17;
const WNOHANG: c_int = 1;

unsafe extern "C" {
    // `sighandler_t signal(int, sighandler_t)`: handlers are passed as addresses.
    fn signal(sig: c_int, handler: usize) -> usize;
    fn pause() -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn _exit(code: c_int) -> !;
}

extern "C" fn on_terminate(_sig: c_int) {
    // Only async-signal-safe calls in a handler: `_exit`, not `std::process::exit`.
    unsafe { _exit(0) }
}

extern "C" fn on_child(_sig: c_int) {
    let mut status: c_int = 0;
    // Signals coalesce: one SIGCHLD may stand for several exited children.
    while unsafe { waitpid(-1, &mut status, WNOHANG) } > 0 {}
}

fn main() {
    unsafe {
        signal(SIGTERM, on_terminate as extern "C" fn(c_int) as usize);
        signal(SIGINT, on_terminate as extern "C" fn(c_int) as usize);
        signal(SIGCHLD, on_child as extern "C" fn(c_int) as usize);
    }
    loop {
        unsafe {
            pause();
        }
    }
}
