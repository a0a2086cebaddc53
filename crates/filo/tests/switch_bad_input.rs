//! A misbehaving client must not stall anyone else: garbage, split and refused requests,
//! connection floods and receivers that never read.

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use filo_test_support::*;
use filo_vnl::wire::vde_request::{self, PortRequest};

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(5);
const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// One frame from a to b and back through the switch: the switch is forwarding.
fn assert_forwarding(sw: &FiloSwitch) {
    let mut a = filo_vnl::open(&sw.vnl()).expect("plug a");
    let mut b = filo_vnl::open(&sw.vnl()).expect("plug b");
    let f = test_frame([0xff; 6], A, 1, 100);
    a.send_timeout(&f, Some(T)).unwrap();
    let mut buf = vec![0u8; 9236];
    let n = b.recv_timeout(&mut buf, Some(T)).expect("switch forwards");
    assert_eq!(&buf[..n], &f[..]);
}

/// A hand-made v3 request for a client socket bound at `path`.
fn request(path: &Path, port: PortRequest) -> Vec<u8> {
    let mut out = [0u8; vde_request::V3_HEADER_LEN + vde_request::MAX_DESCRIPTION];
    let n = vde_request::emit_request_v3(port, path, "test user=root pid=1", &mut out).unwrap();
    out[..n].to_vec()
}

fn read_reply(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    s.set_read_timeout(Some(T))?;
    let mut reply = vec![0u8; 110];
    s.read_exact(&mut reply)?;
    Ok(reply)
}

#[test]
fn garbage_and_malformed_requests_close_only_that_connection() {
    let tmp = TempDir::new("filo-sb1");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let bad: Vec<Vec<u8>> = vec![
        b"hello, this is not a request at all, just text".repeat(4),
        vec![0xff; 300],
        {
            let mut r = request(&tmp.join("x"), PortRequest::Any);
            r[4] = 2; // version 2
            r
        },
        {
            let mut r = request(&tmp.join("x"), PortRequest::Any);
            r[12] = 9; // address family 9
            r
        },
    ];
    for garbage in bad {
        let mut s = UnixStream::connect(sw.dir.join("ctl")).unwrap();
        s.write_all(&garbage).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut buf = [0u8; 200];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the switch answered garbage instead of closing");
    }
    assert_forwarding(&sw);
}

#[test]
fn a_request_split_over_two_writes_is_answered() {
    let tmp = TempDir::new("filo-sb2");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let client = tmp.join("client");
    let data = UnixDatagram::bind(&client).unwrap();
    let req = request(&client, PortRequest::Port(4));
    let mut s = UnixStream::connect(sw.dir.join("ctl")).unwrap();
    s.write_all(&req[..50]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&req[50..]).unwrap();
    let reply = read_reply(&mut s).expect("reply to a split request");
    let path = vde_request::parse_sockaddr(&reply).unwrap();
    assert!(
        path.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("004."),
        "{path:?}"
    );
    data.connect(&path).unwrap();
    data.send(&test_frame([0xff; 6], A, 1, 60)).unwrap();
}

