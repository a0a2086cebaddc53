//! `filo demo`: its built-in lab comes up, every step prints what it measured (two pages from
//! two stacks on one port, round trips through the impaired cable, a page across the router,
//! the host's page through slirp), and nothing is left afterwards, as root and as an ordinary
//! user; `--keep` leaves the lab up for `filo lab status` and `down`; a step that fails makes
//! the demo fail, naming the step, and still leaves nothing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(120);

/// Runs `program ARGS` with the lab state under `root`: (success, stdout, stderr).
fn run_in(mut cmd: Command, root: &Path, args: &[&str]) -> (bool, String, String) {
    cmd.args(args)
        .env("FILO_LAB_DIR", root)
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (st, out, err) = Proc::spawn(&mut cmd).output(T);
    (st.success(), out, err)
}

fn filo(root: &Path, args: &[&str]) -> (bool, String, String) {
    run_in(Command::new(FILO), root, args)
}

/// The narrated line of step `n` ("N. ...").
fn step(out: &str, n: u32) -> &str {
    let prefix = format!("{n}. ");
    out.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no step {n}: {out}"))
}

/// Checks each step's line carries its measured outcome.
fn assert_narrated(out: &str) {
    assert!(step(out, 1).contains("web1 10.0.1.10/24 (pid "), "{out}");
    let s2 = step(out, 2);
    assert!(
        s2.contains("10.0.1.10:80 says \"hello from web1, one stack on port 80\"")
            && s2.contains("10.0.1.11:80 says \"hello from web2, another stack on port 80\""),
        "{out}"
    );
    let s3 = step(out, 3);
    let ms = |after: &str| -> f64 {
        let rest = &s3[s3.find(after).unwrap_or_else(|| panic!("{after}: {s3}")) + after.len()..];
        rest.split(" ms").next().unwrap().trim().parse().unwrap()
    };
    let direct = ms("to web1 on the switch");
    let slow = ms("behind the slow cable,");
    // 30 ms each way: a round trip through the cable takes at least 60 ms.
    assert!(slow >= 60.0 && direct < slow, "{s3}");
    assert!(s3.contains("(5 of 5 answered)"), "{s3}");
    let s4 = step(out, 4);
    assert!(
        s4.contains("fetched http://10.0.2.80/ on lan2: \"hello from web3, on the other LAN\"")
            && s4.contains("router r has forwarded"),
        "{out}"
    );
    let s5 = step(out, 5);
    assert!(
        s5.contains("which the gateway took to the host's 127.0.0.1:")
            && s5.contains(": \"hello from the host's 127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("Done in "), "{out}");
}

/// No process of a lab under `root` runs, and nothing is left in it (if it is there at all).
fn assert_nothing_left(root: &Path) {
    assert!(
        wait_until(Duration::from_secs(5), || processes_mentioning(root)
            .is_empty()),
        "left running: {:?}",
        processes_mentioning(root)
    );
    let left: Vec<_> = std::fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn the_demo_narrates_its_lab_and_leaves_nothing() {
    let tmp = TempDir::new("filo-demo");
    let root = tmp.join("labs");
    let (ok, out, err) = filo(&root, &["demo"]);
    assert!(ok, "{out}{err}");
    assert_narrated(&out);
    assert!(!root.exists(), "the demo left {}", root.display());
    assert_nothing_left(&root);
}

#[test]
fn an_ordinary_user_runs_the_demo() {
    let tmp = TempDir::new("filo-demo");
    let bin = copy_for_everyone(&tmp, FILO);
    let root = tmp.join("labs");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let (ok, out, err) = run_in(as_nobody(&bin), &root, &["demo"]);
    assert!(ok, "{out}{err}");
    assert_narrated(&out);
    assert_nothing_left(&root);
}

#[test]
fn the_demo_kept_up_is_looked_at_and_taken_down() {
    let tmp = TempDir::new("filo-demo");
    let root = tmp.join("labs");
    let (ok, out, err) = filo(&root, &["demo", "--keep"]);
    let _down = scopeguard(&root);
    assert!(ok, "{out}{err}");
    assert_narrated_kept(&out);
    let (ok, status, err) = filo(&root, &["lab", "status", "--name", "filo-demo", "--json"]);
    assert!(ok, "{err}");
    let s: serde_json::Value = serde_json::from_str(&status).unwrap();
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6, "{s}");
    assert!(nodes.iter().all(|n| n["alive"] == true), "{s}");
    assert!(!processes_mentioning(&root).is_empty());
    let (ok, out, err) = filo(&root, &["lab", "down", "--name", "filo-demo"]);
    assert!(ok && out.contains("10 processes stopped"), "{out}{err}");
    assert_nothing_left(&root);
}

fn assert_narrated_kept(out: &str) {
    assert!(step(out, 5).contains("hello from the host's"), "{out}");
    for l in [
        "filo lab status --name filo-demo",
        "filo lab web --name filo-demo --listen 127.0.0.1:8733",
        "http://127.0.0.1:8733/",
        "filo lab down --name filo-demo",
    ] {
        assert!(out.contains(l), "{l}: {out}");
    }
    assert!(!out.contains("Done in "), "{out}");
}

/// Takes the kept lab down when the test ends, even a failing one.
fn scopeguard(root: &Path) -> impl Drop + '_ {
    struct Down<'a>(&'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = filo(self.0, &["lab", "down", "--name", "filo-demo"]);
        }
    }
    Down(root)
}

