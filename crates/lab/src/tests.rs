use crate::model::{parse, NodeKind};
use crate::plan::{plan, Layout, Start, READY_FILE_ENV};
use crate::status::{parse_port_print, parse_showinfo, parse_slirp_stat, set_commands};

const TWO_SITES: &str = r#"
name = "two"

[switch.sw1]
ports = 8

[switch.sw2]
stp = true
vlan = [{ id = 10, untagged = [3], tagged = [5] }]

[[link]]
name = "wan"
a = "sw1"
b = "sw2:5"
loss = 5
delay = 20
jitter = "5N"

[[link]]
a = "sw2"
b = "h3"
delay = 100

[node.h1]
kind = "ns"
net = ["sw1"]
ip = ["10.0.0.1/24"]
command = "sleep 1000"
run = ["ping -c 1 10.0.0.2"]

[node.h2]
kind = "ns"
net = ["sw2:3"]
ip = ["10.0.0.2/24", "fd00::2/64"]
env = { A = "1" }

[node.h3]
kind = "stack"
ip = ["10.0.0.3/24"]

[remote.far]
switch = "sw1"
vnl = "vxvde://239.0.0.1/vni=7"
"#;

#[test]
fn a_full_file_parses_and_resolves() {
    let lab = parse(TWO_SITES, "x").unwrap();
    assert_eq!(lab.name, "two");
    // sw1, sw2 and the hub holding h3's side of the sw2-h3 link.
    let names: Vec<_> = lab
        .switches
        .iter()
        .map(|s| (s.name.as_str(), s.hidden))
        .collect();
    assert_eq!(
        names,
        [("sw1", false), ("sw2", false), ("sw2-h3_end", true)]
    );
    assert_eq!(lab.switch("sw1").unwrap().ports, 8);
    assert!(lab.switch("sw2").unwrap().stp);
    let wan = lab.link("wan").unwrap();
    assert_eq!(wan.b.port, Some(5));
    assert_eq!(
        wan.impairments,
        [
            ("loss".to_string(), "5".to_string()),
            ("delay".into(), "20+5N".into())
        ]
    );
    let h3 = lab.node("h3").unwrap();
    assert_eq!(h3.kind, NodeKind::Stack);
    assert_eq!(h3.net[0].switch, "sw2-h3_end");
    assert_eq!(lab.remotes[0].switch, "sw1");
}

#[test]
fn the_plan_starts_switches_then_cables_then_nodes() {
    let lab = parse(TWO_SITES, "x").unwrap();
    let layout = Layout::new("/run/l");
    let steps = plan(&lab, &layout);
    let phases: Vec<(String, u8)> = steps.iter().map(|s| (s.id.clone(), s.phase)).collect();
    assert_eq!(
        phases,
        [
            ("switch sw1".to_string(), 0),
            ("switch sw2".into(), 0),
            ("switch sw2-h3_end".into(), 0),
            ("link wan".into(), 1),
            ("link sw2-h3".into(), 1),
            ("remote far".into(), 1),
            ("node h1".into(), 2),
            ("node h2".into(), 2),
            ("node h3".into(), 2),
        ]
    );
    let wan = &steps[3];
    assert!(wan.args.contains(&"--loss=5".to_string()));
    assert!(wan.args.contains(&"--delay=20+5N".to_string()));
    assert_eq!(wan.args.last().unwrap(), "vde:///run/l/sw/sw2[5]");
    let sw2 = &steps[1];
    assert!(sw2.args.contains(&"--stp".to_string()));
    assert_eq!(
        sw2.file.as_ref().unwrap().1,
        "vlan/create 10\nport/create 3\nport/setvlan 3 10\nport/create 5\nvlan/addport 10 5\n"
    );
    let h2 = &steps[7];
    assert!(matches!(h2.start, Start::Foreground { .. }));
    assert_eq!(
        &h2.args[..5],
        [
            "ns",
            "--vnl",
            "vde:///run/l/sw/sw2[3]",
            "--ip",
            "10.0.0.2/24"
        ]
    );
    assert_eq!(h2.args[h2.args.len() - 2..], ["sleep", "infinity"]);
    assert_eq!(h2.env, [("A".to_string(), "1".to_string())]);
    let h3 = &steps[8];
    assert!(h3.args.contains(&"vde:///run/l/sw/sw2-h3_end".to_string()));
}

