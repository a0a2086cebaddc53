//! Socket files in the file system: making way for a new one without destroying anything
//! that is not a stale socket.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// The socket type [`make_way`] probes with.
pub use socket2::Type;
use socket2::{Domain, SockAddr, Socket};

/// Makes way for binding a UNIX socket of type `ty` at `path`. Nothing there is fine; a
/// stale socket (connecting to it fails with ECONNREFUSED: its owner is gone) is removed.
/// Anything else is left alone and is an error naming the path: a live socket
/// (`AddrInUse`), a file, directory, FIFO or symbolic link (`AlreadyExists`), or a socket
/// that cannot be probed (the connect error, e.g. permission denied).
pub fn make_way(path: &Path, ty: Type) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(named(path, e.kind(), &e.to_string())),
    };
    if !meta.file_type().is_socket() {
        return Err(named(
            path,
            io::ErrorKind::AlreadyExists,
            "exists and is not a socket (not removed)",
        ));
    }
    let probe = Socket::new(Domain::UNIX, ty.cloexec(), None)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Err(named(
            path,
            io::ErrorKind::AddrInUse,
            "a running program is using this socket",
        )),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => std::fs::remove_file(path)
            .map_err(|e| {
                named(
                    path,
                    e.kind(),
                    &format!("cannot remove the stale socket: {e}"),
                )
            }),
        Err(e) => Err(named(
            path,
            e.kind(),
            &format!("cannot tell whether the socket is in use: {e}"),
        )),
    }
}

fn named(path: &Path, kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, format!("{}: {what}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixListener};

    #[test]
    fn only_stale_sockets_make_way() {
        let dir = std::env::temp_dir().join(format!("filo-sockfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, "keep").unwrap();
        let e = make_way(&file, Type::STREAM).unwrap_err();
        assert!(
            e.to_string().contains("file: exists and is not a socket"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
        let link = dir.join("link");
        std::os::unix::fs::symlink(dir.join("nowhere"), &link).unwrap();
        assert!(make_way(&link, Type::STREAM).is_err());
        assert!(std::fs::symlink_metadata(&link).is_ok());
        let live = dir.join("live");
        let l = UnixListener::bind(&live).unwrap();
        let e = make_way(&live, Type::STREAM).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        drop(l);
        make_way(&live, Type::STREAM).unwrap();
        assert!(!live.exists());
        let dgram = dir.join("dgram");
        let d = UnixDatagram::bind(&dgram).unwrap();
        assert!(make_way(&dgram, Type::DGRAM).is_err());
        drop(d);
        make_way(&dgram, Type::DGRAM).unwrap();
        make_way(&dir.join("absent"), Type::DGRAM).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
