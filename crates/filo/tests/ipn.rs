//! `ipn://`: the shared-memory bus between real processes — `filo ns` namespaces pinging,
//! `filo plug` members on stdio, hub and switch delivery, lossy counting, eviction of a
//! stopped member, kill -9 of members and of the bus's creator, and a hostile process
//! scribbling over the shared region.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use filo_ipn::{Bus, BusOptions};
use filo_test_support::*;
use filo_vnl::Plug;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const T: Duration = Duration::from_secs(10);

/// A `filo plug VNL` child speaking the stream encoding on stdio.
struct Member {
    proc: Proc,
    rx: Receiver<Vec<u8>>,
    tx: ChildStdin,
}

impl Member {
    fn start(vnl: &str) -> Member {
        let mut c = Command::new(FILO);
        c.args(["plug", vnl])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(test_log());
        let mut proc = Proc::spawn(&mut c);
        let rx = record_reader(proc.child.stdout.take().unwrap());
        let tx = proc.child.stdin.take().unwrap();
        Member { proc, rx, tx }
    }

    fn send(&mut self, frame: &[u8]) {
        self.tx.write_all(&stream_record(frame)).unwrap();
        self.tx.flush().unwrap();
    }

    fn alive(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// Frames that arrive within `wait`.
    fn drain(&self, wait: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Ok(f) = self.rx.recv_timeout(wait) {
            out.push(f);
        }
        out
    }
}

fn signal(p: &Proc, sig: libc::c_int) {
    filo_test_support::sys::kill(p.pid() as libc::pid_t, sig);
}

fn bus_path(tmp: &TempDir) -> PathBuf {
    tmp.join("bus")
}

/// Joins the bus in this process (a member the test drives directly).
fn plug(vnl: &str) -> Plug {
    filo_ipn::register();
    filo_vnl::open(vnl).unwrap_or_else(|e| panic!("{vnl}: {e}"))
}

/// Waits until `n` members are on the bus at `path`.
fn wait_members(path: &Path, n: usize) {
    let ok = wait_until(T, || members(path).len() == n);
    assert!(ok, "{} members expected: {:?}", n, members(path));
}

/// The bus at `path` seen from outside (as `filo ipn stat` sees it), without a member slot.
fn observer(path: &Path) -> Result<Bus, filo_ipn::IpnError> {
    let opts = BusOptions {
        join_only: true,
        ..BusOptions::default()
    };
    Bus::open(path, &opts)
}

fn members(path: &Path) -> Vec<filo_ipn::ring::MemberRecord> {
    observer(path).map(|b| b.records()).unwrap_or_default()
}

/// Sends `frame` from `from` until `to` sees a frame from `src` (a member that just joined
/// may not have taken its slot yet).
fn send_until_seen(from: &mut Plug, frame: &[u8], to: &Member) {
    for _ in 0..100 {
        from.send(frame).unwrap();
        if let Ok(f) = to.rx.recv_timeout(Duration::from_millis(100)) {
            if f == frame {
                return;
            }
        }
    }
    panic!("frame never arrived");
}

fn recv_from(plug: &mut Plug, src: [u8; 6], within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 9236];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match plug.recv_timeout(&mut buf, Some(left)) {
            Ok(n) if buf[6..12] == src => return Some(buf[..n].to_vec()),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// A `filo ns` at NET.1 on the bus `vnl` (at `path`), then `count` pings to it from another
/// at NET.2, every one answered.
fn ping_over(vnl: &str, path: &Path, net: &str, count: u32) {
    let mut server = Command::new(FILO);
    server
        .args([
            "ns",
            vnl,
            "--ip",
            &format!("{net}.1/24"),
            "--",
            "sleep",
            "30",
        ])
        .stdin(Stdio::null())
        .stderr(test_log());
    let _server = Proc::spawn(&mut server);
    wait_members(path, 1);
    let count = count.to_string();
    let out = run(Command::new(FILO).args([
        "ns",
        vnl,
        "--ip",
        &format!("{net}.2/24"),
        "--",
        "ping",
        "-c",
        &count,
        "-i",
        "0.2",
        "-W",
        "5",
        &format!("{net}.1"),
    ]));
    assert!(
        out.contains(&format!("{count} packets transmitted, {count} received")),
        "{out}"
    );
}

#[test]
fn two_namespaces_ping_over_a_bus() {
    let tmp = TempDir::new("ipn-ping");
    let vnl = format!("ipn://{}", bus_path(&tmp).display());
    ping_over(&vnl, &bus_path(&tmp), "10.91.0", 5);
}

#[test]
fn hub_floods_and_switch_sends_unicast_to_one_member() {
    for policy in ["hub", "switch"] {
        let tmp = TempDir::new("ipn-policy");
        let path = bus_path(&tmp);
        let vnl = format!("ipn://{}[policy={policy}]", path.display());
        let mut a = plug(&vnl);
        let mut b = Member::start(&vnl);
        let mut c = Member::start(&vnl);
        wait_members(&path, 3);
        // b introduces itself (a broadcast): a learns where B is.
        b.send(&test_frame([0xff; 6], B, 0, 60));
        recv_from(&mut a, B, T).expect("b's broadcast reaches a");
        assert_eq!(
            c.drain(Duration::from_millis(300)).len(),
            1,
            "{policy}: c sees the broadcast"
        );
        for seq in 1..=10 {
            a.send(&test_frame(B, A, seq, 60)).unwrap();
        }
        let at_b = b.drain(Duration::from_millis(500));
        let at_c = c.drain(Duration::from_millis(500));
        assert_eq!(at_b.len(), 10, "{policy}");
        let expect_c = if policy == "hub" { 10 } else { 0 };
        assert_eq!(at_c.len(), expect_c, "{policy}: frames for B seen by c");
        assert!(b.alive() && c.alive());
    }
}

#[test]
fn lossy_member_counts_what_it_missed() {
    let tmp = TempDir::new("ipn-lossy");
    let path = bus_path(&tmp);
    let vnl = format!("ipn://{}[size=64/lossy]", path.display());
    let mut a = plug(&vnl);
    let b = Member::start(&vnl);
    wait_members(&path, 2);
    signal(&b.proc, libc::SIGSTOP);
    let sent = 1000;
    for seq in 0..sent {
        a.send(&test_frame(B, A, seq, 60)).unwrap();
    }
    signal(&b.proc, libc::SIGCONT);
    let got = b.drain(Duration::from_millis(700));
    assert!(!got.is_empty() && got.len() <= 64, "{}", got.len());
    let rec = members(&path)
        .into_iter()
        .find(|r| r.pid == b.proc.pid())
        .expect("b's record");
    assert_eq!(rec.frames_in, got.len() as u64);
    assert_eq!(rec.frames_in + rec.lost, u64::from(sent), "{rec:?}");
}

#[test]
fn lossless_bus_evicts_a_stopped_member_and_carries_on() {
    let tmp = TempDir::new("ipn-evict");
    let path = bus_path(&tmp);
    let vnl = format!("ipn://{}[size=64/lossless/timeout=0.3]", path.display());
    let mut a = plug(&vnl);
    let b = Member::start(&vnl);
    let c = Member::start(&vnl);
    wait_members(&path, 3);
    signal(&b.proc, libc::SIGSTOP);
    let sent = 500u32;
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        while let Ok(f) = c.rx.recv_timeout(T) {
            got.push(f);
            if got.len() == 500 {
                break;
            }
        }
        (got, c)
    });
    for seq in 0..sent {
        a.send(&test_frame(C, A, seq, 60)).unwrap();
    }
    let (got, _c) = reader.join().unwrap();
    // c got everything in order although b stopped reading.
    assert_eq!(got.len(), sent as usize);
    for (seq, f) in got.iter().enumerate() {
        assert_eq!(*f, test_frame(C, A, seq as u32, 60));
    }
    let bus = observer(&path).unwrap();
    assert_eq!(bus.counters().0, 1, "one eviction");
    signal(&b.proc, libc::SIGCONT);
    // b finds itself evicted, counts it and receives again.
    a.send(&test_frame(B, A, 9999, 60)).unwrap();
    let ok = wait_until(T, || {
        let _ = a.send(&test_frame(B, A, 9999, 60));
        bus.records()
            .iter()
            .any(|r| r.pid == b.proc.pid() && r.evicted == 1 && r.state == 1)
    });
    assert!(ok, "{:?}", bus.records());
}

