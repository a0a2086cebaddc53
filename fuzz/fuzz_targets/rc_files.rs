//! Fuzz the startup scripts (`-f` rc files, and scripts run by `load`) of the switch and of
//! wirefilter on arbitrary text. Asserts: no panic; the switch runs an rc file silently
//! (`echo == false`: no output) and, shown like a `load`, its answer parses as framed text;
//! a `load` inside a script is asked of the daemon as an effect (answered here with the same
//! script again, at most a few times); wirefilter's `execute_script` stops at a line that
//! exists (1-based) with an errno.
#![no_main]

use std::time::Instant;

use filo_fuzz::{carry_out_loads, switch_state};
use filo_switch::console::{self, Session};
use filo_wirefilter::console::execute_script;
use filo_wirefilter::Wirefilter;
use libfuzzer_sys::fuzz_target;

/// Runs the script as the daemon would, answering each `load` with the same text (a few
/// times, then ENOENT); returns the whole output.
fn run(text: &str, echo: bool) -> String {
    let t0 = Instant::now();
    let mut state = switch_state(t0);
    let mut session = Session::new();
    let reply = console::run_script(&mut state, &mut session, t0, "fuzz.rc", text, echo);
    let mut loads = 0;
    let (reply, _) = carry_out_loads(&mut state, &mut session, t0, reply, |_| {
        loads += 1;
        if loads <= 3 {
            Ok(text.to_string())
        } else {
            Err(2) // ENOENT
        }
    });
    reply.text
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let silent = run(&text, false);
    assert_eq!(silent, "", "an rc file printed something");
    let shown = run(&text, true);
    let _ = filo_vnl::console::parse_reply(&shown);

    let mut wf = Wirefilter::new(1, Instant::now());
    if let Err((line, errno)) = execute_script(&mut wf, Instant::now(), &text) {
        assert!(
            line >= 1 && line <= text.lines().count(),
            "error on line {line} of {} lines",
            text.lines().count()
        );
        assert!(errno > 0, "errno {errno}");
    }
});
