//! Fuzz the wire formats a peer controls: the vde_switch control request, the stream
//! encoding, frame trains, the VXLAN header, the virtio-net header with super-frame
//! segmentation, and completing a VXLAN frame's partial checksum. None may panic on any input,
//! and a train's records must lie within it. From the input the target also builds records
//! and a TCP super-frame, and checks what comes back: the stream decoder, fed the encoded
//! records in pieces, returns exactly the non-empty ones; a train of them reads back as
//! them; and the segments `vnet::finish` makes of the super-frame carry its payload, in
//! order and whole, each with its own sequence number, lengths and valid checksums.
#![no_main]

use filo_vnl::wire::{partial, stream, train, vde_request, vnet, vxlan};
use libfuzzer_sys::fuzz_target;
use smoltcp::wire::{IpAddress, Ipv4Packet, Ipv6Packet, TcpPacket};

fuzz_target!(|data: &[u8]| {
    let _ = vde_request::Request::parse(data);
    let _ = vxlan::Packet::new_checked(data).map(|p| (p.vni(), p.payload().len()));
    // Completing is done at most once: a completed frame is left as it is.
    let mut frame = data.to_vec();
    if partial::complete(&mut frame) {
        let done = frame.clone();
        assert!(!partial::complete(&mut frame) || frame == done);
    }
    if let Ok(hdr) = vnet::Header::parse(data) {
        let mut scratch = Vec::new();
        let _ = vnet::finish(&hdr, &data[vnet::HEADER_LEN..], &mut scratch, |_| {});
    }
    built_records_round_trip(data);
    if let Some(frame) = SuperFrame::build(data) {
        frame.check_segments();
    }
    let mut covered = 0usize;
    for record in train::records(data) {
        match record {
            Ok(frame) => covered += train::RECORD_HEADER_LEN + frame.len(),
            Err(_) => break,
        }
    }
    assert!(covered <= data.len());
    let mut dec = stream::Decoder::new();
    for chunk in data.chunks(7) {
        dec.feed(chunk);
        loop {
            // has_frame() says exactly whether next_frame() has a frame or an error to give.
            let promised = dec.has_frame();
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    assert!(promised);
                    assert!(!frame.is_empty() && frame.len() <= stream::MAX_RECORD);
                }
                Ok(None) => {
                    assert!(!promised);
                    break;
                }
                Err(_) => {
                    assert!(promised);
                    return;
                }
            }
        }
    }
    let _ = dec.finish();
});

/// The input cut into records: a length byte, then that many bytes (zero-length ones too).
fn records_of(data: &[u8]) -> Vec<&[u8]> {
    let mut records = Vec::new();
    let mut rest = data.get(1..).unwrap_or_default();
    while let [len, tail @ ..] = rest {
        let (record, next) = tail.split_at(usize::from(*len).min(tail.len()));
        records.push(record);
        rest = next;
    }
    records
}

/// Records built from the input come back from the stream decoder, fed in pieces of a size
/// the input chooses, and from a train.
fn built_records_round_trip(data: &[u8]) {
    let records = records_of(data);
    let wanted: Vec<&[u8]> = records.iter().copied().filter(|r| !r.is_empty()).collect();
    let mut encoded = Vec::new();
    for r in &records {
        let header = stream::encode_header(r.len()).expect("a record of at most 255 bytes");
        encoded.extend_from_slice(&header);
        encoded.extend_from_slice(r);
    }
    let piece = usize::from(data.first().copied().unwrap_or(0) % 16) + 1;
    let mut dec = stream::Decoder::new();
    let mut decoded: Vec<Vec<u8>> = Vec::new();
    for chunk in encoded.chunks(piece) {
        dec.feed(chunk);
        while let Some(frame) = dec.next_frame().expect("well-formed stream") {
            decoded.push(frame.to_vec());
        }
    }
    assert_eq!(
        decoded, wanted,
        "stream decoder: records differ from those encoded"
    );
    assert_eq!(dec.finish(), Ok(()));
    assert_eq!(dec.buffered(), 0);

    let mut datagram = Vec::new();
    for r in wanted.iter().take(train::MAX_RECORDS) {
        datagram.extend_from_slice(&train::record_header(r.len()));
        datagram.extend_from_slice(r);
    }
    let mut read = train::records(&datagram);
    let back: Vec<&[u8]> = read
        .by_ref()
        .map(|r| r.expect("a well-formed train"))
        .collect();
    assert_eq!(
        back[..],
        wanted[..wanted.len().min(train::MAX_RECORDS)],
        "train records"
    );
    assert_eq!(read.position(), datagram.len());
}

