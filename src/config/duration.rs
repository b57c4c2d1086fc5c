//! Durations as people write them: `250ms`, `5s`, `1.5s`, `1m30s`, `1h`.

use std::time::Duration;

const UNITS: [(&str, u128); 6] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
];
const HOUR_NANOS: u128 = 3_600_000_000_000;

/// A duration as the config would write it: `5m`, `1h30m`, `20s`,
/// `250ms`, `1.5s`.
pub fn display(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos.is_multiple_of(1_000_000_000) {
        let secs = nanos / 1_000_000_000;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let mut out = String::new();
        for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
            if n > 0 {
                out += &format!("{n}{unit}");
            }
        }
        return out;
    }
    if nanos >= 1_000_000_000 {
        return format!("{}s", round3(d.as_secs_f64()));
    }
    if nanos >= 1_000_000 {
        return format!("{}ms", round3(nanos as f64 / 1e6));
    }
    if nanos >= 1_000 {
        return format!("{}us", round3(nanos as f64 / 1e3));
    }
    format!("{nanos}ns")
}

/// At most three decimals, without trailing zeros.
fn round3(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Parses a duration; the error is a sentence saying what to write instead.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a duration is empty: write a number with a unit, like 5s or 250ms".into());
    }
    if text.starts_with('-') {
        return Err(format!("{text:?} is negative: durations are 0 or more"));
    }
    if text.parse::<f64>().is_ok() {
        return Err(format!(
            "{text:?} has no unit: write {text}s for seconds or {text}ms for milliseconds"
        ));
    }
    let mut nanos: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (amount, after) = number(rest).ok_or_else(|| bad(text))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let scale = unit_nanos(&after[..unit_len]).ok_or_else(|| bad(text))?;
        nanos = nanos
            .checked_add(amount.nanos(scale).ok_or_else(|| too_long(text))?)
            .ok_or_else(|| too_long(text))?;
        rest = &after[unit_len..];
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long(text))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

fn bad(text: &str) -> String {
    format!(
        "{text:?} is not a duration: write a number with a unit (h, m, s, ms, us), \
         like 30s, 250ms, 1.5s or 1m30s"
    )
}

fn too_long(text: &str) -> String {
    format!("{text:?} is too long a duration")
}

fn unit_nanos(unit: &str) -> Option<u128> {
    if unit == "h" {
        return Some(HOUR_NANOS);
    }
    UNITS.iter().find(|(u, _)| *u == unit).map(|(_, n)| *n)
}

/// `12.345` as integer part, fraction digits.
struct Amount<'a> {
    whole: u128,
    fraction: &'a str,
}

impl Amount<'_> {
    fn nanos(&self, scale: u128) -> Option<u128> {
        let mut total = self.whole.checked_mul(scale)?;
        let mut place = scale;
        for digit in self.fraction.bytes() {
            place /= 10;
            total = total.checked_add(u128::from(digit - b'0') * place)?;
        }
        Some(total)
    }
}

fn number(text: &str) -> Option<(Amount<'_>, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (whole, rest) = text.split_at(digits);
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(after) => {
            let n = after.bytes().take_while(u8::is_ascii_digit).count();
            after.split_at(n)
        }
        None => ("", rest),
    };
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let whole = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    Some((Amount { whole, fraction }, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse("10ns"), Ok(Duration::from_nanos(10)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn fractions_and_compounds() {
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0.25ms"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h2m3s"), Ok(Duration::from_secs(3723)));
    }

    #[test]
    fn a_bare_number_asks_for_a_unit() {
        let err = parse("30").unwrap_err();
        assert!(err.contains("no unit") && err.contains("30s"), "{err}");
        assert!(parse("1.5").unwrap_err().contains("no unit"));
    }

    #[test]
    fn nonsense() {
        for text in [
            "",
            "s",
            "5 s",
            "5sec",
            "five seconds",
            "5s5",
            "1..5s",
            "-1s",
            "1d",
        ] {
            assert!(parse(text).is_err(), "{text:?} parsed");
        }
        assert!(parse("999999999999999999999999h").is_err());
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn durations_display_as_written() {
        let cases = [
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(20), "20s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_micros(500), "500us"),
            (Duration::from_nanos(294_670_000), "294.67ms"),
            (Duration::ZERO, "0s"),
        ];
        for (d, text) in cases {
            assert_eq!(display(d), text);
            assert_eq!(parse(text).unwrap(), d, "{text} parses back");
        }
    }
}
