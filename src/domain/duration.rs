//! Durations as people write them in configuration and commands: `90s`,
//! `5m`, `1h30m`, `2d`, `500ms`. Parsed once at the edge into [`Dur`], so the
//! rest of the code never sees a malformed one.

use std::fmt;
use std::str::FromStr;

/// A non-negative span of time with millisecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(i64);

impl Dur {
    pub const ZERO: Dur = Dur(0);

    /// For constants: `s` must not be negative.
    pub const fn from_const_secs(s: i64) -> Dur {
        Dur(s * 1000)
    }

    pub fn from_millis(ms: i64) -> Dur {
        Dur(ms.max(0))
    }

    pub fn from_secs(s: i64) -> Dur {
        Dur::from_millis(s.saturating_mul(1000))
    }

    pub fn from_mins(m: i64) -> Dur {
        Dur::from_secs(m.saturating_mul(60))
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.0)
    }

    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0 as u64)
    }
}

/// Why a duration did not parse; the message is written for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a duration (write it like `30s`, `5m`, `1h30m`, `2d` or `500ms`)")]
pub struct BadDuration {
    pub input: String,
}

impl FromStr for Dur {
    type Err = BadDuration;

    fn from_str(s: &str) -> Result<Dur, BadDuration> {
        let bad = || BadDuration {
            input: s.to_string(),
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(bad());
        }
        let mut total: i64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(bad());
            }
            let value: i64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
            let unit_ms: i64 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = value
                .checked_mul(unit_ms)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        Ok(Dur(total))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{}", ms / size, unit)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_combinations() {
        assert_eq!("500ms".parse::<Dur>().unwrap().millis(), 500);
        assert_eq!("30s".parse::<Dur>().unwrap().millis(), 30_000);
        assert_eq!("5m".parse::<Dur>().unwrap(), Dur::from_mins(5));
        assert_eq!("1h30m".parse::<Dur>().unwrap(), Dur::from_mins(90));
        assert_eq!("2d".parse::<Dur>().unwrap(), Dur::from_mins(2 * 24 * 60));
        assert_eq!(" 0s ".parse::<Dur>().unwrap(), Dur::ZERO);
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "",
            "5",
            "m",
            "5 minutes",
            "5x",
            "-5m",
            "1h-2m",
            "99999999999999999d",
        ] {
            assert!(bad.parse::<Dur>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn displays_compactly_and_round_trips() {
        for text in ["0s", "500ms", "5m", "1h30m", "1d2h", "2m5s"] {
            assert_eq!(text.parse::<Dur>().unwrap().to_string(), text);
        }
    }
}
