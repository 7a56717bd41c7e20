//! Durations as people write them in settings and on the command line:
//! `24h`, `90m`, `30s`, `500ms`, `2d`. One unit per value; `0` alone is
//! zero.

use std::time::Duration;

const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses `text`; the error says what is accepted.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let refused = || {
        format!("`{text}` is not a duration: a whole number and a unit (ms, s, m, h, d), e.g. 24h, or 0")
    };
    let number: u64 = number.parse().map_err(|_| refused())?;
    let (_, millis) = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or_else(refused)?;
    number
        .checked_mul(*millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// `duration` in the largest unit up to hours that states it exactly:
/// `24h`, `90m` (hours read better than days for a time limit).
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis() as u64;
    if millis == 0 {
        return "0".to_owned();
    }
    let (name, size) = UNITS[..4]
        .iter()
        .rev()
        .find(|(_, size)| millis.is_multiple_of(*size))
        .copied()
        .unwrap_or(("ms", 1));
    format!("{}{name}", millis / size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_number_and_one_unit() {
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse(" 1s "), Ok(Duration::from_secs(1)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "24",
            "h",
            "1.5h",
            "-1h",
            "1h30m",
            "3 weeks",
            "99999999999999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(format(Duration::from_secs(86_400)), "24h");
        assert_eq!(format(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(format(Duration::from_secs(3_600 * 25)), "25h");
        assert_eq!(format(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(format(Duration::ZERO), "0");
    }
}
