//! PostgreSQL binary values → [`Cell`]s, and JSON parameters → text-format parameters.
//!
//! Results use the binary format (`query_raw`), decoded here without intermediate values:
//! text, bytea and json cells borrow the row buffer; numeric, temporal, uuid, interval, inet
//! and array values are formatted into the row's scratch text.

use std::error::Error;
use std::fmt::Write;

use postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};

use crate::rowbuf::Filler;
use crate::temporal::{
    MICROS_PER_DAY, push_int, push_padded, write_date, write_fraction, write_offset, write_time_micros,
    write_timestamp_micros,
};
use crate::{Cell, DriverError, WireType};

/// Days from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * MICROS_PER_DAY;

/// A column value as raw bytes, whatever its type.
pub(crate) struct Raw<'a>(pub(crate) Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A JSON parameter sent in text format, so the server parses it as whatever type it inferred
/// for the placeholder (numeric, date, uuid...) with no precision lost on the way.
#[derive(Debug)]
pub(crate) struct Param<'a>(pub(crate) &'a serde_json::Value);

impl Param<'_> {
    /// Rejects values no driver binds (arrays, objects, integers beyond i64).
    pub(crate) fn check(&self, index: usize) -> Result<(), DriverError> {
        use serde_json::Value;
        let what = match self.0 {
            Value::Array(_) => "arrays are not supported",
            Value::Object(_) => "objects are not supported",
            Value::Number(n) if n.is_u64() && n.as_i64().is_none() => {
                "integer out of range for a 64-bit signed integer"
            }
            _ => return Ok(()),
        };
        Err(DriverError::Bind(format!("parameter {index}: {what}")))
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self, _: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        use serde_json::Value;
        match self.0 {
            Value::Null => return Ok(IsNull::Yes),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Value::String(s) => out.extend_from_slice(s.as_bytes()),
            Value::Array(_) | Value::Object(_) => return Err("arrays and objects are not supported".into()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> postgres::types::Format {
        postgres::types::Format::Text
    }

    to_sql_checked!();
}

/// The wire type of a result column.
pub(crate) fn wire_type(ty: &Type) -> WireType {
    match *ty {
        Type::BOOL => WireType::Boolean,
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => WireType::Integer,
        Type::NUMERIC | Type::MONEY => WireType::Decimal,
        Type::FLOAT4 | Type::FLOAT8 => WireType::Float,
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::CHAR
        | Type::UNKNOWN
        | Type::XML
        | Type::INET
        | Type::CIDR
        | Type::MACADDR
        | Type::INTERVAL => WireType::Text,
        Type::BYTEA => WireType::Bytes,
        Type::DATE => WireType::Date,
        Type::TIME | Type::TIMETZ => WireType::Time,
        Type::TIMESTAMP => WireType::Timestamp,
        Type::TIMESTAMPTZ => WireType::TimestampTz,
        Type::UUID => WireType::Uuid,
        Type::JSON | Type::JSONB => WireType::Json,
        _ => match ty.kind() {
            Kind::Enum(_) => WireType::Text,
            Kind::Domain(inner) => wire_type(inner),
            Kind::Array(_) => WireType::Json,
            _ if ty.name() == "citext" => WireType::Text,
            _ => WireType::Unknown,
        },
    }
}

fn be<const N: usize>(raw: &[u8], at: usize) -> Result<[u8; N], DriverError> {
    raw.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| DriverError::Query("malformed value from server".into()))
}

fn i16_at(raw: &[u8], at: usize) -> Result<i16, DriverError> {
    be::<2>(raw, at).map(i16::from_be_bytes)
}
fn i32_at(raw: &[u8], at: usize) -> Result<i32, DriverError> {
    be::<4>(raw, at).map(i32::from_be_bytes)
}
fn i64_at(raw: &[u8], at: usize) -> Result<i64, DriverError> {
    be::<8>(raw, at).map(i64::from_be_bytes)
}

/// Pushes the cell of one binary value.
pub(crate) fn push_cell<'r>(
    f: &mut Filler<'_, 'r>,
    ty: &Type,
    raw: Option<&'r [u8]>,
) -> Result<(), DriverError> {
    let Some(raw) = raw else {
        f.cell(Cell::Null);
        return Ok(());
    };
    match *ty {
        Type::BOOL => f.cell(Cell::Bool(raw.first().is_some_and(|b| *b != 0))),
        Type::INT2 => f.cell(Cell::Int(i16_at(raw, 0)?.into())),
        Type::INT4 => f.cell(Cell::Int(i32_at(raw, 0)?.into())),
        Type::OID => f.cell(Cell::Int(u32::from_be_bytes(be::<4>(raw, 0)?).into())),
        Type::INT8 => f.cell(Cell::Int(i64_at(raw, 0)?)),
        Type::FLOAT4 => f.cell(Cell::Float(f32::from_be_bytes(be::<4>(raw, 0)?).into())),
        Type::FLOAT8 => f.cell(Cell::Float(f64::from_be_bytes(be::<8>(raw, 0)?))),
        Type::BYTEA => f.cell(Cell::Bytes(raw)),
        Type::JSONB => text_cell(f, raw.get(1..).unwrap_or_default()),
        Type::NUMERIC => f.try_decimal_with(|s| write_numeric(s, raw))?,
        Type::MONEY => {
            let cents = i64_at(raw, 0)?;
            f.decimal_with(|s| {
                if cents < 0 {
                    s.push('-');
                }
                push_padded(s, (cents / 100).unsigned_abs(), 1);
                s.push('.');
                push_padded(s, (cents % 100).unsigned_abs(), 2);
            });
        }
        Type::DATE
        | Type::TIME
        | Type::TIMETZ
        | Type::TIMESTAMP
        | Type::TIMESTAMPTZ
        | Type::UUID
        | Type::INTERVAL
        | Type::INET
        | Type::CIDR
        | Type::MACADDR => f.try_text_with(|s| write_formatted(s, ty, raw))?,
        _ => match ty.kind() {
            Kind::Domain(inner) => return push_cell(f, inner, Some(raw)),
            Kind::Array(element) => f.try_text_with(|s| write_array(s, element, raw))?,
            // text, varchar, bpchar, name, json, xml, enum labels, citext...: UTF-8 as sent.
            _ => text_cell(f, raw),
        },
    }
    Ok(())
}

