//! `filo lab` at scale: a file declaring 10,000 stack nodes is refused with the limit named,
//! before anything starts (no state directory, no process).

use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");

#[test]
fn a_ten_thousand_node_file_is_refused_before_anything_starts() {
    let tmp = TempDir::new("filo-lsc1");
    let mut text = String::from("name = \"big\"\n[switch.lan]\nports = 4096\n");
    for i in 1..=10_000u32 {
        text.push_str(&format!(
            "[node.st{i}]\nkind = \"stack\"\nnet = [\"lan\"]\nip = [\"10.{}.{}.{}/8\"]\n",
            i >> 16,
            (i >> 8) & 0xff,
            i & 0xff
        ));
    }
    let file = tmp.join("big.toml");
    std::fs::write(&file, text).unwrap();
    let state = tmp.join("state");
    let p = Proc::spawn(
        Command::new(FILO)
            .args(["lab", "up"])
            .arg(&file)
            .env("FILO_LAB_DIR", &state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let (st, _, err) = p.output(Duration::from_secs(60));
    assert!(!st.success());
    assert!(
        err.contains("10001 switches, links, nodes and remotes: at most 2000 are supported"),
        "{err}"
    );
    assert!(!state.join("big").exists(), "a state directory was made");
}
