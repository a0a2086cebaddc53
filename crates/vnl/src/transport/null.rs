//! `null://`: a plug that discards what it is sent and never receives anything.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::plug::Transport;
use crate::sys;

pub struct Null {
    never: OwnedFd,
}

impl Null {
    pub fn open() -> io::Result<Null> {
        Ok(Null {
            never: sys::silent_eventfd()?,
        })
    }
}

impl Transport for Null {
    fn recv(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn send(&mut self, _frame: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn data_fd(&self) -> BorrowedFd<'_> {
        self.never.as_fd()
    }

    fn kind(&self) -> &'static str {
        "null"
    }
}