fn text_cell<'r>(f: &mut Filler<'_, 'r>, raw: &'r [u8]) {
    match std::str::from_utf8(raw) {
        Ok(text) => f.cell(Cell::Text(text)),
        Err(_) => f.cell(Cell::Bytes(raw)),
    }
}

/// Text of temporal, uuid, interval and network values.
fn write_formatted(out: &mut String, ty: &Type, raw: &[u8]) -> Result<(), DriverError> {
    match *ty {
        Type::DATE => match i32_at(raw, 0)? {
            i32::MAX => out.push_str("infinity"),
            i32::MIN => out.push_str("-infinity"),
            days => write_date(out, i64::from(days) + PG_EPOCH_DAYS),
        },
        Type::TIME => write_time_micros(out, i64_at(raw, 0)?),
        Type::TIMETZ => {
            write_time_micros(out, i64_at(raw, 0)?);
            // PostgreSQL sends seconds *west* of UTC.
            write_offset(out, -i32_at(raw, 8)?);
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => match i64_at(raw, 0)? {
            i64::MAX => out.push_str("infinity"),
            i64::MIN => out.push_str("-infinity"),
            micros => {
                write_timestamp_micros(out, micros.saturating_add(PG_EPOCH_MICROS));
                if *ty == Type::TIMESTAMPTZ {
                    out.push('Z');
                }
            }
        },
        Type::UUID => {
            let b: [u8; 16] = be::<16>(raw, 0)?;
            for (i, byte) in b.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    out.push('-');
                }
                push_hex(out, *byte);
            }
        }
        Type::INTERVAL => write_interval(out, i64_at(raw, 0)?, i32_at(raw, 8)?, i32_at(raw, 12)?),
        Type::INET | Type::CIDR => {
            let (family, bits, len) =
                (raw.first().copied(), raw.get(1).copied().unwrap_or(0), raw.get(3).copied().unwrap_or(0));
            let addr = raw.get(4..4 + usize::from(len)).unwrap_or_default();
            if family == Some(2) && addr.len() == 4 {
                let _ = write!(out, "{}", std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]));
                if bits != 32 || *ty == Type::CIDR {
                    let _ = write!(out, "/{bits}");
                }
            } else if let Ok(octets) = <[u8; 16]>::try_from(addr) {
                let _ = write!(out, "{}", std::net::Ipv6Addr::from(octets));
                if bits != 128 || *ty == Type::CIDR {
                    let _ = write!(out, "/{bits}");
                }
            }
        }
        Type::MACADDR => {
            for (i, byte) in raw.iter().enumerate() {
                if i > 0 {
                    out.push(':');
                }
                push_hex(out, *byte);
            }
        }
        _ => {}
    }
    Ok(())
}

