//! The text framing of VDE management consoles (`reference/vde.md` §2.2), shared by filo's
//! switch and wirefilter consoles (which write it) and `filo console` (which reads it), so that
//! `unixterm`, `vdeterm` and `unixcmd` work with either side:
//!
//! * on connect the daemon writes its banner and a prompt ending in `"$ "` (`"\nvde$ "`);
//! * commands that print answer [`DATA_HEADER`], body lines and a line `"."` — the header is
//!   written even when the command then fails;
//! * then a status line: [`SUCCESS`] or `"1%03d <strerror>"` ([`status_line`]);
//! * `logout` and `shutdown` answer [`END_OF_SESSION`] alone (no newline);
//! * asynchronous debug lines (`"3%03o category message"`) may come between replies.
//!
//! Everything here is text in, text out: no I/O.

use std::fmt::Write as _;

/// First line of a data block.
pub const DATA_HEADER: &str = "0000 DATA END WITH '.'";
/// Last line of a data block.
pub const DATA_END: &str = ".";
/// Status line of a command that succeeded.
pub const SUCCESS: &str = "1000 Success";
/// Written instead of the prompt when the session ends (no newline, as vde).
pub const END_OF_SESSION: &str = "9999 END OF SESSION";
/// Status code of [`END_OF_SESSION`].
pub const END_OF_SESSION_CODE: u32 = 9999;

/// glibc's `strerror` text for `errno`, or `"Unknown error N"`.
pub fn strerror(errno: i32) -> String {
    let text = match errno {
        1 => "Operation not permitted",
        2 => "No such file or directory",
        5 => "Input/output error",
        6 => "No such device or address",
        12 => "Cannot allocate memory",
        13 => "Permission denied",
        16 => "Device or resource busy",
        17 => "File exists",
        19 => "No such device",
        20 => "Not a directory",
        21 => "Is a directory",
        22 => "Invalid argument",
        27 => "File too large",
        28 => "No space left on device",
        38 => "Function not implemented",
        40 => "Too many levels of symbolic links",
        95 => "Operation not supported",
        98 => "Address already in use",
        _ => return format!("Unknown error {errno}"),
    };
    text.to_string()
}

/// The status line (without newline) of a finished command: [`SUCCESS`] or
/// `"1%03d <strerror>"`, e.g. `1022 Invalid argument`.
pub fn status_line(result: Result<(), i32>) -> String {
    match result {
        Ok(()) => SUCCESS.to_string(),
        Err(errno) => format!("1{errno:03} {}", strerror(errno)),
    }
}

/// A failure status line with a detail after the `strerror` text:
/// `1022 Invalid argument: delay: "abc" is not VALUE[+DELTA]`. Clients that show only the
/// numeric code (vdeterm) are unaffected; the detail is [`sanitize`]d.
pub fn error_line(errno: i32, detail: &str) -> String {
    if detail.is_empty() {
        status_line(Err(errno))
    } else {
        format!("1{errno:03} {}: {}", strerror(errno), sanitize(detail))
    }
}

/// Replaces control characters with `?`, so that text a client chose (a port description, a
/// Markov node name) cannot break the line framing: a description `"\n."` would otherwise
/// end a data block.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Appends a data block: [`DATA_HEADER`], every line, [`DATA_END`], each with a newline.
pub fn push_data_block<S: AsRef<str>>(out: &mut String, lines: &[S]) {
    out.push_str(DATA_HEADER);
    out.push('\n');
    for line in lines {
        out.push_str(line.as_ref());
        out.push('\n');
    }
    out.push_str(DATA_END);
    out.push('\n');
}

/// One reply as a client sees it, parsed from the text up to the next prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// `1000` on success, `1000 + errno` on failure, [`END_OF_SESSION_CODE`] when the session
    /// ended, `0` when the text has neither a status line nor a prompt (a cut-off reply). A
    /// reply with only a prompt (an empty line or a comment) counts as `1000`.
    pub status: u32,
    /// The text after the code of a failure status line (`Invalid argument`).
    pub error: Option<String>,
    /// The body of the data block, if the command printed one.
    pub lines: Vec<String>,
    /// Asynchronous debug lines (`3xxx …`) seen outside the data block.
    pub events: Vec<String>,
}

/// The four-digit code at the start of a protocol line, if it has one (`"1022 …"`, `"9999"`).
fn code_of(line: &str) -> Option<u32> {
    let code = line.get(..4)?;
    let spaced = line.as_bytes().get(4).is_none_or(|&b| b == b' ');
    if spaced && code.bytes().all(|b| b.is_ascii_digit()) {
        code.parse().ok()
    } else {
        None
    }
}

