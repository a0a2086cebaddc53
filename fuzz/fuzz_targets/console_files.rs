//! Fuzz the switch console's file commands the way the daemon carries them out: command
//! lines with `load` and `port/capture`, scripts read with `filo_vnl::mgmt::read_script` from
//! files holding arbitrary bytes, and the replies parsed back with `filo_vnl::console`'s
//! framing. Asserts: no panic; `read_script` returns exactly the file's bytes (invalid UTF-8
//! replaced); every reply, once its `load`s are carried out, ends with the prompt or the end
//! of the session and parses as one status (1000..2000 or 9999); a `load` chain ends (at
//! most `MAX_LOADS` scripts per command, so a script that loads itself cannot stall the
//! switch); `port/capture N PATH` typed on the console asks to capture an existing port to
//! exactly PATH.
//!
//! Input: the console's command lines, then NUL-separated file contents `f1`, `f2`, … (a
//! `load` names them by these relative names; every other path is treated as missing, so the
//! fuzzer never opens device files).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use filo_fuzz::{carry_out_loads, switch_state};
use filo_switch::console::{self, Session};
use filo_switch::state::Effect;
use filo_vnl::console::parse_reply;
use libfuzzer_sys::fuzz_target;

/// How many scripts one command may run through `load`s (nested or one after another).
const MAX_LOADS: usize = 1000;
const MAX_FILES: usize = 4;

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("filo-fuzz-console-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("fuzz temp dir");
        d
    })
}

/// The daemon's side of `load`: only `f1`..`f4` exist.
fn read(path: &Path, files: usize) -> Result<String, i32> {
    let name = path.to_str().unwrap_or("");
    match name.strip_prefix('f').and_then(|n| n.parse::<usize>().ok()) {
        Some(n) if (1..=files).contains(&n) && name == format!("f{n}") => {
            filo_vnl::mgmt::read_script(&dir().join(name))
        }
        _ => Err(2), // ENOENT
    }
}

fn framed(text: &str) {
    assert!(
        text.ends_with("vde$ ") || text.ends_with("9999 END OF SESSION"),
        "unframed reply: {text:?}"
    );
    let reply = parse_reply(text);
    assert!(
        reply.status == 9999 || (1000..2000).contains(&reply.status),
        "status {} from {text:?}",
        reply.status
    );
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let commands = String::from_utf8_lossy(parts.next().unwrap_or(b""));
    let mut files = 0;
    for (i, content) in parts.take(MAX_FILES).enumerate() {
        let path = dir().join(format!("f{}", i + 1));
        std::fs::write(&path, content).expect("fuzz temp file");
        let text = filo_vnl::mgmt::read_script(&path);
        assert_eq!(text, Ok(String::from_utf8_lossy(content).into_owned()));
        files = i + 1;
    }

    let t0 = Instant::now();
    let mut state = switch_state(t0);
    let mut session = Session::new();
    for (i, line) in commands.split('\n').enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * 97);
        let reply = console::execute(&mut state, &mut session, now, line);
        let mut asked = 0;
        let (reply, loads) = carry_out_loads(&mut state, &mut session, now, reply, |path| {
            asked += 1;
            assert!(
                asked <= MAX_LOADS,
                "more than {MAX_LOADS} loads from {line:?}"
            );
            read(path, files)
        });
        let mut captures = Vec::new();
        framed(&reply.text);
        for e in &reply.effects {
            if let Effect::Capture { port, path } = e {
                // A script may remove the port after asking for its capture (the daemon then
                // refuses the capture); a single command may not.
                assert!(
                    loads > 0 || state.ports.contains_key(port),
                    "capture of a missing port {port:?}"
                );
                captures.push(path.clone());
            }
        }
        // A capture typed on the console names the path as given (after the port number).
        let typed = line.trim_start_matches([' ', '\t']);
        if loads == 0 && typed.starts_with("port/capture") && captures.len() == 1 {
            let arg = typed["port/capture".len()..].trim_start_matches([' ', '\t']);
            let path = arg.split_once([' ', '\t']).map_or("", |(_, p)| p.trim());
            let expected = (path != "off").then(|| PathBuf::from(path));
            assert_eq!(captures[0], expected, "{line:?}");
        }
        state.core.handle_timeout(now);
    }
});
