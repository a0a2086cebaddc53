//! wirefilter's value syntax: `[LR|RL]VALUE[+DELTA][K|M|G][U|N][[NODE]]`.
//!
//! * no prefix sets both directions, `LR` (left to right) or `RL` one of them;
//! * `+DELTA` adds random variation: `U` (the default) uniform in `[VALUE-DELTA, VALUE+DELTA]`,
//!   `N` Gaussian with mean `VALUE` and σ = `DELTA/3`;
//! * `K`, `M`, `G` multiply VALUE and DELTA by 1024, 1024², 1024³;
//! * `[NODE]` names the Markov node whose parameter is set (node 0 without it).
//!
//! Letters are accepted in either case; spaces around the whole text are ignored. Numbers are
//! plain decimals (`12`, `0.5`, `.5`): no sign, no exponent, unlike vde's `strtod`.

use std::fmt;
use std::str::FromStr;

use crate::rng::Rng;

/// The accepted form, quoted in every [`ValueError`].
pub const VALUE_FORM: &str = "[LR|RL]VALUE[+DELTA][K|M|G][U|N][[NODE]]";

/// How a value varies around its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Distribution {
    /// Uniform in `[base - delta, base + delta]` (`U`).
    #[default]
    Uniform,
    /// Gaussian, mean `base`, σ = `delta / 3` (`N`).
    Normal,
}

/// Which direction(s) a setting applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// No prefix: both directions.
    Both,
    /// `LR`: frames from the left side to the right side.
    LeftToRight,
    /// `RL`: frames from the right side to the left side.
    RightToLeft,
}

/// A possibly random parameter value. Zero (the default) disables a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Value {
    pub base: f64,
    pub delta: f64,
    pub dist: Distribution,
}

impl Value {
    /// A fixed value (no variation).
    pub const fn fixed(base: f64) -> Self {
        Value {
            base,
            delta: 0.0,
            dist: Distribution::Uniform,
        }
    }

    /// `base ± delta` uniformly.
    pub const fn uniform(base: f64, delta: f64) -> Self {
        Value {
            base,
            delta,
            dist: Distribution::Uniform,
        }
    }

    /// Gaussian around `base`, σ = `delta / 3`.
    pub const fn normal(base: f64, delta: f64) -> Self {
        Value {
            base,
            delta,
            dist: Distribution::Normal,
        }
    }

    /// True when the value can never be positive: the parameter is off.
    pub fn is_off(&self) -> bool {
        let top = self.base + self.delta.abs();
        top.is_nan() || top <= 0.0
    }

    /// One draw. Never negative (clamped at 0), never NaN or infinite (0 instead).
    /// Draws nothing from `rng` when `delta` is 0.
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        let v = if self.delta == 0.0 {
            self.base
        } else {
            match self.dist {
                Distribution::Uniform => self.base + self.delta * (2.0 * rng.next_f64() - 1.0),
                Distribution::Normal => self.base + self.delta / 3.0 * rng.gaussian(),
            }
        };
        if v.is_finite() && v > 0.0 {
            v
        } else {
            0.0
        }
    }
}

/// `BASE+DELTA` then `U` or `N`, e.g. `10+2N`, `131072+0U`; parses back to the same value.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match self.dist {
            Distribution::Uniform => 'U',
            Distribution::Normal => 'N',
        };
        write!(f, "{}+{}{}", self.base, self.delta, d)
    }
}

/// A value text that does not match [`VALUE_FORM`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {text:?}: {reason}; expected {form}", form = VALUE_FORM)]
pub struct ValueError {
    pub text: String,
    pub reason: &'static str,
}

/// Parses `VALUE[+DELTA][K|M|G][U|N]` (no direction, no node).
impl FromStr for Value {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match parse_value(s)? {
            (Direction::Both, v, None) => Ok(v),
            _ => Err(ValueError {
                text: s.to_string(),
                reason: "direction or node not allowed here",
            }),
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// A plain decimal at the start of `s`: digits, optionally `.` and digits, at least one digit.
fn take_number(s: &str) -> Option<(f64, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut digits = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return None;
    }
    let n: f64 = s[..i].parse().ok()?;
    Some((n, &s[i..]))
}

/// Parses one wirefilter value: `[LR|RL]VALUE[+DELTA][K|M|G][U|N][[NODE]]`.
///
/// ```
/// use filo_wirefilter::{parse_value, Direction, Value};
/// assert_eq!(parse_value("LR20+5N[1]").unwrap(), (Direction::LeftToRight, Value::normal(20.0, 5.0), Some(1)));
/// assert_eq!(parse_value("1K").unwrap(), (Direction::Both, Value::fixed(1024.0), None));
/// ```
pub fn parse_value(text: &str) -> Result<(Direction, Value, Option<usize>), ValueError> {
    let err = |reason: &'static str| ValueError {
        text: text.to_string(),
        reason,
    };
    let mut s = text.trim();
    let mut dir = Direction::Both;
    if let Some(rest) = strip_prefix_ci(s, "LR") {
        dir = Direction::LeftToRight;
        s = rest;
    } else if let Some(rest) = strip_prefix_ci(s, "RL") {
        dir = Direction::RightToLeft;
        s = rest;
    }
    let mut node = None;
    if let Some(open) = s.find('[') {
        let inner = s[open + 1..]
            .strip_suffix(']')
            .ok_or_else(|| err("[NODE] must close the text with ']'"))?
            .trim();
        if inner.is_empty() || !inner.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err("NODE must be a non-negative integer"));
        }
        node = Some(
            inner
                .parse::<usize>()
                .map_err(|_| err("NODE is too large"))?,
        );
        s = &s[..open];
    }
    let (base, rest) = take_number(s).ok_or_else(|| err("VALUE must be a decimal number"))?;
    let (delta, rest) = match rest.strip_prefix('+') {
        Some(r) => take_number(r).ok_or_else(|| err("DELTA after '+' must be a decimal number"))?,
        None => (0.0, rest),
    };
    let (mult, rest) = match rest.as_bytes().first() {
        Some(b'K' | b'k') => (1024.0, &rest[1..]),
        Some(b'M' | b'm') => (1_048_576.0, &rest[1..]),
        Some(b'G' | b'g') => (1_073_741_824.0, &rest[1..]),
        _ => (1.0, rest),
    };
    let (dist, rest) = match rest.as_bytes().first() {
        Some(b'U' | b'u') => (Distribution::Uniform, &rest[1..]),
        Some(b'N' | b'n') => (Distribution::Normal, &rest[1..]),
        _ => (Distribution::Uniform, rest),
    };
    if !rest.is_empty() {
        return Err(err("unexpected characters after the value"));
    }
    let (base, delta) = (base * mult, delta * mult);
    if !base.is_finite() || !delta.is_finite() {
        return Err(err("number too large"));
    }
    Ok((dir, Value { base, delta, dist }, node))
}
