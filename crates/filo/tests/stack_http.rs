//! `filo stack http-serve` and `filo stack fetch` against hostile peers: a filo stack in this
//! process, on the same filo switch as the command, plays the client that never ends its
//! request line or the server that never ends its headers, lies about lengths, or does not
//! speak HTTP. (curl against http-serve is in stack_kernel.rs.)

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use filo_stack::{Stack, TcpStream};
use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(5);

/// Writes `head` and then `filler` until `limit` bytes went, the peer stops taking them
/// (a write waits more than 2 s) or fails; returns how much went.
fn flood(c: &TcpStream, head: &[u8], filler: u8, limit: usize) -> usize {
    c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut w = c;
    if w.write_all(head).is_err() {
        return 0;
    }
    let chunk = vec![filler; 64 * 1024];
    let mut sent = head.len();
    while sent < limit {
        match w.write(&chunk) {
            Ok(n) if n > 0 => sent += n,
            _ => break,
        }
    }
    sent
}

/// Reads what the peer sends until it closes (or `T` passes).
fn read_all(c: &TcpStream) -> Vec<u8> {
    c.set_read_timeout(Some(T)).unwrap();
    let mut got = Vec::new();
    let _ = (&mut &*c).read_to_end(&mut got);
    got
}

/// `filo stack http-serve` of a directory holding `a b.txt`, on a switch of its own, and a
/// filo stack in this process on the same switch to play its clients.
struct Served {
    server: Proc,
    me: Stack,
    www: std::path::PathBuf,
    _sw: FiloSwitch,
    _tmp: TempDir,
}

impl Served {
    fn start(tag: &str) -> Served {
        let tmp = TempDir::new(tag);
        let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
        let www = tmp.join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::write(www.join("a b.txt"), "spaced out\n").unwrap();
        let server = Proc::spawn(
            Command::new(FILO)
                .args(["stack", "http-serve", "--vnl", &sw.vnl()])
                .args(["--conf", "eth,ip=10.61.0.2/24", "-p", "8080"])
                .arg(&www)
                .stdout(Stdio::null())
                .stderr(test_log()),
        );
        let me = Stack::new(&sw.vnl(), "eth,ip=10.61.0.1/24").unwrap();
        let s = Served {
            server,
            me,
            www,
            _sw: sw,
            _tmp: tmp,
        };
        assert!(
            wait_until(Duration::from_secs(10), || s.connect().is_ok()),
            "http-serve did not start listening"
        );
        s
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        self.me.tcp_connect_timeout("10.61.0.2:8080", Some(T))
    }
}

#[test]
fn http_serve_answers_an_endless_request_line_or_header_with_431_and_stays_small() {
    let mut s = Served::start("filo-sh1");
    // A request line that never ends: 50 MB of it, if the server kept reading.
    let hostile = s.connect().unwrap();
    let t0 = Instant::now();
    let sent = flood(&hostile, b"GET /", b'a', 50 << 20);
    let answer = read_all(&hostile);
    let rss = rss_kib(s.server.pid());
    let answer = String::from_utf8_lossy(&answer[..answer.len().min(200)]).to_string();
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.starts_with("HTTP/1.1 414"),
        "no 431/414 for an endless request line after {sent} bytes in {:?}: {answer:?}",
        t0.elapsed()
    );
    assert!(
        sent < 10 << 20,
        "the server read {sent} bytes of one request line"
    );
    assert!(rss < 100 * 1024, "http-serve grew to {rss} KiB");
    // An endless header, likewise.
    let hostile = s.connect().unwrap();
    flood(&hostile, b"GET / HTTP/1.1\r\nX-Long: ", b'b', 50 << 20);
    let answer = read_all(&hostile);
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
    s.server.terminate(T);
}

