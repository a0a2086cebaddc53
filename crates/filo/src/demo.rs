//! `filo demo`: a virtual network that needs nothing set up, to see filo work.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use filo_switch::daemon::{Switch, SwitchConfig};
use filo_vnl::Plug;

/// Start a switch with three nodes on it and let them talk; nothing to set up.
#[derive(Args, Debug)]
#[command(after_long_help = "\
The switch is a real filo switch on a temporary directory: while the demo runs, any VDE
client (vde_plug, QEMU, filo plug) could join it. Nodes are plugs in this process.

EXAMPLES:
  filo demo
  filo demo -n 10        # ten rounds")]
pub struct DemoArgs {
    /// Rounds of conversation.
    #[arg(short = 'n', long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rounds: u32,
}

const ETHERTYPE: [u8; 2] = [0x88, 0xb5]; // IEEE local experimental

fn frame(dst: [u8; 6], src: [u8; 6], text: &str) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + text.len().max(46));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(text.as_bytes());
    f.resize(f.len().max(60), 0);
    f
}

fn show(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn text(f: &[u8]) -> String {
    String::from_utf8_lossy(&f[14..])
        .trim_end_matches('\0')
        .to_string()
}

struct Node {
    name: &'static str,
    mac: [u8; 6],
    plug: Plug,
    heard: u64,
}

impl Node {
    /// Everything that arrives within `wait`.
    fn listen(&mut self, wait: Duration) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; filo_vnl::plug::FRAME_BUF];
        let mut got = Vec::new();
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.plug.recv_timeout(&mut buf, Some(left)) {
                Ok(n) => got.push(buf[..n].to_vec()),
                Err(_) => break,
            }
        }
        self.heard += got.len() as u64;
        got
    }
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("filo-demo-{}", std::process::id()));
    let switch = Switch::spawn(SwitchConfig::new(&dir)).context("cannot start the demo switch")?;
    println!(
        "A filo switch on {} (any VDE client could join: vde_plug vde://{}).",
        dir.display(),
        dir.display()
    );
    let result = talk(&dir, args.rounds);
    switch.stop().context("stopping the demo switch")?;
    result
}

fn talk(dir: &std::path::Path, rounds: u32) -> Result<ExitCode> {
    let vnl = format!("vde://{}", dir.display());
    let mut nodes = Vec::new();
    for (name, last) in [("alice", 0xa1u8), ("bob", 0xb0), ("carol", 0xc0)] {
        let plug = filo_vnl::OpenOptions {
            description: format!("demo-{name}"),
            ..Default::default()
        }
        .open(&vnl)?;
        let mac = [0x02, 0, 0, 0, 0, last];
        println!("  {name:<5} plugged in as {}", show(&mac));
        nodes.push(Node {
            name,
            mac,
            plug,
            heard: 0,
        });
    }
    let quiet = Duration::from_millis(150);
    for round in 1..=rounds {
        println!("round {round}:");
        // alice asks everybody (broadcast); bob and carol answer her directly (unicast).
        let hello = frame(
            [0xff; 6],
            nodes[0].mac,
            &format!("who is there? (round {round})"),
        );
        nodes[0]
            .plug
            .send_timeout(&hello, Some(Duration::from_secs(1)))?;
        for i in 1..3 {
            let heard = nodes[i].listen(quiet);
            if heard.len() != 1 {
                bail!(
                    "{} expected alice's broadcast, heard {} frames",
                    nodes[i].name,
                    heard.len()
                );
            }
            println!(
                "  {:<5} <- {} (broadcast): {:?}",
                nodes[i].name,
                show(&heard[0][6..12]),
                text(&heard[0])
            );
            let answer = frame(
                nodes[0].mac,
                nodes[i].mac,
                &format!("{} here", nodes[i].name),
            );
            nodes[i]
                .plug
                .send_timeout(&answer, Some(Duration::from_secs(1)))?;
        }
        let answers = nodes[0].listen(quiet);
        for a in &answers {
            println!("  alice <- {} (unicast): {:?}", show(&a[6..12]), text(a));
        }
        if answers.len() != 2 {
            bail!("alice expected two answers, got {}", answers.len());
        }
        // bob whispers to carol: the switch has learned where carol is, so alice hears nothing.
        let whisper = frame(nodes[2].mac, nodes[1].mac, "psst, carol");
        nodes[1]
            .plug
            .send_timeout(&whisper, Some(Duration::from_secs(1)))?;
        let at_carol = nodes[2].listen(quiet);
        let at_alice = nodes[0].listen(quiet);
        println!(
            "  carol <- bob (unicast): {:?}; alice overheard {} frame(s)",
            at_carol.first().map(|f| text(f)).unwrap_or_default(),
            at_alice.len()
        );
        if at_carol.len() != 1 || !at_alice.is_empty() {
            bail!("the switch did not deliver bob's whisper only to carol");
        }
    }
    println!("Frames received: alice {}, bob {}, carol {}. The switch learned every address and flooded only broadcasts.", nodes[0].heard, nodes[1].heard, nodes[2].heard);
    Ok(ExitCode::SUCCESS)
}
