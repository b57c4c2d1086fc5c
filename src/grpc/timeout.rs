//! `grpc-timeout`: `1*8DIGIT unit`, unit one of H M S m u n.

use std::time::Duration;

pub fn parse(value: &[u8]) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit[0] {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Encodes a duration in the finest unit that fits in 8 digits.
pub fn format(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    if nanos <= MAX {
        return format!("{nanos}n");
    }
    let micros = d.as_micros();
    if micros <= MAX {
        return format!("{micros}u");
    }
    let millis = d.as_millis();
    if millis <= MAX {
        return format!("{millis}m");
    }
    let secs = d.as_secs() as u128;
    if secs <= MAX {
        return format!("{secs}S");
    }
    let mins = secs / 60;
    if mins <= MAX {
        return format!("{mins}M");
    }
    format!("{}H", (secs / 3600).min(MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse(b"9n"), Some(Duration::from_nanos(9)));
    }

    #[test]
    fn rejects_junk() {
        for bad in [
            &b""[..],
            b"m",
            b"10",
            b"10x",
            b"-1m",
            b"123456789m",
            b"1.5S",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn formats_round_trip() {
        for d in [
            Duration::from_millis(100),
            Duration::from_secs(30),
            Duration::from_secs(86400 * 400),
            Duration::from_nanos(1),
        ] {
            let s = format(d);
            let back = parse(s.as_bytes()).unwrap();
            assert!(back <= d && d - back < Duration::from_secs(3600), "{s}");
        }
    }
}
