//! `filo demo`: the Internet of Threads with nothing to set up. It brings up a built-in lab
//! (examples/labs/demo.toml: user-space stacks on switches, an impaired cable, a router, a
//! slirp gateway), probes it step by step with more stacks of its own, says what it measured,
//! and takes the lab down again (or leaves it up with --keep).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use filo_lab::model::NodeKind;

use crate::lab::{self, Running, Source};
use crate::sys;

/// The lab, as users can read and copy it.
const LAB: &str = include_str!("../../../examples/labs/demo.toml");
/// Its servers' pages, at the paths its `http-serve` commands name.
const PAGES: [(&str, &str); 4] = [
    (
        "demo/web1/index.html",
        include_str!("../../../examples/labs/demo/web1/index.html"),
    ),
    (
        "demo/web2/index.html",
        include_str!("../../../examples/labs/demo/web2/index.html"),
    ),
    (
        "demo/far/index.html",
        include_str!("../../../examples/labs/demo/far/index.html"),
    ),
    (
        "demo/web3/index.html",
        include_str!("../../../examples/labs/demo/web3/index.html"),
    ),
];
/// The longest one probe (a `filo stack ping` or `fetch`) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// Run a small network of processes with their own addresses, say what happens, clean up.
#[derive(Args, Debug)]
#[command(after_long_help = "\
The demo brings up a built-in lab (the file examples/labs/demo.toml, shown by
`filo demo --print-lab`): two switches; four web servers, each a process with its own
user-space TCP/IP stack and address (two of them on port 80 of the same LAN, one behind a
cable with 30 ms of delay each way and 10 % loss); a filo router between the two LANs; and a
slirp gateway taking the second LAN to the host. Then more stacks of the demo's own fetch
and ping across it, and each step prints what it measured. Nothing needs root, a network
namespace or the Internet. Afterwards everything is stopped and removed, also after a
failure or Ctrl-C; a step that fails makes the demo exit with status 1, naming the step.

With --keep the lab stays up, with the commands to look at it (filo lab status, filo lab
web) and to stop it (filo lab down --name filo-demo).

EXAMPLES:
  filo demo
  filo demo --keep
  filo lab web --name filo-demo           (after --keep; then open http://127.0.0.1:8733/)
  filo lab down --name filo-demo
  filo lab up examples/labs/demo.toml     (the same lab from a checkout, pages beside it)")]
pub struct DemoArgs {
    /// Leave the lab running and print how to look at it and how to stop it.
    #[arg(long)]
    keep: bool,
    /// The port on 127.0.0.1 of the host's web server that the last step reaches through
    /// the slirp gateway [default: any free port].
    #[arg(long, value_name = "PORT")]
    host_port: Option<u16>,
    /// Print the built-in lab file and exit.
    #[arg(long)]
    print_lab: bool,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    if args.print_lab {
        print!("{LAB}");
        return Ok(ExitCode::SUCCESS);
    }
    let t0 = Instant::now();
    println!("filo demo: the Internet of Threads. Each node below is a process with its own TCP/IP stack and addresses, on virtual switches: no root, no namespace, no Internet needed.");
    let source = Source {
        text: LAB,
        label: "filo demo's lab (examples/labs/demo.toml)".into(),
        stem: "filo-demo".into(),
        dir: None,
        files: &PAGES,
    };
    let running =
        lab::bring_up(&source, None).map_err(|e| anyhow!("step 1 (the lab) failed: {e:#}"))?;
    let result = steps(&running, &args, t0);
    if args.keep && result.is_ok() {
        keep_message(&running);
        return Ok(ExitCode::SUCCESS);
    }
    let down = lab::down(Some(running.lab.name.clone()));
    // The labs' parent directory too, when the demo's lab was all it held.
    if let Some(parent) = running.layout.dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    let t = t0.elapsed().as_secs_f64();
    match (result, down) {
        (Ok(()), Ok(_)) => {
            println!("Done in {t:.1} s: every process of the lab stopped, its sockets and files removed.");
            Ok(ExitCode::SUCCESS)
        }
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e.context("taking the lab down")),
    }
}

fn keep_message(r: &Running) {
    let name = &r.lab.name;
    let sw = r.layout.switch_dir("lan1");
    println!(
        "The lab is still up (state in {}). Look at it, join it, stop it:",
        r.layout.dir.display()
    );
    println!("  filo lab status --name {name}");
    println!("  filo lab web --name {name} --listen 127.0.0.1:8733    # then open http://127.0.0.1:8733/");
    println!(
        "  filo stack fetch --vnl vde://{} --ip 10.0.1.99/24 http://10.0.1.11/",
        sw.display()
    );
    println!("  filo lab down --name {name}");
}