/// A TCP segment in an Ethernet frame (IPv4 or IPv6, tagged or not, with IP and TCP
/// options) whose payload is the input, and the MTU to send it over.
struct SuperFrame {
    frame: Vec<u8>,
    ip: usize,
    v6: bool,
    /// Where the TCP header and the payload start.
    tcp: usize,
    payload: usize,
    mtu: usize,
}

impl SuperFrame {
    fn build(data: &[u8]) -> Option<SuperFrame> {
        let [sel, flags, s0, s1, s2, s3, m0, m1, payload @ ..] = data else {
            return None;
        };
        let v6 = sel & 1 == 1;
        let ip = if sel & 2 == 2 { 18 } else { 14 };
        let ip_options = if v6 {
            0
        } else {
            usize::from((sel >> 2) & 3) * 4
        };
        let tcp_options = usize::from((sel >> 4) & 7) * 4;
        let tcp = ip + if v6 { 40 } else { 20 + ip_options };
        let at = tcp + 20 + tcp_options;
        let payload = &payload[..payload.len().min(60_000)];
        let mut f = vec![0u8; at + payload.len()];
        f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
        if ip == 18 {
            f[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        }
        f[ip - 2..ip].copy_from_slice(&ethertype.to_be_bytes());
        if v6 {
            f[ip] = 0x60;
            let plen = (f.len() - ip - 40) as u16;
            f[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
            f[ip + 6] = 6;
            f[ip + 7] = 64;
            f[ip + 8] = 0xfd;
            f[ip + 23] = 1;
            f[ip + 24] = 0xfd;
            f[ip + 39] = 2;
        } else {
            f[ip] = 0x40 | (5 + ip_options / 4) as u8;
            let total = (f.len() - ip) as u16;
            f[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
            f[ip + 4..ip + 6].copy_from_slice(&[*s3, *s2]);
            f[ip + 8] = 64;
            f[ip + 9] = 6;
            f[ip + 12..ip + 16].copy_from_slice(&[10, 0, 0, 1]);
            f[ip + 16..ip + 20].copy_from_slice(&[10, 0, 0, 2]);
            f[ip + 20..tcp].fill(1); // NOP options
        }
        f[tcp..tcp + 4].copy_from_slice(&[0x04, 0xd2, 0x00, 0x50]);
        f[tcp + 4..tcp + 8].copy_from_slice(&[*s0, *s1, *s2, *s3]);
        f[tcp + 8..tcp + 12].copy_from_slice(&[0, 0, 0, 1]);
        f[tcp + 12] = (((20 + tcp_options) / 4) << 4) as u8;
        f[tcp + 13] = *flags;
        f[tcp + 14..tcp + 16].copy_from_slice(&[0xff, 0xff]);
        f[tcp + 20..at].fill(1);
        f[at..].copy_from_slice(payload);
        let mtu = 128 + usize::from(u16::from_be_bytes([*m0, *m1])) % 1400;
        Some(SuperFrame {
            frame: f,
            ip,
            v6,
            tcp,
            payload: at,
            mtu,
        })
    }

    /// What `vnet::finish` makes of the frame under `vnet::header_for`'s header.
    fn check_segments(&self) {
        let f = &self.frame;
        let hdr = vnet::header_for(f, self.mtu);
        let mut segments: Vec<Vec<u8>> = Vec::new();
        let mut scratch = Vec::new();
        vnet::finish(&hdr, f, &mut scratch, |seg| segments.push(seg.to_vec()))
            .expect("a well-formed super-frame");
        if f.len() <= 14 + self.mtu {
            assert!(
                hdr.is_plain(),
                "a frame within the MTU needs no segmentation"
            );
            assert_eq!(
                segments,
                std::slice::from_ref(f),
                "a plain frame goes as it is"
            );
            return;
        }
        let gso = if self.v6 {
            vnet::GSO_TCPV6
        } else {
            vnet::GSO_TCPV4
        };
        assert_eq!(
            (hdr.gso_type, usize::from(hdr.hdr_len)),
            (gso, self.payload)
        );
        let mss = usize::from(hdr.gso_size);
        let (ip, tcp, at) = (self.ip, self.tcp, self.payload);
        let seq0 = u32::from_be_bytes([f[tcp + 4], f[tcp + 5], f[tcp + 6], f[tcp + 7]]);
        let last = segments.len() - 1;
        let mut carried = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            let data = &seg[at..];
            assert!(!data.is_empty() || f.len() == at, "segment {i} is empty");
            assert!(
                data.len() <= mss,
                "segment {i}: {} bytes, MSS {mss}",
                data.len()
            );
            if at - ip < self.mtu {
                assert!(seg.len() - ip <= self.mtu, "segment {i} exceeds the MTU");
            }
            let seq = u32::from_be_bytes([seg[tcp + 4], seg[tcp + 5], seg[tcp + 6], seg[tcp + 7]]);
            assert_eq!(
                seq,
                seq0.wrapping_add(carried.len() as u32),
                "segment {i}'s sequence"
            );
            carried.extend_from_slice(data);
            // FIN and PSH on the last segment only, CWR on the first only.
            let mut flags = f[tcp + 13];
            if i != last {
                flags &= !0x09;
            }
            if i != 0 {
                flags &= !0x80;
            }
            assert_eq!(seg[tcp + 13], flags, "segment {i}'s TCP flags");
            // Everything else in the headers is the super-frame's but lengths, IPv4 id and
            // checksums.
            let mut mine = seg[..at].to_vec();
            let mut theirs = f[..at].to_vec();
            let varying: &[usize] = if self.v6 {
                &[ip + 4, ip + 5]
            } else {
                &[ip + 2, ip + 3, ip + 4, ip + 5, ip + 10, ip + 11]
            };
            for &b in varying
                .iter()
                .chain(&[tcp + 4, tcp + 5, tcp + 6, tcp + 7, tcp + 13])
            {
                mine[b] = 0;
                theirs[b] = 0;
            }
            for b in [tcp + 16, tcp + 17] {
                mine[b] = 0;
                theirs[b] = 0;
            }
            assert_eq!(mine, theirs, "segment {i}'s headers");
            let (src, dst): (IpAddress, IpAddress) = if self.v6 {
                let p = Ipv6Packet::new_checked(&seg[ip..])
                    .unwrap_or_else(|e| panic!("segment {i}: {e}"));
                assert_eq!(usize::from(p.payload_len()), seg.len() - ip - 40);
                (p.src_addr().into(), p.dst_addr().into())
            } else {
                let p = Ipv4Packet::new_checked(&seg[ip..])
                    .unwrap_or_else(|e| panic!("segment {i}: {e}"));
                assert_eq!(usize::from(p.total_len()), seg.len() - ip);
                assert!(p.verify_checksum(), "segment {i}'s IPv4 checksum");
                let id0 = u16::from_be_bytes([f[ip + 4], f[ip + 5]]);
                assert_eq!(
                    p.ident(),
                    id0.wrapping_add(i as u16),
                    "segment {i}'s IPv4 id"
                );
                (p.src_addr().into(), p.dst_addr().into())
            };
            let t =
                TcpPacket::new_checked(&seg[tcp..]).unwrap_or_else(|e| panic!("segment {i}: {e}"));
            assert!(t.verify_checksum(&src, &dst), "segment {i}'s TCP checksum");
        }
        assert_eq!(
            carried,
            f[at..],
            "the segments' payloads are not the super-frame's"
        );
    }
}
