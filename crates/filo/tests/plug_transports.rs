//! Every transport against a real peer: Debian's vde_plug (ptp, udp, vxvde), the Linux kernel
//! (vxlan, tap), a child process (cmd) and a socketpair (seqpacket).

use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use filo_test_support::*;
use filo_vnl::Plug;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const BCAST: [u8; 6] = [0xff; 6];
const T: Duration = Duration::from_secs(5);

fn recv_from(plug: &mut Plug, src: [u8; 6]) -> Vec<u8> {
    let mut buf = vec![0u8; 9236];
    loop {
        let n = plug.recv_timeout(&mut buf, Some(T)).expect("frame");
        if buf[6..12] == src {
            return buf[..n].to_vec();
        }
    }
}

/// Debian vde_plug on `vnl` in stream mode (optionally in a namespace).
fn deb_stream(
    ns: Option<&Netns>,
    vnl: &str,
) -> (Proc, Receiver<Vec<u8>>, std::process::ChildStdin) {
    require("vde_plug");
    let mut c = match ns {
        Some(ns) => ns.command("vde_plug"),
        None => Command::new("vde_plug"),
    };
    c.arg(vnl)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut p = Proc::spawn(&mut c);
    let rx = record_reader(p.child.stdout.take().unwrap());
    let tx = p.child.stdin.take().unwrap();
    (p, rx, tx)
}

/// Sends `f` repeatedly until `rx` sees it: multicast transports need a moment to join.
fn send_until_seen(send: &mut dyn FnMut(&[u8]), rx: &Receiver<Vec<u8>>, f: &[u8]) {
    for _ in 0..50 {
        send(f);
        if let Ok(g) = rx.recv_timeout(Duration::from_millis(100)) {
            if g == f {
                return;
            }
        }
    }
    panic!("frame never arrived");
}

#[test]
fn ptp_between_filo_and_debian_vde_plug_either_side_first() {
    let tmp = TempDir::new("filo-ptp");
    for filo_first in [true, false] {
        let path = tmp.join(if filo_first { "l1" } else { "l2" });
        let vnl = format!("ptp://{}", path.display());
        let (mut plug, (_deb, rx, mut tx)) = if filo_first {
            let plug = filo_vnl::open(&vnl).unwrap();
            (plug, deb_stream(None, &vnl))
        } else {
            let deb = deb_stream(None, &vnl);
            assert!(wait_until(T, || path.exists()));
            (filo_vnl::open(&vnl).unwrap(), deb)
        };
        // The second endpoint may not be bound yet when the first sends: retry until seen.
        let f = test_frame(BCAST, A, 1, 1514);
        send_until_seen(&mut |f| plug.send(f).unwrap(), &rx, &f);
        let g = test_frame(A, B, 2, 60);
        tx.write_all(&stream_record(&g)).unwrap();
        assert_eq!(recv_from(&mut plug, B), g);
    }
}