#[test]
fn malformed_frame_trains_are_counted_and_the_good_frames_around_them_forwarded() {
    use filo_vnl::wire::train;
    let tmp = TempDir::new("filo-sbt");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let mut listener = filo_vnl::open(&sw.vnl()).unwrap();
    // A hand-made client that asks for trains, then sends broken ones.
    let client = tmp.join("client");
    let data = UnixDatagram::bind(&client).unwrap();
    let mut req = [0u8; vde_request::V3_HEADER_LEN + vde_request::MAX_DESCRIPTION];
    let n = vde_request::emit_request_v3(
        PortRequest::Port(5),
        &client,
        "test user=root pid=1 +train",
        &mut req,
    )
    .unwrap();
    let mut s = UnixStream::connect(sw.dir.join("ctl")).unwrap();
    s.write_all(&req[..n]).unwrap();
    let path = vde_request::parse_sockaddr(&read_reply(&mut s).unwrap()).unwrap();
    assert!(path.to_string_lossy().ends_with(".train"), "{path:?}");
    data.connect(&path).unwrap();
    let record = |f: &[u8]| [&train::record_header(f.len())[..], f].concat();
    let good = |seq| test_frame([0xff; 6], A, seq, 80);
    let broken: Vec<Vec<u8>> = vec![
        [record(&good(1)), vec![0, 0, 0, 0]].concat(), // an empty record after a good one
        [record(&good(2)), vec![0, 0, 9]].concat(),    // a header cut short
        [record(&good(3)), vec![0xff, 0xff, 0xff, 0xff, 1]].concat(), // a length past the end
        record(&good(4)),
    ];
    for d in &broken {
        data.send(d).unwrap();
    }
    let mut buf = vec![0u8; 9236];
    for seq in 1..=4u32 {
        let n = loop {
            let n = listener
                .recv_timeout(&mut buf, Some(T))
                .expect("good frames pass");
            if buf[6..12] == A {
                break n;
            }
        };
        assert_eq!(&buf[..n], &good(seq)[..], "frame {seq}");
    }
    let drops = sw.console("port/drops");
    let line = drops
        .lines()
        .find(|l| l.starts_with("Port 0005"))
        .unwrap_or_else(|| panic!("no port 5 in {drops}"));
    let counted: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        counted.get(3),
        Some(&"3"),
        "three broken trains counted: {line}"
    );
    assert_forwarding(&sw);
}

#[test]
fn a_client_that_never_sends_its_request_does_not_block_others() {
    let tmp = TempDir::new("filo-sb3");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let _silent: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(sw.dir.join("ctl")).unwrap())
        .collect();
    assert_forwarding(&sw);
}

#[test]
fn a_port_owned_by_another_user_is_refused() {
    require("setpriv");
    require("vde_plug");
    let tmp = TempDir::new("filo-sb4");
    // World-accessible switch, so user nobody can reach the control socket at all.
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["-m", "666"]);
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let _root = filo_vnl::open(&format!("{}[3]", sw.vnl())).unwrap();
    let start = Instant::now();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "vde_plug",
            &format!("{}[3]", sw.vnl()),
            "null://",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody got root's port 3");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "refusal took {:?} (vde_plug hung?)",
        start.elapsed()
    );
    // But nobody may have a free port of their own.
    let mut own = Proc::spawn(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "vde_plug",
                &format!("{}[4]", sw.vnl()),
                "null://",
            ])
            .stdin(Stdio::null()),
    );
    // The switch lists port 4 as nobody's (the handshake went through), and vde_plug stays.
    let listed = wait_until(T, || {
        let ports = sw.console("port/print 4");
        ports.contains("Port 0004") && ports.contains("Current User: nobody")
    });
    assert!(listed, "{}", sw.console("port/print"));
    assert!(
        own.child.try_wait().unwrap().is_none(),
        "nobody's own port 4 was refused"
    );
    assert_forwarding(&sw);
}

