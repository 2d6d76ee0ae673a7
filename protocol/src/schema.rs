//! Driver-neutral description of a database as it travels in `schema_discovery` and in
//! result headers: kinds, tables, columns and wire types. The `drivers` crate fills these in;
//! the gateway reads them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which database engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbKind {
    /// A SQLite database file.
    Sqlite,
    /// PostgreSQL 11+.
    #[serde(alias = "postgresql")]
    Postgres,
    /// MySQL 5.7+ and MariaDB 10.3+.
    #[serde(alias = "mariadb")]
    Mysql,
    /// Any database behind an ODBC driver; the connection's
    /// `OdbcDialect` (drivers) says which.
    Odbc,
    /// MongoDB 4.4+ (and wire-compatible servers); queries are JSON documents, not SQL.
    #[serde(alias = "mongo")]
    Mongodb,
    /// TallyPrime through its XML gateway (HTTP, port 9000); queries are a small SQL subset
    /// translated into collection exports.
    Tally,
}

impl DbKind {
    /// The lowercase name used in configuration and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Odbc => "odbc",
            Self::Mongodb => "mongodb",
            Self::Tally => "tally",
        }
    }
}

impl fmt::Display for DbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database type name this build does not know (`DbKind::from_str`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unsupported database type: {}", self.0)
    }
}

impl std::error::Error for UnknownKind {}

impl FromStr for DbKind {
    type Err = UnknownKind;

    /// Case-insensitive; aliases: `sqlite3`, `postgresql`/`pg`, `mariadb`, `mongo`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sqlite" | "sqlite3" => Ok(Self::Sqlite),
            "postgres" | "postgresql" | "pg" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::Mysql),
            "odbc" => Ok(Self::Odbc),
            "mongodb" | "mongo" => Ok(Self::Mongodb),
            "tally" => Ok(Self::Tally),
            _ => Err(UnknownKind(s.to_owned())),
        }
    }
}

/// Type of a value as the cloud console sees it, independent of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireType {
    /// Whole number (`Cell::Int`).
    Integer,
    /// Exact decimal, usually sent as a string.
    Decimal,
    /// Binary floating point.
    Float,
    /// True/false.
    Boolean,
    /// Character data.
    Text,
    /// Binary data, base64 on the wire.
    Bytes,
    /// Calendar date.
    Date,
    /// Time of day.
    Time,
    /// Date and time without zone.
    Timestamp,
    /// Date and time with zone.
    TimestampTz,
    /// UUID.
    Uuid,
    /// JSON document.
    Json,
    /// Not known from the declaration (e.g. an expression in SQLite).
    Unknown,
}

/// Whether a relation is a base table or a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// A base table.
    Table,
    /// A view.
    View,
}

/// The discovered schema of one connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSchema {
    /// Name of the connection in the agent's configuration.
    pub connection: String,
    /// Engine of the connection.
    pub db_type: DbKind,
    /// Tables and views, sorted by `(schema, name)`.
    pub tables: Vec<Table>,
}

/// A table or view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// Namespace of the table; `None` where the engine has a single implicit one (SQLite `main`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub schema: Option<String>,
    /// Table name.
    pub name: String,
    /// Table or view.
    pub kind: TableKind,
    /// Columns in declaration order.
    pub columns: Vec<Column>,
    /// Primary key columns in key order; empty when there is none.
    pub primary_key: Vec<String>,
    /// Outgoing foreign keys, sorted.
    pub foreign_keys: Vec<ForeignKey>,
    /// Approximate number of rows (from statistics when available); `None` for views.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub row_count_estimate: Option<u64>,
    /// Indexes, where discovery reads them (MongoDB); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub indexes: Vec<Index>,
    /// For a view: what it reads, as discovery resolved it. `None` for tables, and for views
    /// whose schema did not come from a discovery (a saved or received schema), which the
    /// privacy policy treats like [`ViewReads::Unresolved`]. Local only: never serialized, so
    /// the `schema_discovery` frame does not carry it.
    #[serde(skip)]
    pub reads: Option<ViewReads>,
}

