//! The README is tested: every fenced ```sh block of README.md runs, exactly as printed, as one
//! `bash -e` script, so the tour cannot drift from the program.
//!
//! Each block runs in its own world: `unshare --mount --pid --fork --mount-proc --net` (a
//! private mount, PID and network namespace, `lo` up), private tmpfs on /tmp and /run (the
//! README's fixed paths, /tmp/sw or /run/s1, collide with nothing), /etc as an overlay whose
//! changes vanish with the block (so `useradd alice` touches no real /etc), stdin /dev/null, a
//! fresh working directory, and PATH starting with the freshly built `filo`. Whatever the block
//! starts (daemons, `&` jobs, QEMU) dies with its PID namespace when the script ends or after
//! [`BLOCK_TIMEOUT`]. A block passes when its script exits 0; a failure names the block's README
//! line and shows the script and its output (traced with `-x`).
//!
//! Stand-ins: `ssh HOST COMMAND` runs COMMAND locally as if on another host, in a mount
//! namespace where /tmp is HOST's own (kept under /run/ssh-standin/HOST, with a home directory
//! the command starts in, as ssh's would), so `ssh otherhost filo switch /tmp/sw -d` makes a
//! second switch, not a clash with the first. The README says so next to the example. The loopback interface, with multicast on and 224.0.0.0/4 routed to
//! it, stands in for the LAN that `vxvde://` examples reach other hosts on.
//!
//! Not run: ```rust blocks (API sketches, not programs), ```text and bare ``` blocks (output
//! samples), and ```sh blocks right after a `<!-- not run by tests/readme.rs: REASON -->`
//! comment; the reason must be given. Other shell info strings (bash, console, shell) are
//! refused, so no example escapes the runner by its spelling.
//!
//! `README_BLOCK=LINE cargo test -p filo --test readme` runs only the block at that line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use filo_test_support::TempDir;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const README: &str = include_str!("../../../README.md");
/// The longest a block may run; then it is killed and fails with its output so far.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// Blocks run at once (each is mostly waiting: daemons starting, pings, timers).
const PARALLEL: usize = 3;
const SKIP_MARK: &str = "<!-- not run by tests/readme.rs:";

/// A fenced code block of the README.
#[derive(Debug, Clone)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    info: String,
    body: String,
    /// Why the block is not run, when a skip comment precedes it.
    skip: Option<String>,
}

/// Every fenced block, or the README's mistakes (a skip without a reason or without a block
/// after it, an unclosed fence, a shell block spelled other than `sh`).
fn parse(text: &str) -> Result<Vec<Block>, Vec<String>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(rest) = line.trim_start().strip_prefix(SKIP_MARK) {
            let reason = rest.trim_end().trim_end_matches("-->").trim();
            if reason.is_empty() {
                errors.push(format!(
                    "README.md:{}: a skip comment without a reason",
                    i + 1
                ));
            }
            let next_is_fence = lines
                .get(i + 1)
                .is_some_and(|l| l.trim_start().starts_with("```"));
            if !next_is_fence {
                errors.push(format!(
                    "README.md:{}: a skip comment not directly followed by a ``` block",
                    i + 1
                ));
            }
        }
        let Some(info) = line.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let start = i;
        let mut body = String::new();
        i += 1;
        while i < lines.len() && !lines[i].starts_with("```") {
            body.push_str(lines[i]);
            body.push('\n');
            i += 1;
        }
        if i == lines.len() {
            errors.push(format!("README.md:{}: an unclosed ``` block", start + 1));
        }
        i += 1;
        let skip = start
            .checked_sub(1)
            .and_then(|p| lines[p].trim_start().strip_prefix(SKIP_MARK))
            .map(|r| r.trim_end().trim_end_matches("-->").trim().to_string());
        let info = info.trim().to_string();
        if matches!(
            info.as_str(),
            "bash" | "shell" | "console" | "sh-session" | "zsh"
        ) {
            errors.push(format!(
                "README.md:{}: ```{info}: write ```sh (run by tests/readme.rs) or ```text (not run)",
                start + 1
            ));
        }
        if skip.is_some() && info != "sh" {
            errors.push(format!(
                "README.md:{}: a skip comment before a ```{info} block, which is never run anyway",
                start + 1
            ));
        }
        blocks.push(Block {
            line: start + 1,
            info,
            body,
            skip,
        });
    }
    if errors.is_empty() {
        Ok(blocks)
    } else {
        Err(errors)
    }
}

/// The `ssh` stand-in: `ssh [OPTIONS] HOST COMMAND...` runs COMMAND here, in HOST's home
/// directory (/run/ssh-standin/HOST/home) and with HOST's own /tmp (…/HOST/tmp) mounted on /tmp
/// in a mount namespace of its own.
const SSH_STANDIN: &str = r#"#!/bin/bash
# tests/readme.rs's stand-in for a second host: runs the command locally, with a /tmp of its own.
while [ $# -gt 0 ]; do
  case "$1" in
    -[BbcDEeFIiJLlmOopQRSWw]) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
