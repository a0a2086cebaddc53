//! The Internet checksum (RFC 1071), for every format here and in the stack that carries one.

/// Ones-complement sum of `data` added to `sum`, not folded yet (more parts can follow).
pub fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds a sum into the 16-bit checksum field's value.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of `data` alone.
pub fn internet_checksum(data: &[u8]) -> u16 {
    fold(sum16(0, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_and_odd_lengths() {
        // RFC 1071 section 3: the sum of these bytes is ddf2, so the checksum is 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
        // An odd last byte counts as the high half of a word.
        assert_eq!(internet_checksum(&[0x12]), !0x1200);
        // Summing in parts equals summing at once.
        assert_eq!(
            fold(sum16(sum16(0, &data[..4]), &data[4..])),
            internet_checksum(&data)
        );
    }
}
