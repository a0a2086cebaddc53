//! `http://HOST[:PORT]/PATH` URLs, parsed with the `http` crate's URI grammar: a URL with a
//! CR, LF, space or other byte a request line cannot carry is refused here, before anything
//! is sent.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use hyper::Uri;

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// The host name or address (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
    /// The request target: path and query, at least `/`.
    pub target: String,
}

/// A URL that [`Url`] cannot take.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{url:?}: {why} (expected http://HOST[:PORT]/PATH)")]
pub struct UrlError {
    pub url: String,
    pub why: String,
}

impl Url {
    /// `HOST:PORT`, with brackets around an IPv6 host: the `Host` header and error messages.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.target)
    }
}

impl FromStr for Url {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Url, UrlError> {
        let err = |why: &str| UrlError {
            url: url.to_string(),
            why: why.to_string(),
        };
        let uri: Uri = url.parse().map_err(|e| err(&format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(err(&format!("the scheme {other}:// is not supported"))),
            None => return Err(err("no http:// scheme")),
        }
        let authority = uri.authority().ok_or_else(|| err("no host"))?;
        if authority.as_str().contains('@') {
            return Err(err("user information in the URL is not supported"));
        }
        // The http crate drops a port it cannot read (`h:99999` is port-less), and takes
        // anything between brackets and after them (`[f%.2]txt`): read both here.
        let a = authority.as_str();
        let (host, port) = match a.strip_prefix('[') {
            Some(rest) => {
                let (inside, after) = rest
                    .split_once(']')
                    .ok_or_else(|| err("no ] after [IPv6"))?;
                if inside.parse::<Ipv6Addr>().is_err() {
                    return Err(err(&format!("[{inside}] is not an IPv6 address")));
                }
                let port =
                    match after {
                        "" => None,
                        _ => Some(after.strip_prefix(':').ok_or_else(|| {
                            err(&format!("{after:?} after [{inside}] is not :PORT"))
                        })?),
                    };
                (inside, port)
            }
            None => {
                let (host, port) = a.rsplit_once(':').map_or((a, None), |(h, p)| (h, Some(p)));
                // A name or an IPv4 address: the http crate also takes `0[fd0::1]:9`.
                let name = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
                if !host.chars().all(name) {
                    return Err(err(&format!(
                        "{host:?} is not a host name or address (an IPv6 address goes in [])"
                    )));
                }
                (host, port)
            }
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| err(&format!("bad port {p:?}")))?,
            None => 80,
        };
        let target = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| p.starts_with('/'))
            .unwrap_or("/");
        Ok(Url {
            host: host.to_string(),
            port,
            target: target.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Url;

    fn parse(s: &str) -> Result<(String, u16, String), String> {
        s.parse::<Url>()
            .map(|u| (u.host, u.port, u.target))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn urls_split_into_host_port_path() {
        let ok = |h: &str, p, t: &str| Ok((h.to_string(), p, t.to_string()));
        assert_eq!(
            parse("http://10.0.0.1:8080/a/b"),
            ok("10.0.0.1", 8080, "/a/b")
        );
        assert_eq!(parse("http://[fd00::1]/"), ok("fd00::1", 80, "/"));
        assert_eq!(
            parse("http://[fd00::1]:81/x?y=1"),
            ok("fd00::1", 81, "/x?y=1")
        );
        assert_eq!(parse("http://example.org"), ok("example.org", 80, "/"));
        assert_eq!(parse("http://a/%20b.txt"), ok("a", 80, "/%20b.txt"));
        assert_eq!(
            "http://[fd00::1]:8/p".parse::<Url>().unwrap().authority(),
            "[fd00::1]:8"
        );
    }

    #[test]
    fn bad_urls_are_refused_naming_the_url() {
        for bad in [
            "https://x/",
            "http://[fd00::1/",
            "http://h:99999/",
            "http://h:/",
            "http:///path",
            "x/y",
            "http://u@h/",
            "",
            // Found by fuzzing (http_paths): a bracketed host that is no IPv6 address, or
            // text after the bracket, was accepted and shown as a URL that does not parse.
            "http://[f%.2]txt?/",
            "http://[fd00::1]x/",
            "http://[fd00::1]80/",
            "http://[nothost]/",
            "http://0[fd0::1]:9?x=1",
            "http://fd00::1/",
            "http://a%41/",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
            assert!(e.contains("http://HOST[:PORT]/PATH"), "{bad}: {e}");
        }
    }

    #[test]
    fn control_characters_cannot_reach_the_request() {
        // Header injection: a CR/LF in the URL must not become a header line.
        for bad in [
            "http://h/a\r\nX-Injected: 1",
            "http://h/a\nX: 1",
            "http://h/a b",
            "http://h\r\nX: 1/",
            "http://h/\0",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
