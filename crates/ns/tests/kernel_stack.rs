//! Kernel-backed stacks in one process: real std/tokio sockets in private namespaces.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use filo_ns::{KernelStack, NetConf};
use filo_switch::daemon::{Switch, SwitchConfig};
use filo_test_support::TempDir;

struct RunningSwitch {
    stop: Arc<AtomicBool>,
    vnl: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RunningSwitch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn switch(tmp: &TempDir, name: &str) -> RunningSwitch {
    let dir = tmp.join(name);
    let mut sw = Switch::bind(SwitchConfig::new(&dir)).expect("switch");
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let thread = std::thread::spawn(move || {
        let _ = sw.run(&s2);
    });
    RunningSwitch {
        stop,
        vnl: format!("vde://{}", dir.display()),
        thread: Some(thread),
    }
}

fn conf(s: &str) -> NetConf {
    s.parse().expect("conf")
}

fn serve_name(l: TcpListener, name: &'static str) {
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut c = c;
            let _ = c.write_all(name.as_bytes());
        }
    });
}

fn read_all(mut s: std::net::TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn two_stacks_serve_the_same_port_and_a_third_reaches_both() {
    let tmp = TempDir::new("filo-ks");
    let sw = switch(&tmp, "sw");
    let a = KernelStack::new(&[&sw.vnl], &conf("ip=10.77.0.1/24")).unwrap();
    let b = KernelStack::new(&[&sw.vnl], &conf("ip=10.77.0.2/24")).unwrap();
    let c = KernelStack::new(&[&sw.vnl], &conf("ip=10.77.0.3/24")).unwrap();
    // The same port twice in one process: each listener lives in its own namespace.
    serve_name(a.tcp_listen("0.0.0.0:8080").unwrap(), "stack A");
    serve_name(b.tcp_listen("0.0.0.0:8080").unwrap(), "stack B");
    assert_eq!(
        read_all(c.tcp_connect("10.77.0.1:8080").unwrap()),
        "stack A"
    );
    assert_eq!(
        read_all(c.tcp_connect("10.77.0.2:8080").unwrap()),
        "stack B"
    );
    // The host's namespace does not reach stack A (whatever its own routes do with the
    // address, e.g. a proxy that accepts everything, it is not A's server).
    if let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &"10.77.0.1:8080".parse().unwrap(),
        Duration::from_millis(300),
    ) {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert_ne!(out, "stack A");
    }
    // UDP too.
    let ua = a.udp_bind("10.77.0.1:5000").unwrap();
    let uc = c.udp_bind("0.0.0.0:0").unwrap();
    uc.send_to(b"hello", "10.77.0.1:5000").unwrap();
    ua.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = ua.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from.ip().to_string(), "10.77.0.3");
}

#[test]
fn stack_sockets_work_with_tokio() {
    let tmp = TempDir::new("filo-ks");
    let sw = switch(&tmp, "sw");
    let a = KernelStack::new(&[&sw.vnl], &conf("ip=10.78.0.1/24")).unwrap();
    let b = KernelStack::new(&[&sw.vnl], &conf("ip=10.78.0.2/24")).unwrap();
    let l = a.tcp_listen("10.78.0.1:9000").unwrap();
    l.set_nonblocking(true).unwrap();
    let s = b.tcp_connect("10.78.0.1:9000").unwrap();
    s.set_nonblocking(true).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::from_std(l).unwrap();
        let mut s = tokio::net::TcpStream::from_std(s).unwrap();
        let (mut conn, peer) = l.accept().await.unwrap();
        assert_eq!(peer.ip().to_string(), "10.78.0.2");
        let data = vec![7u8; 1 << 20];
        let d2 = data.clone();
        let w = tokio::spawn(async move { s.write_all(&d2).await.map(|_| s) });
        let mut got = vec![0u8; data.len()];
        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, data);
        w.await.unwrap().unwrap();
    });
}

#[test]
fn dropping_a_stack_ends_its_helper() {
    let tmp = TempDir::new("filo-ks");
    let sw = switch(&tmp, "sw");
    let a = KernelStack::new(&[&sw.vnl], &conf("ip=10.79.0.1/24")).unwrap();
    let pid = a.helper_pid();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(a);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = TempDir::new("filo-ks");
    let missing = format!("vde://{}", tmp.join("nosw").display());
    let e = KernelStack::new(&[&missing], &NetConf::default()).unwrap_err();
    assert!(e.to_string().contains("no VDE switch"), "{e}");
    let sw = switch(&tmp, "sw");
    let e = KernelStack::new(&[&sw.vnl], &conf("ip=10.80.0.1/24@vde3")).unwrap_err();
    assert!(e.to_string().contains("no interface vde3"), "{e}");
    assert!("ip=300.1.1.1".parse::<NetConf>().is_err());
}
