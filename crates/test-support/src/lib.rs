//! Helpers shared by filo's integration tests: unique temp dirs, network namespaces, child
//! processes that die with the test, and waiting with deadlines. Everything cleans up on drop,
//! so a failing test leaves nothing behind.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[allow(unsafe_code)]
pub mod sys;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `prefix-PID-N`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory under /tmp (short paths: UNIX socket names are limited to 107 bytes).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = PathBuf::from("/tmp").join(unique(prefix));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fails the test with a clear message when a peer program is missing.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: run the README's test command, which installs the test peers"
    );
}

/// Records that a test skipped part of its work, and why: printed, and appended to the file
/// named by `FILO_TEST_SKIPS` (set by `scripts/test`, which reports the count in its closing
/// line: with `--quiet` a skipping test would otherwise just count as passed).
pub fn skip(reason: &str) {
    eprintln!("SKIP {reason}");
    if let Some(path) = std::env::var_os("FILO_TEST_SKIPS") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{}", reason.replace('\n', " "));
        }
    }
}

/// Makes `tmp` enterable by every user and copies `program` into it, executable by all:
/// for running it as another user (see [`as_nobody`]). Returns the copy's path.
pub fn copy_for_everyone(tmp: &TempDir, program: &str) -> PathBuf {
    run(Command::new("chmod").args(["755", &tmp.path().to_string_lossy()]));
    let name = Path::new(program).file_name().unwrap_or("program".as_ref());
    let copy = tmp.join(&name.to_string_lossy());
    std::fs::copy(program, &copy).unwrap_or_else(|e| panic!("copy {program}: {e}"));
    run(Command::new("chmod").args(["755", &copy.to_string_lossy()]));
    copy
}

/// Writes the shell script `text` to `path` and makes it executable; returns `path`.
pub fn write_script(path: PathBuf, text: &str) -> PathBuf {
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    run(Command::new("chmod").arg("+x").arg(&path));
    path
}

/// A busybox udhcpc script (`-s`) that prints `lease=ADDR` once bound and configures nothing.
pub const UDHCPC_PRINT_LEASE: &str =
    "#!/bin/sh\n[ \"$1\" = bound ] && echo \"lease=$ip\"\nexit 0\n";

/// `program` run as nobody (uid and gid 65534, no supplementary groups) through setpriv,
/// with stdout and stderr piped.
pub fn as_nobody(program: &Path) -> Command {
    require("setpriv");
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `FILO ns ARGS` to completion (at most `timeout`): (exit code, stdout, stderr).
pub fn filo_ns_out(filo: &str, args: &[&str], timeout: Duration) -> (i32, String, String) {
    let mut c = Command::new(filo);
    c.arg("ns")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, out, err) = Proc::spawn(&mut c).output(timeout);
    (status.code().unwrap_or(-1), out, err)
}

/// The client addresses of python http.server's access log lines for `GET PATH`.
pub fn http_requesters<'a>(log: &'a str, path: &str) -> Vec<&'a str> {
    let get = format!("GET {path}");
    log.lines()
        .filter(|l| l.contains(&get))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// Processes (other than this one) whose command line mentions `path`: a lab's processes
/// name its state directory.
pub fn processes_mentioning(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() || name == std::process::id().to_string() {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(&needle) {
                found.push(format!("{name}: {c}"));
            }
        }
    }
    found
}

/// A child process killed (and reaped) when dropped.
pub struct Proc {
    pub child: Child,
    name: String,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let name = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { child, name }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit; panics (test failure) if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for exit and returns (status, stdout, stderr) for a process spawned with piped
    /// output. The pipes are read while it runs; if it does not exit within `timeout`, it is
    /// killed and the test fails showing what it printed so far.
    pub fn output(self, timeout: Duration) -> (std::process::ExitStatus, String, String) {
        let name = self.name.clone();
        let (status, out, err) = self.output_or_kill(timeout);
        match status {
            Some(status) => (status, out, err),
            None => panic!(
                "{name} did not exit within {timeout:?}; it printed:\n{out}\n-- stderr:\n{err}"
            ),
        }
    }

