//! The value syntax `[LR|RL]VALUE[+DELTA][K|M|G][U|N][[NODE]]`.

use filo_wirefilter::{parse_value, Direction, Distribution, Rng, Value, VALUE_FORM};
use proptest::prelude::*;

use Direction::{Both, LeftToRight as LR, RightToLeft as RL};

#[test]
fn good_values() {
    let table: &[(&str, Direction, Value, Option<usize>)] = &[
        ("10", Both, Value::fixed(10.0), None),
        ("  10  ", Both, Value::fixed(10.0), None),
        ("0.5", Both, Value::fixed(0.5), None),
        (".5", Both, Value::fixed(0.5), None),
        ("20+5", Both, Value::uniform(20.0, 5.0), None),
        ("20+5U", Both, Value::uniform(20.0, 5.0), None),
        ("20+6N", Both, Value::normal(20.0, 6.0), None),
        ("20+6n", Both, Value::normal(20.0, 6.0), None),
        ("LR20", LR, Value::fixed(20.0), None),
        ("RL20", RL, Value::fixed(20.0), None),
        ("lr20", LR, Value::fixed(20.0), None),
        ("LR20+5N[1]", LR, Value::normal(20.0, 5.0), Some(1)),
        ("10[0]", Both, Value::fixed(10.0), Some(0)),
        ("10[ 3 ]", Both, Value::fixed(10.0), Some(3)),
        ("1K", Both, Value::fixed(1024.0), None),
        ("1k", Both, Value::fixed(1024.0), None),
        ("2M", Both, Value::fixed(2.0 * 1_048_576.0), None),
        ("1G", Both, Value::fixed(1_073_741_824.0), None),
        ("1+1K", Both, Value::uniform(1024.0, 1024.0), None),
        (
            "RL100+10KN[2]",
            RL,
            Value::normal(102_400.0, 10_240.0),
            Some(2),
        ),
        ("1.5MU", Both, Value::fixed(1.5 * 1_048_576.0), None),
    ];
    for (text, dir, value, node) in table {
        assert_eq!(
            parse_value(text),
            Ok((*dir, *value, *node)),
            "parsing {text:?}"
        );
    }
}

#[test]
fn bad_values() {
    for text in [
        "",
        " ",
        "LR",
        "RL",
        "abc",
        "-5",
        "+5",
        "10+",
        "10+x",
        "10X",
        "10KK",
        "10UN",
        "10 20",
        "10[",
        "10[x]",
        "10[-1]",
        "10[]",
        "10[1]x",
        "1e5",
        "LRRL5",
        "10+-1",
        "..5",
        "5.5.5",
        "1.",
        "inf",
        "nan",
        "10[99999999999999999999999]",
    ] {
        // "1." is accepted by strtod; filo too (digits then '.').
        if text == "1." {
            assert!(parse_value(text).is_ok());
            continue;
        }
        let err = parse_value(text).expect_err(text);
        let msg = err.to_string();
        assert!(msg.contains(VALUE_FORM), "{msg}");
        assert!(msg.contains(&format!("{text:?}")), "{msg}");
    }
}

#[test]
fn display_round_trips() {
    assert_eq!(Value::normal(10.0, 2.0).to_string(), "10+2N");
    assert_eq!(Value::fixed(131072.0).to_string(), "131072+0U");
    assert_eq!("10+2N".parse::<Value>(), Ok(Value::normal(10.0, 2.0)));
    assert!("LR10".parse::<Value>().is_err());
}

#[test]
fn sampling_respects_bounds_and_clamps() {
    let mut rng = Rng::new(7);
    let u = Value::uniform(20.0, 5.0);
    for _ in 0..10_000 {
        let x = u.sample(&mut rng);
        assert!((15.0..=25.0).contains(&x));
    }
    let n = Value::normal(1.0, 30.0);
    assert!((0..10_000).all(|_| n.sample(&mut rng) >= 0.0));
    assert_eq!(Value::fixed(-3.0).sample(&mut rng), 0.0);
    assert!(Value::default().is_off());
    assert_eq!(Value::default().dist, Distribution::Uniform);
}

proptest! {
    #[test]
    fn round_trip(base in 0u32..10_000_000, bfrac in 0u32..1000, delta in 0u32..100_000,
                  normal in any::<bool>()) {
        let b = f64::from(base) + f64::from(bfrac) / 1000.0;
        let v = if normal { Value::normal(b, f64::from(delta)) } else { Value::uniform(b, f64::from(delta)) };
        let text = v.to_string();
        prop_assert_eq!(text.parse::<Value>(), Ok(v));
        prop_assert_eq!(parse_value(&format!("LR{text}[3]")), Ok((Direction::LeftToRight, v, Some(3))));
    }

    #[test]
    fn never_panics(text in ".{0,40}") {
        let _ = parse_value(&text);
    }
}
