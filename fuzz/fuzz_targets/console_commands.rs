//! Fuzz the switch's management console with arbitrary command lines (as typed on the -M
//! socket or stdin, or sent by `filo console --json`): no panic, every reply is framed and
//! ends with the prompt or the end of the session, and JSON replies are one line.
#![no_main]

use std::time::{Duration, Instant};

use filo_fuzz::switch_state;
use filo_switch::console::{self, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut state = switch_state(t0);
    let mut session = Session::new();
    let text = String::from_utf8_lossy(data);
    for (i, line) in text.split('\n').enumerate() {
        // `load` reads files: not the console's parser, and not something to fuzz the disk with.
        if line.contains("load") {
            continue;
        }
        let now = t0 + Duration::from_millis(i as u64 * 311);
        if i % 2 == 0 {
            let reply = console::execute(&mut state, &mut session, now, line);
            assert!(
                reply.text.ends_with("vde$ ") || reply.text.contains("9999 END OF SESSION"),
                "unframed reply to {line:?}: {:?}",
                reply.text
            );
        } else {
            let (json, _effects) = console::execute_json(&mut state, &mut session, now, line);
            assert!(
                json.starts_with("{\"status\":") && !json.contains('\n'),
                "{json}"
            );
        }
        state.core.handle_timeout(now);
    }
});
