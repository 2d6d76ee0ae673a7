//! ISO 8601 text for dates and times, shared by every driver so they all print alike.
//!
//! Dates `YYYY-MM-DD`, times `HH:MM:SS[.ffffff]` (fraction only when non-zero, trailing zeros
//! trimmed), timestamps `YYYY-MM-DDTHH:MM:SS[.ffffff]`, with `Z` when the database stores an
//! instant (PostgreSQL `timestamptz`) or `±HH:MM` when it stores an offset (`timetz`). Years
//! outside 0000–9999 get a sign (`+10000-01-01`, `-0044-03-15`).
//!
//! These run once per temporal cell of every row, so they write digits straight into the
//! row's text buffer (no `fmt` machinery, no temporary strings).

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

/// Appends `value` as at least `width` decimal digits, zero-padded (`width` ≤ 20).
pub(crate) fn push_padded(out: &mut String, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    let mut v = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = at.min(digits.len() - width.min(digits.len()));
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

/// Appends two digits (`value` < 100).
fn push2(out: &mut String, value: u32) {
    out.push(char::from(b'0' + (value / 10 % 10) as u8));
    out.push(char::from(b'0' + (value % 10) as u8));
}

/// Appends a signed integer in decimal.
pub(crate) fn push_int(out: &mut String, value: i64) {
    if value < 0 {
        out.push('-');
    }
    push_padded(out, value.unsigned_abs(), 1);
}

pub(crate) fn write_ymd(out: &mut String, y: i64, m: u32, d: u32) {
    if !(0..=9999).contains(&y) {
        out.push(if y < 0 { '-' } else { '+' });
    }
    push_padded(out, y.unsigned_abs(), 4);
    out.push('-');
    push2(out, m);
    out.push('-');
    push2(out, d);
}

/// A date given as days since 1970-01-01.
pub(crate) fn write_date(out: &mut String, days: i64) {
    let (y, m, d) = civil_from_days(days);
    write_ymd(out, y, m, d);
}

/// `HH:MM:SS` plus a trimmed fraction of `micros` (0..1_000_000).
pub(crate) fn write_hms(out: &mut String, h: u32, m: u32, s: u32, micros: u32) {
    if h >= 100 {
        push_padded(out, u64::from(h), 2);
    } else {
        push2(out, h);
    }
    out.push(':');
    push2(out, m);
    out.push(':');
    push2(out, s);
    write_fraction(out, micros);
}

/// `.ffffff` without trailing zeros, nothing for 0.
pub(crate) fn write_fraction(out: &mut String, micros: u32) {
    if micros > 0 {
        let mut micros = micros;
        let mut width = 6;
        while micros.is_multiple_of(10) {
            micros /= 10;
            width -= 1;
        }
        out.push('.');
        push_padded(out, u64::from(micros), width);
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
    out.push(if seconds_east < 0 { '-' } else { '+' });
    let abs = seconds_east.unsigned_abs();
    push_padded(out, u64::from(abs / 3600), 2);
    out.push(':');
    push2(out, abs / 60 % 60);
    if !abs.is_multiple_of(60) {
        out.push(':');
        push2(out, abs % 60);
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
        assert_eq!(s(|o| write_time_micros(o, 86_400_000_000)), "24:00:00");
        assert_eq!(s(|o| write_time_micros(o, 10_000)), "00:00:00.01");
        assert_eq!(s(|o| write_time_micros(o, 999_999)), "00:00:00.999999");
        assert_eq!(s(|o| write_time_micros(o, 1)), "00:00:00.000001");
        assert_eq!(s(|o| write_ymd(o, 0, 1, 1)), "0000-01-01");
        assert_eq!(s(|o| write_ymd(o, 9999, 12, 31)), "9999-12-31");
        assert_eq!(s(|o| write_ymd(o, -5, 1, 1)), "-0005-01-01");
        assert_eq!(s(|o| push_int(o, i64::MIN)), "-9223372036854775808");
        assert_eq!(s(|o| push_padded(o, u64::MAX, 1)), "18446744073709551615");
        assert_eq!(s(|o| push_padded(o, 7, 4)), "0007");
    }

    /// The hand-written digit writers print what `format!` would, over many values.
    #[test]
    fn digit_writers_match_fmt() {
        for v in (0..2_000_000u64).step_by(997).chain([9, 10, 99, 100, 999_999, 1_000_000]) {
            for width in [1, 2, 4, 6] {
                assert_eq!(s(|o| push_padded(o, v, width)), format!("{v:0width$}"));
            }
            let micros = (v % 1_000_000) as u32;
            let want = if micros == 0 {
                String::new()
            } else {
                format!(".{}", format!("{micros:06}").trim_end_matches('0'))
            };
            assert_eq!(s(|o| write_fraction(o, micros)), want);
        }
        for days in (-1_000_000..3_000_000).step_by(7919) {
            let (y, m, d) = civil_from_days(days);
            let want = if (0..=9999).contains(&y) {
                format!("{y:04}-{m:02}-{d:02}")
            } else {
                format!("{}{:04}-{m:02}-{d:02}", if y < 0 { '-' } else { '+' }, y.unsigned_abs())
            };
            assert_eq!(s(|o| write_date(o, days)), want);
        }
    }

    #[test]
    fn calendar_round_trips() {
        for day in -800_000..800_000 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }
}
