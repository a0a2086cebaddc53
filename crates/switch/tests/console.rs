//! The management console: exact reply texts, effects and framing, on virtual time.

use filo_switch::console::{
    self, execute, execute_json, format_event, greeting, reply_json, run_script, DebugEvent, Reply,
    Session, BANNER, END_OF_SESSION, PROMPT,
};
use filo_switch::daemon::carry_out_loads;
use filo_switch::state::{Access, DaemonInfo, Effect, EndpointInfo, EndpointKind, SwitchState};
use filo_switch::wire::bpdu::BridgeId;
use filo_switch::{Core, CoreConfig, MacAddr, PortId};
use proptest::prelude::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const DATA: &str = "0000 DATA END WITH '.'\n";
const OK: &str = "1000 Success\n";

fn info(now: Instant) -> DaemonInfo {
    DaemonInfo {
        ctl_dir: PathBuf::from("/tmp/vde.ctl"),
        mode: 0o600,
        mgmt: Some(PathBuf::from("/tmp/vde.mgmt")),
        mgmt_mode: 0o600,
        pid: 4242,
        started: now,
        queue_len: 64,
        lossless: false,
    }
}

fn switch(now: Instant) -> SwitchState {
    SwitchState::new(Core::new(CoreConfig::default(), now), info(now))
}

/// Give `port` an endpoint `id` and activate it in the core.
fn connect(state: &mut SwitchState, now: Instant, port: PortId, id: u32, descr: &str) {
    let entry = state.port_mut(port).expect("port in range");
    entry.endpoints.push(EndpointInfo {
        id,
        kind: EndpointKind::UnixProg,
        description: descr.to_string(),
        uid: None,
    });
    state.core.set_port_active(now, port, true).unwrap();
}

fn mac(last: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, last])
}

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(60, 0);
    f
}

/// Run a command on a fresh session and return the text.
fn run(state: &mut SwitchState, now: Instant, cmd: &str) -> String {
    execute(state, &mut Session::new(), now, cmd).text
}

/// Run a command on a fresh session, carrying out `load`s as the daemon does.
fn run_loading(state: &mut SwitchState, now: Instant, cmd: &str) -> Reply {
    let mut session = Session::new();
    let reply = execute(state, &mut session, now, cmd);
    carry_out_loads(state, &mut session, now, reply)
}

fn data(body: &[&str]) -> String {
    let mut s = DATA.to_string();
    for l in body {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str(".\n");
    s.push_str(OK);
    s.push_str(PROMPT);
    s
}

fn status(line: &str) -> String {
    format!("{line}\n{PROMPT}")
}

#[test]
fn greeting_is_vde_banner_and_prompt() {
    assert_eq!(
        greeting(),
        "VDE switch V.2.3.2\n(C) Virtual Square Team (coord. R. Davoli) 2005,2006,2007 - GPLv2\n\nvde$ "
    );
    assert!(greeting().starts_with(BANNER));
}

#[test]
fn help_is_vdeterm_parsable() {
    let now = Instant::now();
    let mut s = switch(now);
    let text = run(&mut s, now, "help\n");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "0000 DATA END WITH '.'");
    assert_eq!(lines[1], "COMMAND PATH       SYNTAX          HELP");
    assert_eq!(lines[2], "------------       --------------  ------------");
    assert_eq!(
        lines[3],
        "ds                 ============    DATA SOCKET MENU"
    );
    assert_eq!(lines[4], "ds/showinfo                        show ds info");
    assert_eq!(
        lines[5],
        "help               [arg]           Help (limited to arg when specified)"
    );
    assert!(text.ends_with(&format!(".\n{OK}{PROMPT}")));
    // vdeterm: the first token of every line between the dashes and "." is a command.
    let start = lines.iter().position(|l| l.starts_with("----")).unwrap() + 1;
    let end = lines.iter().position(|l| *l == ".").unwrap();
    let tokens: Vec<&str> = lines[start..end]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    for t in [
        "port/print",
        "vlan/allprint",
        "hash/find",
        "port/setmirror",
        "port/drops",
        "port/capture",
    ] {
        assert!(tokens.contains(&t), "{t} missing");
    }
    assert!(!tokens.iter().any(|t| t.starts_with("plugin")));
    // Every non-menu entry dispatches (nothing answers 1038).
    for (line, t) in lines[start..end].iter().zip(&tokens) {
        if line.contains("============") || *t == "logout" || *t == "shutdown" || *t == "load" {
            continue;
        }
        let reply = run(&mut switch(now), now, t);
        assert!(!reply.contains("1038"), "{t}: {reply}");
    }
    // help with an argument filters by prefix.
    let text = run(&mut s, now, "help vlan/c");
    assert_eq!(
        text,
        data(&[
            "COMMAND PATH       SYNTAX          HELP",
            "------------       --------------  ------------",
            "vlan/create        N               create the VLAN with tag N",
        ])
    );
}

