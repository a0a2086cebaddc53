//! Moves bytes over TCP between two filo stacks in this process, joined by an in-process
//! cable, each on its own driver thread; prints throughput and both checksums.
//!
//! `cargo run --release -p filo-stack --example bulk -- 1024` (MiB; default 256)

use filo_stack::{cable, perf, Driver, Stack};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: u64 = std::env::args().nth(1).map_or(Ok(256), |s| s.parse())?;
    let (a, b) = cable()?;
    let s1 = Stack::builder()
        .interface_plug(a, "ip=10.0.0.1/24,mtu=9000")
        .driver(&Driver::new()?)
        .tcp_buffer(1 << 20)
        .build()?;
    let s2 = Stack::builder()
        .interface_plug(b, "ip=10.0.0.2/24,mtu=9000")
        .driver(&Driver::new()?)
        .tcp_buffer(1 << 20)
        .build()?;
    let l = s1.tcp_listen("0.0.0.0:5001")?;
    let rx = std::thread::spawn(move || -> std::io::Result<perf::Transfer> {
        let (c, _) = l.accept()?;
        perf::receive(&c)
    });
    let c = s2.tcp_connect("10.0.0.1:5001")?;
    let sent = perf::send(&c, mib << 20)?;
    c.shutdown(std::net::Shutdown::Write)?;
    let got = rx.join().map_err(|_| "receiver panicked")??;
    println!(
        "sent     {sent}\nreceived {got}\nequal={}",
        sent.crc32 == got.crc32 && sent.bytes == got.bytes
    );
    Ok(())
}
