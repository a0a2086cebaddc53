//! The vde_switch control protocol (version 3, and the older version 1): the request a client
//! writes on the switch's `ctl` stream socket, and the 110-byte reply naming the switch's data
//! socket. Layout (little-endian, Linux `sockaddr_un`):
//!
//! ```text
//! v3: magic u32 = 0xfeedface | version u32 = 3 | type u32 | sockaddr_un (110) | description
//! v1: magic u32 = 0xfeedface | type u32 (0 or 1) | MAC (6) | sockaddr_un (110) | description
//! type: 0 = new port (any), 1 = port 0, (N << 8) = port N
//! ```

use std::path::{Path, PathBuf};

pub const MAGIC: u32 = 0xfeed_face;
pub const VERSION: u32 = 3;
/// `struct sockaddr_un` on Linux: u16 family + 108-byte path.
pub const SOCKADDR_UN_LEN: usize = 110;
const SUN_PATH_LEN: usize = 108;
pub const V3_HEADER_LEN: usize = 12 + SOCKADDR_UN_LEN;
pub const V1_HEADER_LEN: usize = 8 + 6 + SOCKADDR_UN_LEN;
/// The switch reads a request with one read of at most this many bytes.
pub const MAX_REQUEST: usize = 256;
/// vdeplug4 truncates descriptions to this length.
pub const MAX_DESCRIPTION: usize = 127;
pub const REPLY_LEN: usize = SOCKADDR_UN_LEN;

const REQ_NEW_CONTROL: u32 = 0;
const REQ_NEW_PORT0: u32 = 1;

/// Which port a client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRequest {
    /// The first free allocatable port.
    Any,
    /// Port 0 (a management/hub port on vde_switch).
    Zero,
    /// A specific port number.
    Port(u32),
}

impl PortRequest {
    fn to_type(self) -> u32 {
        match self {
            PortRequest::Any => REQ_NEW_CONTROL,
            PortRequest::Zero => REQ_NEW_PORT0,
            PortRequest::Port(n) => n << 8,
        }
    }

    fn from_type(ty: u32) -> Result<Self, RequestError> {
        match (ty & 0xff, ty >> 8) {
            (REQ_NEW_CONTROL, 0) => Ok(PortRequest::Any),
            (REQ_NEW_CONTROL, n) => Ok(PortRequest::Port(n)),
            (REQ_NEW_PORT0, _) => Ok(PortRequest::Zero),
            (other, _) => Err(RequestError::UnknownType(other)),
        }
    }
}

/// A malformed control request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request of {0} bytes is too short: a v3 request has at least {V3_HEADER_LEN} bytes")]
    TooShort(usize),
    #[error("request of {0} bytes is too long: at most {MAX_REQUEST} bytes are accepted")]
    TooLong(usize),
    #[error("bad magic {0:#010x}: expected 0xfeedface (V0 requests are not supported)")]
    BadMagic(u32),
    #[error(
        "request for protocol version {0} is not supported (expected 3, or a version 1 request)"
    )]
    BadVersion(u32),
    #[error("unknown request type {0}: expected 0 (new port) or 1 (port 0)")]
    UnknownType(u32),
    #[error("socket address family {0} is not AF_UNIX (1)")]
    BadFamily(u16),
    #[error("socket path is not NUL-terminated within 108 bytes")]
    UnterminatedPath,
}

/// A parsed control request, borrowing the description from the input bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub version: u32,
    pub port: PortRequest,
    /// The client's data socket; empty for clients that did not bind one.
    pub data_path: PathBuf,
    pub description: &'a [u8],
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Decodes a `sockaddr_un` (110 bytes) into its path.
pub fn parse_sockaddr(raw: &[u8]) -> Result<PathBuf, RequestError> {
    use std::os::unix::ffi::OsStrExt;
    if raw.len() < SOCKADDR_UN_LEN {
        return Err(RequestError::TooShort(raw.len()));
    }
    let family = u16::from_le_bytes([raw[0], raw[1]]);
    let path = &raw[2..SOCKADDR_UN_LEN];
    let end = path.iter().position(|&b| b == 0);
    if family == 0 && end == Some(0) {
        return Ok(PathBuf::new());
    }
    if family != libc::AF_UNIX as u16 {
        return Err(RequestError::BadFamily(family));
    }
    let end = end.ok_or(RequestError::UnterminatedPath)?;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&path[..end])))
}