    /// As [`Proc::output`], but a process that does not exit within `timeout` is killed and
    /// its status is `None`, with what it printed so far.
    pub fn output_or_kill(
        mut self,
        timeout: Duration,
    ) -> (Option<std::process::ExitStatus>, String, String) {
        fn reader(
            pipe: Option<impl Read + Send + 'static>,
        ) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
            let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            if let Some(mut pipe) = pipe {
                let into = got.clone();
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = pipe.read(&mut chunk) {
                        if n == 0 {
                            break;
                        }
                        if let Ok(mut v) = into.lock() {
                            v.extend_from_slice(&chunk[..n]);
                        }
                    }
                });
            }
            got
        }
        let text = |v: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>| {
            String::from_utf8_lossy(&v.lock().map(|v| v.clone()).unwrap_or_default()).into_owned()
        };
        let out = reader(self.child.stdout.take());
        let err = reader(self.child.stderr.take());
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                std::thread::sleep(Duration::from_millis(200));
                eprintln!("{} did not exit within {timeout:?}: killed", self.name);
                return (None, text(&out), text(&err));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The pipes end when the last process holding them exits: give stragglers a moment.
        let settle = Instant::now() + Duration::from_secs(2);
        while std::sync::Arc::strong_count(&out) + std::sync::Arc::strong_count(&err) > 2
            && Instant::now() < settle
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        (Some(status), text(&out), text(&err))
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        // Our own un-reaped child: its pid cannot have been reused.
        sys::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        self.wait_exit(timeout)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process stopped with SIGTERM (waiting up to 20 s) rather than killed when dropped, also
/// when an assertion fails: for a `filo ns` running a daemon such as dnsmasq or radvd, which
/// changes credentials and so clears the parent-death signal that would otherwise end it with
/// a killed `filo ns` (which forwards SIGTERM to its command).
pub struct Polite(pub Proc);

impl Drop for Polite {
    fn drop(&mut self) {
        if let Ok(None) = self.0.child.try_wait() {
            self.0.terminate(Duration::from_secs(20));
        }
    }
}

/// The command line of dnsmasq serving only DHCPv4 on `vde0` (run it with
/// `filo ns --ip ROUTER/24 VNL --`): leases in `leases`, addresses from `range`
/// (`"10.64.0.50,10.64.0.59"`) in a /24 for an hour, and each of `options` as a
/// `--dhcp-option` (`"option:router,10.64.0.1"`).
pub fn dnsmasq_dhcp(leases: &Path, range: &str, options: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "dnsmasq",
        "-k",
        "--conf-file=/dev/null",
        "--port=0",
        "--interface=vde0",
        "--bind-interfaces",
        "--user=root",
        "--pid-file",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--dhcp-leasefile={}", leases.display()));
    args.push(format!("--dhcp-range={range},255.255.255.0,1h"));
    args.extend(options.iter().map(|o| format!("--dhcp-option={o}")));
    args
}

/// Polls `cond` until it is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes a FIFO at `path` (with mkfifo(1)).
pub fn mkfifo(path: &Path) {
    run(Command::new("mkfifo").arg(path));
}

/// Runs a command to completion and returns stdout; panics with stderr on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace deleted (after killing what runs in it) when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        require("ip");
        let name = unique(prefix);
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Creates `tap0` with `addrs` (IPv6 ones without duplicate address detection) and brings
    /// it up.
    pub fn tap(&self, addrs: &[&str]) {
        self.exec_ok(&["ip", "tuntap", "add", "tap0", "mode", "tap"]);
        for a in addrs {
            if a.contains(':') {
                self.exec_ok(&["ip", "-6", "addr", "add", a, "dev", "tap0", "nodad"]);
            } else {
                self.exec_ok(&["ip", "addr", "add", a, "dev", "tap0"]);
            }
        }
        self.exec_ok(&["ip", "link", "set", "tap0", "up"]);
    }

    /// Carries `tap0` to `vnl` with `argv tap://tap0 VNL` run inside the namespace, e.g.
    /// `&[filo, "plug"]` or `&["vde_plug"]`.
    pub fn plug_tap(&self, argv: &[&str], vnl: &str) -> Proc {
        let mut c = self.command(argv[0]);
        c.args(&argv[1..])
            .args(["tap://tap0", vnl])
            .stdin(Stdio::null());
        Proc::spawn(&mut c)
    }

    /// Runs a command in the namespace; panics on failure.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let mut c = self.command(argv[0]);
        c.args(&argv[1..]);
        run(&mut c)
    }

    /// Fetches `url` into `out` with curl in the namespace (`-f`: an HTTP error fails), tried
    /// until it succeeds or `within` passes, each try at most 5 s; returns whether it did.
    pub fn curl_until(&self, url: &str, out: &Path, within: Duration) -> bool {
        require("curl");
        wait_until(within, || {
            self.command("curl")
                .args(["-sf", "--max-time", "5", "-o"])
                .arg(out)
                .arg(url)
                .status()
                .is_ok_and(|s| s.success())
        })
    }
}

