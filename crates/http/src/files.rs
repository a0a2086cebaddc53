//! Mapping a request path to a file under the served directory (sans-IO except for the
//! file-system look-ups that resolving symlinks needs).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use percent_encoding::percent_decode_str;

/// Why a request path does not name a file that may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The path holds a NUL (raw or `%00`).
    BadRequest,
    /// A `..` component, or a path whose canonical form leaves the served directory.
    Forbidden,
    /// No such file (or a directory without `index.html`).
    NotFound,
}

/// Maps the path of a request (`/a%20b.txt`, no query) to a regular file inside `root`,
/// which must be canonical ([`Path::canonicalize`]). The path is percent-decoded first;
/// `..` and NUL are refused; the result is canonical and lies inside `root`, so a symlink
/// may point anywhere inside the served directory but never out of it. A directory serves
/// its `index.html`.
pub fn resolve(root: &Path, path: &str) -> Result<PathBuf, Refusal> {
    let raw: Vec<u8> = percent_decode_str(path).collect();
    if raw.contains(&0) {
        return Err(Refusal::BadRequest);
    }
    let mut file = root.to_path_buf();
    for c in Path::new(OsStr::from_bytes(&raw)).components() {
        match c {
            Component::Normal(p) => file.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(Refusal::Forbidden),
        }
    }
    let inside = |p: &Path| -> Result<PathBuf, Refusal> {
        let c = p.canonicalize().map_err(|_| Refusal::NotFound)?;
        if c.starts_with(root) {
            Ok(c)
        } else {
            Err(Refusal::Forbidden)
        }
    };
    let mut file = inside(&file)?;
    if file.is_dir() {
        file = inside(&file.join("index.html"))?;
    }
    if !file.is_file() {
        return Err(Refusal::NotFound);
    }
    Ok(file)
}

/// The Content-Type for a file name.
pub fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") | Some("htm") => "text/html",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::{resolve, Refusal};
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_are_decoded_and_confined_to_the_served_directory() {
        let tmp = filo_test_support::TempDir::new("filo-http-files");
        let root = tmp.join("www");
        let outside = tmp.join("secret");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("shadow"), "x").unwrap();
        std::fs::write(root.join("a b.txt"), "ab").unwrap();
        std::fs::write(root.join("sub/index.html"), "i").unwrap();
        symlink(&outside, root.join("etcdir")).unwrap();
        symlink(outside.join("shadow"), root.join("link")).unwrap();
        symlink(root.join("a b.txt"), root.join("inner")).unwrap();
        let root = root.canonicalize().unwrap();
        let ok = |p: &str| resolve(&root, p).map(|f| f.strip_prefix(&root).unwrap().to_owned());
        assert_eq!(ok("/a%20b.txt"), Ok("a b.txt".into()));
        assert_eq!(ok("/sub/"), Ok("sub/index.html".into()));
        assert_eq!(ok("/sub"), Ok("sub/index.html".into()));
        assert_eq!(ok("/inner"), Ok("a b.txt".into()));
        assert_eq!(ok("//a%20b.txt"), Ok("a b.txt".into()));
        assert_eq!(ok("/"), Err(Refusal::NotFound));
        assert_eq!(ok("/nope"), Err(Refusal::NotFound));
        assert_eq!(ok("/a b.txt%00"), Err(Refusal::BadRequest));
        for bad in [
            "/../secret/shadow",
            "/%2e%2e/secret/shadow",
            "/sub/..%2f..%2fx",
        ] {
            assert_eq!(ok(bad), Err(Refusal::Forbidden), "{bad}");
        }
        for out in ["/etcdir/shadow", "/link", "/etcdir"] {
            assert_eq!(ok(out), Err(Refusal::Forbidden), "{out}");
        }
    }
}