/// (file, line, key, words the message must contain)
const BAD: &[(&str, usize, &str, &str)] = &[
    ("[switch.a]\nports = \"x\"\n", 2, "ports", "expected u16"),
    ("[switch.a]\nportz = 3\n", 2, "portz", "unknown field `portz`"),
    ("[switch.a]\nports = 0\n", 2, "switch.a.ports", "expected 1 to 4096"),
    ("[switch.a]\n[switch.a]\n", 2, "switch.a", "duplicate key"),
    ("[switch.a\n", 1, "switch.a", "expected `]`"),
    (
        "[switch.a]\n[node.h]\nkind = \"ns\"\nnet = [\"b\"]\n",
        4,
        "node.h.net",
        "\"b\" is not a switch of this lab (switches: a)",
    ),
    (
        "[switch.a]\n[switch.b]\n[[link]]\na = \"a\"\nb = \"nosuch\"\n",
        5,
        "link[0].b",
        "\"nosuch\" is not a switch",
    ),
    ("[switch.a]\n[node.h]\nkind = \"vm\"\nnet = [\"a\"]\n", 3, "kind", "expected one of `ns`, `stack`, `qemu`, `tap`"),
    (
        "[switch.a]\n[switch.b]\n[[link]]\na = \"a\"\nb = \"b\"\nloss = \"lots\"\n",
        6,
        "link[0].loss",
        "[LR|RL]VALUE",
    ),
    (
        "[switch.a]\nports = 4\n[node.h]\nkind = \"ns\"\nnet = [\"a:4\"]\n",
        5,
        "node.h.net",
        "port 4 does not exist: switch a has ports 0 to 3",
    ),
    (
        "[switch.a]\n[node.h]\nkind = \"ns\"\nnet = [\"a:1\"]\n[node.g]\nkind = \"ns\"\nnet = [\"a:1\"]\n",
        4,
        "node.h.net",
        "port 1 of switch a is already taken by node g",
    ),
    (
        "[switch.a]\n[node.a]\nkind = \"ns\"\nnet = [\"a\"]\n",
        2,
        "node.a",
        "already used by a switch",
    ),
    (
        "[switch.a]\n[node.h]\nkind = \"ns\"\nnet = [\"a\"]\nip = [\"10.0.0.1\"]\n",
        5,
        "node.h.ip",
        "expected an address with its prefix length",
    ),
    ("[switch.a]\n[node.h]\nkind = \"ns\"\n", 2, "node.h.net", "on no network"),
    (
        "[switch.a]\n[node.h]\nkind = \"tap\"\nnet = [\"a\"]\n",
        2,
        "node.h.ifname",
        "needs `ifname`",
    ),
    (
        "[switch.a]\n[remote.r]\nswitch = \"a\"\nvnl = \"vde:///tmp/x\"\n",
        4,
        "remote.r.vnl",
        "expected a vxvde:// or vxlan://",
    ),
    ("name = \"a b\"\n", 1, "name", "not a valid name"),
    (
        "[switch.s]\n[node.gw]\nkind = \"slirp\"\nnet = [\"s\"]\ntcpfwd = [\"8080:10.0.2.15\"]\n",
        5,
        "node.gw.tcpfwd",
        "expected [HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT",
    ),
    (
        "[switch.s]\n[node.gw]\nkind = \"slirp\"\nnet = [\"s\"]\ndhcp_start = \"192.168.9.9\"\n",
        5,
        "node.gw.dhcp_start",
        "in the gateway's network",
    ),
    (
        "[switch.s]\n[node.gw]\nkind = \"slirp\"\nnet = [\"s\"]\nip = [\"10.1.0.2/24\", \"10.2.0.2/24\"]\n",
        5,
        "node.gw.ip",
        "one IPv4 and one IPv6 address",
    ),
    (
        "[switch.s]\n[node.gw]\nkind = \"slirp\"\nnet = [\"s\"]\ncommand = \"true\"\n",
        3,
        "node.gw.kind",
        "a slirp node is a NAT gateway",
    ),
    (
        "[switch.s]\n[node.h]\nkind = \"ns\"\nnet = [\"s\"]\nhostloopback = true\n",
        3,
        "node.h.hostloopback",
        "only slirp nodes take `hostloopback`",
    ),
    (
        "[switch.s]\n[switch.t]\n[node.gw]\nkind = \"slirp\"\nnet = [\"s\", \"t\"]\n",
        3,
        "node.gw.net",
        "exactly one interface",
    ),
];