#[test]
fn http_serve_decodes_paths_while_a_silent_client_waits_then_lets_it_go() {
    let mut s = Served::start("filo-sh10");
    let silent = s.connect().unwrap();
    let silent_since = Instant::now();
    // The silent client holds its connection; others are served meanwhile, the path
    // percent-decoded.
    let t0 = Instant::now();
    let c = s.connect().unwrap();
    (&c).write_all(b"GET /a%20b.txt HTTP/1.0\r\n\r\n").unwrap();
    let got = String::from_utf8_lossy(&read_all(&c)).to_string();
    assert!(got.starts_with("HTTP/1.0 200"), "{got}");
    assert!(got.contains("content-type: text/plain"), "{got}");
    assert!(got.ends_with("\r\n\r\nspaced out\n"), "{got}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    for (req, want) in [
        (&b"POST /a%20b.txt HTTP/1.0\r\n\r\n"[..], "HTTP/1.0 405"),
        (b"GET /a%20b.txt%00 HTTP/1.0\r\n\r\n", "HTTP/1.0 400"),
        (
            b"GET /%2e%2e/www/a%20b.txt HTTP/1.0\r\n\r\n",
            "HTTP/1.0 403",
        ),
    ] {
        let c = s.connect().unwrap();
        (&c).write_all(req).unwrap();
        let got = String::from_utf8_lossy(&read_all(&c)).to_string();
        assert!(
            got.starts_with(want),
            "{}: {got}",
            String::from_utf8_lossy(req)
        );
    }
    // The silent client is let go after the idle timeout (10 s from its connect).
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let closed = (&mut &silent).read_to_end(&mut Vec::new()).is_ok();
    let held = silent_since.elapsed();
    assert!(
        closed && held < Duration::from_secs(13),
        "silent client held {held:?}"
    );
    s.server.terminate(T);
}

#[test]
fn http_serve_streams_a_big_file_and_drops_a_client_that_stops_reading() {
    let mut s = Served::start("filo-sh11");
    // A sparse 2 GiB file: read whole into memory, it would show in the RSS.
    let f = std::fs::File::create(s.www.join("big.bin")).unwrap();
    f.set_len(2 << 30).unwrap();
    let c = s.connect().unwrap();
    let since = Instant::now();
    (&c).write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let mut got = vec![0u8; 1 << 20];
    (&c).read_exact(&mut got).unwrap();
    let head = String::from_utf8_lossy(&got[..200]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 2147483648\r\n"), "{head}");
    // The client stops reading. The server holds no more than its buffers...
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_kib(s.server.pid());
    assert!(rss < 100 * 1024, "http-serve grew to {rss} KiB");
    // ...and gives up on the connection after its idle timeout (10 s): once the client reads
    // what was in flight, the stream ends, far short of 2 GiB.
    std::thread::sleep(Duration::from_secs(11));
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let ended = loop {
        match (&c).read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => rest += n,
            Err(_) => break false,
        }
    };
    assert!(
        ended && rest < 64 << 20,
        "{rest} bytes more after {:?}",
        since.elapsed()
    );
    // The server still serves.
    let c = s.connect().unwrap();
    (&c).write_all(b"GET /a%20b.txt HTTP/1.0\r\n\r\n").unwrap();
    assert!(read_all(&c).ends_with(b"spaced out\n"));
    s.server.terminate(T);
}