#[test]
fn kill_9_of_members_and_of_the_creator_leaves_the_bus_usable() {
    let tmp = TempDir::new("ipn-kill");
    let path = bus_path(&tmp);
    let vnl = format!("ipn://{}[size=256/lossless/timeout=5]", path.display());
    // The creator is a child: it serves the socket until it is killed.
    let mut creator = Member::start(&vnl);
    wait_members(&path, 1);
    let mut a = plug(&vnl);
    wait_members(&path, 2);
    for round in 0..50u32 {
        let mut b = Member::start(&vnl);
        send_until_seen(&mut a, &test_frame(B, A, round, 60), &b);
        // Killed while frames are flowing (and maybe while b copies one).
        for seq in 0..(round * 7 % 50) {
            a.send(&test_frame(B, A, seq, 60)).unwrap();
        }
        signal(&b.proc, libc::SIGKILL);
        b.proc.wait_exit(T);
    }
    // 50 receivers above, 50 senders here: 100 kill -9 rounds, then the creator.
    // Senders killed in the middle of a burst, maybe in the middle of writing a slot.
    for round in 0..50u32 {
        let mut s = Member::start(&vnl);
        let hello = test_frame(A, C, 100_000 + round, 60);
        let heard = wait_until(T, || {
            s.send(&hello);
            recv_from(&mut a, C, Duration::from_millis(50)).is_some()
        });
        assert!(heard, "round {round}: a new sender is heard");
        for seq in 0..500 {
            s.send(&test_frame(A, C, seq, 60));
        }
        // a keeps reading (the bus is lossless) for 0 to 8 ms, then the sender dies.
        let until = Instant::now() + Duration::from_millis(u64::from(round % 5) * 2);
        while Instant::now() < until {
            let _ = recv_from(&mut a, C, Duration::from_millis(1));
        }
        signal(&s.proc, libc::SIGKILL);
        s.proc.wait_exit(T);
        while recv_from(&mut a, C, Duration::from_millis(20)).is_some() {}
    }
    // The killed members' slots were reclaimed: a, creator.
    wait_members(&path, 2);
    // A slot a killed sender left half-written does not stop a: a new sender is heard.
    let mut fresh = Member::start(&vnl);
    let heard = wait_until(T, || {
        fresh.send(&test_frame(A, B, 5, 60));
        recv_from(&mut a, B, Duration::from_millis(50)).is_some()
    });
    assert!(heard, "a hears a sender after 50 killed ones");
    drop(fresh);
    wait_members(&path, 2);
    // Lossless: a dead member does not gate the bus (a sends a ring's worth and more).
    for seq in 0..1000 {
        a.send(&test_frame(C, A, seq, 60)).unwrap();
    }
    // Lossless: the creator got all 1000, in order.
    let to_c: Vec<Vec<u8>> = creator
        .drain(Duration::from_millis(500))
        .into_iter()
        .filter(|f| f[..6] == C)
        .collect();
    assert_eq!(to_c.len(), 1000);
    assert!(to_c
        .iter()
        .enumerate()
        .all(|(seq, f)| *f == test_frame(C, A, seq as u32, 60)));
    signal(&creator.proc, libc::SIGKILL);
    creator.proc.wait_exit(T);
    // Another process (this one) takes over the socket: a newcomer joins the same bus.
    let late = Member::start(&vnl);
    send_until_seen(&mut a, &test_frame(B, A, 7, 60), &late);
    let mut late = late;
    late.send(&test_frame(A, B, 8, 60));
    assert_eq!(recv_from(&mut a, B, T), Some(test_frame(A, B, 8, 60)));
    wait_members(&path, 2);
}