#[test]
fn bad_files_name_the_line_the_key_and_what_was_expected() {
    for (text, line, key, words) in BAD {
        let e = match parse(text, "t") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        };
        assert_eq!((e.line, e.key.as_str()), (*line, *key), "{text}\n=> {e}");
        assert!(
            e.message.contains(words),
            "{text}\n=> {e}\nmissing {words:?}"
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("line {line}: {key}: ")),
            "{shown}"
        );
    }
}

#[test]
fn too_many_items_is_a_clear_limit() {
    let mut text = String::new();
    for i in 0..=crate::model::MAX_ITEMS {
        text.push_str(&format!("[switch.s{i}]\n"));
    }
    let e = parse(&text, "t").unwrap_err();
    assert!(e.message.contains("at most 2000"), "{e}");
}

#[test]
fn port_print_and_showinfo_parse_into_counters() {
    let lines: Vec<String> = "Port 0001 untagged_vlan=0000 ACTIVE - Unnamed Allocatable
 Current User: root Access Control: (User: NONE - Group: NONE)
 IN:  pkts          7          bytes                  700
 OUT: pkts          3          bytes                  300
 DROP: queue          2          error                    1
  -- endpoint ID 0008 module unix prog   : filo-wirefilter: user=root pid=4884 +train
Port 0002 untagged_vlan=0000 ACTIVE - Unnamed Allocatable
 IN:  pkts          1          bytes                   60"
        .lines()
        .map(String::from)
        .collect();
    let ports = parse_port_print(&lines);
    assert_eq!(ports.len(), 2);
    assert_eq!(
        (
            ports[0].port,
            ports[0].in_frames,
            ports[0].in_bytes,
            ports[0].out_frames,
            ports[0].drop_queue,
            ports[0].drop_error
        ),
        (1, 7, 700, 3, 2, 1)
    );
    assert_eq!(
        ports[0].endpoints,
        ["filo-wirefilter: user=root pid=4884 +train"]
    );
    assert_eq!(ports[1].in_bytes, 60);
    let info: Vec<String> = [
        "Counters L->R in 5/500 out 4/400 dropped loss 1 mtu 0 capacity 0 dup 0 corrupted 0 bits 0 queued 0",
        "Counters R->L in 2/200 out 2/200 dropped loss 0 mtu 3 capacity 0 dup 0 corrupted 0 bits 0 queued 0",
    ]
    .map(String::from)
    .to_vec();
    let (lr, rl) = parse_showinfo(&info).unwrap();
    assert_eq!((lr.in_frames, lr.out_bytes, lr.dropped_loss), (5, 400, 1));
    assert_eq!((rl.in_frames, rl.dropped_mtu), (2, 3));
}

#[test]
fn a_loop_of_links_needs_spanning_tree() {
    let ring = |stp: &str| {
        format!(
            "[switch.a]\n{stp}[switch.b]\n{stp}[switch.c]\n{stp}\
             [[link]]\na = \"a\"\nb = \"b\"\n[[link]]\na = \"b\"\nb = \"c\"\n[[link]]\na = \"c\"\nb = \"a\"\n"
        )
    };
    let e = parse(&ring(""), "t").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (10, "link[2]"), "{e}");
    assert!(
        e.message
            .contains("link c-a closes a loop of switches without spanning tree (a, b, c)"),
        "{e}"
    );
    let lab = parse(&ring("stp = true\n"), "t").unwrap();
    assert_eq!(lab.links.len(), 3);
    // Two cables between the same two switches are a loop too.
    let e = parse("[switch.a]\n[switch.b]\n[[link]]\nname = \"x\"\na = \"a\"\nb = \"b\"\n[[link]]\nname = \"y\"\na = \"b\"\nb = \"a\"\n", "t").unwrap_err();
    assert!(e.message.contains("link y closes a loop"), "{e}");
}