/// ISO 8601 duration with PostgreSQL's per-field signs (`iso_8601` interval style).
fn write_interval(out: &mut String, micros: i64, days: i32, months: i32) {
    out.push('P');
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        push_int(out, i64::from(years));
        out.push('Y');
    }
    if months != 0 {
        push_int(out, i64::from(months));
        out.push('M');
    }
    if days != 0 {
        push_int(out, i64::from(days));
        out.push('D');
    }
    if micros != 0 {
        out.push('T');
        let (h, rest) = (micros / 3_600_000_000, micros % 3_600_000_000);
        let (m, rest) = (rest / 60_000_000, rest % 60_000_000);
        if h != 0 {
            push_int(out, h);
            out.push('H');
        }
        if m != 0 {
            push_int(out, m);
            out.push('M');
        }
        if rest != 0 {
            let (s, frac) = (rest / 1_000_000, (rest % 1_000_000).unsigned_abs());
            if rest < 0 && s == 0 {
                out.push('-');
            }
            push_int(out, s);
            write_fraction(out, frac as u32);
            out.push('S');
        }
    } else if years == 0 && months == 0 && days == 0 {
        out.push_str("T0S");
    }
}

/// Exact text of a binary NUMERIC: base-10000 digit groups, `dscale` fraction digits.
pub(crate) fn write_numeric(out: &mut String, raw: &[u8]) -> Result<(), DriverError> {
    let ndigits = i16_at(raw, 0)?.max(0) as usize;
    let weight = i64::from(i16_at(raw, 2)?);
    let sign = u16::from_be_bytes(be::<2>(raw, 4)?);
    let dscale = u16::from_be_bytes(be::<2>(raw, 6)?) as usize;
    match sign {
        0xC000 => {
            out.push_str("NaN");
            return Ok(());
        }
        0xD000 => {
            out.push_str("Infinity");
            return Ok(());
        }
        0xF000 => {
            out.push_str("-Infinity");
            return Ok(());
        }
        _ => {}
    }
    // Base-10000 digit `i` (0 = the most significant group; beyond the sent ones: 0).
    let digit = |i: i64| -> Result<u64, DriverError> {
        if i < 0 || i >= ndigits as i64 {
            return Ok(0);
        }
        Ok(i16_at(raw, 8 + 2 * i as usize)?.clamp(0, 9999) as u64)
    };
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            push_padded(out, digit(i)?, if i == 0 { 1 } else { 4 });
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut left = dscale;
        let mut i = weight + 1;
        while left > 0 {
            let group = digit(i)?;
            let take = left.min(4);
            // The first `take` of the group's four digits.
            let mut rest = group;
            for _ in take..4 {
                rest /= 10;
            }
            push_padded(out, rest, take);
            left -= take;
            i += 1;
        }
    }
    Ok(())
}

