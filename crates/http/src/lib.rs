//! # filo-http: HTTP/1.1 on filo stacks, with hyper
//!
//! A static file server ([`Server`]) and a one-shot client ([`fetch`]) for user-space filo
//! stacks, built on `hyper` 1.x over filo-stack's tokio sockets (`stack.tokio()`). They are
//! what `filo stack http-serve` and `filo stack fetch` run, and they double as the proof that
//! the async socket API carries the libraries Rust users already use.
//!
//! Why a crate of its own rather than a `filo_stack::http` module behind a feature: hyper,
//! http and their friends are a dependency tree that the stack library (and everything built
//! on it, such as the switch-side tools) should not have to compile, and a feature of
//! filo-stack would still make every `cargo test -p filo-stack --all-features` build them.
//! A crate keeps the stack's dependency list what it was, and depends on the stack the same
//! way a user's program would: only through its public async API.
//!
//! ## Theory of operation
//!
//! ```text
//!  Server::run / fetch              blocking entry points: a current-thread tokio runtime
//!        │                          (filo sockets are woken by the stack's driver thread,
//!        │                          so no tokio reactor is involved)
//!  hyper http1 (server / client)    request and response heads bounded by
//!        │                          MAX_HEAD_BYTES and MAX_HEADERS; chunked decoding;
//!        │                          Content-Length checked
//!  Idle<filo_stack::tokio::TcpStream>   an I/O that fails with TimedOut when neither
//!                                   reading nor writing makes progress for a while
//! ```
//!
//! The server runs one task per connection (a slow or silent client only holds its own
//! task, and [`Idle`] ends it), maps request paths to files with [`files::resolve`]
//! (percent-decoded, `..` and NUL refused, canonical path confined to the canonical served
//! directory, so symlinks cannot lead out of it) and streams file bodies in 64 KiB pieces.
//! The client refuses URLs that are not `http://HOST[:PORT]/PATH` (a CR or LF in a URL is a
//! parse error, never a header), decodes chunked bodies, and reports a response that ends
//! early, lies about its length or is not HTTP at all as an error naming the peer.

mod client;
pub mod files;
mod io;
mod server;
mod url;

pub use client::{fetch, get, FetchError, FetchOptions};
pub use io::Idle;
pub use server::{ServeError, ServeOptions, Server};
pub use url::{Url, UrlError};

/// The largest request or response head (start line and headers) either side accepts.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The most header fields either side accepts in one head.
pub const MAX_HEADERS: usize = 64;