host=${1:?ssh stand-in: no host}; shift
dir=/run/ssh-standin/$host
mkdir -p "$dir/tmp" "$dir/home"
cd "$dir/home"
exec unshare --mount --propagation private -- bash -c \
  'mount --bind "$1/tmp" /tmp && shift && exec bash -c "$*"' ssh-standin "$dir" "$@"
"#;

/// Prepares the block's world inside the new namespaces, then runs the block ($1) as PID 1.
const WRAPPER: &str = r#"set -e
mount -t tmpfs readme-run /run
mkdir /run/etc-upper /run/etc-work
mount -t overlay readme-etc -o lowerdir=/etc,upperdir=/run/etc-upper,workdir=/run/etc-work /etc
mount -t tmpfs readme-run /run
# filo and the stand-ins stay reachable wherever the checkout is, even under the /tmp that
# the next mount hides: bind mounts of their directories into the private /run.
mkdir -p /run/readme/filo /run/readme/standin
mount --bind "$README_FILO_DIR" /run/readme/filo
mount --bind "$README_STANDIN_DIR" /run/readme/standin
mount -t tmpfs readme-tmp /tmp
ip link set lo up multicast on
ip route add 224.0.0.0/4 dev lo
cd "$(mktemp -d /tmp/readme.XXXXXX)"
exec bash -e -x -c "$1"
"#;

/// Where the stand-ins live (outside /tmp, which each block replaces); installed once per run.
fn standin_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-bin");
        std::fs::create_dir_all(&dir).expect("create the stand-in directory");
        // Written aside and renamed: another test process may be running a block with it.
        let tmp = dir.join(filo_test_support::unique("ssh"));
        std::fs::write(&tmp, SSH_STANDIN).expect("write the ssh stand-in");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&tmp, dir.join("ssh")).expect("install the ssh stand-in");
        dir
    })
    .clone()
}

