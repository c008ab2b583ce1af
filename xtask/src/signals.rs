//! SIGINT/SIGTERM while children run: we note the signal instead of dying,
//! so the children we started (and what they started) are stopped first.

use std::sync::atomic::{AtomicI32, Ordering};

/// The last SIGINT/SIGTERM received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM are recorded, not fatal.
pub fn catch() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// The signal received since `catch`, if any.
pub fn received() -> Option<libc::c_int> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Sends `sig` to a process (`pid > 0`) or a process group (`pid < 0`).
pub fn send(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions. Callers pass their
    // own, not yet reaped child (or its group), so the id is not reused.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}
