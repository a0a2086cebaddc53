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