#[test]
fn port_print_with_one_endpoint() {
    let now = Instant::now();
    let mut s = switch(now);
    connect(&mut s, now, 1, 6, "qemu \"vm1\"");
    {
        let p = s.ports.get_mut(&1).unwrap();
        p.counters.in_frames = 3;
        p.counters.in_bytes = 180;
        p.counters.out_frames = 2;
        p.counters.out_bytes = 120;
        p.counters.drop_out_queue_full = 1;
        p.acl_group = Access::Id(4_000_123);
    }
    s.port_mut(2).unwrap(); // exists, inactive
    let expected = data(&[
        "Port 0001 untagged_vlan=0000 ACTIVE - Unnamed Allocatable",
        " Current User: NONE Access Control: (User: NONE - Group: 4000123)",
        " IN:  pkts          3          bytes                  180",
        " OUT: pkts          2          bytes                  120",
        " DROP: queue          1          error                    0",
        "  -- endpoint ID 0006 module unix prog   : qemu \"vm1\"",
    ]);
    assert_eq!(run(&mut s, now, "port/print"), expected);
    assert_eq!(run(&mut s, now, "port/print 1\n"), expected);
    assert_eq!(
        run(&mut s, now, "port/print 2"),
        format!("{DATA}.\n1006 No such device or address\n{PROMPT}")
    );
    let all = run(&mut s, now, "port/allprint 2");
    assert!(all.contains("Port 0002 untagged_vlan=0000 INACTIVE - Unnamed Allocatable\n"));
    let all = run(&mut s, now, "port/allprint");
    assert!(all.contains("Port 0001 ") && all.contains("Port 0002 "));
}

#[test]
fn hash_print_and_find() {
    let now = Instant::now();
    let mut s = switch(now);
    connect(&mut s, now, 1, 6, "a");
    connect(&mut s, now, 2, 7, "b");
    let mut out = Vec::new();
    s.core
        .handle_frame(now, 1, &frame(MacAddr::BROADCAST, mac(0xaa)), &mut out);
    let later = now + Duration::from_secs(5);
    let text = run(&mut s, later, "hash/print");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    let line = lines[1];
    assert!(line.starts_with("Hash: "), "{line}");
    let bucket: u32 = line[6..10].parse().unwrap();
    assert!(bucket < 128);
    assert_eq!(
        &line[10..],
        " Addr: 02:00:00:00:00:aa VLAN 0000 to port: 001  age 5 secs"
    );
    assert_eq!(
        run(&mut s, later, "hash/find 02:00:00:00:00:aa"),
        data(&["Port 0001 age 5 secs"])
    );
    assert_eq!(
        run(&mut s, later, "hash/find 02.00.00.00.00.aa 0"),
        data(&["Port 0001 age 5 secs"])
    );
    assert_eq!(
        run(&mut s, later, "hash/find 02:00:00:00:00:bb"),
        format!("{DATA}.\n1019 No such device\n{PROMPT}")
    );
    assert_eq!(
        run(&mut s, later, "hash/find 02:00:00"),
        format!("{DATA}.\n1022 Invalid argument\n{PROMPT}")
    );
}

#[test]
fn hash_settings() {
    let now = Instant::now();
    let mut s = switch(now);
    assert_eq!(
        run(&mut s, now, "hash/showinfo"),
        data(&[
            "Hash size 128",
            "GC interval 2 secs",
            "GC expire 100 secs",
            "Min persistence 3 secs"
        ])
    );
    for cmd in [
        "hash/setsize 200",
        "hash/setgcint 5",
        "hash/setexpire 30",
        "hash/setminper 0",
    ] {
        assert_eq!(run(&mut s, now, cmd), status("1000 Success"), "{cmd}");
    }
    assert_eq!(
        run(&mut s, now, "hash/showinfo"),
        data(&[
            "Hash size 256",
            "GC interval 5 secs",
            "GC expire 30 secs",
            "Min persistence 0 secs"
        ])
    );
    assert_eq!(
        run(&mut s, now, "hash/setgcint 0"),
        status("1022 Invalid argument")
    );
}

