//! One r2d2 pool shape for the network drivers (PostgreSQL, MySQL, ODBC).
//!
//! Spec §5.3: 2–10 connections, 30 min lifetime, 5 min idle timeout, 10 s acquire timeout
//! ([`DriverError::PoolExhausted`]), a `SELECT 1` health check, broken connections replaced.
//! The health check runs when a connection is checked out after it has been idle longer than
//! [`PoolSettings::health_check_interval`] (default 2 min), so a busy pool does not pay a round
//! trip per query while a connection that sat idle is always proven before use. A connection
//! whose query failed at the transport level, or that a cancel may have hit late, is flagged
//! `broken` and r2d2 drops it on return. Every other connection has its session state reset
//! on return ([`Session::reset`]: locks released, settings back to the pinned values); when the
//! reset fails the connection is dropped instead, so no session state outlives its query.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use r2d2::{ManageConnection, Pool, PooledConnection};

use crate::{DriverError, PoolSettings};

/// What the pool needs from a driver connection.
pub(crate) trait Session: Send + 'static {
    /// Runs `SELECT 1` (or the dialect's equivalent).
    fn ping(&mut self) -> Result<(), DriverError>;
    /// Whether the client library already knows the connection is dead.
    fn is_closed(&self) -> bool {
        false
    }
    /// Brings the session back to its state at connect before the connection is reused:
    /// releases locks the last statement may have left, resets settings and re-applies the
    /// pinned ones. Runs each time a connection returns to the pool; an error drops it.
    fn reset(&mut self) -> Result<(), DriverError> {
        Ok(())
    }
}

/// A connection plus its pool bookkeeping.
pub(crate) struct Pooled<C> {
    pub(crate) conn: C,
    /// Set by the driver when the connection must not be reused.
    pub(crate) broken: bool,
    last_ok: Instant,
}

type Connect<C> = Box<dyn Fn() -> Result<C, DriverError> + Send + Sync>;

pub(crate) struct Manager<C> {
    connect: Connect<C>,
    health_check_interval: Duration,
    /// The connection [`DbPool::open`] made to prove the settings; the pool's first connect
    /// takes it instead of opening another (a TLS + SCRAM login costs real time), unless it
    /// sat unused past the health-check interval.
    first: Mutex<Option<(C, Instant)>>,
}

impl<C: Session> ManageConnection for Manager<C> {
    type Connection = Pooled<C>;
    type Error = DriverError;

    fn connect(&self) -> Result<Pooled<C>, DriverError> {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        let conn = match first {
            Some((conn, opened)) if opened.elapsed() < self.health_check_interval => conn,
            _ => (self.connect)()?,
        };
        Ok(Pooled { conn, broken: false, last_ok: Instant::now() })
    }

    fn is_valid(&self, pooled: &mut Pooled<C>) -> Result<(), DriverError> {
        if pooled.last_ok.elapsed() < self.health_check_interval {
            return Ok(());
        }
        pooled.conn.ping()?;
        pooled.last_ok = Instant::now();
        Ok(())
    }

    /// Called by r2d2 as each connection comes back: broken ones are dropped, the others are
    /// reset (see [`Session::reset`]) and dropped if that fails.
    fn has_broken(&self, pooled: &mut Pooled<C>) -> bool {
        if pooled.broken || pooled.conn.is_closed() {
            return true;
        }
        match pooled.conn.reset() {
            Ok(()) => false,
            Err(e) => {
                tracing::info!(error = %e, "session reset failed; connection closed");
                true
            }
        }
    }
}

/// Logs connection failures of the background pool filler (messages never hold passwords).
#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<DriverError> for LogErrors {
    fn handle_error(&self, error: DriverError) {
        tracing::warn!(error = %error, "pool could not open a connection");
    }
}

/// What r2d2 says when the wait simply ran out (no connection error recorded).
const R2D2_TIMEOUT: &str = "timed out waiting for connection";

pub(crate) struct DbPool<C: Session> {
    pool: Pool<Manager<C>>,
    acquire_timeout: Duration,
}

impl<C: Session> DbPool<C> {
    /// Opens one connection now (so a bad host or password fails at once with the driver's
    /// specific error), then builds the pool around it (it becomes the pool's first).
    pub(crate) fn open(
        settings: &PoolSettings,
        connect: impl Fn() -> Result<C, DriverError> + Send + Sync + 'static,
    ) -> Result<Self, DriverError> {
        validate(settings)?;
        let first = connect()?;
        let manager = Manager {
            connect: Box::new(connect),
            health_check_interval: settings.health_check_interval,
            first: Mutex::new(Some((first, Instant::now()))),
        };
        let non_zero = |d: Duration| (!d.is_zero()).then_some(d);
        let pool = Pool::builder()
            .max_size(settings.max_connections)
            .min_idle(Some(settings.min_connections.min(settings.max_connections)))
            .connection_timeout(settings.acquire_timeout)
            .max_lifetime(non_zero(settings.max_lifetime))
            .idle_timeout(non_zero(settings.idle_timeout))
            .error_handler(Box::new(LogErrors))
            .build_unchecked(manager);
        Ok(Self { pool, acquire_timeout: settings.acquire_timeout })
    }

    /// Most connections the pool holds (how many stale ones a server restart can leave).
    pub(crate) fn max_size(&self) -> u32 {
        self.pool.max_size()
    }

    /// Takes a connection, waiting at most the acquire timeout or the time left before the
    /// query's deadline, whichever is shorter (the latter ends in `Timeout`).
    pub(crate) fn acquire(
        &self,
        deadline_left: Option<Duration>,
    ) -> Result<PooledConnection<Manager<C>>, DriverError> {
        acquire_within(&self.pool, self.acquire_timeout, deadline_left)
    }
}

/// Takes a connection from any r2d2 pool, waiting at most `acquire_timeout` or the time left
/// before the query's deadline, whichever is shorter. Running out of the deadline is `Timeout`,
/// of the acquire timeout `PoolExhausted`; a pool that cannot open a connection is `Open`.
pub(crate) fn acquire_within<M: ManageConnection>(
    pool: &Pool<M>,
    acquire_timeout: Duration,
    deadline_left: Option<Duration>,
) -> Result<PooledConnection<M>, DriverError> {
    let (wait, by_deadline) = match deadline_left {
        Some(left) if left < acquire_timeout => (left, true),
        _ => (acquire_timeout, false),
    };
    pool.get_timeout(wait).map_err(|e| {
        let msg = e.to_string();
        if by_deadline {
            DriverError::Timeout
        } else if msg == R2D2_TIMEOUT {
            DriverError::PoolExhausted
        } else {
            // The pool could not open a new connection (server down, file removed, password
            // changed...).
            DriverError::Open(
                msg.strip_prefix("timed out waiting for connection: ").unwrap_or(&msg).to_owned(),
            )
        }
    })
}

pub(crate) fn validate(settings: &PoolSettings) -> Result<(), DriverError> {
    if settings.max_connections == 0 {
        return Err(DriverError::Open("max_connections must be at least 1".into()));
    }
    if settings.acquire_timeout.is_zero() {
        return Err(DriverError::Open("acquire_timeout must not be zero".into()));
    }
    Ok(())
}
