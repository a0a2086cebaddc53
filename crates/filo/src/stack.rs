//! `filo stack`: try a user-space filo stack without writing Rust — ping, serve a directory
//! over HTTP, fetch a URL — each on its own IP address on any virtual network.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use filo_stack::Stack;

use crate::netconf::ConfArgs;

const CONF_HELP: &str = filo_vnl::iothconf::HELP;

/// Where the stack plugs in and how it is configured (shared by every user-space
/// `filo stack` command).
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// The virtual network to plug the stack into: any VNL (vde:///tmp/sw, switch:///tmp/sw,
    /// vxvde://, tap://tap0, ptp:///tmp/link, …).
    #[arg(long, value_name = "VNL")]
    vnl: Option<String>,
    #[command(flatten)]
    conf: ConfArgs,
    /// Name of the stack, for logs. With a name (and neither mac= nor fqdn=) the MAC derives
    /// from it and stays the same across runs; without one every process gets its own MAC.
    #[arg(long)]
    name: Option<String>,
    /// How long to wait for DHCP or SLAAC to give an address, in seconds.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = crate::duration::seconds)]
    conf_timeout: Duration,
    /// Exit (status 1) when the switch goes away instead of reconnecting to it. By default a
    /// vde:// switch that restarts is joined again (waits of 100 ms doubling to 2 s, for at
    /// most 60 s; TCP connections carry on), and the command exits with status 1 only if it
    /// does not come back.
    #[arg(long)]
    no_reconnect: bool,
}

/// Network stacks: user-space ones (ping, http-serve, fetch, perf) and named kernel-backed ones
/// (serve, ip).
#[derive(Args, Debug)]
#[command(after_help = CONF_HELP, after_long_help = format!("{CONF_HELP}\n\n{STACK_EXAMPLES}"))]
pub struct StackArgs {
    #[command(subcommand)]
    command: StackCommand,
}

const STACK_EXAMPLES: &str = "\
Without --conf, --ip, --dhcp or --slaac a user-space stack configures itself with `auto`
(DHCP and SLAAC).

EXAMPLES:
  filo stack http-serve --vnl vde:///tmp/sw --ip 10.0.0.80/24 ./www &
  filo stack fetch --vnl vde:///tmp/sw --ip 10.0.0.7/24 http://10.0.0.80/index.html
  filo stack ping --vnl vde:///tmp/sw --conf ip=10.0.0.8/24 -c 3 10.0.0.80
  filo stack fetch --vnl vde:///tmp/lan --dhcp http://web.example/
  filo stack serve -d /tmp/s1 --vnl vde:///tmp/sw --ip 10.0.0.7/24
  filo stack ip /tmp/s1 addr";

#[derive(Subcommand, Debug)]
enum StackCommand {
    /// Named (kernel-backed) stacks: `serve` and `ip`.
    #[command(flatten)]
    Named(crate::stack_named::NamedStackCommand),
    /// Send ICMP/ICMPv6 echo requests from a filo stack and print the round trips.
    #[command(after_help = CONF_HELP)]
    Ping(PingArgs),
    /// Serve the files of DIR over HTTP from a filo stack (GET and HEAD; Ctrl-C stops).
    #[command(name = "http-serve", after_help = CONF_HELP)]
    HttpServe(HttpServeArgs),
    /// Fetch an http:// URL through a filo stack and write the body to stdout or a file.
    #[command(after_help = CONF_HELP)]
    Fetch(FetchArgs),
    /// Measure TCP between filo stacks, or against the kernel: a receiver with --server, a
    /// sender with --connect. Both print bytes, seconds, Gbit/s and the CRC-32 of the stream,
    /// so the two sides can be compared; --echo/--rr measure round trips instead. With
    /// --kernel the same program uses the kernel's TCP (for reference runs).
    #[command(after_help = CONF_HELP)]
    Perf(PerfArgs),
}

#[derive(Args, Debug)]
struct PingArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Number of echo requests.
    #[arg(short = 'c', long, default_value_t = 3)]
    count: u32,
    /// Seconds between requests.
    #[arg(short = 'i', long, value_name = "SECONDS", default_value = "1", value_parser = crate::duration::seconds)]
    interval: Duration,
    /// Payload bytes per request (at most 65507).
    #[arg(short = 's', long, default_value_t = 56, value_parser = clap::value_parser!(u16).range(0..=65507))]
    size: u16,
    /// Seconds to wait for each reply.
    #[arg(short = 'W', long, value_name = "SECONDS", default_value = "2", value_parser = crate::duration::seconds)]
    timeout: Duration,
    /// The host to ping: an IPv4 or IPv6 address, or a name (resolved with the stack's DNS).
    host: String,
}

