//! ISO 8601 text for dates and times, shared by every driver so they all print alike.
//!
//! Dates `YYYY-MM-DD`, times `HH:MM:SS[.ffffff]` (fraction only when non-zero, trailing zeros
//! trimmed), timestamps `YYYY-MM-DDTHH:MM:SS[.ffffff]`, with `Z` when the database stores an
//! instant (PostgreSQL `timestamptz`) or `±HH:MM` when it stores an offset (`timetz`). Years
//! outside 0000–9999 get a sign (`+10000-01-01`, `-0044-03-15`).

use std::fmt::Write;

pub(crate) const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub(crate) fn write_ymd(out: &mut String, y: i64, m: u32, d: u32) {
    let _ = if (0..=9999).contains(&y) {
        write!(out, "{y:04}-{m:02}-{d:02}")
    } else {
        write!(out, "{}{:04}-{m:02}-{d:02}", if y < 0 { '-' } else { '+' }, y.unsigned_abs())
    };
}

/// A date given as days since 1970-01-01.
pub(crate) fn write_date(out: &mut String, days: i64) {
    let (y, m, d) = civil_from_days(days);
    write_ymd(out, y, m, d);
}

/// `HH:MM:SS` plus a trimmed fraction of `micros` (0..1_000_000).
pub(crate) fn write_hms(out: &mut String, h: u32, m: u32, s: u32, micros: u32) {
    let _ = write!(out, "{h:02}:{m:02}:{s:02}");
    write_fraction(out, micros);
}

fn write_fraction(out: &mut String, micros: u32) {
    if micros > 0 {
        let mut digits = format!("{micros:06}");
        while digits.ends_with('0') {
            digits.pop();
        }
        out.push('.');
        out.push_str(&digits);
    }
}

/// A time of day given as microseconds since midnight (24:00:00 is allowed).
pub(crate) fn write_time_micros(out: &mut String, micros: i64) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    write_hms(out, (secs / 3600) as u32, (secs / 60 % 60) as u32, (secs % 60) as u32, frac);
}

/// A local date-time given as microseconds since 1970-01-01T00:00:00.
pub(crate) fn write_timestamp_micros(out: &mut String, micros: i64) {
    let days = micros.div_euclid(MICROS_PER_DAY);
    write_date(out, days);
    out.push('T');
    write_time_micros(out, micros.rem_euclid(MICROS_PER_DAY));
}

/// `Z` for 0, else `+HH:MM` / `-HH:MM` (`:SS` only when the offset has seconds).
pub(crate) fn write_offset(out: &mut String, seconds_east: i32) {
    if seconds_east == 0 {
        out.push('Z');
        return;
    }
    let sign = if seconds_east < 0 { '-' } else { '+' };
    let abs = seconds_east.unsigned_abs();
    let _ = write!(out, "{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60);
    if !abs.is_multiple_of(60) {
        let _ = write!(out, ":{:02}", abs % 60);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut String)) -> String {
        let mut out = String::new();
        f(&mut out);
        out
    }

    #[test]
    fn formats_iso_8601() {
        assert_eq!(s(|o| write_date(o, 0)), "1970-01-01");
        assert_eq!(s(|o| write_date(o, days_from_civil(2024, 2, 29))), "2024-02-29");
        assert_eq!(s(|o| write_ymd(o, -44, 3, 15)), "-0044-03-15");
        assert_eq!(s(|o| write_ymd(o, 12345, 1, 1)), "+12345-01-01");
        assert_eq!(s(|o| write_time_micros(o, 3_661_500_000)), "01:01:01.5");
        assert_eq!(s(|o| write_time_micros(o, 0)), "00:00:00");
        assert_eq!(s(|o| write_timestamp_micros(o, -1)), "1969-12-31T23:59:59.999999");
        assert_eq!(s(|o| write_offset(o, 0)), "Z");
        assert_eq!(s(|o| write_offset(o, -(5 * 3600 + 30 * 60))), "-05:30");
        assert_eq!(s(|o| write_offset(o, 3600 + 7)), "+01:00:07");
    }

    #[test]
    fn calendar_round_trips() {
        for day in -800_000..800_000 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }
}
