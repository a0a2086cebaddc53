//! Many stacks: a thousand in one process on one driver thread, each answering ping; async
//! (tokio) sockets; default stacks per process and per thread.

use std::time::{Duration, Instant};

use filo_stack::{cable, Driver, Stack};
use filo_switch::daemon::{Switch, SwitchConfig};
use filo_test_support::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn a_thousand_stacks_on_one_driver_thread_each_answer_ping() {
    filo_stack::raise_fd_limit().unwrap();
    let tmp = TempDir::new("filo-many");
    let mut cfg = SwitchConfig::new(tmp.join("sw"));
    cfg.numports = 1100;
    let _sw = Switch::spawn(cfg).unwrap();
    let vnl = format!("vde://{}", tmp.join("sw").display());
    let driver = Driver::new().unwrap();
    let t0 = Instant::now();
    let stacks: Vec<Stack> = (0..1000u32)
        .map(|i| {
            Stack::builder()
                .name(format!("node{i}"))
                .interface(&vnl, format!("ip=10.77.{}.{}/16", i / 250, i % 250 + 1))
                .driver(&driver)
                .build()
                .unwrap()
        })
        .collect();
    let created = t0.elapsed();
    let pinger = Stack::builder()
        .interface(&vnl, "ip=10.77.200.1/16")
        .build()
        .unwrap();
    let t0 = Instant::now();
    for i in 0..1000u32 {
        let dst = format!("10.77.{}.{}", i / 250, i % 250 + 1);
        pinger
            .ping(dst.parse().unwrap(), i as u16, 32, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{dst}: {e}"));
    }
    eprintln!(
        "1000 stacks created in {created:?}, all pinged in {:?}",
        t0.elapsed()
    );
    // Every stack answered on its own: each received frames and sent at least a reply.
    assert!(stacks.iter().all(|s| s.counters().frames_out >= 2));
}

#[test]
fn tokio_echo_between_two_stacks() {
    let (a, b) = cable().unwrap();
    let s1 = Stack::builder()
        .interface_plug(a, "ip=10.8.0.1/24")
        .build()
        .unwrap();
    let s2 = Stack::builder()
        .interface_plug(b, "ip=10.8.0.2/24")
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let l = s1.tokio().tcp_listen("0.0.0.0:9").unwrap();
        let server = tokio::spawn(async move {
            let (mut c, peer) = l.accept().await.unwrap();
            assert_eq!(peer.ip().to_string(), "10.8.0.2");
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).await.unwrap();
            c.write_all(&buf).await.unwrap();
            c.shutdown().await.unwrap();
            buf.len()
        });
        let mut c = s2.tokio().tcp_connect("10.8.0.1:9").await.unwrap();
        let data: Vec<u8> = (0..500_000u32).map(|i| (i % 253) as u8).collect();
        c.write_all(&data).await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, data);
        assert_eq!(server.await.unwrap(), data.len());
        let e = s2.tokio().tcp_connect("10.8.0.1:10").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    });
}

#[test]
fn default_stacks_per_process_and_per_thread() {
    let p = Stack::builder().name("proc").build().unwrap();
    let t = Stack::builder().name("thread").build().unwrap();
    filo_stack::set_default(Some(&p));
    assert_eq!(filo_stack::default_stack().unwrap().name(), "proc");
    let t2 = t.clone();
    std::thread::spawn(move || {
        filo_stack::set_thread_default(Some(&t2));
        assert_eq!(filo_stack::default_stack().unwrap().name(), "thread");
    })
    .join()
    .unwrap();
    assert_eq!(filo_stack::default_stack().unwrap().name(), "proc");
    filo_stack::set_default(None);
    assert!(filo_stack::default_stack().is_none());
}

/// An Ethernet/IPv4/UDP frame from 10.66.0.2:9 to `dst_ip`:`port` (UDP checksum left out, as
/// IPv4 allows).
fn udp_frame(dst_mac: [u8; 6], dst_ip: [u8; 4], port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0x66, 0x02]);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 10, 66, 0, 2]);
    ip.extend_from_slice(&dst_ip);
    let sum = ip
        .chunks(2)
        .fold(0u32, |s, w| s + u32::from(u16::from_be_bytes([w[0], w[1]])));
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&9u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

#[test]
fn a_stack_takes_a_whole_frame_train_larger_than_its_receive_batch() {
    // A stack's vde:// link on a filo switch speaks super-frames and trains, and the driver
    // reads such links 16 frames at a time: a 64-frame train comes out in pieces, all of it,
    // in order.
    let tmp = TempDir::new("filo-strain");
    let _sw = Switch::spawn(SwitchConfig::new(tmp.join("sw"))).unwrap();
    let vnl = format!("vde://{}", tmp.join("sw").display());
    let stack = Stack::builder()
        .interface(&vnl, "ip=10.66.0.1/24")
        .build()
        .unwrap();
    let udp = stack.udp_bind("0.0.0.0:7000").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mac = stack.links()[0].mac;
    let mut plug = filo_vnl::open(&vnl).unwrap();
    let frames: Vec<Vec<u8>> = (0..64u32)
        .map(|i| {
            udp_frame(
                mac,
                [10, 66, 0, 1],
                7000,
                format!("datagram {i}").as_bytes(),
            )
        })
        .collect();
    let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    let mut sent = 0;
    while sent < refs.len() {
        sent += plug
            .send_batch(&refs[sent..])
            .expect("the switch takes the train");
    }
    let mut buf = [0u8; 64];
    for i in 0..64u32 {
        let (n, _) = udp
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} of 64: {e}"));
        assert_eq!(&buf[..n], format!("datagram {i}").as_bytes());
    }
}
