//! The exported C functions: pointers in, errno out.

use std::ffi::{c_char, c_int, CStr, OsStr};
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = e };
}

/// `int msocket(const char *path, int domain, int type, int protocol);`
///
/// # Safety
/// `path` is NULL or a valid NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn msocket(
    path: *const c_char,
    domain: c_int,
    ty: c_int,
    protocol: c_int,
) -> c_int {
    let path = if path.is_null() {
        None
    } else {
        // SAFETY: the caller passes a valid C string (documented contract).
        Some(Path::new(OsStr::from_bytes(
            unsafe { CStr::from_ptr(path) }.to_bytes(),
        )))
    };
    match filo_ns::named::msocket(path, domain, ty, protocol) {
        Ok(fd) => fd.into_raw_fd(),
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(libc::EIO));
            -1
        }
    }
}
