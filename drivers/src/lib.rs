//! Read-only database drivers for Mini Connector.
//!
//! A [`Database`] is a pooled handle on one configured database. It runs single read-only
//! queries and pushes every row, as borrowed [`Cell`]s, into a caller-supplied [`RowSink`]:
//! the driver never buffers a result. It also discovers the schema ([`DatabaseSchema`]) that
//! the cloud console shows to workflow authors. Drivers know nothing about the wire protocol
//! or the network.
//!
//! The public API is driver-neutral ([`DbKind`] picks the engine): SQLite (rusqlite),
//! PostgreSQL (`postgres`), MySQL/MariaDB (`mysql`) and ODBC (`odbc-api`) with dialect profiles
//! ([`OdbcDialect`]) for SQL Server, Oracle, SAP HANA, PostgreSQL, MySQL, SQLite and generic
//! sources. Every engine maps its values to the same [`Cell`]s and [`WireType`]s (see
//! `docs/PROTOCOL.md`), streams rows without buffering the result, and is read-only twice
//! over: [`Database::query`] takes only a [`gate::Checked`] — text the read-only gate approved,
//! run exactly as approved, never rewritten here — and every query runs in a read-only
//! transaction of a read-only session, so a write that slips past the gate is refused by the
//! database itself where the engine can refuse it.
//!
//! Timeouts and cancellation ([`QueryOptions`], [`CancelToken`]) stop the statement on the
//! server: SQLite's progress handler, PostgreSQL's cancel request and `statement_timeout`,
//! MySQL's `KILL QUERY` and `max_statement_time`/`max_execution_time`, ODBC's `SQLCancel`.
//!
//! Opening checks settings only: a network database that is down, unreachable or refusing the
//! login opens anyway, and what needs a connection fails with [`DriverError::Unavailable`]
//! (retryable, distinct from a failing query) until the database is back — the same handle
//! then works, no reopening. [`Database::check_health`] is one cheap round trip to tell. Pools
//! start at `min_connections` and grow per waiting query up to `max_connections` (spec §5.3),
//! closing idle ones again after the idle timeout ([`Database::pool_status`]).
//!
//! Right before a statement is sent, [`RowSink::started`] receives an opaque id of the server
//! session that runs it (`pg:<pid>:<backend start>`, `mysql:<connection id>:<server start>`; `None` for
//! SQLite and ODBC). Recorded durably, it lets another process stop a statement a crashed
//! agent left running: [`Database::cancel_server_session`] says `true` only once no statement
//! of that session can still run.
//!
//! Network sessions are pinned to the settings the gate lexes under (PostgreSQL
//! `standard_conforming_strings=on`, MySQL/MariaDB `sql_mode` without `NO_BACKSLASH_ESCAPES`
//! and `ANSI_QUOTES`) and reset each time they return to the pool (locks released, settings
//! back to the pinned values), or closed. PostgreSQL and MySQL/MariaDB connections use TLS per
//! [`SslMode`] (rustls with ring; a CA file in `ssl_root_cert`), and refuse to send a password
//! in clear text over a link without TLS unless `allow_cleartext_password` says so.
//!
//! ```
//! use drivers::{
//!     Cell, ColumnMeta, ConnectionSpec, Database, DbKind, QueryOptions, RowSink, SinkError,
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
//!     ..ConnectionSpec::default()
//! })?;
//! let sql = "SELECT code, name FROM customers WHERE country = ? ORDER BY id LIMIT 3";
//! let checked = gate::check_with(sql, 1, db.gate_target(), &gate::Policy::default(), &gate::Limits::default())
//!     .expect("a read-only query");
//! let stats = db.query(
//!     &checked,
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

// Two audited FFI calls that odbc-api does not wrap live in `odbc/ffi.rs`, which carries its
// own `allow`; everything else is safe code.
#![deny(unsafe_code)]

mod alarm;
mod catalog;
mod cell;
mod database;
mod dialect;
mod diff;
mod error;
pub mod fixture;
mod mongodb;
mod mysql;
#[cfg(feature = "odbc")]
mod odbc;
mod pool;
mod postgres;
mod privileges;
mod query;
mod rowbuf;
mod schema;
mod secret;
mod sqlite;
mod tally;
mod temporal;
mod tls;
mod views;

/// Whether this build includes the ODBC driver (the `odbc` feature): SQL Server, Oracle and
/// SAP HANA are reached through it.
pub const ODBC_SUPPORT: bool = cfg!(feature = "odbc");

pub use cell::{Cell, RowSink};
pub use database::{
    ConnectionSpec, Database, DiscoveryProgress, PoolSettings, PrivilegeReport, SslMode,
    connection_string_has_password,
};
pub use dialect::{CatalogSql, OdbcDialect};
pub use diff::{ColumnChange, SchemaDiff, TableChange, diff};
pub use error::{DriverError, SinkError};
pub use pool::PoolStatus;
pub use privileges::suggested_sql;
pub use query::{CancelToken, QueryOptions, QueryStats};
pub use schema::{
    Column, ColumnMeta, DatabaseSchema, DbKind, ForeignKey, Index, RelationName, Table, TableKind, ViewReads,
    WireType,
};
pub use secret::{Password, Secret};