#[test]
fn vlan_create_setvlan_print() {
    let now = Instant::now();
    let mut s = switch(now);
    connect(&mut s, now, 1, 6, "a");
    connect(&mut s, now, 2, 7, "b");
    s.port_mut(3).unwrap();
    assert_eq!(run(&mut s, now, "vlan/create 10"), status("1000 Success"));
    assert_eq!(
        run(&mut s, now, "vlan/create 10"),
        status("1017 File exists")
    );
    assert_eq!(
        run(&mut s, now, "vlan/create 4094"),
        status("1022 Invalid argument")
    );
    assert_eq!(
        run(&mut s, now, "port/setvlan 1 10"),
        status("1000 Success")
    );
    assert_eq!(
        run(&mut s, now, "port/setvlan 1 11"),
        status("1006 No such device or address")
    );
    assert_eq!(
        run(&mut s, now, "vlan/addport 10 2"),
        status("1000 Success")
    );
    assert_eq!(
        run(&mut s, now, "vlan/delport 10 1"),
        status("1098 Address already in use")
    );
    assert_eq!(
        run(&mut s, now, "vlan/print"),
        data(&[
            "VLAN 0000",
            " -- Port 0002 tagged=0 active=1 status=Forwarding",
            "VLAN 0010",
            " -- Port 0001 tagged=0 active=1 status=Forwarding",
            " -- Port 0002 tagged=1 active=1 status=Forwarding",
        ])
    );
    assert_eq!(
        run(&mut s, now, "vlan/allprint 0"),
        data(&[
            "VLAN 0000",
            " -- Port 0002 tagged=0 active=1 status=Forwarding",
            " -- Port 0003 tagged=0 active=0 status=Discarding",
        ])
    );
    assert_eq!(
        run(&mut s, now, "vlan/print 11"),
        format!("{DATA}.\n1006 No such device or address\n{PROMPT}")
    );
    assert_eq!(
        run(&mut s, now, "vlan/remove 10"),
        status("1016 Device or resource busy")
    );
    assert!(run(&mut s, now, "port/print 1").contains("untagged_vlan=0010"));
}

#[test]
fn unknown_commands() {
    let now = Instant::now();
    let mut s = switch(now);
    let enosys = status("1038 Function not implemented");
    for cmd in ["foo", "port/printXYZ", "ds", "port", "plugin/list", "Help"] {
        assert_eq!(run(&mut s, now, cmd), enosys, "{cmd}");
    }
}

#[test]
fn bad_arguments() {
    let now = Instant::now();
    let mut s = switch(now);
    let einval = status("1022 Invalid argument");
    for cmd in [
        "port/create",
        "port/create x",
        "port/create -1",
        "port/create 32",
        "port/create 99999999999999999999",
        "port/create 1 2",
        "hash/setexpire -1",
        "hash/setexpire 1x",
        "port/sethub",
        "port/setvlan 1",
        "vlan/create 65536",
        "fstp/setfstp yes",
        "port/setnumports 0",
        "debug/add",
        "load",
    ] {
        let text = run(&mut s, now, cmd);
        assert!(text.ends_with(&einval), "{cmd}: {text}");
    }
    assert_eq!(
        run(&mut s, now, "port/print abc"),
        format!("{DATA}.\n1022 Invalid argument\n{PROMPT}")
    );
}

#[test]
fn comments_and_empty_lines_give_the_prompt() {
    let now = Instant::now();
    let mut s = switch(now);
    for cmd in [
        "",
        "\n",
        "\r\n",
        "   \t\n",
        "# a comment\n",
        "  #port/create 3",
    ] {
        let r = execute(&mut s, &mut Session::new(), now, cmd);
        assert_eq!(r.text, PROMPT, "{cmd:?}");
        assert!(r.effects.is_empty());
    }
    assert!(!s.ports.contains_key(&3));
    // Leading blanks before a command are skipped.
    assert_eq!(
        run(&mut s, now, " \tport/create 3\n"),
        status("1000 Success")
    );
}