/// Runs one block; Err carries the report of a failure.
fn run_block(
    block: &Block,
    bin: &Path,
    out_dir: &TempDir,
    timeout: Duration,
) -> Result<Duration, String> {
    let filo_dir = Path::new(FILO).parent().expect("filo's directory");
    let path = "/run/readme/filo:/run/readme/standin:/usr/local/sbin:/usr/local/bin:/usr/sbin:\
                /usr/bin:/sbin:/bin";
    let log = out_dir.join(&format!("block-{}.log", block.line));
    let out = std::fs::File::create(&log).expect("create the block's log");
    let err = out.try_clone().expect("dup the log");
    let started = Instant::now();
    let mut child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--mount-proc",
            "--net",
            "--kill-child",
            "--",
            "bash",
            "-c",
            WRAPPER,
            "readme-block",
        ])
        .arg(&block.body)
        .env_clear()
        .env("PATH", path)
        .env("README_FILO_DIR", filo_dir)
        .env("README_STANDIN_DIR", bin)
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .env("TERM", "dumb")
        .env("PS4", "+ ")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("README.md:{}: cannot start unshare: {e}", block.line))?;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Ok(status);
        }
        if started.elapsed() > timeout {
            // --kill-child: the block's PID 1, and with it everything it started, dies too.
            let _ = child.kill();
            let _ = child.wait();
            break Err(format!("did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let verdict = match status {
        Ok(s) if s.success() => return Ok(started.elapsed()),
        Ok(s) => format!("failed ({s})"),
        Err(e) => e,
    };
    Err(format!(
        "README.md:{} (```sh block) {verdict} after {:.1} s\n--- script ---\n{}--- output ---\n{}",
        block.line,
        started.elapsed().as_secs_f64(),
        block.body,
        output
    ))
}

#[test]
fn every_readme_sh_block_runs() {
    let blocks = parse(README).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    let only: Option<usize> = std::env::var("README_BLOCK")
        .ok()
        .and_then(|v| v.parse().ok());
    let runnable: Vec<Block> = blocks
        .into_iter()
        .filter(|b| b.info == "sh" && b.skip.is_none())
        .filter(|b| only.is_none_or(|l| l == b.line))
        .collect();
    assert!(!runnable.is_empty(), "no ```sh block to run in README.md");
    let bin = standin_dir();
    let out_dir = TempDir::new("filo-readme");
    let queue = std::sync::Mutex::new(runnable.iter());
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                let Some(block) = queue.lock().expect("queue").next() else {
                    return;
                };
                match run_block(block, &bin, &out_dir, BLOCK_TIMEOUT) {
                    Ok(took) => eprintln!(
                        "README.md:{}: passed in {:.1} s",
                        block.line,
                        took.as_secs_f64()
                    ),
                    Err(report) => {
                        eprintln!("README.md:{}: FAILED", block.line);
                        failures
                            .lock()
                            .expect("failures")
                            .push((block.line, report));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("failures");
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {} README blocks failed (lines {}):\n\n{}",
        failures.len(),
        runnable.len(),
        failures
            .iter()
            .map(|(l, _)| l.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        failures
            .iter()
            .map(|(_, r)| r.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_skipped_readme_block_says_why() {
    let blocks = parse(README).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    for b in blocks.iter().filter(|b| b.skip.is_some()) {
        eprintln!(
            "README.md:{}: not run: {}",
            b.line,
            b.skip.as_deref().unwrap_or("")
        );
    }
    assert!(
        blocks.iter().any(|b| b.info == "sh" && b.skip.is_none()),
        "README.md has no ```sh block that runs"
    );
}

#[test]
fn the_readme_parser_finds_blocks_and_refuses_unexplained_skips() {
    let good = "text\n<!-- not run by tests/readme.rs: it is CI itself -->\n```sh\nsudo x\n```\n\
                ```sh\nfilo switch /tmp/sw -d\n```\n```text\n$ out\n```\n";
    let blocks = parse(good).expect("a well-formed README");
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[0].line, 3);
    assert_eq!(blocks[0].skip.as_deref(), Some("it is CI itself"));
    assert_eq!(blocks[1].line, 6);
    assert_eq!(blocks[1].body, "filo switch /tmp/sw -d\n");
    assert!(blocks[1].skip.is_none());
    assert_eq!(blocks[2].info, "text");

    let no_reason = "<!-- not run by tests/readme.rs: -->\n```sh\nx\n```\n";
    let errors = parse(no_reason).expect_err("a skip without a reason");
    assert!(
        errors[0].contains("README.md:1: a skip comment without a reason"),
        "{errors:?}"
    );

    let no_block = "<!-- not run by tests/readme.rs: why -->\n\n```sh\nx\n```\n";
    let errors = parse(no_block).expect_err("a skip not before a block");
    assert!(errors[0].contains("not directly followed"), "{errors:?}");

    let bash = "```bash\nx\n```\n";
    let errors = parse(bash).expect_err("a ```bash block");
    assert!(errors[0].contains("README.md:1: ```bash"), "{errors:?}");

    let unclosed = "```sh\nx\n";
    let errors = parse(unclosed).expect_err("an unclosed block");
    assert!(errors[0].contains("unclosed"), "{errors:?}");
}

/// Runs a block made up for the runner's own tests, as README line `line`.
fn run_made_up(line: usize, body: &str, timeout: Duration) -> Result<Duration, String> {
    let block = Block {
        line,
        info: "sh".into(),
        body: body.into(),
        skip: None,
    };
    let out = TempDir::new("filo-readme-self");
    run_block(&block, &standin_dir(), &out, timeout)
}

/// Whether a process whose command line contains `marker` is alive anywhere on the host.
fn process_alive(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains(marker))
}

#[test]
fn a_block_runs_isolated_and_a_failure_names_its_line_and_shows_its_output() {
    let marker = filo_test_support::unique("readme-marker");
    // Private /tmp and /run, a private /etc, lo up, PID 1, filo first on PATH.
    run_made_up(
        7,
        &format!(
            "echo x > /tmp/{marker} && echo x > /run/{marker}\n\
             useradd --no-create-home {marker}\n\
             ip link show lo | grep -q UP\n\
             test $$ = 1\n\
             test \"$(command -v filo)\" = /run/readme/filo/filo\n\
             filo --version\n"
        ),
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!Path::new(&format!("/tmp/{marker}")).exists());
    assert!(!Path::new(&format!("/run/{marker}")).exists());
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    assert!(
        !passwd.contains(&marker),
        "the block's useradd reached the real /etc"
    );
    // A failure: the line, the script and the output up to the failing command.
    let report = run_made_up(
        42,
        "echo before-the-failure\nfalse\necho after-the-failure\n",
        Duration::from_secs(20),
    )
    .expect_err("false fails");
    assert!(
        report.starts_with("README.md:42 (```sh block) failed"),
        "{report}"
    );
    assert!(
        report.contains("--- script ---\necho before-the-failure\nfalse\n"),
        "{report}"
    );
    assert!(report.contains("before-the-failure\n+ false"), "{report}");
    assert!(!report.contains("\nafter-the-failure"), "{report}");
}

#[test]
fn a_block_that_hangs_is_stopped_with_everything_it_started() {
    let marker = filo_test_support::unique("readme-hang");
    let hang = format!(
        "filo switch /tmp/sw -d\n(exec -a {marker} sleep 300) &\nexec -a {marker} sleep 300\n"
    );
    let report = run_made_up(3, &hang, Duration::from_secs(2)).expect_err("a hang");
    assert!(report.contains("did not finish within 2s"), "{report}");
    assert!(
        filo_test_support::wait_until(Duration::from_secs(5), || !process_alive(&marker)),
        "the block's processes outlived it"
    );
}
