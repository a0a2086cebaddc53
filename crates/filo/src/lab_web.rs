//! `filo lab web`: the running lab in a browser (the modern vdetelweb) and `/metrics` for
//! Prometheus. hyper's HTTP/1 server on a kernel TCP socket; the page (HTML, JS and CSS in
//! one file, embedded) draws the lab's SVG and polls `/api/status` once a second.
//!
//! | path | what |
//! |---|---|
//! | `GET /` | the page |
//! | `GET /graph.svg` | the drawing (`filo lab graph`) |
//! | `GET /api/status` | `filo lab status --json` |
//! | `GET /api/node/NAME` | a node's addresses, read inside it (`ip -br addr`) |
//! | `POST /api/link/NAME` | `loss=5&delay=50` (form-encoded): `filo lab set`; answers the settings |
//! | `GET /metrics` | counters by switch, port, link, direction and drop reason |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::lab::{open_lab, report, set_link};

const PAGE: &str = include_str!("lab_web.html");
/// The largest request body taken (a form of impairments is a few dozen bytes).
const MAX_BODY: usize = 4096;
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;

/// Serve the running lab's picture with live counters, and /metrics.
#[derive(Args, Debug)]
pub struct WebArgs {
    #[arg(long, short = 'n')]
    name: Option<String>,
    /// Address and port to listen on (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8733")]
    listen: SocketAddr,
}

pub fn run(args: WebArgs) -> Result<std::process::ExitCode> {
    // The lab must be up now; each request reads it again (it may go down meanwhile).
    let name = open_lab(args.name)?.lab.name;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(name, args.listen))
}

async fn serve(name: String, listen: SocketAddr) -> Result<std::process::ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!("filo lab web: lab {name} on http://{addr}/ (metrics: http://{addr}/metrics)");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let name = Arc::new(name);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        if crate::sys::STOP.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(std::process::ExitCode::SUCCESS);
        }
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        let (conn, _) = match accepted {
            Err(_) => continue,
            Ok(Err(e)) => {
                tracing::info!("accept: {e}");
                continue;
            }
            Ok(Ok(c)) => c,
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            continue;
        };
        let name = name.clone();
        let port = addr.port();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let name = name.clone();
                async move { Ok::<_, Infallible>(respond(&name, port, req).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 << 10);
            let conn = http.serve_connection(TokioIo::new(conn), svc);
            // A client that sends nothing more is cut off after a minute of silence.
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            drop(permit);
        });
    }
}

fn reply(status: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        "application/json",
        serde_json::json!({ "error": message }).to_string(),
    )
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string(value) {
        Ok(t) => reply(StatusCode::OK, "application/json", t),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Runs blocking lab work (consoles, exec) off the runtime's thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
}

/// Whether a request's `Host` names this server by an address or as localhost, on its port.
/// A page of another site whose name was made to resolve to this address (DNS rebinding)
/// sends its own name, and is refused: it must not read the lab through the user's browser.
/// A request without `Host` (HTTP/1.0) comes from no browser and is served.
fn host_allowed(host: Option<&HeaderValue>, port: u16) -> bool {
    let Some(host) = host else { return true };
    let Some(authority) = host
        .to_str()
        .ok()
        .and_then(|h| h.parse::<hyper::http::uri::Authority>().ok())
    else {
        return false;
    };
    let name = authority.host();
    let literal = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    (literal || name.eq_ignore_ascii_case("localhost"))
        && authority.port_u16().unwrap_or(80) == port
}

