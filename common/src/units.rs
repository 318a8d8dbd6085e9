//! Sizes and durations as pipelines write them: `"1MiB"`, `"500ms"`.

/// `1048576`, `"512KiB"`, `"10MiB"`, `"1MB"`, `"1.5GiB"`: a number of
/// bytes (saturating at `usize::MAX`).
pub fn size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, unit) = number_and_unit(s);
    let n: f64 = num.parse().map_err(|_| format!("invalid size `{s}`"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1048576.0,
        "g" | "gb" => 1e9,
        "gib" => 1073741824.0,
        other => {
            return Err(format!(
                "invalid size unit `{other}` in `{s}` (write e.g. 10MiB)"
            ))
        }
    };
    Ok((n * mult) as usize)
}

/// `"250ms"`, `"1s"`, `"1.5s"`, `"2m"`, `"1h"`, `"1d"` (also `us`, `ns`):
/// nanoseconds (saturating at `u64::MAX`).
pub fn duration_ns(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = number_and_unit(s);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{s}` (write e.g. 1s or 500ms)"))?;
    let mult = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        "d" => 86_400e9,
        other => {
            return Err(format!(
                "invalid duration unit `{other}` in `{s}` (write e.g. 1s or 500ms)"
            ))
        }
    };
    Ok((n * mult) as u64)
}

/// `"1.5MiB"` -> (`"1.5"`, `"MiB"`): the leading digits and dots, and the
/// rest.
fn number_and_unit(s: &str) -> (&str, &str) {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    s.split_at(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size(" 512 KiB "), Ok(512 << 10));
        assert_eq!(size("1000"), Ok(1000));
        assert!(size("1 parsec").is_err());
        assert!(size("").is_err());
        assert_eq!(duration_ns("1s"), Ok(1_000_000_000));
        assert_eq!(duration_ns("250ms"), Ok(250_000_000));
        assert_eq!(duration_ns("1.5m"), Ok(90_000_000_000));
        assert!(duration_ns("1").is_err(), "a unit is required");
        assert!(duration_ns("1 fortnight").is_err());
        // Too large: saturates, no panic.
        assert_eq!(duration_ns("99999999999999999999d"), Ok(u64::MAX));
    }
}