/// Encodes a path as a Linux `sockaddr_un` into `out` (110 bytes).
pub fn emit_sockaddr(path: &Path, out: &mut [u8; SOCKADDR_UN_LEN]) -> Result<(), PathTooLong> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= SUN_PATH_LEN {
        return Err(PathTooLong(path.to_path_buf()));
    }
    out.fill(0);
    out[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_le_bytes());
    out[2..2 + bytes.len()].copy_from_slice(bytes);
    Ok(())
}

/// A socket path that does not fit in `sockaddr_un`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("socket path {} is too long: at most 107 bytes fit in a UNIX socket address", .0.display())]
pub struct PathTooLong(pub PathBuf);

impl<'a> Request<'a> {
    /// Parses a request as vde_switch does: v3 when the second word is 3, v1 when it is 0 or 1.
    pub fn parse(buf: &'a [u8]) -> Result<Request<'a>, RequestError> {
        if buf.len() > MAX_REQUEST {
            return Err(RequestError::TooLong(buf.len()));
        }
        if buf.len() < 8 {
            return Err(RequestError::TooShort(buf.len()));
        }
        let magic = u32_at(buf, 0);
        if magic != MAGIC {
            return Err(RequestError::BadMagic(magic));
        }
        match u32_at(buf, 4) {
            VERSION => {
                if buf.len() < V3_HEADER_LEN {
                    return Err(RequestError::TooShort(buf.len()));
                }
                Ok(Request {
                    version: VERSION,
                    port: PortRequest::from_type(u32_at(buf, 8))?,
                    data_path: parse_sockaddr(&buf[12..V3_HEADER_LEN])?,
                    description: &buf[V3_HEADER_LEN..],
                })
            }
            ty @ (REQ_NEW_CONTROL | REQ_NEW_PORT0) => {
                if buf.len() < V1_HEADER_LEN {
                    return Err(RequestError::TooShort(buf.len()));
                }
                Ok(Request {
                    version: 1,
                    port: PortRequest::from_type(ty)?,
                    data_path: parse_sockaddr(&buf[14..V1_HEADER_LEN])?,
                    description: &buf[V1_HEADER_LEN..],
                })
            }
            other => Err(RequestError::BadVersion(other)),
        }
    }

    /// The description as text (lossy: it is free text from the client).
    pub fn description_text(&self) -> String {
        String::from_utf8_lossy(self.description).into_owned()
    }
}

/// Builds a v3 request into `out`, returning its length (122 + description, description
/// truncated to [`MAX_DESCRIPTION`] bytes and not NUL-terminated, as vdeplug4 sends it).
pub fn emit_request_v3(
    port: PortRequest,
    data_path: &Path,
    description: &str,
    out: &mut [u8; V3_HEADER_LEN + MAX_DESCRIPTION],
) -> Result<usize, PathTooLong> {
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&VERSION.to_le_bytes());
    out[8..12].copy_from_slice(&port.to_type().to_le_bytes());
    let mut addr = [0u8; SOCKADDR_UN_LEN];
    emit_sockaddr(data_path, &mut addr)?;
    out[12..V3_HEADER_LEN].copy_from_slice(&addr);
    let mut descr = description.as_bytes();
    if descr.len() > MAX_DESCRIPTION {
        // Cut on a character boundary so the switch shows valid text.
        let mut cut = MAX_DESCRIPTION;
        while !description.is_char_boundary(cut) {
            cut -= 1;
        }
        descr = &descr[..cut];
    }
    out[V3_HEADER_LEN..V3_HEADER_LEN + descr.len()].copy_from_slice(descr);
    Ok(V3_HEADER_LEN + descr.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_request_matches_the_bytes_debian_vde_plug_sends() {
        let mut out = [0u8; V3_HEADER_LEN + MAX_DESCRIPTION];
        let n = emit_request_v3(
            PortRequest::Any,
            Path::new("/tmp/vt/sw/.06925-00000"),
            "vdeplug: user=root pid=6925",
            &mut out,
        )
        .unwrap();
        assert_eq!(n, 149);
        assert_eq!(
            &out[..14],
            &[0xce, 0xfa, 0xed, 0xfe, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(&out[14..37], b"/tmp/vt/sw/.06925-00000");
        assert!(out[37..122].iter().all(|&b| b == 0));
        assert_eq!(&out[122..149], b"vdeplug: user=root pid=6925");
        let req = Request::parse(&out[..n]).unwrap();
        assert_eq!(req.version, 3);
        assert_eq!(req.port, PortRequest::Any);
        assert_eq!(req.data_path, Path::new("/tmp/vt/sw/.06925-00000"));
        assert_eq!(req.description, b"vdeplug: user=root pid=6925");
    }

    #[test]
    fn port_numbers_encode_as_type_shifted_by_eight() {
        let mut out = [0u8; V3_HEADER_LEN + MAX_DESCRIPTION];
        for (port, ty) in [
            (PortRequest::Port(5), 5u32 << 8),
            (PortRequest::Zero, 1),
            (PortRequest::Any, 0),
        ] {
            let n = emit_request_v3(port, Path::new("/x"), "", &mut out).unwrap();
            assert_eq!(u32_at(&out, 8), ty);
            assert_eq!(Request::parse(&out[..n]).unwrap().port, port);
        }
    }

    #[test]
    fn long_descriptions_are_cut_to_127_bytes_on_a_char_boundary() {
        let mut out = [0u8; V3_HEADER_LEN + MAX_DESCRIPTION];
        let descr = "é".repeat(100);
        let n = emit_request_v3(PortRequest::Any, Path::new("/x"), &descr, &mut out).unwrap();
        assert_eq!(n - V3_HEADER_LEN, 126);
        assert!(std::str::from_utf8(&out[V3_HEADER_LEN..n]).is_ok());
    }

    #[test]
    fn v1_requests_are_understood() {
        let mut buf = vec![0u8; V1_HEADER_LEN];
        buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        buf[4..8].copy_from_slice(&1u32.to_le_bytes());
        let mut addr = [0u8; SOCKADDR_UN_LEN];
        emit_sockaddr(Path::new("/tmp/c"), &mut addr).unwrap();
        buf[14..].copy_from_slice(&addr);
        buf.extend_from_slice(b"old");
        let req = Request::parse(&buf).unwrap();
        assert_eq!((req.version, req.port), (1, PortRequest::Zero));
        assert_eq!(req.description, b"old");
    }

    #[test]
    fn malformed_requests_get_typed_errors() {
        assert_eq!(Request::parse(&[1, 2, 3]), Err(RequestError::TooShort(3)));
        let mut bad = [0u8; V3_HEADER_LEN];
        assert_eq!(Request::parse(&bad), Err(RequestError::BadMagic(0)));
        bad[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        bad[4..8].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(Request::parse(&bad), Err(RequestError::BadVersion(2)));
        bad[4..8].copy_from_slice(&3u32.to_le_bytes());
        bad[8..12].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(Request::parse(&bad), Err(RequestError::UnknownType(7)));
        bad[8..12].copy_from_slice(&0u32.to_le_bytes());
        bad[12] = 1;
        bad[14..122].fill(b'a');
        assert_eq!(Request::parse(&bad), Err(RequestError::UnterminatedPath));
        assert_eq!(Request::parse(&[0u8; 300]), Err(RequestError::TooLong(300)));
        assert!(emit_sockaddr(Path::new(&"x".repeat(108)), &mut [0; 110]).is_err());
    }
}