#[test]
fn jumbo_frames_cross_a_ptp_cable_and_the_stream_encoding() {
    let tmp = TempDir::new("filo-jumbo");
    let vnl = format!("ptp://{}", tmp.join("j").display());
    let mut a = filo_vnl::open(&vnl).unwrap();
    let mut p = Proc::spawn(
        Command::new(FILO)
            .args(["plug", &vnl])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let rx = record_reader(p.child.stdout.take().unwrap());
    let mut tx = p.child.stdin.take().unwrap();
    let big = test_frame(BCAST, A, 3, 9234);
    send_until_seen(&mut |f| a.send(f).unwrap(), &rx, &big);
    let big_b = test_frame(A, B, 4, 9234);
    tx.write_all(&stream_record(&big_b)).unwrap();
    assert_eq!(recv_from(&mut a, B), big_b);
    // Bigger than 9234 is refused with a clear error, and nothing is sent.
    let err = a.send(&vec![0u8; 9235]).unwrap_err();
    assert!(err.to_string().contains("9234"), "{err}");
    assert_eq!(a.stats().refused_out, 1);
}

#[test]
fn udp_between_filo_and_debian_vde_plug() {
    let mut plug = filo_vnl::open("udp://127.0.0.1:47011->127.0.0.1:47012").unwrap();
    let (_deb, rx, mut tx) = deb_stream(None, "udp://127.0.0.1:47012->127.0.0.1:47011");
    let f = test_frame(BCAST, A, 5, 700);
    send_until_seen(&mut |f| plug.send(f).unwrap(), &rx, &f);
    let g = test_frame(A, B, 6, 1514);
    tx.write_all(&stream_record(&g)).unwrap();
    assert_eq!(recv_from(&mut plug, B), g);
}

#[test]
fn cmd_runs_debian_vde_plug_as_a_child() {
    let tmp = TempDir::new("filo-cmd");
    let sw = DebSwitch::start(&tmp, "sw");
    let mut plug = filo_vnl::open(&format!("cmd://vde_plug {}", sw.vnl())).unwrap();
    let (_deb, rx, mut tx) = deb_stream(None, &sw.vnl());
    assert!(wait_until(T, || sw
        .console("port/print")
        .matches("-- endpoint")
        .count()
        >= 2));
    let f = test_frame(BCAST, A, 7, 1000);
    plug.send_timeout(&f, Some(T)).unwrap();
    assert_eq!(expect_frame(&rx, T, |g| g[6..12] == A), f);
    let g = test_frame(A, B, 8, 90);
    tx.write_all(&stream_record(&g)).unwrap();
    assert_eq!(recv_from(&mut plug, B), g);
}

#[test]
fn seqpacket_wraps_an_inherited_descriptor() {
    let (ours, theirs) = socketpair_seqpacket();
    let fd = ours.into_raw_fd();
    let mut plug = filo_vnl::open(&format!("seqpacket://{fd}")).unwrap();
    let f = test_frame(BCAST, A, 9, 500);
    plug.send(&f).unwrap();
    let mut buf = [0u8; 2048];
    let n = theirs.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &f[..]);
    theirs.send(&test_frame(A, B, 10, 64)).unwrap();
    assert_eq!(recv_from(&mut plug, B), test_frame(A, B, 10, 64));
    drop(theirs);
    let err = plug.recv_timeout(&mut buf, Some(T)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    // A descriptor that is not a seqpacket socket is refused.
    let err = filo_vnl::open("seqpacket://0").unwrap_err().to_string();
    assert!(
        err.contains("not a SOCK_SEQPACKET") || err.contains("not usable"),
        "{err}"
    );
}

fn socketpair_seqpacket() -> (std::os::fd::OwnedFd, UnixDatagram) {
    let (ours, theirs) = filo_vnl::sys::seqpacket_pair(false).expect("socketpair");
    // A seqpacket socket is driven like a datagram socket for send/recv.
    (ours, UnixDatagram::from(theirs))
}

#[test]
fn vxvde_between_filo_and_debian_vde_plug_in_two_namespaces() {
    let ns1 = Netns::new("filo-vx1");
    let ns2 = Netns::new("filo-vx2");
    let (v1, v2) = veth(&ns1, "10.94.0.1/24", &ns2, "10.94.0.2/24");
    ns1.exec_ok(&["ip", "route", "add", "224.0.0.0/4", "dev", &v1]);
    ns2.exec_ok(&["ip", "route", "add", "224.0.0.0/4", "dev", &v2]);
    let mut c = ns1.command(FILO);
    c.args(["plug", "vxvde://239.0.0.1/vni=7"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut filo = Proc::spawn(&mut c);
    let filo_rx = record_reader(filo.child.stdout.take().unwrap());
    let mut filo_tx = filo.child.stdin.take().unwrap();
    let (_deb, deb_rx, mut deb_tx) = deb_stream(Some(&ns2), "vxvde://239.0.0.1/vni=7");
    let f = test_frame(BCAST, A, 11, 1400);
    send_until_seen(
        &mut |f| filo_tx.write_all(&stream_record(f)).unwrap(),
        &deb_rx,
        &f,
    );
    // Unicast back to A: vde_plug learned A's address from the multicast frame.
    let g = test_frame(A, B, 12, 200);
    deb_tx.write_all(&stream_record(&g)).unwrap();
    assert_eq!(expect_frame(&filo_rx, T, |x| x[6..12] == B), g);
    // And filo learned B: a unicast frame to B arrives.
    let h = test_frame(B, A, 13, 300);
    filo_tx.write_all(&stream_record(&h)).unwrap();
    assert_eq!(expect_frame(&deb_rx, T, |x| x[6..12] == A), h);
}

#[test]
fn vxlan_interoperates_with_a_linux_kernel_vxlan_device() {
    for p in ["ping", "curl", "python3"] {
        require(p);
    }
    let ns1 = Netns::new("filo-kx1");
    let ns2 = Netns::new("filo-kx2");
    let (v1, v2) = veth(&ns1, "10.95.0.1/24", &ns2, "10.95.0.2/24");
    ns1.exec_ok(&[
        "ip",
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "group",
        "239.0.0.1",
        "dstport",
        "4789",
        "dev",
        &v1,
        "ttl",
        "1",
    ]);
    ns1.exec_ok(&["ip", "addr", "add", "10.96.0.1/24", "dev", "vx0"]);
    ns1.exec_ok(&["ip", "link", "set", "vx0", "up"]);
    ns2.exec_ok(&["ip", "route", "add", "224.0.0.0/4", "dev", &v2]);
    ns2.tap(&["10.96.0.2/24"]);
    let vnl = format!("vxlan://239.0.0.1/vni=42/if={v2}");
    let plug = ns2.plug_tap(&[FILO, "plug"], &vnl);
    std::thread::sleep(Duration::from_millis(300));
    ns2.exec_ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.96.0.1"]);
    ns1.exec_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.96.0.2"]);
    // The kernel learned our MAC behind the plug's host.
    let fdb = ns1.exec_ok(&["bridge", "fdb", "show", "dev", "vx0"]);
    assert!(fdb.contains("dst 10.95.0.2"), "{fdb}");

    // TCP, whose segments vx0 sends with their checksums left to the offload (over a veth
    // nothing completes them): curl behind the plug's tap fetches from a server on vx0 ...
    let tmp = TempDir::new("filo-kx");
    let page: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(tmp.join("page.bin"), &page).unwrap();
    let mut py = ns1.command("python3");
    py.args(["-m", "http.server", "--bind", "10.96.0.1", "8000", "-d"])
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _py = Proc::spawn(&mut py);
    let fetch = |ns: &Netns, url: &str, out: &str| {
        let out = tmp.join(out);
        assert!(
            ns.curl_until(url, &out, Duration::from_secs(15)),
            "curl {url} failed"
        );
        assert!(
            std::fs::read(&out).unwrap() == page,
            "{url}: content differs"
        );
    };
    fetch(&ns2, "http://10.96.0.1:8000/page.bin", "got-tap");
    // ... and curl on vx0 fetches from a filo stack on vxlan:// (the plug gives it the port).
    drop(plug);
    let mut c = ns2.command(FILO);
    c.args(["stack", "http-serve", "--vnl", &vnl])
        .args(["--conf", "eth,ip=10.96.0.3/24", "-p", "8080"])
        .arg(tmp.path())
        .stdout(Stdio::null());
    let _server = Proc::spawn(&mut c);
    fetch(&ns1, "http://10.96.0.3:8080/page.bin", "got-stack");
}
