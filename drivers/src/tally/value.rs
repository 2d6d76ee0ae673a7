//! Tally values: typed from the text Tally writes, compared exactly, turned into cells.

use std::cmp::Ordering;

use serde_json::Value as Json;

use crate::{Cell, WireType};

/// A Tally field type (the type names the gate's catalogue uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    String,
    Number,
    Amount,
    Quantity,
    Rate,
    Logical,
    Date,
}

impl Kind {
    pub(super) fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "String" => Kind::String,
            "Number" => Kind::Number,
            "Amount" => Kind::Amount,
            "Quantity" => Kind::Quantity,
            "Rate" => Kind::Rate,
            "Logical" => Kind::Logical,
            "Date" => Kind::Date,
            _ => return None,
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::String => "String",
            Kind::Number => "Number",
            Kind::Amount => "Amount",
            Kind::Quantity => "Quantity",
            Kind::Rate => "Rate",
            Kind::Logical => "Logical",
            Kind::Date => "Date",
        }
    }

    pub(super) fn wire_type(self) -> WireType {
        match self {
            Kind::String => WireType::Text,
            Kind::Number => WireType::Integer,
            Kind::Amount | Kind::Quantity | Kind::Rate => WireType::Decimal,
            Kind::Logical => WireType::Boolean,
            Kind::Date => WireType::Date,
        }
    }
}

/// One typed value of an exported object.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    Null,
    Text(String),
    Int(i64),
    /// A plain decimal: optional `-`, digits, optional `.` and digits.
    Dec(String),
    Bool(bool),
    /// ISO `YYYY-MM-DD`.
    Date(String),
}

impl Val {
    /// Types Tally's text for a field of `kind`; `Err` names what is wrong.
    pub(super) fn from_tally(kind: Kind, raw: Option<String>) -> Result<Val, String> {
        let Some(raw) = raw else { return Ok(Val::Null) };
        let fail =
            || format!("`{}` is not a Tally {} value", raw.chars().take(60).collect::<String>(), kind.name());
        Ok(match kind {
            Kind::String => Val::Text(raw),
            Kind::Number => {
                let dec = decimal(&raw, kind).ok_or_else(fail)?;
                Val::Int(dec.parse().map_err(|_| fail())?)
            }
            Kind::Amount | Kind::Quantity | Kind::Rate => Val::Dec(decimal(&raw, kind).ok_or_else(fail)?),
            Kind::Logical => match raw.trim().to_ascii_lowercase().as_str() {
                "yes" | "true" => Val::Bool(true),
                "no" | "false" => Val::Bool(false),
                _ => return Err(fail()),
            },
            Kind::Date => Val::Date(date(&raw).ok_or_else(fail)?),
        })
    }

