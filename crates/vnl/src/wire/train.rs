//! Frame trains: several Ethernet frames in one datagram, spoken only between filo's own
//! `vde://` endpoints and a filo switch that agreed to it (see
//! [`crate::transport::vde::TRAIN_TOKEN`]).
//!
//! Why: a datagram costs the kernel the same allocation, accounting and wake-up whether it
//! carries 64 bytes or 64 KiB, and on a UNIX socket at most `net.unix.max_dgram_qlen`
//! (10 by default) datagrams wait in a queue. Carrying a batch of frames in one datagram
//! divides both costs by the batch size. Trains are built only from frames that are already
//! waiting to be sent, so no frame is held back to fill one.
//!
//! Layout: a sequence of records, each a 4-byte big-endian length followed by that many bytes
//! (one frame, behind its virtio-net header when that framing was agreed too). A train holds
//! at most [`MAX_RECORDS`] records and [`MAX_DATAGRAM`] bytes; a single record may be as large
//! as a super-frame.

use super::vnet;

pub const RECORD_HEADER_LEN: usize = 4;
/// Records per train: the same as one `recvmmsg`/`sendmmsg` batch, so a receiver's queues see
/// no larger bursts than they would from batched datagrams.
pub const MAX_RECORDS: usize = 64;
/// The largest train: room for one record holding a virtio-net header and a super-frame with
/// an 802.1Q tag. Receivers size their buffers to this.
pub const MAX_DATAGRAM: usize = RECORD_HEADER_LEN + vnet::HEADER_LEN + vnet::MAX_SUPER_FRAME + 4;

/// Why the rest of a train was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrainError {
    #[error("train record at byte {at}: {len}-byte length runs past the datagram's end")]
    Truncated { at: usize, len: usize },
    #[error("train record at byte {at}: empty record")]
    Empty { at: usize },
}

/// The header in front of a record of `len` bytes.
pub fn record_header(len: usize) -> [u8; RECORD_HEADER_LEN] {
    (len as u32).to_be_bytes()
}

/// The length a record header at byte `at` announces, checked against the `available` bytes
/// behind it.
pub fn record_len(
    header: [u8; RECORD_HEADER_LEN],
    at: usize,
    available: usize,
) -> Result<usize, TrainError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        Err(TrainError::Empty { at })
    } else if len > available {
        Err(TrainError::Truncated { at, len })
    } else {
        Ok(len)
    }
}

/// How many of the records whose lengths `lens` yields (without headers) go into the next
/// train: at least one, at most [`MAX_RECORDS`], and no more than [`MAX_DATAGRAM`] bytes unless
/// the first alone is larger.
pub fn fit(lens: impl IntoIterator<Item = usize>) -> usize {
    let mut count = 0;
    let mut total = 0;
    for len in lens.into_iter().take(MAX_RECORDS) {
        total += RECORD_HEADER_LEN + len;
        if count > 0 && total > MAX_DATAGRAM {
            break;
        }
        count += 1;
    }
    count
}

/// The records of a received train, in order. After an error the iterator ends: the rest of
/// the datagram cannot be framed.
pub struct Records<'a> {
    data: &'a [u8],
    at: usize,
    failed: bool,
}

/// Reads the records of one train datagram.
pub fn records(datagram: &[u8]) -> Records<'_> {
    Records {
        data: datagram,
        at: 0,
        failed: false,
    }
}

impl<'a> Records<'a> {
    /// Byte offset of the next record header in the datagram.
    pub fn position(&self) -> usize {
        self.at
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<&'a [u8], TrainError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.data.len() {
            return None;
        }
        let at = self.at;
        let fail = |this: &mut Self, e| {
            this.failed = true;
            Some(Err(e))
        };
        let Some(&header) = self.data[at..].first_chunk::<RECORD_HEADER_LEN>() else {
            let len = self.data.len() - at;
            return fail(self, TrainError::Truncated { at, len });
        };
        let start = at + RECORD_HEADER_LEN;
        match record_len(header, at, self.data.len() - start) {
            Ok(len) => {
                self.at = start + len;
                Some(Ok(&self.data[start..start + len]))
            }
            Err(e) => fail(self, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train(frames: &[&[u8]]) -> Vec<u8> {
        let mut t = Vec::new();
        for f in frames {
            t.extend_from_slice(&record_header(f.len()));
            t.extend_from_slice(f);
        }
        t
    }

    #[test]
    fn records_come_back_in_order() {
        let a = [1u8; 60];
        let b = [2u8; 1514];
        let t = train(&[&a, &b, &a]);
        let got: Vec<&[u8]> = records(&t).map(|r| r.unwrap()).collect();
        assert_eq!(got, vec![&a[..], &b[..], &a[..]]);
    }

    #[test]
    fn a_truncated_record_ends_the_train_with_its_position() {
        let mut t = train(&[&[7u8; 20], &[8u8; 30]]);
        t.truncate(t.len() - 1);
        let mut it = records(&t);
        assert_eq!(it.next(), Some(Ok(&[7u8; 20][..])));
        assert_eq!(
            it.next(),
            Some(Err(TrainError::Truncated { at: 24, len: 30 }))
        );
        assert_eq!(it.next(), None);
        // A header cut short is also truncation.
        let mut it = records(&[0, 0, 1]);
        assert_eq!(
            it.next(),
            Some(Err(TrainError::Truncated { at: 0, len: 3 }))
        );
    }

    #[test]
    fn an_empty_record_or_a_huge_length_is_refused() {
        assert_eq!(
            records(&[0, 0, 0, 0, 9]).next(),
            Some(Err(TrainError::Empty { at: 0 }))
        );
        let t = [0xff, 0xff, 0xff, 0xff, 1, 2];
        assert_eq!(
            records(&t).next(),
            Some(Err(TrainError::Truncated {
                at: 0,
                len: u32::MAX as usize
            }))
        );
        assert_eq!(records(&[]).next(), None);
    }

    #[test]
    fn fit_caps_records_and_bytes_but_always_takes_one() {
        assert_eq!(fit([60; 100]), MAX_RECORDS);
        assert_eq!(fit([1514; 10]), 10);
        // 1514-byte frames: as many as fit in MAX_DATAGRAM.
        assert_eq!(fit([1514; 64]), MAX_DATAGRAM / (1514 + RECORD_HEADER_LEN));
        assert_eq!(fit([vnet::MAX_SUPER_FRAME + vnet::HEADER_LEN; 3]), 1);
        assert_eq!(fit([60, vnet::MAX_SUPER_FRAME]), 1);
        assert_eq!(fit(std::iter::empty()), 0);
    }
}
