//! The Plug API without root: short frames are dropped and counted, batches, and the tokio
//! wrapper — all over ptp:// sockets in a temp dir.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use filo_vnl::tokio_plug::AsyncPlug;
use filo_vnl::FrameBatch;

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("filo-api-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn frame(seq: u8, len: usize) -> Vec<u8> {
    let mut f = vec![seq; len];
    f[..12].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, seq]);
    f
}

#[test]
fn frames_under_14_bytes_are_dropped_and_counted() {
    let dir = tmpdir("short");
    let path = dir.join("p");
    let mut plug = filo_vnl::open(&format!("ptp://{}", path.display())).unwrap();
    let raw = UnixDatagram::unbound().unwrap();
    raw.send_to(&[1u8; 10], &path).unwrap();
    raw.send_to(&[2u8; 0], &path).unwrap();
    raw.send_to(&frame(3, 60), &path).unwrap();
    let mut buf = vec![0u8; 9236];
    let n = plug
        .recv_timeout(&mut buf, Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(&buf[..n], &frame(3, 60)[..]);
    let s = plug.stats();
    assert_eq!((s.dropped_short, s.frames_in), (2, 1));
    // Sending a short frame is refused, not sent.
    assert!(plug.send(&[0u8; 13]).is_err());
    assert_eq!(plug.stats().refused_out, 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn batches_carry_many_frames_per_call() {
    let dir = tmpdir("batch");
    let vnl = format!("ptp://{}", dir.join("b").display());
    let mut a = filo_vnl::open(&vnl).unwrap();
    let mut b = filo_vnl::open(&vnl).unwrap();
    let frames: Vec<Vec<u8>> = (0..40).map(|i| frame(i, 64 + i as usize)).collect();
    let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    let mut sent = 0;
    let mut batch = FrameBatch::new(64);
    let mut got = Vec::new();
    while got.len() < frames.len() {
        // The receiver's queue is short (net.unix.max_dgram_qlen): send what fits, drain, repeat.
        if sent < refs.len() {
            match b.send_batch(&refs[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        match a.recv_batch(&mut batch) {
            Ok(_) => got.extend(batch.frames().map(<[u8]>::to_vec)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, frames);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_tokio_wrapper_sends_and_receives() {
    let dir = tmpdir("tokio");
    let vnl = format!("ptp://{}", dir.join("t").display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut a = AsyncPlug::new(filo_vnl::open(&vnl).unwrap()).unwrap();
        let mut b = AsyncPlug::new(filo_vnl::open(&vnl).unwrap()).unwrap();
        let echo = tokio::spawn(async move {
            let mut buf = vec![0u8; 9236];
            for _ in 0..100 {
                let n = b.recv(&mut buf).await.unwrap();
                buf[11] ^= 0xff;
                b.send(&buf[..n]).await.unwrap();
            }
        });
        // b binds second: a's first sends may go nowhere until b exists; b exists already.
        let mut buf = vec![0u8; 9236];
        for i in 0..100u8 {
            let f = frame(i, 100);
            a.send(&f).await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(2), a.recv(&mut buf))
                .await
                .expect("echo in time")
                .unwrap();
            assert_eq!(n, 100);
            assert_eq!(buf[11], i ^ 0xff);
        }
        echo.await.unwrap();
    });
    let _ = std::fs::remove_dir_all(dir);
}
