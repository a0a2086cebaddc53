//! Fuzz filo-http's parsing of what a peer or a user controls: the URL of `filo stack fetch`
//! (`Url::from_str`) and the request path of `filo stack http-serve` (`files::resolve`, on
//! the raw text and on the path of the request target as hyper parses it). Asserts: no
//! panic; an accepted URL has a host, a target starting with `/` and free of bytes a request
//! line cannot carry (CR, LF, space, other controls), and its Display parses back to an equal
//! URL; a resolved path is a regular file inside the served directory (a symlink leading out
//! of it, `..` and `%2e%2e` never escape).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use filo_http::{files, Url};
use libfuzzer_sys::fuzz_target;

/// A served directory with a file, an index, a symlink out of it and a secret beside it.
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("filo-fuzz-http-{}", std::process::id()));
        let www = base.join("www");
        std::fs::create_dir_all(www.join("sub")).expect("fuzz temp dir");
        std::fs::create_dir_all(base.join("secret")).expect("fuzz temp dir");
        std::fs::write(base.join("secret/shadow"), "x").expect("fuzz temp file");
        std::fs::write(www.join("a b.txt"), "ab").expect("fuzz temp file");
        std::fs::write(www.join("sub/index.html"), "i").expect("fuzz temp file");
        let _ = std::os::unix::fs::symlink(base.join("secret"), www.join("out"));
        let _ = std::os::unix::fs::symlink("../a b.txt", www.join("sub/up"));
        www.canonicalize().expect("fuzz temp dir")
    })
}

fn check_resolve(path: &str) {
    if let Ok(file) = files::resolve(root(), path) {
        assert!(
            file.starts_with(root()),
            "{path:?} resolved to {}",
            file.display()
        );
        assert!(file.is_file(), "{path:?} resolved to {}", file.display());
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(url) = text.parse::<Url>() {
        assert!(!url.host.is_empty(), "{text:?}");
        assert!(url.target.starts_with('/'), "{text:?}: {url:?}");
        assert!(
            !url.target.bytes().any(|b| b <= b' ' || b == 0x7f),
            "{text:?}: target {:?}",
            url.target
        );
        let shown = url.to_string();
        match shown.parse::<Url>() {
            Ok(back) => assert_eq!(back, url, "{text:?} shown as {shown:?}"),
            Err(e) => panic!("{text:?} shown as {shown:?}, which does not parse: {e}"),
        }
    }
    check_resolve(&text);
    if let Ok(uri) = text.parse::<hyper::Uri>() {
        check_resolve(uri.path());
    }
});
