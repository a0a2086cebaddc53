//! Parser for VNLs ("Virtual Network Locators") in vdeplug4 syntax.
//!
//! # Grammar in brief
//!
//! ```text
//! VNL      = ""                         -> module "vde", empty address (default switch)
//!          | TEXT-WITHOUT-"://"         -> module "vde", TEXT is the rest
//!          | MODULE "://" REST
//! MODULE   = 1*( a-z / 0-9 )            (case-sensitive; must be a known module)
//! REST     = OUTER [ "{" NESTED "}" ]   (the braces only for nesting modules, e.g. vlan;
//!                                        first unquoted "{" .. last unquoted "}")
//! OUTER    = path style:  ADDRESS [ "[" ARG *( "/" ARG ) "]" ]   (nothing after "]")
//!          | slash style: ADDRESS *( "/" ARG )
//!          | raw style:   any text, kept verbatim (no quoting, no options, no nesting)
//! ARG      = KEY "=" VALUE              value option
//!          | KEY                        flag (only keys listed as flags)
//!          | VALUE                      path style only: bare value -> the default key
//! ```
//!
//! * Keys may be abbreviated: an exact match (or a documented alias such as `x` for vlan's
//!   `trunk`) wins, else a unique prefix, else the key is ambiguous (error).
//! * In addresses, keys and values (path and slash style): `'…'` and `"…"` protect the
//!   structural characters `/ [ ] { } =`; `\x` takes `x` literally; `%XX` (two hex digits)
//!   is that byte. The decoded bytes must be valid UTF-8. Escapes also work inside quotes.
//! * In a path-style address `/` and `=` are ordinary characters; unquoted `[`/`]` are not
//!   (filo is stricter than vdeplug4 here: vdeplug4 takes the *last* `[...]`, filo requires
//!   brackets inside a path to be quoted or escaped, so `[a][b]` is an error).
//! * In a slash-style address an unquoted `=` is an error (quote it), which catches
//!   mistakes such as `vxvde://vni=3` (the address comes first: `vxvde:///vni=3`).
//! * For `vde`, a bare numeric value is the `port`, a bare non-numeric value the `portgroup`.
//! * The nested VNL is kept as text ([`Vnl::nested`]); parse it separately.
//! * Empty `/`-separated arguments are ignored. Repeated keys are kept; [`Vnl::get`]
//!   returns the last one (vdeplug4 semantics: later assignments win).
//! * Numeric values are not validated by the parser; see [`Vnl::get_parsed`],
//!   [`Vnl::get_u32`], [`Vnl::get_mode`] and [`parse_octal_mode`].
//!
//! # API
//!
//! ```text
//! pub enum ArgStyle { Path, Slash, Raw }
//! pub struct ModuleSyntax { name, style, keys, flags, aliases, default_key,
//!                           default_text_key, nests, usage }
//! pub const MODULES: &[ModuleSyntax];
//! pub fn module_syntax(module: &str) -> Option<&'static ModuleSyntax>;
//!
//! pub struct Vnl;                         // Debug, Clone, PartialEq, Eq, Display, FromStr
//! Vnl::parse(&str) -> Result<Vnl, VnlError>
//! Vnl::new(module, address) -> Result<Vnl, VnlError>            // builder
//! Vnl::with_option(self, key, Option<&str>) -> Result<Vnl, VnlError>
//! Vnl::with_nested(self, nested) -> Result<Vnl, VnlError>
//! Vnl::module / syntax / address / nested / options / get / has_flag
//! Vnl::get_parsed::<T>(key) / get_u32(key) / get_mode(key) -> Result<Option<_>, VnlError>
//! pub fn parse_octal_mode(&str) -> Result<u32, InvalidMode>
//! pub enum DefaultSwitch { Vnl(String), Dir(PathBuf) }
//! pub fn default_switch_path(home, euid, exists, read_first_line) -> DefaultSwitch
//! pub fn default_switch() -> DefaultSwitch
//! ```
//!
//! [`Vnl`]'s `Display` produces canonical text (always `module://`, options as `key=value`
//! or bare flags, special characters backslash-escaped) that parses back to an equal value.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// How a module's text after `://` is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgStyle {
    /// `PATH[ARG/ARG/…]`: options inside a trailing bracket.
    Path,
    /// `ADDRESS/ARG/ARG…`: the first `/`-separated token is the address.
    Slash,
    /// The whole text is the address, verbatim; no options.
    Raw,
}

/// Per-module grammar.
#[derive(Debug, PartialEq, Eq)]
pub struct ModuleSyntax {
    /// Module name (the text before `://`).
    pub name: &'static str,
    /// How the text after `://` is split.
    pub style: ArgStyle,
    /// Canonical names of all accepted keys (flags included).
    pub keys: &'static [&'static str],
    /// The subset of `keys` that are flags (written without `=value`).
    pub flags: &'static [&'static str],
    /// Extra exact-match spellings: `(alias, canonical key)`.
    pub aliases: &'static [(&'static str, &'static str)],
    /// Path style only: the key a bare (key-less) value goes to.
    pub default_key: Option<&'static str>,
    /// Path style only: the key a bare *non-numeric* value goes to (if different).
    pub default_text_key: Option<&'static str>,
    /// Whether the module takes a nested VNL in `{…}` (required then).
    pub nests: bool,
    /// Human-readable syntax, shown in error messages.
    pub usage: &'static str,
}

impl ModuleSyntax {
    const fn base(name: &'static str, style: ArgStyle, usage: &'static str) -> ModuleSyntax {
        ModuleSyntax {
            name,
            style,
            keys: &[],
            flags: &[],
            aliases: &[],
            default_key: None,
            default_text_key: None,
            nests: false,
            usage,
        }
    }

    /// Whether `key` (canonical) is a flag of this module.
    pub fn is_flag(&self, key: &str) -> bool {
        self.flags.contains(&key)
    }

    /// Resolve a user-written key to its canonical name: exact match or alias, else a
    /// unique prefix.
    pub fn resolve_key(&self, text: &str) -> Result<&'static str, KeyError> {
        if let Some(k) = self.keys.iter().find(|k| **k == text) {
            return Ok(k);
        }
        if let Some((_, k)) = self.aliases.iter().find(|(a, _)| *a == text) {
            return Ok(k);
        }
        if text.is_empty() {
            return Err(KeyError::Unknown);
        }
        let cands: Vec<&'static str> = self
            .keys
            .iter()
            .copied()
            .filter(|k| k.starts_with(text))
            .collect();
        match cands.as_slice() {
            [] => Err(KeyError::Unknown),
            [one] => Ok(one),
            _ => Err(KeyError::Ambiguous(cands)),
        }
    }

    fn accepted(&self) -> String {
        if self.keys.is_empty() {
            return "(none)".to_string();
        }
        self.keys.join(", ")
    }
}

/// Why a key could not be resolved (see [`ModuleSyntax::resolve_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// No key matches.
    Unknown,
    /// Several keys start with the given prefix.
    Ambiguous(Vec<&'static str>),
}

const PATH_SWITCH_KEYS: &[&str] = &[
    "mode",
    "dirmode",
    "grp",
    "hashsize",
    "hashseed",
    "expiretime",
];

