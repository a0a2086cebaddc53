//! The client: one GET over a fresh connection, hyper's HTTP/1 client on it.

use std::error::Error as _;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use filo_stack::Stack;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::io::Idle;
use crate::url::{Url, UrlError};
use crate::{MAX_HEADERS, MAX_HEAD_BYTES};

/// What [`fetch`] gets and where the body goes.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub url: Url,
    /// Write the body to this file (created once the response head has arrived) instead
    /// of stdout.
    pub output: Option<PathBuf>,
    /// How long to wait for the connection, and for each read.
    pub timeout: Duration,
}

impl FetchOptions {
    pub fn new(
        url: &str,
        output: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<FetchOptions, UrlError> {
        Ok(FetchOptions {
            url: url.parse()?,
            output,
            timeout,
        })
    }
}

/// Why a fetch failed; each names the peer (`HOST:PORT`) or the output.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connecting to {peer}: {err}")]
    Connect { peer: String, err: io::Error },
    #[error("connecting to {peer}: no answer within {timeout:?}")]
    ConnectTimeout { peer: String, timeout: Duration },
    #[error("not an HTTP response from {peer} ({why})")]
    NotHttp { peer: String, why: String },
    #[error(
        "the response head from {peer} is too large (more than {MAX_HEAD_BYTES} bytes or \
         {MAX_HEADERS} header fields)"
    )]
    HeadTooLarge { peer: String },
    #[error("{peer} closed the connection before a complete response head")]
    Closed { peer: String },
    #[error("the response from {peer} did not arrive: {why}")]
    Response { peer: String, why: String },
    #[error("the response body from {peer} is incomplete: {why}")]
    Body { peer: String, why: String },
    #[error("writing the body to {what}: {err}")]
    Output { what: String, err: io::Error },
    #[error("starting the async runtime: {0}")]
    Runtime(io::Error),
}

/// An error with its sources: hyper's own message alone says little ("error reading a body
/// from connection"); the cause says what happened.
fn chain(e: &hyper::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn head_error(peer: &str, e: hyper::Error) -> FetchError {
    let peer = peer.to_string();
    if e.is_parse_too_large() {
        FetchError::HeadTooLarge { peer }
    } else if e.is_parse() {
        FetchError::NotHttp {
            peer,
            why: chain(&e),
        }
    } else if e.is_incomplete_message() {
        FetchError::Closed { peer }
    } else {
        FetchError::Response {
            peer,
            why: chain(&e),
        }
    }
}

/// Sends `GET url` on a new connection from `stack` and returns the response once its head
/// has arrived; the body streams from the returned response. A read that waits longer than
/// `timeout` fails (the body's frames then end in an error). Needs a tokio runtime with time
/// enabled; the connection runs on a spawned task.
pub async fn get(
    stack: &Stack,
    url: &Url,
    timeout: Duration,
) -> Result<Response<Incoming>, FetchError> {
    let peer = url.authority();
    let conn = tokio::time::timeout(
        timeout,
        stack.tokio().tcp_connect((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| FetchError::ConnectTimeout {
        peer: peer.clone(),
        timeout,
    })?
    .map_err(|err| FetchError::Connect {
        peer: peer.clone(),
        err,
    })?;
    let (mut send, conn) = hyper::client::conn::http1::Builder::new()
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .max_buf_size(4 * MAX_HEAD_BYTES)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(Idle::new(conn, timeout)))
        .await
        .map_err(|e| head_error(&peer, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("connection: {e}");
        }
    });
    let req = Request::get(url.target.as_str())
        .header(HOST, peer.as_str())
        .header(USER_AGENT, "filo-stack")
        .header(CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| FetchError::Response {
            peer: peer.clone(),
            why: format!("building the request: {e}"),
        })?;
    send.send_request(req)
        .await
        .map_err(|e| head_error(&peer, e))
}

/// Fetches `opts.url` through `stack` on a current-thread runtime of its own, streaming the
/// body (of any status) to the output. Returns the status; a response that is not HTTP,
/// whose head is too large, or whose body ends early or breaks its framing is an error.
pub fn fetch(stack: &Stack, opts: &FetchOptions) -> Result<StatusCode, FetchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(FetchError::Runtime)?;
    rt.block_on(async {
        let resp = get(stack, &opts.url, opts.timeout).await?;
        let status = resp.status();
        let (what, mut out): (String, Box<dyn Write>) = match &opts.output {
            Some(p) => {
                let what = p.display().to_string();
                let f = std::fs::File::create(p).map_err(|err| FetchError::Output {
                    what: what.clone(),
                    err,
                })?;
                (what, Box::new(io::BufWriter::new(f)))
            }
            None => ("stdout".to_string(), Box::new(io::stdout().lock())),
        };
        let out_err = |err| FetchError::Output {
            what: what.clone(),
            err,
        };
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FetchError::Body {
                peer: opts.url.authority(),
                why: chain(&e),
            })?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).map_err(out_err)?;
            }
        }
        out.flush().map_err(out_err)?;
        Ok(status)
    })
}
