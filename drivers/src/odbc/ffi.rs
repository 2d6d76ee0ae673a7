//! The two ODBC calls odbc-api 29 does not wrap safely, audited here:
//!
//! * `SQL_ATTR_ACCESS_MODE = SQL_MODE_READ_ONLY` on every new connection (the session layer's
//!   ODBC switch; many drivers take it as a hint only, so dialect statements follow it);
//! * `SQLCancel` on a statement executing on another thread (ODBC 3.8 allows exactly this:
//!   "SQLCancel ... can be called from a different thread to cancel a function running
//!   synchronously on a statement").
#![allow(unsafe_code)]

use odbc_api::sys::{ConnectionAttribute, HStmt, IS_UINTEGER, Pointer, SQLCancel, SqlReturn};
use odbc_api::{
    Connection, ConnectionOptions, DriverSpecificConnectionOptions, Environment, SetConnectionAttributeArgs,
};

/// `SQL_MODE_READ_ONLY` from sqlext.h.
const SQL_MODE_READ_ONLY: usize = 1;

struct ReadOnlyAccess;

impl<'c> DriverSpecificConnectionOptions<'c> for ReadOnlyAccess {
    fn attributes(&self) -> impl Iterator<Item = SetConnectionAttributeArgs<'c>> {
        // SAFETY: an integer attribute passed by value in the pointer argument (as the ODBC
        // spec prescribes for SQLUINTEGER attributes): no memory is referenced.
        std::iter::once(unsafe {
            SetConnectionAttributeArgs::new(
                ConnectionAttribute::ACCESS_MODE,
                SQL_MODE_READ_ONLY as Pointer,
                IS_UINTEGER,
            )
        })
    }
}

/// Connects with `SQL_ATTR_ACCESS_MODE` set to read-only before the connection opens.
pub(crate) fn connect_read_only(
    env: &'static Environment,
    connection_string: &str,
    options: ConnectionOptions,
) -> Result<Connection<'static>, odbc_api::Error> {
    // SAFETY: SQL_ATTR_ACCESS_MODE is a core ODBC attribute every driver (or the driver
    // manager, for drivers that do not know it) accepts; the value references no memory.
    unsafe {
        env.connect_with_connection_string_and_driver_specific_options(
            connection_string,
            options,
            ReadOnlyAccess,
        )
    }
}

/// A statement handle that another thread may cancel.
#[derive(Clone, Copy)]
pub(crate) struct CancelHandle(HStmt);

// SAFETY: the handle is only used for SQLCancel, which ODBC allows from any thread while the
// statement runs; `run` disarms every holder (cancel hook, alarm) before the statement is freed.
unsafe impl Send for CancelHandle {}

impl CancelHandle {
    pub(crate) fn new(statement: HStmt) -> Self {
        Self(statement)
    }

    /// Asks the driver to stop the statement; failures are logged.
    pub(crate) fn cancel(self) {
        // SAFETY: the statement handle is alive (see the `Send` impl): the owning thread
        // waits for hooks and alarms to finish before freeing it.
        let ret = unsafe { SQLCancel(self.0) };
        if ret != SqlReturn::SUCCESS && ret != SqlReturn::SUCCESS_WITH_INFO {
            tracing::warn!(code = ret.0, "ODBC SQLCancel failed");
        }
    }
}
