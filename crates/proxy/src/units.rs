//! Durations (`300ms`, `2s`, `1m`) and sizes (`64KiB`, `10MiB`, `1GiB`).

use std::time::Duration;

/// Parses `300ms`, `2s`, `1.5s`, `1m`, `1h`; a bare number is seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad =
        || format!("invalid duration {s:?}: expected a number with a unit, e.g. 300ms, 2s, 1m");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    // Below a nanosecond rounds to zero, which is no timeout at all; a
    // negative, infinite or NaN count does not convert.
    let d = Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO);
    if d.is_zero() || secs > 1e9 {
        return Err(format!(
            "invalid duration {s:?}: must be above zero and finite"
        ));
    }
    Ok(d)
}

/// As [`duration`], and `0` (with or without a unit) for "no bound".
pub fn duration_or_zero(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if matches!(t, "0" | "0s" | "0ms" | "0m" | "0h") {
        return Ok(Duration::ZERO);
    }
    duration(s)
}

/// Parses `1000`, `64KiB`, `10MiB`, `1GiB` (also `KB`, `MB`, `GB` as
/// powers of 1000, and `k`, `m`, `g` as powers of 1024).
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("invalid size {s:?}: expected e.g. 65536, 64KiB, 10MiB, 1GiB");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        _ => return Err(bad()),
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_a_duration_only_where_it_means_no_bound() {
        for z in ["0", "0s", " 0ms ", "0m", "0h"] {
            assert_eq!(duration_or_zero(z).unwrap(), Duration::ZERO, "{z}");
            assert!(duration(z).is_err(), "{z}");
        }
        assert_eq!(duration_or_zero("5m").unwrap(), Duration::from_secs(300));
        assert!(duration_or_zero("soon").is_err());
        assert!(duration_or_zero("-1s").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(duration("3").unwrap(), Duration::from_secs(3));
        for bad in [
            "",
            "s",
            "2x",
            "-1s",
            "0s",
            "1e400s",
            "ms300",
            "2 days",
            "0.0000000001s",
        ] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size("64KiB").unwrap(), 65536);
        assert_eq!(size("10MiB").unwrap(), 10 << 20);
        assert_eq!(size("1GiB").unwrap(), 1 << 30);
        assert_eq!(size("1000").unwrap(), 1000);
        assert_eq!(size("2MB").unwrap(), 2_000_000);
        for bad in ["", "MiB", "5XB", "-1", "1e999"] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
    }
}
