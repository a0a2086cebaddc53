//! filo's switch against real VDE clients: Debian's vde_plug, a C program linked to
//! libvdeplug, taps in kernel namespaces, and filo's own plugs.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const BCAST: [u8; 6] = [0xff; 6];
const T: Duration = Duration::from_secs(5);

fn deb_plug(
    vnl: &str,
) -> (
    Proc,
    std::sync::mpsc::Receiver<Vec<u8>>,
    std::process::ChildStdin,
) {
    require("vde_plug");
    let mut p = Proc::spawn(
        Command::new("vde_plug")
            .arg(vnl)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let rx = record_reader(p.child.stdout.take().unwrap());
    let tx = p.child.stdin.take().unwrap();
    (p, rx, tx)
}

fn wait_ctl_clients(sw: &FiloSwitch, n: usize) {
    // Count data sockets the switch created (NNN.FD), which exist once a client is connected.
    let ok = wait_until(T, || {
        std::fs::read_dir(&sw.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        e.file_name().to_string_lossy().contains('.')
                            && !e.file_name().to_string_lossy().starts_with('.')
                    })
                    .count()
                    >= n
            })
            .unwrap_or(false)
    });
    assert!(ok, "{n} clients did not connect");
}

#[test]
fn debian_vde_plug_frames_cross_filo_switch_both_ways() {
    let tmp = TempDir::new("filo-sw1");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let (_a, rx_a, mut tx_a) = deb_plug(&sw.vnl());
    let (_b, rx_b, mut tx_b) = deb_plug(&sw.vnl());
    wait_ctl_clients(&sw, 2);
    for (seq, len) in [(1u32, 60usize), (2, 1514), (3, 14)] {
        let f = test_frame(BCAST, A, seq, len);
        tx_a.write_all(&stream_record(&f)).unwrap();
        assert_eq!(expect_frame(&rx_b, T, |g| g[6..12] == A), f);
        // Learned: a unicast answer goes straight back.
        let g = test_frame(A, B, seq + 10, len);
        tx_b.write_all(&stream_record(&g)).unwrap();
        assert_eq!(expect_frame(&rx_a, T, |x| x[6..12] == B), g);
    }
    // A third client sees broadcasts but not the unicast between A and B.
    let (_c, rx_c, _tx_c) = deb_plug(&sw.vnl());
    wait_ctl_clients(&sw, 3);
    let u = test_frame(A, B, 50, 100);
    tx_b.write_all(&stream_record(&u)).unwrap();
    assert_eq!(expect_frame(&rx_a, T, |x| x[6..12] == B), u);
    let f = test_frame(BCAST, B, 51, 100);
    tx_b.write_all(&stream_record(&f)).unwrap();
    let got = expect_frame(&rx_c, T, |x| x[6..12] == B);
    assert_eq!(
        got, f,
        "the first frame client C sees is the broadcast, not the earlier unicast"
    );
}