    pub(super) fn cell(&self) -> Cell<'_> {
        match self {
            Val::Null => Cell::Null,
            Val::Text(s) | Val::Date(s) => Cell::Text(s),
            Val::Int(i) => Cell::Int(*i),
            Val::Dec(s) => Cell::Decimal(s),
            Val::Bool(b) => Cell::Bool(*b),
        }
    }

    /// Order for `ORDER BY`: NULL first, then by value (text by code point, case-sensitive).
    pub(super) fn order(&self, other: &Val) -> Ordering {
        match (self, other) {
            (Val::Null, Val::Null) => Ordering::Equal,
            (Val::Null, _) => Ordering::Less,
            (_, Val::Null) => Ordering::Greater,
            (Val::Text(a), Val::Text(b)) | (Val::Date(a), Val::Date(b)) => a.cmp(b),
            (Val::Int(a), Val::Int(b)) => a.cmp(b),
            (Val::Dec(a), Val::Dec(b)) => cmp_decimal(a, b),
            (Val::Bool(a), Val::Bool(b)) => a.cmp(b),
            _ => Ordering::Equal,
        }
    }

    /// Compares with a literal of the gate's plan; `None` when either side is NULL or the
    /// literal does not fit the type.
    pub(super) fn compare(&self, literal: &Json) -> Option<Ordering> {
        match (self, literal) {
            (Val::Text(a), Json::String(b)) => Some(a.as_str().cmp(b.as_str())),
            (Val::Int(a), Json::String(b)) if is_decimal(b) => Some(cmp_decimal(&a.to_string(), b)),
            (Val::Dec(a), Json::String(b)) if is_decimal(b) => Some(cmp_decimal(a, b)),
            (Val::Bool(a), Json::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// Tally's number text as a plain decimal.
///
/// Tally writes `-1250.00`, ` 1,250.00 Dr`, `₹ 1,250.00`, forex amounts as
/// `$ 100.00 @ ₹ 82.50/$ = ₹ 8250.00` (the base-currency value after `=` counts), quantities
/// with units (`10 Nos`, `10 Nos = 2 Box`: the first number) and rates per unit (`125.00/Nos`).
/// Thousands separators go, a minus sign or a trailing `Dr` makes the value negative (`Cr` is
/// positive, Tally's XML convention), and `-0` becomes `0`.
pub(super) fn decimal(raw: &str, kind: Kind) -> Option<String> {
    let mut text = raw.trim();
    if kind == Kind::Amount
        && let Some((_, after)) = text.rsplit_once('=')
    {
        text = after.trim();
    }
    if kind == Kind::Rate
        && let Some((before, _)) = text.split_once('/')
    {
        text = before.trim();
    }
    let lower = text.to_ascii_lowercase();
    let debit = lower.ends_with("dr");
    let start = text.find(|c: char| c.is_ascii_digit() || c == '.')?;
    let minus = text[..start].contains('-') || text[..start].contains('(');
    let run: String =
        text[start..].chars().take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.').collect();
    let run = run.trim_end_matches([',', '.']).to_owned();
    let digits: String = run.chars().filter(|c| *c != ',').collect();
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits.as_str(), None),
    };
    if frac.is_some_and(|f| f.contains('.') || f.is_empty()) || (int.is_empty() && frac.is_none()) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && frac.is_none_or(|f| f.bytes().all(|b| b == b'0'));
    let mut out = String::with_capacity(digits.len() + 1);
    if (minus || debit) && !zero {
        out.push('-');
    }
    out.push_str(int);
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    Some(out)
}

fn is_decimal(text: &str) -> bool {
    let body = text.strip_prefix('-').unwrap_or(text);
    let mut dots = 0;
    !body.is_empty()
        && body.bytes().any(|b| b.is_ascii_digit())
        && body.bytes().all(|b| {
            dots += usize::from(b == b'.');
            b.is_ascii_digit() || b == b'.'
        })
        && dots <= 1
}

/// Compares two plain decimals exactly (no floating point).
pub(super) fn cmp_decimal(a: &str, b: &str) -> Ordering {
    fn parts(text: &str) -> (bool, &str, &str) {
        let (neg, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let zero = int.is_empty() && frac.is_empty();
        (neg && !zero, int, frac)
    }
    let (an, ai, af) = parts(a);
    let (bn, bi, bf) = parts(b);
    let magnitude = ai.len().cmp(&bi.len()).then_with(|| ai.cmp(bi)).then_with(|| af.cmp(bf));
    match (an, bn) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
    }
}

/// Tally's date text as ISO `YYYY-MM-DD`: `20240401` (the XML form) or `1-Apr-24`,
/// `01-Apr-2024` (the display form; two-digit years are 2000–2049 below 50, else 1950–1999).
pub(super) fn date(raw: &str) -> Option<String> {
    let text = raw.trim();
    let (year, month, day): (u32, u32, u32) = if text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit()) {
        (text[..4].parse().ok()?, text[4..6].parse().ok()?, text[6..].parse().ok()?)
    } else {
        let mut parts = text.split(['-', ' ', '.', '/']).filter(|p| !p.is_empty());
        let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || d.len() > 2 || !(y.len() == 2 || y.len() == 4) {
            return None;
        }
        const MONTHS: [&str; 12] =
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
        let m = m.to_ascii_lowercase();
        let month = match MONTHS.iter().position(|name| m.starts_with(name) && m.len() <= 9) {
            Some(i) => u32::try_from(i).ok()? + 1,
            None => m.parse().ok()?,
        };
        let y: u32 = y.parse().ok()?;
        let year = match y {
            0..=49 => 2000 + y,
            50..=99 => 1900 + y,
            _ => y,
        };
        (year, month, d.parse().ok()?)
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days).contains(&day) || !(1..=9999).contains(&year) {
        return None;
    }
    Some(format!("{year:04}-{month:02}-{day:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_quantities_and_rates_become_plain_decimals() {
        let cases = [
            ("-1250.00", Kind::Amount, "-1250.00"),
            (" 1,250.00 Dr", Kind::Amount, "-1250.00"),
            ("1,250.00 Cr", Kind::Amount, "1250.00"),
            ("₹ 12,34,567.50", Kind::Amount, "1234567.50"),
            ("$ 100.00 @ ₹ 82.50/$ = ₹ 8250.00", Kind::Amount, "8250.00"),
            ("-$ 100.00 @ ₹ 82.50/$ = -₹ 8250.00", Kind::Amount, "-8250.00"),
            ("0.00", Kind::Amount, "0.00"),
            ("-0.00", Kind::Amount, "0.00"),
            ("10 Nos", Kind::Quantity, "10"),
            ("12.500 kg = 2 Box", Kind::Quantity, "12.500"),
            ("125.00/Nos", Kind::Rate, "125.00"),
            ("007", Kind::Number, "7"),
        ];
        for (raw, kind, want) in cases {
            assert_eq!(decimal(raw, kind).as_deref(), Some(want), "{raw}");
        }
        for bad in ["", "Dr", "abc", "1.2.3", "."] {
            assert_eq!(decimal(bad, Kind::Amount), None, "{bad}");
        }
        assert_eq!(Val::from_tally(Kind::Number, Some("1,234".into())), Ok(Val::Int(1234)));
        assert!(Val::from_tally(Kind::Number, Some("1.5".into())).is_err());
    }

    #[test]
    fn dates_become_iso() {
        assert_eq!(date("20240401").as_deref(), Some("2024-04-01"));
        assert_eq!(date("1-Apr-24").as_deref(), Some("2024-04-01"));
        assert_eq!(date("31-Dec-1999").as_deref(), Some("1999-12-31"));
        assert_eq!(date("29-Feb-2024").as_deref(), Some("2024-02-29"));
        assert_eq!(date("1-Apr-85").as_deref(), Some("1985-04-01"));
        for bad in ["29-Feb-2023", "20241301", "32-Jan-24", "1-Foo-24", "yesterday", "1-Apr"] {
            assert_eq!(date(bad), None, "{bad}");
        }
    }

    #[test]
    fn logicals_and_empty_values() {
        assert_eq!(Val::from_tally(Kind::Logical, Some("Yes".into())), Ok(Val::Bool(true)));
        assert_eq!(Val::from_tally(Kind::Logical, Some(" No ".into())), Ok(Val::Bool(false)));
        assert!(Val::from_tally(Kind::Logical, Some("maybe".into())).is_err());
        assert_eq!(Val::from_tally(Kind::Amount, None), Ok(Val::Null));
    }

    #[test]
    fn decimals_compare_exactly() {
        assert_eq!(cmp_decimal("1000", "999.99"), Ordering::Greater);
        assert_eq!(cmp_decimal("-1250.00", "-1250"), Ordering::Equal);
        assert_eq!(cmp_decimal("-2", "-10"), Ordering::Greater);
        assert_eq!(cmp_decimal("0.05", "0.5"), Ordering::Less);
        assert_eq!(cmp_decimal("0", "-0.0"), Ordering::Equal);
        assert_eq!(cmp_decimal("100000000000000000000.1", "100000000000000000000.01"), Ordering::Greater);
        assert_eq!(Val::Int(5).compare(&Json::String("4.5".into())), Some(Ordering::Greater));
        assert_eq!(Val::Text("abc".into()).compare(&Json::String("ABC".into())), Some(Ordering::Greater));
        assert_eq!(Val::Null.compare(&Json::String("x".into())), None);
    }
}