#[derive(Args, Debug)]
struct HttpServeArgs {
    #[command(flatten)]
    net: NetArgs,
    /// TCP port to listen on (IPv4 and IPv6).
    #[arg(short = 'p', long, default_value_t = 80)]
    port: u16,
    /// Stop after serving this many requests (0: never).
    #[arg(long, default_value_t = 0)]
    max_requests: u64,
    /// The directory to serve.
    dir: PathBuf,
}

#[derive(Args, Debug)]
struct FetchArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Write the body here instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Seconds to wait for the connection and for each read.
    #[arg(short = 't', long, value_name = "SECONDS", default_value = "10", value_parser = crate::duration::seconds)]
    timeout: Duration,
    /// The URL: http://HOST[:PORT]/PATH, HOST an address ([v6] in brackets) or a name.
    url: String,
}

#[derive(Args, Debug)]
struct PerfArgs {
    /// Use the kernel's TCP instead of a filo stack (--vnl and the configuration are then
    /// not used).
    #[arg(long)]
    kernel: bool,
    #[command(flatten)]
    net: NetArgs,
    /// Receive: listen on --port and report each connection.
    #[arg(long, conflicts_with = "connect")]
    server: bool,
    /// With --server, echo bytes back (the far end of --rr) instead of counting them.
    #[arg(long, requires = "server")]
    echo: bool,
    /// With --server, exit after this many connections (0: never).
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// TCP port to listen on.
    #[arg(short = 'p', long, default_value_t = 5201)]
    port: u16,
    /// Send: connect to ADDR:PORT (or HOST:PORT).
    #[arg(long, value_name = "ADDR:PORT", required_unless_present = "server")]
    connect: Option<String>,
    /// MiB to send (at most 1048576).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    mib: u64,
    /// Instead of a bulk transfer, time this many 1-byte round trips (server: --echo).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    rr: Option<u32>,
    /// Receive and send buffer per socket, KiB (at most 65536).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    buffer_kib: u32,
}

/// Builds the stack and waits for automatic configuration to give it addresses.
fn build(net: &NetArgs) -> Result<Stack> {
    build_with(net, 128)
}

fn build_with(net: &NetArgs, buffer_kib: usize) -> Result<Stack> {
    let Some(vnl) = net.vnl.as_deref() else {
        bail!(
            "--vnl VNL is required: the network to plug the stack into (e.g. --vnl vde:///tmp/sw)"
        );
    };
    let conf = net.conf.to_conf_or_auto();
    conf.check_interfaces(1).context("the configuration")?;
    let plug = filo_stack::plug_options(vnl).open(vnl).context("--vnl")?;
    let mut builder = Stack::builder().on_link_gone(|link, why| {
        // The command's network is gone for good: say so and stop rather than run deaf.
        eprintln!("filo stack: link {link} gone: {why}");
        std::process::exit(1);
    });
    if net.no_reconnect {
        builder = builder.reconnect(None);
    }
    if let Some(name) = &net.name {
        builder = builder.name(name.clone());
    }
    let stack = builder
        .interface_plug_config(plug, conf.clone())
        .tcp_buffer(buffer_kib * 1024)
        .build()?;
    let t = net.conf_timeout;
    if conf.dhcp && conf.addrs.iter().all(|a| !a.ip.is_ipv4()) {
        stack
            .wait_for_address(false, t)
            .ok_or_else(|| anyhow!("no DHCP lease on {vnl} within {t:?}"))?;
    }
    if conf.slaac
        && conf.addrs.iter().all(|a| !a.ip.is_ipv6())
        && stack.wait_for_address(true, t).is_none()
    {
        if conf.dhcp {
            tracing::warn!("no router advertisement within {t:?}: no SLAAC address");
        } else {
            bail!("no router advertisement on {vnl} within {t:?}");
        }
    }
    for (_, a) in stack.addrs() {
        tracing::info!("address {a}");
    }
    Ok(stack)
}

pub fn run(args: StackArgs) -> Result<ExitCode> {
    match args.command {
        StackCommand::Named(cmd) => crate::stack_named::run(cmd),
        StackCommand::Ping(a) => ping(a),
        StackCommand::HttpServe(a) => http_serve(a),
        StackCommand::Fetch(a) => fetch(a),
        StackCommand::Perf(a) => perf(a),
    }
}