/// Parses the text a console wrote for one command (up to and including the prompt).
///
/// The data block ends at the last `"."` line before the status line, so the nested blocks of
/// a `load`ed script's echo stay inside the body.
pub fn parse_reply(text: &str) -> Reply {
    let mut reply = Reply::default();
    let prompted = text.ends_with("$ ");
    let lines: Vec<&str> = text.lines().collect();
    // The final status line: the last line that carries a 1xxx or 9999 code and is not
    // followed by a "." (which would make it part of a data block).
    let status_at = lines.iter().enumerate().rev().find_map(|(i, l)| {
        let code = code_of(l)?;
        let closed = lines[i + 1..].iter().all(|l| *l != DATA_END);
        ((code == END_OF_SESSION_CODE || (1000..2000).contains(&code)) && closed).then_some(i)
    });
    let data_at = lines.iter().position(|l| *l == DATA_HEADER);
    let data_end = data_at.and_then(|start| {
        let limit = status_at.unwrap_or(lines.len());
        (start + 1..limit).rev().find(|&i| lines[i] == DATA_END)
    });
    // A `load`ed script that runs `shutdown` ends the session inside its unclosed block.
    let session_end = status_at.filter(|&i| code_of(lines[i]) == Some(END_OF_SESSION_CODE));
    for (i, line) in lines.iter().enumerate() {
        let in_data = match (data_at, data_end) {
            (Some(s), Some(e)) => i > s && i < e,
            (Some(s), None) => i > s && Some(i) != session_end,
            _ => false,
        };
        if in_data {
            reply.lines.push(line.to_string());
        } else if Some(i) == status_at {
            let code = code_of(line).unwrap_or(0);
            reply.status = code;
            if code != 1000 && code != END_OF_SESSION_CODE {
                reply.error = Some(line[4..].trim().to_string());
            }
        } else if code_of(line).is_some_and(|c| (3000..4000).contains(&c)) {
            reply.events.push(line.to_string());
        }
    }
    if status_at.is_none() && prompted {
        reply.status = 1000;
    }
    reply
}

/// A JSON string literal for `text`.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| json_string(s)).collect();
    format!("[{}]", items.join(","))
}

impl Reply {
    /// The reply as one JSON object: `{"command":…,"status":1000,"error":null,"lines":[…],
    /// "events":[…]}`. `command` is left out when None (the switch's library form), and
    /// `events` when `with_events` is false.
    pub fn to_json(&self, command: Option<&str>, with_events: bool) -> String {
        let mut out = String::from("{");
        if let Some(command) = command {
            let _ = write!(out, "\"command\":{},", json_string(command));
        }
        let error = self
            .error
            .as_deref()
            .map_or("null".to_string(), json_string);
        let _ = write!(
            out,
            "\"status\":{},\"error\":{},\"lines\":{}",
            self.status,
            error,
            json_list(&self.lines)
        );
        if with_events {
            let _ = write!(out, ",\"events\":{}", json_list(&self.events));
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_vdes() {
        assert_eq!(status_line(Ok(())), "1000 Success");
        assert_eq!(status_line(Err(22)), "1022 Invalid argument");
        assert_eq!(status_line(Err(6)), "1006 No such device or address");
        assert_eq!(strerror(12345), "Unknown error 12345");
        assert_eq!(
            error_line(22, "delay: \"a\nb\""),
            "1022 Invalid argument: delay: \"a?b\""
        );
        assert_eq!(error_line(38, ""), "1038 Function not implemented");
    }

    #[test]
    fn data_blocks() {
        let mut out = String::new();
        push_data_block(&mut out, &["a", "b"]);
        assert_eq!(out, "0000 DATA END WITH '.'\na\nb\n.\n");
    }

    #[test]
    fn replies_are_parsed_from_vde_framing() {
        let r =
            parse_reply("0000 DATA END WITH '.'\nNumports=32\nHUB=false\n.\n1000 Success\n\nvde$ ");
        assert_eq!(
            (r.status, r.error.as_deref(), r.lines.len()),
            (1000, None, 2)
        );
        let r = parse_reply("1038 Function not implemented\n\nvde$ ");
        assert_eq!(
            (r.status, r.error.as_deref()),
            (1038, Some("Function not implemented"))
        );
        let r = parse_reply("3031 port/ep/+ Port 01 FD  6\n1000 Success\n\nvde$ ");
        assert_eq!(r.events, ["3031 port/ep/+ Port 01 FD  6"]);
        assert_eq!(parse_reply("9999 END OF SESSION").status, 9999);
        assert_eq!(parse_reply("\nvde$ ").status, 1000);
        assert_eq!(parse_reply("0000 DATA END WITH '.'\nx").status, 0);
        // A loaded script's echo holds nested blocks and status lines.
        let r = parse_reply(
            "0000 DATA END WITH '.'\nvde[a]: port/print\n0000 DATA END WITH '.'\nP\n.\n\
             1000 Success\nvde[a]: x\n1038 Function not implemented\n.\n1000 Success\n\nvde$ ",
        );
        assert_eq!(r.status, 1000);
        assert_eq!(r.lines.len(), 7);
        assert_eq!(r.lines[6], "1038 Function not implemented");
        // Found by fuzzing (console_files): a loaded script's `shutdown` ends the session
        // inside the block, which read as a cut-off reply (status 0).
        let r = parse_reply(
            "0000 DATA END WITH '.'\nvde[f1]: vlan/v\n1038 Function not implemented\n\
             vde[f1]: shutdown\n9999 END OF SESSION",
        );
        assert_eq!(r.status, 9999);
        assert_eq!(r.lines.len(), 3);
        assert_eq!(parse_reply("0000 DATA END WITH '.'\nx\n1038 Fu").status, 0);
    }

    #[test]
    fn json() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(
            json_string("a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1}i\u{7f}jé"),
            r#""a\"b\\c\nd\re\tf\bg\fh\u0001i\u007fjé""#
        );
        let r = parse_reply("1038 Function not implemented\n\nvde$ ");
        assert_eq!(
            r.to_json(None, false),
            r#"{"status":1038,"error":"Function not implemented","lines":[]}"#
        );
        assert_eq!(
            r.to_json(Some("x"), true),
            r#"{"command":"x","status":1038,"error":"Function not implemented","lines":[],"events":[]}"#
        );
    }
}