/// The relations a view reads, directly or through the views it reads (never broadcast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewReads {
    /// Every table and view the view reads, transitively, sorted and without duplicates.
    Resolved(Vec<RelationName>),
    /// Discovery could not tell, with the reason (no visible definition, SQL that does not
    /// parse, a user-defined function, a system catalogue, an engine without dependency
    /// support). The privacy policy treats such a view as private whenever the connection
    /// has private objects: it may read any of them.
    Unresolved(String),
}

impl ViewReads {
    /// The relations read, when resolved.
    pub fn relations(&self) -> Option<&[RelationName]> {
        match self {
            Self::Resolved(r) => Some(r),
            Self::Unresolved(_) => None,
        }
    }
}

/// A table or view name as the catalogue spells it; `schema` is `None` for the connection's
/// implicit namespace (SQLite `main`, the MySQL connection's database), as in [`Table`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelationName {
    /// Namespace, when not the implicit one.
    pub schema: Option<String>,
    /// Table or view name.
    pub name: String,
}

impl RelationName {
    /// A name in `schema` (`None`: the implicit namespace).
    pub fn new(schema: Option<&str>, name: &str) -> Self {
        Self { schema: schema.map(str::to_owned), name: name.to_owned() }
    }
}

impl fmt::Display for RelationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A column of a table or view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Column {
    /// Column name.
    pub name: String,
    /// The type as declared in the database, e.g. `"INTEGER"`, `"TEXT"`; may be empty.
    pub data_type: String,
    /// The declared type mapped to a wire type.
    pub wire_type: WireType,
    /// Whether the column accepts NULL.
    pub nullable: bool,
    /// Default value expression, as SQL text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub default: Option<String>,
    /// Allowed values when a constraint restricts the column to a fixed list.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub enum_values: Vec<String>,
    /// Where columns are inferred from sampled rows (MongoDB documents): the share of sampled
    /// rows that hold the field, 0.0–1.0. `None` for columns a catalogue declares.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub presence: Option<f64>,
}

/// An index of a table (or collection).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Index name.
    pub name: String,
    /// Indexed columns (field paths), in key order.
    pub columns: Vec<String>,
    /// Whether the index enforces unique values.
    pub unique: bool,
}

/// A foreign key from some columns of a table to columns of another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForeignKey {
    /// Referencing columns, in key order.
    pub columns: Vec<String>,
    /// Referenced table.
    pub ref_table: String,
    /// Referenced columns, matching `columns` one to one.
    pub ref_columns: Vec<String>,
}

/// A column of a result set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnMeta {
    /// Column name or alias as the query spells it.
    pub name: String,
    /// Wire type derived from the declared type.
    #[serde(rename = "type")]
    pub wire_type: WireType,
    /// Declared database type; empty for expressions.
    pub db_type: String,
    /// Whether the column may hold NULL, when the engine knows.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nullable: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_kind_round_trips_through_text_and_serde() {
        assert_eq!(DbKind::Sqlite.to_string(), "sqlite");
        assert_eq!("SQLite".parse::<DbKind>().unwrap(), DbKind::Sqlite);
        assert!(matches!(
            "oracle".parse::<DbKind>(),
            Err(UnknownKind(k)) if k == "oracle"
        ));
        assert_eq!(serde_json::to_string(&DbKind::Sqlite).unwrap(), "\"sqlite\"");
        for kind in [DbKind::Sqlite, DbKind::Postgres, DbKind::Mysql, DbKind::Odbc] {
            assert_eq!(kind.to_string().parse::<DbKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<DbKind>(&json).unwrap(), kind);
        }
        assert_eq!(serde_json::from_str::<DbKind>("\"mariadb\"").unwrap(), DbKind::Mysql);
        assert_eq!(serde_json::from_str::<DbKind>("\"postgresql\"").unwrap(), DbKind::Postgres);
    }

    #[test]
    fn column_meta_serializes_type_field() {
        let meta = ColumnMeta {
            name: "id".into(),
            wire_type: WireType::TimestampTz,
            db_type: "TIMESTAMPTZ".into(),
            nullable: None,
        };
        assert_eq!(
            serde_json::to_string(&meta).unwrap(),
            r#"{"name":"id","type":"timestamp_tz","dbType":"TIMESTAMPTZ"}"#
        );
    }
}
