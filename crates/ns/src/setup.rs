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
/// plug's (`plug_mtus`, by position), else the kernel's default. Returns the tap descriptors.
pub fn configure(
    ifaces: &[String],
    plug_mtus: &[Option<u32>],
    conf: &NetConf,
) -> Result<Vec<OwnedFd>, String> {
    if let Some(h) = &conf.hostname {
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
    nl.link_up("lo", None).map_err(|e| e.to_string())?;
    for (i, name) in ifaces.iter().enumerate() {
        let mtu = conf.mtu.or(plug_mtus.get(i).copied().flatten());
        nl.link_up(name, mtu).map_err(|e| e.to_string())?;
    }
    let first = ifaces.first().map(String::as_str);
    for a in &conf.addrs {
        let iface = a.iface.as_deref().or(first).ok_or_else(|| {
            format!(
                "address {}/{} given but there is no interface (no VNL)",
                a.ip, a.prefix
            )
        })?;
        if !ifaces.iter().any(|i| i == iface) {
            return Err(format!(
                "address {}/{}: no interface {iface}",
                a.ip, a.prefix
            ));
        }
        nl.add_addr(iface, a.ip, a.prefix)
            .map_err(|e| e.to_string())?;
    }
    for g in &conf.gateways {
        nl.add_route(None, Some(*g), None)
            .map_err(|e| e.to_string())?;
    }
    if !conf.dns.is_empty() {
        private_resolv_conf(&conf.dns)?;
    }
    Ok(taps)
}

/// Runs DHCP on the first interface and applies the lease (address, router, DNS).
pub fn run_dhcp(ifaces: &[String], conf: &NetConf, mount_ns: bool) -> Result<dhcp::Lease, String> {
    let iface = ifaces
        .first()
        .ok_or("--dhcp needs a VNL: there is no interface")?;
    let lease = dhcp::acquire(
        iface,
        conf.hostname.as_deref(),
        std::time::Duration::from_secs(15),
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
        private_resolv_conf(&dns)?;
    }
    Ok(lease)
}

/// Bind-mounts a file listing `dns` over /etc/resolv.conf (mount namespace only). The
/// source is a temporary file removed right after mounting, so nothing is left behind.
fn private_resolv_conf(dns: &[IpAddr]) -> Result<(), String> {
    let text: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    let tmp = std::env::temp_dir().join(format!(".filo-resolv-{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let src = tmp.to_string_lossy().into_owned();
    let r = sys::mount(Some(&src), "/etc/resolv.conf", None, libc::MS_BIND)
        .map_err(|e| format!("cannot bind-mount a private /etc/resolv.conf: {e}"));
    let _ = std::fs::remove_file(&tmp);
    r
}