async fn respond(name: &Arc<String>, port: u16, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if !host_allowed(req.headers().get(hyper::header::HOST), port) {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default();
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            &format!("Host {host:?}: this server answers only to its address or localhost, on port {port}"),
        );
    }
    let only = |allowed: &'static str| {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} {path}: only {allowed}"),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allowed));
        r
    };
    let name = (**name).clone();
    match path.as_str() {
        "/" | "/index.html" => match method {
            Method::GET | Method::HEAD => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
            _ => only("GET, HEAD"),
        },
        "/graph.svg" => match method {
            Method::GET => match blocking(move || Ok(open_lab(Some(name))?.lab)).await {
                Ok(lab) => reply(StatusCode::OK, "image/svg+xml", filo_lab::graph::svg(&lab)),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
            },
            _ => only("GET"),
        },
        "/api/status" => match method {
            Method::GET => match blocking(move || Ok(report(&open_lab(Some(name))?))).await {
                Ok(rep) => json(&rep),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
            },
            _ => only("GET"),
        },
        "/metrics" => match method {
            Method::GET => match blocking(move || Ok(report(&open_lab(Some(name))?))).await {
                Ok(rep) => match metrics(&rep) {
                    Ok(text) => reply(
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    ),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                },
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
            },
            _ => only("GET"),
        },
        p if p.starts_with("/api/node/") => {
            if method != Method::GET {
                return only("GET");
            }
            let node = p["/api/node/".len()..].to_string();
            match blocking(move || node_info(&name, &node)).await {
                Ok(v) => json(&v),
                Err(e) => error(StatusCode::NOT_FOUND, &format!("{e:#}")),
            }
        }
        p if p.starts_with("/api/link/") => {
            if method != Method::POST {
                return only("POST");
            }
            // A page from elsewhere must not change the lab through the user's browser (a
            // form POST needs no preflight): only this server's own page may post.
            let header = |name: hyper::header::HeaderName| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            if let Some(origin) = header(hyper::header::ORIGIN) {
                let own = header(hyper::header::HOST).map(|h| format!("http://{h}"));
                if own.as_deref() != Some(origin.as_str()) {
                    return error(
                        StatusCode::FORBIDDEN,
                        &format!(
                            "changes come only from this server's own page, not from {origin}"
                        ),
                    );
                }
            }
            let link = p["/api/link/".len()..].to_string();
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("the body is over {MAX_BODY} bytes: expected KEY=VALUE pairs"),
                    )
                }
            };
            let Ok(text) = std::str::from_utf8(&body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the body is not UTF-8: expected loss=5&delay=50",
                );
            };
            let values: Vec<String> = text
                .split(['&', '\n'])
                .map(|v| v.trim().replace('+', " "))
                .map(|v| percent_decode(&v))
                .filter(|v| !v.is_empty())
                .collect();
            let known = blocking({
                let (name, link) = (name.clone(), link.clone());
                move || Ok(open_lab(Some(name))?.lab.link(&link).is_some())
            })
            .await;
            match known {
                Ok(true) => {}
                Ok(false) => {
                    return error(
                        StatusCode::NOT_FOUND,
                        &format!("no link {link:?} in this lab"),
                    )
                }
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
            }
            match blocking(move || set_link(&open_lab(Some(name))?, &link, &values)).await {
                Ok(settings) => json(&settings),
                Err(e) => error(StatusCode::BAD_REQUEST, &format!("{e:#}")),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no page {path:?}: see / for the lab"),
        ),
    }
}

