//! Read-only database drivers for Mini Connector.
//!
//! A [`Database`] is a pooled handle on one configured database. It runs single read-only
//! queries and pushes every row, as borrowed [`Cell`]s, into a caller-supplied [`RowSink`]:
//! the driver never buffers a result. It also discovers the schema ([`DatabaseSchema`]) that
//! the cloud console shows to workflow authors. Drivers know nothing about the wire protocol
//! or the network.
//!
//! The public API is driver-neutral ([`DbKind`] picks the engine); only SQLite exists so far.
//! Writes are refused three times: [`check_read_only_statement`] rejects anything but one
//! query, the engine's own read-only flag of the prepared statement is checked, and the
//! connections themselves are read-only.
//!
//! Timeouts and cancellation ([`QueryOptions`], [`CancelToken`]) interrupt a running query
//! from inside the engine, without extra threads.
//!
//! ```
//! use drivers::{
//!     Cell, ColumnMeta, ConnectionSpec, Database, DbKind, PoolSettings, QueryOptions, RowSink,
//!     SinkError,
//! };
//!
//! struct Print;
//! impl RowSink for Print {
//!     fn columns(&mut self, columns: &[ColumnMeta]) -> Result<(), SinkError> {
//!         println!("{}", columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join("\t"));
//!         Ok(())
//!     }
//!     fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), SinkError> {
//!         println!("{}", serde_json::to_string(cells).map_err(|e| SinkError(e.to_string()))?);
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), drivers::DriverError> {
//! let path = std::env::temp_dir().join(format!("drivers-doc-{}.sqlite", std::process::id()));
//! drivers::fixture::create_sample_erp(&path, 1)?;
//!
//! let db = Database::open(&ConnectionSpec {
//!     name: "erp".into(),
//!     kind: DbKind::Sqlite,
//!     path: path.clone(),
//!     pool: PoolSettings::default(),
//! })?;
//! let stats = db.query(
//!     "SELECT code, name FROM customers WHERE country = ? ORDER BY id LIMIT 3",
//!     &[serde_json::json!("DE")],
//!     &QueryOptions::default(),
//!     &mut Print,
//! )?;
//! assert_eq!(stats.columns, 2);
//! # drop(db);
//! # std::fs::remove_file(&path)?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod cell;
mod database;
mod error;
pub mod fixture;
mod query;
mod schema;
mod sqlite;

pub use cell::{Cell, RowSink};
pub use database::{ConnectionSpec, Database, PoolSettings};
pub use error::{DriverError, SinkError};
pub use query::{CancelToken, QueryOptions, QueryStats, check_read_only_statement};
pub use schema::{Column, ColumnMeta, DatabaseSchema, DbKind, ForeignKey, Table, TableKind, WireType};
