//! Fuzz the router core with arbitrary frames on its two interfaces, with the DHCP server,
//! router advertisements, masquerade and a filter on: no panic, every frame out leaves on an
//! existing interface from that interface's MAC, and IPv4 headers it writes are checksummed.
#![no_main]

use std::time::{Duration, Instant};

use filo_router::core::IfaceConfig;
use filo_router::{HookPoint, Router};
use libfuzzer_sys::fuzz_target;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, Ipv4Packet};

const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 0xa0], [2, 0, 0, 0, 0, 0xa1]];

fn router(t0: Instant) -> Router {
    let mut r = Router::new(t0);
    let mut c0 = IfaceConfig::new("vde0", MACS[0]);
    c0.addrs = vec![
        ("10.1.0.1".parse().unwrap(), 24),
        ("fd01::1".parse().unwrap(), 64),
    ];
    let mut c1 = IfaceConfig::new("vde1", MACS[1]);
    c1.addrs = vec![
        ("10.9.0.2".parse().unwrap(), 24),
        ("fd09::2".parse().unwrap(), 64),
    ];
    c1.mtu = 1280;
    r.add_iface(c0).unwrap();
    r.add_iface(c1).unwrap();
    r.add_route("0.0.0.0/0".parse().unwrap(), "10.9.0.1".parse().unwrap())
        .unwrap();
    let dhcp = filo_dhcp::server::Config::new(
        "10.1.0.1".parse().unwrap(),
        24,
        "10.1.0.100".parse().unwrap(),
        "10.1.0.109".parse().unwrap(),
    );
    r.set_dhcp_server(0, dhcp).unwrap();
    r.set_advertiser(t0, 0, None).unwrap();
    let mut f = filo_router::filter::Filter::new(vec!["vde0".into(), "vde1".into()]);
    f.load("accept state established,related\nreject in vde0 proto tcp dport 23\ndrop in vde1 state new\n")
        .unwrap();
    r.add_hook(&[HookPoint::Forward, HookPoint::Input], Box::new(f));
    let nat = filo_router::nat::Config::new(1, "10.9.0.2".parse().unwrap());
    r.add_hook(
        &[HookPoint::Prerouting, HookPoint::Postrouting],
        Box::new(filo_router::nat::Masquerade::new(nat)),
    );
    r
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut r = router(t0);
    let mut rest = data;
    let mut i = 0u64;
    // Each frame: one byte interface (low bit), two bytes length, the frame.
    while let [iface, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        i += 1;
        let now = t0 + Duration::from_millis(i * 97);
        r.handle_frame(now, usize::from(iface & 1), frame);
        r.handle_timeout(now);
        while let Some((out, f)) = r.poll_transmit() {
            assert!(out < 2, "frame out on interface {out}");
            let e = EthernetFrame::new_checked(&f[..]).expect("a whole Ethernet frame");
            assert_eq!(e.src_addr().0, MACS[out], "sent from another MAC");
            if e.ethertype() == EthernetProtocol::Ipv4 {
                let p = Ipv4Packet::new_checked(e.payload()).expect("a whole IPv4 header");
                assert!(p.verify_checksum(), "bad IPv4 header checksum");
            }
        }
    }
});
