//! `filo plug` and filo's plugs against Debian's vde_switch and vde_plug.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const BCAST: [u8; 6] = [0xff; 6];

fn stream_plug(program: &str, vnl: &str) -> Proc {
    Proc::spawn(
        Command::new(program)
            .args(
                ["plug", vnl]
                    .iter()
                    .skip(if program == "vde_plug" { 1 } else { 0 }),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

fn connected(sw: &DebSwitch, n: usize) -> bool {
    sw.console("port/print").matches("-- endpoint").count() >= n
}

#[test]
fn frames_cross_between_filo_plug_and_vde_plug_through_vde_switch_both_ways() {
    require("vde_plug");
    let tmp = TempDir::new("filo-pv");
    let sw = DebSwitch::start(&tmp, "sw");
    let mut filo = stream_plug(FILO, &sw.vnl());
    let mut deb = stream_plug("vde_plug", &sw.vnl());
    assert!(
        wait_until(Duration::from_secs(5), || connected(&sw, 2)),
        "both plugs joined the switch"
    );
    let filo_rx = record_reader(filo.child.stdout.take().unwrap());
    let deb_rx = record_reader(deb.child.stdout.take().unwrap());
    let mut filo_in = filo.child.stdin.take().unwrap();
    let mut deb_in = deb.child.stdin.take().unwrap();
    for (seq, len) in [(1u32, 60usize), (2, 1514), (3, 14), (4, 1000)] {
        let f = test_frame(BCAST, A, seq, len);
        filo_in.write_all(&stream_record(&f)).unwrap();
        assert_eq!(
            expect_frame(&deb_rx, Duration::from_secs(5), |g| g[6..12] == A),
            f
        );
        let g = test_frame(A, B, seq + 100, len);
        deb_in.write_all(&stream_record(&g)).unwrap();
        assert_eq!(
            expect_frame(&filo_rx, Duration::from_secs(5), |g| g[6..12] == B),
            g
        );
    }
    // Split writes and zero-length records are part of the encoding.
    let f = test_frame(BCAST, A, 9, 200);
    let rec = stream_record(&f);
    filo_in.write_all(&[0, 0]).unwrap();
    filo_in.write_all(&rec[..5]).unwrap();
    filo_in.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    filo_in.write_all(&rec[5..]).unwrap();
    assert_eq!(
        expect_frame(&deb_rx, Duration::from_secs(5), |g| g[6..12] == A),
        f
    );
    // The switch shows filo's description as vde_plug's: "<descr> user=<name> pid=<pid>".
    let ports = sw.console("port/print");
    assert!(
        ports.contains(&format!("filo-plug: user=root pid={}", filo.pid())),
        "{ports}"
    );
    // stdin EOF ends filo plug cleanly.
    drop(filo_in);
    let status = filo.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
}

#[test]
fn library_plug_talks_to_vde_plug_and_chooses_its_port() {
    require("vde_plug");
    let tmp = TempDir::new("filo-pl");
    let sw = DebSwitch::start(&tmp, "sw");
    let mut plug = filo_vnl::open(&format!("{}[5]", sw.vnl())).expect("open vde plug on port 5");
    let ports = sw.console("port/print 5");
    assert!(
        ports.contains("Port 0005") && ports.contains("ACTIVE"),
        "{ports}"
    );
    let mut deb = stream_plug("vde_plug", &sw.vnl());
    assert!(wait_until(Duration::from_secs(5), || connected(&sw, 2)));
    let deb_rx = record_reader(deb.child.stdout.take().unwrap());
    let mut deb_in = deb.child.stdin.take().unwrap();
    let f = test_frame(BCAST, A, 1, 1514);
    plug.send_timeout(&f, Some(Duration::from_secs(2))).unwrap();
    assert_eq!(
        expect_frame(&deb_rx, Duration::from_secs(5), |g| g[6..12] == A),
        f
    );
    let g = test_frame(A, B, 2, 64);
    deb_in.write_all(&stream_record(&g)).unwrap();
    let mut buf = vec![0u8; 9236];
    let n = loop {
        let n = plug
            .recv_timeout(&mut buf, Some(Duration::from_secs(5)))
            .expect("frame from vde_plug");
        if buf[6..12] == B {
            break n;
        }
    };
    assert_eq!(&buf[..n], &g[..]);
    // The data socket the client bound is unlinked once connected (only ctl and the switch's
    // own data sockets remain).
    let leftovers: Vec<_> = std::fs::read_dir(&sw.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "client sockets left in the switch dir: {leftovers:?}"
    );
    // Port 0 is requested with its own request type.
    let _p0 = filo_vnl::open(&format!("{}[0]", sw.vnl())).expect("open port 0");
    assert!(sw.console("port/print 0").contains("Port 0000"));
}

#[test]
fn filo_plug_sees_the_switch_die_and_exits_with_a_reason() {
    let tmp = TempDir::new("filo-pd");
    let mut sw = DebSwitch::start(&tmp, "sw");
    // Without --no-reconnect it would wait for the switch to come back (tests/reconnect.rs).
    let filo = Proc::spawn(
        Command::new(FILO)
            .args(["plug", "--no-reconnect", &sw.vnl()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(wait_until(Duration::from_secs(5), || connected(&sw, 1)));
    // The switch lists the port once the control handshake is done; the plug then connects
    // to the data socket. Give it that moment, or a busy machine sees the switch die
    // mid-handshake (a refused data socket) instead of a closed connection.
    std::thread::sleep(Duration::from_millis(500));
    sw.kill();
    let (status, _out, err) = filo.output(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{status} {err}");
    assert!(err.contains("closed the connection"), "{err}");
}

#[test]
fn two_debian_switches_joined_by_filo_plug_through_a_command() {
    require("vde_plug");
    let tmp = TempDir::new("filo-pj");
    let a = DebSwitch::start(&tmp, "a");
    let b = DebSwitch::start(&tmp, "b");
    let _join = Proc::spawn(
        Command::new(FILO)
            .args(["plug", &a.vnl(), "=", FILO, "plug", &b.vnl()])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    assert!(wait_until(Duration::from_secs(5), || connected(&a, 1)
        && connected(&b, 1)));
    let mut pa = stream_plug("vde_plug", &a.vnl());
    let mut pb = stream_plug("vde_plug", &b.vnl());
    assert!(wait_until(Duration::from_secs(5), || connected(&a, 2)
        && connected(&b, 2)));
    let rx_b = record_reader(pb.child.stdout.take().unwrap());
    let rx_a = record_reader(pa.child.stdout.take().unwrap());
    let f = test_frame(BCAST, A, 7, 300);
    pa.child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&stream_record(&f))
        .unwrap();
    assert_eq!(
        expect_frame(&rx_b, Duration::from_secs(5), |g| g[6..12] == A),
        f
    );
    let g = test_frame(A, B, 8, 1400);
    pb.child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&stream_record(&g))
        .unwrap();
    assert_eq!(
        expect_frame(&rx_a, Duration::from_secs(5), |g| g[6..12] == B),
        g
    );
}

#[test]
fn two_namespaces_on_taps_ping_and_move_tcp_through_vde_switch() {
    require("ping");
    require("iperf3");
    let tmp = TempDir::new("filo-pt");
    let sw = DebSwitch::start(&tmp, "sw");
    let ns1 = Netns::new("filo-t1");
    let ns2 = Netns::new("filo-t2");
    let mut plugs = Vec::new();
    for (ns, ip) in [(&ns1, "10.91.0.1/24"), (&ns2, "10.91.0.2/24")] {
        ns.tap(&[ip]);
        plugs.push(ns.plug_tap(&[FILO, "plug"], &sw.vnl()));
    }
    assert!(wait_until(Duration::from_secs(5), || connected(&sw, 2)));
    ns1.exec_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.91.0.2"]);
    ns2.exec_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.91.0.1"]);
    // A TCP transfer with a checked result: curl in ns1 fetches a file from a web server in ns2.
    let file = tmp.join("blob");
    let blob: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &blob).unwrap();
    let mut server = ns2.command("python3");
    server
        .args(["-m", "http.server", "-b", "10.91.0.2", "8088", "-d"])
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Proc::spawn(&mut server);
    let got = tmp.join("got");
    let fetched = wait_until(Duration::from_secs(10), || {
        ns1.command("curl")
            .args(["-sf", "--max-time", "20", "-o"])
            .arg(&got)
            .arg("http://10.91.0.2:8088/blob")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    assert!(fetched, "curl through the taps and the switch failed");
    assert!(
        std::fs::read(&got).unwrap() == blob,
        "downloaded file differs"
    );
}
