//! The static file server: one task per connection, hyper's HTTP/1 server on each.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use filo_stack::tokio::{TcpListener, TcpStream};
use filo_stack::Stack;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, SERVER};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::files::{self, Refusal};
use crate::io::Idle;
use crate::{MAX_HEADERS, MAX_HEAD_BYTES};

/// What to serve and how.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The directory whose files are served.
    pub dir: PathBuf,
    /// The TCP port, on every address of the stack (IPv4 and IPv6).
    pub port: u16,
    /// Stop after this many requests (0: never).
    pub max_requests: u64,
    /// A connection that makes no progress for this long is closed; a request head must
    /// arrive within it too.
    pub idle_timeout: Duration,
}

impl ServeOptions {
    pub fn new(dir: impl Into<PathBuf>, port: u16) -> ServeOptions {
        ServeOptions {
            dir: dir.into(),
            port,
            max_requests: 0,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// Errors starting or running a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{}: not a directory that can be served: {err}", dir.display())]
    Dir { dir: PathBuf, err: io::Error },
    #[error("listening on port {port}: {err}")]
    Listen { port: u16, err: io::Error },
    #[error("starting the async runtime: {0}")]
    Runtime(io::Error),
}

/// A listening file server (see [`Server::bind`]).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    max_requests: u64,
    idle_timeout: Duration,
    served: AtomicU64,
    /// Set once the server stops: connections finish their request and close.
    stopping: watch::Sender<bool>,
}

/// A response body: a buffer, or a file streamed in pieces.
type RespBody = BoxBody<Bytes, io::Error>;

impl Server {
    /// Checks the directory and listens on `[::]:port` of `stack` (no runtime needed yet).
    pub fn bind(stack: &Stack, opts: ServeOptions) -> Result<Server, ServeError> {
        let root = opts
            .dir
            .canonicalize()
            .and_then(|r| match r.is_dir() {
                true => Ok(r),
                false => Err(io::Error::other("not a directory")),
            })
            .map_err(|err| ServeError::Dir {
                dir: opts.dir.clone(),
                err,
            })?;
        let listener = stack
            .tokio()
            .tcp_listen(format!("[::]:{}", opts.port))
            .map_err(|err| ServeError::Listen {
                port: opts.port,
                err,
            })?;
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                root,
                max_requests: opts.max_requests,
                idle_timeout: opts.idle_timeout,
                served: AtomicU64::new(0),
                stopping: watch::channel(false).0,
            }),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves on a current-thread runtime of its own until `stop` is set or `max_requests`
    /// were answered; returns the number of requests.
    pub fn run(self, stop: &AtomicBool) -> Result<u64, ServeError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(ServeError::Runtime)?;
        rt.block_on(self.serve(async {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }))
    }

    /// Serves until `shutdown` completes or `max_requests` were answered, then lets the open
    /// connections finish their current request (for at most the idle timeout and 10 s
    /// more); returns the number of requests. Needs a tokio runtime with time enabled.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<u64, ServeError> {
        let Server { listener, shared } = self;
        let mut tasks = JoinSet::new();
        let mut stopping = shared.stopping.subscribe();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((conn, peer)) => {
                        tasks.spawn(connection(conn, peer, shared.clone()));
                    }
                    Err(e) => tracing::info!("accept: {e}"),
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = stopping.wait_for(|s| *s) => break,
                _ = &mut shutdown => break,
            }
        }
        shared.stopping.send_replace(true);
        drop(listener);
        let grace = shared.idle_timeout + Duration::from_secs(10);
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::info!("{} connections still open after {grace:?}", tasks.len());
        }
        Ok(shared.served.load(Ordering::Relaxed))
    }
}

