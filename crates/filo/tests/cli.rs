//! The help texts (the main job, `filo demo`, is tests/demo.rs).

use std::process::Command;

const FILO: &str = env!("CARGO_BIN_EXE_filo");

#[test]
fn every_subcommand_has_help_with_examples() {
    let subs = [
        "plug",
        "switch",
        "capture",
        "wirefilter",
        "console",
        "demo",
        "ns",
        "mstack",
        "stack",
        "lab",
        "slirp",
        "router",
        "ipn",
    ];
    for sub in subs {
        let out = Command::new(FILO).args([sub, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(text.contains("EXAMPLES:"), "{sub}: {text}");
    }
    let out = Command::new(FILO).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Every subcommand the binary lists is one of those checked above.
    let listed: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != "help")
        .collect();
    assert_eq!(listed, subs, "{text}");
}

/// Runs filo with `args`: (exit code, stderr); a filo still running after 10 s fails the test.
fn filo_err(args: &[&str]) -> (Option<i32>, String) {
    let mut c = Command::new(FILO);
    c.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let (status, _, err) =
        filo_test_support::Proc::spawn(&mut c).output(std::time::Duration::from_secs(10));
    (status.code(), err)
}

#[test]
fn huge_and_negative_durations_are_refused_with_the_option_named() {
    let cases: &[(&str, &[&str])] = &[
        (
            "--timeout",
            &["plug", "--timeout", "1e30", "null://", "null://"],
        ),
        (
            "--duration",
            &[
                "capture",
                "--duration",
                "1e30",
                "null://",
                "-w",
                "/dev/null",
            ],
        ),
        (
            "--duration",
            &[
                "capture",
                "--duration",
                "1e19",
                "null://",
                "-w",
                "/dev/null",
            ],
        ),
        (
            "--duration",
            &["capture", "--duration=-1", "null://", "-w", "/dev/null"],
        ),
        (
            "--conf-timeout",
            &[
                "stack",
                "ping",
                "--conf-timeout",
                "18446744073709551615",
                "10.0.0.1",
            ],
        ),
        (
            "--interval",
            &["stack", "ping", "--interval", "1e30", "10.0.0.1"],
        ),
        (
            "--timeout",
            &["stack", "ping", "--timeout", "inf", "10.0.0.1"],
        ),
        ("--size", &["stack", "ping", "--size", "100000", "10.0.0.1"]),
        (
            "--timeout",
            &["stack", "fetch", "--timeout", "1e300", "http://10.0.0.1/"],
        ),
        (
            "--buffer-kib",
            &[
                "stack",
                "perf",
                "--connect",
                "10.0.0.1:1",
                "--buffer-kib",
                "18446744073709551615",
            ],
        ),
        (
            "--mib",
            &[
                "stack",
                "perf",
                "--connect",
                "10.0.0.1:1",
                "--mib",
                "18446744073709551615",
            ],
        ),
        (
            "--conf-timeout",
            &["ns", "--conf-timeout", "18446744073709551615", "--", "true"],
        ),
        (
            "--timeout",
            &["console", "--timeout", "1e30", "/nonexistent"],
        ),
    ];
    for (option, args) in cases {
        let (code, err) = filo_err(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(option), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if args.contains(&"1e19") {
            assert!(err.contains("at most 1000000 seconds"), "{err}");
        }
    }
}

#[test]
fn out_of_range_settings_are_refused_with_the_option_and_range_named() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["wirefilter", "--loss", "101", "null://", "null://"],
            "--loss \"101\": out of range: expected 0 to 100 percent",
        ),
        (
            &["wirefilter", "--dup", "200", "null://", "null://"],
            "--dup \"200\": out of range: expected 0 to 100 percent",
        ),
        (
            &["wirefilter", "--mtu", "0", "null://", "null://"],
            "--mtu \"0\": out of range: expected 1 to 65536 bytes",
        ),
        (
            &["wirefilter", "--bandwidth", "0", "null://", "null://"],
            "--bandwidth \"0\": out of range: expected at least 1 bytes/s",
        ),
        (
            &[
                "switch",
                "/nonexistent/filo-sw",
                "--nostdin",
                "--macaddr",
                "01:00:5e:00:00:01",
            ],
            "--macaddr 01:00:5e:00:00:01: a multicast address",
        ),
    ];
    for (args, expected) in cases {
        let (code, err) = filo_err(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // capture -c 0 would stop at once: refused (no -c means no limit).
    let (code, err) = filo_err(&["capture", "-c", "0", "null://", "-w", "/dev/null"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--count"), "{err}");
}

#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    let dir = std::env::temp_dir().join(format!("filo-cli-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let sw = dir.join("sw");
    let mut switch = Command::new(FILO)
        .args(["--verbose", "switch", "--nostdin"])
        .arg(&sw)
        .stdin(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sw.join("ctl").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A plug that joins and leaves: two INFO lines in the switch's log.
    let out = Command::new(FILO)
        .args(["capture", "--duration", "0.2", "-w", "/dev/null"])
        .arg(&sw)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _ = switch.kill();
    let _ = switch.wait();
    let text = std::fs::read_to_string(dir.join("log")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

#[test]
fn daemons_refuse_a_pid_file_that_exists() {
    let tmp = filo_test_support::TempDir::new("filo-cli-pid");
    let pid = tmp.join("taken.pid");
    std::fs::write(&pid, "1\n").unwrap();
    let pid = pid.to_str().unwrap();
    let sw = tmp.join("sw");
    let vnl = format!("vde://{}", sw.display());
    for args in [
        vec!["switch", sw.to_str().unwrap(), "-d", "-p", pid],
        vec!["router", "--vnl", &vnl, "-d", "-p", pid],
    ] {
        let (code, err) = filo_err(&args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains("already exists"), "{args:?}: {err}");
    }
    assert_eq!(
        std::fs::read_to_string(tmp.join("taken.pid")).unwrap(),
        "1\n"
    );
}

/// A daemon closes the descriptors it inherited (a pipe a CI runner or `$(...)` left open
/// would otherwise stay open as long as it lives): a switch (`daemonize`) and a router
/// (`daemonize_until_ready`) started with descriptor 5 on a file keep none on it.
#[test]
fn daemons_keep_no_descriptor_their_caller_left_open() {
    let tmp = filo_test_support::TempDir::new("filo-daemon-fds");
    let held = tmp.join("held");
    let (sw, sw_pid, r_pid) = (tmp.join("sw"), tmp.join("sw.pid"), tmp.join("r.pid"));
    let script = format!(
        "exec 5>{held}; {FILO} switch {sw} -d -p {sw_pid} && \
         {FILO} router --vnl vde://{sw} --conf ip=10.79.0.1/24 -d -p {r_pid}",
        held = held.display(),
        sw = sw.display(),
        sw_pid = sw_pid.display(),
        r_pid = r_pid.display(),
    );
    let status = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(status.success());
    // Both pids first: the router ends when its switch does.
    let pids = [&sw_pid, &r_pid].map(|pidfile| {
        let pid = filo_test_support::pidfile_pid(pidfile, std::time::Duration::from_secs(10));
        (pidfile.display().to_string(), pid.to_string())
    });
    let held_by = |pid: &str| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let fds: Vec<(String, Vec<String>)> = pids
        .iter()
        .map(|(file, pid)| (file.clone(), held_by(pid)))
        .collect();
    for (_, pid) in &pids {
        let _ = Command::new("kill").arg(pid).status();
    }
    for (file, fds) in fds {
        assert!(!fds.is_empty(), "the daemon of {file} is not running");
        assert!(
            !fds.iter()
                .any(|f| f.starts_with(&held.display().to_string())),
            "{file}'s daemon still holds {}: {fds:?}",
            held.display()
        );
    }
}

/// A daemon whose command line has an argument that is not UTF-8 (a path) starts: it used
/// to panic in the background while looking for descriptors to keep, after `filo switch -d`
/// had already said it was fine.
#[test]
fn a_daemon_with_a_path_that_is_not_utf8_starts() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = filo_test_support::TempDir::new("filo-daemon-bytes");
    let mut dir = tmp.path().as_os_str().as_bytes().to_vec();
    dir.extend_from_slice(b"/sw\xff");
    let dir = std::ffi::OsStr::from_bytes(&dir);
    let pidfile = tmp.join("sw.pid");
    let status = Command::new(FILO)
        .arg("switch")
        .arg(dir)
        .arg("-d")
        .arg("-p")
        .arg(&pidfile)
        .status()
        .unwrap();
    assert!(status.success());
    // No pid: the switch did not start.
    let pid = filo_test_support::pidfile_pid(&pidfile, std::time::Duration::from_secs(10));
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    assert!(alive, "the switch {pid} is gone");
}
