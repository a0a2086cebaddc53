//! Domain names in DNS wire format (RFC 1035 §3.1: length-prefixed labels, a zero byte at the
//! end, no compression), as the servers send them: DHCPv4's domain search option (119,
//! RFC 3397), DHCPv6's domain search list (24, RFC 3646) and the RA DNSSL option
//! (RFC 8106).

/// A domain name that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("domain name {0:?}: empty label (expected labels like example.org)")]
    EmptyLabel(String),
    #[error("domain name {0:?}: a label is longer than 63 bytes")]
    LongLabel(String),
    #[error("domain name {0:?}: longer than 253 bytes")]
    LongName(String),
    #[error("domain name {0:?}: only letters, digits, '-' and '_' are allowed in labels")]
    BadChar(String),
}

/// Appends `name` in wire format to `out`. A trailing dot is allowed.
pub fn encode(name: &str, out: &mut Vec<u8>) -> Result<(), NameError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.len() > 253 {
        return Err(NameError::LongName(name.into()));
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel(name.into()));
        }
        if label.len() > 63 {
            return Err(NameError::LongLabel(name.into()));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NameError::BadChar(name.into()));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(())
}

/// `names`, one after the other, in wire format.
pub fn encode_list(names: &[String]) -> Result<Vec<u8>, NameError> {
    let mut out = Vec::new();
    for n in names {
        encode(n, &mut out)?;
    }
    Ok(out)
}

/// Reads wire-format names (no compression pointers) back: for tests and fuzzing of what the
/// servers send. `None` when `b` is not a list of complete names.
pub fn decode_list(mut b: &[u8]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    while !b.is_empty() {
        let mut labels = Vec::new();
        loop {
            let (&len, rest) = b.split_first()?;
            if len == 0 {
                b = rest;
                break;
            }
            let len = usize::from(len);
            if len > 63 || rest.len() < len {
                return None;
            }
            labels.push(String::from_utf8_lossy(&rest[..len]).into_owned());
            b = &rest[len..];
        }
        names.push(labels.join("."));
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_named() {
        let list = vec!["example.org".to_string(), "lab.filo.".to_string()];
        let wire = encode_list(&list).unwrap();
        assert_eq!(&wire[..13], b"\x07example\x03org\x00");
        assert_eq!(
            decode_list(&wire).unwrap(),
            vec!["example.org".to_string(), "lab.filo".to_string()]
        );
        let e = encode_list(&["a..b".into()]).unwrap_err();
        assert_eq!(e, NameError::EmptyLabel("a..b".into()));
        assert!(e.to_string().contains("\"a..b\""));
        assert!(matches!(
            encode_list(&["x".repeat(64)]),
            Err(NameError::LongLabel(_))
        ));
        assert!(matches!(
            encode_list(&["a b.org".into()]),
            Err(NameError::BadChar(_))
        ));
        assert_eq!(decode_list(b"\x07exam"), None);
    }
}
