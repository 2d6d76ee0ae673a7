//! Number, size, duration and time formatting shared by every section.

/// `1284` → `1,284`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in decimal units, one decimal above 1 kB: `0 B`, `999 B`, `38.2 MB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A command's duration: `18 ms`, `1.2 s`, `2 min 5 s`.
pub fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let secs = ms / 1000;
        format!("{} min {} s", secs / 60, secs % 60)
    }
}

/// A latency: `0.4 ms`, `84 ms`, `1.2 s`.
pub fn latency_ms(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        "–".to_owned()
    } else if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

/// An uptime: `42 s`, `5 min`, `3 h 12 min`, `3 d 4 h`.
pub fn uptime(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min")
    } else {
        format!("{secs} s")
    }
}

/// `1 command`, `2 commands`.
pub fn count(n: u64, singular: &str, plural: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { singular } else { plural })
}

/// The time of day of an RFC 3339 timestamp (`2026-12-02T12:04:31.5+01:00` → `12:04:31`);
/// the text itself when it is not one.
pub fn time_of_day(rfc3339: &str) -> String {
    rfc3339.get(11..19).filter(|t| t.as_bytes().get(2) == Some(&b':')).unwrap_or(rfc3339).to_owned()
}

/// The date of an RFC 3339 timestamp (`2026-12-02`), when it has one.
pub fn date_of(rfc3339: &str) -> Option<&str> {
    let date = rfc3339.get(..10)?;
    let b = date.as_bytes();
    (b[4] == b'-' && b[7] == b'-' && date.bytes().filter(u8::is_ascii_digit).count() == 8).then_some(date)
}

/// Cuts `text` to at most `max` characters, ending with `…` when cut.
pub fn ellipsize(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1284), "1,284");
        assert_eq!(thousands(50_000), "50,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn bytes_use_decimal_units_with_one_decimal() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1000), "1.0 kB");
        assert_eq!(bytes(38_200_000), "38.2 MB");
        assert_eq!(bytes(999_960), "1.0 MB");
        assert_eq!(bytes(5_000_000_000), "5.0 GB");
    }

    #[test]
    fn durations_latencies_and_uptimes_read_naturally() {
        assert_eq!(duration_ms(18), "18 ms");
        assert_eq!(duration_ms(1200), "1.2 s");
        assert_eq!(duration_ms(125_000), "2 min 5 s");
        assert_eq!(latency_ms(0.42), "0.4 ms");
        assert_eq!(latency_ms(84.2), "84 ms");
        assert_eq!(latency_ms(1500.0), "1.5 s");
        assert_eq!(latency_ms(f64::NAN), "–");
        assert_eq!(uptime(42), "42 s");
        assert_eq!(uptime(300), "5 min");
        assert_eq!(uptime(3 * 3600 + 12 * 60), "3 h 12 min");
        assert_eq!(uptime(3 * 86_400 + 4 * 3600 + 59), "3 d 4 h");
        assert_eq!(count(1, "command", "commands"), "1 command");
        assert_eq!(count(1284, "command", "commands"), "1,284 commands");
    }

    #[test]
    fn timestamps_and_truncation() {
        assert_eq!(time_of_day("2026-12-02T12:04:31.512+01:00"), "12:04:31");
        assert_eq!(time_of_day("garbage"), "garbage");
        assert_eq!(date_of("2026-12-02T12:04:31Z"), Some("2026-12-02"));
        assert_eq!(date_of("yesterday"), None);
        assert_eq!(ellipsize("console.acme.example", 10), "console.a…");
        assert_eq!(ellipsize("short", 10), "short");
    }
}
