//! Benchmark helper: writes COUNT stream-encoded frames of SIZE bytes to stdout, as fast as the
//! reader takes them. Usage: streamgen COUNT SIZE
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(count), Some(size)) = (
        args.get(1).and_then(|s| s.parse::<u64>().ok()),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: streamgen COUNT SIZE (SIZE 14..=9234)");
        std::process::exit(2);
    };
    let size = size.clamp(14, 9234);
    let mut frame = vec![0u8; size];
    frame[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x0b]);
    frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x0a]);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    for _ in 0..count {
        if out
            .write_all(&(size as u16).to_be_bytes())
            .and_then(|_| out.write_all(&frame))
            .is_err()
        {
            std::process::exit(1);
        }
    }
    let _ = out.flush();
    // Keep stdin-side plugs alive until the receiver is done: wait to be killed.
    std::thread::sleep(std::time::Duration::from_secs(3600));
}
