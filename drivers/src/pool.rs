//! One r2d2 pool shape for the network drivers (PostgreSQL, MySQL, ODBC).
//!
//! Spec §5.3: 2–10 connections, 30 min lifetime, 5 min idle timeout, 10 s acquire timeout
//! ([`DriverError::PoolExhausted`]), a `SELECT 1` health check, broken connections replaced.
//! The pool starts with `min_connections` (opened in the background) and grows one connection
//! per waiting caller up to `max_connections`; connections idle past the idle timeout are
//! closed again down to `min_connections` (r2d2's reaper looks every 30 s).
//!
//! Opening connects nothing: [`DbPool::open`] validates the settings and builds the pool
//! lazily, so a database that is down does not stop the agent. A caller that finds no
//! connection to take while the pool has none at all, or while connecting keeps failing,
//! connects itself instead of waiting out the acquire timeout: a database that is down answers
//! [`DriverError::Unavailable`] at once with the reason (the connection made is handed to the
//! pool). Connect failures are logged once when they start (`warn`) and once when a connection
//! succeeds again (`info`), not at every retry.
//!
//! The health check runs when a connection is checked out after it has been idle longer than
//! [`PoolSettings::health_check_interval`] (default 2 min), so a busy pool does not pay a round
//! trip per query while a connection that sat idle is always proven before use. A connection
//! whose query failed at the transport level, or that a cancel may have hit late, is flagged
//! `broken` and r2d2 drops it on return. Every other connection has its session state reset
//! on return ([`Session::reset`]: locks released, settings back to the pinned values); when the
//! reset fails the connection is dropped instead, so no session state outlives its query.
//! PostgreSQL resets at the start of each query instead, in the round trip that sets its
//! statement timeout (see `postgres`), so no state reaches the next query either.

use std::sync::{Arc, Mutex};
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

/// How many connections a pool holds right now (for tests, status and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStatus {
    /// Open connections, in use or idle.
    pub connections: u32,
    /// Open connections waiting in the pool.
    pub idle: u32,
}

/// A connection plus its pool bookkeeping.
pub(crate) struct Pooled<C> {
    pub(crate) conn: C,
    /// Set by the driver when the connection must not be reused.
    pub(crate) broken: bool,
    last_ok: Instant,
}

type Connect<C> = Box<dyn Fn() -> Result<C, DriverError> + Send + Sync>;

/// Makes connections, remembers whether the last attempt failed, and keeps the connections a
/// caller made outside the pool until the pool takes them.
struct Connector<C> {
    connect: Connect<C>,
    /// The message of the last failed attempt, until one succeeds.
    failing: Mutex<Option<String>>,
    /// Connections made by [`DbPool::acquire`] for the pool's next connects (at most
    /// `max_connections`; one older than the health-check interval is closed, not used).
    spare: Mutex<Vec<(C, Instant)>>,
    max_spare: usize,
}

impl<C> Connector<C> {
    /// One connection attempt; a failure is [`DriverError::Unavailable`].
    fn connect(&self) -> Result<C, DriverError> {
        match (self.connect)() {
            Ok(conn) => {
                if lock(&self.failing).take().is_some() {
                    tracing::info!("database reachable again; connection made");
                }
                Ok(conn)
            }
            Err(e) => {
                let message = match e {
                    DriverError::Open(m) | DriverError::Unavailable(m) | DriverError::Query(m) => m,
                    other => other.to_string(),
                };
                if lock(&self.failing).replace(message.clone()).is_none() {
                    tracing::warn!(error = %message, "cannot connect to the database; retrying in the background");
                } else {
                    tracing::debug!(error = %message, "still cannot connect to the database");
                }
                Err(DriverError::Unavailable(message))
            }
        }
    }

    fn failing(&self) -> Option<String> {
        lock(&self.failing).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) struct Manager<C> {
    connector: Arc<Connector<C>>,
    health_check_interval: Duration,
}

impl<C: Session> ManageConnection for Manager<C> {
    type Connection = Pooled<C>;
    type Error = DriverError;