/// `%XX` decoding of a form value (invalid escapes are kept as written).
fn percent_decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A node's addresses, read inside it.
fn node_info(name: &str, node: &str) -> Result<serde_json::Value> {
    let r = open_lab(Some(name.to_string()))?;
    let n = r.lab.find_node(node).map_err(|e| anyhow::anyhow!(e))?;
    let daemon = match n.kind {
        filo_lab::model::NodeKind::Slirp => Some((
            r.layout.slirp_mgmt(&n.name),
            ["showinfo".to_string(), "leases/print".into()],
        )),
        filo_lab::model::NodeKind::Router => Some((
            r.layout.router_mgmt(&n.name),
            ["iface/print".to_string(), "leases/print".into()],
        )),
        _ => None,
    };
    let addresses = if let Some((mgmt, commands)) = daemon {
        // A gateway or router has no namespace to look in: its console says what it serves.
        match crate::lab::console(&mgmt, &commands) {
            Ok(replies) => replies
                .iter()
                .flat_map(|reply| reply.lines.iter().map(|l| format!("{l}\n")))
                .collect(),
            Err(e) => format!("({e:#})"),
        }
    } else if n.kind == filo_lab::model::NodeKind::Userstack {
        // One process with a user-space stack: nothing to enter; its addresses are the file's.
        format!(
            "a user-space stack in one process, {}\n",
            if n.ip.is_empty() {
                "configured by DHCP or SLAAC".to_string()
            } else {
                format!("with {}", n.ip.join(" "))
            }
        )
    } else {
        match crate::lab::node_output(&r, n, &["ip", "-br", "addr"]) {
            Ok(t) => t,
            Err(e) => format!("({e:#})"),
        }
    };
    Ok(serde_json::json!({
        "name": n.name,
        "kind": n.kind.name(),
        "declared": n.ip,
        "dhcp": n.dhcp,
        "slaac": n.slaac,
        "addresses": addresses,
    }))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    lab: String,
    switch: String,
    port: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortDropLabels {
    lab: String,
    switch: String,
    port: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    lab: String,
    link: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkDropLabels {
    lab: String,
    link: String,
    direction: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlirpLabels {
    lab: String,
    node: String,
    counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpLabels {
    lab: String,
    kind: String,
    name: String,
}

/// The lab's counters in Prometheus' (OpenMetrics) text format.
pub(crate) fn metrics(rep: &filo_lab::status::Report) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    let frames = Family::<PortLabels, Counter>::default();
    let bytes = Family::<PortLabels, Counter>::default();
    let drops = Family::<PortDropLabels, Counter>::default();
    let lframes = Family::<LinkLabels, Counter>::default();
    let lbytes = Family::<LinkLabels, Counter>::default();
    let ldrops = Family::<LinkDropLabels, Counter>::default();
    let up = Family::<UpLabels, Gauge>::default();
    let slirp = Family::<SlirpLabels, Gauge>::default();
    let router = Family::<SlirpLabels, Gauge>::default();
    let lab = rep.name.clone();
    for s in &rep.switches {
        up.get_or_create(&UpLabels {
            lab: lab.clone(),
            kind: "switch".into(),
            name: s.name.clone(),
        })
        .set(i64::from(s.alive));
        for p in &s.ports {
            let l = |direction: &str| PortLabels {
                lab: lab.clone(),
                switch: s.name.clone(),
                port: p.port.to_string(),
                direction: direction.into(),
            };
            frames.get_or_create(&l("in")).inc_by(p.in_frames);
            frames.get_or_create(&l("out")).inc_by(p.out_frames);
            bytes.get_or_create(&l("in")).inc_by(p.in_bytes);
            bytes.get_or_create(&l("out")).inc_by(p.out_bytes);
            for (reason, n) in [("queue_full", p.drop_queue), ("error", p.drop_error)] {
                drops
                    .get_or_create(&PortDropLabels {
                        lab: lab.clone(),
                        switch: s.name.clone(),
                        port: p.port.to_string(),
                        reason: reason.into(),
                    })
                    .inc_by(n);
            }
        }
    }
    for l in &rep.links {
        up.get_or_create(&UpLabels {
            lab: lab.clone(),
            kind: "link".into(),
            name: l.name.clone(),
        })
        .set(i64::from(l.alive));
        for (direction, c) in [("a_to_b", &l.a_to_b), ("b_to_a", &l.b_to_a)] {
            let Some(c) = c else { continue };
            let lb = LinkLabels {
                lab: lab.clone(),
                link: l.name.clone(),
                direction: direction.into(),
            };
            lframes.get_or_create(&lb).inc_by(c.out_frames);
            lbytes.get_or_create(&lb).inc_by(c.out_bytes);
            for (reason, n) in [
                ("loss", c.dropped_loss),
                ("mtu", c.dropped_mtu),
                ("capacity", c.dropped_capacity),
            ] {
                ldrops
                    .get_or_create(&LinkDropLabels {
                        lab: lab.clone(),
                        link: l.name.clone(),
                        direction: direction.into(),
                        reason: reason.into(),
                    })
                    .inc_by(n);
            }
        }
    }
    for n in &rep.nodes {
        up.get_or_create(&UpLabels {
            lab: lab.clone(),
            kind: n.kind.clone(),
            name: n.name.clone(),
        })
        .set(i64::from(n.alive));
        let family = if n.kind == "router" { &router } else { &slirp };
        for (counter, v) in &n.counters {
            family
                .get_or_create(&SlirpLabels {
                    lab: lab.clone(),
                    node: n.name.clone(),
                    counter: counter.clone(),
                })
                .set(i64::try_from(*v).unwrap_or(i64::MAX));
        }
    }
    reg.register(
        "filo_switch_port_frames",
        "Frames through a switch port, by direction",
        frames,
    );
    reg.register(
        "filo_switch_port_bytes",
        "Bytes through a switch port, by direction",
        bytes,
    );
    reg.register(
        "filo_switch_port_drops",
        "Frames a switch dropped at a port, by reason",
        drops,
    );
    reg.register(
        "filo_link_frames",
        "Frames a link delivered, by direction",
        lframes,
    );
    reg.register(
        "filo_link_bytes",
        "Bytes a link delivered, by direction",
        lbytes,
    );
    reg.register(
        "filo_link_drops",
        "Frames a link dropped, by direction and reason",
        ldrops,
    );
    reg.register(
        "filo_slirp",
        "A slirp node's counters and open flows (its console's stat)",
        slirp,
    );
    reg.register(
        "filo_router",
        "A router node's drop counters (its console's stat) and frames per interface (iface/print)",
        router,
    );
    reg.register("filo_lab_up", "1 when the lab's process is running", up);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
}
