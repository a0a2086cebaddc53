//! A `slirp://` plug handed the other side of its cable ([`filo_vnl::Plug::serve`], what
//! `filo ns` does with its tap) runs the gateway on the caller's thread with that plug as the
//! guest's: no gateway thread, no socket pair in between. One test per file: it counts the
//! process's threads.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use filo_vnl::transport::dgram::{ConnectedDgram, Refused};
use filo_vnl::{OpenOptions, Plug};

const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x15];

fn dgram(fd: OwnedFd, vnet: bool) -> Box<Plug> {
    let t = ConnectedDgram::new(fd, None, Refused::Fatal, true, "test")
        .unwrap()
        .with_vnet(vnet);
    Box::new(Plug::from_transport("guest", Box::new(t)))
}

/// Who has 10.0.2.2? from 10.0.2.15.
fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[10, 0, 2, 15, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2]);
    f
}

fn gateway_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with("filo-slirp"))
        .collect()
}

#[test]
fn a_slirp_plug_serves_the_other_side_of_its_cable_on_the_callers_thread() {
    let mut plug = filo_slirp::open_plug(&OpenOptions::default(), "slirp://").unwrap();

    // A peer with other framing (virtio-net headers) is given back: a cable converts.
    let (a, _b) = filo_vnl::sys::seqpacket_pair(true).unwrap();
    let never = AtomicBool::new(false);
    assert!(plug.serve(dgram(a, true), &never).is_err());

    let (a, b) = filo_vnl::sys::seqpacket_pair(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let server = std::thread::spawn(move || {
        let served = plug.serve(dgram(a, false), &s);
        (plug, served.map_err(|_| "refused"))
    });
    let mut guest = dgram(b, false);
    guest.send(&arp_request()).unwrap();
    // The gateway may speak first (router advertisements): the first ARP frame is the answer.
    let mut buf = vec![0; 2048];
    let reply = loop {
        let n = guest
            .recv_timeout(&mut buf, Some(Duration::from_secs(20)))
            .unwrap();
        if buf[12..14] == [0x08, 0x06] {
            break &buf[..n];
        }
    };
    assert_eq!(&reply[..6], &GUEST_MAC, "{reply:?}");
    assert_eq!(&reply[20..22], &[0, 2], "not a reply: {reply:?}");
    assert_eq!(&reply[28..32], &[10, 0, 2, 2], "{reply:?}");
    assert_eq!(gateway_threads(), Vec::<String>::new());

    stop.store(true, Ordering::Relaxed);
    let (mut plug, served) = server.join().unwrap();
    served.unwrap().unwrap();
    // The gateway has gone to the first peer: a second one is given back.
    let (c, _d) = filo_vnl::sys::seqpacket_pair(true).unwrap();
    assert!(plug.serve(dgram(c, false), &never).is_err());
}
