//! What a forked child does to become a network namespace: unshare, map its user, create
//! taps, configure them through netlink, hide a private resolv.conf. Runs in the child only,
//! so errors are plain strings sent back to the parent over the control socket.

use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;

use crate::conf::NetConf;
use crate::netlink::Netlink;
use crate::{dhcp, sys};

/// Which namespaces to create besides the network one.
#[derive(Debug, Clone, Copy)]
pub struct Spaces {
    pub uts: bool,
    pub mount: bool,
}

/// Why unprivileged use fails, in words a user can act on.
fn tun_hint(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::PermissionDenied {
        let mode = std::fs::metadata("/dev/net/tun")
            .map(|m| {
                use std::os::unix::fs::PermissionsExt;
                format!("{:o}", m.permissions().mode() & 0o777)
            })
            .unwrap_or_else(|_| "?".into());
        format!(
            "{e}: /dev/net/tun has mode {mode}; an ordinary user needs to open it by file permissions \
             (a user namespace does not help): most distributions' udev rule makes it 0666 (KERNEL==\"tun\", MODE=\"0666\")"
        )
    } else {
        e.to_string()
    }
}

fn write_file(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))
}

/// unshare(2) the namespaces; with a user namespace when not root, mapping root inside to
/// the caller outside (as `unshare -r` does), so the command can configure its network.
pub fn enter_namespaces(spaces: Spaces) -> Result<(), String> {
    let (uid, gid) = sys::ids();
    let mut flags = libc::CLONE_NEWNET;
    if spaces.uts {
        flags |= libc::CLONE_NEWUTS;
    }
    if spaces.mount {
        flags |= libc::CLONE_NEWNS;
    }
    let userns = uid != 0;
    if userns {
        flags |= libc::CLONE_NEWUSER;
    }
    sys::unshare(flags).map_err(|e| {
        if userns {
            format!(
                "cannot create a user namespace as uid {uid}: {e} (unprivileged user namespaces are disabled: \
                 kernel.unprivileged_userns_clone, user.max_user_namespaces or an AppArmor/SELinux policy)"
            )
        } else {
            format!("cannot create namespaces: {e}")
        }
    })?;
    if userns {
        write_file("/proc/self/setgroups", "deny")?;
        write_file("/proc/self/uid_map", &format!("0 {uid} 1"))?;
        write_file("/proc/self/gid_map", &format!("0 {gid} 1"))?;
    }
    if spaces.mount {
        sys::mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE)
            .map_err(|e| format!("cannot make / private in the mount namespace: {e}"))?;
    }
    Ok(())
}

/// Interface names for `n` VNLs: `vde0`, `vde1`, …
pub fn iface_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("vde{i}")).collect()
}

/// Creates the taps and applies the static part of `conf`; a tap's MTU is `conf.mtu`, else its
/// plug's (`plug_mtus`, by position), else the kernel's default. `mount_ns`: the caller is in a
/// mount namespace of its own, where a private /etc/resolv.conf can carry `dns=` and
/// `domain=` (never bind-mounted over the host's). Returns the tap descriptors.
pub fn configure(
    ifaces: &[String],
    plug_mtus: &[Option<u32>],
    conf: &NetConf,
    mount_ns: bool,
) -> Result<Vec<OwnedFd>, String> {
    conf.check_interfaces(ifaces.len())
        .map_err(|e| e.to_string())?;
    if let Some(h) = conf.hostname.as_ref().or(conf.fqdn.as_ref()) {
        sys::sethostname(h).map_err(|e| format!("cannot set hostname {h:?}: {e}"))?;
    }
    let mut taps = Vec::new();
    for name in ifaces {
        let fd = filo_vnl::sys::open_tap_with(name, true).map_err(|e| tun_hint(&e))?;
        taps.push(fd);
    }
    for name in ifaces {
        // A kernel default, set anyway: --slaac asks for router advertisements to be used.
        if conf.slaac {
            for (k, v) in [("accept_ra", "2"), ("autoconf", "1")] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/{k}"), v);
            }
        }
    }
    let mut nl = Netlink::open().map_err(|e| format!("cannot open netlink: {e}"))?;
    nl.link_up("lo", None, None).map_err(|e| e.to_string())?;
    for (i, name) in ifaces.iter().enumerate() {
        let mtu = conf.mtu.or(plug_mtus.get(i).copied().flatten());
        // mac= is the first interface's, as in iothconf.
        let mac = conf.mac.filter(|_| i == 0);
        nl.link_up(name, mtu, mac).map_err(|e| e.to_string())?;
    }
    for a in &conf.addrs {
        let iface = &ifaces[usize::from(a.iface.unwrap_or(0))];
        nl.add_addr(iface, a.ip, a.prefix)
            .map_err(|e| e.to_string())?;
    }
    for g in &conf.gateways {
        nl.add_route(None, Some(*g), None)
            .map_err(|e| e.to_string())?;
    }
    if mount_ns && (!conf.dns.is_empty() || conf.domain.is_some()) {
        private_resolv_conf(&conf.dns, conf.domain.as_deref())?;
    }
    Ok(taps)
}