#[test]
fn ten_thousand_connect_disconnect_cycles_leave_memory_flat() {
    let tmp = TempDir::new("filo-sb5");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let client = tmp.join("c");
    // Warm up, then measure.
    let cycle = |i: u32| {
        let mut s = UnixStream::connect(sw.dir.join("ctl")).unwrap();
        if i.is_multiple_of(2) {
            // Half of them complete the handshake and go away.
            let _ = std::fs::remove_file(&client);
            let _d = UnixDatagram::bind(&client).unwrap();
            s.write_all(&request(&client, PortRequest::Any)).unwrap();
            let _ = read_reply(&mut s);
        }
    };
    for i in 0..500 {
        cycle(i);
    }
    let before = sw.rss_kib();
    for i in 0..10_000 {
        cycle(i);
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = sw.rss_kib();
    assert!(before > 0 && after > 0);
    assert!(
        after <= before + 1024,
        "switch RSS grew from {before} KiB to {after} KiB over 10,000 connections"
    );
    // No data sockets left behind.
    let left = std::fs::read_dir(&sw.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "ctl")
        .count();
    assert_eq!(left, 0, "sockets left in the switch directory");
    assert_forwarding(&sw);
}

#[test]
fn a_receiver_that_never_reads_costs_drops_only_on_its_own_port() {
    let tmp = TempDir::new("filo-sb6");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["--queue", "64"]);
    // The deaf client: completes the handshake, then never reads its data socket.
    let deaf_path = tmp.join("deaf");
    let deaf = UnixDatagram::bind(&deaf_path).unwrap();
    let mut deaf_ctl = UnixStream::connect(sw.dir.join("ctl")).unwrap();
    deaf_ctl
        .write_all(&request(&deaf_path, PortRequest::Port(9)))
        .unwrap();
    let reply = read_reply(&mut deaf_ctl).unwrap();
    deaf.connect(vde_request::parse_sockaddr(&reply).unwrap())
        .unwrap();
    // A sender floods broadcasts (which also go to the deaf port); a reader reads them all.
    let mut a = filo_vnl::open(&sw.vnl()).unwrap();
    let mut b = filo_vnl::open(&sw.vnl()).unwrap();
    let total = 5000u32;
    let mut got = 0u32;
    let mut buf = vec![0u8; 9236];
    for i in 0..total {
        a.send_timeout(&test_frame([0xff; 6], A, i, 200), Some(T))
            .unwrap();
        // Keep the reader's queue short: it must not be the one dropping.
        while b.recv(&mut buf).is_ok() {
            got += 1;
        }
    }
    let deadline = Instant::now() + T;
    while got < total && Instant::now() < deadline {
        if b.recv_timeout(&mut buf, Some(Duration::from_millis(200)))
            .is_ok()
        {
            got += 1;
        }
    }
    assert_eq!(
        got, total,
        "the reading client lost frames because of the deaf one"
    );
    // The drops are counted on the deaf port, and only there.
    let drops = queue_drops(&sw.console("port/print"));
    let deaf_drops = drops.iter().find(|(p, _)| *p == 9).map(|(_, d)| *d);
    assert!(deaf_drops.unwrap_or(0) > 0, "{drops:?}");
    assert!(
        drops.iter().all(|(p, d)| *p == 9 || *d == 0),
        "drops on other ports: {drops:?}"
    );
    let _ = B;
}

/// (port, queue drops) for each port in `port/print`'s output.
fn queue_drops(ports: &str) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut port = None;
    for line in ports.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("Port"), Some(n), _) => port = n.parse().ok(),
            (Some("DROP:"), Some("queue"), Some(d)) => {
                if let (Some(p), Ok(d)) = (port, d.parse()) {
                    out.push((p, d));
                }
            }
            _ => {}
        }
    }
    out
}

/// Sends `total` unicast frames to a reader that reads slowly; returns frames the reader got.
fn slow_reader_run(sw: &FiloSwitch, total: u32) -> u32 {
    let mut reader = filo_vnl::open(&sw.vnl()).unwrap();
    let mut sender = filo_vnl::open(&sw.vnl()).unwrap();
    // The reader announces itself so the switch learns where B is.
    reader.send(&test_frame([0xff; 6], B, 0, 60)).unwrap();
    let mut buf = vec![0u8; 9236];
    sender.recv_timeout(&mut buf, Some(T)).unwrap();
    // Batches of 64: between filo plugs each is one frame train.
    let sender_thread = std::thread::spawn(move || {
        let frames: Vec<Vec<u8>> = (1..=total).map(|i| test_frame(B, A, i, 300)).collect();
        send_all(&mut sender, &frames, 64, Duration::from_secs(20));
        sender
    });
    let mut got = 0;
    while reader
        .recv_timeout(&mut buf, Some(Duration::from_millis(1500)))
        .is_ok()
    {
        got += 1;
        if got % 64 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    drop(sender_thread.join().unwrap());
    got
}

#[test]
fn lossless_mode_delivers_everything_to_a_slow_reader() {
    let tmp = TempDir::new("filo-sb7");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["--lossless", "--queue", "128"]);
    assert_eq!(slow_reader_run(&sw, 20_000), 20_000);
}

