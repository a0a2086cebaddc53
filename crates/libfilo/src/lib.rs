//! libfilo: the C face of filo's named stacks. `msocket(path, domain, type, protocol)` returns
//! a socket created in the stack served at `path` (or `$FILO_STACK` when `path` is NULL;
//! a plain socket(2) when neither is given), or -1 with errno set (EACCES without permission
//! on the path, ENOENT when there is no stack there, ECONNREFUSED when its daemon is gone).
//!
//! The exported functions take C pointers and set errno, so they live in [`sys`], the crate's
//! only `unsafe` code; they call [`filo_ns::named::msocket`].

#[allow(unsafe_code)]
pub mod sys;
