//! filo-stack against Linux's own TCP/IP: a namespace whose tap sits on a filo switch (carried
//! by `filo plug` inside the namespace) and filo stacks on the same switch, in this process
//! (the library) and as `filo stack` commands. IPv4 and IPv6, both directions.

use std::process::{Command, Stdio};
use std::time::Duration;

use filo_stack::{DropReason, Stack};
use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(5);

/// A namespace with tap0 (10.N.0.1/24, fdN::1/64) plugged into a filo switch.
struct KernelPeer {
    ns: Netns,
    _plug: Proc,
    sw: FiloSwitch,
    tmp: TempDir,
    net: u8,
}

impl KernelPeer {
    fn start(tag: &str, net: u8) -> KernelPeer {
        require("ping");
        let tmp = TempDir::new(tag);
        let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
        let ns = Netns::new(tag);
        ns.tap(&[&format!("10.{net}.0.1/24"), &format!("fd{net}::1/64")]);
        let plug = ns.plug_tap(&[FILO, "plug"], &sw.vnl());
        assert!(
            wait_until(T, || sw.endpoints() >= 1),
            "the tap plug did not connect"
        );
        KernelPeer {
            ns,
            _plug: plug,
            sw,
            tmp,
            net,
        }
    }

    fn conf(&self, host: u8) -> String {
        let n = self.net;
        format!("eth,ip=10.{n}.0.{host}/24,ip=fd{n}::{host}/64")
    }

    fn v4(&self, host: u8) -> String {
        format!("10.{}.0.{host}", self.net)
    }

    fn v6(&self, host: u8) -> String {
        format!("fd{}::{host}", self.net)
    }

    /// `filo stack http-serve DIR` on port 8080 of host `host`, with `extra` flags.
    fn http_serve(&self, host: u8, dir: &std::path::Path, extra: &[&str]) -> Proc {
        Proc::spawn(
            Command::new(FILO)
                .args(["stack", "http-serve", "--vnl", &self.sw.vnl()])
                .args(["--conf", &self.conf(host), "-p", "8080"])
                .args(extra)
                .arg(dir)
                .stdout(Stdio::null()),
        )
    }
}

#[test]
fn ping_both_ways_between_filo_stack_and_the_kernel() {
    let k = KernelPeer::start("filo-sk1", 51);
    let s = Stack::new(&k.sw.vnl(), &k.conf(2)).unwrap();
    for dst in [k.v4(1), k.v6(1)] {
        let rtt = s.ping(dst.parse().unwrap(), 1, 56, T).unwrap();
        assert!(rtt < T);
    }
    k.ns.exec_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &k.v4(2)]);
    k.ns.exec_ok(&["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", &k.v6(2)]);
    // Neighbour discovery went through filo's own ARP and NDP, and nothing was malformed.
    let c = s.counters();
    assert!(c.frames_in > 4 && c.frames_out > 4, "{c:?}");
    assert_eq!(
        c.get(DropReason::BadArp) + c.get(DropReason::BadIpv4) + c.get(DropReason::BadIpv6),
        0,
        "{c:?}"
    );
}