/// How long DHCP and SLAAC may take before `filo ns` and named stacks give up.
pub const AUTOCONF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether `conf` needs a private /etc/resolv.conf (and so a mount namespace).
pub fn needs_resolv_conf(conf: &NetConf) -> bool {
    !conf.dns.is_empty() || conf.dhcp || conf.domain.is_some()
}

/// Waits (at most `timeout`) until `iface` has a global IPv6 address that finished duplicate
/// address detection, as `--dhcp` waits for its lease: a command started before SLAAC is done
/// would see no address.
pub fn wait_for_slaac(iface: &str, timeout: std::time::Duration) -> Result<IpAddr, String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let table = std::fs::read_to_string("/proc/net/if_inet6")
            .map_err(|e| format!("cannot read /proc/net/if_inet6: {e}"))?;
        if let Some(a) = global_v6(&table, iface) {
            return Ok(a);
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "no SLAAC address on {iface} within {} s: no IPv6 router advertisement with a \
                 prefix arrived (is a router such as radvd on the network?)",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A global, non-tentative address of `iface` in /proc/net/if_inet6's format
/// (`ADDR32HEX IFINDEX PREFIXLEN SCOPE FLAGS NAME`).
fn global_v6(table: &str, iface: &str) -> Option<IpAddr> {
    const IFA_F_TENTATIVE: u32 = 0x40;
    table.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, _, _, scope, flags, name] = f.as_slice() else {
            return None;
        };
        let scope = u32::from_str_radix(scope, 16).ok()?;
        let flags = u32::from_str_radix(flags, 16).ok()?;
        if *name != iface || scope != 0 || flags & IFA_F_TENTATIVE != 0 || addr.len() != 32 {
            return None;
        }
        let v = u128::from_str_radix(addr, 16).ok()?;
        Some(IpAddr::V6(std::net::Ipv6Addr::from(v)))
    })
}

/// Runs DHCP on the first interface and applies the lease (address, router, DNS).
pub fn run_dhcp(
    ifaces: &[String],
    conf: &NetConf,
    mount_ns: bool,
    timeout: std::time::Duration,
) -> Result<dhcp::Lease, String> {
    let iface = ifaces
        .first()
        .ok_or("--dhcp needs a VNL: there is no interface")?;
    let lease = dhcp::acquire(
        iface,
        conf.hostname.as_deref().or(conf.fqdn.as_deref()),
        timeout,
    )
    .map_err(|e| format!("DHCP on {iface}: {e}"))?;
    let mut nl = Netlink::open().map_err(|e| format!("cannot open netlink: {e}"))?;
    nl.add_addr(iface, IpAddr::V4(lease.addr), lease.prefix)
        .map_err(|e| e.to_string())?;
    if let Some(r) = lease.router {
        if conf.gateways.is_empty() {
            nl.add_route(None, Some(IpAddr::V4(r)), None)
                .map_err(|e| e.to_string())?;
        }
    }
    if mount_ns && conf.dns.is_empty() && !lease.dns.is_empty() {
        let dns: Vec<IpAddr> = lease.dns.iter().map(|a| IpAddr::V4(*a)).collect();
        private_resolv_conf(&dns, conf.domain.as_deref())?;
    }
    Ok(lease)
}

/// Bind-mounts a file listing `dns` over /etc/resolv.conf (mount namespace only). The
/// source is a temporary file removed right after mounting, so nothing is left behind.
fn private_resolv_conf(dns: &[IpAddr], domain: Option<&str>) -> Result<(), String> {
    let mut text: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    if let Some(d) = domain {
        text.push_str(&format!("search {d}\n"));
    }
    let tmp = std::env::temp_dir().join(format!(".filo-resolv-{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let src = tmp.to_string_lossy().into_owned();
    let r = sys::mount(Some(&src), "/etc/resolv.conf", None, libc::MS_BIND)
        .map_err(|e| format!("cannot bind-mount a private /etc/resolv.conf: {e}"));
    let _ = std::fs::remove_file(&tmp);
    r
}

#[cfg(test)]
mod tests {
    use super::global_v6;

    #[test]
    fn only_a_global_address_done_with_dad_counts() {
        let table = "\
fe800000000000000000000000000001 02 40 20 80     vde0
fd000000000000000000000000000005 02 40 00 c0     vde0
fd000000000000000000000000000006 03 40 00 80     vde1
";
        // vde0's global address is still tentative (0x40 in 0xc0); vde1's is done.
        assert_eq!(global_v6(table, "vde0"), None);
        assert_eq!(global_v6(table, "vde1"), Some("fd00::6".parse().unwrap()));
        let done = table.replace("00 c0", "00 80");
        assert_eq!(global_v6(&done, "vde0"), Some("fd00::5".parse().unwrap()));
        assert_eq!(global_v6("garbage\n\n", "vde0"), None);
    }
}