/// All modules known to filo.
pub const MODULES: &[ModuleSyntax] = &[
    ModuleSyntax {
        keys: &["port", "portgroup", "group", "mode"],
        default_key: Some("port"),
        default_text_key: Some("portgroup"),
        ..ModuleSyntax::base(
            "vde",
            ArgStyle::Path,
            "vde://DIR[PORT|port=N/portgroup=NAME/group=GROUP/mode=OCTAL]",
        )
    },
    ModuleSyntax {
        keys: &["group", "mode"],
        ..ModuleSyntax::base("ptp", ArgStyle::Path, "ptp://PATH[group=GROUP/mode=OCTAL]")
    },
    ModuleSyntax {
        keys: PATH_SWITCH_KEYS,
        ..ModuleSyntax::base(
            "hub",
            ArgStyle::Path,
            "hub://[PATH][mode=OCTAL/dirmode=OCTAL/grp=GROUP/hashsize=N/hashseed=N/expiretime=SECS]",
        )
    },
    ModuleSyntax {
        keys: PATH_SWITCH_KEYS,
        ..ModuleSyntax::base(
            "switch",
            ArgStyle::Path,
            "switch://[PATH][mode=OCTAL/dirmode=OCTAL/grp=GROUP/hashsize=N/hashseed=N/expiretime=SECS]",
        )
    },
    ModuleSyntax {
        keys: &[
            "policy", "lossless", "lossy", "size", "mode", "group", "timeout", "tag", "busypoll",
            "vnet",
        ],
        flags: &["lossless", "lossy", "busypoll", "vnet"],
        ..ModuleSyntax::base(
            "ipn",
            ArgStyle::Path,
            "ipn://PATH[policy=hub|switch|mpegts/lossless|lossy/size=SLOTS/mode=OCTAL/group=GROUP\
             /timeout=SECS/tag=N/busypoll/vnet]",
        )
    },
    ModuleSyntax {
        keys: &[
            "v4",
            "v6",
            "port",
            "vni",
            "grp",
            "ttl",
            "hashsize",
            "expiretime",
            "if",
            "rcvbuf",
            "bind",
        ],
        flags: &["v4", "v6"],
        ..ModuleSyntax::base(
            "vxvde",
            ArgStyle::Slash,
            "vxvde://[MCAST_GROUP][/v4|/v6][/port=N][/vni=N][/grp=GROUP][/ttl=N][/hashsize=N]\
             [/expiretime=SECS][/if=IFNAME][/rcvbuf=SIZE][/bind=ADDR]",
        )
    },
    ModuleSyntax {
        keys: &[
            "v4",
            "v6",
            "port",
            "vni",
            "ttl",
            "hashsize",
            "expiretime",
            "if",
            "rcvbuf",
            "bind",
        ],
        flags: &["v4", "v6"],
        ..ModuleSyntax::base(
            "vxlan",
            ArgStyle::Slash,
            "vxlan://[MCAST_GROUP][/v4|/v6][/port=N][/vni=N][/ttl=N][/hashsize=N]\
             [/expiretime=SECS][/if=IFNAME][/rcvbuf=SIZE][/bind=ADDR]",
        )
    },
    ModuleSyntax {
        keys: &[
            "v4",
            "v6",
            "addr",
            "host",
            "addr6",
            "host6",
            "hostname",
            "dhcp",
            "vnameserver",
            "vnameserver6",
            "vdnssearch",
            "mtu",
            "restricted",
            "hostloopback",
            "tcpfwd",
            "udpfwd",
            "verbose",
        ],
        flags: &["v4", "v6", "restricted", "hostloopback", "verbose"],
        ..ModuleSyntax::base(
            "slirp",
            ArgStyle::Slash,
            "slirp://[/v4][/v6][/addr=A/P][/host=A/P][/addr6=A/P][/host6=A/P][/hostname=NAME]\
             [/dhcp=ADDR][/vnameserver=ADDR][/vnameserver6=ADDR][/vdnssearch=D,...][/mtu=N]\
             [/restricted][/hostloopback][/tcpfwd=[HIP:]HPORT:GIP:GPORT,...][/udpfwd=...][/verbose]",
        )
    },
    ModuleSyntax {
        keys: &["untag", "tag", "trunk", "qinq"],
        flags: &["trunk", "qinq"],
        aliases: &[
            ("u", "untag"),
            ("t", "tag"),
            ("x", "trunk"),
            ("q", "qinq"),
            ("ad", "qinq"),
        ],
        nests: true,
        ..ModuleSyntax::base(
            "vlan",
            ArgStyle::Slash,
            "vlan://UNTAGGED[/untag=N][/tag=LIST][/trunk][/qinq]{VNL}",
        )
    },
    ModuleSyntax::base(
        "udp",
        ArgStyle::Raw,
        "udp://[SRC_ADDR:]SRC_PORT->DST_HOST:DST_PORT",
    ),
    ModuleSyntax {
        keys: &["netns"],
        ..ModuleSyntax::base("tap", ArgStyle::Path, "tap://IFNAME[netns=NAME]")
    },
    ModuleSyntax::base("cmd", ArgStyle::Raw, "cmd://COMMAND [ARGS...]"),
    ModuleSyntax::base("seqpacket", ArgStyle::Raw, "seqpacket://FD"),
    ModuleSyntax::base("null", ArgStyle::Raw, "null://"),
    ModuleSyntax::base("pcap", ArgStyle::Raw, "pcap://IFNAME"),
    ModuleSyntax::base("stdio", ArgStyle::Raw, "stdio://"),
];

/// Look up a module's grammar by its (exact, case-sensitive) name.
pub fn module_syntax(module: &str) -> Option<&'static ModuleSyntax> {
    MODULES.iter().find(|m| m.name == module)
}

fn known_modules() -> String {
    MODULES
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn nesting_modules() -> String {
    MODULES
        .iter()
        .filter(|m| m.nests)
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A VNL parse (or value) error: what went wrong ([`VnlErrorKind`]) with the context every
/// kind shares — the module, the text and the module's syntax — so the message names each
/// once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VnlError {
    /// The module the text names (as written, when it is not a valid or known module).
    pub module: String,
    /// The VNL text (for a bad option value, the VNL's canonical text); `None` when nesting
    /// through the builder.
    pub input: Option<String>,
    /// The module's syntax (`None` when the module is not known).
    pub usage: Option<&'static str>,
    /// Boxed: the error travels in `Result`s and its context is already three words.
    pub kind: Box<VnlErrorKind>,
}

/// What is wrong in a [`VnlError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VnlErrorKind {
    /// The text before `://` is not a lower-case alphanumeric module name.
    BadModuleName,
    /// Well-formed but unknown module name.
    UnknownModule,
    /// No accepted key matches.
    UnknownKey { key: String, accepted: String },
    /// The key is a prefix of several accepted keys.
    AmbiguousKey {
        key: String,
        candidates: Vec<String>,
    },
    /// The key requires `=value`.
    MissingValue { key: String },
    /// A flag was given a value.
    UnexpectedValue { key: String, value: String },
    /// A quote, bracket or brace is not closed.
    Unterminated { missing: &'static str, pos: usize },
    /// A structural character where it is not allowed.
    Unexpected {
        found: char,
        pos: usize,
        hint: String,
    },
    /// `%` not followed by two hex digits, or `\` at the very end.
    BadEscape { escape: String, pos: usize },
    /// Text after the closing `]` or `}`.
    TrailingText { text: String, after: char },
    /// `%XX` escapes produced bytes that are not valid UTF-8.
    InvalidUtf8 { part: String },
    /// A nesting module without `{VNL}`.
    MissingNested,
    /// A nested VNL given to a module that does not nest (builder API).
    NestingNotSupported { nested: String },
    /// An option value that does not have the expected form.
    BadValue {
        key: String,
        value: String,
        expected: String,
    },
}

impl VnlError {
    /// An error in `module`'s syntax.
    fn of(syn: &ModuleSyntax, input: Option<String>, kind: VnlErrorKind) -> VnlError {
        VnlError {
            module: syn.name.to_string(),
            input,
            usage: Some(syn.usage),
            kind: Box::new(kind),
        }
    }

    /// The module name itself is wrong (`kind` is BadModuleName or UnknownModule).
    fn module_name(module: &str, input: String, kind: VnlErrorKind) -> VnlError {
        VnlError {
            module: module.to_string(),
            input: Some(input),
            usage: None,
            kind: Box::new(kind),
        }
    }
}

/// ` in "TEXT"` when there is a text.
struct InInput<'a>(&'a Option<String>);