/// `filo stack ping`: output in ping(8)'s words.
fn ping(a: PingArgs) -> Result<ExitCode> {
    let (interval, timeout) = (a.interval, a.timeout);
    let stack = build(&a.net)?;
    let host = &a.host;
    let dst: IpAddr = match host.parse() {
        Ok(ip) => ip,
        Err(_) => *stack
            .resolve(host, filo_stack::RESOLVE_TIMEOUT)
            .with_context(|| format!("resolving {host}"))?
            .first()
            .ok_or_else(|| anyhow!("{host} has no address"))?,
    };
    let size = usize::from(a.size);
    println!(
        "PING {host} ({dst}) {size} data bytes from stack {}",
        stack.name()
    );
    let started = Instant::now();
    let mut rtts = Vec::new();
    let mut sent = 0;
    for seq in 1..=a.count {
        if crate::sys::STOP.load(Ordering::Relaxed) {
            break;
        }
        let start = Instant::now();
        sent += 1;
        match stack.ping(dst, seq as u16, size, timeout) {
            Ok(rtt) => {
                let ms = rtt.as_secs_f64() * 1000.0;
                rtts.push(ms);
                println!(
                    "{} bytes from {dst}: icmp_seq={seq} time={ms:.3} ms",
                    size + 8
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::HostUnreachable => {
                println!("From {dst} icmp_seq={seq} Destination Host Unreachable");
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                println!("Request timeout for icmp_seq {seq}");
            }
            Err(e) => println!("ping: icmp_seq={seq}: {e}"),
        }
        if seq < a.count {
            std::thread::sleep(interval.saturating_sub(start.elapsed()));
        }
    }
    let ok = rtts.len();
    let loss = (100 * (sent - ok)).checked_div(sent).unwrap_or(0);
    println!(
        "\n--- {host} ping statistics ---\n{sent} packets transmitted, {ok} received, \
         {loss}% packet loss, time {}ms",
        started.elapsed().as_millis()
    );
    if ok > 0 {
        let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rtts.iter().copied().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / ok as f64;
        let mdev = (rtts.iter().map(|r| (r - avg).powi(2)).sum::<f64>() / ok as f64).sqrt();
        println!("rtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms");
    }
    Ok(if ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Creates the file `FILO_READY_FILE` names, if it is set: a serving `filo stack` command
/// does once it listens, which is how `filo lab` knows a `userstack` server is up.
fn signal_ready() -> Result<()> {
    if let Some(path) = std::env::var_os(filo_lab::plan::READY_FILE_ENV) {
        std::fs::File::create(&path)
            .with_context(|| format!("cannot create the ready file {}", path.to_string_lossy()))?;
    }
    Ok(())
}

fn http_serve(a: HttpServeArgs) -> Result<ExitCode> {
    let (dir, port) = (&a.dir, a.port);
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let stack = build(&a.net)?;
    let opts = filo_http::ServeOptions {
        max_requests: a.max_requests,
        ..filo_http::ServeOptions::new(dir, port)
    };
    let server = filo_http::Server::bind(&stack, opts)?;
    let addrs: Vec<String> = stack.addrs().iter().map(|(_, a)| a.to_string()).collect();
    eprintln!(
        "filo stack: serving {} on port {port} at {}",
        dir.display(),
        addrs.join(" ")
    );
    signal_ready()?;
    server.run(&crate::sys::STOP)?;
    Ok(ExitCode::SUCCESS)
}

fn perf(a: PerfArgs) -> Result<ExitCode> {
    let stack = match a.kernel {
        true => None,
        false => Some(build_with(&a.net, a.buffer_kib as usize)?),
    };
    if a.server {
        perf_server(stack.as_ref(), a.port, a.count, a.echo)
    } else {
        // The sender has no loop that watches the stop flag.
        crate::sys::default_signals();
        let target = a
            .connect
            .ok_or_else(|| anyhow!("--connect ADDR:PORT is required"))?;
        perf_client(stack.as_ref(), &target, a.mib, a.rr.map(|n| n as usize))
    }
}

fn fetch(a: FetchArgs) -> Result<ExitCode> {
    crate::sys::default_signals();
    let url = &a.url;
    let opts = filo_http::FetchOptions::new(url, a.output, a.timeout)?;
    let stack = build(&a.net)?;
    let status = filo_http::fetch(&stack, &opts)?;
    if !status.is_success() {
        eprintln!("filo stack fetch: {url}: HTTP status {}", status.as_u16());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn perf_server(stack: Option<&Stack>, port: u16, count: u64, echo: bool) -> Result<ExitCode> {
    use filo_stack::perf;
    let report = |peer: std::net::SocketAddr, r: std::io::Result<perf::Transfer>| -> Result<()> {
        println!("received from {peer}: {}", r?);
        Ok(())
    };
    let mut n = 0;
    match stack {
        Some(stack) => {
            let l = stack.tcp_listen(format!("[::]:{port}"))?;
            eprintln!("filo stack perf: listening on port {port}");
            signal_ready()?;
            while !crate::sys::STOP.load(Ordering::Relaxed) && (count == 0 || n < count) {
                let Some((c, peer)) = l.accept_timeout(Some(Duration::from_millis(300)))? else {
                    continue;
                };
                n += 1;
                // A peer that vanishes without a FIN must not hold the server forever.
                c.set_read_timeout(Some(Duration::from_secs(30)))?;
                if echo {
                    perf::echo(&c)?;
                    c.shutdown(std::net::Shutdown::Write)?;
                    let _ = c.drain(Duration::from_secs(5));
                } else {
                    let r = perf::receive(&c);
                    // Close our half and wait for the peer's ACK before the process can
                    // exit: otherwise the (delayed) ACK of the sender's FIN may never leave
                    // and the sender waits for it in vain.
                    let _ = c.shutdown(std::net::Shutdown::Write);
                    let _ = c.drain(Duration::from_secs(5));
                    report(peer, r)?;
                }
            }
        }
        None => {
            let l = std::net::TcpListener::bind(("::", port))
                .or_else(|_| std::net::TcpListener::bind(("0.0.0.0", port)))?;
            eprintln!("filo stack perf: kernel TCP listening on port {port}");
            while count == 0 || n < count {
                let (c, peer) = l.accept()?;
                n += 1;
                c.set_nodelay(true)?;
                c.set_read_timeout(Some(Duration::from_secs(30)))?;
                if echo {
                    perf::echo(&c)?;
                } else {
                    report(peer, perf::receive(&c))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn perf_client(
    stack: Option<&Stack>,
    target: &str,
    mib: u64,
    rr: Option<usize>,
) -> Result<ExitCode> {
    use filo_stack::perf;
    let print_rr = |t: Vec<Duration>| {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "round_trips={} p50_us={:.1} p99_us={:.1}",
            t.len(),
            us(perf::percentile(&t, 50)),
            us(perf::percentile(&t, 99))
        );
    };
    match stack {
        Some(stack) => {
            // The server may still be starting: retry refused connections for a while.
            let deadline = Instant::now() + Duration::from_secs(10);
            let c = loop {
                match stack.tcp_connect_timeout(target, Some(Duration::from_secs(10))) {
                    Err(e)
                        if e.kind() == std::io::ErrorKind::ConnectionRefused
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    r => break r.with_context(|| format!("connecting to {target}"))?,
                }
            };
            if let Some(n) = rr {
                print_rr(perf::round_trips(&c, n)?);
            } else {
                let t = perf::send(&c, mib << 20)?;
                c.shutdown(std::net::Shutdown::Write)?;
                c.drain(Duration::from_secs(60))?;
                // Wait (briefly) for the receiver's FIN too, so it is acknowledged before we
                // exit and the receiver need not retry it into the void.
                c.set_read_timeout(Some(Duration::from_secs(3)))?;
                let mut rest = [0u8; 512];
                while matches!(std::io::Read::read(&mut &c, &mut rest), Ok(n) if n > 0) {}
                println!("sent to {target}: {t}");
            }
            c.shutdown(std::net::Shutdown::Write)?;
        }
        None => {
            let deadline = Instant::now() + Duration::from_secs(10);
            let c = loop {
                match std::net::TcpStream::connect(target) {
                    Err(e)
                        if e.kind() == std::io::ErrorKind::ConnectionRefused
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    r => break r.with_context(|| format!("connecting to {target}"))?,
                }
            };
            c.set_nodelay(true)?;
            if let Some(n) = rr {
                print_rr(perf::round_trips(&c, n)?);
            } else {
                let t = perf::send(&c, mib << 20)?;
                c.shutdown(std::net::Shutdown::Write)?;
                println!("sent to {target}: {t}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
