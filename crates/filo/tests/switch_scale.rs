//! A switch with many clients: what a lab of hundreds of nodes on one switch needs (flooded
//! frames reach each receiver in few sends; more clients than the descriptor limit the
//! switch was started with; a clear refusal, never a stall, when it is out of descriptors).

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;
use filo_vnl::wire::vde_request::{self, PortRequest};

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(5);

/// A hand-made client on port `port` that asks for frame trains; returns its data socket
/// (connected to the switch's) and its control connection.
fn train_client(sw: &FiloSwitch, tmp: &TempDir, name: &str) -> (UnixDatagram, UnixStream) {
    let path = tmp.join(name);
    let data = UnixDatagram::bind(&path).unwrap();
    let mut req = [0u8; vde_request::V3_HEADER_LEN + vde_request::MAX_DESCRIPTION];
    let n = vde_request::emit_request_v3(
        PortRequest::Any,
        &path,
        "test user=root pid=1 +train",
        &mut req,
    )
    .unwrap();
    let mut ctl = UnixStream::connect(sw.dir.join("ctl")).unwrap();
    ctl.write_all(&req[..n]).unwrap();
    ctl.set_read_timeout(Some(T)).unwrap();
    let mut reply = vec![0u8; vde_request::REPLY_LEN];
    ctl.read_exact(&mut reply).unwrap();
    let sw_path = vde_request::parse_sockaddr(&reply).unwrap();
    assert!(sw_path.to_string_lossy().ends_with(".train"), "{sw_path:?}");
    data.connect(&sw_path).unwrap();
    (data, ctl)
}

#[test]
fn frames_from_many_ports_read_in_one_turn_reach_a_receiver_as_one_train() {
    let tmp = TempDir::new("filo-ssc1");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let (receiver, _ctl) = train_client(&sw, &tmp, "rx");
    const SENDERS: u32 = 20;
    let mut senders: Vec<_> = (0..SENDERS)
        .map(|_| filo_vnl::open(&sw.vnl()).expect("plug"))
        .collect();
    // The switch is stopped while every sender sends one broadcast: when it runs again, one
    // loop turn finds all of them waiting.
    let pid = sw.proc.pid() as libc::pid_t;
    sys::kill(pid, libc::SIGSTOP);
    for (i, s) in senders.iter_mut().enumerate() {
        let src = [0x02, 0, 0, 0, 1, i as u8];
        s.send_timeout(&test_frame([0xff; 6], src, i as u32, 80), Some(T))
            .unwrap();
    }
    sys::kill(pid, libc::SIGCONT);
    receiver.set_read_timeout(Some(T)).unwrap();
    let mut buf = vec![0u8; 1 << 17];
    let (mut frames, mut datagrams) = (0, 0);
    while frames < SENDERS {
        let n = receiver.recv(&mut buf).expect("the flooded frames arrive");
        datagrams += 1;
        for record in filo_vnl::wire::train::records(&buf[..n]) {
            assert_eq!(record.expect("a well-formed train").len(), 80);
            frames += 1;
        }
    }
    assert_eq!(frames, SENDERS);
    // One send per receiver and turn, not one per frame (which was 20 datagrams).
    assert!(
        datagrams <= 2,
        "{SENDERS} frames read in one turn came in {datagrams} datagrams"
    );
}

/// A descriptor limit for process `pid` that leaves it `free` unused descriptor numbers below
/// it (the kernel hands out the lowest free number below the limit). Tests must not assume a
/// fixed count: the test runner may leave descriptors open that every child inherits.
fn limit_leaving(pid: u32, free: usize) -> usize {
    let open: Vec<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("the descriptors of {pid}: {e}"))
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let below = |limit: usize| open.iter().filter(|&&fd| fd < limit).count();
    let mut limit = free;
    while below(limit) + free > limit {
        limit = below(limit) + free;
    }
    limit
}

/// `filo switch` started by sh with `ulimit` options first (soft/hard descriptor limits).
fn switch_with_limits(tmp: &TempDir, ulimit: &str) -> FiloSwitch {
    let dir = tmp.join("sw");
    let mgmt = tmp.join("sw.mgmt");
    let log = std::fs::File::create(tmp.join("sw.log")).unwrap();
    let proc = Proc::spawn(
        Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
            .arg(FILO)
            .arg("switch")
            .arg(&dir)
            .arg("-M")
            .arg(&mgmt)
            .arg("--nostdin")
            .args(["-n", "400"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    );
    assert!(
        wait_until(T, || mgmt.exists() && dir.join("ctl").exists()),
        "filo switch did not start"
    );
    FiloSwitch { dir, mgmt, proc }
}

#[test]
fn a_switch_started_with_a_low_soft_descriptor_limit_takes_more_clients() {
    let hard: u64 = run(Command::new("sh").args(["-c", "ulimit -Hn"]))
        .trim()
        .parse()
        .unwrap_or(0);
    if hard < 1024 {
        return skip("the hard descriptor limit is below 1024");
    }
    let tmp = TempDir::new("filo-ssc2");
    // A soft limit leaving 50 descriptors would do for about 25 clients (two each). Counted
    // from this process's descriptors, which the switch may inherit.
    let soft = limit_leaving(std::process::id(), 50);
    let sw = switch_with_limits(&tmp, &format!("-Sn {soft}"));
    // Two descriptors each: more clients than the soft limit would allow.
    let clients: Vec<_> = (0..soft.max(150))
        .map(|i| {
            filo_vnl::open(&sw.vnl()).unwrap_or_else(|e| panic!("client {i} was not taken: {e}"))
        })
        .collect();
    assert_eq!(sw.endpoints(), clients.len());
}

#[test]
fn a_switch_out_of_descriptors_refuses_clients_at_once_and_counts_them() {
    require("prlimit");
    let tmp = TempDir::new("filo-ssc3");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["-n", "400"]);
    // A running switch gets a limit that leaves it 40 free descriptor numbers: enough for
    // about 20 clients. Counted, not fixed: the switch inherits whatever descriptors the test
    // runner left open (under CI a fixed limit of 48 left it none, and every client waited
    // for its timeout), and the kernel hands out the lowest free number below the limit.
    let limit = limit_leaving(sw.proc.pid(), 40);
    run(Command::new("prlimit")
        .arg(format!("--pid={}", sw.proc.pid()))
        .arg(format!("--nofile={limit}:{limit}")));
    let mut clients = Vec::new();
    let refusal = loop {
        assert!(
            clients.len() < 40,
            "40 clients taken with 40 spare descriptors"
        );
        match filo_vnl::open(&sw.vnl()) {
            Ok(c) => clients.push(c),
            Err(e) => break e.to_string(),
        }
    };
    // Refused: the connection closed without an answer, not left waiting until the client's
    // timeout ("did not answer within 5s").
    assert!(
        refusal.contains("closed the connection without a reply"),
        "{refusal}"
    );
    // And the next one too: the switch took its spare descriptor back after the first
    // refusal (its sandbox refused the eventfd it takes it back with, and every later client
    // waited for its timeout).
    let again = filo_vnl::open(&sw.vnl())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        again.contains("closed the connection without a reply"),
        "{again}"
    );
    clients.truncate(clients.len() / 2);
    assert!(
        wait_until(T, || sw.endpoints() == clients.len()),
        "the switch did not see the clients go"
    );
    let info = sw.console("showinfo");
    assert!(
        info.contains("2 clients refused: out of file descriptors"),
        "{info}"
    );
    filo_vnl::open(&sw.vnl()).expect("a client once descriptors are free again");
}
