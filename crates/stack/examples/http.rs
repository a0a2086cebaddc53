//! An HTTP server and an HTTP client, each a filo stack with its own IP address, on a filo
//! switch running inside this process. No root, no kernel networking involved.
//!
//! `cargo run -p filo-stack --example http`

use std::io::{BufRead, BufReader, Read, Write};

use filo_stack::Stack;
use filo_switch::daemon::{Switch, SwitchConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("filo-http-{}", std::process::id()));
    let _switch = Switch::spawn(SwitchConfig::new(&dir))?;
    let vnl = format!("vde://{}", dir.display());

    // The server: 10.0.0.80 and fd00::80, answering every request with a greeting.
    let server = Stack::builder()
        .name("web")
        .interface(&vnl, "eth,ip=10.0.0.80/24,ip=fd00::80/64")
        .build()?;
    let listener = server.tcp_listen("[::]:80")?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            let mut request = String::new();
            let _ = BufReader::new(&conn).read_line(&mut request);
            let body = format!("hello {peer}, you asked for {}\n", request.trim_end());
            let mut w = &conn;
            let _ = write!(
                w,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.shutdown(std::net::Shutdown::Write);
        }
    });

    // The client: 10.0.0.7 and fd00::7, fetching over IPv4 and over IPv6.
    let client = Stack::builder()
        .name("browser")
        .interface(&vnl, "eth,ip=10.0.0.7/24,ip=fd00::7/64")
        .build()?;
    for target in ["10.0.0.80:80", "[fd00::80]:80"] {
        let mut c = client.tcp_connect(target)?;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut reply = String::new();
        c.read_to_string(&mut reply)?;
        println!("{target}:\n{reply}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