#[test]
fn logout_and_shutdown_end_the_session() {
    let now = Instant::now();
    let mut s = switch(now);
    let r = execute(&mut s, &mut Session::new(), now, "logout\n");
    assert_eq!(r.text, "9999 END OF SESSION");
    assert_eq!(r.effects, vec![Effect::Logout]);
    let r = execute(&mut s, &mut Session::new(), now, "shutdown");
    assert_eq!(r.text, END_OF_SESSION);
    assert_eq!(r.effects, vec![Effect::Shutdown]);
}

#[test]
fn port_epclose_remove_and_capture_effects() {
    let now = Instant::now();
    let mut s = switch(now);
    connect(&mut s, now, 1, 6, "a");
    let mut session = Session::new();
    let r = execute(&mut s, &mut session, now, "port/epclose 1 6");
    assert_eq!(r.text, status("1000 Success"));
    assert_eq!(r.effects, vec![Effect::CloseEndpoint { port: 1, id: 6 }]);
    let r = execute(&mut s, &mut session, now, "port/epclose 1 7");
    assert_eq!(r.text, status("1006 No such device or address"));
    assert!(r.effects.is_empty());

    let r = execute(&mut s, &mut session, now, "port/capture 1 /tmp/p1.pcap");
    assert_eq!(
        r.effects,
        vec![Effect::Capture {
            port: 1,
            path: Some(PathBuf::from("/tmp/p1.pcap"))
        }]
    );
    let r = execute(&mut s, &mut session, now, "port/capture 1 off");
    assert_eq!(
        r.effects,
        vec![Effect::Capture {
            port: 1,
            path: None
        }]
    );

    let r = execute(&mut s, &mut session, now, "port/remove 1");
    assert_eq!(r.text, status("1000 Success"));
    assert_eq!(r.effects, vec![Effect::ClosePort { port: 1 }]);
    assert_eq!(r.events, vec![DebugEvent::PortRemoved(1)]);
    assert!(!s.ports.contains_key(&1));
    let r = execute(&mut s, &mut session, now, "port/remove 1");
    assert_eq!(r.text, status("1006 No such device or address"));
}

#[test]
fn port_create_createauto_setnumports() {
    let now = Instant::now();
    let mut s = switch(now);
    connect(&mut s, now, 1, 6, "a");
    connect(&mut s, now, 5, 7, "b");
    let r = execute(&mut s, &mut Session::new(), now, "port/createauto");
    assert_eq!(r.text, data(&["Port 0002"]));
    assert_eq!(r.events, vec![DebugEvent::PortAdded(2)]);
    assert!(!s.ports[&2].allocatable);
    assert_eq!(
        run(&mut s, now, "port/create 2"),
        status("1017 File exists")
    );
    assert_eq!(
        run(&mut s, now, "port/allocatable 2 1"),
        status("1000 Success")
    );
    assert!(s.ports[&2].allocatable);
    assert_eq!(
        run(&mut s, now, "port/setnumports 33"),
        status("1028 No space left on device")
    );
    let r = execute(&mut s, &mut Session::new(), now, "port/setnumports 4");
    assert_eq!(r.text, status("1000 Success"));
    assert_eq!(r.effects, vec![Effect::ClosePort { port: 5 }]);
    assert_eq!(s.numports, 4);
    assert!(run(&mut s, now, "port/showinfo")
        .starts_with(&format!("{DATA}Numports=4\nHUB=false\ncounters=true\n")));
    assert_eq!(
        run(&mut s, now, "port/create 4"),
        status("1022 Invalid argument")
    );
}

#[test]
fn port_access_control() {
    let now = Instant::now();
    let mut s = switch(now);
    s.port_mut(1).unwrap();
    assert_eq!(
        run(&mut s, now, "port/setuser 1 4000123"),
        status("1000 Success")
    );
    assert_eq!(
        run(&mut s, now, "port/setgroup 1 ANY"),
        status("1000 Success")
    );
    assert_eq!(s.ports[&1].acl_user, Access::Id(4_000_123));
    assert_eq!(s.ports[&1].acl_group, Access::Any);
    assert!(run(&mut s, now, "port/allprint 1")
        .contains("Access Control: (User: 4000123 - Group: ANY)"));
    assert_eq!(
        run(&mut s, now, "port/setuser 1 no-such-user-xyzzy"),
        status("1022 Invalid argument")
    );
    assert_eq!(
        run(&mut s, now, "port/setuser 7 NONE"),
        status("1006 No such device or address")
    );
    assert_eq!(
        run(&mut s, now, "port/setuser 1 NONE"),
        status("1000 Success")
    );
    assert_eq!(s.ports[&1].acl_user, Access::None);
}