    fn connect(&self) -> Result<Pooled<C>, DriverError> {
        let spare = {
            let mut spare = lock(&self.connector.spare);
            spare.retain(|(_, made)| made.elapsed() < self.health_check_interval);
            spare.pop()
        };
        let conn = match spare {
            Some((conn, _)) => conn,
            None => self.connector.connect()?,
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

/// What r2d2 says when the wait simply ran out (no connection error recorded).
const R2D2_TIMEOUT: &str = "timed out waiting for connection";

pub(crate) struct DbPool<C: Session> {
    pool: Pool<Manager<C>>,
    connector: Arc<Connector<C>>,
    acquire_timeout: Duration,
}

impl<C: Session> DbPool<C> {
    /// Builds the pool without connecting (the first connections are made in the background);
    /// only the settings are checked here.
    pub(crate) fn open(
        settings: &PoolSettings,
        connect: impl Fn() -> Result<C, DriverError> + Send + Sync + 'static,
    ) -> Result<Self, DriverError> {
        validate(settings)?;
        let connector = Arc::new(Connector {
            connect: Box::new(connect),
            failing: Mutex::new(None),
            spare: Mutex::new(Vec::new()),
            max_spare: settings.max_connections as usize,
        });
        let manager =
            Manager { connector: connector.clone(), health_check_interval: settings.health_check_interval };
        let non_zero = |d: Duration| (!d.is_zero()).then_some(d);
        let pool = Pool::builder()
            .max_size(settings.max_connections)
            .min_idle(Some(settings.min_connections.min(settings.max_connections)))
            .connection_timeout(settings.acquire_timeout)
            .max_lifetime(non_zero(settings.max_lifetime))
            .idle_timeout(non_zero(settings.idle_timeout))
            // `Connector::connect` logs failures (once per outage, not per retry).
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        Ok(Self { pool, connector, acquire_timeout: settings.acquire_timeout })
    }

    /// Most connections the pool holds (how many stale ones a server restart can leave).
    pub(crate) fn max_size(&self) -> u32 {
        self.pool.max_size()
    }

    /// Open and idle connections now.
    pub(crate) fn status(&self) -> PoolStatus {
        let state = self.pool.state();
        PoolStatus { connections: state.connections, idle: state.idle_connections }
    }

    /// Takes a connection, waiting at most the acquire timeout or the time left before the
    /// query's deadline, whichever is shorter (the latter ends in `Timeout`). With no idle
    /// connection while the pool holds none or cannot connect, the caller connects itself:
    /// [`DriverError::Unavailable`] at once when the database is down.
    pub(crate) fn acquire(
        &self,
        deadline_left: Option<Duration>,
    ) -> Result<PooledConnection<Manager<C>>, DriverError> {
        let state = self.pool.state();
        if state.idle_connections == 0 && (state.connections == 0 || self.connector.failing().is_some()) {
            let conn = self.connector.connect()?;
            let mut spare = lock(&self.connector.spare);
            if spare.len() < self.connector.max_spare {
                spare.push((conn, Instant::now()));
            }
        }
        acquire_within(&self.pool, self.acquire_timeout, deadline_left).map_err(|e| match e {
            DriverError::PoolExhausted => match self.connector.failing() {
                Some(m) => DriverError::Unavailable(m),
                None => DriverError::PoolExhausted,
            },
            other => other,
        })
    }

    /// One cheap round trip (`SELECT 1` or the dialect's ping) on a pooled connection. A
    /// connection that fails it is dropped and the next one tried (a server restart leaves
    /// every pooled connection dead), so only a database that cannot be reached at all fails,
    /// with [`DriverError::Unavailable`].
    pub(crate) fn check_health(&self) -> Result<(), DriverError> {
        let mut last = None;
        for _ in 0..=self.max_size() {
            let mut pooled = self.acquire(None)?;
            match pooled.conn.ping() {
                Ok(()) => {
                    pooled.last_ok = Instant::now();
                    return Ok(());
                }
                Err(e) => {
                    pooled.broken = true;
                    last = Some(e);
                }
            }
        }
        let message = match last {
            Some(DriverError::Query(m)) => m,
            Some(other) => other.to_string(),
            None => "no connection answered".into(),
        };
        Err(DriverError::Unavailable(message))
    }
}

/// Takes a connection from any r2d2 pool, waiting at most `acquire_timeout` or the time left
/// before the query's deadline, whichever is shorter. Running out of the deadline is `Timeout`,
/// of the acquire timeout `PoolExhausted`; a pool that cannot open a connection is
/// `Unavailable`.
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
            DriverError::Unavailable(
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