/// CPU seconds a process has used (user + system), from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn a_lossless_switch_held_up_by_a_stuck_reader_waits_without_spinning() {
    let tmp = TempDir::new("filo-sb9");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["--lossless", "--queue", "128"]);
    let mut reader = filo_vnl::open(&sw.vnl()).unwrap();
    let mut sender = filo_vnl::open(&sw.vnl()).unwrap();
    reader.send(&test_frame([0xff; 6], B, 0, 60)).unwrap();
    let mut buf = vec![0u8; 9236];
    sender.recv_timeout(&mut buf, Some(T)).unwrap();
    // The reader reads nothing: send until the switch has stopped taking frames for a while.
    let frame = test_frame(B, A, 1, 1000);
    let (mut sent, mut blocked_since) = (0u32, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the switch kept taking frames");
        match sender.send(&frame) {
            Ok(()) => {
                sent += 1;
                blocked_since = None;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    // Held up, the switch sleeps: a spinning loop would use about a second of CPU here.
    let pid = sw.proc.pid();
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_seconds(pid) - before;
    assert!(
        used < 0.5,
        "the switch used {used:.2} s of CPU in 1 s while held up"
    );
    // Then the reader catches up and every frame arrives.
    let mut got = 0;
    while reader
        .recv_timeout(&mut buf, Some(Duration::from_millis(1500)))
        .is_ok()
    {
        got += u32::from(buf[6..12] == A);
    }
    assert_eq!(got, sent);
}

#[test]
fn without_lossless_every_lost_frame_is_counted_on_its_port() {
    let tmp = TempDir::new("filo-sb8");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["--queue", "4"]);
    let total = 20_000;
    let got = slow_reader_run(&sw, total);
    // The reader is on port 1; drops for it are counted there.
    let ports = sw.console("port/allprint 1");
    let dropped: u32 = ports
        .lines()
        .find(|l| l.starts_with(" DROP: queue"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{ports}"));
    assert_eq!(
        got + dropped,
        total,
        "delivered {got} + counted drops {dropped} must be every frame sent"
    );
    assert!(
        dropped > 0,
        "a 4-frame queue and a slow reader should have dropped some frames"
    );
}

#[test]
fn rc_files_that_are_not_bounded_regular_files_are_refused_at_once() {
    let tmp = TempDir::new("filo-sb9");
    let fifo = tmp.join("fifo");
    mkfifo(&fifo);
    let huge = tmp.join("huge.rc");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    for (i, rc) in [Path::new("/dev/zero"), &fifo, &huge]
        .into_iter()
        .enumerate()
    {
        let dir = tmp.join(&format!("sw{i}"));
        let mut c = Command::new(FILO);
        c.arg("switch")
            .arg(&dir)
            .arg("--nostdin")
            .arg("-f")
            .arg(rc)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (status, _, err) = Proc::spawn(&mut c).output(T);
        assert_eq!(status.code(), Some(1), "{rc:?}: {err}");
        assert!(
            err.contains("rc file") && err.contains("regular file"),
            "{rc:?}: {err}"
        );
        let mut c = Command::new(FILO);
        c.args(["wirefilter", "null://", "null://", "-f"])
            .arg(rc)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (status, _, err) = Proc::spawn(&mut c).output(T);
        assert_eq!(status.code(), Some(1), "wirefilter {rc:?}: {err}");
        assert!(
            err.contains("rc file") && err.contains("regular file"),
            "{rc:?}: {err}"
        );
    }
}

#[test]
fn an_endless_console_line_on_stdin_is_an_error_not_a_heap() {
    let tmp = TempDir::new("filo-sb10");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let mut c = Command::new(FILO);
    c.arg("console")
        .arg(&sw.mgmt)
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (status, _, err) = Proc::spawn(&mut c).output(T);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("longer than"), "{err}");
}

#[test]
fn a_request_written_one_byte_at_a_time_is_answered_and_kept() {
    let tmp = TempDir::new("filo-sb11");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let client = tmp.join("client");
    let data = UnixDatagram::bind(&client).unwrap();
    let req = request(&client, PortRequest::Port(4));
    let mut s = UnixStream::connect(sw.dir.join("ctl")).unwrap();
    for b in &req {
        s.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let reply = read_reply(&mut s).expect("reply to a request written byte by byte");
    let path = vde_request::parse_sockaddr(&reply).unwrap();
    // The connection stays up: no EOF once the description's last bytes have arrived.
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut b = [0u8; 1];
    let e = s
        .read(&mut b)
        .expect_err("the switch closed the control connection");
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
    assert_eq!(sw.endpoints(), 1);
    data.connect(&path).unwrap();
    data.send(&test_frame([0xff; 6], A, 1, 60)).unwrap();
}

#[test]
fn a_client_killed_before_unlinking_its_socket_leaves_nothing_in_the_directory() {
    let tmp = TempDir::new("filo-sb12");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    // What a plug killed between its handshake and its unlink leaves: its `.PID-SEQ` socket.
    let client = sw.dir.join(format!(".{:05}-00001", std::process::id()));
    let data = UnixDatagram::bind(&client).unwrap();
    let req = request(&client, PortRequest::Any);
    let mut s = UnixStream::connect(sw.dir.join("ctl")).unwrap();
    s.write_all(&req).unwrap();
    read_reply(&mut s).expect("reply");
    assert!(wait_until(T, || sw.endpoints() == 1));
    drop(s);
    drop(data);
    assert!(wait_until(T, || sw.endpoints() == 0));
    assert!(
        wait_until(T, || !client.exists()),
        "{} left in the switch directory",
        client.display()
    );
    // Anything else in the directory is not the switch's to remove.
    let other = sw.dir.join("mine");
    let data = UnixDatagram::bind(&other).unwrap();
    let req = request(&other, PortRequest::Any);
    let mut s = UnixStream::connect(sw.dir.join("ctl")).unwrap();
    s.write_all(&req).unwrap();
    read_reply(&mut s).expect("reply");
    drop(s);
    assert!(wait_until(T, || sw.endpoints() == 0));
    std::thread::sleep(Duration::from_millis(100));
    assert!(other.exists());
    drop(data);
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_failed_start_leaves_an_existing_directory_as_it_was() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("filo-sb13");
    let other = FiloSwitch::start(FILO, &tmp, "other", &[]);
    let dir = tmp.join("mine");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Fails after ctl is bound: the management socket is a live switch's; then the rc file.
    let busy_mgmt = other.mgmt.to_string_lossy().into_owned();
    let failures: [&[&str]; 2] = [&["-M", &busy_mgmt], &["-f", "/dev/zero"]];
    for extra in failures {
        let mut c = Command::new(FILO);
        c.arg("switch")
            .arg(&dir)
            .arg("--nostdin")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (status, _, err) = Proc::spawn(&mut c).output(T);
        assert_eq!(status.code(), Some(1), "{extra:?}: {err}");
        assert!(!dir.join("ctl").exists(), "{extra:?}: a stale ctl is left");
        assert_eq!(
            mode_of(&dir),
            0o755,
            "{extra:?}: the directory was chmodded"
        );
        assert!(
            other.mgmt.exists(),
            "the other switch's console socket was removed"
        );
    }
    // A new directory is removed after a failed start too.
    let new = tmp.join("new");
    let mut c = Command::new(FILO);
    c.arg("switch")
        .arg(&new)
        .args(["--nostdin", "-f", "/dev/zero"])
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let (status, _, _) = Proc::spawn(&mut c).output(T);
    assert_eq!(status.code(), Some(1));
    assert!(!new.exists());
}

#[test]
fn the_switch_removes_only_the_directory_it_created() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("filo-sb14");
    let run_and_stop = |dir: &Path| {
        let mut c = Command::new(FILO);
        c.arg("switch")
            .arg(dir)
            .arg("--nostdin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut p = Proc::spawn(&mut c);
        assert!(wait_until(T, || dir.join("ctl").exists()));
        assert_eq!(p.terminate(T).code(), Some(0));
    };
    let existing = tmp.join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o750)).unwrap();
    run_and_stop(&existing);
    assert!(
        existing.is_dir(),
        "an empty directory the switch did not create was removed"
    );
    assert_eq!(mode_of(&existing), 0o750);
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 0);
    let created = tmp.join("created");
    run_and_stop(&created);
    assert!(!created.exists());
}