#[test]
fn info_commands() {
    let now = Instant::now();
    let mut s = switch(now);
    let text = run(&mut s, now + Duration::from_secs(7), "showinfo");
    assert!(text.starts_with(&format!(
        "{DATA}VDE switch V.2.3.2\n(C) Virtual Square Team (coord. R. Davoli) 2005,2006,2007 - GPLv2\n\npid 4242 MAC 02:00:00:00:00:01 uptime 7\nmgmt /tmp/vde.mgmt perm 0600\nfilo "
    )));
    assert_eq!(
        run(&mut s, now, "ds/showinfo"),
        data(&["ctl dir /tmp/vde.ctl", "std mode 0600"])
    );
    let text = run(&mut s, now, "fstp/showinfo");
    assert!(text.starts_with(&format!(
        "{DATA}MAC 02:00:00:00:00:01 Priority 32768 (0x8000)\nFSTP=false\n"
    )));
    assert_eq!(run(&mut s, now, "fstp/setfstp 1"), status("1000 Success"));
    assert!(run(&mut s, now, "fstp/showinfo").contains("\nFSTP=true\n"));
    assert_eq!(
        run(&mut s, now, "fstp/bonus 0 1 100"),
        status("1095 Operation not supported")
    );
    let text = run(&mut s, now, "fstp/print 0");
    assert!(
        text.starts_with(&format!(
            "{DATA}FST DATA VLAN 0000 ROOTSWITCH \n ++ root 80:00:02:00:00:00:00:01\n"
        )),
        "{text}"
    );
}

#[test]
fn port_drops_and_mirror() {
    let now = Instant::now();
    let mut s = switch(now);
    connect(&mut s, now, 1, 6, "a");
    let mut out = Vec::new();
    s.core.handle_frame(now, 1, &[0u8; 4], &mut out);
    let text = run(&mut s, now, "port/drops");
    assert!(
        text.contains(&format!("\n{:<20} {:>20}\n", "too_short", 1)),
        "{text}"
    );
    assert!(text.contains(&format!("\n{:<20} {:>20}\n", "total", 1)));
    assert!(text
        .contains("\nPort 0001 in          0 queue_full          0 error          0 queued 0\n"));
    assert_eq!(run(&mut s, now, "port/setmirror 1"), status("1000 Success"));
    assert_eq!(s.core.mirror(), Some(1));
    assert_eq!(
        run(&mut s, now, "port/setmirror 9"),
        status("1006 No such device or address")
    );
    assert_eq!(
        run(&mut s, now, "port/setmirror NONE"),
        status("1000 Success")
    );
    assert_eq!(s.core.mirror(), None);
}

