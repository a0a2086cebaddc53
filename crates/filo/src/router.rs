//! `filo router`: an IPv4/IPv6 router between VNLs (filo-router's core on plugs), with a
//! DHCPv4 server and router advertisements on chosen interfaces.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use filo_router::core::IfaceConfig;
use filo_router::daemon::{Daemon, End};
use filo_router::{HookPoint, Prefix, Router};
use filo_vnl::iothconf::IothConf;
use filo_vnl::OpenOptions;

use crate::sys;

/// A router between virtual networks: IPv4 and IPv6 forwarding, ARP/NDP, ICMP errors
/// (time exceeded, unreachable, fragmentation needed / packet too big), a DHCPv4 server and
/// router advertisements.
#[derive(Args, Debug)]
#[command(after_long_help = "\
Interfaces are vde0, vde1, ... in the order of --vnl; the Nth --conf configures the Nth --vnl
(iothconf items: ip=ADDR/LEN (repeatable), gw=ADDR (a default route), mtu=N, mac=MAC, dns=ADDR
and domain=NAME (handed out by the DHCP server; IPv6 ones by stateless DHCPv6 with --radv)). Each address makes a connected route.

The router answers ping on its addresses, sends no redirects, decrements TTL / hop limit and
answers expired, unroutable and too-big packets with ICMP errors, so traceroute, tracepath and
path-MTU discovery work through it. --masquerade IFACE translates what leaves on IFACE to
the router's address there, IPv4 and IPv6 (NAT66; TCP, UDP, ICMP echo; ICMP errors about
those are translated both ways); --snat IFACE=ADDR does the same to a chosen address of
IFACE. A packet whose source is routed out of another interface than the one it came in on
is dropped and counted (stat: rp_filter) with --rp-filter.
--forward IFACE:PROTO:PORT=ADDR[:PORT] sends TCP or UDP arriving for the router's address
on IFACE at PORT to ADDR:PORT (a port forward; an IPv6 ADDR in brackets, [fd01::50]:80,
forwards what arrives for the router's first global IPv6 address there); replies leave from
the router's address and PORT, ICMP errors about it are translated both ways. nat/print lists
the forwards and their connections; the console's fwd/add and fwd/del take the same
IFACE:PROTO:PORT=ADDR[:PORT] at run time (on an interface with NAT already: --masquerade,
--snat or --forward), fwd/print lists them so. IPv6 extension headers (hop-by-hop, routing,
destination options, fragment) are walked to the ports; a chain cut short, out of order or
longer than 8 headers is dropped and counted (nat/print: ext_truncated, ext_too_long,
ext_misordered). A fragmented datagram's later fragments are translated as its first one
was; one arriving before its first (a reordering link) is held until the first went by
(at most 256 fragments and 1 MiB in all, 64 per datagram, 30 s; beyond, dropped and
counted: stat fragment_hold_full, fragment_hold_timeout).
--nptv6 IFACE=INTERNAL/LEN=EXTERNAL/LEN translates IPv6 prefixes statelessly (RFC 6296; the
headers quoted in ICMPv6 errors too).
FILTER RULES (--filter FILE, one a line, # comments; console filter/add RULE,
filter/insert N RULE, filter/del N):
  [forward|input] accept|drop|reject [in IFACE] [out IFACE] [from PREFIX] [to PREFIX]
      [proto tcp|udp|icmp|icmpv6|N] [sport N[-M]] [dport N[-M]] [type N]
      [state new|established|related[,...]]
The first rule that matches decides; no match accepts. forward (the default) sees forwarded
packets, input those for the router. reject answers TCP with a reset, the rest with ICMP
administratively prohibited. Each rule counts packets and bytes (filter/print). E.g.:
  accept state established,related
  reject in vde1 proto tcp dport 23
  drop in vde1 state new

With -M, `filo console SOCK CMD` runs help, iface/print, route/print, neigh/print,
leases/print, nat/print, fwd/print|add|del, filter/print|add|insert|del and stat (drop
counters by reason); add --json for JSON.

EXAMPLES:
  filo router --vnl vde:///tmp/lan --conf ip=10.1.0.1/24,ip=fd01::1/64 \\
              --vnl vde:///tmp/wan --conf ip=10.9.0.2/24,gw=10.9.0.1 \\
              --dhcp-server vde0=10.1.0.100-10.1.0.199 --radv vde0 -M /tmp/r.mgmt -d
  filo router --vnl vde:///tmp/a --conf ip=10.1.0.1/24 --vnl vde:///tmp/b --conf ip=10.2.0.1/24,mtu=1400 \\
              --route 10.3.0.0/16 via 10.2.0.9
  filo router --vnl vde:///tmp/lan --conf ip=192.168.7.1/24 --vnl vde:///tmp/wan \\
              --conf ip=10.9.0.2/24,gw=10.9.0.1 --masquerade vde1 -M /tmp/r.mgmt \\
              --forward vde1:tcp:8080=192.168.7.50:80 --forward vde1:udp:5353=192.168.7.50:53
  filo router --vnl vde:///tmp/lan --conf ip=fd07::1/64 --vnl vde:///tmp/wan --conf ip=fd09::2/64 \\
              --forward 'vde1:tcp:8080=[fd07::50]:80'
  filo router --vnl vde:///tmp/lan --conf ip=192.168.7.1/24,ip=fd07::1/64 --rp-filter \\
              --vnl vde:///tmp/wan --conf ip=10.9.0.2/24,ip=10.9.0.5/24,ip=fd09::2/64,gw=10.9.0.1 \\
              --snat vde1=10.9.0.5 --dhcp-server vde0=192.168.7.100-192.168.7.199 \\
              --dhcp-host vde0=02:00:00:00:00:10=192.168.7.10
  filo console --json /tmp/r.mgmt route/print")]
pub struct RouterArgs {
    /// A network to route on (repeatable): interface vde0, vde1, ... in order. On vde://,
    /// ipn:// (created with vnet) and tap:// (as root; a tap can then be moved into a
    /// namespace with `ip link set TAP netns NS`) TCP super-frames pass as one packet.
    #[arg(long = "vnl", value_name = "VNL", required = true)]
    vnls: Vec<String>,
    /// The configuration of the interface of the same rank (ip=ADDR/LEN,gw=ADDR,mtu=N,...).
    #[arg(long = "conf", value_name = "CONF", value_parser = IothConf::parse)]
    confs: Vec<IothConf>,
    /// A static route: PREFIX via ADDR (repeatable), e.g. --route 10.3.0.0/16 via 10.2.0.9.
    #[arg(long, num_args = 3, value_names = ["PREFIX", "via", "ADDR"])]
    route: Vec<String>,
    /// A DHCPv4 server on an interface: IFACE=FIRST-LAST, e.g. vde0=10.1.0.100-10.1.0.199.
    #[arg(long = "dhcp-server", value_name = "IFACE=FIRST-LAST")]
    dhcp_server: Vec<String>,
    /// A static DHCP lease, IFACE=MAC=ADDR (repeatable, as dnsmasq's --dhcp-host): the
    /// client with MAC always gets ADDR (in the interface's subnet, inside the range or not;
    /// nobody else gets it), e.g. vde0=02:00:00:00:00:10=10.1.0.10.
    #[arg(long = "dhcp-host", value_name = "IFACE=MAC=ADDR")]
    dhcp_hosts: Vec<String>,
    /// Keep a DHCP server's leases in a file, IFACE=FILE: loaded at start, written when they
    /// change, so a restarted router gives clients back their addresses.
    #[arg(long = "dhcp-leases", value_name = "IFACE=FILE")]
    dhcp_leases: Vec<String>,
    /// Router advertisements on an interface (its /64 prefixes for SLAAC, its MTU); with
    /// IPv6 dns= in its --conf also stateless DHCPv6 (DNS servers, domain= as the search
    /// list) and the RAs' O flag.
    #[arg(long, value_name = "IFACE")]
    radv: Vec<String>,
    /// Masquerade on an outgoing interface: what leaves there comes from the router's
    /// address on it, IPv4 and IPv6 (NAT66, to its first global IPv6 address, unless --nptv6
    /// translates there); connection tracking for TCP, UDP and ICMP echo (`nat/print`).
    #[arg(long, value_name = "IFACE")]
    masquerade: Vec<String>,
    /// Source NAT to a chosen address of an interface, IFACE=ADDR (repeatable, one IPv4 and
    /// one IPv6 per interface): a masquerade that translates to ADDR instead of the
    /// interface's first address, e.g. vde1=10.9.0.5 with ip=10.9.0.5/24 in vde1's --conf.
    #[arg(long, value_name = "IFACE=ADDR")]
    snat: Vec<String>,
    /// A port forward (DNAT) on an interface, IFACE:PROTO:PORT=ADDR[:PORT] (repeatable): TCP
    /// or UDP to the router's address there at PORT goes to ADDR (replies translated back),
    /// e.g. vde1:tcp:8080=10.1.0.50:80; an IPv6 ADDR goes in brackets and forwards the
    /// router's first global IPv6 address there, e.g. vde1:tcp:8080=[fd01::50]:80. The
    /// console's fwd/add and fwd/del take the same at run time.
    #[arg(long = "forward", value_name = "IFACE:PROTO:PORT=ADDR[:PORT]")]
    forwards: Vec<String>,
    /// NPTv6 (RFC 6296) on an outgoing interface, IFACE=INTERNAL/LEN=EXTERNAL/LEN
    /// (repeatable, LEN at most 64): sources inside INTERNAL leaving there get the EXTERNAL
    /// prefix, destinations in EXTERNAL arriving there get INTERNAL back; stateless and
    /// checksum-neutral. E.g. vde1=fd01::/64=2001:db8:1::/64.
    #[arg(long, value_name = "IFACE=INTERNAL/LEN=EXTERNAL/LEN")]
    nptv6: Vec<String>,
    /// Packet filter rules, one a line (see below); `filter/add`, `filter/insert`,
    /// `filter/del` change them live.
    #[arg(long, value_name = "FILE")]
    filter: Option<PathBuf>,
    /// Reverse-path filtering: a packet to forward whose source is not routed back out of
    /// the interface it came in on (a spoofed source) is dropped and counted (stat: rp_filter).
    #[arg(long)]
    rp_filter: bool,
    /// Connections the masquerade tracks at most; new ones beyond are refused and counted.
    #[arg(long, value_name = "N", default_value = "16384")]
    nat_max: usize,
    /// Management socket for the console.
    #[arg(short = 'M', long, value_name = "SOCK")]
    mgmt: Option<PathBuf>,
    /// Octal permissions of the management socket.
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = filo_vnl::parse_octal_mode)]
    mgmtmode: u32,
    /// Run in the background.
    #[arg(short = 'd', long)]
    daemon: bool,
    /// Write the process id to FILE.
    #[arg(short = 'p', long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
}

