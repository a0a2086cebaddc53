//! DHCPv4 for `filo ns --dhcp`: filo's one DHCP client core ([`filo_dhcp::Client`], shared
//! with filo-stack) driven on a UDP socket bound to one interface. Replies are asked for by
//! broadcast (the BROADCAST flag), so a plain UDP socket receives them before the interface
//! has an address.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

pub use filo_dhcp::Lease;
use filo_dhcp::{Client, Event, Outgoing};

use crate::sys;

/// Runs DHCP on `ifname` (in the calling thread's network namespace) until a lease or
/// `timeout`; `hostname` is offered to the server (option 12) when given.
pub fn acquire(ifname: &str, hostname: Option<&str>, timeout: Duration) -> io::Result<Lease> {
    let mac = sys::hw_addr(ifname)?;
    let origin = Instant::now();
    let clock = || filo_dhcp::Instant::from_millis(origin.elapsed().as_millis() as u64);
    let mut client = Client::new(
        mac,
        hostname.map(str::to_string),
        clock(),
        std::process::id(),
    );
    let sock = sys::dhcp_socket(ifname, Duration::from_millis(100))?;
    let send = |out: &Outgoing| -> io::Result<()> {
        // Before a lease every message is a broadcast; renewals (unicast) do not happen here.
        sock.send_to(
            out.udp_payload(),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, filo_dhcp::SERVER_PORT),
        )
        .map(|_| ())
    };
    let deadline = origin + timeout;
    let mut buf = vec![0u8; 1500];
    while Instant::now() < deadline {
        let (out, event) = client.poll(clock());
        if let Some(o) = out {
            send(&o)?;
        }
        if let Some(Event::Configured(lease)) = event {
            return Ok(lease);
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                if let Some((out, event)) = client.handle(clock(), &buf[..n]) {
                    if let Some(o) = out {
                        send(&o)?;
                    }
                    if let Some(Event::Configured(lease)) = event {
                        return Ok(lease);
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no DHCP lease on {ifname} within {}s", timeout.as_secs()),
    ))
}