#[test]
fn a_c_program_linked_to_libvdeplug_talks_through_filo_switch() {
    let client = vdeclient();
    let tmp = TempDir::new("filo-sw2");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let mut echo = Proc::spawn(
        Command::new(&client)
            .args([&sw.vnl(), "echo"])
            .stdout(Stdio::null()),
    );
    wait_ctl_clients(&sw, 1);
    let out = Command::new(&client)
        .args([&sw.vnl(), "ping", "200", "64"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ping through the switch failed: {text}"
    );
    // "p50_us p99_us replies": every one of the 200 pings came back.
    let fields: Vec<f64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert_eq!(fields.len(), 3, "{text}");
    assert!(fields[0] > 0.0, "{text}");
    assert_eq!(fields[2], 200.0, "replies: {text}");
    let _ = echo.terminate(T);
}

#[test]
fn filo_plugs_carry_jumbo_frames_through_filo_switch() {
    let tmp = TempDir::new("filo-sw3");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let mut a = filo_vnl::open(&sw.vnl()).unwrap();
    let mut b = filo_vnl::open(&format!("{}[7]", sw.vnl())).unwrap();
    let f = test_frame(BCAST, A, 1, 9234);
    a.send_timeout(&f, Some(T)).unwrap();
    let mut buf = vec![0u8; 9236];
    let n = b.recv_timeout(&mut buf, Some(T)).unwrap();
    assert_eq!(&buf[..n], &f[..]);
}

/// Receives `count` frames, in batches of `per_batch` (smaller than a train, so trains come
/// out in pieces), waiting up to T for each when none is there.
fn recv_all(plug: &mut filo_vnl::Plug, count: usize, per_batch: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut batch = filo_vnl::FrameBatch::new(per_batch);
    let mut one = vec![0u8; 9236];
    while got.len() < count {
        match plug.recv_batch(&mut batch) {
            Ok(_) => got.extend(batch.frames().map(|f| f.to_vec())),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let n = plug
                    .recv_timeout(&mut one, Some(T))
                    .unwrap_or_else(|e| panic!("after {} of {count} frames: {e}", got.len()));
                got.push(one[..n].to_vec());
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    got
}

/// `filo plug` joining two switches.
fn filo_cable(a: &FiloSwitch, b: &FiloSwitch) -> Proc {
    Proc::spawn(
        Command::new(FILO)
            .args(["plug", &a.vnl(), &b.vnl()])
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    )
}

#[test]
fn filo_plugs_exchange_frame_trains_while_debian_vde_plug_gets_plain_frames() {
    let tmp = TempDir::new("filo-swtr");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let mut a = filo_vnl::open(&sw.vnl()).unwrap();
    let mut b = filo_vnl::open(&sw.vnl()).unwrap();
    let (_c, rx_c, mut tx_c) = deb_plug(&sw.vnl());
    wait_ctl_clients(&sw, 3);
    // The switch agrees by naming the data socket: the two filo plugs asked, vde_plug did not.
    let names: Vec<String> = std::fs::read_dir(&sw.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let trains = names.iter().filter(|n| n.ends_with(".train")).count();
    assert_eq!(trains, 2, "data sockets: {names:?}");

    // B announces itself, so that frames for it are unicast; C hears the announcement.
    b.send_timeout(&test_frame(BCAST, B, 0, 60), Some(T))
        .unwrap();
    assert_eq!(expect_frame(&rx_c, T, |g| g[6..12] == B).len(), 60);
    // 600 frames of many sizes, 64 to a batch (so a train each), arrive at B whole and in order,
    // read through a batch smaller than a train.
    let frames: Vec<Vec<u8>> = (1..=600u32)
        .map(|i| test_frame(B, A, i, 14 + (i as usize * 37) % 1501))
        .collect();
    send_all(&mut a, &frames, 64, T);
    let got = recv_all(&mut b, frames.len(), 5);
    let mut one = vec![0u8; 2000];
    assert!(got == frames, "B got the frames whole and in order");
    assert!(!b.has_pending_input());

    // Broadcasts sent as one train reach Debian's vde_plug as ordinary frames, one by one.
    let bcasts: Vec<Vec<u8>> = (700..710u32)
        .map(|i| test_frame(BCAST, A, i, 60 + i as usize))
        .collect();
    send_all(&mut a, &bcasts, 64, T);
    for f in &bcasts {
        assert_eq!(&expect_frame(&rx_c, T, |g| g[6..12] == A), f);
    }
    // And a plain frame from vde_plug reaches A inside a train.
    let from_c = test_frame(A, [2, 0, 0, 0, 0, 0x0c], 800, 333);
    tx_c.write_all(&stream_record(&from_c)).unwrap();
    let n = loop {
        let n = a
            .recv_timeout(&mut one, Some(T))
            .expect("C's frame reaches A");
        if one[6..12] == from_c[6..12] {
            break n;
        }
    };
    assert_eq!(&one[..n], &from_c[..]);
}

/// Two namespaces whose taps are carried by `plugs` (filo or Debian's vde_plug) into a filo
/// switch: ping, then a checked 4 MiB HTTP transfer over IPv4 and IPv6. Between two filo plugs
/// TCP travels as super-frames; toward vde_plug the switch segments them.
fn taps_through_filo_switch(plugs: [&str; 2]) {
    require("ping");
    require("curl");
    let tmp = TempDir::new("filo-sw4");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let ns1 = Netns::new("filo-s1");
    let ns2 = Netns::new("filo-s2");
    let mut procs = Vec::new();
    for (i, (ns, ip, ip6)) in [
        (&ns1, "10.97.0.1/24", "fd97::1/64"),
        (&ns2, "10.97.0.2/24", "fd97::2/64"),
    ]
    .into_iter()
    .enumerate()
    {
        ns.tap(&[ip, ip6]);
        let argv: &[&str] = if plugs[i] == "filo" {
            &[FILO, "plug"]
        } else {
            &["vde_plug"]
        };
        procs.push(ns.plug_tap(argv, &sw.vnl()));
    }
    wait_ctl_clients(&sw, 2);
    // Each filo plug asked for super-frames (+vnet) and trains, and the switch agreed by
    // naming its data socket so; vde_plug's data socket is plain. A silent fallback to
    // plain frames fails here.
    let data_sockets: Vec<String> = std::fs::read_dir(&sw.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.chars().take(3).all(|c| c.is_ascii_digit()))
        .collect();
    let filo_plugs = plugs.iter().filter(|p| **p == "filo").count();
    let framed = |token: &str| data_sockets.iter().filter(|n| n.contains(token)).count();
    assert_eq!(framed(".vnet"), filo_plugs, "{plugs:?}: {data_sockets:?}");
    assert_eq!(framed(".train"), filo_plugs, "{plugs:?}: {data_sockets:?}");
    assert_eq!(data_sockets.len(), 2, "{data_sockets:?}");
    ns1.exec_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.97.0.2"]);
    let blob: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(tmp.join("blob"), &blob).unwrap();
    let mut server = ns2.command("python3");
    server
        .args(["-m", "http.server", "-b", "::", "8089", "-d"])
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Proc::spawn(&mut server);
    for url in ["http://10.97.0.2:8089/blob", "http://[fd97::2]:8089/blob"] {
        let got = tmp.join("got");
        let _ = std::fs::remove_file(&got);
        assert!(
            wait_until(Duration::from_secs(10), || {
                ns1.command("curl")
                    .args(["-sf", "--max-time", "20", "-o"])
                    .arg(&got)
                    .arg(url)
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            }),
            "{plugs:?}: curl {url} failed"
        );
        assert!(
            std::fs::read(&got).unwrap() == blob,
            "{plugs:?}: {url}: downloaded file differs"
        );
    }
}

#[test]
fn two_namespaces_on_taps_ping_and_fetch_through_filo_switch() {
    taps_through_filo_switch(["vde_plug", "vde_plug"]);
}

#[test]
fn filo_plugs_on_taps_carry_tcp_super_frames_through_filo_switch() {
    taps_through_filo_switch(["filo", "filo"]);
}

#[test]
fn the_switch_segments_super_frames_for_a_plain_vde_plug() {
    taps_through_filo_switch(["filo", "vde_plug"]);
    taps_through_filo_switch(["vde_plug", "filo"]);
}

#[test]
fn a_burst_crosses_a_filo_plug_cable_between_two_switches_whole_and_in_order() {
    // Every hop is a train here: plug -> switch a -> cable -> switch b -> plug. With
    // back-pressure on both switches nothing may be lost, so every frame must arrive, in order.
    let tmp = TempDir::new("filo-swcb");
    let a = FiloSwitch::start(FILO, &tmp, "a", &["--lossless"]);
    let b = FiloSwitch::start(FILO, &tmp, "b", &["--lossless"]);
    let _cable = filo_cable(&a, &b);
    wait_ctl_clients(&a, 1);
    wait_ctl_clients(&b, 1);
    let mut sender = filo_vnl::open(&a.vnl()).unwrap();
    let mut receiver = filo_vnl::open(&b.vnl()).unwrap();
    // B announces itself across the cable, so the burst is unicast to it.
    receiver
        .send_timeout(&test_frame(BCAST, B, 0, 60), Some(T))
        .unwrap();
    let mut buf = vec![0u8; 9236];
    let n = sender
        .recv_timeout(&mut buf, Some(T))
        .expect("the cable carries frames");
    assert_eq!(&buf[6..12], &B[..], "{n} bytes from the wrong source");
    let frames: Vec<Vec<u8>> = (1..=3000u32)
        .map(|i| test_frame(B, A, i, 60 + (i as usize * 53) % 1400))
        .collect();
    let to_send = frames.clone();
    let sending = std::thread::spawn(move || {
        send_all(&mut sender, &to_send, 64, T);
        sender
    });
    let got = recv_all(&mut receiver, frames.len(), 16);
    drop(sending.join().unwrap());
    assert_eq!(got.len(), frames.len());
    let first_bad = got.iter().zip(&frames).position(|(g, f)| g != f);
    assert_eq!(first_bad, None, "frames arrived changed or out of order");
}

#[test]
fn two_filo_switches_joined_by_two_cables_do_not_loop_with_spanning_tree() {
    let tmp = TempDir::new("filo-stp");
    let timers = ["--stp", "--stp-timers", "1:4:1"];
    let a = FiloSwitch::start(
        FILO,
        &tmp,
        "a",
        &[&timers[..], &["--macaddr", "02:00:00:00:00:01"]].concat(),
    );
    let b = FiloSwitch::start(
        FILO,
        &tmp,
        "b",
        &[&timers[..], &["--macaddr", "02:00:00:00:00:02"]].concat(),
    );
    let _cable1 = filo_cable(&a, &b);
    let _cable2 = filo_cable(&a, &b);
    wait_ctl_clients(&a, 2);
    wait_ctl_clients(&b, 2);
    // Listening + learning take 2 x forward delay; give the tree time to settle.
    std::thread::sleep(Duration::from_secs(4));
    let mut ha = filo_vnl::open(&a.vnl()).unwrap();
    let mut hb = filo_vnl::open(&b.vnl()).unwrap();
    // New ports are edge-less: wait until they forward too.
    std::thread::sleep(Duration::from_secs(3));
    let f = test_frame(BCAST, A, 77, 120);
    ha.send_timeout(&f, Some(T)).unwrap();
    let mut buf = vec![0u8; 9236];
    let mut copies = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        if let Ok(n) = hb.recv_timeout(&mut buf, Some(Duration::from_millis(200))) {
            if buf[..n] == f[..] {
                copies += 1;
            }
        }
    }
    assert_eq!(
        copies, 1,
        "the broadcast arrived {copies} times: a loop (or no path)"
    );
}

#[test]
fn a_switch_hosted_in_filo_plug_is_joinable_by_vde_plug() {
    let tmp = TempDir::new("filo-host");
    let dir = tmp.join("hosted");
    let mut host = Proc::spawn(
        Command::new(FILO)
            .args(["plug", &format!("switch://{}", dir.display())])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    assert!(wait_until(T, || dir.join("ctl").exists()));
    let host_rx = record_reader(host.child.stdout.take().unwrap());
    let (_p, rx, mut tx) = deb_plug(&format!("vde://{}", dir.display()));
    std::thread::sleep(Duration::from_millis(300));
    let f = test_frame(BCAST, B, 1, 300);
    tx.write_all(&stream_record(&f)).unwrap();
    assert_eq!(expect_frame(&host_rx, T, |g| g[6..12] == B), f);
    let g = test_frame(B, A, 2, 400);
    host.child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&stream_record(&g))
        .unwrap();
    assert_eq!(expect_frame(&rx, T, |x| x[6..12] == A), g);
    assert!(host.terminate(T).success());
    assert!(
        wait_until(T, || !dir.exists()),
        "the hosted switch left {} behind",
        dir.display()
    );
}

#[test]
fn a_hosted_switch_forgets_addresses_after_its_expiretime() {
    let tmp = TempDir::new("filo-hexp");
    let dir = tmp.join("hosted");
    let opts = filo_vnl::OpenOptions::default();
    let host_vnl = format!("switch://{}[expiretime=1]", dir.display());
    let mut host = filo_switch::hosted::open_plug(&opts, &host_vnl).unwrap();
    let vnl = format!("vde://{}", dir.display());
    let mut a = filo_vnl::open(&vnl).unwrap();
    let mut b = filo_vnl::open(&vnl).unwrap();
    let mut buf = vec![0u8; 9236];
    // A announces itself, so the switch learns A's port.
    a.send_timeout(&test_frame(BCAST, A, 1, 60), Some(T))
        .unwrap();
    for plug in [&mut host, &mut b] {
        let n = plug.recv_timeout(&mut buf, Some(T)).unwrap();
        assert_eq!(&buf[6..12], &A, "the broadcast from A");
        assert!(n >= 60);
    }
    let host_mac = [0x02, 0, 0, 0, 0, 0x0c];
    host.send(&test_frame(A, host_mac, 2, 60)).unwrap();
    let n = a.recv_timeout(&mut buf, Some(T)).unwrap();
    assert_eq!(&buf[..n], &test_frame(A, host_mac, 2, 60)[..]);
    let early = b.recv_timeout(&mut buf, Some(Duration::from_millis(300)));
    assert!(
        early.is_err(),
        "a frame for a learned address was flooded to another port"
    );
    // Once A's entry is older than 1 s (aging runs every 2 s), frames for A flood again.
    // Without the option the switch would keep A for 120 s.
    let mut seq = 3;
    let flooded = wait_until(Duration::from_secs(8), || {
        seq += 1;
        host.send(&test_frame(A, host_mac, seq, 60)).unwrap();
        matches!(b.recv_timeout(&mut buf, Some(Duration::from_millis(200))), Ok(n) if buf[..6] == A && n >= 60)
    });
    assert!(flooded, "A's address was not forgotten after expiretime=1");
}

#[test]
fn a_hosted_switch_rejects_a_bad_expiretime_naming_it() {
    let tmp = TempDir::new("filo-hexp-bad");
    let opts = filo_vnl::OpenOptions::default();
    for value in ["soon", "0", "-3"] {
        let dir = tmp.join(&format!("hosted-{value}"));
        let text = format!("switch://{}[expiretime={value}]", dir.display());
        let err = match filo_switch::hosted::open_plug(&opts, &text) {
            Ok(_) => panic!("{text} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("expiretime"), "{text}: {err}");
        assert!(!dir.exists(), "{text} left {} behind", dir.display());
    }
}

/// The scheduling policies of a process's threads (0 SCHED_OTHER, 3 SCHED_BATCH).
fn thread_policies(pid: u32) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let sched = std::fs::read_to_string(task.path().join("sched")).unwrap_or_default();
        let policy = sched
            .lines()
            .find(|l| l.starts_with("policy"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse::<u32>().ok());
        policies.extend(policy);
    }
    assert!(
        !policies.is_empty(),
        "no policy in /proc/{pid}/task/*/sched"
    );
    policies
}

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

const SCHED_IDLE: u32 = 5;

#[test]
fn the_switch_runs_sched_batch_unless_told_otherwise() {
    let tmp = TempDir::new("filo-sched");
    let default = FiloSwitch::start(FILO, &tmp, "d", &[]);
    assert!(
        wait_until(T, || thread_policies(default.proc.pid()) == [SCHED_BATCH]),
        "by default the switch should run SCHED_BATCH: {:?}",
        thread_policies(default.proc.pid())
    );
    let batch = FiloSwitch::start(FILO, &tmp, "b", &["--scheduling", "batch"]);
    assert!(wait_until(T, || thread_policies(batch.proc.pid()) == [SCHED_BATCH]));
    let normal = FiloSwitch::start(FILO, &tmp, "n", &["--scheduling", "normal"]);
    // It forwards, and stays SCHED_OTHER while it does.
    let mut a = filo_vnl::open(&normal.vnl()).unwrap();
    let mut b = filo_vnl::open(&normal.vnl()).unwrap();
    let frames: Vec<Vec<u8>> = (0..64).map(|i| test_frame(B, A, i, 60)).collect();
    send_all(&mut a, &frames, 64, T);
    assert_eq!(recv_all(&mut b, 64, 64), frames);
    assert_eq!(thread_policies(normal.proc.pid()), [SCHED_OTHER]);
    // A policy chosen from outside stands.
    require("chrt");
    let dir = tmp.join("idle");
    let mut idle = Proc::spawn(
        Command::new("chrt")
            .args(["--idle", "0", FILO, "switch", "--nostdin"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(test_log()),
    );
    assert!(wait_until(T, || dir.join("ctl").exists()));
    assert_eq!(thread_policies(idle.pid()), [SCHED_IDLE]);
    assert!(idle.terminate(T).success());
    let (status, _out, err) = Proc::spawn(
        Command::new(FILO)
            .args(["switch", "--scheduling", "fast"])
            .arg(tmp.join("x"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .output(T);
    assert!(!status.success());
    assert!(
        err.contains("--scheduling") && err.contains("normal") && err.contains("batch"),
        "{err}"
    );
}

#[test]
fn qemu_joins_filo_switch_and_its_network_boot_frames_arrive() {
    require("qemu-system-x86_64");
    let tmp = TempDir::new("filo-qemu");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let mut listener = filo_vnl::open(&format!("{}[9]", sw.vnl())).unwrap();
    // No disk: the NIC's iPXE ROM network-boots, sending DHCP discovers through the switch.
    let _qemu = qemu_netboot(&sw.dir, "52:54:00:12:34:56");
    assert!(
        wait_until(T, || sw.console("port/print").contains(": QEMU")),
        "QEMU's description on the switch"
    );
    let mut buf = vec![0u8; 9236];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut dhcp = false;
    while !dhcp && std::time::Instant::now() < deadline {
        if let Ok(n) = listener.recv_timeout(&mut buf, Some(Duration::from_secs(1))) {
            dhcp = is_dhcp_discover(&buf[..n], [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        }
    }
    assert!(dhcp, "no DHCP discover from QEMU arrived");
}

#[test]
fn a_tap_attached_with_dash_t_joins_the_switch() {
    require("ping");
    require("curl");
    let tmp = TempDir::new("filo-swt");
    let ns1 = Netns::new("filo-t1");
    let ns2 = Netns::new("filo-t2");
    // The switch runs inside ns1 and owns its tap there (-t), as vde_switch -t does.
    ns1.exec_ok(&["ip", "tuntap", "add", "tap0", "mode", "tap"]);
    let dir = tmp.join("sw");
    let mut c = ns1.command(FILO);
    c.arg("switch")
        .arg(&dir)
        .args(["-t", "tap0", "--nostdin"])
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let _sw = Proc::spawn(&mut c);
    assert!(wait_until(T, || dir.join("ctl").exists()));
    ns1.exec_ok(&["ip", "addr", "add", "10.93.0.1/24", "dev", "tap0"]);
    ns1.exec_ok(&["ip", "link", "set", "tap0", "up"]);
    ns2.tap(&["10.93.0.2/24"]);
    let _plug = ns2.plug_tap(&[FILO, "plug"], &format!("vde://{}", dir.display()));
    std::thread::sleep(Duration::from_millis(300));
    ns2.exec_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.93.0.1"]);
    let blob: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 9) as u8)
        .collect();
    std::fs::write(tmp.join("blob"), &blob).unwrap();
    let mut server = ns1.command("python3");
    server
        .args(["-m", "http.server", "-b", "10.93.0.1", "8090", "-d"])
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Proc::spawn(&mut server);
    let got = tmp.join("got");
    assert!(wait_until(Duration::from_secs(10), || {
        ns2.command("curl")
            .args(["-sf", "--max-time", "20", "-o"])
            .arg(&got)
            .arg("http://10.93.0.1:8090/blob")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }));
    assert!(std::fs::read(&got).unwrap() == blob);
}

/// `count` user-space stacks on `vnl`, all asking for DHCP leases at once (plugs opened
/// first); returns each one's address, or None.
fn dhcp_burst(vnl: &str, count: usize, within: Duration) -> Vec<Option<std::net::IpAddr>> {
    let driver = filo_stack::Driver::new().unwrap();
    let plugs: Vec<_> = (0..count).map(|_| filo_vnl::open(vnl).unwrap()).collect();
    let stacks: Vec<_> = plugs
        .into_iter()
        .map(|plug| {
            filo_stack::Stack::builder()
                .interface_plug(plug, "dhcp")
                .driver(&driver)
                .build()
                .unwrap()
        })
        .collect();
    let deadline = std::time::Instant::now() + within;
    stacks
        .iter()
        .map(|s| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            s.wait_for_address(false, left).map(|c| c.addr)
        })
        .collect()
}

/// The "snooped N" count of `dhcp/print`.
fn snooped(sw: &FiloSwitch) -> u64 {
    let out = sw.console("dhcp/print");
    out.split_whitespace()
        .skip_while(|w| *w != "snooped")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no snooped count in {out}"))
}

/// DHCP snooping against real servers and clients: a burst of 64 user-space stacks asking at
/// once is served by `filo router` with the burst's broadcasts past the flood budget sent to
/// the router's port only; busybox udhcpc in a namespace is still leased; dnsmasq, started
/// later as a second server, hears the broadcasts flooded within the budget, answers and is
/// learned as a server port too; with --no-dhcp-snooping nothing is snooped.
#[test]
fn dhcp_snooping_serves_bursts_and_learns_a_second_server() {
    require("busybox");
    require("dnsmasq");
    let tmp = TempDir::new("filo-swdhcp");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["-n", "200"]);
    let rmgmt = tmp.join("r.mgmt");
    let _router = Polite(Proc::spawn(
        Command::new(FILO)
            .args(["router", "--vnl", &sw.vnl(), "--conf", "ip=10.74.0.1/24"])
            .args(["--dhcp-server", "vde0=10.74.0.10-10.74.0.199", "-M"])
            .arg(&rmgmt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(test_log()),
    ));
    assert!(wait_until(T, || rmgmt.exists()), "the router did not start");
    let addrs = dhcp_burst(&sw.vnl(), 64, Duration::from_secs(30));
    let leased: std::collections::HashSet<_> = addrs.iter().flatten().collect();
    assert_eq!(leased.len(), 64, "{addrs:?}");
    let servers = sw.console("dhcp/print");
    assert!(snooped(&sw) > 0, "{servers}");
    assert_eq!(servers.matches("answered").count(), 1, "{servers}");

    // A kernel client (broadcast replies) on the same switch.
    let script = write_script(tmp.join("udhcpc.sh"), UDHCPC_PRINT_LEASE);
    let udhcpc = format!(
        "ip link set vde0 up; busybox udhcpc -i vde0 -n -q -f -t 10 -s {}",
        script.display()
    );
    let (code, out, err) = filo_ns_out(
        FILO,
        &[&sw.vnl(), "--", "sh", "-c", &udhcpc],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("lease=10.74.0."), "{out}");

    // dnsmasq joins as a second server: a second burst (after the budget refilled) reaches
    // it, it answers, and its port is a server port too.
    let mut dnsmasq = dnsmasq_dhcp(&tmp.join("leases"), "10.74.0.200,10.74.0.250", &[]);
    let pid = tmp.join("dnsmasq.pid");
    for a in dnsmasq.iter_mut().filter(|a| *a == "--pid-file") {
        *a = format!("--pid-file={}", pid.display());
    }
    dnsmasq.push("--no-ping".into());
    let vnl = sw.vnl();
    let mut args = vec!["ns", "--ip", "10.74.0.2/24", vnl.as_str(), "--"];
    args.extend(dnsmasq.iter().map(String::as_str));
    let _dnsmasq = Polite(Proc::spawn(
        Command::new(FILO)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(test_log()),
    ));
    assert!(wait_until(T, || pid.exists()), "dnsmasq did not start");
    std::thread::sleep(Duration::from_millis(1500));
    let addrs = dhcp_burst(&sw.vnl(), 40, Duration::from_secs(30));
    assert!(addrs.iter().all(Option::is_some), "{addrs:?}");
    let servers = sw.console("dhcp/print");
    assert_eq!(servers.matches("answered").count(), 2, "{servers}");

    // Snooping off: the same switch floods every client broadcast again.
    let plain = FiloSwitch::start(FILO, &tmp, "plain", &["--no-dhcp-snooping"]);
    assert!(plain.console("dhcp/print").contains("DHCP snooping off"));
    assert_eq!(snooped(&plain), 0);
}
