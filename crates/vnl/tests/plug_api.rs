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

/// A transport on one end of a datagram socket pair whose `send` refuses frames whose first
/// byte is 0xee with `InvalidInput`, as a tap refuses a bad virtio-net header (`EINVAL`).
struct Picky(UnixDatagram);

impl filo_vnl::Transport for Picky {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf)
    }

    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        if frame[0] == 0xee {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        self.0.send(frame).map(|_| ())
    }

    fn data_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.0)
    }

    fn kind(&self) -> &'static str {
        "picky"
    }
}

/// A plug on a [`Picky`] transport, and the other end of its socket pair.
fn picky(name: &str) -> (filo_vnl::Plug, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (filo_vnl::Plug::from_transport(name, Box::new(Picky(a))), b)
}

#[test]
fn a_frame_the_transport_refuses_ends_a_batch_after_the_frames_sent() {
    let (mut plug, far) = picky("p");
    let (good, mut bad) = (frame(1, 60), frame(2, 60));
    bad[0] = 0xee;
    // The frame in front went out and is reported; the refused one fails the next call.
    assert_eq!(plug.send_batch(&[&good, &bad, &good]).unwrap(), 1);
    assert_eq!(plug.stats().frames_out, 1);
    let e = plug.send_batch(&[&bad, &good]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let mut buf = [0u8; 128];
    assert_eq!(far.recv(&mut buf).unwrap(), 60);
    far.set_nonblocking(true).unwrap();
    assert!(far.recv(&mut buf).is_err(), "only one frame went out");
}

#[test]
fn a_cable_drops_and_counts_a_frame_the_far_side_refuses_and_goes_on() {
    let (src, near) = picky("src");
    let (dst, far) = picky("dst");
    let mut plugs = [src, dst];
    let stop = std::sync::atomic::AtomicBool::new(false);
    let frames = [frame(1, 60), frame(2, 60), frame(3, 60)];
    let mut bad = frames[1].clone();
    bad[0] = 0xee;
    std::thread::scope(|s| {
        let cable = s.spawn(|| filo_vnl::cable::run(&mut plugs, &stop));
        for f in [&frames[0], &bad, &frames[2]] {
            near.send(f).unwrap();
        }
        let mut buf = [0u8; 128];
        for want in [&frames[0], &frames[2]] {
            let n = far.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &want[..]);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let end = cable.join().unwrap();
        assert!(matches!(end, filo_vnl::cable::CableEnd::Stopped), "{end:?}");
    });
    let s = plugs[1].stats();
    assert_eq!((s.frames_out, s.refused_out), (2, 1));
}
