//! Borrowed cell values and the sink that receives rows.

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use serde::{Serialize, Serializer};

use crate::{ColumnMeta, SinkError};

/// One value of one row, borrowed from the driver's row buffer (no copy).
///
/// A cell is only valid during the [`RowSink::row`] call that receives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// SQL NULL.
    Null,
    /// Boolean.
    Bool(bool),
    /// 64-bit integer.
    Int(i64),
    /// 64-bit float; may be NaN or infinite.
    Float(f64),
    /// UTF-8 text.
    Text(&'a str),
    /// Binary data (also text that is not valid UTF-8).
    Bytes(&'a [u8]),
    /// Exact decimal in its textual form.
    Decimal(&'a str),
}

/// JSON form: `null`, bool, number, string; bytes as standard base64; decimals as strings;
/// non-finite floats as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` so that no value
/// silently turns into `null`.
impl Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Cell::Null => serializer.serialize_unit(),
            Cell::Bool(b) => serializer.serialize_bool(b),
            Cell::Int(i) => serializer.serialize_i64(i),
            Cell::Float(f) if f.is_nan() => serializer.serialize_str("NaN"),
            Cell::Float(f) if f == f64::INFINITY => serializer.serialize_str("Infinity"),
            Cell::Float(f) if f == f64::NEG_INFINITY => serializer.serialize_str("-Infinity"),
            Cell::Float(f) => serializer.serialize_f64(f),
            Cell::Text(s) | Cell::Decimal(s) => serializer.serialize_str(s),
            Cell::Bytes(b) => serializer.collect_str(&Base64Display::new(b, &STANDARD)),
        }
    }
}

/// Receives a result set as it is read: the columns once, then every row in order.
///
/// The driver never buffers the result; a sink that returns an error aborts the query
/// with [`DriverError::Sink`](crate::DriverError::Sink).
pub trait RowSink {
    /// Called once per query, right before the statement is sent to the database, with an
    /// opaque id of the server session that will run it: `pg:<pid>:<backend start>` on
    /// PostgreSQL, `mysql:<connection id>:<server start>` on MySQL/MariaDB, `None` where the engine has no
    /// server session to stop from outside (SQLite runs in-process; ODBC). Record it durably
    /// to stop the statement with [`Database::cancel_server_session`] if this process dies
    /// while it runs. An error aborts the query before it is sent
    /// ([`DriverError::Sink`](crate::DriverError::Sink)).
    ///
    /// [`Database::cancel_server_session`]: crate::Database::cancel_server_session
    fn started(&mut self, server_session: Option<&str>) -> Result<(), SinkError> {
        let _ = server_session;
        Ok(())
    }
    /// Called once, before the first row (also for an empty result).
    fn columns(&mut self, columns: &[ColumnMeta]) -> Result<(), SinkError>;
    /// Called for every row; `cells` has one entry per column.
    fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), SinkError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(cell: Cell<'_>) -> String {
        serde_json::to_string(&cell).unwrap()
    }

    #[test]
    fn cells_serialize_to_json() {
        assert_eq!(json(Cell::Null), "null");
        assert_eq!(json(Cell::Bool(true)), "true");
        assert_eq!(json(Cell::Int(-7)), "-7");
        assert_eq!(json(Cell::Float(1.5)), "1.5");
        assert_eq!(json(Cell::Text("Müller \"GmbH\"")), r#""Müller \"GmbH\"""#);
        assert_eq!(json(Cell::Bytes(b"\x00\xffhi")), r#""AP9oaQ==""#);
        assert_eq!(json(Cell::Bytes(b"")), r#""""#);
        assert_eq!(json(Cell::Decimal("12.50")), r#""12.50""#);
    }

    #[test]
    fn non_finite_floats_are_strings_not_null() {
        assert_eq!(json(Cell::Float(f64::NAN)), r#""NaN""#);
        assert_eq!(json(Cell::Float(f64::INFINITY)), r#""Infinity""#);
        assert_eq!(json(Cell::Float(f64::NEG_INFINITY)), r#""-Infinity""#);
    }
}
