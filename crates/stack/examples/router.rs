//! A router in one thread: a filo stack between a LAN and a WAN, built from Rust. On the LAN
//! it serves DHCPv4 and router advertisements (SLAAC, with the stack as DNS server in them
//! only if one is given); on the WAN it masquerades the LAN, IPv4 and IPv6 (NAT66), behind
//! whatever address the WAN gives it (a static one, or DHCP's and SLAAC's).
//!
//! `cargo run -p filo-stack --example router -- LAN_VNL WAN_VNL [WAN_CONF]`
//!
//! e.g. `router vde:///tmp/lan vde:///tmp/wan ip=10.9.0.2/24,gw=10.9.0.1` (WAN_CONF defaults
//! to `dhcp,slaac`). The LAN side is 192.168.7.1/24 and fd07::1/64; leases go to
//! 192.168.7.100-199. Every ten seconds it prints the leases and the NAT table.

use std::time::Duration;

use filo_stack::{DhcpServer, RouterAdverts, Stack};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: router LAN_VNL WAN_VNL [WAN_CONF]";
    let lan = args.next().ok_or(usage)?;
    let wan = args.next().ok_or(usage)?;
    let wan_conf = args.next().unwrap_or_else(|| "dhcp,slaac".into());
    let router = Stack::builder()
        .name("router")
        .interface(lan, "ip=192.168.7.1/24,ip=fd07::1/64")
        .interface(wan, wan_conf)
        .forwarding(true)
        .dhcp_server(
            0,
            DhcpServer::new("192.168.7.100".parse()?, "192.168.7.199".parse()?)
                .dns("9.9.9.9".parse()?),
        )
        .router_adverts(0, RouterAdverts::new())
        .masquerade(1)
        .rp_filter(true)
        .build()?;
    loop {
        std::thread::sleep(Duration::from_secs(10));
        for l in router.lease_print() {
            println!("lease {l}");
        }
        for l in router.hook_print("nat").unwrap_or_default() {
            println!("nat {l}");
        }
    }
}
