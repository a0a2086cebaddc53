//! Fuzz the startup scripts (`-f` rc files, and scripts run by `load`) of the switch and of
//! wirefilter on arbitrary text. Asserts: no panic; the switch runs an rc file silently
//! (`echo == false`: no output) and, shown like a `load`, its answer parses as framed text;
//! a `load` inside a script is asked of the daemon as an effect (answered here with the same
//! script again, at most a few times); wirefilter's `execute_script` stops at a line that
//! exists (1-based) with an errno.
#![no_main]

use std::time::Instant;

use filo_switch::console::{self, Session};
use filo_switch::state::{DaemonInfo, Effect, SwitchState};
use filo_switch::{Core, CoreConfig};
use filo_wirefilter::console::execute_script;
use filo_wirefilter::Wirefilter;
use libfuzzer_sys::fuzz_target;

fn switch(t0: Instant) -> SwitchState {
    let core = Core::new(
        CoreConfig {
            num_ports: 8,
            ..CoreConfig::default()
        },
        t0,
    );
    let info = DaemonInfo {
        ctl_dir: "/nonexistent/filo-fuzz".into(),
        mode: 0o600,
        mgmt: None,
        mgmt_mode: 0o600,
        pid: 1,
        started: t0,
        queue_len: 256,
        lossless: false,
    };
    SwitchState::new(core, info)
}

/// Runs the script as the daemon would, answering each `load` with the same text (a few
/// times, then ENOENT); returns the whole output.
fn run(text: &str, echo: bool) -> String {
    let t0 = Instant::now();
    let mut state = switch(t0);
    let mut session = Session::new();
    let mut reply = console::run_script(&mut state, &mut session, t0, "fuzz.rc", text, echo);
    let mut loads = 0;
    while let Some(at) = reply
        .effects
        .iter()
        .position(|e| matches!(e, Effect::Load(_)))
    {
        reply.effects.remove(at);
        loads += 1;
        let script = if loads <= 3 { Ok(text) } else { Err(2) };
        let next = console::loaded(&mut state, &mut session, t0, script);
        reply.text.push_str(&next.text);
        reply.effects.extend(next.effects);
    }
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
