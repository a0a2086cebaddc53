//! Fuzz the DHCP client with what a server (or anyone on the link) can send: replies built
//! around the client's own transaction id, MAC and magic cookie (so the option parser and the
//! state machine are reached), raw payloads, and time passing. No panic, and a lease the
//! client reports is one it holds.
#![no_main]

use filo_dhcp::{Client, Event, Instant};
use libfuzzer_sys::fuzz_target;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];

fuzz_target!(|data: &[u8]| {
    let _ = filo_dhcp::dhcp_payload(data);
    let mut now = Instant::from_secs(1);
    let mut client = Client::new(MAC, Some("fuzz".to_string()), now, 0x5eed);
    let mut xid = [0u8; 4];
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let result = if op & 1 == 0 {
            // Time passes: up to ~4 minutes per step, so renewal, rebinding and expiry happen.
            now = Instant::from_millis(now.total_millis() + u64::from(op) * 997);
            Some(client.poll(now))
        } else {
            let (body, tail) = rest.split_at(usize::from(op >> 1).min(rest.len()));
            rest = tail;
            let mut msg = vec![0u8; 240];
            msg[..3].copy_from_slice(&[2, 1, 6]);
            msg[4..8].copy_from_slice(&xid);
            if let Some(yiaddr) = body.get(..4) {
                msg[16..20].copy_from_slice(yiaddr);
            }
            msg[28..34].copy_from_slice(&MAC);
            msg[236..240].copy_from_slice(&[99, 130, 83, 99]);
            msg.extend_from_slice(body.get(4..).unwrap_or_default());
            let _ = client.handle(now, body);
            client.handle(now, &msg)
        };
        if let Some((out, event)) = result {
            if let Some(x) = out.as_ref().and_then(|o| o.udp_payload().get(4..8)) {
                xid.copy_from_slice(x);
            }
            if let Some(Event::Configured(lease)) = event {
                assert_eq!(client.lease(), Some(&lease));
                assert!(lease.prefix <= 32);
            }
        }
    }
});