/// A step after the first: it probes the running lab and says what it measured.
type Probe = dyn Fn(&Running, &DemoArgs) -> Result<()>;

/// The steps after the first; each error names its step.
fn steps(r: &Running, args: &DemoArgs, t0: Instant) -> Result<()> {
    step1(r, t0);
    let numbered: [(&str, &Probe); 4] = [
        ("two servers on one port", &|r, _| step2(r)),
        ("the impaired cable", &|r, _| step3(r)),
        ("across the router", &|r, _| step4(r)),
        ("out through slirp", &|r, a| {
            step5(r, a.host_port.unwrap_or(0))
        }),
    ];
    for (i, (what, f)) in numbered.iter().enumerate() {
        if sys::STOP.load(Ordering::Relaxed) {
            bail!("interrupted before step {} ({what})", i + 2);
        }
        f(r, args).map_err(|e| anyhow!("step {} ({what}) failed: {e:#}", i + 2))?;
    }
    Ok(())
}

fn step1(r: &Running, t0: Instant) {
    let pid = |id: String| {
        r.state
            .processes
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.pid.to_string())
            .unwrap_or_else(|| "?".into())
    };
    let stacks: Vec<String> = r
        .lab
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Userstack)
        .map(|n| {
            format!(
                "{} {} (pid {})",
                n.name,
                n.ip.join(" "),
                pid(format!("node {}", n.name))
            )
        })
        .collect();
    let cables: Vec<String> = r
        .lab
        .links
        .iter()
        .map(|l| {
            let how: Vec<String> = l
                .impairments
                .iter()
                .map(|(k, v)| match k.as_str() {
                    "delay" => format!("{v} ms delay each way"),
                    "loss" => format!("{v} % loss"),
                    _ => format!("{k} {v}"),
                })
                .collect();
            format!(
                "cable {} ({}) in front of {}",
                l.name,
                how.join(", "),
                l.b_label
            )
        })
        .collect();
    println!(
        "1. The lab is up in {:.2} s: {} processes. Web servers, each its own process and stack: {}; router r joins lan1 and lan2; slirp gateway out on lan2; {}.",
        t0.elapsed().as_secs_f64(),
        r.state.processes.len(),
        stacks.join(", "),
        cables.join(", ")
    );
}

/// Runs `filo stack ARGS` (a stack of the demo's own) and returns what it printed.
fn stack(args: &[&str]) -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the filo binary")?;
    let mut child = Command::new(exe)
        .arg("stack")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run filo stack")?;
    // Read both pipes in threads so a full pipe never stalls the probe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if t.elapsed() > PROBE_TIMEOUT || sys::STOP.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = out_t.join().unwrap_or_default();
    let err = err_t.join().unwrap_or_default();
    let cmd = format!("filo stack {}", args.join(" "));
    match status {
        Some(st) if st.success() => Ok(out),
        Some(st) => bail!(
            "`{cmd}` failed ({st}): {}",
            last_line(&err).unwrap_or("it printed nothing")
        ),
        None if sys::STOP.load(Ordering::Relaxed) => bail!("interrupted"),
        None => bail!(
            "`{cmd}` did not finish within {} s",
            PROBE_TIMEOUT.as_secs()
        ),
    }
}

