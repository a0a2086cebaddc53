//! The main job and the help texts.

use std::process::Command;

const FILO: &str = env!("CARGO_BIN_EXE_filo");

#[test]
fn the_demo_runs_a_switch_with_nodes_that_talk() {
    let out = Command::new(FILO)
        .args(["demo", "-n", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("alice <- 02:00:00:00:00:b0 (unicast): \"bob here\""),
        "{text}"
    );
    assert!(text.contains("alice overheard 0 frame(s)"), "{text}");
}

#[test]
fn every_subcommand_has_help_with_examples() {
    for sub in ["plug", "switch", "console"] {
        let out = Command::new(FILO).args([sub, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(text.contains("EXAMPLES:"), "{sub}: {text}");
    }
    let out = Command::new(FILO).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["plug", "switch", "console", "demo"] {
        assert!(text.contains(sub), "{text}");
    }
}

/// Runs filo with `args`: (exit code, stderr).
fn filo_err(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(FILO)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    }
    let (_, err) = filo_err(&[
        "capture",
        "--duration",
        "1e19",
        "null://",
        "-w",
        "/dev/null",
    ]);
    assert!(err.contains("at most 1000000 seconds"), "{err}");
}