impl fmt::Display for InInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(input) => write!(f, " in {input:?}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for VnlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use VnlErrorKind as K;
        let module = &self.module;
        let i = InInput(&self.input);
        match &*self.kind {
            K::BadModuleName => {
                return write!(f, "bad VNL module name {module:?}{i} (module names are lower-case letters and digits); known modules: {}", known_modules())
            }
            K::UnknownModule => {
                return write!(f, "unknown VNL module {module:?}{i}; known modules: {}", known_modules())
            }
            K::UnknownKey { key, accepted } => {
                write!(f, "{module}://: unknown option {key:?}{i}; accepted: {accepted}")?
            }
            K::AmbiguousKey { key, candidates } => write!(
                f,
                "{module}://: ambiguous option {key:?}{i} (could be: {})",
                candidates.join(", ")
            )?,
            K::MissingValue { key } => {
                write!(f, "{module}://: option {key:?} requires a value ({key}=...){i}")?
            }
            K::UnexpectedValue { key, value } => write!(
                f,
                "{module}://: option {key:?} is a flag and takes no value (got {value:?}){i}"
            )?,
            K::Unterminated { missing, pos } => write!(
                f,
                "{module}://: missing {missing} for the one opened at byte {pos}{i}"
            )?,
            K::Unexpected { found, pos, hint } => {
                write!(f, "{module}://: unexpected {found:?} at byte {pos}{i} ({hint})")?
            }
            K::BadEscape { escape, pos } => write!(
                f,
                "{module}://: bad escape {escape:?} at byte {pos}{i} (use %XX with two hex digits, or \\x)"
            )?,
            K::TrailingText { text, after } => write!(
                f,
                "{module}://: unexpected text {text:?} after the closing {after:?}{i}"
            )?,
            K::InvalidUtf8 { part } => write!(
                f,
                "{module}://: the {part} is not valid UTF-8 after %XX decoding{i}"
            )?,
            K::MissingNested => write!(f, "{module}://: missing nested VNL {{...}}{i}")?,
            K::NestingNotSupported { nested } => write!(
                f,
                "{module}://: this module takes no nested VNL (got {nested:?}){i}"
            )?,
            K::BadValue {
                key,
                value,
                expected,
            } => write!(
                f,
                "{module}://: bad value {value:?} for option {key:?}{i}: expected {expected}"
            )?,
        }
        match self.usage {
            Some(usage) => write!(f, "; syntax: {usage}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for VnlError {}

/// Error of [`parse_octal_mode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid octal mode {0:?}: expected 1 to 4 octal digits (leading zeros allowed), e.g. 0660"
)]
pub struct InvalidMode(pub String);

/// Parse a permission mode written in octal (`660`, `0660`, `02770`, optional `0o`
/// prefix). The value must be at most `0o7777`.
pub fn parse_octal_mode(s: &str) -> Result<u32, InvalidMode> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(InvalidMode(s.to_string()));
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > 4 {
        return Err(InvalidMode(s.to_string()));
    }
    let mut v = 0u32;
    for b in significant.bytes() {
        v = v * 8 + u32::from(b - b'0');
    }
    Ok(v)
}

/// A parsed VNL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vnl {
    module: String,
    address: String,
    options: Vec<(String, Option<String>)>,
    nested: Option<String>,
}

/// One lexed byte of the (non-raw) text.
#[derive(Debug, Clone, Copy)]
struct Tok {
    byte: u8,
    /// An unquoted, unescaped structural character (`/ [ ] { } =`).
    special: bool,
    /// Byte offset of the source character within the lexed text.
    pos: usize,
}

fn is_special(t: &Tok, c: u8) -> bool {
    t.special && t.byte == c
}

/// Error-construction context.
struct Ctx<'a> {
    syn: &'static ModuleSyntax,
    input: &'a str,
    /// Offset of the lexed text within `input`.
    base: usize,
}

impl Ctx<'_> {
    fn err(&self, kind: VnlErrorKind) -> VnlError {
        VnlError::of(self.syn, Some(self.input.to_string()), kind)
    }
    fn unterminated(&self, missing: &'static str, pos: usize) -> VnlError {
        self.err(VnlErrorKind::Unterminated {
            missing,
            pos: self.base + pos,
        })
    }
    fn unexpected(&self, found: char, pos: usize, hint: impl Into<String>) -> VnlError {
        self.err(VnlErrorKind::Unexpected {
            found,
            pos: self.base + pos,
            hint: hint.into(),
        })
    }
    fn unexpected_tok(&self, t: &Tok, where_: &str) -> VnlError {
        let hint = match t.byte {
            b'{' | b'}' if !self.syn.nests => format!(
                "this module takes no nested VNL; nesting is accepted by: {}; quote or escape a literal brace",
                nesting_modules()
            ),
            _ => format!("not allowed {where_}; quote it or escape it with \\ or %XX"),
        };
        self.unexpected(char::from(t.byte), t.pos, hint)
    }
    fn trailing(&self, text: &str, after: char) -> VnlError {
        self.err(VnlErrorKind::TrailingText {
            text: text.to_string(),
            after,
        })
    }
    fn key_error(&self, key: &str, e: KeyError) -> VnlError {
        key_error(self.syn, key, e, self.input)
    }
    fn decode(&self, toks: &[Tok], part: &str) -> Result<String, VnlError> {
        String::from_utf8(toks.iter().map(|t| t.byte).collect()).map_err(|_| {
            self.err(VnlErrorKind::InvalidUtf8 {
                part: part.to_string(),
            })
        })
    }
}

fn key_error(syn: &'static ModuleSyntax, key: &str, e: KeyError, input: &str) -> VnlError {
    let kind = match e {
        KeyError::Unknown => VnlErrorKind::UnknownKey {
            key: key.to_string(),
            accepted: syn.accepted(),
        },
        KeyError::Ambiguous(c) => VnlErrorKind::AmbiguousKey {
            key: key.to_string(),
            candidates: c.iter().map(|s| s.to_string()).collect(),
        },
    };
    VnlError::of(syn, Some(input.to_string()), kind)
}

/// Byte offsets of unquoted, unescaped braces.
#[derive(Debug, Default)]
struct Braces {
    /// First active `{`.
    open: Option<usize>,
    /// Last active `}`.
    close_last: Option<usize>,
    /// First active `}`.
    close_first: Option<usize>,
}

/// Scan for quote state and active braces only (no `%` validation), used to cut the
/// nested VNL out. Fails on an unterminated quote.
fn scan_braces(rest: &str, ctx: &Ctx<'_>) -> Result<Braces, VnlError> {
    let mut quote: Option<(char, usize)> = None;
    let mut open = None;
    let mut close_last = None;
    let mut close_first = None;
    let mut it = rest.char_indices();
    while let Some((i, c)) = it.next() {
        match c {
            '\\' => {
                // The escaped character (if any) is skipped; a dangling `\` is reported by
                // the lexer (or makes the brace scan see no closing brace).
                let _ = it.next();
            }
            '\'' | '"' => match quote {
                None => quote = Some((c, i)),
                Some((q, _)) if q == c => quote = None,
                Some(_) => {}
            },
            '{' if quote.is_none() && open.is_none() => open = Some(i),
            '}' if quote.is_none() => {
                if close_first.is_none() {
                    close_first = Some(i);
                }
                close_last = Some(i);
            }
            _ => {}
        }
    }
    if let Some((q, p)) = quote {
        return Err(ctx.unterminated(quote_name(q), p));
    }
    Ok(Braces {
        open,
        close_last,
        close_first,
    })
}

fn quote_name(q: char) -> &'static str {
    if q == '\'' {
        "closing quote '"
    } else {
        "closing quote \""
    }
}

