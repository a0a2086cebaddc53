//! placeholder: the management console (being written on another branch). Minimal stand-in
//! with the agreed API so the daemon compiles.

use std::time::Instant;

use crate::core::PortId;
use crate::state::{Effect, SwitchState};

pub const PROMPT: &str = "\nvde$ ";
pub const BANNER: &str =
    "VDE switch V.2.3.2\n(C) Virtual Square Team (coord. R. Davoli) 2005,2006,2007 - GPLv2\n";

#[derive(Default)]
pub struct Session {}

impl Session {
    pub fn new() -> Session {
        Session {}
    }
    pub fn wants(&self, _category: &str) -> bool {
        false
    }
}

pub struct Reply {
    pub text: String,
    pub effects: Vec<Effect>,
}

pub enum DebugEvent {
    EndpointAdded {
        port: PortId,
        id: u32,
    },
    EndpointRemoved {
        port: PortId,
        id: u32,
    },
    Description {
        port: PortId,
        id: u32,
        descr: String,
    },
}

pub fn greeting() -> String {
    format!("{BANNER}{PROMPT}")
}

pub fn execute(
    _state: &mut SwitchState,
    _session: &mut Session,
    _now: Instant,
    input: &str,
) -> Reply {
    let cmd = input.trim();
    if cmd == "shutdown" {
        return Reply {
            text: "9999 END OF SESSION".into(),
            effects: vec![Effect::Shutdown],
        };
    }
    Reply {
        text: format!("1038 Function not implemented\n{PROMPT}"),
        effects: vec![],
    }
}

pub fn format_event(ev: &DebugEvent) -> (&'static str, String) {
    match ev {
        DebugEvent::EndpointAdded { port, id } => (
            "port/ep/+",
            format!("3031 port/ep/+ Port {port:02} FD {id:2}\n"),
        ),
        DebugEvent::EndpointRemoved { port, id } => (
            "port/ep/-",
            format!("3032 port/ep/- Port {port:02} FD {id:2}\n"),
        ),
        DebugEvent::Description { port, id, descr } => (
            "port/descr",
            format!("3023 port/descr Port {port:02} FD {id:2} -> \"{descr}\"\n"),
        ),
    }
}

pub fn run_script(
    state: &mut SwitchState,
    session: &mut Session,
    now: Instant,
    _label: &str,
    text: &str,
    _echo: bool,
) -> Reply {
    let mut effects = Vec::new();
    for line in text.lines() {
        effects.extend(execute(state, session, now, line).effects);
    }
    Reply {
        text: String::new(),
        effects,
    }
}