/// A server on `me` at `port` that answers one connection: reads the request head (up to
/// 16 KiB), sends `reply` (then `flood_with` bytes forever if given) and closes. Returns the
/// request it read.
fn hostile_server(
    me: &Stack,
    port: u16,
    reply: &'static [u8],
    flood_with: Option<u8>,
) -> JoinHandle<Vec<u8>> {
    let l = me.tcp_listen(format!("0.0.0.0:{port}")).unwrap();
    std::thread::spawn(move || {
        let Some((c, _)) = l.accept_timeout(Some(Duration::from_secs(20))).unwrap() else {
            return Vec::new();
        };
        c.set_read_timeout(Some(T)).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 << 10 {
            match (&c).read(&mut buf) {
                Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        match flood_with {
            Some(b) => {
                flood(&c, reply, b, 50 << 20);
            }
            None => {
                let _ = (&c).write_all(reply);
            }
        }
        let _ = c.shutdown(std::net::Shutdown::Write);
        let _ = c.drain(T);
        req
    })
}

struct Fetched {
    ok: bool,
    out: String,
    err: String,
}

fn fetch(vnl: &str, url: &str) -> Fetched {
    let p = Proc::spawn(
        Command::new(FILO)
            .args([
                "stack",
                "fetch",
                "--vnl",
                vnl,
                "--conf",
                "eth,ip=10.62.0.2/24",
            ])
            .args(["-t", "5", url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let (st, out, err) = p.output(Duration::from_secs(30));
    Fetched {
        ok: st.success(),
        out,
        err,
    }
}

/// Runs `filo stack fetch http://10.62.0.1:8000/x` against a [`hostile_server`] on a switch
/// of its own; returns the outcome and the request the server read.
fn fetch_from(tag: &str, reply: &'static [u8], flood_with: Option<u8>) -> (Fetched, String) {
    let tmp = TempDir::new(tag);
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let me = Stack::new(&sw.vnl(), "eth,ip=10.62.0.1/24").unwrap();
    let s = hostile_server(&me, 8000, reply, flood_with);
    let t0 = Instant::now();
    let f = fetch(&sw.vnl(), "http://10.62.0.1:8000/x");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let req = String::from_utf8_lossy(&s.join().unwrap()).to_string();
    (f, req)
}

/// Asserts that the fetch failed with `want` in its message.
fn refused(f: Fetched, want: &str) {
    assert!(!f.ok, "exit 0 with output {:?}", f.out);
    assert!(f.err.contains(want), "{}", f.err);
}

#[test]
fn fetch_writes_a_chunked_body_without_its_framing() {
    let (f, req) = fetch_from(
        "filo-sh2",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        None,
    );
    assert!(f.ok, "{}", f.err);
    assert_eq!(f.out, "hello world");
    assert!(req.starts_with("GET /x HTTP/1.1\r\n"), "{req}");
    assert!(req.contains("host: 10.62.0.1:8000\r\n"), "{req}");
}

#[test]
fn fetch_fails_on_a_body_that_ends_early() {
    let (f, _) = fetch_from(
        "filo-sh3",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        None,
    );
    refused(f, "the response body from 10.62.0.1:8000 is incomplete");
    let (f, _) = fetch_from(
        "filo-sh4",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello",
        None,
    );
    refused(f, "the response body from 10.62.0.1:8000 is incomplete");
}

#[test]
fn fetch_refuses_a_negative_or_absurd_content_length() {
    for len in ["-5", "99999999999999999999999999"] {
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\nhello");
        let (f, _) = fetch_from("filo-sh5", reply.leak().as_bytes(), None);
        refused(f, "not an HTTP response from 10.62.0.1:8000");
    }
}

#[test]
fn fetch_names_a_server_that_does_not_speak_http() {
    let (f, _) = fetch_from("filo-sh6", b"\xff\xfe\x00\x01 binary garbage\r\n\r\n", None);
    refused(f, "not an HTTP response from 10.62.0.1:8000");
}

#[test]
fn fetch_refuses_an_endless_header_and_one_cut_short() {
    let (f, _) = fetch_from("filo-sh7", b"HTTP/1.1 200 OK\r\nX-Long: ", Some(b'a'));
    refused(f, "the response head from 10.62.0.1:8000 is too large");
    let (f, _) = fetch_from("filo-sh8", b"HTTP/1.1 200 OK\r\nX-Short: yes\r\n", None);
    refused(
        f,
        "10.62.0.1:8000 closed the connection before a complete response head",
    );
}

#[test]
fn fetch_refuses_a_url_with_cr_lf_before_connecting() {
    let tmp = TempDir::new("filo-sh9");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let me = Stack::new(&sw.vnl(), "eth,ip=10.62.0.1/24").unwrap();
    let accepted = Arc::new(AtomicBool::new(false));
    let l = me.tcp_listen("0.0.0.0:8000").unwrap();
    let probe = {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            if let Ok(Some((c, _))) = l.accept_timeout(Some(Duration::from_secs(3))) {
                accepted.store(true, Ordering::Relaxed);
                let _ = (&c).write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
                let _ = c.drain(T);
            }
        })
    };
    let f = fetch(&sw.vnl(), "http://10.62.0.1:8000/a\r\nX-Injected: 1");
    probe.join().unwrap();
    assert!(
        !accepted.load(Ordering::Relaxed),
        "fetch connected with a CR/LF in the URL"
    );
    refused(f, "http://HOST[:PORT]/PATH");
}