#[test]
fn a_member_scribbling_over_the_bus_crashes_nobody() {
    let tmp = TempDir::new("ipn-scribble");
    let path = bus_path(&tmp);
    let vnl = format!("ipn://{}[policy=switch]", path.display());
    let mut a = plug(&vnl);
    let mut b = Member::start(&vnl);
    let mut c = Member::start(&vnl);
    wait_members(&path, 3);
    // A hostile member: this process maps the bus and writes random words anywhere.
    let hostile = observer(&path).unwrap();
    let region = hostile.region().clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let scribbler = std::thread::spawn(move || {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut writes = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = (x as usize % region.len()) & !7;
            region.store64(off, x.rotate_left(17), std::sync::atomic::Ordering::Relaxed);
            writes += 1;
            if writes.is_multiple_of(64) {
                std::thread::yield_now();
            }
        }
        writes
    });
    let started = Instant::now();
    let mut seq = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let _ = a.send(&test_frame(B, A, seq, 60));
        b.send(&test_frame(C, B, seq, 60));
        let _ = recv_from(&mut a, C, Duration::from_millis(1));
        seq += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = scribbler.join().unwrap();
    assert!(writes > 10_000, "{writes}");
    assert!(b.alive() && c.alive(), "a member died of the garbage");
    let _ = b.drain(Duration::from_millis(200));
    // Once the scribbling stops the bus works again.
    send_until_seen(&mut a, &test_frame([0xff; 6], A, 1, 60), &b);
    let ok = wait_until(T, || {
        c.send(&test_frame(A, C, 2, 60));
        recv_from(&mut a, C, Duration::from_millis(50)).is_some()
    });
    assert!(ok);
}

