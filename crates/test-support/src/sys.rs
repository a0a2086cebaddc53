//! The C calls the tests need, behind safe functions.

/// Sends `sig` to `pid`; a process that is already gone is not an error here.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill takes integers, no pointers.
    unsafe {
        libc::kill(pid, sig);
    }
}