#[test]
fn curl_in_a_namespace_fetches_from_filo_stack_http_serve() {
    require("curl");
    let k = KernelPeer::start("filo-sk2", 52);
    let www = k.tmp.join("www");
    std::fs::create_dir(&www).unwrap();
    let page: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(www.join("page.bin"), &page).unwrap();
    let mut server = k.http_serve(2, &www, &[]);
    for url in [
        format!("http://{}:8080/page.bin", k.v4(2)),
        format!("http://[{}]:8080/page.bin", k.v6(2)),
    ] {
        let got = k.tmp.join("got");
        let ok = wait_until(Duration::from_secs(10), || {
            k.ns.command("curl")
                .args(["-sf", "--max-time", "5", "-o"])
                .arg(&got)
                .arg(&url)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        });
        assert!(ok, "curl {url} failed");
        assert!(
            std::fs::read(&got).unwrap() == page,
            "{url}: content differs"
        );
    }
    // A missing file is a 404, which curl -f reports as failure.
    let st =
        k.ns.command("curl")
            .args([
                "-sf",
                "--max-time",
                "5",
                &format!("http://{}:8080/nope", k.v4(2)),
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
    assert!(!st.success());
    server.terminate(T);
}

#[test]
fn filo_stack_fetch_gets_files_from_python_http_server_in_a_namespace() {
    require("python3");
    let k = KernelPeer::start("filo-sk3", 53);
    let blob: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(k.tmp.join("blob"), &blob).unwrap();
    let mut py = k.ns.command("python3");
    py.args(["-m", "http.server", "--bind", "::", "8000", "-d"])
        .arg(k.tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _py = Proc::spawn(&mut py);
    for (host, url) in [
        (3, format!("http://{}:8000/blob", k.v4(1))),
        (4, format!("http://[{}]:8000/blob", k.v6(1))),
    ] {
        let out = k.tmp.join(&format!("out{host}"));
        let ok = wait_until(Duration::from_secs(15), || {
            Command::new(FILO)
                .args([
                    "stack",
                    "fetch",
                    "--vnl",
                    &k.sw.vnl(),
                    "--conf",
                    &k.conf(host),
                ])
                .args(["--name", &format!("fetcher{host}"), "-t", "5", "-o"])
                .arg(&out)
                .arg(&url)
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        });
        assert!(ok, "filo stack fetch {url} failed");
        assert!(
            std::fs::read(&out).unwrap() == blob,
            "{url}: content differs"
        );
    }
    // The library client too, with a std-like TcpStream.
    let s = Stack::new(&k.sw.vnl(), &k.conf(5)).unwrap();
    let mut c = s.tcp_connect(format!("{}:8000", k.v4(1))).unwrap();
    use std::io::{Read, Write};
    c.write_all(b"GET /blob HTTP/1.0\r\n\r\n").unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).unwrap();
    assert!(resp.starts_with(b"HTTP/1.0 200"));
    assert!(resp.ends_with(&blob));
}

#[test]
fn filo_stack_cli_rejects_bad_configuration_naming_the_item() {
    let out = Command::new(FILO)
        .args([
            "stack",
            "ping",
            "--vnl",
            "null://",
            "--conf",
            "eth,ip=10.0.0.1",
            "10.0.0.2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ip=10.0.0.1") && err.contains("ip=ADDR/LEN"),
        "{err}"
    );
    let out = Command::new(FILO)
        .args([
            "stack",
            "fetch",
            "--vnl",
            "null://",
            "--conf",
            "frobnicate",
            "http://x/",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("frobnicate") && err.contains("dhcp"), "{err}");
    let out = Command::new(FILO)
        .args(["stack", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for w in ["http-serve", "fetch", "ping", "ip=ADDR/LEN", "slaac"] {
        assert!(help.contains(w), "--help lacks {w}: {help}");
    }
}

#[test]
fn filo_stack_ping_cli_reaches_the_kernel() {
    let k = KernelPeer::start("filo-sk4", 54);
    let out = Command::new(FILO)
        .args(["stack", "ping", "--vnl", &k.sw.vnl(), "--conf", &k.conf(2)])
        .args(["-c", "2", "-i", "0.2", &k.v6(1)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 packets transmitted, 2 received"), "{text}");
}

#[test]
fn curl_gets_percent_decoded_paths_but_no_symlink_out_of_http_serve() {
    require("curl");
    let k = KernelPeer::start("filo-sk5", 55);
    let www = k.tmp.join("www");
    let secret = k.tmp.join("secret");
    std::fs::create_dir(&www).unwrap();
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("shadow"), "root:SECRET\n").unwrap();
    std::fs::write(www.join("a b.txt"), "spaced\n").unwrap();
    std::fs::write(www.join("index.html"), "<p>hi</p>\n").unwrap();
    std::os::unix::fs::symlink(&secret, www.join("etcdir")).unwrap();
    std::os::unix::fs::symlink(secret.join("shadow"), www.join("shadow")).unwrap();
    std::os::unix::fs::symlink(www.join("a b.txt"), www.join("inner.txt")).unwrap();
    // Eight requests, then the server exits by itself.
    let mut server = k.http_serve(2, &www, &["--max-requests", "8"]);
    let base = format!("http://{}:8080", k.v4(2));
    // (status, content type, body) as curl sees them.
    let curl = |args: &[&str], path: &str| -> (String, String, String) {
        let out =
            k.ns.command("curl")
                .args(["-s", "--max-time", "5", "--path-as-is"])
                .args(["-w", "\n%{http_code} %{content_type}"])
                .args(args)
                .arg(format!("{base}{path}"))
                .output()
                .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
        let (code, ctype) = tail.split_once(' ').unwrap_or((tail, ""));
        (code.to_string(), ctype.to_string(), body.to_string())
    };
    assert!(
        wait_until(Duration::from_secs(10), || curl(&[], "/").0 == "200"),
        "http-serve did not answer"
    );
    // Symlinks may not lead out of the served directory, nor may `..`.
    for out in [
        "/etcdir/shadow",
        "/shadow",
        "/../secret/shadow",
        "/%2e%2e/secret/shadow",
    ] {
        let (code, _, body) = curl(&[], out);
        assert_eq!(code, "403", "{out}: {body}");
        assert!(!body.contains("SECRET"), "{out}: {body}");
    }
    // Paths are percent-decoded; symlinks inside the directory are followed.
    let (code, ctype, body) = curl(&[], "/a%20b.txt");
    assert_eq!(
        (code.as_str(), ctype.as_str(), body.as_str()),
        ("200", "text/plain", "spaced\n")
    );
    let (code, _, body) = curl(&[], "/inner.txt");
    assert_eq!((code.as_str(), body.as_str()), ("200", "spaced\n"));
    // HEAD: the headers of a GET, no body.
    let out =
        k.ns.command("curl")
            .args(["-sI", "--max-time", "5", &format!("{base}/index.html")])
            .output()
            .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-length: 10"), "{head}");
    // That was the eighth request (the first answered one included).
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}