/// Lex quotes and escapes into bytes, marking unquoted structural characters.
fn lex(text: &str, ctx: &Ctx<'_>) -> Result<Vec<Tok>, VnlError> {
    let mut toks = Vec::with_capacity(text.len());
    let mut quote: Option<(char, usize)> = None;
    let mut it = text.char_indices();
    let push_char = |toks: &mut Vec<Tok>, c: char, pos: usize| {
        let mut buf = [0u8; 4];
        for &byte in c.encode_utf8(&mut buf).as_bytes() {
            toks.push(Tok {
                byte,
                special: false,
                pos,
            });
        }
    };
    let bad_escape = |pos: usize| {
        ctx.err(VnlErrorKind::BadEscape {
            escape: text.get(pos..).unwrap_or("").chars().take(3).collect(),
            pos: ctx.base + pos,
        })
    };
    while let Some((i, c)) = it.next() {
        match c {
            '\\' => match it.next() {
                Some((_, e)) => push_char(&mut toks, e, i),
                None => return Err(bad_escape(i)),
            },
            '%' => {
                let hi = it.next().and_then(|(_, c)| c.to_digit(16));
                let lo = it.next().and_then(|(_, c)| c.to_digit(16));
                match (hi, lo) {
                    (Some(h), Some(l)) => toks.push(Tok {
                        // h, l < 16, so this fits in a byte.
                        byte: (h * 16 + l) as u8,
                        special: false,
                        pos: i,
                    }),
                    _ => return Err(bad_escape(i)),
                }
            }
            '\'' | '"' => match quote {
                None => quote = Some((c, i)),
                Some((q, _)) if q == c => quote = None,
                Some(_) => push_char(&mut toks, c, i),
            },
            '/' | '[' | ']' | '{' | '}' | '=' if quote.is_none() => toks.push(Tok {
                byte: c as u8,
                special: true,
                pos: i,
            }),
            _ => push_char(&mut toks, c, i),
        }
    }
    if let Some((q, p)) = quote {
        return Err(ctx.unterminated(quote_name(q), p));
    }
    Ok(toks)
}

fn is_module_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl Vnl {
    /// Parse a VNL (see the module docs for the grammar).
    pub fn parse(text: &str) -> Result<Vnl, VnlError> {
        let (module, rest, base) = match text.find("://") {
            None => ("vde", text, 0),
            Some(i) => {
                let (m, r) = text.split_at(i);
                (m, r.get(3..).unwrap_or(""), i + 3)
            }
        };
        if !is_module_name(module) {
            return Err(VnlError::module_name(
                module,
                text.to_string(),
                VnlErrorKind::BadModuleName,
            ));
        }
        let syn = module_syntax(module).ok_or_else(|| {
            VnlError::module_name(module, text.to_string(), VnlErrorKind::UnknownModule)
        })?;
        let mut vnl = Vnl {
            module: syn.name.to_string(),
            address: String::new(),
            options: Vec::new(),
            nested: None,
        };
        if syn.style == ArgStyle::Raw {
            vnl.address = rest.to_string();
            return Ok(vnl);
        }
        let ctx = Ctx {
            syn,
            input: text,
            base,
        };
        let outer = if syn.nests {
            let Braces {
                open,
                close_last,
                close_first,
            } = scan_braces(rest, &ctx)?;
            match open {
                None => {
                    if let Some(p) = close_first {
                        return Err(ctx.unexpected('}', p, "no matching '{'"));
                    }
                    return Err(ctx.err(VnlErrorKind::MissingNested));
                }
                Some(o) => {
                    if let Some(p) = close_first.filter(|p| *p < o) {
                        return Err(ctx.unexpected('}', p, "no matching '{' before it"));
                    }
                    let c = match close_last {
                        Some(c) if c > o => c,
                        _ => return Err(ctx.unterminated("closing '}'", o)),
                    };
                    let after = rest.get(c + 1..).unwrap_or("");
                    if !after.is_empty() {
                        return Err(ctx.trailing(after, '}'));
                    }
                    vnl.nested = Some(rest.get(o + 1..c).unwrap_or("").to_string());
                    rest.get(..o).unwrap_or("")
                }
            }
        } else {
            rest
        };
        let toks = lex(outer, &ctx)?;
        match syn.style {
            ArgStyle::Path => parse_path(&mut vnl, outer, &toks, &ctx)?,
            ArgStyle::Slash => parse_slash(&mut vnl, &toks, &ctx)?,
            ArgStyle::Raw => {}
        }
        Ok(vnl)
    }

    /// Build a VNL programmatically: `module` must be known; `address` is taken literally
    /// (it is escaped as needed by `Display`).
    pub fn new(module: &str, address: impl Into<String>) -> Result<Vnl, VnlError> {
        let text = format!("{module}://");
        if !is_module_name(module) {
            return Err(VnlError::module_name(
                module,
                text,
                VnlErrorKind::BadModuleName,
            ));
        }
        let syn = module_syntax(module)
            .ok_or_else(|| VnlError::module_name(module, text, VnlErrorKind::UnknownModule))?;
        Ok(Vnl {
            module: syn.name.to_string(),
            address: address.into(),
            options: Vec::new(),
            nested: None,
        })
    }

    /// Append an option (builder). `key` may be abbreviated like in text; it is stored
    /// canonically. `None` means a flag.
    pub fn with_option(mut self, key: &str, value: Option<&str>) -> Result<Vnl, VnlError> {
        let syn = self.syntax();
        let input = self.to_string();
        let canon = syn
            .resolve_key(key)
            .map_err(|e| key_error(syn, key, e, &input))?;
        match (syn.is_flag(canon), value) {
            (true, Some(v)) => {
                return Err(VnlError::of(
                    syn,
                    Some(input),
                    VnlErrorKind::UnexpectedValue {
                        key: canon.to_string(),
                        value: v.to_string(),
                    },
                ))
            }
            (false, None) => {
                return Err(VnlError::of(
                    syn,
                    Some(input),
                    VnlErrorKind::MissingValue {
                        key: canon.to_string(),
                    },
                ))
            }
            _ => {}
        }
        self.options
            .push((canon.to_string(), value.map(str::to_string)));
        Ok(self)
    }

    /// Set the nested VNL text (builder; only for nesting modules). The text must have
    /// balanced quotes and must not end in a lone `\`.
    pub fn with_nested(mut self, nested: impl Into<String>) -> Result<Vnl, VnlError> {
        let nested = nested.into();
        let syn = self.syntax();
        if !syn.nests {
            return Err(VnlError::of(
                syn,
                None,
                VnlErrorKind::NestingNotSupported { nested },
            ));
        }
        // Check that `{nested}` is cut back out unchanged.
        let wrapped = format!("{{{nested}}}");
        let input = format!("{}://{wrapped}", syn.name);
        let ctx = Ctx {
            syn,
            input: &input,
            base: syn.name.len() + 3,
        };
        let braces = scan_braces(&wrapped, &ctx)?;
        if braces.close_last != Some(wrapped.len() - 1) {
            return Err(ctx.unterminated("closing '}'", 0));
        }
        self.nested = Some(nested);
        Ok(self)
    }

    /// The module name (`vde`, `vxvde`, …).
    pub fn module(&self) -> &str {
        &self.module
    }

    /// The module's grammar.
    pub fn syntax(&self) -> &'static ModuleSyntax {
        // Every constructor checks the module name, so the lookup succeeds; fall back to
        // `vde` defensively instead of panicking.
        module_syntax(&self.module)
            .or_else(|| MODULES.first())
            .unwrap_or(&FALLBACK)
    }

    /// The decoded address (path, group, interface, raw text…). May be empty.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The nested VNL text, for nesting modules.
    pub fn nested(&self) -> Option<&str> {
        self.nested.as_deref()
    }

    /// All options in order: (canonical key, value or `None` for a flag).
    pub fn options(&self) -> &[(String, Option<String>)] {
        &self.options
    }

    /// Value of a value option (canonical key); the last occurrence wins. `None` if
    /// absent (flags also give `None`; use [`Vnl::has_flag`]).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, v)| k == key && v.is_some())
            .and_then(|(_, v)| v.as_deref())
    }

    /// Whether a flag (canonical key) is present.
    pub fn has_flag(&self, key: &str) -> bool {
        self.options.iter().any(|(k, v)| k == key && v.is_none())
    }

    /// Parse an option's value with `FromStr`; `Ok(None)` if absent.
    pub fn get_parsed<T>(&self, key: &str) -> Result<Option<T>, VnlError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.parse::<T>().map(Some).map_err(|e| {
            let ty = std::any::type_name::<T>();
            let ty = ty.rsplit("::").next().unwrap_or(ty);
            self.bad_value(key, v, format!("a value of type {ty} ({e})"))
        })
    }

    /// Parse an option's value as a decimal `u32`; `Ok(None)` if absent.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, VnlError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.parse::<u32>().map(Some).map_err(|_| {
            self.bad_value(key, v, "a decimal integer from 0 to 4294967295".to_string())
        })
    }

    /// Parse an option's value as an octal permission mode; `Ok(None)` if absent.
    pub fn get_mode(&self, key: &str) -> Result<Option<u32>, VnlError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        parse_octal_mode(v)
            .map(Some)
            .map_err(|_| self.bad_value(key, v, "an octal mode such as 0660".to_string()))
    }

    fn bad_value(&self, key: &str, value: &str, expected: String) -> VnlError {
        VnlError::of(
            self.syntax(),
            Some(self.to_string()),
            VnlErrorKind::BadValue {
                key: key.to_string(),
                value: value.to_string(),
                expected,
            },
        )
    }
}