#[test]
fn settings_that_are_off() {
    use crate::status::setting_is_off;
    assert!(setting_is_off("L->R 0+0U   R->L 0+0N"));
    assert!(setting_is_off("L->R 0   R->L 0"));
    assert!(!setting_is_off("L->R 0.5+0U   R->L 0+0U"));
    assert!(!setting_is_off("L->R 0+3U   R->L 0+0U"));
}

#[test]
fn a_hub_for_a_node_link_does_not_take_a_users_switch() {
    let text = "[switch.wan_end]\n[switch.a]\n[node.n]\nkind = \"ns\"\n[[link]]\nname = \"wan\"\na = \"a\"\nb = \"n\"\n";
    let e = parse(text, "t").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (6, "link[0].name"), "{e}");
    assert!(
        e.message.contains("\"wan_end\", and that name is taken"),
        "{e}"
    );
}

#[test]
fn set_takes_key_value_pairs() {
    let s = |v: &[&str]| set_commands(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(s(&["loss=5", "delay=50"]).unwrap(), ["loss 5", "delay 50"]);
    assert_eq!(s(&["delay=50", "jitter=10"]).unwrap(), ["delay 50+10"]);
    assert_eq!(s(&["capacity=10K"]).unwrap(), ["chanbufsize 10K"]);
    assert!(s(&["loss"]).unwrap_err().contains("KEY=VALUE"));
    assert!(s(&["color=red"])
        .unwrap_err()
        .contains("unknown impairment"));
    assert!(s(&["loss=x"]).unwrap_err().contains("[LR|RL]VALUE"));
    assert!(s(&["jitter=3"]).unwrap_err().contains("delay"));
}

#[test]
fn the_graph_has_every_switch_node_and_link() {
    let lab = parse(TWO_SITES, "x").unwrap();
    let svg = crate::graph::svg(&lab);
    for id in [
        "switch-sw1",
        "switch-sw2",
        "node-h1",
        "node-h2",
        "node-h3",
        "link-wan",
        "link-sw2-h3",
        "remote-far",
    ] {
        assert!(
            svg.contains(&format!("id=\"{id}\"")),
            "{id} missing:\n{svg}"
        );
    }
    // The hidden hub is not drawn: the link goes to the node.
    assert!(!svg.contains("sw2-h3_end"));
    let dot = crate::graph::dot(&lab);
    assert!(
        dot.contains("\"switch-sw1\" -- \"switch-sw2\" [label=\"wan: loss 5, delay 20+5N\"]"),
        "{dot}"
    );
}

#[test]
fn the_longest_socket_path_is_known_before_starting() {
    let lab = parse(TWO_SITES, "x").unwrap();
    let (path, len) = crate::plan::longest_socket(&lab, &Layout::new("/run/l")).unwrap();
    assert_eq!(
        path.to_str().unwrap(),
        "/run/l/sw/sw2-h3_end/1023.4194304.vnet.train"
    );
    assert_eq!(len, path.to_str().unwrap().len());
}

const WITH_SLIRP: &str = r#"
[switch.lan]

[node.gw]
kind = "slirp"
net = ["lan"]
ip = ["10.1.0.2/24"]
dhcp_start = "10.1.0.100"
dns = ["10.1.0.3"]
tcpfwd = ["127.0.0.1:8080:10.1.0.100:80"]
udpfwd = ["5353:10.1.0.100:53"]
hostloopback = true

[node.h1]
kind = "ns"
net = ["lan"]
dhcp = true
"#;

#[test]
fn a_slirp_node_starts_with_the_cables_before_the_nodes_that_ask_it_for_an_address() {
    let lab = parse(WITH_SLIRP, "s").unwrap();
    let gw = lab.node("gw").unwrap();
    assert_eq!(gw.kind, NodeKind::Slirp);
    let layout = Layout::new("/run/l");
    let steps = plan(&lab, &layout);
    let ids: Vec<(&str, u8)> = steps.iter().map(|s| (s.id.as_str(), s.phase)).collect();
    assert_eq!(
        ids,
        [("switch lan", 0), ("node gw", 1), ("node h1", 2)],
        "{steps:#?}"
    );
    let s = &steps[1];
    assert!(s.filo);
    assert_eq!(
        s.args,
        [
            "slirp",
            "--slirp",
            "slirp:///addr='10.1.0.2/24'/dhcp=10.1.0.100/vnameserver=10.1.0.3/hostloopback",
            "--tcpfwd",
            "127.0.0.1:8080:10.1.0.100:80",
            "--udpfwd",
            "5353:10.1.0.100:53",
            "-M",
            "/run/l/sl/gw.mgmt",
            "-d",
            "--pidfile",
            "/run/l/pid/node-gw.pid",
            "vde:///run/l/sw/lan",
        ]
    );
    assert_eq!(
        s.start,
        Start::Daemon {
            pidfile: "/run/l/pid/node-gw.pid".into()
        }
    );
    // The gateway is a pill in the drawing and a hexagon in DOT.
    let svg = crate::graph::svg(&lab);
    assert!(svg.contains(r#"class="node slirp"><rect"#), "{svg}");
    assert!(svg.contains(r#"rx="17""#), "{svg}");
    assert!(crate::graph::dot(&lab).contains("shape=hexagon"));
    // No commands run in a gateway.
    assert!(crate::plan::exec_argv(gw, &layout, None, &[], &["true".into()]).is_err());
}

#[test]
fn a_bare_slirp_node_takes_the_gateways_defaults() {
    let lab = parse(
        "[switch.lan]\n[node.gw]\nkind = \"slirp\"\nnet = [\"lan\"]\n",
        "s",
    )
    .unwrap();
    let steps = plan(&lab, &Layout::new("/run/l"));
    assert_eq!(steps[1].args[..3], ["slirp", "--slirp", "slirp:///"]);
}

#[test]
fn slirp_stat_parses_into_named_counters() {
    let lines: Vec<String> = [
        "flows tcp 1 udp 0 icmp 0",
        "limits tcp 1024 udp 1024 icmp 64",
        "tcp opened 3 connect_failed 1 refused_full 0 refused_policy 0 evicted 0",
        "frames in 20 out 18 dropped_out 0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let c = parse_slirp_stat(&lines);
    let get = |k: &str| c.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    assert_eq!(get("flows_tcp"), Some(1));
    assert_eq!(get("tcp_opened"), Some(3));
    assert_eq!(get("tcp_connect_failed"), Some(1));
    assert_eq!(get("frames_in"), Some(20));
    assert_eq!(get("frames_dropped_out"), Some(0));
    assert!(c.iter().all(|(n, _)| !n.starts_with("limits")), "{c:?}");
}

const WITH_ROUTER: &str = r#"
[switch.lan]
[switch.wan]

[node.r]
kind = "router"
net = ["lan", "wan"]
conf = ["ip=10.1.0.1/24,ip=fd01::1/64", "ip=10.2.0.1/24,mtu=1400"]
route = ["10.3.0.0/16 via 10.2.0.9"]
dhcp_server = ["lan=10.1.0.100-10.1.0.199"]
radv = ["vde0"]
masquerade = ["wan"]
filter = ["accept state established,related", "drop in vde1 state new"]

[node.h1]
kind = "ns"
net = ["lan"]
dhcp = true
"#;

#[test]
fn a_router_node_starts_with_the_cables_and_names_interfaces_by_switch() {
    let lab = parse(WITH_ROUTER, "r").unwrap();
    let r = lab.node("r").unwrap();
    assert_eq!(r.kind, NodeKind::Router);
    let layout = Layout::new("/run/l");
    let steps = plan(&lab, &layout);
    let ids: Vec<(&str, u8)> = steps.iter().map(|s| (s.id.as_str(), s.phase)).collect();
    assert_eq!(
        ids,
        [
            ("switch lan", 0),
            ("switch wan", 0),
            ("node r", 1),
            ("node h1", 2)
        ],
        "{steps:#?}"
    );
    let s = &steps[2];
    assert_eq!(
        s.args,
        [
            "router",
            "--vnl",
            "vde:///run/l/sw/lan",
            "--conf",
            "ip=10.1.0.1/24,ip=fd01::1/64",
            "--vnl",
            "vde:///run/l/sw/wan",
            "--conf",
            "ip=10.2.0.1/24,mtu=1400",
            "--route",
            "10.3.0.0/16",
            "via",
            "10.2.0.9",
            "--dhcp-server",
            "vde0=10.1.0.100-10.1.0.199",
            "--radv",
            "vde0",
            "--masquerade",
            "vde1",
            "--filter",
            "/run/l/rt/r.filter",
            "-M",
            "/run/l/rt/r.mgmt",
            "-d",
            "--pidfile",
            "/run/l/pid/node-r.pid",
        ]
    );
    assert_eq!(
        s.file,
        Some((
            "/run/l/rt/r.filter".into(),
            "accept state established,related\ndrop in vde1 state new\n".into()
        ))
    );
    let svg = crate::graph::svg(&lab);
    assert!(svg.contains(r#"class="node router"><rect"#), "{svg}");
    assert!(crate::graph::dot(&lab).contains("shape=octagon"));
    assert!(crate::plan::exec_argv(r, &layout, None, &[], &["true".into()]).is_err());
}

#[test]
fn router_errors_name_line_key_and_expectation() {
    let bad = |from: &str, to: &str| parse(&WITH_ROUTER.replace(from, to), "r").unwrap_err();
    let e = bad("ip=10.2.0.1/24,mtu=1400", "ip=10.2.0.1/99");
    assert_eq!((e.line, e.key.as_str()), (8, "node.r.conf"), "{e}");
    let e = bad("10.3.0.0/16 via 10.2.0.9", "10.3.0.0/16 to 10.2.0.9");
    assert_eq!((e.line, e.key.as_str()), (9, "node.r.route"), "{e}");
    assert!(e.message.contains("expected \"PREFIX via ADDR\""), "{e}");
    let e = bad("10.3.0.0/16 via 10.2.0.9", "fd03::/48 via 10.2.0.9");
    assert!(e.message.contains("other address family"), "{e}");
    let e = bad("lan=10.1.0.100", "dmz=10.1.0.100");
    assert_eq!((e.line, e.key.as_str()), (10, "node.r.dhcp_server"), "{e}");
    assert!(
        e.message
            .contains("vde0..vde1 or a switch of its net (lan, wan)"),
        "{e}"
    );
    let e = bad("radv = [\"vde0\"]", "radv = [\"vde2\"]");
    assert_eq!((e.line, e.key.as_str()), (11, "node.r.radv"), "{e}");
    let e = bad("drop in vde1", "drop in vde7");
    assert_eq!((e.line, e.key.as_str()), (13, "node.r.filter"), "{e}");
    let e = bad(
        "kind = \"router\"",
        "kind = \"router\"\nip = [\"10.0.0.1/24\"]",
    );
    assert_eq!(e.key, "node.r.kind", "{e}");
    assert!(e.message.contains("configured per interface"), "{e}");
    let e = bad(
        "masquerade = [\"wan\"]",
        "masquerade = [\"wan\"]\nfilter_file = \"r.rules\"",
    );
    assert_eq!((e.line, e.key.as_str()), (13, "node.r.filter_file"), "{e}");
    assert!(e.message.contains("not both"), "{e}");
    let lab = parse(
        &WITH_ROUTER.replace("filter = [", "filter_file = \"r.rules\"\n#"),
        "r",
    )
    .unwrap();
    let step = plan(&lab, &Layout::new("/run/l")).remove(2);
    assert!(
        step.args.windows(2).any(|w| w == ["--filter", "r.rules"]),
        "{step:?}"
    );
    assert_eq!(step.file, None);
    let e = bad("dhcp = true", "dhcp = true\nradv = [\"lan\"]");
    assert_eq!((e.line, e.key.as_str()), (19, "node.h1.radv"), "{e}");
    assert!(e.message.contains("only router nodes take `radv`"), "{e}");
}

#[test]
fn router_stat_and_ifaces_parse_into_named_counters() {
    let stat: Vec<String> = ["drop no_route 2", "drop total 2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ifaces = vec![
        "vde0 mac 02:f1:00:00:01:00 mtu 1500 addrs 10.1.0.1/24 rx 7 tx 6 forwarded 4".to_string(),
    ];
    let c = crate::status::parse_router_stat(&stat, &ifaces);
    let get = |k: &str| c.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    assert_eq!(get("drop_no_route"), Some(2));
    assert_eq!(get("vde0_rx"), Some(7));
    assert_eq!(get("vde0_forwarded"), Some(4));
    assert_eq!(get("vde0_mtu"), None);
}

const WITH_BUS: &str = r#"
[switch.lan]

[bus.b]
policy = "switch"
lossless = true

[[link]]
a = "lan"
b = "b"

[node.h1]
kind = "ns"
net = ["b"]
ip = ["10.80.0.1/24"]

[node.s1]
kind = "stack"
net = ["b"]
ip = ["10.80.0.2/24"]
"#;

#[test]
fn a_bus_starts_with_the_switches_and_its_members_join_it_by_ipn() {
    let lab = parse(WITH_BUS, "b").unwrap();
    let layout = Layout::new("/run/l");
    let steps = plan(&lab, &layout);
    let bus = steps.iter().find(|s| s.id == "bus b").unwrap();
    assert_eq!(bus.phase, 0);
    assert_eq!(
        bus.args,
        [
            "ipn",
            "/run/l/bus/b",
            "--policy",
            "switch",
            "--lossless",
            "-d",
            "--pidfile",
            "/run/l/pid/bus-b.pid"
        ]
    );
    let h1 = steps.iter().find(|s| s.id == "node h1").unwrap();
    assert!(
        h1.args.contains(&"ipn:///run/l/bus/b".to_string()),
        "{h1:?}"
    );
    let link = steps.iter().find(|s| s.id == "link lan-b").unwrap();
    assert!(
        link.args.contains(&"ipn:///run/l/bus/b".to_string()),
        "{link:?}"
    );
    let svg = crate::graph::svg(&lab);
    assert!(svg.contains(r#"id="switch-b" class="bus""#), "{svg}");
    assert!(crate::graph::dot(&lab).contains("dashed"));

    let bad = |from: &str, to: &str| parse(&WITH_BUS.replace(from, to), "b").unwrap_err();
    let e = bad("policy = \"switch\"", "policy = \"ring\"");
    assert_eq!((e.line, e.key.as_str()), (5, "bus.b.policy"), "{e}");
    assert!(e.message.contains("expected hub, switch or mpegts"), "{e}");
    let e = bad(
        "net = [\"b\"]\nip = [\"10.80.0.1/24\"]",
        "net = [\"b:3\"]\nip = [\"10.80.0.1/24\"]",
    );
    assert_eq!(e.key, "node.h1.net", "{e}");
    assert!(e.message.contains("a bus, which has no ports"), "{e}");
    let e = bad("[bus.b]", "[bus.lan]");
    assert!(e.message.contains("already used by a switch"), "{e}");
}

#[test]
fn a_vnet_bus_is_created_with_vnet_and_refuses_members_that_do_not_speak_it() {
    let text = WITH_BUS.replace("lossless = true", "vnet = true");
    // The link from the switch and the stack node join b: neither speaks the framing.
    let e = parse(&text, "b").unwrap_err();
    assert_eq!(e.key, "link[0].b", "{e}");
    assert!(
        e.message.contains("bus b carries the virtio-net framing"),
        "{e}"
    );
    assert!(e.message.contains("the link lan-b does not speak"), "{e}");
    let text = text.replace("[[link]]\na = \"lan\"\nb = \"b\"\n", "");
    let e = parse(&text, "b").unwrap_err();
    assert_eq!(e.key, "node.s1.net", "{e}");
    assert!(
        e.message.contains("which a stack node does not speak"),
        "{e}"
    );
    let text = text.replace("kind = \"stack\"", "kind = \"ns\"");
    let lab = parse(&text, "b").unwrap();
    let steps = plan(&lab, &Layout::new("/run/l"));
    let bus = steps.iter().find(|s| s.id == "bus b").unwrap();
    assert!(bus.args.contains(&"--vnet".to_string()), "{bus:?}");
}

const WITH_USERSTACK: &str = r#"
name = "u"
[switch.lan]

[node.web]
kind = "userstack"
net = ["lan"]
ip = ["10.0.0.80/24"]
gw = "10.0.0.1"
command = "http-serve www --port 8080"
"#;

#[test]
fn a_userstack_node_is_one_filo_stack_process_in_the_files_directory() {
    let lab = parse(WITH_USERSTACK, "u").unwrap();
    assert_eq!(lab.nodes[0].kind, NodeKind::Userstack);
    let steps = plan(&lab, &Layout::new("/run/l"));
    let step = &steps[1];
    assert_eq!(
        (step.id.as_str(), step.phase, step.filo, step.in_file_dir),
        ("node web", 2, true, true)
    );
    assert_eq!(
        step.args,
        [
            "stack",
            "http-serve",
            "--vnl",
            "vde:///run/l/sw/lan",
            "--name",
            "web",
            "--ip",
            "10.0.0.80/24",
            "--gw",
            "10.0.0.1",
            "www",
            "--port",
            "8080"
        ]
    );
    // A server names the file it creates once it listens; the lab waits for that file.
    let ready = std::path::PathBuf::from("/run/l/ready/web");
    assert_eq!(
        step.start,
        Start::Foreground {
            ready: Some(ready.clone())
        }
    );
    assert_eq!(
        step.env,
        [(READY_FILE_ENV.to_string(), ready.display().to_string())]
    );
    // A client (fetch, ping, perf without --server) is ready once it still runs after a
    // moment; `perf --server` is a server.
    for (command, serves) in [
        ("fetch http://10.0.0.1/", false),
        ("ping 10.0.0.1", false),
        ("perf --connect 10.0.0.1:5001", false),
        ("perf --server", true),
    ] {
        let lab = parse(
            &WITH_USERSTACK.replace("http-serve www --port 8080", command),
            "u",
        )
        .unwrap();
        let steps = plan(&lab, &Layout::new("/run/l"));
        let Start::Foreground { ready } = &steps[1].start else {
            panic!("{command}: a userstack node runs in the foreground");
        };
        assert_eq!(ready.is_some(), serves, "{command}");
        assert_eq!(steps[1].env.is_empty(), !serves, "{command}");
    }
    // Other nodes run where `filo lab up` runs.
    assert!(!steps[0].in_file_dir);
    let bad = |from: &str, to: &str| parse(&WITH_USERSTACK.replace(from, to), "u").unwrap_err();
    let e = bad("http-serve www", "python3 -m http.server");
    assert_eq!((e.line, e.key.as_str()), (10, "node.web.command"), "{e}");
    assert!(
        e.message
            .contains("expected a `filo stack` command, one of http-serve, perf, ping, fetch"),
        "{e}"
    );
    let e = bad("command = \"http-serve www --port 8080\"\n", "");
    assert_eq!(e.key, "node.web.command", "{e}");
    let e = bad("net = [\"lan\"]", "net = [\"lan\", \"lan\"]");
    assert!(e.message.contains("exactly one interface"), "{e}");
    let e = bad("gw = ", "run = [\"ping -c 1 10.0.0.1\"]\ngw = ");
    assert_eq!(e.key, "node.web.run", "{e}");
}
