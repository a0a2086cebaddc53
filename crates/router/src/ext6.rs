//! IPv6 extension-header chains (RFC 8200 §4): a bounds-checked walk from the fixed
//! header's next header to the upper-layer header (TCP, UDP, ICMPv6, …), through
//! hop-by-hop options, routing, destination options and fragment headers. NAT66 uses it to
//! find the ports of a packet whose first next header is not its transport.

/// Hop-by-hop options: only right after the fixed header.
pub const HOP_BY_HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const DEST_OPTS: u8 = 60;

/// Extension headers walked at most; a longer chain is refused ([`Error::TooLong`]). RFC
/// 8200 §4.1 recommends at most one of each, destination options twice: 5 with a fragment
/// header. 8 leaves room for the unusual and bounds the work per packet.
pub const MAX_HEADERS: usize = 8;

/// A fragment header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub id: u32,
    /// The fragment's offset in the original payload, in bytes.
    pub offset: u16,
    /// The M flag: more fragments follow.
    pub more: bool,
}

/// Where the chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upper {
    /// The upper-layer protocol (or, after the fragment header of a later fragment, the
    /// next header it names: the rest of the chain and the upper-layer header are in the
    /// first fragment).
    pub proto: u8,
    /// Where its header starts, from the start of the IPv6 payload.
    pub offset: usize,
    pub fragment: Option<Fragment>,
    /// Where the fragment's data (what follows its fragment header) starts, from the start
    /// of the IPv6 payload; 0 without a fragment header.
    pub fragment_data: usize,
}

/// Why a chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A header runs past the end of the payload.
    #[error("extension header cut short")]
    Truncated,
    /// More than [`MAX_HEADERS`] extension headers.
    #[error("more than {MAX_HEADERS} extension headers")]
    TooLong,
    /// Hop-by-hop options not first, or a second fragment header.
    #[error("extension headers out of order")]
    Misordered,
}

fn is_extension(next: u8) -> bool {
    matches!(next, HOP_BY_HOP | ROUTING | FRAGMENT | DEST_OPTS)
}

/// Walks the chain of an IPv6 packet whose fixed header names `next` and whose payload is
/// `payload`. A header other than the four above ends the chain as the upper layer
/// (including No Next Header, ESP and AH, whose contents NAT does not look into).
pub fn walk(next: u8, payload: &[u8]) -> Result<Upper, Error> {
    let (mut next, mut at, mut fragment, mut fragment_data) = (next, 0usize, None, 0);
    let mut n = 0;
    loop {
        if !is_extension(next) {
            return Ok(Upper {
                proto: next,
                offset: at,
                fragment,
                fragment_data,
            });
        }
        if n == MAX_HEADERS {
            return Err(Error::TooLong);
        }
        if next == HOP_BY_HOP && n != 0 {
            return Err(Error::Misordered);
        }
        let h = payload.get(at..at + 8).ok_or(Error::Truncated)?;
        let len = if next == FRAGMENT {
            if fragment.is_some() {
                return Err(Error::Misordered);
            }
            let word = u16::from_be_bytes([h[2], h[3]]);
            let f = Fragment {
                id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                offset: word & !7,
                more: word & 1 != 0,
            };
            fragment = Some(f);
            fragment_data = at + 8;
            if f.offset != 0 {
                // A later fragment: what follows is data, not headers.
                return Ok(Upper {
                    proto: h[0],
                    offset: at + 8,
                    fragment,
                    fragment_data,
                });
            }
            8
        } else {
            (usize::from(h[1]) + 1) * 8
        };
        if payload.len() < at + len {
            return Err(Error::Truncated);
        }
        next = h[0];
        at += len;
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: u8 = 6;
    const UDP: u8 = 17;

    /// An options header (hop-by-hop, routing, destination options) of `words` 8-byte
    /// units naming `next`.
    fn opts(next: u8, words: u8) -> Vec<u8> {
        let mut h = vec![0; usize::from(words) * 8];
        h[0] = next;
        h[1] = words - 1;
        h
    }

    fn frag(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
        let mut h = vec![next, 0];
        h.extend((offset | u16::from(more)).to_be_bytes());
        h.extend(id.to_be_bytes());
        h
    }

    #[test]
    fn the_walk_finds_the_transport_behind_each_kind_of_header() {
        assert_eq!(
            walk(UDP, &[0; 8]),
            Ok(Upper {
                proto: UDP,
                offset: 0,
                fragment: None,
                fragment_data: 0
            })
        );
        // Hop-by-hop, routing (3 units), fragment.
        let mut p = opts(ROUTING, 1);
        p.extend(opts(FRAGMENT, 3));
        p.extend(frag(TCP, 0, true, 0x1234_5678));
        p.extend([0; 20]);
        assert_eq!(
            walk(HOP_BY_HOP, &p),
            Ok(Upper {
                proto: TCP,
                offset: 8 + 24 + 8,
                fragment: Some(Fragment {
                    id: 0x1234_5678,
                    offset: 0,
                    more: true
                }),
                fragment_data: 8 + 24 + 8
            })
        );
    }

    #[test]
    fn a_later_fragment_ends_the_walk_at_its_fragment_header() {
        let mut p = opts(FRAGMENT, 1);
        p.extend(frag(UDP, 1448, false, 7));
        // Data that would look like a header chain if it were walked.
        p.extend([HOP_BY_HOP, 200, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            walk(DEST_OPTS, &p),
            Ok(Upper {
                proto: UDP,
                offset: 16,
                fragment: Some(Fragment {
                    id: 7,
                    offset: 1448,
                    more: false
                }),
                fragment_data: 16
            })
        );
    }

    #[test]
    fn malformed_and_too_long_chains_are_refused() {
        // Cut short: no room for the header, or its length runs past the payload.
        assert_eq!(walk(HOP_BY_HOP, &[UDP, 0, 0]), Err(Error::Truncated));
        assert_eq!(walk(ROUTING, &opts(UDP, 2)[..12]), Err(Error::Truncated));
        assert_eq!(
            walk(FRAGMENT, &frag(UDP, 0, true, 1)[..7]),
            Err(Error::Truncated)
        );
        // Hop-by-hop after another header; two fragment headers.
        let mut p = opts(HOP_BY_HOP, 1);
        p.extend(opts(UDP, 1));
        assert_eq!(walk(DEST_OPTS, &p), Err(Error::Misordered));
        let mut p = frag(FRAGMENT, 0, true, 1);
        p.extend(frag(UDP, 0, true, 2));
        assert_eq!(walk(FRAGMENT, &p), Err(Error::Misordered));
        // MAX_HEADERS destination options pass, one more does not.
        let chain = |n: usize| {
            let mut p = Vec::new();
            for i in 0..n {
                p.extend(opts(if i + 1 == n { UDP } else { DEST_OPTS }, 1));
            }
            p.extend([0; 8]);
            p
        };
        assert_eq!(
            walk(DEST_OPTS, &chain(MAX_HEADERS)).map(|u| (u.proto, u.offset)),
            Ok((UDP, MAX_HEADERS * 8))
        );
        assert_eq!(
            walk(DEST_OPTS, &chain(MAX_HEADERS + 1)),
            Err(Error::TooLong)
        );
    }
}