/// A MAC for interface `index`: locally administered, from the process id.
fn default_mac(index: usize) -> [u8; 6] {
    let pid = std::process::id().to_be_bytes();
    [0x02, 0xf1, pid[1], pid[2], pid[3], index as u8]
}

fn iface_index(router: &Router, name: &str, option: &str) -> Result<usize> {
    router.iface_by_name(name).with_context(|| {
        format!(
            "{option} {name:?}: no such interface (there are vde0..vde{})",
            router.iface_count().saturating_sub(1)
        )
    })
}

/// Parses `IFACE=FIRST-LAST`.
fn parse_range(text: &str) -> Result<(String, std::net::Ipv4Addr, std::net::Ipv4Addr)> {
    let err = || {
        anyhow::anyhow!(
            "--dhcp-server {text:?}: expected IFACE=FIRST-LAST, e.g. vde0=10.1.0.100-10.1.0.199"
        )
    };
    let (iface, range) = text.split_once('=').ok_or_else(err)?;
    let (a, b) = range.split_once('-').ok_or_else(err)?;
    Ok((
        iface.to_string(),
        a.parse().map_err(|_| err())?,
        b.parse().map_err(|_| err())?,
    ))
}

/// Parses `IFACE=MAC=ADDR`.
fn parse_host(text: &str) -> Result<(String, [u8; 6], std::net::Ipv4Addr)> {
    let err = |what: &str| {
        anyhow::anyhow!(
            "--dhcp-host {text:?}: {what} (expected IFACE=MAC=ADDR, e.g. vde0=02:00:00:00:00:10=10.1.0.10)"
        )
    };
    let mut parts = text.splitn(3, '=');
    let (Some(iface), Some(mac), Some(ip)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err("not three parts"));
    };
    let mac = filo_vnl::iothconf::parse_mac(mac)
        .filter(|m| m[0] & 1 == 0 && *m != [0; 6])
        .ok_or_else(|| err(&format!("{mac:?} is not a unicast MAC address")))?;
    let ip = ip
        .parse()
        .map_err(|_| err(&format!("{ip:?} is not an IPv4 address")))?;
    Ok((iface.to_string(), mac, ip))
}

