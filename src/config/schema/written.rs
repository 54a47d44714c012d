//! Config values printed back the way a user writes them.

use std::fmt;
use std::time::Duration;

/// A duration in the largest unit that holds it exactly (`365d`, `90m`,
/// `1500ms`), which reads back as the same value; one day stays `24h`, as
/// people write it. humantime's own format
/// splits on its calendar (a year of 365.25 days), so `365d` would come
/// out as `11months 30days 3h 50m 24s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsWritten(pub Duration);

impl fmt::Display for AsWritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u128); 7] = [
            ("d", 86_400_000_000_000),
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ];
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        let (unit, size) = UNITS
            .into_iter()
            .filter(|(unit, size)| *unit != "d" || nanos > *size)
            .find(|(_, size)| nanos.is_multiple_of(*size))
            .expect("every duration is a whole number of nanoseconds");
        write!(f, "{}{unit}", nanos / size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_duration_is_printed_in_its_largest_exact_unit() {
        let cases = [
            ("365d", "365d"),
            ("1y", "8766h"),
            ("2w", "14d"),
            ("24h", "24h"),
            ("48h", "2d"),
            ("1h 30m", "90m"),
            ("90s", "90s"),
            ("1.5s", "1500ms"),
            ("250ms", "250ms"),
            ("3us", "3us"),
            ("0s", "0s"),
        ];
        for (written, expected) in cases {
            let parsed = humantime::parse_duration(written).unwrap();
            let shown = AsWritten(parsed).to_string();
            assert_eq!(shown, expected, "{written}");
            assert_eq!(humantime::parse_duration(&shown).unwrap(), parsed);
        }
    }
}
