//! Timeouts, cancellation, pool exhaustion and sink failures; the pool stays usable after each.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use drivers::fixture::LARGE_RESULT_SQL;
use drivers::{
    CancelToken, Cell, ColumnMeta, Database, DriverError, QueryOptions, QueryStats, RowSink, SinkError,
};
use serde_json::json;

use crate::common::{Owned, QueryText, Recorder, sample_db, scalar, single_connection_db};

/// Counts to a billion inside one aggregate: no row comes out until it is done.
const ENDLESS: &str = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c \
                       WHERE n < 1000000000) SELECT count(*) FROM c";
/// A hang fails the test instead of stalling the run.
const WATCHDOG: Duration = Duration::from_secs(20);

/// Tells the test when the query holds its connection (columns come before the first step).
struct Started(mpsc::Sender<()>);

impl RowSink for Started {
    fn columns(&mut self, _: &[ColumnMeta]) -> Result<(), SinkError> {
        let _ = self.0.send(());
        Ok(())
    }
    fn row(&mut self, _: &[Cell<'_>]) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Runs [`ENDLESS`] on another thread and returns once it is running.
fn start_endless(db: &Database, cancel: &CancelToken) -> thread::JoinHandle<Result<QueryStats, DriverError>> {
    let (tx, rx) = mpsc::channel();
    let db = db.clone();
    let opts = QueryOptions { timeout: Some(WATCHDOG), cancel: cancel.clone() };
    let handle = thread::Builder::new()
        .name("endless-query".into())
        .spawn(move || db.query_text(ENDLESS, &[], &opts, &mut Started(tx)))
        .unwrap();
    rx.recv_timeout(WATCHDOG).expect("long query did not start");
    handle
}

fn assert_pool_answers(db: &Database) {
    db.ping().unwrap();
    assert_eq!(scalar(db, "SELECT count(*) FROM products"), Owned::Int(200));
}

#[test]
fn timeout_interrupts_the_engine_and_the_pool_recovers() {
    // One connection, so the follow-up queries reuse the interrupted one.
    let db = single_connection_db(Duration::from_secs(5));
    let opts = QueryOptions { timeout: Some(Duration::from_millis(200)), ..QueryOptions::default() };
    let started = Instant::now();
    let err = db.query_text(ENDLESS, &[], &opts, &mut Recorder::default()).unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, DriverError::Timeout), "{err}");
    assert!(err.is_retryable());
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_pool_answers(&db);
}

#[test]
fn timeout_also_applies_between_rows() {
    let db = sample_db();
    /// A slow consumer: the deadline passes while rows are being handed over.
    struct Slow;
    impl RowSink for Slow {
        fn columns(&mut self, _: &[ColumnMeta]) -> Result<(), SinkError> {
            Ok(())
        }
        fn row(&mut self, _: &[Cell<'_>]) -> Result<(), SinkError> {
            thread::sleep(Duration::from_millis(5));
            Ok(())
        }
    }
    let opts = QueryOptions { timeout: Some(Duration::from_millis(100)), ..QueryOptions::default() };
    let err = db.query_text(LARGE_RESULT_SQL, &[json!(100_000)], &opts, &mut Slow).unwrap_err();
    assert!(matches!(err, DriverError::Timeout), "{err}");
}

#[test]
fn cancel_from_another_thread() {
    let db = single_connection_db(Duration::from_secs(5));
    let cancel = CancelToken::new();
    let query = start_endless(&db, &cancel);
    thread::sleep(Duration::from_millis(50));
    let cancelled_at = Instant::now();
    cancel.cancel();
    let err = query.join().unwrap().unwrap_err();
    assert!(matches!(err, DriverError::Cancelled), "{err}");
    assert!(!err.is_retryable());
    assert!(cancelled_at.elapsed() < Duration::from_secs(2));
    assert_pool_answers(&db);
}

#[test]
fn a_cancelled_token_stops_before_running() {
    let db = sample_db();
    let opts = QueryOptions::default();
    opts.cancel.cancel();
    let err = db.query_text("SELECT 1", &[], &opts, &mut Recorder::default()).unwrap_err();
    assert!(matches!(err, DriverError::Cancelled), "{err}");
}

#[test]
fn busy_pool_reports_exhaustion_then_recovers() {
    let db = single_connection_db(Duration::from_millis(100));
    let cancel = CancelToken::new();
    let holder = start_endless(&db, &cancel);

    let started = Instant::now();
    let err = db.query_text("SELECT 1", &[], &QueryOptions::default(), &mut Recorder::default()).unwrap_err();
    assert!(matches!(err, DriverError::PoolExhausted), "{err}");
    assert!(err.is_retryable());
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(matches!(db.ping(), Err(DriverError::PoolExhausted)));
    assert!(matches!(db.discover(), Err(DriverError::PoolExhausted)));

    cancel.cancel();
    assert!(matches!(holder.join().unwrap(), Err(DriverError::Cancelled)));
    assert_pool_answers(&db);
}

#[test]
fn query_timeout_bounds_the_wait_for_a_connection() {
    let db = single_connection_db(Duration::from_secs(10));
    let cancel = CancelToken::new();
    let holder = start_endless(&db, &cancel);

    let opts = QueryOptions { timeout: Some(Duration::from_millis(100)), ..QueryOptions::default() };
    let started = Instant::now();
    let err = db.query_text("SELECT 1", &[], &opts, &mut Recorder::default()).unwrap_err();
    assert!(matches!(err, DriverError::Timeout), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    cancel.cancel();
    let _ = holder.join().unwrap();
    assert_pool_answers(&db);
}

/// Accepts `limit` rows, then fails like an upload that broke.
struct FailAfter {
    limit: usize,
    seen: usize,
}

impl RowSink for FailAfter {
    fn columns(&mut self, _: &[ColumnMeta]) -> Result<(), SinkError> {
        Ok(())
    }
    fn row(&mut self, _: &[Cell<'_>]) -> Result<(), SinkError> {
        if self.seen == self.limit {
            return Err(SinkError("upload failed".into()));
        }
        self.seen += 1;
        Ok(())
    }
}

#[test]
fn sink_error_aborts_the_query() {
    let db = single_connection_db(Duration::from_secs(5));
    let mut sink = FailAfter { limit: 10, seen: 0 };
    let err = db
        .query_text(LARGE_RESULT_SQL, &[json!(1_000_000_000)], &QueryOptions::default(), &mut sink)
        .unwrap_err();
    assert!(matches!(&err, DriverError::Sink(SinkError(m)) if m == "upload failed"), "{err}");
    assert_eq!(err.to_string(), "row sink failed: upload failed");
    assert_eq!(sink.seen, 10);
    assert_pool_answers(&db);
}

#[test]
fn sink_error_on_columns_aborts_too() {
    struct RefuseColumns;
    impl RowSink for RefuseColumns {
        fn columns(&mut self, _: &[ColumnMeta]) -> Result<(), SinkError> {
            Err(SinkError("no".into()))
        }
        fn row(&mut self, _: &[Cell<'_>]) -> Result<(), SinkError> {
            panic!("row after refused columns");
        }
    }
    let db = sample_db();
    let err = db.query_text("SELECT 1", &[], &QueryOptions::default(), &mut RefuseColumns).unwrap_err();
    assert!(matches!(err, DriverError::Sink(_)), "{err}");
}
