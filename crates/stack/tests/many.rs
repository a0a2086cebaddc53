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