fn last_line(s: &str) -> Option<&str> {
    s.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

fn vnl(r: &Running, switch: &str) -> String {
    format!("vde://{}", r.layout.switch_dir(switch).display())
}

/// `filo stack fetch` from a stack of the demo's own; the page's first line.
fn fetch(r: &Running, switch: &str, conf: &[&str], url: &str) -> Result<String> {
    let vnl = vnl(r, switch);
    let mut a = vec!["fetch", "--vnl", &vnl];
    a.extend(conf);
    a.push(url);
    let body = stack(&a)?;
    match body.lines().next().map(str::trim) {
        Some(l) if !l.is_empty() => Ok(l.to_string()),
        _ => bail!("{url} answered with an empty page"),
    }
}

/// Ping's summary: (sent, received, average round trip in ms).
fn ping_summary(out: &str) -> Option<(u32, u32, f64)> {
    let counts = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut words = counts.split_whitespace();
    let sent = words.next()?.parse().ok()?;
    let received = counts
        .split(", ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let avg = out
        .lines()
        .find_map(|l| l.split_once(" = "))
        .and_then(|(_, v)| v.split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Some((sent, received, avg))
}

fn step2(r: &Running) -> Result<()> {
    let conf = ["--ip", "10.0.1.100/24"];
    let a = fetch(r, "lan1", &conf, "http://10.0.1.10:80/")?;
    let b = fetch(r, "lan1", &conf, "http://10.0.1.11:80/")?;
    if a == b {
        bail!("both servers answered {a:?}: expected two different pages");
    }
    println!("2. Two servers on port 80 of one LAN, in two stacks: a stack at 10.0.1.100 asked both; 10.0.1.10:80 says {a:?}, 10.0.1.11:80 says {b:?}.");
    Ok(())
}

fn step3(r: &Running) -> Result<()> {
    let vnl = vnl(r, "lan1");
    // A run that got no answer at all is tried again (up to `tries` runs): over the lossy
    // cable the first ARP request or its reply may be lost, and a run of 8 pings is over
    // before the stack asks again.
    let ping = |ip: &'static str,
                count: &'static str,
                wait: &'static str,
                to: &'static str,
                tries: u32| {
        let vnl = vnl.clone();
        std::thread::spawn(move || {
            let mut last = Err(anyhow!("not run"));
            for _ in 0..tries {
                last = stack(&[
                    "ping", "--vnl", &vnl, "--ip", ip, "-c", count, "-i", "0.05", "-W", wait, to,
                ]);
                if matches!(&last, Ok(out) if ping_summary(out).is_some_and(|s| s.1 > 0)) {
                    break;
                }
            }
            last
        })
    };
    // Both at once, from two stacks; a request the slow cable lost is given up after 0.3 s
    // (five times its round trip), as ping waits for each reply before the next request.
    let direct = ping("10.0.1.101/24", "5", "1", "10.0.1.10", 1);
    let slow = ping("10.0.1.102/24", "8", "0.3", "10.0.1.20", 4);
    let join = |h: std::thread::JoinHandle<Result<String>>| {
        h.join()
            .unwrap_or_else(|_| Err(anyhow!("the ping thread panicked")))
    };
    let (direct, slow) = (join(direct)?, join(slow)?);
    let summary = |out: &str, to: &str| {
        ping_summary(out)
            .filter(|s| s.1 > 0)
            .ok_or_else(|| anyhow!("no answer from {to}: {}", last_line(out).unwrap_or("")))
    };
    let (ds, dr, davg) = summary(&direct, "10.0.1.10")?;
    let (ss, sr, savg) = summary(&slow, "10.0.1.20")?;
    let lost = lab::console(&r.layout.link_mgmt("slow"), &["showinfo".into()])
        .ok()
        .and_then(|replies| filo_lab::status::parse_showinfo(&replies.first()?.lines))
        .map(|(ab, ba)| match ab.dropped_loss + ba.dropped_loss {
            1 => "; the cable dropped 1 frame so far".to_string(),
            n => format!("; the cable dropped {n} frames so far"),
        })
        .unwrap_or_default();
    println!("3. Round trips: to web1 on the switch {davg:.2} ms ({dr} of {ds} answered); to far, behind the slow cable, {savg:.1} ms ({sr} of {ss} answered){lost}.");
    Ok(())
}

fn step4(r: &Running) -> Result<()> {
    let conf = ["--ip", "10.0.1.103/24", "--gw", "10.0.1.1"];
    let page = fetch(r, "lan1", &conf, "http://10.0.2.80/")?;
    let replies = lab::console(
        &r.layout.router_mgmt("r"),
        &["stat".into(), "iface/print".into()],
    )
    .context("router r's console")?;
    let counters = filo_lab::status::parse_router_stat(&replies[0].lines, &replies[1].lines);
    let forwarded: u64 = counters
        .iter()
        .filter(|(k, _)| k.ends_with("_forwarded"))
        .map(|(_, v)| v)
        .sum();
    if forwarded == 0 {
        bail!("router r forwarded nothing, yet {page:?} came back");
    }
    println!("4. Across the router: a stack at 10.0.1.103 on lan1 fetched http://10.0.2.80/ on lan2: {page:?}; router r has forwarded {forwarded} packets.");
    Ok(())
}

/// A web server on the host's loopback for the last step (a thread; it ends with the demo).
fn host_server(port: u16) -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let port = l.local_addr()?.port();
    let body = format!(
        "hello from the host's 127.0.0.1:{port} (filo demo, pid {})\n",
        std::process::id()
    );
    std::thread::spawn(move || loop {
        let Ok((mut s, _)) = l.accept() else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    Ok(port)
}

fn step5(r: &Running, port: u16) -> Result<()> {
    let port = host_server(port)?;
    let conf = ["--ip", "10.0.2.100/24", "--gw", "10.0.2.2"];
    let page = fetch(r, "lan2", &conf, &format!("http://10.0.2.2:{port}/"))?;
    println!("5. Out through slirp: a stack at 10.0.2.100 on lan2 fetched http://10.0.2.2:{port}/, which the gateway took to the host's 127.0.0.1:{port}: {page:?}.");
    Ok(())
}