/// Where a daemon's log goes in a test: nowhere, unless FILO_TEST_LOGS=1 (while debugging).
pub fn test_log() -> Stdio {
    if std::env::var_os("FILO_TEST_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<libc::pid_t>() {
                    // These processes run in our namespace.
                    sys::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair `a` (in `ns_a`) — `b` (in `ns_b`), with addresses, up.
pub fn veth(ns_a: &Netns, addr_a: &str, ns_b: &Netns, addr_b: &str) -> (String, String) {
    let a = format!("va{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    let b = format!("vb{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    run(Command::new("ip").args([
        "link", "add", &a, "netns", &ns_a.name, "type", "veth", "peer", "name", &b, "netns",
        &ns_b.name,
    ]));
    ns_a.exec_ok(&["ip", "addr", "add", addr_a, "dev", &a]);
    ns_b.exec_ok(&["ip", "addr", "add", addr_b, "dev", &b]);
    ns_a.exec_ok(&["ip", "link", "set", &a, "up"]);
    ns_b.exec_ok(&["ip", "link", "set", &b, "up"]);
    (a, b)
}

/// Debian's vde_switch on `dir` with a management socket, stopped when dropped.
pub struct DebSwitch {
    pub dir: PathBuf,
    pub mgmt: PathBuf,
    proc: Proc,
}

impl DebSwitch {
    pub fn start(tmp: &TempDir, name: &str) -> DebSwitch {
        require("vde_switch");
        let dir = tmp.join(name);
        let mgmt = tmp.join(&format!("{name}.mgmt"));
        // stdin stays an open pipe: vde_switch exits on EOF of its console.
        let proc = Proc::spawn(
            Command::new("vde_switch")
                .arg("-s")
                .arg(&dir)
                .arg("-M")
                .arg(&mgmt)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(
            wait_until(Duration::from_secs(5), || mgmt.exists()
                && dir.join("ctl").exists()),
            "vde_switch did not start on {}",
            dir.display()
        );
        DebSwitch { dir, mgmt, proc }
    }

    pub fn vnl(&self) -> String {
        format!("vde://{}", self.dir.display())
    }

    /// Runs one console command and returns the reply up to and including the status line.
    pub fn console(&self, command: &str) -> String {
        console(&self.mgmt, command)
    }

    pub fn kill(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }
}

/// `FILO console --json SOCK COMMAND`: (exit code, stdout: the reply as a JSON object).
pub fn filo_console_json(filo: &str, sock: &Path, command: &str) -> (i32, String) {
    let out = Command::new(filo)
        .args(["console", "--json"])
        .arg(sock)
        .arg(command)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {filo} console: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// One command on a VDE management socket; returns the text after the command up to the
/// status line (`1000 Success` or `1xxx error`).
pub fn console(sock: &Path, command: &str) -> String {
    let mut s =
        UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = Vec::new();
    read_until(&mut s, &mut buf, b"$ ").expect("banner and prompt");
    s.write_all(format!("{command}\n").as_bytes())
        .expect("send command");
    buf.clear();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).expect("console reply");
        assert!(
            n > 0,
            "console closed the connection while answering {command:?}"
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if text.lines().any(|l| {
            l.len() >= 5
                && l.starts_with('1')
                && l[..4].bytes().all(|b| b.is_ascii_digit())
                && l.as_bytes()[4] == b' '
        }) {
            return text.into_owned();
        }
    }
}

fn read_until(s: &mut UnixStream, buf: &mut Vec<u8>, end: &[u8]) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    while !buf.windows(end.len()).any(|w| w == end) {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// A test Ethernet frame: `dst`, `src`, EtherType 0x88b5 and `len - 14` payload bytes derived
/// from `seq`, so receivers can check content.
pub fn test_frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    let mut x = seq.wrapping_mul(2654435761).wrapping_add(1);
    while f.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        f.push(x as u8);
    }
    f
}

/// Encodes a frame in the VDE stream encoding.
pub fn stream_record(frame: &[u8]) -> Vec<u8> {
    let mut r = (frame.len() as u16).to_be_bytes().to_vec();
    r.extend_from_slice(frame);
    r
}

/// Reads one stream-encoded frame with a deadline.
pub fn read_record(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len)?;
    let mut frame = vec![0u8; u16::from_be_bytes(len) as usize];
    r.read_exact(&mut frame)?;
    Ok(frame)
}

/// Reads stream-encoded frames from `r` on a thread; receive them with a timeout.
pub fn record_reader(mut r: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(frame) = read_record(&mut r) {
            if tx.send(frame).is_err() {
                break;
            }
        }
    });
    rx
}

/// Receives frames until one satisfies `pred` (others, e.g. IPv6 chatter, are skipped).
pub fn expect_frame(
    rx: &std::sync::mpsc::Receiver<Vec<u8>>,
    timeout: Duration,
    mut pred: impl FnMut(&[u8]) -> bool,
) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(f) if pred(&f) => return f,
            Ok(_) => {}
            Err(e) => panic!("expected frame not received within {timeout:?}: {e}"),
        }
    }
}