#[test]
fn debug_subscriptions_and_events() {
    let now = Instant::now();
    let mut s = switch(now);
    let mut session = Session::new();
    assert!(!session.wants("port/ep/+"));
    let r = execute(&mut s, &mut session, now, "debug/add port/ep");
    assert_eq!(r.text, status("1000 Success"));
    assert!(session.wants("port/ep/+") && session.wants("port/ep/-"));
    assert!(!session.wants("port/+"));
    execute(&mut s, &mut session, now, "debug/add hash/+");
    assert!(session.wants("hash/+") && !session.wants("hash/-"));
    assert_eq!(
        execute(&mut s, &mut session, now, "debug/add nothing").text,
        status("1002 No such file or directory")
    );
    let list = execute(&mut s, &mut session, now, "debug/list").text;
    assert!(
        list.contains("\nhash/+                 011 ON     hash: new element\n"),
        "{list}"
    );
    assert!(list.contains("\nport/+                 021 OFF    new port\n"));
    execute(&mut s, &mut session, now, "debug/del port");
    assert!(!session.wants("port/ep/+") && session.wants("hash/+"));

    let cases = [
        (
            DebugEvent::EndpointAdded { port: 1, id: 6 },
            "port/ep/+",
            "3031 port/ep/+ Port 01 FD  6\n",
        ),
        (
            DebugEvent::Description {
                port: 1,
                id: 6,
                descr: "DBG".into(),
            },
            "port/descr",
            "3023 port/descr Port 01 FD  6 -> \"DBG\"\n",
        ),
        (
            DebugEvent::HashAdded {
                mac: mac(0xaa),
                vlan: 0,
                port: 1,
            },
            "hash/+",
            "3011 hash/+ 02:00:00:00:00:aa VLAN 00:00 Port 1\n",
        ),
        (DebugEvent::PortRemoved(1), "port/-", "3022 port/- 01\n"),
        (
            DebugEvent::StpRoot {
                port: 0,
                vlan: 4093,
                root: BridgeId::new(0x8000, MacAddr([0, 0xff, 0x31, 0xcd, 0x2b, 0x54])),
            },
            "fstp/root",
            "3045 fstp/root Port 0000 VLAN 0f:fd -> 80:00:00:ff:31:cd:2b:54\n",
        ),
    ];
    for (ev, cat, line) in cases {
        assert_eq!(format_event(&ev), (cat, line.to_string()));
    }
}

