//! Driver-neutral description of a database: kinds, tables, columns and wire types. The types
//! live in the `protocol` crate (they are what `schema_discovery` carries); the drivers fill them.

pub use protocol::schema::{
    Column, ColumnMeta, DatabaseSchema, DbKind, ForeignKey, Index, RelationName, Table, TableKind,
    UnknownKind, ViewReads, WireType,
};

impl From<UnknownKind> for crate::DriverError {
    fn from(e: UnknownKind) -> Self {
        crate::DriverError::UnsupportedKind(e.0)
    }
}
