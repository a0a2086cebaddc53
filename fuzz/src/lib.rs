//! What several fuzz targets share: a switch to run console commands on, and the daemon's
//! side of `load` with the scripts the target chooses.

use std::path::Path;
use std::time::Instant;

use filo_switch::console::{self, Reply, Session};
use filo_switch::state::{DaemonInfo, Effect, SwitchState};
use filo_switch::{Core, CoreConfig};

/// A switch with 8 ports and no daemon behind it.
pub fn switch_state(now: Instant) -> SwitchState {
    let core = Core::new(
        CoreConfig {
            num_ports: 8,
            ..CoreConfig::default()
        },
        now,
    );
    let info = DaemonInfo {
        ctl_dir: "/nonexistent/filo-fuzz".into(),
        mode: 0o600,
        mgmt: None,
        mgmt_mode: 0o600,
        pid: 1,
        started: now,
        queue_len: 256,
        lossless: false,
    };
    SwitchState::new(core, info)
}

/// Carries out the `load`s of `reply` as the daemon does (`daemon::carry_out_loads`), each
/// script read by `read` (the text, or the errno of reading it). Returns the whole reply and
/// how many scripts were asked for.
pub fn carry_out_loads(
    state: &mut SwitchState,
    session: &mut Session,
    now: Instant,
    mut reply: Reply,
    mut read: impl FnMut(&Path) -> Result<String, i32>,
) -> (Reply, usize) {
    let mut loads = 0;
    while let Some(at) = reply
        .effects
        .iter()
        .position(|e| matches!(e, Effect::Load(_)))
    {
        let Effect::Load(path) = reply.effects.remove(at) else {
            break;
        };
        loads += 1;
        let script = read(&path);
        let next = console::loaded(state, session, now, script.as_deref().map_err(|e| *e));
        reply.text.push_str(&next.text);
        reply.effects.extend(next.effects);
        reply.events.extend(next.events);
    }
    (reply, loads)
}
