//! The gateway's management console (VDE console framing, [`filo_vnl::console`]): command
//! lines in, reply text out. `fwd/add`, `fwd/del`, `fwd/print`, `flows/print`, `leases/print`,
//! `stat`, `showinfo`, `help`, `logout`, `shutdown`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use filo_vnl::console::{error_line, push_data_block, status_line};

use crate::config::{Forward, Proto};
use crate::engine::Engine;

pub const BANNER: &str = "\nfilo slirp: a user-mode NAT gateway\n";
pub const PROMPT: &str = "\nslirp$ ";

/// What a command asks of the daemon beyond its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    Logout,
    Shutdown,
}

/// Who sent a command: a console user may add no forward the user could not bind alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caller {
    /// The connecting process's uid (SO_PEERCRED); `None` for the daemon's own lines.
    pub uid: Option<u32>,
    /// The first port an unprivileged process may bind
    /// (`/proc/sys/net/ipv4/ip_unprivileged_port_start`, read when the console started).
    pub unprivileged_port_start: u16,
}

impl Caller {
    /// A forward on a privileged host port is for root only: the gateway may run as root
    /// while its console is open to others (`--mgmtmode`), and must not bind port 22 for
    /// them. Port 0 (any free port) is never privileged.
    fn may_forward(&self, f: &Forward) -> Result<(), String> {
        let port = f.host.port();
        match self.uid {
            Some(uid) if uid != 0 && port != 0 && port < self.unprivileged_port_start => {
                Err(format!(
                    "host port {port} is privileged (below ip_unprivileged_port_start {}): \
                     only root may forward it, not uid {uid}",
                    self.unprivileged_port_start
                ))
            }
            _ => Ok(()),
        }
    }
}

/// What a client sees on connecting.
pub fn greeting() -> String {
    format!("{BANNER}{PROMPT}")
}

const HELP: &[&str] = &[
    "COMMAND PATH       SYNTAX          HELP",
    "------------       ------          ----",
    "help               [arg]           this list",
    "showinfo                           the gateway's configuration",
    "stat                               flow counts, refusals and dropped frames",
    "fwd/print                          the host -> guest port forwards",
    "fwd/add            tcp|udp [HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT  start a forward",
    "fwd/del            tcp|udp [HOSTIP:]HOSTPORT  stop a forward",
    "flows/print                        the open TCP, UDP and ICMP flows",
    "leases/print                       the DHCP leases",
    "logout                             end this session",
    "shutdown                           stop the gateway",
];

fn proto(word: &str) -> Result<Proto, String> {
    match word {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        other => Err(format!("{other:?}: expected tcp or udp")),
    }
}

/// `[HOSTIP:]HOSTPORT`, the host address defaulting to 0.0.0.0.
fn host_end(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!("{text:?}: expected [HOSTIP:]HOSTPORT, e.g. 8080 or 127.0.0.1:8080 or [::1]:8080")
    })
}

/// Runs one command line; returns the reply text (ending with the prompt) and its effect.
pub fn execute(engine: &mut Engine, line: &str, caller: Caller) -> (String, Effect) {
    let line = line.trim();
    let mut words = line.split_whitespace();
    let Some(cmd) = words.next().filter(|w| !w.starts_with('#')) else {
        return (PROMPT.to_string(), Effect::None);
    };
    let args: Vec<&str> = words.collect();
    let mut out = String::new();
    let result: Result<(), (i32, String)> = match (cmd, args.as_slice()) {
        ("help", _) => {
            push_data_block(&mut out, HELP);
            Ok(())
        }
        ("showinfo", []) => {
            push_data_block(&mut out, &engine.config().describe());
            Ok(())
        }
        ("stat", []) => {
            push_data_block(&mut out, &engine.stat_lines());
            Ok(())
        }
        ("fwd/print", []) => {
            let lines: Vec<String> = engine.forwards().iter().map(|f| f.to_string()).collect();
            push_data_block(&mut out, &lines);
            Ok(())
        }
        ("flows/print", []) => {
            push_data_block(&mut out, &engine.flows());
            Ok(())
        }
        ("leases/print", []) => {
            push_data_block(&mut out, &engine.leases());
            Ok(())
        }
        ("fwd/add", [p, spec]) => proto(p)
            .and_then(|p| Forward::parse(p, spec))
            .map_err(|e| (libc::EINVAL, e))
            .and_then(|f| {
                caller
                    .may_forward(&f)
                    .map(|()| f)
                    .map_err(|e| (libc::EACCES, e))
            })
            .and_then(|f| {
                engine
                    .add_forward(f)
                    .map_err(|e| (e.raw_os_error().unwrap_or(libc::EADDRINUSE), e.to_string()))
            }),
        ("fwd/del", [p, host]) => proto(p)
            .and_then(|p| host_end(host).map(|h| (p, h)))
            .map_err(|e| (libc::EINVAL, e))
            .and_then(|(p, h)| {
                engine
                    .del_forward(p, h)
                    .map(drop)
                    .map_err(|e| (libc::ENOENT, e.to_string()))
            }),
        ("logout", []) => return (filo_vnl::console::END_OF_SESSION.into(), Effect::Logout),
        ("shutdown", []) => return (filo_vnl::console::END_OF_SESSION.into(), Effect::Shutdown),
        (
            "showinfo" | "stat" | "fwd/print" | "flows/print" | "leases/print" | "fwd/add"
            | "fwd/del" | "logout" | "shutdown",
            _,
        ) => Err((libc::EINVAL, format!("{cmd}: wrong arguments (see help)"))),
        _ => Err((libc::ENOSYS, format!("{cmd}: unknown command (see help)"))),
    };
    match result {
        Ok(()) => out.push_str(&status_line(Ok(()))),
        Err((errno, detail)) => out.push_str(&error_line(errno, &detail)),
    }
    out.push('\n');
    out.push_str(PROMPT);
    (out, Effect::None)
}