/// Builds bench/vdeclient.c (a libvdeplug client) once per test process; returns its path.
pub fn vdeclient() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            require("gcc");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/vdeclient.c");
            let out = PathBuf::from("/tmp").join(unique("filo-vdeclient"));
            run(Command::new("gcc")
                .args(["-O2", "-o"])
                .arg(&out)
                .arg(&src)
                .arg("-lvdeplug"));
            out
        })
        .clone()
}

/// filo's own switch (the binary under test) on `dir`, with a management socket.
pub struct FiloSwitch {
    pub dir: PathBuf,
    pub mgmt: PathBuf,
    pub proc: Proc,
}

impl FiloSwitch {
    pub fn start(filo: &str, tmp: &TempDir, name: &str, extra: &[&str]) -> FiloSwitch {
        Self::start_logging(filo, tmp, name, extra, test_log())
    }

    /// [`FiloSwitch::start`] with the switch's log (stderr) going to `log`.
    pub fn start_logging(
        filo: &str,
        tmp: &TempDir,
        name: &str,
        extra: &[&str],
        log: impl Into<Stdio>,
    ) -> FiloSwitch {
        let dir = tmp.join(name);
        let mgmt = tmp.join(&format!("{name}.mgmt"));
        let proc = Proc::spawn(
            Command::new(filo)
                .arg("switch")
                .arg(&dir)
                .arg("-M")
                .arg(&mgmt)
                .arg("--nostdin")
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        );
        assert!(
            wait_until(Duration::from_secs(5), || mgmt.exists()
                && dir.join("ctl").exists()),
            "filo switch did not start on {}",
            dir.display()
        );
        FiloSwitch { dir, mgmt, proc }
    }

    pub fn vnl(&self) -> String {
        format!("vde://{}", self.dir.display())
    }

    pub fn console(&self, command: &str) -> String {
        console(&self.mgmt, command)
    }

    /// Number of connected endpoints, from the switch's own console.
    pub fn endpoints(&self) -> usize {
        self.console("port/print").matches("-- endpoint").count()
    }

    /// Resident memory of the switch process in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.proc.pid())
    }
}

/// The process id a daemon wrote to `pidfile`, waiting up to `within` for the whole line
/// (a daemon forked into the background may write it just after its parent returned).
pub fn pidfile_pid(pidfile: &Path, within: Duration) -> libc::pid_t {
    let read = || std::fs::read_to_string(pidfile).unwrap_or_default();
    wait_until(within, || read().ends_with('\n'));
    read()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid in {} within {within:?}", pidfile.display()))
}

/// The resident memory of process `pid` in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// QEMU without a disk on the switch at `switch_dir` (`-nic vde`, an e1000 with `mac`): its
/// iPXE ROM network-boots, asking for an address by DHCP. Killed when dropped.
pub fn qemu_netboot(switch_dir: &Path, mac: &str) -> Proc {
    Proc::spawn(&mut qemu_netboot_nic(&format!(
        "vde,sock={},mac={mac},model=e1000",
        switch_dir.display()
    )))
}

/// Sends all of `frames` through `plug` in batches of `per_batch`, waiting briefly whenever
/// the peer is full; panics unless all went within `within`.
pub fn send_all(plug: &mut filo_vnl::Plug, frames: &[Vec<u8>], per_batch: usize, within: Duration) {
    let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    let deadline = Instant::now() + within;
    let mut sent = 0;
    while sent < refs.len() {
        let end = (sent + per_batch).min(refs.len());
        match plug.send_batch(&refs[sent..end]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "the peer stopped taking frames: {sent} of {} sent in {within:?}",
                    refs.len()
                );
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => panic!("send after {sent} of {} frames: {e}", refs.len()),
        }
    }
}

/// QEMU without disk or display whose NIC (`-nic NIC`) network-boots: its iPXE ROM sends DHCP
/// discovers (see [`is_dhcp_discover`]). Needs `qemu-system-x86_64`.
pub fn qemu_netboot_nic(nic: &str) -> Command {
    require("qemu-system-x86_64");
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-nodefaults",
        "-display",
        "none",
        "-machine",
        "pc",
        "-m",
        "64",
        "-boot",
        "n",
        "-serial",
        "none",
        "-monitor",
        "none",
        "-nic",
        nic,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

/// Whether `frame` is a DHCP discover (IPv4, UDP from port 68 to 67) from `mac`.
pub fn is_dhcp_discover(frame: &[u8], mac: [u8; 6]) -> bool {
    frame.len() > 42
        && frame[6..12] == mac
        && frame[12..14] == [8, 0]
        && frame[23] == 17
        && frame[34..38] == [0, 68, 0, 67]
}
