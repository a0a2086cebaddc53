//! Clients of a switch that is killed (`kill -9`) and restarted on the same path: `filo plug`
//! reconnects (or exits with --no-reconnect), and a stack's TCP connections carry on.

use std::io::Read;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const BCAST: [u8; 6] = [0xff; 6];

/// Kills the switch with SIGKILL (its ctl and console sockets stay behind, stale) and starts a
/// new one on the same paths after `pause`.
fn restart(sw: &mut FiloSwitch, tmp: &TempDir, name: &str, pause: Duration) {
    let _ = sw.proc.child.kill();
    let _ = sw.proc.child.wait();
    assert!(sw.dir.join("ctl").exists(), "kill -9 leaves a stale ctl");
    std::thread::sleep(pause);
    *sw = FiloSwitch::start(FILO, tmp, name, &[]);
    // The stale sockets were there before: wait for the new switch's console to answer.
    assert!(
        wait_until(Duration::from_secs(5), || UnixStream::connect(&sw.mgmt)
            .is_ok()),
        "the restarted switch answers on {}",
        sw.mgmt.display()
    );
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Sends a broadcast from `from` until `to` receives it (a cable being rebuilt drops frames).
fn frames_pass(from: &mut filo_vnl::Plug, to: &mut filo_vnl::Plug, seq: u32) -> bool {
    let f = test_frame(BCAST, A, seq, 100);
    let mut buf = vec![0u8; 9300];
    wait_until(Duration::from_secs(10), || {
        let _ = from.send_timeout(&f, Some(Duration::from_secs(1)));
        loop {
            match to.recv_timeout(&mut buf, Some(Duration::from_millis(200))) {
                Ok(n) if buf[..n] == f[..] => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    })
}

#[test]
fn filo_plug_between_two_switches_reconnects_after_one_restarts() {
    let tmp = TempDir::new("filo-rc-plug");
    let sw1 = FiloSwitch::start(FILO, &tmp, "sw1", &[]);
    let mut sw2 = FiloSwitch::start(FILO, &tmp, "sw2", &[]);
    let log = tmp.join("plug.log");
    let mut plug = Proc::spawn(
        Command::new(FILO)
            .args(["plug", &sw1.vnl(), &sw2.vnl()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    assert!(wait_until(Duration::from_secs(5), || sw2.endpoints() == 1
        && sw1.endpoints() == 1));
    let mut a = filo_vnl::open(&sw1.vnl()).unwrap();
    let mut b = filo_vnl::open(&sw2.vnl()).unwrap();
    assert!(frames_pass(&mut a, &mut b, 1), "frames cross the cable");
    drop(b);

    restart(&mut sw2, &tmp, "sw2", Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(10), || sw2.endpoints() == 1),
        "filo plug joined the restarted switch; log: {}",
        read_log(&log)
    );
    let mut b = filo_vnl::open(&sw2.vnl()).unwrap();
    assert!(frames_pass(&mut a, &mut b, 2), "frames cross again");
    assert!(
        plug.child.try_wait().unwrap().is_none(),
        "filo plug still runs"
    );
    let text = read_log(&log);
    assert!(
        text.contains("link lost") && text.contains("reconnecting"),
        "{text}"
    );
    assert!(text.contains("link back"), "{text}");
    assert!(text.contains("WARN"), "visible by default: {text}");
}

/// Runs `filo plug ARGS` (the second VNL `null://`) on a switch of its own, kills the switch
/// once the plug joined it, and returns the plug's exit code and stderr.
fn plug_outlives_its_switch(tag: &str, args: &[&str]) -> (Option<i32>, String) {
    let tmp = TempDir::new(tag);
    let mut sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let plug = Proc::spawn(
        Command::new(FILO)
            .arg("plug")
            .args(args)
            .args([&sw.vnl(), "null://"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(wait_until(Duration::from_secs(5), || sw.endpoints() == 1));
    std::thread::sleep(Duration::from_millis(300));
    let _ = sw.proc.child.kill();
    let _ = sw.proc.child.wait();
    let (status, _out, err) = plug.output(Duration::from_secs(10));
    (status.code(), err)
}

#[test]
fn filo_plug_with_no_reconnect_exits_non_zero_with_a_message() {
    let (code, err) = plug_outlives_its_switch("filo-rc-noplug", &["--no-reconnect"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("closed the connection"), "{err}");
    assert!(err.contains("--no-reconnect"), "{err}");
}

#[test]
fn filo_plug_gives_up_after_its_reconnect_timeout() {
    let (code, err) = plug_outlives_its_switch("filo-rc-giveup", &["--reconnect-timeout", "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("gave up reconnecting"), "{err}");
}

/// A reader that kills and restarts the switch once `at` bytes went through it.
struct RestartAt<'a, R> {
    inner: R,
    seen: u64,
    at: u64,
    restart: Option<Box<dyn FnOnce() + 'a>>,
}

impl<R: Read> Read for RestartAt<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if self.seen >= self.at {
            if let Some(f) = self.restart.take() {
                f();
            }
        }
        Ok(n)
    }
}

#[test]
fn tcp_between_stacks_survives_a_switch_killed_and_restarted() {
    const BYTES: u64 = 64 << 20;
    let tmp = TempDir::new("filo-rc-tcp");
    let mut sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let vnl = sw.vnl();
    let s1 = filo_stack::Stack::builder()
        .name("rc1")
        .interface(vnl.clone(), "eth,ip=10.77.0.1/24")
        .build()
        .unwrap();
    let s2 = filo_stack::Stack::builder()
        .name("rc2")
        .interface(vnl, "eth,ip=10.77.0.2/24")
        .build()
        .unwrap();
    let l = s1.tcp_listen("0.0.0.0:5201").unwrap();
    let sender = std::thread::spawn(move || {
        let c = s2.tcp_connect("10.77.0.1:5201").unwrap();
        let sent = filo_stack::perf::send(&c, BYTES).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        c.drain(Duration::from_secs(30)).unwrap();
        sent
    });
    let (c, _) = l.accept().unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mac_before = s1.links()[0].mac;
    let reader = RestartAt {
        inner: &c,
        seen: 0,
        at: 8 << 20,
        restart: Some(Box::new(|| {
            restart(&mut sw, &tmp, "sw", Duration::from_secs(2));
        })),
    };
    let got = filo_stack::perf::receive(reader).unwrap();
    let sent = sender.join().unwrap();
    assert_eq!(got.bytes, BYTES);
    assert_eq!(got.crc32, sent.crc32, "the stream arrived intact");
    assert_eq!(s1.links()[0].mac, mac_before, "the link keeps its MAC");
    assert!(s1.links()[0].up, "the link is up again");
}

/// `filo stack http-serve` of a directory on `sw`, its stderr in `log`.
fn http_serve(tmp: &TempDir, sw: &FiloSwitch, log: &Path, extra: &[&str]) -> Proc {
    let www = tmp.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("f.txt"), "still here\n").unwrap();
    Proc::spawn(
        Command::new(FILO)
            .args(["stack", "http-serve", "--vnl", &sw.vnl()])
            .args(["--conf", "eth,ip=10.78.0.2/24", "-p", "8080"])
            .args(extra)
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap()),
    )
}

/// `filo stack fetch` of http-serve's file; true when it came.
fn fetched(sw: &FiloSwitch) -> bool {
    let p = Proc::spawn(
        Command::new(FILO)
            .args(["stack", "fetch", "--vnl", &sw.vnl()])
            .args(["--conf", "eth,ip=10.78.0.3/24", "-t", "5"])
            .arg("http://10.78.0.2:8080/f.txt")
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let (st, out, _) = p.output(Duration::from_secs(30));
    st.success() && out == "still here\n"
}

#[test]
fn http_serve_says_its_switch_is_gone_and_serves_again_once_it_is_back() {
    let tmp = TempDir::new("filo-rc-http");
    let mut sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let log = tmp.join("http.log");
    let mut server = http_serve(&tmp, &sw, &log, &[]);
    assert!(
        wait_until(Duration::from_secs(20), || fetched(&sw)),
        "served before; log: {}",
        read_log(&log)
    );
    let _ = sw.proc.child.kill();
    let _ = sw.proc.child.wait();
    assert!(
        wait_until(Duration::from_secs(5), || read_log(&log)
            .contains("link lost")),
        "http-serve says the link is lost: {}",
        read_log(&log)
    );
    assert!(read_log(&log).contains("WARN"), "{}", read_log(&log));
    std::thread::sleep(Duration::from_secs(1));
    sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    assert!(wait_until(Duration::from_secs(5), || UnixStream::connect(
        &sw.mgmt
    )
    .is_ok()));
    assert!(
        wait_until(Duration::from_secs(20), || fetched(&sw)),
        "served after the restart; log: {}",
        read_log(&log)
    );
    assert!(read_log(&log).contains("link back"), "{}", read_log(&log));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "http-serve still runs"
    );
}

#[test]
fn http_serve_with_no_reconnect_exits_non_zero_when_its_switch_dies() {
    let tmp = TempDir::new("filo-rc-httpno");
    let mut sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let log = tmp.join("http.log");
    let mut server = http_serve(&tmp, &sw, &log, &["--no-reconnect"]);
    assert!(wait_until(Duration::from_secs(20), || fetched(&sw)));
    let _ = sw.proc.child.kill();
    let _ = sw.proc.child.wait();
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{}", read_log(&log));
    let text = read_log(&log);
    assert!(
        text.contains("link vde0 gone") && text.contains("closed the connection"),
        "{text}"
    );
}

/// True when a `filo ns` at 10.80.0.2 on `vnl` pings `ip`.
fn ns_pings(vnl: &str, ip: &str) -> bool {
    let p = Proc::spawn(
        Command::new(FILO)
            .args([
                "ns",
                "--ip",
                "10.80.0.2/24",
                vnl,
                "--",
                "ping",
                "-c1",
                "-W1",
                ip,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    p.output(Duration::from_secs(20)).0.success()
}

/// Starts `filo ARGS`, `vnl` in place of `{vnl}`, stdout piped, and waits until a namespace
/// on `vnl` pings it at `ip`.
fn reachable_host(args: &[&str], vnl: &str, ip: &str, stderr: Stdio) -> Proc {
    let host = Proc::spawn(
        Command::new(FILO)
            .args(args.iter().map(|a| if *a == "{vnl}" { vnl } else { a }))
            .env_remove("FILO_STACK")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr),
    );
    assert!(wait_until(Duration::from_secs(20), || ns_pings(vnl, ip)));
    host
}

/// Starts `filo ARGS` (with the switch's VNL in place of `{vnl}`, its stderr in a log) for a
/// host at `ip` on a switch of its own, restarts the switch, and checks that the host is
/// reachable again, said so, and still runs.
fn reachable_again_after_a_restart(tag: &str, args: &[&str], ip: &str) {
    let tmp = TempDir::new(tag);
    let mut sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let log = tmp.join("host.log");
    let vnl = sw.vnl();
    let mut host = reachable_host(args, &vnl, ip, std::fs::File::create(&log).unwrap().into());
    restart(&mut sw, &tmp, "sw", Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(20), || ns_pings(&vnl, ip)),
        "reachable after the restart; log: {}",
        read_log(&log)
    );
    let text = read_log(&log);
    assert!(
        text.contains("link lost") && text.contains("link back"),
        "{text}"
    );
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "{args:?} still runs"
    );
    host.terminate(Duration::from_secs(10));
}

#[test]
fn filo_ns_joins_its_restarted_switch_again() {
    reachable_again_after_a_restart(
        "filo-rc-ns",
        &["ns", "--ip", "10.80.0.1/24", "{vnl}", "--", "sleep", "120"],
        "10.80.0.1",
    );
}

#[test]
fn a_named_stack_joins_its_restarted_switch_again() {
    let tmp = TempDir::new("filo-rc-named-path");
    let path = tmp.join("s1").to_string_lossy().into_owned();
    reachable_again_after_a_restart(
        "filo-rc-named",
        &[
            "stack",
            "serve",
            &path,
            "--vnl",
            "{vnl}",
            "--ip",
            "10.80.0.3/24",
        ],
        "10.80.0.3",
    );
}

/// Starts `filo ARGS` (`{vnl}` as in [`reachable_again_after_a_restart`]) for a host at `ip`,
/// kills its switch, and returns the exit code and stderr; it must end within 10 s.
fn ends_when_its_switch_dies(tag: &str, args: &[&str], ip: &str) -> (Option<i32>, String) {
    let tmp = TempDir::new(tag);
    let mut sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let vnl = sw.vnl();
    let host = reachable_host(args, &vnl, ip, Stdio::piped());
    let _ = sw.proc.child.kill();
    let _ = sw.proc.child.wait();
    let (status, _out, err) = host.output(Duration::from_secs(10));
    assert!(
        err.contains("closed the connection") && err.contains("--no-reconnect"),
        "{err}"
    );
    (status.code(), err)
}

#[test]
fn filo_ns_with_no_reconnect_stops_its_command_when_the_switch_dies() {
    let args = [
        "ns",
        "--no-reconnect",
        "--ip",
        "10.80.0.1/24",
        "{vnl}",
        "--",
        "sleep",
        "120",
    ];
    let (code, err) = ends_when_its_switch_dies("filo-rc-nsno", &args, "10.80.0.1");
    assert_eq!(code, Some(128 + 15), "{err}");
}

#[test]
fn a_named_stack_with_no_reconnect_stops_with_status_1_when_its_switch_dies() {
    let tmp = TempDir::new("filo-rc-namedno-path");
    let path = tmp.join("s1");
    let p = path.to_string_lossy().into_owned();
    let args = [
        "stack",
        "serve",
        "--no-reconnect",
        &p,
        "--vnl",
        "{vnl}",
        "--ip",
        "10.80.0.3/24",
    ];
    let (code, err) = ends_when_its_switch_dies("filo-rc-namedno", &args, "10.80.0.3");
    assert_eq!(code, Some(1), "{err}");
    assert!(!path.exists(), "the stack's socket is removed");
}

#[test]
fn filo_plug_reconnects_to_a_restarted_debian_vde_switch() {
    let tmp = TempDir::new("filo-rc-deb");
    let mut sw = DebSwitch::start(&tmp, "sw");
    let log = tmp.join("plug.log");
    let _plug = Proc::spawn(
        Command::new(FILO)
            .args(["plug", &sw.vnl(), "null://"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let joined = |sw: &DebSwitch| sw.console("port/print").contains("filo-plug:");
    assert!(wait_until(Duration::from_secs(5), || joined(&sw)));
    sw.kill();
    std::thread::sleep(Duration::from_secs(1));
    sw = DebSwitch::start(&tmp, "sw");
    // The stale console socket was there before: wait for the new switch to answer on it.
    assert!(wait_until(Duration::from_secs(5), || UnixStream::connect(
        &sw.mgmt
    )
    .is_ok()));
    assert!(
        wait_until(Duration::from_secs(10), || joined(&sw)),
        "filo plug joined the restarted vde_switch; log: {}",
        read_log(&log)
    );
    assert!(read_log(&log).contains("link back"), "{}", read_log(&log));
}