#[test]
fn a_failing_step_is_named_and_leaves_nothing() {
    let tmp = TempDir::new("filo-demo");
    let root = tmp.join("labs");
    // The host's port the last step needs is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (ok, out, err) = filo(&root, &["demo", "--host-port", &port]);
    assert!(!ok, "{out}{err}");
    assert!(step(&out, 4).contains("hello from web3"), "{out}");
    assert!(
        err.contains("step 5 (out through slirp) failed")
            && err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!out.contains("5. "), "{out}");
    assert_nothing_left(&root);
}

/// The demo's lab is the example file, which `filo lab up` brings up from anywhere: its
/// servers' pages are found next to it.
#[test]
fn the_demos_lab_is_the_example_file() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/labs/demo.toml");
    let tmp = TempDir::new("filo-demo");
    let root = tmp.join("labs");
    let (ok, printed, _) = filo(&root, &["demo", "--print-lab"]);
    assert!(ok);
    assert_eq!(printed, std::fs::read_to_string(&file).unwrap());
    let mut up = Command::new(FILO);
    up.current_dir(tmp.path());
    let (ok, out, err) = run_in(up, &root, &["lab", "up", file.to_str().unwrap()]);
    let _down = scopeguard(&root);
    assert!(ok, "{out}{err}");
    let vnl = format!("vde://{}", root.join("filo-demo/sw/lan1").display());
    let (ok, page, err) = filo(
        &root,
        &[
            "stack",
            "fetch",
            "--vnl",
            &vnl,
            "--ip",
            "10.0.1.99/24",
            "http://10.0.1.20/",
        ],
    );
    assert!(
        ok && page == "hello from far, behind the slow cable\n",
        "{page}{err}"
    );
    let (ok, _, err) = filo(&root, &["lab", "down"]);
    assert!(ok, "{err}");
    assert_nothing_left(&root);
}

/// Ctrl-C (SIGINT) during the demo stops it and everything its lab started.
#[test]
fn an_interrupted_demo_leaves_nothing() {
    let tmp = TempDir::new("filo-demo");
    let root = tmp.join("labs");
    for wait_for in [
        "state.json",
        "files/demo/web3/index.html",
        "log/node-web3.log",
    ] {
        let mut p = Proc::spawn(
            Command::new(FILO)
                .arg("demo")
                .env("FILO_LAB_DIR", &root)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let marker = root.join("filo-demo").join(wait_for);
        assert!(
            wait_until(Duration::from_secs(30), || marker.exists()),
            "no {}",
            marker.display()
        );
        run(Command::new("kill").args(["-INT", &p.pid().to_string()]));
        let st = p.wait_exit(T);
        let (_, out, err) = p.output(T);
        assert!(!st.success(), "{wait_for}: {out}{err}");
        assert_nothing_left(&root);
    }
}