/// Two lower-case hex digits.
fn push_hex(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 15)]));
}

/// A binary array as JSON text: nested arrays per dimension, elements as their cells' JSON.
fn write_array(out: &mut String, element: &Type, raw: &[u8]) -> Result<(), DriverError> {
    let ndim = i32_at(raw, 0)?.max(0) as usize;
    let mut dims = Vec::with_capacity(ndim);
    for d in 0..ndim {
        dims.push(i32_at(raw, 12 + 8 * d)?.max(0) as usize);
    }
    let mut at = 12 + 8 * ndim;
    if ndim == 0 {
        out.push_str("[]");
        return Ok(());
    }
    fn level(
        out: &mut String,
        element: &Type,
        raw: &[u8],
        at: &mut usize,
        dims: &[usize],
    ) -> Result<(), DriverError> {
        out.push('[');
        for i in 0..dims[0] {
            if i > 0 {
                out.push(',');
            }
            if dims.len() > 1 {
                level(out, element, raw, at, &dims[1..])?;
                continue;
            }
            let len = i32_at(raw, *at)?;
            *at += 4;
            let value = if len < 0 {
                None
            } else {
                let v = raw
                    .get(*at..*at + len as usize)
                    .ok_or_else(|| DriverError::Query("malformed array".into()))?;
                *at += len as usize;
                Some(v)
            };
            let mut buf = crate::rowbuf::RowBuf::default();
            let mut json = JsonOut(out);
            buf.emit(&mut json, |f| push_cell(f, element, value))?;
        }
        out.push(']');
        Ok(())
    }
    level(out, element, raw, &mut at, &dims)
}

/// Appends one single-cell row's JSON (used for array elements).
struct JsonOut<'o>(&'o mut String);

impl crate::RowSink for JsonOut<'_> {
    fn columns(&mut self, _: &[crate::ColumnMeta]) -> Result<(), crate::SinkError> {
        Ok(())
    }
    fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), crate::SinkError> {
        let json = serde_json::to_string(&cells[0]).map_err(|e| crate::SinkError(e.to_string()))?;
        self.0.push_str(&json);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> String {
        let mut raw = Vec::new();
        for v in [ndigits.to_be_bytes(), weight.to_be_bytes(), sign.to_be_bytes(), dscale.to_be_bytes()] {
            raw.extend_from_slice(&v);
        }
        for d in digits {
            raw.extend_from_slice(&d.to_be_bytes());
        }
        let mut out = String::new();
        write_numeric(&mut out, &raw).unwrap();
        out
    }

    #[test]
    fn numeric_is_exact() {
        assert_eq!(numeric(0, 0, 0, 0, &[]), "0");
        assert_eq!(numeric(0, 0, 0, 2, &[]), "0.00");
        assert_eq!(numeric(2, 0, 0, 2, &[7500, 5000]), "7500.50");
        assert_eq!(numeric(3, 1, 0x4000, 4, &[12, 3456, 7890]), "-123456.7890");
        assert_eq!(numeric(1, -2, 0, 8, &[1234]), "0.00001234");
        assert_eq!(numeric(1, 2, 0, 0, &[1]), "100000000");
        assert_eq!(numeric(5, 4, 0, 0, &[9999, 9999, 9999, 9999, 9999]), "99999999999999999999");
        assert_eq!(numeric(0, 0, 0xC000, 0, &[]), "NaN");
    }

    #[test]
    fn intervals_print_as_iso_durations() {
        let s = |micros, days, months| {
            let mut out = String::new();
            write_interval(&mut out, micros, days, months);
            out
        };
        assert_eq!(s(0, 0, 0), "PT0S");
        assert_eq!(s(3_723_500_000, 3, 14), "P1Y2M3DT1H2M3.5S");
        assert_eq!(s(-1_000_000, 0, 0), "PT-1S");
    }
}