static FALLBACK: ModuleSyntax = ModuleSyntax::base("vde", ArgStyle::Path, "vde://DIR");

fn parse_path(vnl: &mut Vnl, outer: &str, toks: &[Tok], ctx: &Ctx<'_>) -> Result<(), VnlError> {
    let open = toks.iter().position(|t| is_special(t, b'['));
    let (addr, args) = match open {
        None => (toks, None),
        Some(i) => {
            let (addr, from_open) = toks.split_at(i);
            let open_pos = from_open.first().map_or(0, |t| t.pos);
            let after = from_open.get(1..).unwrap_or(&[]);
            let close = after
                .iter()
                .position(|t| is_special(t, b']'))
                .ok_or_else(|| ctx.unterminated("closing ']'", open_pos))?;
            let (args, from_close) = after.split_at(close);
            if let Some(t) = from_close.get(1..).and_then(|s| s.first()) {
                return Err(ctx.trailing(outer.get(t.pos..).unwrap_or(""), ']'));
            }
            (addr, Some(args))
        }
    };
    if let Some(t) = addr
        .iter()
        .find(|t| t.special && matches!(t.byte, b']' | b'{' | b'}'))
    {
        return Err(ctx.unexpected_tok(t, "in the path"));
    }
    vnl.address = ctx.decode(addr, "address")?;
    if let Some(args) = args {
        for seg in args.split(|t| is_special(t, b'/')) {
            if let Some(opt) = parse_arg(seg, ctx, true)? {
                vnl.options.push(opt);
            }
        }
    }
    Ok(())
}

fn parse_slash(vnl: &mut Vnl, toks: &[Tok], ctx: &Ctx<'_>) -> Result<(), VnlError> {
    let mut segs = toks.split(|t| is_special(t, b'/'));
    let addr = segs.next().unwrap_or(&[]);
    if let Some(t) = addr.iter().find(|t| t.special) {
        return Err(ctx.unexpected_tok(t, "in the address"));
    }
    vnl.address = ctx.decode(addr, "address")?;
    for seg in segs {
        if let Some(opt) = parse_arg(seg, ctx, false)? {
            vnl.options.push(opt);
        }
    }
    Ok(())
}

/// Parse one `/`-separated argument. `bare_ok`: a key-less value goes to the default key.
fn parse_arg(
    seg: &[Tok],
    ctx: &Ctx<'_>,
    bare_ok: bool,
) -> Result<Option<(String, Option<String>)>, VnlError> {
    if seg.is_empty() {
        return Ok(None);
    }
    if let Some(t) = seg
        .iter()
        .find(|t| t.special && matches!(t.byte, b'[' | b']' | b'{' | b'}'))
    {
        return Err(ctx.unexpected_tok(t, "in an option"));
    }
    let syn = ctx.syn;
    match seg.iter().position(|t| is_special(t, b'=')) {
        Some(e) => {
            let (k, v) = seg.split_at(e);
            let key = ctx.decode(k, "option name")?;
            let value = ctx.decode(v.get(1..).unwrap_or(&[]), &format!("value of {key:?}"))?;
            let canon = syn.resolve_key(&key).map_err(|e| ctx.key_error(&key, e))?;
            if syn.is_flag(canon) {
                return Err(ctx.err(VnlErrorKind::UnexpectedValue {
                    key: canon.to_string(),
                    value,
                }));
            }
            Ok(Some((canon.to_string(), Some(value))))
        }
        None => {
            let bare = ctx.decode(seg, "option")?;
            let resolved = syn.resolve_key(&bare);
            if let Ok(k) = resolved {
                if syn.is_flag(k) {
                    return Ok(Some((k.to_string(), None)));
                }
            }
            if bare_ok {
                if let Some(dk) = syn.default_key {
                    let numeric = bare.bytes().all(|b| b.is_ascii_digit());
                    let key = if numeric {
                        dk
                    } else {
                        syn.default_text_key.unwrap_or(dk)
                    };
                    return Ok(Some((key.to_string(), Some(bare))));
                }
            }
            match resolved {
                Ok(k) => Err(ctx.err(VnlErrorKind::MissingValue { key: k.to_string() })),
                Err(e) => Err(ctx.key_error(&bare, e)),
            }
        }
    }
}

/// Append `s` escaping the characters that are special in VNL text. `/` and `=` are left
/// alone when `keep_slash_eq` (path-style addresses).
fn push_escaped(out: &mut String, s: &str, keep_slash_eq: bool) {
    for c in s.chars() {
        let special = match c {
            '[' | ']' | '{' | '}' | '\'' | '"' | '\\' | '%' => true,
            '/' | '=' => !keep_slash_eq,
            _ => false,
        };
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

impl fmt::Display for Vnl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let syn = self.syntax();
        let mut out = String::new();
        out.push_str(&self.module);
        out.push_str("://");
        match syn.style {
            ArgStyle::Raw => out.push_str(&self.address),
            ArgStyle::Path => {
                push_escaped(&mut out, &self.address, true);
                if !self.options.is_empty() {
                    out.push('[');
                    for (i, (k, v)) in self.options.iter().enumerate() {
                        if i > 0 {
                            out.push('/');
                        }
                        push_option(&mut out, k, v.as_deref());
                    }
                    out.push(']');
                }
            }
            ArgStyle::Slash => {
                push_escaped(&mut out, &self.address, false);
                for (k, v) in &self.options {
                    out.push('/');
                    push_option(&mut out, k, v.as_deref());
                }
            }
        }
        if let Some(n) = &self.nested {
            out.push('{');
            out.push_str(n);
            out.push('}');
        }
        f.write_str(&out)
    }
}

fn push_option(out: &mut String, key: &str, value: Option<&str>) {
    push_escaped(out, key, false);
    if let Some(v) = value {
        out.push('=');
        push_escaped(out, v, false);
    }
}

impl FromStr for Vnl {
    type Err = VnlError;
    fn from_str(s: &str) -> Result<Vnl, VnlError> {
        Vnl::parse(s)
    }
}

/// Where the default switch is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultSwitch {
    /// A regular default file whose first line is this VNL (trimmed; not parsed here).
    Vnl(String),
    /// A switch control directory (or a symlink to one).
    Dir(PathBuf),
}

/// Resolve the default switch (vdeplug4 order): `$HOME/.vdeplug/default`, then
/// `$HOME/.vde2/default.switch` — each either a directory/symlink to a switch dir
/// ([`DefaultSwitch::Dir`]) or a regular file whose first line is a VNL
/// ([`DefaultSwitch::Vnl`]; a file with an empty first line is skipped) — then
/// `/var/run/vde.ctl` if `euid == 0`, else `/tmp/vde.ctl`.
///
/// `exists` tells whether a path exists (following symlinks); `read_first_line` returns
/// the first line of a *regular file* and `None` for anything else (directories).
pub fn default_switch_path(
    home: Option<&Path>,
    euid: u32,
    exists: &dyn Fn(&Path) -> bool,
    read_first_line: &dyn Fn(&Path) -> Option<String>,
) -> DefaultSwitch {
    if let Some(home) = home {
        for rel in [".vdeplug/default", ".vde2/default.switch"] {
            let p = home.join(rel);
            if !exists(&p) {
                continue;
            }
            match read_first_line(&p) {
                None => return DefaultSwitch::Dir(p),
                Some(line) => {
                    let line = line.trim();
                    if !line.is_empty() {
                        return DefaultSwitch::Vnl(line.to_string());
                    }
                }
            }
        }
    }
    DefaultSwitch::Dir(PathBuf::from(if euid == 0 {
        "/var/run/vde.ctl"
    } else {
        "/tmp/vde.ctl"
    }))
}