async fn connection(conn: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let io = TokioIo::new(Idle::new(conn, shared.idle_timeout));
    let svc = {
        let shared = shared.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let fut: Pin<Box<dyn Future<Output = _> + Send>> =
                Box::pin(async move { Ok::<_, Infallible>(respond(&shared, req).await) });
            fut
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(shared.idle_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .max_buf_size(4 * MAX_HEAD_BYTES);
    let mut conn = http.serve_connection(io, svc);
    let mut watch = shared.stopping.subscribe();
    let mut stop = Box::pin(async move {
        let _ = watch.wait_for(|s| *s).await;
    });
    let mut graceful = false;
    let r = poll_fn(|cx| {
        if !graceful && stop.as_mut().poll(cx).is_ready() {
            graceful = true;
            Pin::new(&mut conn).graceful_shutdown();
        }
        conn.poll_without_shutdown(cx)
    })
    .await;
    if let Err(e) = r {
        tracing::info!("{peer}: {e}");
    }
    let conn = conn
        .into_parts()
        .io
        .into_inner()
        .into_inner()
        .into_blocking();
    let _ = conn.shutdown(std::net::Shutdown::Write);
    if *shared.stopping.borrow() {
        // The process may exit next: wait until the peer has the response (and our FIN).
        let _ = tokio::task::spawn_blocking(move || conn.drain(Duration::from_secs(10))).await;
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<RespBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(never)
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn never(e: Infallible) -> io::Error {
    match e {}
}

async fn respond(shared: &Shared, req: Request<Incoming>) -> Response<RespBody> {
    let n = shared.served.fetch_add(1, Ordering::Relaxed) + 1;
    if shared.max_requests > 0 && n >= shared.max_requests {
        shared.stopping.send_replace(true);
    }
    let head = req.method() == Method::HEAD;
    let mut resp = if req.method() != Method::GET && !head {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else {
        file_response(shared, req.uri().path(), head).await
    };
    resp.headers_mut()
        .insert(SERVER, HeaderValue::from_static("filo-stack"));
    resp
}

async fn file_response(shared: &Shared, path: &str, head: bool) -> Response<RespBody> {
    let (root, path) = (shared.root.clone(), path.to_string());
    let found = tokio::task::spawn_blocking(move || files::resolve(&root, &path))
        .await
        .unwrap_or(Err(Refusal::NotFound));
    let opened = match found {
        Ok(file) => open(&file).await.map(|(f, len)| (file, f, len)),
        Err(r) => Err(r),
    };
    match opened {
        Ok((file, f, len)) => {
            let body = match head {
                true => Empty::new().map_err(never).boxed(),
                false => FileBody::new(f, len).boxed(),
            };
            let mut r = Response::new(body);
            let h = r.headers_mut();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(files::content_type(&file)),
            );
            h.insert(CONTENT_LENGTH, HeaderValue::from(len));
            r
        }
        Err(Refusal::BadRequest) => text(StatusCode::BAD_REQUEST, "bad request\n"),
        Err(Refusal::Forbidden) => text(StatusCode::FORBIDDEN, "forbidden\n"),
        Err(Refusal::NotFound) => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn open(file: &Path) -> Result<(tokio::fs::File, u64), Refusal> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|_| Refusal::NotFound)?;
    let len = f.metadata().await.map_err(|_| Refusal::NotFound)?.len();
    Ok((f, len))
}

/// A file's first `left` bytes, read in pieces of up to 64 KiB as hyper asks for them. A
/// file that shrinks while being sent is an error (the Content-Length was promised).
struct FileBody {
    file: tokio::fs::File,
    left: u64,
    buf: Box<[u8]>,
}

impl FileBody {
    fn new(file: tokio::fs::File, len: u64) -> FileBody {
        FileBody {
            file,
            left: len,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let me = self.get_mut();
        if me.left == 0 {
            return Poll::Ready(None);
        }
        let want = me
            .buf
            .len()
            .min(usize::try_from(me.left).unwrap_or(usize::MAX));
        let mut rb = ReadBuf::new(&mut me.buf[..want]);
        match Pin::new(&mut me.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while being sent",
                ))))
            }
            Poll::Ready(Ok(())) => {
                let data = Bytes::copy_from_slice(rb.filled());
                me.left -= data.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
