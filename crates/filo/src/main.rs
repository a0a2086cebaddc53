//! `filo`: one binary for every tool. Each subcommand lives in its own module and only wires
//! command-line flags to the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod capture;
mod console;
mod demo;
mod duration;
mod ipn;
mod lab;
mod lab_web;
mod mstack;
mod netconf;
mod ns;
mod plug;
mod router;
mod sandbox;
mod slirp;
mod stack;
mod stack_named;
mod switch;
#[allow(unsafe_code)]
mod sys;
mod wirefilter;

/// filo: the Internet of Threads — virtual Ethernets, switches and plugs, compatible with VDE.
#[derive(Parser, Debug)]
#[command(name = "filo", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    /// More log output (repeat for more); RUST_LOG overrides.
    #[arg(long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Connect networks: a cable between two VNLs, or one VNL over stdin/stdout or a command.
    Plug(plug::PlugArgs),
    /// Run a virtual Ethernet switch (VDE-compatible: vde_plug, QEMU, libvdeplug).
    Switch(switch::SwitchArgs),
    /// Record what a plug receives to a pcap/pcapng file or pipe (Wireshark, tshark).
    Capture(capture::CaptureArgs),
    /// An impaired cable: loss, delay, jitter, bandwidth, MTU... (VDE wirefilter compatible).
    Wirefilter(wirefilter::WirefilterArgs),
    /// Talk to a switch's management console (filo switch -M, vde_switch -M).
    Console(console::ConsoleArgs),
    /// Show the Internet of Threads at work: a built-in lab, narrated, then cleaned up.
    Demo(demo::DemoArgs),
    /// Run a command in its own network namespace on virtual networks (like vdens).
    Ns(ns::NsArgs),
    /// Run a command in a named stack's network (View-OS mstack).
    Mstack(mstack::MstackArgs),
    /// Stacks: user-space (ping, http-serve, fetch, perf) and named kernel-backed (serve, ip).
    Stack(stack::StackArgs),
    /// A whole virtual network from one TOML file: up, down, status, exec, set, graph.
    Lab(lab::LabArgs),
    /// A user-mode NAT gateway: a network's guests reach the host's network (like slirpvde).
    Slirp(slirp::SlirpArgs),
    /// Route between virtual networks: IPv4/IPv6 forwarding, ICMP errors, DHCP and RA servers.
    Router(router::RouterArgs),
    /// A shared-memory bus for ipn:// plugs: create and hold one, or show its members.
    Ipn(ipn::IpnArgs),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a log file or pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    sys::note_inherited_fds();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // Every VNL the command opens may be switch:// or hub://.
    filo_switch::register();
    filo_slirp::register();
    filo_ipn::register();
    if let Err(e) = sys::install_signal_handlers() {
        eprintln!("filo: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    // Commands without a loop that watches the stop flag keep the default signal actions.
    let watches_stop = match &cli.command {
        Command::Console(_) => false,
        Command::Lab(a) => a.watches_stop(),
        _ => true,
    };
    if !watches_stop {
        sys::default_signals();
    }
    let result = match cli.command {
        Command::Plug(args) => plug::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Switch(args) => switch::run(args),
        Command::Console(args) => console::run(args),
        Command::Capture(args) => capture::run(args),
        Command::Wirefilter(args) => wirefilter::run(args),
        Command::Ns(args) => ns::run(args),
        Command::Mstack(args) => mstack::run(args),
        Command::Stack(args) => stack::run(args),
        Command::Lab(args) => lab::run(args),
        Command::Slirp(args) => slirp::run(args),
        Command::Router(args) => router::run(args),
        Command::Ipn(args) => ipn::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("filo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