/// The router the command line describes.
fn build(args: &RouterArgs, now: Instant) -> Result<Router> {
    if args.confs.len() > args.vnls.len() {
        bail!(
            "{} --conf for {} --vnl: give one --conf per --vnl, in the same order",
            args.confs.len(),
            args.vnls.len()
        );
    }
    let mut router = Router::new(now);
    router.set_rp_filter(args.rp_filter);
    let mut gateways = Vec::new();
    for (i, _) in args.vnls.iter().enumerate() {
        let conf = args.confs.get(i).cloned().unwrap_or_default();
        if conf.dhcp || conf.slaac {
            bail!("--conf of vde{i}: a router's addresses are static (no dhcp, slaac)");
        }
        let mut c = IfaceConfig::new(
            &format!("vde{i}"),
            conf.mac.unwrap_or_else(|| default_mac(i)),
        );
        for a in &conf.addrs {
            if a.iface.is_some_and(|n| usize::from(n) != i) {
                bail!("--conf of vde{i}: {a} names another interface");
            }
            c.addrs.push((a.ip, a.prefix));
        }
        if let Some(mtu) = conf.mtu {
            c.mtu = u16::try_from(mtu)
                .with_context(|| format!("--conf of vde{i}: mtu={mtu} is over 65535"))?;
        }
        router
            .add_iface(c)
            .with_context(|| format!("--conf of vde{i}"))?;
        gateways.extend(conf.gateways.iter().copied());
    }
    for gw in gateways {
        router
            .add_route(Prefix::default_for(gw), gw)
            .with_context(|| format!("gw={gw}"))?;
    }
    for r in args.route.chunks(3) {
        let [prefix, via, addr] = r else {
            bail!("--route: expected PREFIX via ADDR");
        };
        if via != "via" {
            bail!("--route {prefix} {via} {addr}: expected PREFIX via ADDR");
        }
        let prefix: Prefix = if prefix == "default" {
            let a: IpAddr = addr
                .parse()
                .with_context(|| format!("--route: {addr:?} is not an address"))?;
            Prefix::default_for(a)
        } else {
            prefix.parse().with_context(|| "--route")?
        };
        let gw: IpAddr = addr
            .parse()
            .with_context(|| format!("--route {prefix} via {addr:?}: not an address"))?;
        if gw.is_ipv4() != prefix.addr().is_ipv4() {
            bail!("--route {prefix} via {gw}: the gateway is of the other address family");
        }
        router
            .add_route(prefix, gw)
            .with_context(|| format!("--route {prefix} via {gw}"))?;
    }
    let hosts = args
        .dhcp_hosts
        .iter()
        .map(|h| parse_host(h))
        .collect::<Result<Vec<_>>>()?;
    for (name, _, _) in &hosts {
        if !args
            .dhcp_server
            .iter()
            .any(|d| d.split_once('=').is_some_and(|(n, _)| n == name))
        {
            bail!("--dhcp-host {name}=...: {name} has no --dhcp-server");
        }
    }
    for text in &args.dhcp_server {
        let (name, first, last) = parse_range(text)?;
        let i = iface_index(&router, &name, "--dhcp-server")?;
        let conf = args.confs.get(i).cloned().unwrap_or_default();
        let Some((ip, len)) = conf.addrs.iter().find_map(|a| match a.ip {
            IpAddr::V4(v4) => Some((v4, a.prefix)),
            _ => None,
        }) else {
            bail!(
                "--dhcp-server {text}: {name} has no IPv4 address (give it one with --conf ip=...)"
            );
        };
        let mut cfg = filo_dhcp::server::Config::new(ip, len, first, last);
        cfg.dns = conf
            .dns
            .iter()
            .filter_map(|d| match d {
                IpAddr::V4(a) => Some(*a),
                _ => None,
            })
            .collect();
        cfg.domain = conf.domain.clone();
        cfg.static_leases = hosts
            .iter()
            .filter(|(n, _, _)| *n == name)
            .map(|&(_, mac, ip)| (mac, ip))
            .collect();
        router
            .set_dhcp_server(i, cfg)
            .with_context(|| format!("--dhcp-server {text}"))?;
    }
    for name in &args.radv {
        let i = iface_index(&router, name, "--radv")?;
        // Stateless DHCPv6 for the interface's IPv6 DNS servers (and the RAs' O flag).
        let conf = args.confs.get(i).cloned().unwrap_or_default();
        let dns: Vec<std::net::Ipv6Addr> = conf
            .dns
            .iter()
            .filter_map(|d| match d {
                IpAddr::V6(a) => Some(*a),
                _ => None,
            })
            .collect();
        if !dns.is_empty() {
            let mut cfg = filo_dhcp::v6::Config::new(
                router.iface_config(i).map(|c| c.mac).unwrap_or_default(),
            );
            cfg.dns = dns;
            cfg.search = conf.domain.iter().cloned().collect();
            router
                .set_dhcpv6_server(i, cfg)
                .with_context(|| format!("--radv {name}"))?;
        }
        router
            .set_advertiser(now, i, None)
            .with_context(|| format!("--radv {name}"))?;
    }
    let names: Vec<String> = (0..router.iface_count())
        .map(|i| format!("vde{i}"))
        .collect();
    let mut filter = filo_router::filter::Filter::new(names);
    if let Some(path) = &args.filter {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--filter {}: cannot read it", path.display()))?;
        filter
            .load(&text)
            .map_err(|e| anyhow::anyhow!("--filter {}: {e}", path.display()))?;
    }
    router.add_hook(&[HookPoint::Forward, HookPoint::Input], Box::new(filter));
    // One NAT hook per interface with a masquerade or port forwards.
    let mut nats: Vec<filo_router::nat::Config> = Vec::new();
    let nat_max = args.nat_max;
    let nat_for = |nats: &mut Vec<filo_router::nat::Config>,
                   router: &Router,
                   name: &str,
                   option: &str,
                   what: &str,
                   v6_ok: bool|
     -> Result<usize> {
        let i = iface_index(router, name, option)?;
        if let Some(n) = nats.iter().position(|c| c.iface == i) {
            return Ok(n);
        }
        let addrs = router.iface_config(i).map(|c| &c.addrs[..]).unwrap_or(&[]);
        let v4 = addrs.iter().find_map(|(a, _)| match a {
            IpAddr::V4(a) => Some(*a),
            _ => None,
        });
        // An IPv6-only interface masquerades (and forwards) IPv6 only.
        let v6_only = v6_ok && addrs.iter().any(|(a, _)| a.is_ipv6());
        let Some(addr) = v4.or(v6_only.then_some(std::net::Ipv4Addr::UNSPECIFIED)) else {
            bail!("{option} {name}: {name} has no IPv4 address to {what}");
        };
        let mut c = filo_router::nat::Config::new(i, addr);
        c.max_conns = nat_max;
        c.masquerade = false;
        c.hold = filo_router::nat::HoldLimits::DEFAULT;
        nats.push(c);
        Ok(nats.len() - 1)
    };
    // NAT66 as the interface's first global IPv6 address, unless NPTv6 translates there.
    let addr6_of = |router: &Router, i: usize| {
        let nptv6 = args.nptv6.iter().any(|t| {
            t.split_once('=')
                .is_some_and(|(n, _)| n == format!("vde{i}"))
        });
        router.iface_config(i).and_then(|c| {
            c.addrs.iter().find_map(|(a, _)| match a {
                IpAddr::V6(a) if !a.is_unicast_link_local() && !nptv6 => Some(*a),
                _ => None,
            })
        })
    };
    for name in &args.masquerade {
        let n = nat_for(
            &mut nats,
            &router,
            name,
            "--masquerade",
            "masquerade as",
            true,
        )?;
        nats[n].masquerade = true;
        nats[n].addr6 = addr6_of(&router, nats[n].iface);
    }
    for text in &args.snat {
        let (name, addr) = text
            .split_once('=')
            .with_context(|| format!("--snat {text:?}: expected IFACE=ADDR, e.g. vde1=10.9.0.5"))?;
        let addr: IpAddr = addr
            .parse()
            .with_context(|| format!("--snat {text}: {addr:?} is not an address"))?;
        let n = nat_for(&mut nats, &router, name, "--snat", "translate from", true)?;
        let i = nats[n].iface;
        if !router
            .iface_config(i)
            .is_some_and(|c| c.addrs.iter().any(|(a, _)| *a == addr))
        {
            bail!(
                "--snat {text}: {addr} is not an address of {name} (add it to its --conf as ip={addr}/LEN)"
            );
        }
        if !nats[n].masquerade {
            nats[n].masquerade = true;
            nats[n].addr6 = addr6_of(&router, i);
        }
        match addr {
            IpAddr::V4(a) => nats[n].addr = a,
            IpAddr::V6(a) => nats[n].addr6 = Some(a),
        }
    }
    for text in &args.forwards {
        let filo_router::nat::IfaceForward {
            iface: name,
            forward,
        } = filo_router::nat::IfaceForward::parse(text)
            .map_err(|e| anyhow::anyhow!("--forward {e}"))?;
        let name = name.as_str();
        let v6 = matches!(forward, filo_router::nat::Forward::V6(_));
        let n = nat_for(&mut nats, &router, name, "--forward", "forward from", v6)?;
        match forward {
            filo_router::nat::Forward::V4(f) => {
                if nats[n].addr.is_unspecified() {
                    bail!("--forward {text}: {name} has no IPv4 address to forward from");
                }
                nats[n].forwards.push(f);
            }
            filo_router::nat::Forward::V6(f) => {
                if nats[n].addr6.is_none() {
                    nats[n].addr6 = addr6_of(&router, nats[n].iface);
                }
                if nats[n].addr6.is_none() {
                    bail!(
                        "--forward {text}: {name} has no global IPv6 address to forward from (or --nptv6 translates there)"
                    );
                }
                nats[n].forwards6.push(f);
            }
        }
    }
    for text in &args.nptv6 {
        let (name, pair) = text.split_once('=').with_context(|| {
            format!("--nptv6 {text:?}: expected IFACE=INTERNAL/LEN=EXTERNAL/LEN, e.g. vde1=fd01::/64=2001:db8:1::/64")
        })?;
        let i = iface_index(&router, name, "--nptv6")?;
        let c = filo_router::nptv6::Config::parse(i, pair)
            .map_err(|e| anyhow::anyhow!("--nptv6 {name}={e}"))?;
        router.add_hook(
            &[HookPoint::Prerouting, HookPoint::Postrouting],
            Box::new(filo_router::nptv6::Nptv6::new(c)),
        );
    }
    for c in nats {
        if c.addr.is_unspecified() && c.addr6.is_none() {
            bail!(
                "--masquerade vde{}: vde{} has no IPv4 address, and its IPv6 is NPTv6's",
                c.iface,
                c.iface
            );
        }
        router.add_hook(
            &[HookPoint::Prerouting, HookPoint::Postrouting],
            Box::new(filo_router::nat::Masquerade::new(c)),
        );
    }
    Ok(router)
}

