//! `slirp://` against real peers. Each test builds its own "host" network namespace (where the
//! gateway runs, as an ordinary process would on a real host) joined by a veth pair to an
//! "inet" namespace with an HTTP server (python's http.server), a UDP echo server and dnsmasq
//! as the host's DNS resolver (named in `/etc/netns/HOST/resolv.conf`, which `ip netns exec`
//! mounts on /etc/resolv.conf). Guests are `filo ns` namespaces, filo stacks and a kernel
//! namespace on a tap with busybox's DHCP client.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(30);
const INET4: &str = "198.18.0.2";
const INET6: &str = "fd5e::2";
const FILE_LEN: usize = 4 << 20;

const UDP_ECHO: &str = "import socket\n\
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n\
s.bind(('::', 7007))\n\
while True:\n    d, a = s.recvfrom(65535)\n    s.sendto(d, a)\n";

/// The host namespace, the inet namespace behind it and their servers.
struct World {
    host: Netns,
    _inet: Netns,
    /// The inet namespace's end of the veth pair.
    inet_dev: String,
    tmp: TempDir,
    file_sum: String,
    etc: PathBuf,
    _servers: Vec<Proc>,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

impl World {
    fn new() -> World {
        require("python3");
        require("dnsmasq");
        require("curl");
        let tmp = TempDir::new("filo-slirp");
        let host = Netns::new("slirp-host");
        let inet = Netns::new("slirp-inet");
        let (hv, iv) = veth(&host, "198.18.0.1/24", &inet, &format!("{INET4}/24"));
        host.exec_ok(&["ip", "-6", "addr", "add", "fd5e::1/64", "dev", &hv, "nodad"]);
        inet.exec_ok(&["ip", "-6", "addr", "add", "fd5e::2/64", "dev", &iv, "nodad"]);
        // Unprivileged ICMP echo sockets for every group, in the host namespace only.
        host.exec_ok(&["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]);
        let www = tmp.join("www");
        std::fs::create_dir_all(&www).unwrap();
        let data: Vec<u8> = (0..FILE_LEN as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(www.join("file"), &data).unwrap();
        std::fs::write(www.join("index.html"), "hello from inet\n").unwrap();
        let file_sum = sha256(&www.join("file"));
        let mut servers = Vec::new();
        let mut http = inet.command("python3");
        http.args(["-m", "http.server", "-b", "::", "8000", "-d"])
            .arg(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        servers.push(Proc::spawn(&mut http));
        let mut echo = inet.command("python3");
        echo.args(["-c", UDP_ECHO])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        servers.push(Proc::spawn(&mut echo));
        let mut dns = inet.command("dnsmasq");
        dns.args([
            "-k",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--pid-file",
            "--listen-address",
            INET4,
            "--bind-interfaces",
            "--address=/web.test/198.18.0.2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
        servers.push(Proc::spawn(&mut dns));
        let etc = PathBuf::from("/etc/netns").join(&host.name);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {INET4}\n")).unwrap();
        assert!(
            host.curl_until(
                &format!("http://{INET4}:8000/index.html"),
                &tmp.join("probe"),
                T
            ),
            "the inet namespace's HTTP server did not come up"
        );
        World {
            host,
            _inet: inet,
            inet_dev: iv,
            tmp,
            file_sum,
            etc,
            _servers: servers,
        }
    }

    /// python's http.server on the host namespace's loopback at `port`, serving www, once it
    /// answers.
    fn host_http(&self, port: &str) -> Proc {
        let mut c = self.host.command("python3");
        c.args(["-m", "http.server", "-b", "127.0.0.1", port, "-d"])
            .arg(self.tmp.join("www"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let p = Proc::spawn(&mut c);
        assert!(self.host.curl_until(
            &format!("http://127.0.0.1:{port}/index.html"),
            &self.tmp.join("probe"),
            T
        ));
        p
    }

    /// `filo ARGS` run in the host namespace.
    fn filo(&self, args: &[&str]) -> Command {
        let mut c = self.host.command(FILO);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs `filo ARGS` in the host namespace: (exit code, stdout, stderr).
    fn filo_out(&self, args: &[&str]) -> (i32, String, String) {
        let (status, out, err) = Proc::spawn(&mut self.filo(args)).output(T);
        (status.code().unwrap_or(-1), out, err)
    }

    /// Runs a shell script in a `filo ns` guest on `vnl` (configured by `conf`).
    fn guest(&self, conf: &[&str], vnl: &str, script: &str) -> (i32, String, String) {
        let mut args = vec!["ns"];
        args.extend_from_slice(conf);
        args.extend_from_slice(&[vnl, "--", "sh", "-c", script]);
        self.filo_out(&args)
    }
}

#[test]
fn a_namespace_on_slirp_gets_dhcp_and_slaac_and_reaches_http_udp_dns_and_ping() {
    require("ping");
    require("getent");
    let w = World::new();
    let script = format!(
        "set -e
        ip -4 addr show dev vde0 | grep -o 'inet [0-9./]*'
        ip route | grep default
        curl -sS -m 20 http://{INET4}:8000/file | sha256sum
        curl -sS -m 20 'http://[{INET6}]:8000/file' | sha256sum
        python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.sendto(b'udp-echo-4', ('{INET4}', 7007)); print(s.recvfrom(100)[0].decode())\"
        python3 -c \"import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(5); s.sendto(b'udp-echo-6', ('{INET6}', 7007)); print(s.recvfrom(100)[0].decode())\"
        getent ahostsv4 web.test | head -1
        ping -c1 -W5 {INET4} | grep -o '1 received'
        ping -6 -c1 -W5 {INET6} | grep -o '1 received'
        ping -c1 -W5 10.0.2.2 | grep -o '1 received'
        echo done"
    );
    let (code, out, err) = w.guest(&["--dhcp", "--slaac"], "slirp://", &script);
    assert_eq!(code, 0, "guest failed: {out}\n{err}");
    assert!(out.contains("inet 10.0.2.15/24"), "no DHCP lease: {out}");
    assert!(out.contains("default via 10.0.2.2"), "{out}");
    assert_eq!(
        out.matches(&w.file_sum).count(),
        2,
        "IPv4 and IPv6 downloads differ from the file ({}): {out}",
        w.file_sum
    );
    assert!(
        out.contains("udp-echo-4") && out.contains("udp-echo-6"),
        "{out}"
    );
    assert!(out.contains("198.18.0.2"), "web.test not resolved: {out}");
    assert_eq!(out.matches("1 received").count(), 3, "{out}");
    assert!(out.trim_end().ends_with("done"), "{out}");
}

#[test]
fn pings_go_through_raw_icmp_sockets_when_ping_sockets_are_refused() {
    require("ping");
    let w = World::new();
    // No group may open ping sockets in the host namespace: the gateway (root here) falls
    // back to raw ICMP sockets.
    w.host
        .exec_ok(&["sysctl", "-qw", "net.ipv4.ping_group_range=1 0"]);
    let script = format!(
        "ping -c2 -W5 {INET4} | grep -o '2 received'
        ping -6 -c2 -W5 {INET6} | grep -o '2 received'"
    );
    let (_, out, err) = w.guest(&["--dhcp", "--slaac"], "slirp://", &script);
    assert_eq!(out.matches("2 received").count(), 2, "{out} {err}");
}

#[test]
fn the_dns_relay_moves_on_from_a_silent_and_a_refusing_resolver() {
    require("getent");
    let w = World::new();
    // Three resolvers: 198.18.0.77 does not exist (queries go unanswered), a dnsmasq with no
    // upstream on 198.18.0.3 answers REFUSED, the world's dnsmasq on INET4 knows web.test.
    w._inet
        .exec_ok(&["ip", "addr", "add", "198.18.0.3/24", "dev", &w.inet_dev]);
    let mut refusing = w._inet.command("dnsmasq");
    refusing
        .args(["-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"])
        .args([
            "--user=root",
            "--pid-file",
            "--listen-address",
            "198.18.0.3",
        ])
        .arg("--bind-interfaces")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
    let _refusing = Proc::spawn(&mut refusing);
    std::fs::write(
        w.etc.join("resolv.conf"),
        format!("nameserver 198.18.0.77\nnameserver 198.18.0.3\nnameserver {INET4}\n"),
    )
    .unwrap();
    let script = "getent ahostsv4 web.test | head -1; getent ahostsv4 web.test | head -1";
    let (_, out, err) = w.guest(&["--dhcp"], "slirp://", script);
    assert_eq!(out.matches("198.18.0.2").count(), 2, "{out} {err}");
}

#[test]
fn the_hosts_loopback_is_refused_unless_hostloopback() {
    let w = World::new();
    let _lo = w.host_http("8081");
    let script = "curl -sS -m 10 -o /dev/null http://10.0.2.2:8081/index.html; echo exit=$?";
    let (_, out, err) = w.guest(&["--dhcp"], "slirp://", script);
    assert!(out.contains("exit=7"), "not refused: {out} {err}");
    let script = "curl -sS -m 10 http://10.0.2.2:8081/index.html; echo exit=$?";
    let (_, out, err) = w.guest(&["--dhcp"], "slirp:///hostloopback", script);
    assert!(
        out.contains("hello from inet") && out.contains("exit=0"),
        "hostloopback: {out} {err}"
    );
}

#[test]
fn refused_connections_reset_and_unreachable_ones_get_icmp_errors() {
    let w = World::new();
    // 8009: nothing listens (the inet host resets); 203.0.113.9: no route on the host.
    let connect = |to: &str| {
        format!(
            "python3 -c \"import socket\ntry:\n    socket.create_connection(({to}), 20)\nexcept OSError as e:\n    print('errno', e.errno)\"\n"
        )
    };
    // UDP to a port nobody listens on: the remote's port unreachable comes back as one.
    let udp = "python3 -c \"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(5)\ns.connect(('198.18.0.2', 7999))\nfor i in range(3):\n    try:\n        s.send(b'x'); s.recv(10)\n    except OSError as e:\n        if e.errno: print('errno', e.errno); break\n\"\n";
    let script = connect("'198.18.0.2', 8009") + &connect("'203.0.113.9', 80") + udp;
    let (code, out, err) = w.guest(&["--dhcp"], "slirp://", &script);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("errno {}", libc::ECONNREFUSED),
            format!("errno {}", libc::EHOSTUNREACH),
            format!("errno {}", libc::ECONNREFUSED)
        ],
        "{err}"
    );
}

#[test]
fn udp_to_a_host_a_router_cannot_reach_gets_a_host_unreachable() {
    let w = World::new();
    // 192.0.2.0/24 is routed through inet, which forwards but has an unreachable route for
    // it: its ICMP host unreachable (a soft error for UDP, reported where IP_RECVERR, 11,
    // asks for it) reaches the gateway's socket, then the guest.
    w.host
        .exec_ok(&["ip", "route", "add", "192.0.2.0/24", "via", INET4]);
    w._inet.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    w._inet
        .exec_ok(&["ip", "route", "add", "unreachable", "192.0.2.0/24"]);
    let udp = "python3 -c \"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.setsockopt(socket.IPPROTO_IP, 11, 1)\ns.settimeout(2)\ns.connect(('192.0.2.77', 7007))\nfor i in range(5):\n    try:\n        s.send(b'x'); s.recv(10)\n    except OSError as e:\n        if e.errno: print('errno', e.errno); break\n\"";
    let (code, out, err) = w.guest(&["--dhcp"], "slirp://", udp);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("errno {}", libc::EHOSTUNREACH), "{err}");
}

#[test]
fn a_filo_stack_fetches_through_slirp() {
    let w = World::new();
    let out = w.tmp.join("fetched");
    let (code, _, err) = w.filo_out(&[
        "stack",
        "fetch",
        "--vnl",
        "slirp://",
        "--dhcp",
        "-o",
        out.to_str().unwrap(),
        &format!("http://{INET4}:8000/file"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&out), w.file_sum);
}

/// A filo switch with `filo plug SWITCH slirp://` on it, run in the host namespace.
fn switch_with_gateway(w: &World) -> (FiloSwitch, Proc) {
    let sw = FiloSwitch::start(FILO, &w.tmp, "sw", &[]);
    let mut gw = w.host.command(FILO);
    gw.args(["plug", &sw.vnl(), "slirp://"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
    let gw = Proc::spawn(&mut gw);
    assert!(
        wait_until(T, || sw.endpoints() == 1),
        "the gateway did not join"
    );
    (sw, gw)
}

#[test]
fn a_gateway_on_a_switch_serves_filo_ns_and_a_kernel_dhcp_client() {
    let w = World::new();
    let (sw, _gw) = switch_with_gateway(&w);
    let vnl = sw.vnl();
    let (code, out, err) = w.guest(
        &["--dhcp"],
        &vnl,
        &format!("curl -sS -m 20 http://{INET4}:8000/file | sha256sum"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&w.file_sum), "{out}");

    // A kernel guest: tap0 on the switch, busybox's udhcpc configures it.
    let g = Netns::new("slirp-kguest");
    g.exec_ok(&["ip", "tuntap", "add", "tap0", "mode", "tap"]);
    g.exec_ok(&["ip", "link", "set", "tap0", "up"]);
    let _tap = g.plug_tap(&[FILO, "plug"], &vnl);
    udhcpc(&w, &g);
    let addrs = g.exec_ok(&["ip", "-4", "addr", "show", "dev", "tap0"]);
    assert!(addrs.contains("inet 10.0.2.1"), "no lease: {addrs}");
    let got = w.tmp.join("kguest");
    assert!(g.curl_until(&format!("http://{INET4}:8000/file"), &got, T));
    assert_eq!(sha256(&got), w.file_sum);
}

#[test]
fn debians_vdens_on_the_switch_gets_a_lease_from_the_gateway_and_fetches_a_page() {
    require("vdens");
    require("busybox");
    let w = World::new();
    let (sw, _gw) = switch_with_gateway(&w);
    let vnl = sw.vnl();
    // vdens (libvdeplug's vde:// client, not filo's) names its interface vde0; busybox's
    // udhcpc configures it from the gateway's DHCP server, then curl fetches from inet.
    let script = udhcpc_script(&w);
    let cmd = format!(
        "set -e; ip link set vde0 up; busybox udhcpc -i vde0 -n -q -f -t 10 -s {}; \
         ip -4 addr show dev vde0 | grep -o 'inet [0-9./]*'; \
         curl -sS -m 20 http://{INET4}:8000/index.html",
        script.display()
    );
    let (status, out, err) = Proc::spawn(
        Command::new("vdens")
            .args([&vnl, "sh", "-c", &cmd])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    // udhcpc may take 10 tries of 3 s and curl 20 s: more than T on a loaded machine.
    .output_or_kill(Duration::from_secs(60));
    assert!(out.contains("inet 10.0.2.15/24"), "no lease: {out}\n{err}");
    assert!(out.contains("hello from inet"), "no page: {out}\n{err}");
    // Debian's vdens sometimes misses its command's end (about 1 run in 4 here): the command
    // is a zombie and vdens waits in ppoll on a signalfd for a SIGCHLD that came while it was
    // busy outside ppoll, with SIGCHLD unblocked. Its command did all it should (above);
    // only then a vdens that did not exit is not our failure.
    match status {
        Some(status) => assert!(status.success(), "vdens failed: {out}\n{err}"),
        None => eprintln!("vdens did not exit after its command ended (its SIGCHLD race)"),
    }
}

#[test]
fn hostname_is_given_to_the_guest_by_dhcp() {
    require("busybox");
    let w = World::new();
    // busybox's udhcpc hands the lease's options to its script: option 12 as $hostname.
    let script = w.tmp.join("udhcpc-hostname.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in bound) echo \"lease $ip hostname=$hostname\";; esac\n",
    )
    .unwrap();
    run(Command::new("chmod").arg("+x").arg(&script));
    let cmd = format!(
        "ip link set vde0 up; busybox udhcpc -i vde0 -n -q -f -t 10 -s {}",
        script.display()
    );
    let (code, out, err) = w.guest(&[], "slirp:///hostname=box7", &cmd);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("lease 10.0.2.15 hostname=box7"), "{out} {err}");
}

/// A script for busybox's udhcpc that configures the lease's address and default route.
fn udhcpc_script(w: &World) -> PathBuf {
    write_script(
        w.tmp.join("udhcpc.sh"),
        "#!/bin/sh\ncase \"$1\" in bound|renew)\n  ip addr add \"$ip/$mask\" dev \"$interface\"\n  ip route add default via \"$router\"\nesac\n",
    )
}

/// Configures `tap0` in `g` with busybox's DHCP client.
fn udhcpc(w: &World, g: &Netns) {
    let script = udhcpc_script(w);
    g.exec_ok(&[
        "busybox",
        "udhcpc",
        "-i",
        "tap0",
        "-n",
        "-q",
        "-f",
        "-t",
        "10",
        "-s",
        script.to_str().unwrap(),
    ]);
}

#[test]
fn debian_vde_plug_guest_moves_64_mib_and_gets_dns_by_dhcpv6_through_debians_switch() {
    require("vde_plug");
    require("dhclient");
    let w = World::new();
    let big = w.tmp.join("www").join("big");
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    let big_sum = sha256(&big);
    let sw = DebSwitch::start(&w.tmp, "dsw");
    let vnl = sw.vnl();
    let mut gw = w.host.command(FILO);
    gw.args(["plug", &vnl, "slirp://"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
    let _gw = Proc::spawn(&mut gw);
    // Plain frames only: Debian's switch and vde_plug know no super-frames.
    let g = Netns::new("slirp-dguest");
    g.exec_ok(&["ip", "tuntap", "add", "tap0", "mode", "tap"]);
    g.exec_ok(&["ip", "link", "set", "tap0", "up"]);
    let _tap = g.plug_tap(&["vde_plug"], &vnl);
    udhcpc(&w, &g);
    let got = w.tmp.join("big-got");
    assert!(g.curl_until(&format!("http://{INET4}:8000/big"), &got, T));
    assert_eq!(sha256(&got), big_sum, "64 MiB through plain frames");
    // SLAAC from the router advertisements, then DNS servers by stateless DHCPv6.
    assert!(
        wait_until(T, || g
            .exec_ok(&["ip", "-6", "addr", "show", "dev", "tap0", "scope", "global"])
            .contains("fd00::")),
        "no SLAAC address from the advertisements"
    );
    let out = w.tmp.join("dhcp6.env");
    let script = w.tmp.join("dhclient6.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$reason $new_dhcp6_name_servers\" >> {}\n",
            out.display()
        ),
    )
    .unwrap();
    run(Command::new("chmod").arg("+x").arg(&script));
    let lease = w.tmp.join("dhclient6.leases");
    let pid = w.tmp.join("dhclient6.pid");
    let mut dh = g.command("dhclient");
    dh.args(["-6", "-S", "-1", "-sf"])
        .arg(&script)
        .arg("-lf")
        .arg(&lease)
        .arg("-pf")
        .arg(&pid)
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
    let _dh = Proc::spawn(&mut dh);
    assert!(
        wait_until(T, || std::fs::read_to_string(&out)
            .is_ok_and(|t| t.contains("fd00::3"))),
        "no DNS server from DHCPv6: {:?}",
        std::fs::read_to_string(&out)
    );
}

#[test]
fn tcp_and_udp_forwards_reach_servers_in_the_guest() {
    let w = World::new();
    let www = w.tmp.join("www");
    let vnl = "slirp:///tcpfwd=127.0.0.1:18080:10.0.2.15:8080/udpfwd=18081:10.0.2.15:7007";
    let script = format!(
        "python3 -c \"{}\" & exec python3 -m http.server -b 0.0.0.0 8080 -d {}",
        UDP_ECHO,
        www.display()
    );
    let mut guest = w.host.command(FILO);
    guest
        .args(["ns", "--dhcp", vnl, "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
    let _guest = Polite(Proc::spawn(&mut guest));
    let got = w.tmp.join("fwd");
    assert!(
        w.host.curl_until("http://127.0.0.1:18080/file", &got, T),
        "the TCP forward did not reach the guest's server"
    );
    assert_eq!(sha256(&got), w.file_sum);
    let udp = "import socket, sys\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.settimeout(2)\n\
for i in range(10):\n    s.sendto(b'fwd-udp', (sys.argv[1], 18081))\n    try:\n        print(s.recvfrom(100)[0].decode()); break\n    except socket.timeout:\n        pass\n";
    // From the inet namespace: a remote client of the host's forwarded port.
    let out = w._inet.exec_ok(&["python3", "-c", udp, "198.18.0.1"]);
    assert!(out.contains("fwd-udp"), "UDP forward: {out:?}");
}

#[test]
fn bad_slirp_options_are_named() {
    let w = World::new();
    for (vnl, expect) in [
        ("slirp:///frobnicate=1", "frobnicate"),
        ("slirp:///tcpfwd=80", "tcpfwd"),
        ("slirp:///addr=10.0.2.300", "addr"),
        ("slirp:///mtu=9", "mtu"),
    ] {
        let (code, _, err) = w.guest(&["--dhcp"], vnl, "true");
        assert_ne!(code, 0, "{vnl} was accepted");
        assert!(err.contains(expect), "{vnl}: {err}");
    }
    // A forward to a port already taken on the host.
    let _holder = w.host_http("18090");
    let (code, _, err) = w.guest(
        &["--dhcp"],
        "slirp:///tcpfwd=127.0.0.1:18090:10.0.2.15:80",
        "true",
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("127.0.0.1:18090") && err.contains("in use"),
        "{err}"
    );
}

/// `filo console --json SOCK COMMAND`: (exit code, stdout).
fn console_json(sock: &Path, command: &str) -> (i32, String) {
    filo_console_json(FILO, sock, command)
}

#[test]
fn filo_slirp_daemon_forwards_and_changes_forwards_from_its_console() {
    let w = World::new();
    let sw = FiloSwitch::start(FILO, &w.tmp, "sw", &[]);
    let vnl = sw.vnl();
    let mgmt = w.tmp.join("slirp.mgmt");
    let pidfile = w.tmp.join("slirp.pid");
    let (code, _, err) = w.filo_out(&[
        "slirp",
        "-d",
        "--pidfile",
        pidfile.to_str().unwrap(),
        "-M",
        mgmt.to_str().unwrap(),
        "--tcpfwd",
        "127.0.0.1:18080:10.0.2.15:8080",
        &vnl,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("gateway on"), "{err}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // The daemon we started (its pid file names it).
            filo_test_support::sys::kill(self.0, libc::SIGTERM);
        }
    }
    let _kill = Kill(pid);
    // Up and serving, the gateway runs in its sandbox: a seccomp filter and no_new_privs.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains("Seccomp:\t2") && status.contains("NoNewPrivs:\t1"),
        "not sandboxed: {status}"
    );
    let www = w.tmp.join("www");
    let mut guest = w.host.command(FILO);
    guest
        .args(["ns", "--dhcp", &vnl, "--", "python3", "-m", "http.server"])
        .args(["-b", "0.0.0.0", "8080", "-d"])
        .arg(&www)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
    let _guest = Polite(Proc::spawn(&mut guest));
    let got = w.tmp.join("fwd");
    assert!(w.host.curl_until("http://127.0.0.1:18080/file", &got, T));
    assert_eq!(sha256(&got), w.file_sum);

    // A filo stack on the switch takes super-frames whose TCP checksums the gateway left
    // open, completes and checks them.
    let fetched = w.tmp.join("stack-fetched");
    let (code, _, err) = w.filo_out(&[
        "stack",
        "fetch",
        "--vnl",
        &vnl,
        "--dhcp",
        "-o",
        fetched.to_str().unwrap(),
        &format!("http://{INET4}:8000/file"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&fetched), w.file_sum);

    let (code, out) = console_json(&mgmt, "fwd/add tcp 127.0.0.1:18082:10.0.2.15:8080");
    assert_eq!(code, 0, "{out}");
    let (_, out) = console_json(&mgmt, "fwd/print");
    assert!(
        out.contains("tcp 127.0.0.1:18080 -> 10.0.2.15:8080")
            && out.contains("tcp 127.0.0.1:18082 -> 10.0.2.15:8080"),
        "{out}"
    );
    assert!(w
        .host
        .curl_until("http://127.0.0.1:18082/index.html", &w.tmp.join("p2"), T));
    // The same port twice, and a bad forward: errors naming the problem.
    let (code, out) = console_json(&mgmt, "fwd/add tcp 127.0.0.1:18082:10.0.2.15:80");
    assert_ne!(code, 0);
    assert!(out.contains("already exists"), "{out}");
    let (code, out) = console_json(&mgmt, "fwd/add tcp 18083");
    assert_ne!(code, 0);
    assert!(out.contains("HOSTPORT:GUESTIP:GUESTPORT"), "{out}");
    let (code, out) = console_json(&mgmt, "fwd/del tcp 127.0.0.1:18082");
    assert_eq!(code, 0, "{out}");
    let status = w
        .host
        .command("curl")
        .args([
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "http://127.0.0.1:18082/",
        ])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7), "the deleted forward still answers");
    let (code, out) = console_json(&mgmt, "stat");
    assert_eq!(code, 0);
    assert!(
        out.contains("\"status\":1000") && out.contains("forwards 1 accepted"),
        "{out}"
    );
    let (_, out) = console_json(&mgmt, "leases/print");
    assert!(out.contains("10.0.2.15"), "{out}");
    let (code, _) = console_json(&mgmt, "shutdown");
    assert_eq!(code, 0);
    assert!(
        wait_until(T, || !Path::new(&format!("/proc/{pid}")).exists()),
        "the gateway did not stop on shutdown"
    );
    assert!(
        !mgmt.exists() && !pidfile.exists(),
        "sockets or pid file left behind"
    );
}

/// `filo slirp -M MGMT VNL` in the host namespace, once its console is up.
fn slirp_daemon(w: &World, vnl: &str, mgmt: &Path) -> Proc {
    let mut gw = w.host.command(FILO);
    gw.args(["slirp", "-M", mgmt.to_str().unwrap(), vnl])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
    let gw = Proc::spawn(&mut gw);
    assert!(wait_until(T, || mgmt.exists()), "filo slirp did not start");
    gw
}

#[test]
fn a_connection_flood_is_bounded_refused_counted_and_the_gateway_recovers() {
    let w = World::new();
    // A server with a deep backlog that never accepts: every host connect() succeeds.
    let mut sink = w._inet.command("python3");
    sink.args([
        "-c",
        "import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('198.18.0.2', 9000))\ns.listen(4096)\ntime.sleep(600)\n",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _sink = Proc::spawn(&mut sink);
    // The flood counts refusals: the sink must listen before it starts.
    assert!(
        wait_until(T, || w
            ._inet
            .command("ss")
            .args(["-Hltn", "sport = :9000"])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())),
        "the sink did not listen on 198.18.0.2:9000"
    );
    let sw = FiloSwitch::start(FILO, &w.tmp, "sw", &[]);
    let vnl = sw.vnl();
    let mgmt = w.tmp.join("slirp.mgmt");
    let gw = slirp_daemon(&w, &vnl, &mgmt);
    let rss = || rss_kib(gw.pid());
    let flood = "import socket, errno, time
socks = []
for i in range(800):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(('198.18.0.2', 9000))
    socks.append(s)
time.sleep(5)
refused = sum(1 for s in socks if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED)
print('refused', refused)
for s in socks:
    s.close()
";
    let script = format!(
        "ulimit -n 4096; python3 -c \"{flood}\"; sleep 2; curl -sS -m 20 http://{INET4}:8000/index.html"
    );
    let before = rss();
    let (code, out, err) = w.guest(&["--dhcp"], &vnl, &script);
    assert_eq!(code, 0, "{out} {err}");
    let refused: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("refused "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        refused >= 800 - 512,
        "at most 512 connections fit; got {refused} refused: {out}"
    );
    assert!(out.contains("hello from inet"), "no recovery: {out} {err}");
    let (_, stat) = console_json(&mgmt, "stat");
    // Each connection beyond the bound was refused, or pushed out an older one whose host
    // connect() was still under way (when the gateway was slower than the flood).
    let full = stat_counter(&stat, "refused_full ") + stat_counter(&stat, "evicted_connecting ");
    assert!(full as usize >= 800 - 512, "{stat}");
    // The flood's flows, closed by the guest but not by the (never accepting) server, made
    // room for the new connection.
    assert!(!stat.contains("evicted 0"), "{stat}");
    let after = rss();
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn qemu_on_the_switch_gets_a_lease_from_the_gateway() {
    require("qemu-system-x86_64");
    let tmp = TempDir::new("filo-slirp-qemu");
    // A namespace with nothing but loopback: what iPXE tries after DHCP goes nowhere.
    let host = Netns::new("slirp-qemu");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let mgmt = tmp.join("slirp.mgmt");
    let mut gw = host.command(FILO);
    gw.args(["slirp", "-M", mgmt.to_str().unwrap(), &sw.vnl()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
    let _gw = Proc::spawn(&mut gw);
    assert!(wait_until(T, || mgmt.exists()), "filo slirp did not start");
    // No disk: the NIC's iPXE ROM network-boots, asking for an address by DHCP.
    let _qemu = qemu_netboot(&sw.dir, "52:54:00:12:34:57");
    let mut leases = String::new();
    assert!(
        wait_until(Duration::from_secs(90), || {
            leases = console_json(&mgmt, "leases/print").1;
            leases.contains("52:54:00:12:34:57")
        }),
        "no lease for QEMU: {leases}"
    );
    assert!(leases.contains("10.0.2.15"), "{leases}");
}

const PEER_ECHO: &str = "import socket
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('::', 8081))
s.listen(16)
while True:
    c, a = s.accept()
    c.sendall(a[0].encode())
    c.close()
";

const ASK_PEER: &str = "import socket, sys, time
for i in range(50):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)
        d = s.recv(100)
        if d:
            print(d.decode()); break
    except OSError:
        pass
    time.sleep(0.2)
";

#[test]
fn forwards_keep_the_clients_address_and_work_over_ipv6() {
    let w = World::new();
    let vnl = "slirp:///tcpfwd=18083:10.0.2.15:8081/tcpfwd='[::1]:18443:[fd00::15]:8081'";
    let mut guest = w.host.command(FILO);
    guest
        .args(["ns", "--dhcp", "--ip", "fd00::15/64", vnl, "--"])
        .args(["python3", "-c", PEER_ECHO])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
    let _guest = Polite(Proc::spawn(&mut guest));
    // A client on another host keeps its address; one on the host's loopback appears as
    // the gateway.
    let out = w
        ._inet
        .exec_ok(&["python3", "-c", ASK_PEER, "198.18.0.1", "18083"]);
    assert_eq!(out.trim(), "::ffff:198.18.0.2", "the guest saw {out:?}");
    let out = w.host.exec_ok(&["python3", "-c", ASK_PEER, "::1", "18443"]);
    assert_eq!(out.trim(), "fd00::2", "the guest saw {out:?}");
}

#[test]
fn udp_forwards_work_over_ipv6() {
    let w = World::new();
    let vnl = "slirp:///udpfwd='[::1]:18445:[fd00::15]:7007'/udpfwd='18446:[fd00::15]:7007'";
    let mut guest = w.host.command(FILO);
    guest
        .args(["ns", "--dhcp", "--ip", "fd00::15/64", vnl, "--"])
        .args(["python3", "-c", UDP_ECHO])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
    let _guest = Polite(Proc::spawn(&mut guest));
    let udp = "import socket, sys\n\
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
s.settimeout(2)\n\
for i in range(10):\n    s.sendto(b'fwd-udp6', (sys.argv[1], int(sys.argv[2])))\n    try:\n        print(s.recvfrom(100)[0].decode()); break\n    except socket.timeout:\n        pass\n";
    // From the host's loopback, and from another host to the host's IPv6 address.
    let out = w.host.exec_ok(&["python3", "-c", udp, "::1", "18445"]);
    assert!(out.contains("fwd-udp6"), "UDP forward on [::1]: {out:?}");
    let out = w._inet.exec_ok(&["python3", "-c", udp, "fd5e::1", "18446"]);
    assert!(out.contains("fwd-udp6"), "UDP forward on [::]: {out:?}");
}

/// The value after `key` (e.g. "refused_full ") in a `stat` answer.
fn stat_counter(stat: &str, key: &str) -> u64 {
    stat.split(key)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or(0)
}

/// Raw SYNs to 10,000 ports (sent twice, so a frame lost on the way is sent again), from the
/// guest's kernel address, built with python's socket module.
const SYN_FLOOD: &str = "import socket, struct
src = socket.inet_aton('10.0.2.15')
dst = socket.inet_aton('198.18.0.2')
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
def csum(b):
    if len(b) % 2:
        b += bytes(1)
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
for rnd in range(2):
    for port in range(20000, 30000):
        h = struct.pack('!HHIIBBHHH', 40000 + port % 20000, port, port, 0, 5 << 4, 2, 65535, 0, 0)
        c = csum(src + dst + struct.pack('!BBH', 0, 6, len(h)) + h)
        s.sendto(h[:16] + struct.pack('!H', c) + h[18:], ('198.18.0.2', 0))
print('flood sent')
";

/// Malformed datagrams for the DNS forwarder (bad UDP checksum, a UDP length beyond the
/// packet, garbage that is no DNS message) and malformed ICMP (bad checksum, a truncated
/// header) from the guest.
const MALFORMED: &str = "import socket, struct
u = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
q = b'\\x12\\x34garbage, no DNS message'
u.sendto(struct.pack('!HHHH', 5353, 53, 8 + len(q), 0x1234) + q, ('10.0.2.3', 0))
u.sendto(struct.pack('!HHHH', 5353, 53, 4000, 0) + q, ('10.0.2.3', 0))
d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
d.sendto(q, ('10.0.2.3', 53))
d.sendto(b'', ('10.0.2.3', 53))
i = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
i.sendto(struct.pack('!BBHHH', 8, 0, 0xdead, 1, 1) + b'ping', ('198.18.0.2', 0))
i.sendto(b'\\x08\\x00\\x00', ('198.18.0.2', 0))
print('malformed sent')
";

#[test]
fn a_syn_flood_over_10000_ports_and_malformed_dns_and_icmp_are_bounded_and_counted() {
    require("nft");
    require("getent");
    require("ping");
    let w = World::new();
    // The inet side drops SYNs to the flooded ports: every host connect() hangs, so every
    // flow the flood opens stays in the table (until the connect timeout).
    w._inet.exec_ok(&[
        "nft",
        "add table inet flood; add chain inet flood in { type filter hook input priority 0; }; \
         add rule inet flood in tcp dport 20000-29999 drop",
    ]);
    let sw = FiloSwitch::start(FILO, &w.tmp, "sw", &[]);
    let vnl = sw.vnl();
    let mgmt = w.tmp.join("slirp.mgmt");
    let gw = slirp_daemon(&w, &vnl, &mgmt);
    let rss = || rss_kib(gw.pid());
    let (_, stat0) = console_json(&mgmt, "stat");
    let limit = stat_counter(&stat0, "limits tcp ");
    assert!(limit > 0, "no TCP limit in stat: {stat0}");
    let before = rss();
    // A download paced to outlast the flood is the flow that must keep working during it; a
    // new connection made while the flood's half-open flows fill the table (they wait 20 s
    // for their connect()) must work at once, the oldest of them making room for it.
    let during = w.tmp.join("during");
    let script = format!(
        "set -e
        curl -sS -m 120 --limit-rate 512K -o {during} http://{INET4}:8000/file &
        sleep 1
        python3 -c \"{SYN_FLOOD}\"
        curl -sS -m 10 -o /dev/null -w 'during %{{http_code}}\\n' http://{INET4}:8000/index.html || true
        python3 -c \"{MALFORMED}\"
        wait
        sha256sum {during}
        for i in $(seq 60); do curl -sS -m 5 http://{INET4}:8000/index.html && break; sleep 1; done
        getent ahostsv4 web.test | head -1
        ping -c1 -W5 {INET4} | grep -o '1 received'",
        during = during.display()
    );
    let mut guest = w.filo(&["ns", "--dhcp", &vnl, "--", "sh", "-c", &script]);
    let guest = Proc::spawn(&mut guest);
    // The bound: while the flood's SYNs are refused or push out older half-open flows, the
    // table holds at most `limit` flows.
    let mut peak = 0;
    assert!(
        wait_until(Duration::from_secs(90), || {
            let (_, stat) = console_json(&mgmt, "stat");
            peak = peak.max(stat_counter(&stat, "flows tcp "));
            stat_counter(&stat, "refused_full ") + stat_counter(&stat, "evicted_connecting ")
                >= 10_000 - limit
        }),
        "the flood's SYNs were neither refused nor evicted"
    );
    let (status, out, err) = guest.output(Duration::from_secs(240));
    assert!(status.success(), "guest failed: {out}\n{err}");
    assert!(
        out.contains("flood sent") && out.contains("malformed sent"),
        "{out} {err}"
    );
    assert!(
        out.contains(&w.file_sum),
        "the download during the flood broke: {out} {err}"
    );
    assert!(out.contains("hello from inet"), "no recovery: {out} {err}");
    assert!(out.contains("198.18.0.2"), "DNS broken after junk: {out}");
    assert!(out.contains("1 received"), "ping broken after junk: {out}");
    let (_, stat) = console_json(&mgmt, "stat");
    peak = peak.max(stat_counter(&stat, "flows tcp "));
    assert!(
        out.contains("during 200"),
        "a new connection during the flood failed: {out} {err} {stat}"
    );
    assert!(peak <= limit, "{peak} TCP flows, limit {limit}: {stat}");
    // Two bad checksums (UDP, ICMP) and two bad lengths (UDP length, ICMP header), counted.
    assert!(
        stat_counter(&stat, "bad_checksum ") >= stat_counter(&stat0, "bad_checksum ") + 2,
        "{stat}"
    );
    assert!(
        stat_counter(&stat, "malformed ") >= stat_counter(&stat0, "malformed ") + 2,
        "{stat}"
    );
    // Memory: the table is bounded, so 20,000 SYNs must not cost memory in proportion.
    // 16 MiB is far below what 10,000 flows would hold and far above 512 pending connects.
    let after = rss();
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn a_console_user_may_not_forward_a_privileged_port_for_root() {
    let tmp = TempDir::new("filo-slirp-priv");
    // The console socket is open to everyone (mode 777) and the gateway runs as root.
    let bin = copy_for_everyone(&tmp, FILO);
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let host = Netns::new("slirp-priv");
    let mgmt = tmp.join("slirp.mgmt");
    let mut gw = host.command(FILO);
    gw.args(["slirp", "--mgmtmode", "777", "-M"])
        .arg(&mgmt)
        .arg(sw.vnl())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
    let _gw = Proc::spawn(&mut gw);
    assert!(wait_until(T, || mgmt.exists()), "filo slirp did not start");
    let as_nobody_console = |command: &str| {
        let out = as_nobody(&bin)
            .args(["console", "--json"])
            .arg(&mgmt)
            .arg(command)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Port 80 is privileged: nobody could not bind it alone, so the gateway does not for them.
    let (code, out) = as_nobody_console("fwd/add tcp 127.0.0.1:80:10.0.2.15:80");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("privileged") && out.contains("uid 65534"),
        "{out}"
    );
    let (_, out) = console_json(&mgmt, "fwd/print");
    assert!(!out.contains(":80 ->"), "{out}");
    // An unprivileged port is theirs to forward; root may forward port 80.
    let (code, out) = as_nobody_console("fwd/add tcp 127.0.0.1:18090:10.0.2.15:80");
    assert_eq!(code, 0, "{out}");
    let (code, out) = console_json(&mgmt, "fwd/add tcp 127.0.0.1:80:10.0.2.15:80");
    assert_eq!(code, 0, "{out}");
    let (_, out) = console_json(&mgmt, "fwd/print");
    assert!(
        out.contains("tcp 127.0.0.1:18090 -> 10.0.2.15:80")
            && out.contains("tcp 127.0.0.1:80 -> 10.0.2.15:80"),
        "{out}"
    );
}