#[test]
fn json_form_escapes() {
    let now = Instant::now();
    let mut s = switch(now);
    connect(&mut s, now, 1, 6, "say \"hi\" \\o/");
    let (json, effects) = execute_json(&mut s, &mut Session::new(), now, "port/print 1");
    assert!(effects.is_empty());
    assert!(
        json.starts_with("{\"status\":1000,\"error\":null,\"lines\":[\"Port 0001 "),
        "{json}"
    );
    assert!(
        json.contains(r#""  -- endpoint ID 0006 module unix prog   : say \"hi\" \\o/"]}"#),
        "{json}"
    );
    let (json, _) = execute_json(&mut s, &mut Session::new(), now, "nope");
    assert_eq!(
        json,
        r#"{"status":1038,"error":"Function not implemented","lines":[]}"#
    );
    let (json, effects) = execute_json(&mut s, &mut Session::new(), now, "logout");
    assert_eq!(json, r#"{"status":9999,"error":null,"lines":[]}"#);
    assert_eq!(effects, vec![Effect::Logout]);
    // Control characters reach the output only through script echoes.
    let dir = std::env::temp_dir().join(format!("filo-console-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ctl.rc");
    std::fs::write(&path, "# tab\there \u{1}\u{1f}\n").unwrap();
    let json = reply_json(&run_loading(&mut s, now, &format!("load {}", path.display())).text);
    assert_eq!(
        json,
        format!(
            r#"{{"status":1000,"error":null,"lines":["vde[{}]: # tab\there \u0001\u001f"]}}"#,
            path.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scripts_rc_and_load() {
    let now = Instant::now();
    let mut s = switch(now);
    let mut session = Session::new();
    let rc = "vlan/create 10\n\n# comment\nport/create 3\r\nport/setvlan 3 10\nlogout\nbogus\n";
    let r = run_script(
        &mut s,
        &mut session,
        now,
        "/etc/vde2/vde_switch.rc",
        rc,
        false,
    );
    assert_eq!(r.text, "");
    assert!(r.effects.is_empty());
    assert_eq!(r.events, vec![DebugEvent::PortAdded(3)]);
    assert!(run(&mut s, now, "port/allprint 3").contains("untagged_vlan=0010"));

    let r = run_script(
        &mut s,
        &mut session,
        now,
        "/tmp/x.rc",
        "vlan/create 20\nport/createauto\nport/create 3\n",
        true,
    );
    assert_eq!(
        r.text,
        "vde[/tmp/x.rc]: vlan/create 20\n1000 Success\n\
         vde[/tmp/x.rc]: port/createauto\n0000 DATA END WITH '.'\nPort 0001\n.\n1000 Success\n\
         vde[/tmp/x.rc]: port/create 3\n1017 File exists\n"
    );

    let r = run_script(
        &mut s,
        &mut session,
        now,
        "x",
        "shutdown\nport/create 9\n",
        false,
    );
    assert_eq!(r.effects, vec![Effect::Shutdown]);
    assert!(!s.ports.contains_key(&9));

    // `load` through the console, a missing file, and a script that loads itself.
    let dir = std::env::temp_dir().join(format!("filo-console-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.rc");
    std::fs::write(&path, "vlan/create 30\n").unwrap();
    let p = path.display().to_string();
    assert_eq!(
        run_loading(&mut s, now, &format!("load {p}\n")).text,
        format!("{DATA}vde[{p}]: vlan/create 30\n1000 Success\n.\n{OK}{PROMPT}")
    );
    assert_eq!(
        run_loading(&mut s, now, &format!("load {p}/missing")).text,
        format!("{DATA}.\n1020 Not a directory\n{PROMPT}")
    );
    assert_eq!(
        run_loading(&mut s, now, &format!("load {}/missing.rc", dir.display())).text,
        format!("{DATA}.\n1002 No such file or directory\n{PROMPT}")
    );
    let selfie = dir.join("self.rc");
    std::fs::write(&selfie, format!("load {}\n", selfie.display())).unwrap();
    let text = run_loading(&mut s, now, &format!("load {}", selfie.display())).text;
    assert!(text.contains("1040 Too many levels of symbolic links"));
    assert!(text.ends_with(&format!("{OK}{PROMPT}")));
    assert_eq!(
        run_loading(&mut s, now, "load /dev/null").text,
        format!("{DATA}.\n1022 Invalid argument\n{PROMPT}")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn command_prefix() -> impl Strategy<Value = String> {
    let names: Vec<&'static str> = vec![
        "help",
        "showinfo",
        "ds/showinfo",
        "debug/list",
        "debug/add",
        "debug/del",
        "hash/showinfo",
        "hash/setsize",
        "hash/setgcint",
        "hash/setexpire",
        "hash/setminper",
        "hash/print",
        "hash/find",
        "fstp/showinfo",
        "fstp/setfstp",
        "fstp/setedge",
        "fstp/bonus",
        "fstp/print",
        "port/showinfo",
        "port/setnumports",
        "port/sethub",
        "port/setvlan",
        "port/createauto",
        "port/create",
        "port/remove",
        "port/allocatable",
        "port/setuser",
        "port/setgroup",
        "port/epclose",
        "port/resetcounter",
        "port/print",
        "port/allprint",
        "vlan/create",
        "vlan/remove",
        "vlan/addport",
        "vlan/delport",
        "vlan/print",
        "vlan/allprint",
        "port/setmirror",
        "port/drops",
        "port/capture",
        "logout",
        "shutdown",
    ];
    proptest::sample::select(names).prop_map(str::to_string)
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(input in any::<String>()) {
        let now = Instant::now();
        let mut s = switch(now);
        connect(&mut s, now, 1, 6, "a");
        let r = execute(&mut s, &mut Session::new(), now, &input);
        let loads = r.effects.iter().any(|e| matches!(e, Effect::Load(_)));
        prop_assert!(r.text.ends_with(PROMPT) || r.text == END_OF_SESSION || loads);
        let (json, _) = execute_json(&mut s, &mut Session::new(), now, &input);
        let ok = json.starts_with("{\"status\":");
        prop_assert!(ok, "{}", json);
    }

    #[test]
    fn commands_with_arbitrary_arguments_never_panic(
        cmds in proptest::collection::vec(
            (command_prefix(), "[ \t0-9a-zA-Z:./_-]{0,24}"), 1..8)
    ) {
        let now = Instant::now();
        let mut s = switch(now);
        connect(&mut s, now, 1, 6, "a");
        connect(&mut s, now, 2, 7, "b");
        let mut session = Session::new();
        for (cmd, arg) in cmds {
            let r = execute(&mut s, &mut session, now, &format!("{cmd} {arg}\n"));
            prop_assert!(r.text.ends_with(PROMPT) || r.text == END_OF_SESSION, "{}", r.text);
        }
    }
}

#[test]
fn console_module_constants() {
    assert_eq!(console::PROMPT, "\nvde$ ");
    assert_eq!(console::END_OF_SESSION, "9999 END OF SESSION");
}

#[test]
fn load_is_an_effect_the_daemon_answers() {
    let now = Instant::now();
    let mut s = switch(now);
    let mut session = Session::new();
    // The console reads no file: the path need not exist.
    let r = execute(&mut s, &mut session, now, "load /nonexistent/a.rc");
    assert_eq!(r.text, "");
    assert_eq!(
        r.effects,
        vec![Effect::Load(PathBuf::from("/nonexistent/a.rc"))]
    );
    // A script that loads another stops there and asks for it.
    let r = console::loaded(
        &mut s,
        &mut session,
        now,
        Ok("vlan/create 7\nload b.rc\nvlan/create 8\n"),
    );
    assert_eq!(
        r.text,
        format!(
            "{DATA}vde[/nonexistent/a.rc]: vlan/create 7\n{OK}vde[/nonexistent/a.rc]: load b.rc\n"
        )
    );
    assert_eq!(r.effects, vec![Effect::Load(PathBuf::from("b.rc"))]);
    assert!(!run(&mut s, now, "vlan/print 8").contains(OK));
    // Reading it failed: that load fails, the outer script goes on.
    let r = console::loaded(&mut s, &mut session, now, Err(13));
    assert_eq!(
        r.text,
        format!("{DATA}.\n1013 Permission denied\nvde[/nonexistent/a.rc]: vlan/create 8\n{OK}.\n{OK}{PROMPT}")
    );
    assert!(r.effects.is_empty());
    // Nothing pending: nothing to do.
    assert_eq!(
        console::loaded(&mut s, &mut session, now, Ok("vlan/create 9")),
        Reply::default()
    );
    // shutdown in a loaded script ends the session.
    let r = execute(&mut s, &mut session, now, "load x");
    assert_eq!(r.effects, vec![Effect::Load(PathBuf::from("x"))]);
    let r = console::loaded(&mut s, &mut session, now, Ok("shutdown\nvlan/create 9\n"));
    assert_eq!(r.effects, vec![Effect::Shutdown]);
    assert!(r.text.ends_with(END_OF_SESSION));
    assert!(!run(&mut s, now, "vlan/print 9").contains(OK));
}

/// Found by fuzzing (console_files): a script loading itself four times ran 4^8 scripts, so a
/// 1 MiB script of `load` lines stalled the switch for good. One command runs at most
/// `MAX_LOADS` scripts; the `load`s beyond fail with ELOOP and the reply stays framed.
#[test]
fn loads_of_one_command_are_bounded() {
    let now = Instant::now();
    let mut s = switch(now);
    let mut session = Session::new();
    let script = "load f\nload f\nload f\nload f\n";
    let mut reply = execute(&mut s, &mut session, now, "load f");
    let mut loads = 0;
    while let Some(at) = reply
        .effects
        .iter()
        .position(|e| matches!(e, Effect::Load(_)))
    {
        reply.effects.remove(at);
        loads += 1;
        assert!(loads <= console::MAX_LOADS, "{loads} loads");
        let next = console::loaded(&mut s, &mut session, now, Ok(script));
        reply.text.push_str(&next.text);
        reply.effects.extend(next.effects);
    }
    assert_eq!(loads, console::MAX_LOADS);
    assert!(reply
        .text
        .contains("1040 Too many levels of symbolic links"));
    assert!(
        reply.text.ends_with(&format!("{OK}{PROMPT}")),
        "{}",
        reply.text
    );
    // The next command has the whole budget again.
    let r = execute(&mut s, &mut session, now, "load g");
    assert_eq!(r.effects, vec![Effect::Load(PathBuf::from("g"))]);
}

/// Found by fuzzing (console_commands): `hash/setgcint 18446744073709551615` overflowed
/// `Instant + Duration` and crashed the switch. The timers take at most 1,000,000 seconds,
/// as every duration on the command line.
#[test]
fn hash_timers_out_of_range_are_refused() {
    let now = Instant::now();
    let mut s = switch(now);
    for cmd in ["hash/setgcint", "hash/setexpire", "hash/setminper"] {
        let einval = status("1022 Invalid argument");
        assert_eq!(
            run(&mut s, now, &format!("{cmd} 18446744073709551615")),
            einval
        );
        assert_eq!(run(&mut s, now, &format!("{cmd} 1000001")), einval);
        assert_eq!(
            run(&mut s, now, &format!("{cmd} 1000000")),
            format!("{OK}{PROMPT}")
        );
        s.core.handle_timeout(now + Duration::from_secs(5));
    }
}