/// [`default_switch_path`] with the real `$HOME`, effective uid and filesystem.
pub fn default_switch() -> DefaultSwitch {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::fs::MetadataExt;
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let euid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    let exists = |p: &Path| p.exists();
    let read_first_line = |p: &Path| -> Option<String> {
        if !std::fs::metadata(p).ok()?.is_file() {
            return None;
        }
        let f = std::fs::File::open(p).ok()?;
        let mut line = String::new();
        // An unreadable regular file still counts as "a file", with an empty line.
        let _ = BufReader::new(f.take(4096)).read_line(&mut line);
        Some(line)
    };
    default_switch_path(home.as_deref(), euid, &exists, &read_first_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &Vnl) -> Vec<(&str, Option<&str>)> {
        v.options()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect()
    }

    type Expect = (
        &'static str,
        &'static str,
        &'static [(&'static str, Option<&'static str>)],
        Option<&'static str>,
    );

    #[test]
    fn accepted_table() {
        let table: &[(&str, Expect)] = &[
            ("", ("vde", "", &[], None)),
            ("vde://", ("vde", "", &[], None)),
            ("vde:///tmp/sw", ("vde", "/tmp/sw", &[], None)),
            ("/tmp/sw", ("vde", "/tmp/sw", &[], None)),
            ("/tmp/a=b", ("vde", "/tmp/a=b", &[], None)),
            (
                "vde:///tmp/sw[3]",
                ("vde", "/tmp/sw", &[("port", Some("3"))], None),
            ),
            (
                "vde:///tmp/sw[port=3/mode=0660]",
                (
                    "vde",
                    "/tmp/sw",
                    &[("port", Some("3")), ("mode", Some("0660"))],
                    None,
                ),
            ),
            (
                "vde:///tmp/sw[lan1]",
                ("vde", "/tmp/sw", &[("portgroup", Some("lan1"))], None),
            ),
            (
                "vde:///tmp/sw[portg=x]",
                ("vde", "/tmp/sw", &[("portgroup", Some("x"))], None),
            ),
            (
                "vde:///tmp/sw[m=0600/g=staff]",
                (
                    "vde",
                    "/tmp/sw",
                    &[("mode", Some("0600")), ("group", Some("staff"))],
                    None,
                ),
            ),
            (
                "vde:///tmp/sw[3//mode=1/]",
                (
                    "vde",
                    "/tmp/sw",
                    &[("port", Some("3")), ("mode", Some("1"))],
                    None,
                ),
            ),
            ("vde:///tmp/sw[]", ("vde", "/tmp/sw", &[], None)),
            ("vde://[5]", ("vde", "", &[("port", Some("5"))], None)),
            (
                "vde:///tmp/sw[port=]",
                ("vde", "/tmp/sw", &[("port", Some(""))], None),
            ),
            ("ptp:///tmp/link", ("ptp", "/tmp/link", &[], None)),
            (
                "ptp:///tmp/link[mode=0666]",
                ("ptp", "/tmp/link", &[("mode", Some("0666"))], None),
            ),
            (
                "hub:///tmp/h[dirmode=02770/hashsi=7]",
                (
                    "hub",
                    "/tmp/h",
                    &[("dirmode", Some("02770")), ("hashsize", Some("7"))],
                    None,
                ),
            ),
            ("switch://", ("switch", "", &[], None)),
            (
                "udp://2000->127.0.0.1:3000",
                ("udp", "2000->127.0.0.1:3000", &[], None),
            ),
            (
                "udp://127.0.0.1:2000->127.0.0.1:3000",
                ("udp", "127.0.0.1:2000->127.0.0.1:3000", &[], None),
            ),
            ("vxvde://", ("vxvde", "", &[], None)),
            ("vxvde:///vni=3", ("vxvde", "", &[("vni", Some("3"))], None)),
            (
                "vxvde://239.1.2.3/port=5000/vni=42/v4",
                (
                    "vxvde",
                    "239.1.2.3",
                    &[("port", Some("5000")), ("vni", Some("42")), ("v4", None)],
                    None,
                ),
            ),
            (
                "vxvde://ff05:56de::1/v6",
                ("vxvde", "ff05:56de::1", &[("v6", None)], None),
            ),
            (
                "vxlan://239.0.0.1/vni=42",
                ("vxlan", "239.0.0.1", &[("vni", Some("42"))], None),
            ),
            (
                "slirp:///restr/tcpfwd=8080:10.0.2.15:80",
                (
                    "slirp",
                    "",
                    &[("restricted", None), ("tcpfwd", Some("8080:10.0.2.15:80"))],
                    None,
                ),
            ),
            (
                "slirp:///addr='10.1.0.2/24'",
                ("slirp", "", &[("addr", Some("10.1.0.2/24"))], None),
            ),
            ("tap://tap0", ("tap", "tap0", &[], None)),
            (
                "tap://eth0[netns=lan1]",
                ("tap", "eth0", &[("netns", Some("lan1"))], None),
            ),
            (
                "cmd://ssh host vde_plug",
                ("cmd", "ssh host vde_plug", &[], None),
            ),
            ("cmd://'ssh' host", ("cmd", "'ssh' host", &[], None)),
            ("cmd://echo 100%", ("cmd", "echo 100%", &[], None)),
            ("seqpacket://5", ("seqpacket", "5", &[], None)),
            ("null://", ("null", "", &[], None)),
            ("pcap://eth0", ("pcap", "eth0", &[], None)),
            ("stdio://", ("stdio", "", &[], None)),
            (
                "vlan://3/untag=4/trunk{vde:///tmp/sw}",
                (
                    "vlan",
                    "3",
                    &[("untag", Some("4")), ("trunk", None)],
                    Some("vde:///tmp/sw"),
                ),
            ),
            (
                "vlan://0/u=4/t=5:6-7/x/q{vde:///tmp/sw[3]}",
                (
                    "vlan",
                    "0",
                    &[
                        ("untag", Some("4")),
                        ("tag", Some("5:6-7")),
                        ("trunk", None),
                        ("qinq", None),
                    ],
                    Some("vde:///tmp/sw[3]"),
                ),
            ),
            (
                "vlan://1/ad{vlan://2{vde://}}",
                ("vlan", "1", &[("qinq", None)], Some("vlan://2{vde://}")),
            ),
            ("vlan://{}", ("vlan", "", &[], Some(""))),
            ("vlan://5{'}'}", ("vlan", "5", &[], Some("'}'"))),
            // quoting and escapes
            ("vde://'/tmp/a[b]'", ("vde", "/tmp/a[b]", &[], None)),
            (
                "vde://\"/tmp/a[b]\"[3]",
                ("vde", "/tmp/a[b]", &[("port", Some("3"))], None),
            ),
            ("vde:///tmp/it\\'s", ("vde", "/tmp/it's", &[], None)),
            ("vde:///tmp/a\\[b\\]", ("vde", "/tmp/a[b]", &[], None)),
            ("vde://%2Ftmp%2fsw", ("vde", "/tmp/sw", &[], None)),
            ("vde:///tmp/%5B%5D", ("vde", "/tmp/[]", &[], None)),
            ("vde:///tmp/%C3%A9", ("vde", "/tmp/é", &[], None)),
            ("vde:///tmp/\"it's\"", ("vde", "/tmp/it's", &[], None)),
            (
                "vde:///tmp/sw[group='a/b'/m\\ode=1]",
                (
                    "vde",
                    "/tmp/sw",
                    &[("group", Some("a/b")), ("mode", Some("1"))],
                    None,
                ),
            ),
            (
                "vxvde://a%2Fb/bind=x=y",
                ("vxvde", "a/b", &[("bind", Some("x=y"))], None),
            ),
            ("vxvde://'a=b'", ("vxvde", "a=b", &[], None)),
            ("vxvde://\"a'b\"", ("vxvde", "a'b", &[], None)),
            (
                "vde:///tmp/sw[\\5]",
                ("vde", "/tmp/sw", &[("port", Some("5"))], None),
            ),
            (
                "vde:///tmp/sw[''a]",
                ("vde", "/tmp/sw", &[("portgroup", Some("a"))], None),
            ),
            ("vde:///a://b", ("vde", "/a://b", &[], None)),
        ];
        for (text, (module, address, options, nested)) in table {
            let v = Vnl::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(v.module(), *module, "{text:?}");
            assert_eq!(v.address(), *address, "{text:?}");
            assert_eq!(opts(&v), options.to_vec(), "{text:?}");
            assert_eq!(v.nested(), *nested, "{text:?}");
            // round trip through Display
            let shown = v.to_string();
            let back = Vnl::parse(&shown).unwrap_or_else(|e| panic!("{shown:?}: {e}"));
            assert_eq!(back, v, "{text:?} -> {shown:?}");
            assert_eq!(text.parse::<Vnl>().ok(), Some(v));
        }
    }

    fn err(text: &str) -> VnlError {
        match Vnl::parse(text) {
            Ok(v) => panic!("{text:?} unexpectedly parsed: {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn rejected_table() {
        type Check = fn(&VnlError) -> bool;
        let table: &[(&str, Check, &[&str])] = &[
            (
                "vde:///tmp/sw[port=3",
                |e| {
                    matches!(
                        &*e.kind,
                        VnlErrorKind::Unterminated {
                            missing: "closing ']'",
                            pos: 13,
                            ..
                        }
                    )
                },
                &["vde://", "closing ']'", "syntax: vde://DIR["],
            ),
            (
                "vde:///tmp/sw[3]x",
                |e| matches!(&*e.kind, VnlErrorKind::TrailingText { text, after: ']', .. } if text == "x"),
                &["\"x\"", "after the closing"],
            ),
            (
                "vde:///tmp/a[b][3]",
                |e| matches!(&*e.kind, VnlErrorKind::TrailingText { text, .. } if text == "[3]"),
                &[],
            ),
            (
                "vde:///tmp/a]",
                |e| {
                    matches!(
                        &*e.kind,
                        VnlErrorKind::Unexpected {
                            found: ']',
                            pos: 12,
                            ..
                        }
                    )
                },
                &["at byte 12"],
            ),
            (
                "vde:///tmp/sw[a[b]",
                |e| matches!(&*e.kind, VnlErrorKind::Unexpected { found: '[', .. }),
                &[],
            ),
            (
                "bogus://x",
                |e| *e.kind == VnlErrorKind::UnknownModule && e.module == "bogus",
                &["\"bogus\"", "vde, ptp", "vxvde", "stdio"],
            ),
            (
                "VDE://x",
                |e| *e.kind == VnlErrorKind::BadModuleName && e.module == "VDE",
                &["\"VDE\"", "lower-case"],
            ),
            (
                "://x",
                |e| *e.kind == VnlErrorKind::BadModuleName && e.module.is_empty(),
                &[],
            ),
            (
                "/tmp/'a://b'",
                |e| *e.kind == VnlErrorKind::BadModuleName,
                &[],
            ),
            (
                "vxvde://g/vni",
                |e| matches!(&*e.kind, VnlErrorKind::MissingValue { key, .. } if key == "vni"),
                &["vxvde://", "\"vni\"", "requires a value"],
            ),
            (
                "vxvde://g/v4=1",
                |e| matches!(&*e.kind, VnlErrorKind::UnexpectedValue { key, value, .. } if key == "v4" && value == "1"),
                &["flag"],
            ),
            (
                "vde:///x[%zz]",
                |e| matches!(&*e.kind, VnlErrorKind::BadEscape { pos: 9, escape, .. } if escape == "%zz"),
                &["at byte 9", "%zz"],
            ),
            (
                "vde:///x%4",
                |e| matches!(&*e.kind, VnlErrorKind::BadEscape { pos: 8, .. }),
                &[],
            ),
            (
                "vde:///x\\",
                |e| matches!(&*e.kind, VnlErrorKind::BadEscape { pos: 8, .. }),
                &[],
            ),
            (
                "vde:///x%FF",
                |e| matches!(&*e.kind, VnlErrorKind::InvalidUtf8 { part, .. } if part == "address"),
                &["UTF-8"],
            ),
            (
                "vde:///x[mode=%FF]",
                |e| matches!(&*e.kind, VnlErrorKind::InvalidUtf8 { .. }),
                &[],
            ),
            (
                "vlan://3{vde://a",
                |e| {
                    matches!(
                        &*e.kind,
                        VnlErrorKind::Unterminated {
                            missing: "closing '}'",
                            pos: 8,
                            ..
                        }
                    )
                },
                &["vlan://", "'}'"],
            ),
            (
                "vlan://3",
                |e| matches!(&*e.kind, VnlErrorKind::MissingNested),
                &["nested"],
            ),
            (
                "vlan://3}",
                |e| matches!(&*e.kind, VnlErrorKind::Unexpected { found: '}', .. }),
                &[],
            ),
            (
                "vlan://3}{a}",
                |e| {
                    matches!(
                        &*e.kind,
                        VnlErrorKind::Unexpected {
                            found: '}',
                            pos: 8,
                            ..
                        }
                    )
                },
                &[],
            ),
            (
                "vlan://3{a}x",
                |e| matches!(&*e.kind, VnlErrorKind::TrailingText { text, after: '}', .. } if text == "x"),
                &[],
            ),
            (
                "vlan://3[untag=4/trunk]{vde://}",
                |e| matches!(&*e.kind, VnlErrorKind::Unexpected { found: '[', .. }),
                &[],
            ),
            (
                "vde:///tmp/sw{x}",
                |e| matches!(&*e.kind, VnlErrorKind::Unexpected { found: '{', .. }),
                &["nesting is accepted by: vlan"],
            ),
            (
                "vde://'/tmp/a",
                |e| {
                    matches!(
                        &*e.kind,
                        VnlErrorKind::Unterminated {
                            missing: "closing quote '",
                            pos: 6,
                            ..
                        }
                    )
                },
                &["quote"],
            ),
            (
                "vxvde://\"abc",
                |e| {
                    matches!(
                        &*e.kind,
                        VnlErrorKind::Unterminated {
                            missing: "closing quote \"",
                            ..
                        }
                    )
                },
                &[],
            ),
            (
                "vlan://'3{vde://}",
                |e| matches!(&*e.kind, VnlErrorKind::Unterminated { .. }),
                &[],
            ),
            (
                "vde:///tmp/sw[prot=3]",
                |e| matches!(&*e.kind, VnlErrorKind::UnknownKey { key, .. } if key == "prot"),
                &[],
            ),
            (
                "vde:///tmp/sw[p=3]",
                |e| matches!(&*e.kind, VnlErrorKind::AmbiguousKey { candidates, .. } if candidates == &["port", "portgroup"]),
                &["ambiguous", "port, portgroup"],
            ),
            (
                "vde:///tmp/sw[po=3]",
                |e| matches!(&*e.kind, VnlErrorKind::AmbiguousKey { .. }),
                &[],
            ),
            (
                "vde:///tmp/sw[=3]",
                |e| matches!(&*e.kind, VnlErrorKind::UnknownKey { key, .. } if key.is_empty()),
                &[],
            ),
            (
                "ptp:///tmp/l[3]",
                |e| matches!(&*e.kind, VnlErrorKind::UnknownKey { key, .. } if key == "3"),
                &["accepted: group, mode"],
            ),
            (
                "ptp:///tmp/l[mode]",
                |e| matches!(&*e.kind, VnlErrorKind::MissingValue { key, .. } if key == "mode"),
                &[],
            ),
            (
                "vxvde://vni=3",
                |e| matches!(&*e.kind, VnlErrorKind::Unexpected { found: '=', .. }),
                &["quote it"],
            ),
            (
                "vxvde://g/v=1",
                |e| matches!(&*e.kind, VnlErrorKind::AmbiguousKey { .. }),
                &[],
            ),
            (
                "slirp:///ver=1",
                |e| matches!(&*e.kind, VnlErrorKind::UnexpectedValue { key, .. } if key == "verbose"),
                &[],
            ),
        ];
        for (text, check, needles) in table {
            let e = err(text);
            assert!(check(&e), "{text:?}: wrong error {e:?}");
            let msg = e.to_string();
            for n in *needles {
                assert!(msg.contains(n), "{text:?}: {msg:?} lacks {n:?}");
            }
            // every error names the input (module errors) or the module + syntax
            assert!(msg.contains(&format!("{text:?}")), "{msg}");
        }
    }

    #[test]
    fn unknown_key_message_format() {
        let e = err("vde:///tmp/sw[prot=3]");
        assert_eq!(
            e.to_string(),
            "vde://: unknown option \"prot\" in \"vde:///tmp/sw[prot=3]\"; accepted: port, \
             portgroup, group, mode; syntax: vde://DIR[PORT|port=N/portgroup=NAME/group=GROUP/mode=OCTAL]"
        );
    }

    #[test]
    fn get_and_flags() {
        let v = Vnl::parse("vxvde://g/vni=1/v4/vni=2/port=x").unwrap();
        assert_eq!(v.get("vni"), Some("2"));
        assert_eq!(v.get("v4"), None);
        assert!(v.has_flag("v4"));
        assert!(!v.has_flag("v6"));
        assert!(!v.has_flag("vni"));
        assert_eq!(v.get_u32("vni").unwrap(), Some(2));
        assert_eq!(v.get_u32("ttl").unwrap(), None);
        let e = v.get_u32("port").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(*e.kind, VnlErrorKind::BadValue { .. }));
        for n in ["vxvde://", "\"port\"", "\"x\"", "decimal integer"] {
            assert!(msg.contains(n), "{msg}");
        }
        let e = v.get_parsed::<std::net::Ipv4Addr>("port").unwrap_err();
        assert!(e.to_string().contains("Ipv4Addr"), "{e}");
        assert_eq!(v.get_parsed::<u8>("vni").unwrap(), Some(2u8));
    }

    #[test]
    fn modes() {
        assert_eq!(parse_octal_mode("0660"), Ok(0o660));
        assert_eq!(parse_octal_mode("660"), Ok(0o660));
        assert_eq!(parse_octal_mode("02770"), Ok(0o2770));
        assert_eq!(parse_octal_mode("0o700"), Ok(0o700));
        assert_eq!(parse_octal_mode("0"), Ok(0));
        assert_eq!(parse_octal_mode("000000777"), Ok(0o777));
        for bad in ["", "8", "0x1", "-1", "17777", "0o", "6 6"] {
            assert!(parse_octal_mode(bad).is_err(), "{bad:?}");
        }
        let v = Vnl::parse("vde:///a[mode=0660/group=9]").unwrap();
        assert_eq!(v.get_mode("mode").unwrap(), Some(0o660));
        assert!(v.get_mode("group").is_err());
        assert_eq!(v.get_mode("port").unwrap(), None);
    }

    #[test]
    fn builder() {
        let v = Vnl::new("vlan", "3")
            .unwrap()
            .with_option("u", Some("4"))
            .unwrap()
            .with_option("trunk", None)
            .unwrap()
            .with_nested("vde:///tmp/sw")
            .unwrap();
        assert_eq!(v.to_string(), "vlan://3/untag=4/trunk{vde:///tmp/sw}");
        assert_eq!(Vnl::parse(&v.to_string()).unwrap(), v);
        assert!(Vnl::new("bogus", "").is_err());
        assert!(Vnl::new("Vde", "").is_err());
        let vde = Vnl::new("vde", "/tmp/a[b]").unwrap();
        assert!(vde.clone().with_nested("x").is_err());
        assert!(vde.clone().with_option("p", Some("1")).is_err());
        assert!(vde.clone().with_option("port", None).is_err());
        assert!(Vnl::new("vxvde", "")
            .unwrap()
            .with_option("v4", Some("1"))
            .is_err());
        assert!(Vnl::new("tap", "x")
            .unwrap()
            .with_option("a", None)
            .is_err());
        assert_eq!(vde.to_string(), "vde:///tmp/a\\[b\\]");
        let vl = Vnl::new("vlan", "").unwrap();
        assert!(vl.clone().with_nested("'").is_err());
        assert!(vl.clone().with_nested("a\\").is_err());
        assert!(vl.clone().with_nested("a}b{").is_ok());
    }

    #[test]
    fn display_canonical() {
        let cases = [
            ("/tmp/sw", "vde:///tmp/sw"),
            ("", "vde://"),
            ("vde:///tmp/sw[lan1]", "vde:///tmp/sw[portgroup=lan1]"),
            ("vde:///tmp/sw[3/m=0660]", "vde:///tmp/sw[port=3/mode=0660]"),
            ("vxvde://ff05:56de::1/v6", "vxvde://ff05:56de::1/v6"),
            ("vxvde://a%2Fb", "vxvde://a\\/b"),
            ("vde://'/tmp/a b'", "vde:///tmp/a b"),
            ("vde:///x%25", "vde:///x\\%"),
            ("cmd://'ssh' host", "cmd://'ssh' host"),
        ];
        for (text, shown) in cases {
            assert_eq!(Vnl::parse(text).unwrap().to_string(), shown, "{text:?}");
        }
    }

    #[test]
    fn module_table_is_consistent() {
        for (i, m) in MODULES.iter().enumerate() {
            assert!(is_module_name(m.name));
            assert!(MODULES.iter().skip(i + 1).all(|o| o.name != m.name));
            assert!(m.usage.starts_with(&format!("{}://", m.name)), "{}", m.name);
            for f in m.flags {
                assert!(m.keys.contains(f), "{}: {f}", m.name);
            }
            for (_, k) in m.aliases {
                assert!(m.keys.contains(k));
            }
            for k in m.default_key.iter().chain(m.default_text_key.iter()) {
                assert!(m.keys.contains(k) && !m.is_flag(k));
                assert_eq!(m.style, ArgStyle::Path);
            }
            if m.style == ArgStyle::Raw {
                assert!(m.keys.is_empty() && !m.nests);
            }
        }
        assert_eq!(module_syntax("vde").map(|m| m.name), Some("vde"));
        assert!(module_syntax("VDE").is_none());
    }

    #[test]
    fn default_switch_resolution() {
        use std::collections::HashMap;
        let home = Path::new("/home/u");
        let run = |files: &[(&str, Option<&str>)], euid: u32, home: Option<&Path>| {
            let map: HashMap<PathBuf, Option<String>> = files
                .iter()
                .map(|(p, c)| (PathBuf::from(p), c.map(str::to_string)))
                .collect();
            let exists = |p: &Path| map.contains_key(p);
            let read = |p: &Path| map.get(p).cloned().flatten();
            default_switch_path(home, euid, &exists, &read)
        };
        let dir = |s: &str| DefaultSwitch::Dir(PathBuf::from(s));
        assert_eq!(run(&[], 1000, Some(home)), dir("/tmp/vde.ctl"));
        assert_eq!(run(&[], 0, Some(home)), dir("/var/run/vde.ctl"));
        assert_eq!(run(&[], 0, None), dir("/var/run/vde.ctl"));
        assert_eq!(
            run(&[("/home/u/.vdeplug/default", None)], 0, Some(home)),
            dir("/home/u/.vdeplug/default")
        );
        assert_eq!(
            run(
                &[
                    ("/home/u/.vdeplug/default", Some("vxvde://239.0.0.9\n")),
                    ("/home/u/.vde2/default.switch", None)
                ],
                1000,
                Some(home)
            ),
            DefaultSwitch::Vnl("vxvde://239.0.0.9".into())
        );
        assert_eq!(
            run(&[("/home/u/.vde2/default.switch", None)], 1000, Some(home)),
            dir("/home/u/.vde2/default.switch")
        );
        assert_eq!(
            run(
                &[
                    ("/home/u/.vdeplug/default", Some("  \n")),
                    ("/home/u/.vde2/default.switch", Some("/srv/sw"))
                ],
                1000,
                Some(home)
            ),
            DefaultSwitch::Vnl("/srv/sw".into())
        );
        // the real-filesystem variant must not panic
        let _ = default_switch();
    }
}