pub fn run(args: RouterArgs) -> Result<ExitCode> {
    let now = Instant::now();
    let router = build(&args, now)?;
    // In the background, the fork comes before the plugs open: an `ipn://` bus or a
    // `switch://` switch serves from a thread of this process, which a later fork would lose.
    let readiness = if args.daemon {
        crate::plug::RemoveOnDrop::refuse_existing(args.pidfile.as_deref())?;
        Some(sys::daemonize_until_ready("filo router").context("cannot run in the background")?)
    } else {
        None
    };
    let started = start(&args, router);
    let (mut daemon, _pid) = match (started, readiness) {
        (Ok(s), Some(r)) => {
            r.ready(&format!("filo router: {} interfaces", args.vnls.len()));
            s
        }
        (Ok(s), None) => s,
        (Err(e), Some(r)) => {
            r.failed(&format!("{e:#}"));
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    match daemon.run_and_save(&sys::STOP)? {
        End::Hangup(why) => {
            eprintln!("filo router: every interface is down: {why}");
            return Ok(ExitCode::FAILURE);
        }
        End::Shutdown => eprintln!("filo router: shut down from the console"),
        End::Stopped => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the plugs and the management socket, loads the leases, writes the pid file.
fn start(args: &RouterArgs, router: Router) -> Result<(Daemon, Option<crate::plug::RemoveOnDrop>)> {
    let mut plugs = Vec::new();
    for (i, v) in args.vnls.iter().enumerate() {
        // On a switch or an ipn:// bus that speaks it, and on a kernel tap, the +vnet
        // framing: TCP super-frames through the router.
        let options = OpenOptions {
            description: "filo-router:".into(),
            vnet: filo_vnl::Vnl::parse(v)
                .is_ok_and(|v| matches!(v.module(), "vde" | "ipn" | "tap")),
            ..Default::default()
        };
        plugs.push(
            options
                .open(v)
                .with_context(|| format!("vde{i}: cannot open {v}"))?,
        );
    }
    let mgmt = args
        .mgmt
        .clone()
        .map(|p| (std::path::absolute(&p).unwrap_or(p), args.mgmtmode));
    let mut daemon = Daemon::new(router, plugs, mgmt)?;
    for text in &args.dhcp_leases {
        let Some((name, file)) = text.split_once('=') else {
            bail!("--dhcp-leases {text:?}: expected IFACE=FILE, e.g. vde0=/var/lib/filo/leases");
        };
        let i = iface_index(daemon.router(), name, "--dhcp-leases")?;
        let file = std::path::absolute(file).unwrap_or_else(|_| PathBuf::from(file));
        let errors = daemon
            .keep_leases(i, file.clone())
            .with_context(|| format!("--dhcp-leases {text}"))?;
        for e in errors {
            eprintln!("filo router: {}: not loaded: {e}", file.display());
        }
    }
    let pidfile = args
        .pidfile
        .clone()
        .map(|p| std::path::absolute(&p).unwrap_or(p));
    let pid = crate::plug::RemoveOnDrop::pidfile(pidfile.as_deref())?;
    Ok((daemon, pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: RouterArgs,
    }

    fn build_from(argv: &[&str]) -> Result<Router> {
        let t = T::try_parse_from(std::iter::once("t").chain(argv.iter().copied()))?;
        build(&t.a, Instant::now())
    }

    #[test]
    fn the_command_line_becomes_interfaces_routes_and_servers() {
        let r = build_from(&[
            "--vnl",
            "vde:///x",
            "--conf",
            "ip=10.1.0.1/24,ip=fd01::1/64",
            "--vnl",
            "vde:///y",
            "--conf",
            "ip=10.9.0.2/24,gw=10.9.0.1,mtu=1400",
            "--route",
            "10.3.0.0/16",
            "via",
            "10.9.0.7",
            "--dhcp-server",
            "vde0=10.1.0.100-10.1.0.199",
            "--radv",
            "vde0",
        ])
        .unwrap();
        let routes: Vec<String> = r
            .routes()
            .map(|r| format!("{} {:?} {}", r.prefix, r.via, r.iface))
            .collect();
        assert_eq!(
            routes,
            [
                "fd01::/64 None 0",
                "10.1.0.0/24 None 0",
                "10.9.0.0/24 None 1",
                "10.3.0.0/16 Some(10.9.0.7) 1",
                "0.0.0.0/0 Some(10.9.0.1) 1",
            ]
        );
        assert_eq!(r.iface_config(1).unwrap().mtu, 1400);
        assert!(r.dhcp_server(0).is_some());
    }

    #[test]
    fn an_ipv6_only_interface_masquerades_ipv6_only() {
        let r = build_from(&[
            "--vnl",
            "a",
            "--conf",
            "ip=10.1.0.1/24,ip=fd01::1/64",
            "--vnl",
            "b",
            "--conf",
            "ip=fd09::2/64",
            "--masquerade",
            "vde1",
        ])
        .unwrap();
        let nat = r.hook_print("nat", Instant::now()).unwrap();
        // One translation (IPv6 only), then the fragment table's line.
        let translations: Vec<_> = nat
            .iter()
            .filter(|l| !l.starts_with("fragment_table "))
            .collect();
        assert_eq!(translations.len(), 1, "{nat:?}");
        assert!(
            translations[0].starts_with("masquerade fd09::2 conns 0 "),
            "{nat:?}"
        );
        let e = build_from(&[
            "--vnl",
            "b",
            "--conf",
            "ip=fd09::2/64",
            "--masquerade",
            "vde0",
            "--nptv6",
            "vde0=fd01::/64=fd09::/64",
        ])
        .err()
        .expect("an error");
        assert!(format!("{e:#}").contains("its IPv6 is NPTv6's"), "{e:#}");
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let cases: [(&str, &str); 18] = [
            (
                "--masquerade vde0 --forward vde0:tcp:80=10.1.0.5",
                "IPv4 address",
            ),
            (
                "--dhcp-host vde0=02:00:00:00:00:01=10.1.0.9",
                "no --dhcp-server",
            ),
            (
                "--dhcp-host vde0=01:00:00:00:00:01=10.1.0.9",
                "not a unicast MAC",
            ),
            ("--dhcp-host vde0=02:00:00:00:00:01", "IFACE=MAC=ADDR"),
            (
                "--dhcp-server vde0=10.1.0.5-10.1.0.9 --dhcp-host vde0=02:00:00:00:00:01=10.2.0.9",
                "10.2.0.9",
            ),
            ("--snat vde0=10.1.0.9", "not an address of vde0"),
            ("--snat vde0", "IFACE=ADDR"),
            ("--snat vde0=x", "\"x\" is not an address"),
            ("--nptv6 vde0=fd01::/64", "INTERNAL/LEN=EXTERNAL/LEN"),
            ("--nptv6 vde0=fd01::/64=2001:db8::/48", "differ"),
            ("--forward vde0:tcp:80", "PROTO:PORT=ADDR"),
            ("--forward vde0:icmp:80=10.1.0.5", "not tcp or udp"),
            ("--forward vde2:tcp:80=10.1.0.5", "no such interface"),
            ("--dhcp-server vde3=10.1.0.5-10.1.0.9", "no such interface"),
            ("--dhcp-server vde0=10.1.0.5", "IFACE=FIRST-LAST"),
            (
                "--route 10.3.0.0/16 via 10.2.0.1",
                "on no interface's subnet",
            ),
            ("--dhcp-server vde0=10.2.0.5-10.2.0.9", "--dhcp-server"),
            ("--masquerade vde0 --conf dhcp", "one --conf per --vnl"),
        ];
        for (extra, expected) in cases {
            let mut argv = vec!["--vnl", "a", "--conf", "ip=10.1.0.1/24"];
            if extra.contains("--forward vde0:tcp:80=") {
                argv[3] = "ip=fd01::1/64";
            }
            argv.extend(extra.split(' '));
            let m = format!("{:#}", build_from(&argv).err().expect("an error"));
            assert!(m.contains(expected), "{extra}: {m}");
        }
        let m = format!(
            "{:#}",
            build_from(&["--vnl", "a", "--conf", "dhcp"])
                .err()
                .expect("an error")
        );
        assert!(m.contains("static"), "{m}");
    }
}
