//! Automatic configuration of filo stacks by Debian's servers in a namespace on the same filo
//! switch: a DHCPv4 lease (router, DNS) from dnsmasq, SLAAC addresses from radvd's router
//! advertisements, and names resolved through dnsmasq when a socket connects to `host:port`.

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_stack::Stack;
use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(5);

struct Lan {
    ns: Netns,
    tmp: TempDir,
    sw: FiloSwitch,
    _procs: Vec<Proc>,
}

/// A namespace with tap0 = 10.N.0.1/24 + fdN::1/64 on a filo switch, running dnsmasq (DHCP
/// and DNS: web.filo.test → 10.N.0.1 and fdN::1) and radvd (prefix fdN::/64).
fn lan(tag: &str, n: u8) -> Lan {
    require("dnsmasq");
    require("radvd");
    let tmp = TempDir::new(tag);
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let ns = Netns::new(tag);
    ns.tap(&[&format!("10.{n}.0.1/24"), &format!("fd{n}::1/64")]);
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    let mut procs = Vec::new();
    procs.push(ns.plug_tap(&[FILO, "plug"], &sw.vnl()));
    let mut d = ns.command("dnsmasq");
    d.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        "--interface=tap0",
        "--bind-interfaces",
        &format!("--dhcp-range=10.{n}.0.100,10.{n}.0.150,255.255.255.0,2m"),
        &format!("--dhcp-option=option:router,10.{n}.0.1"),
        &format!("--dhcp-option=option:dns-server,10.{n}.0.1"),
        &format!("--address=/web.filo.test/10.{n}.0.1"),
        &format!("--address=/web.filo.test/fd{n}::1"),
        // Authoritative for filo.test: an unknown name there is NXDOMAIN, not silence.
        "--local=/filo.test/",
    ])
    .arg(format!("--dhcp-leasefile={}", tmp.join("leases").display()))
    .arg(format!("--pid-file={}", tmp.join("dnsmasq.pid").display()))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    procs.push(Proc::spawn(&mut d));
    let conf = tmp.join("radvd.conf");
    std::fs::write(
        &conf,
        format!(
            "interface tap0 {{\n AdvSendAdvert on;\n MinRtrAdvInterval 3;\n MaxRtrAdvInterval 4;\n \
             prefix fd{n}::/64 {{ AdvOnLink on; AdvAutonomous on; }};\n}};\n"
        ),
    )
    .unwrap();
    let mut r = ns.command("radvd");
    r.args(["-n", "-m", "stderr", "-C"])
        .arg(&conf)
        .arg("-p")
        .arg(tmp.join("radvd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    procs.push(Proc::spawn(&mut r));
    assert!(
        wait_until(T, || sw.endpoints() >= 1),
        "the tap plug did not connect"
    );
    Lan {
        ns,
        tmp,
        sw,
        _procs: procs,
    }
}

#[test]
fn dhcp_lease_from_dnsmasq_slaac_from_radvd_and_names_from_dnsmasq() {
    let lan = lan("filo-ac1", 56);
    let s = Stack::builder()
        .name("auto-node")
        .interface(lan.sw.vnl(), "eth,auto,fqdn=auto-node.filo.test")
        .build()
        .unwrap();
    // DHCPv4.
    let v4 = s
        .wait_for_address(false, Duration::from_secs(15))
        .expect("no DHCP lease");
    let IpAddr::V4(a) = v4.addr else { panic!() };
    assert_eq!(&a.octets()[..3], &[10, 56, 0], "{v4}");
    assert!((100..=150).contains(&a.octets()[3]), "{v4}");
    assert_eq!(v4.prefix, 24);
    assert_eq!(
        s.dns_servers(),
        vec!["10.56.0.1".parse::<IpAddr>().unwrap()]
    );
    assert!(s
        .routes()
        .iter()
        .any(|r| r.dst.prefix == 0 && r.via == Some("10.56.0.1".parse().unwrap())));
    let leases = std::fs::read_to_string(lan.tmp.join("leases")).unwrap_or_default();
    assert!(
        leases.contains(&a.to_string()),
        "dnsmasq's leases: {leases}"
    );
    // The kernel reaches the leased address, and through the default route the stack reaches
    // an address beyond its subnet (the namespace's loopback-routed 10.56.1.1).
    lan.ns
        .exec_ok(&["ping", "-c", "1", "-W", "2", &a.to_string()]);
    lan.ns
        .exec_ok(&["ip", "addr", "add", "10.56.1.1/32", "dev", "lo"]);
    s.ping("10.56.1.1".parse().unwrap(), 1, 16, T).unwrap();
    // SLAAC.
    let v6 = s
        .wait_for_address(true, Duration::from_secs(15))
        .expect("no SLAAC address");
    let IpAddr::V6(g) = v6.addr else { panic!() };
    assert_eq!(g.segments()[0], 0xfd56, "{v6}");
    assert_eq!(v6.prefix, 64);
    s.ping("fd56::1".parse().unwrap(), 2, 16, T).unwrap();
    lan.ns
        .exec_ok(&["ping", "-6", "-c", "1", "-W", "2", &g.to_string()]);
    // DNS: A and AAAA through dnsmasq, used by connect("host:port").
    let mut names = s.resolve("web.filo.test", T).unwrap();
    names.sort();
    assert_eq!(
        names,
        vec![
            "10.56.0.1".parse::<IpAddr>().unwrap(),
            "fd56::1".parse::<IpAddr>().unwrap()
        ]
    );
    // dnsmasq answers NXDOMAIN for it: the lookup fails with NotFound, promptly (a time-out
    // would mean the question or the answer was lost).
    let e = s.resolve("nothing.filo.test", T).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    std::fs::write(lan.tmp.join("hello.txt"), b"hello from the kernel\n").unwrap();
    let mut py = lan.ns.command("python3");
    py.args(["-m", "http.server", "--bind", "::", "8000", "-d"])
        .arg(lan.tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _py = Proc::spawn(&mut py);
    let out = lan.tmp.join("got.txt");
    let ok = wait_until(Duration::from_secs(20), || {
        Command::new(FILO)
            .args(["stack", "fetch", "--vnl", &lan.sw.vnl(), "--conf", "dhcp"])
            .args(["--name", "fetcher", "-t", "5", "-o"])
            .arg(&out)
            .arg("http://web.filo.test:8000/hello.txt")
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    assert!(ok, "filo stack fetch by name failed");
    assert_eq!(std::fs::read(&out).unwrap(), b"hello from the kernel\n");
}
