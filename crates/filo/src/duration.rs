//! Durations and counts from the command line, range-checked once for every command: a
//! `Duration` built from a user's number can neither panic (`Duration::from_secs_f64` on
//! 1e30, `Instant + Duration` past the clock's end) nor wait for years.

use std::time::Duration;

/// The longest wait any option accepts: 1,000,000 s (11.5 days).
pub const MAX_SECS: f64 = 1e6;

/// A clap value parser: seconds (decimals allowed), more than 0 and at most [`MAX_SECS`].
pub fn seconds(text: &str) -> Result<Duration, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v <= MAX_SECS) {
        return Err(format!(
            "{text} is out of range: expected more than 0 and at most {MAX_SECS} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_negative_and_odd_values_are_refused() {
        for bad in [
            "1e30",
            "1e19",
            "18446744073709551615",
            "-1",
            "0",
            "nan",
            "inf",
            "x",
            "",
        ] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("1000000"), Ok(Duration::from_secs(1_000_000)));
    }
}