#[test]
fn a_user_without_rights_on_the_path_is_refused() {
    let tmp = TempDir::new("ipn-perm");
    let path = bus_path(&tmp);
    let vnl = format!("ipn://{}[mode=0600]", path.display());
    let _a = plug(&vnl);
    let filo = copy_for_everyone(&tmp, FILO);
    let out = as_nobody(&filo)
        .args(["plug", &vnl, "null://"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn lossless_bus_delivers_a_million_frames_in_order_to_slow_readers() {
    let tmp = TempDir::new("ipn-million");
    let path = bus_path(&tmp);
    let vnl = format!("ipn://{}[size=256/lossless/timeout=10]", path.display());
    let total = 1_000_000u32;
    let readers: Vec<_> = (0..2u32)
        .map(|r| {
            let mut p = plug(&vnl);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 2000];
                for seq in 0..total {
                    // A reader that waits too long for a wake-up it missed fails here.
                    let n = p
                        .recv_timeout(&mut buf, Some(T))
                        .unwrap_or_else(|e| panic!("reader {r}: frame {seq}: {e}"));
                    assert_eq!(n, 60);
                    assert_eq!(buf[14..18], seq.to_be_bytes(), "reader {r}");
                    if r == 1 && seq.is_multiple_of(50_000) {
                        // Deliberately slow: the sender must wait, not overwrite.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    wait_members(&path, 2);
    let mut a = plug(&vnl);
    let mut f = test_frame([0xff; 6], A, 0, 60);
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut seq = 0u32;
    while seq < total {
        batch.clear();
        for _ in 0..64.min(total - seq) {
            f[14..18].copy_from_slice(&seq.to_be_bytes());
            batch.push(f.clone());
            seq += 1;
        }
        let frames: Vec<&[u8]> = batch.iter().map(|f| &f[..]).collect();
        let mut sent = 0;
        while sent < frames.len() {
            sent += a.send_batch(&frames[sent..]).unwrap();
        }
    }
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn filo_ipn_holds_a_bus_and_stat_shows_its_members() {
    let tmp = TempDir::new("ipn-cli");
    let path = bus_path(&tmp);
    let pidfile = tmp.join("bus.pid");
    let p = path.to_string_lossy().to_string();
    run(Command::new(FILO).args([
        "ipn",
        &p,
        "--policy",
        "switch",
        "--lossless",
        "--size",
        "512",
        "-d",
        "--pidfile",
        &pidfile.to_string_lossy(),
    ]));
    let daemon: libc::pid_t = pidfile_pid(&pidfile, T);
    // A member joining with other settings gets the bus's.
    let b = Member::start(&format!("ipn://{p}[policy=hub/lossy]"));
    wait_members(&path, 1);
    let json = run(Command::new(FILO).args(["ipn", "stat", &p, "--json"]));
    assert!(
        json.starts_with('{') && json.trim_end().ends_with('}'),
        "{json}"
    );
    for part in [
        "\"policy\":\"switch\"",
        "\"lossless\":true",
        "\"slots\":512",
        &format!("\"pid\":{}", b.proc.pid()),
    ] {
        assert!(json.contains(part), "{part} in {json}");
    }
    let text = run(Command::new(FILO).args(["ipn", "stat", &p]));
    assert!(
        text.contains("policy switch, lossless, 512 slots"),
        "{text}"
    );
    filo_test_support::sys::kill(daemon, libc::SIGTERM);
    assert!(
        wait_until(T, || !pidfile.exists()),
        "the pid file goes with the daemon"
    );
    // The member still serves the bus.
    assert_eq!(members(&path).len(), 1);
    // Nobody on a path: a clear error.
    let out = Command::new(FILO)
        .args(["ipn", "stat", &tmp.join("nothing").to_string_lossy()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no bus serves this path"));
}

#[test]
fn a_vnet_bus_joins_namespaces_and_refuses_members_that_do_not_speak_the_framing() {
    let tmp = TempDir::new("ipn-vnet");
    let path = bus_path(&tmp);
    let p = path.to_string_lossy().to_string();
    let pidfile = tmp.join("bus.pid");
    run(Command::new(FILO)
        .args(["ipn", &p, "--vnet", "--policy", "switch", "-d", "--pidfile"])
        .arg(&pidfile));
    let text = run(Command::new(FILO).args(["ipn", "stat", &p]));
    assert!(
        text.contains("policy switch, lossy, vnet, 256 slots"),
        "{text}"
    );
    // A member that does not speak the framing (filo plug on stdio) is refused, by name.
    for vnl in [format!("ipn://{p}"), format!("ipn://{p}[vnet]")] {
        let out = Command::new(FILO)
            .args(["plug", &vnl])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{vnl}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&p) && err.contains("virtio-net framing"),
            "{vnl}: {err}"
        );
    }
    // Asking for the framing on a plain bus is refused too.
    let plain = tmp.join("plain").to_string_lossy().to_string();
    let _plain = plug(&format!("ipn://{plain}"));
    let opts = filo_vnl::OpenOptions {
        vnet: true,
        ..Default::default()
    };
    let Err(err) = opts.open(&format!("ipn://{plain}[vnet]")) else {
        panic!("vnet on a plain bus was accepted");
    };
    assert!(
        err.to_string()
            .contains("exists without the virtio-net framing"),
        "{err}"
    );
    // filo ns speaks it: two namespaces ping over the bus.
    ping_over(&format!("ipn://{p}"), &path, "10.91.1", 3);
    let daemon: libc::pid_t = pidfile_pid(&pidfile, T);
    filo_test_support::sys::kill(daemon, libc::SIGTERM);
}

#[test]
fn a_bus_created_by_filo_plug_in_the_background_can_be_joined() {
    let tmp = TempDir::new("ipn-plug-d");
    let path = bus_path(&tmp);
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let pidfile = tmp.join("plug.pid");
    // filo plug creates the bus: its serving thread must outlive the fork into the background.
    run(Command::new(FILO)
        .args(["plug", "-d", "-p"])
        .arg(&pidfile)
        .arg(format!("ipn://{}", path.display()))
        .arg(sw.vnl()));
    let mut server = Command::new(FILO);
    server
        .args(["ns", &sw.vnl(), "--ip", "10.91.2.1/24", "--", "sleep", "30"])
        .stdin(Stdio::null())
        .stderr(test_log());
    let _server = Proc::spawn(&mut server);
    let out = run(Command::new(FILO).args([
        "ns",
        &format!("ipn://{}", path.display()),
        "--ip",
        "10.91.2.2/24",
        "--",
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-w",
        "20",
        "10.91.2.1",
    ]));
    assert!(
        out.contains(" 0% packet loss") || out.contains("3 received"),
        "{out}"
    );
    let daemon: libc::pid_t = pidfile_pid(&pidfile, T);
    filo_test_support::sys::kill(daemon, libc::SIGTERM);
}

/// A vnet-framed ARP request from `C` for `ip`, with the virtio-net header `hdr` (12 bytes).
fn arp_request(hdr: [u8; 12], ip: [u8; 4]) -> Vec<u8> {
    let mut f = hdr.to_vec();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&C);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&C);
    f.extend_from_slice(&[10, 91, 7, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip);
    f.resize(12 + 60, 0);
    f
}

/// Sends ARP requests for `ip` from `plug` (vnet-framed, as `C`) until one is answered.
fn arp_answered(plug: &mut Plug, ip: [u8; 4]) -> bool {
    let mut buf = vec![0u8; 70_000];
    wait_until(T, || {
        plug.send(&arp_request([0; 12], ip)).unwrap();
        let deadline = Instant::now() + Duration::from_millis(300);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match plug.recv_timeout(&mut buf, Some(left)) {
                // To C, ARP, a reply.
                Ok(n) if n >= 34 && buf[12..18] == C && buf[24..26] == [8, 6] => {
                    if buf[32..34] == [0, 2] {
                        return true;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        false
    })
}

/// filo ns on a vnet bus writes frames from the ring slot straight to its tap; a frame whose
/// virtio-net header the kernel refuses (EINVAL from the tap's write) is dropped there, and
/// the namespace goes on answering.
#[test]
fn a_namespace_on_a_vnet_bus_answers_after_a_header_its_tap_refuses() {
    let tmp = TempDir::new("ipn-vnet-refused");
    let path = bus_path(&tmp);
    filo_ipn::register();
    let opts = filo_vnl::OpenOptions {
        vnet: true,
        ..Default::default()
    };
    let mut member = opts
        .open(&format!("ipn://{}[vnet]", path.display()))
        .unwrap();
    let mut ns = Command::new(FILO);
    ns.args(["ns", &format!("ipn://{}", path.display())])
        .args(["--ip", "10.91.7.1/24", "--", "sleep", "60"])
        .stdin(Stdio::null())
        .stderr(test_log());
    let mut ns = Proc::spawn(&mut ns);
    wait_members(&path, 2);
    let ip = [10, 91, 7, 1];
    assert!(arp_answered(&mut member, ip), "no ARP reply at all");
    // GSO type 0x7f is none the kernel knows: the tap's write fails with EINVAL.
    let bad = [0, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for _ in 0..3 {
        member.send(&arp_request(bad, ip)).unwrap();
    }
    assert!(
        arp_answered(&mut member, ip),
        "no ARP reply after frames the tap refused"
    );
    assert!(matches!(ns.child.try_wait(), Ok(None)), "filo ns ended");
    drop(member);
    ns.terminate(T);
}
