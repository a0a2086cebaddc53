//! The C interface libvdeplug sees: the exported `vdeplug_ops` (vdeplug4's
//! `struct vdeplug_module` from `libvdeplug_mod.h`) and the connection object it hands back
//! to us (`struct vdeconn`: `handle` and `module`, which libvdeplug fills in after a successful
//! open, followed by our data).

use std::ffi::{c_char, c_int, c_void, CStr};

use crate::Conn;

/// `struct vdeconn` with our connection behind libvdeplug's two fields.
#[repr(C)]
pub struct VdeConn {
    handle: *mut c_void,
    module: *mut c_void,
    conn: Conn,
}

/// `struct vdeplug_module`.
#[repr(C)]
pub struct VdeplugModule {
    flags: c_int,
    open: unsafe extern "C" fn(*mut c_char, *mut c_char, c_int, *mut c_void) -> *mut VdeConn,
    recv: unsafe extern "C" fn(*mut VdeConn, *mut c_void, usize, c_int) -> isize,
    send: unsafe extern "C" fn(*mut VdeConn, *const c_void, usize, c_int) -> isize,
    datafd: unsafe extern "C" fn(*mut VdeConn) -> c_int,
    ctlfd: unsafe extern "C" fn(*mut VdeConn) -> c_int,
    close: unsafe extern "C" fn(*mut VdeConn) -> c_int,
}

/// What libvdeplug looks up with `dlsym(handle, "vdeplug_ops")`.
#[no_mangle]
pub static vdeplug_ops: VdeplugModule = VdeplugModule {
    flags: 0,
    open: vde_ipn_open,
    recv: vde_ipn_recv,
    send: vde_ipn_send,
    datafd: vde_ipn_datafd,
    ctlfd: vde_ipn_ctlfd,
    close: vde_ipn_close,
};

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno, always valid to write.
    unsafe { *libc::__errno_location() = e };
}

/// The connection behind `conn`, or None (errno EBADF) for a null pointer.
///
/// # Safety
/// A non-null `conn` was returned by `vde_ipn_open`, is not closed, and is used by no one else
/// during the returned borrow (libvdeplug calls a connection from one thread at a time).
unsafe fn live<'a>(conn: *mut VdeConn) -> Option<&'a mut Conn> {
    if conn.is_null() {
        set_errno(libc::EBADF);
        return None;
    }
    // SAFETY: per this function's contract.
    Some(unsafe { &mut (*conn).conn })
}

/// # Safety
/// `args` and `descr` are NUL-terminated strings or null (libvdeplug passes both).
unsafe extern "C" fn vde_ipn_open(
    args: *mut c_char,
    descr: *mut c_char,
    _version: c_int,
    _open_args: *mut c_void,
) -> *mut VdeConn {
    let text = |p: *mut c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: non-null, and libvdeplug passes NUL-terminated strings.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let (args, descr) = (text(args), text(descr));
    match crate::open(&args, &descr) {
        Ok(conn) => Box::into_raw(Box::new(VdeConn {
            handle: std::ptr::null_mut(),
            module: std::ptr::null_mut(),
            conn,
        })),
        Err(e) => {
            eprintln!("libvdeplug_ipn: {e}");
            set_errno(libc::ECONNREFUSED);
            std::ptr::null_mut()
        }
    }
}

/// # Safety
/// `conn` was returned by `vde_ipn_open` and not closed; `buf` holds `len` writable bytes.
unsafe extern "C" fn vde_ipn_recv(
    conn: *mut VdeConn,
    buf: *mut c_void,
    len: usize,
    _flags: c_int,
) -> isize {
    // SAFETY: libvdeplug passes a connection from vde_ipn_open, not yet closed.
    let Some(conn) = (unsafe { live(conn) }) else {
        return -1;
    };
    if buf.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    // SAFETY: buf is the caller's buffer of len writable bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    match conn.recv(buf) {
        Ok(Some(n)) => n as isize,
        Ok(None) => {
            // libvdeplug's convention: 1 byte means "nothing to deliver", errno EAGAIN.
            set_errno(libc::EAGAIN);
            1
        }
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(libc::EIO));
            -1
        }
    }
}

/// # Safety
/// `conn` is a live connection; `buf` holds `len` readable bytes.
unsafe extern "C" fn vde_ipn_send(
    conn: *mut VdeConn,
    buf: *const c_void,
    len: usize,
    _flags: c_int,
) -> isize {
    // SAFETY: libvdeplug passes a connection from vde_ipn_open, not yet closed.
    let Some(conn) = (unsafe { live(conn) }) else {
        return -1;
    };
    if buf.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    // SAFETY: buf is the caller's frame of len readable bytes.
    let frame = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    match conn.send(frame) {
        Ok(()) => len as isize,
        // A frame no bus slot can hold is dropped, as a switch drops it.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => len as isize,
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(libc::EIO));
            -1
        }
    }
}

/// # Safety
/// `conn` is a live connection.
unsafe extern "C" fn vde_ipn_datafd(conn: *mut VdeConn) -> c_int {
    if conn.is_null() {
        return -1;
    }
    // SAFETY: a live connection, only read here.
    unsafe { &(*conn).conn }.data_fd()
}

/// No control descriptor: a bus has no peer whose departure ends the connection.
unsafe extern "C" fn vde_ipn_ctlfd(_conn: *mut VdeConn) -> c_int {
    -1
}

/// # Safety
/// `conn` was returned by `vde_ipn_open`; libvdeplug never uses it again.
unsafe extern "C" fn vde_ipn_close(conn: *mut VdeConn) -> c_int {
    if !conn.is_null() {
        // SAFETY: created by Box::into_raw in vde_ipn_open and closed once.
        drop(unsafe { Box::from_raw(conn) });
    }
    0
}
