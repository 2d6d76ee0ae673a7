//! TallyPrime's XML gateway (type `tally`): collection exports over HTTP, read as a stream.
//!
//! **Connecting.** `host` (default `localhost`) and `port` (default 9000) of the gateway that
//! TallyPrime opens when "TallyPrime acts as: Server/Both" is set (F1: Help > Settings >
//! Connectivity); `company` picks the company exported from (`SVCURRENTCOMPANY`), otherwise
//! the one loaded in TallyPrime. The gateway has no login and no TLS. Opening contacts nothing;
//! every query is one HTTP/1.1 POST (`ureq`, no proxy, a fresh connection each time).
//!
//! **Export only.** The text run is the gate's approved plan (`gate/src/tally.rs`,
//! `docs/PROTOCOL.md` "Tally queries"). It becomes one envelope, built by
//! [`envelope::ExportEnvelope`], whose only constructor writes `<TALLYREQUEST>Export` and an
//! inline TDL collection (`<TYPE>`, `<FETCH>` of the fields the query selects, filters or
//! sorts on, and the plan's `tdl` as a `<SYSTEM TYPE="Formulae">` filter); everything taken
//! from the plan or the configuration is XML-escaped. No code path can build an `Import`.
//!
//! **Exact results.** Tally compares strings without regard to case, so its filter only
//! narrows what is sent: the driver applies the plan's `filter` tree itself, exactly (strings
//! by code point, case-sensitive; numbers as exact decimals; SQL's three-valued logic, so a
//! condition on an empty field is unknown and the object is left out), then `ORDER BY` (NULL
//! first ascending, last descending; ties keep Tally's order), `OFFSET` and `LIMIT`. Without
//! `ORDER BY` rows are streamed as they are parsed and reading stops at the limit; with it the
//! matching rows are held (only the first `offset + limit` when there is a limit), at most
//! [`MAX_SORTED_ROWS`], beyond which the query fails with a `Query` error asking for a
//! narrower condition or a limit.
//!
//! **Reading the answer.** A pull parser (quick-xml) reads one object at a time; the body is
//! never held whole. UTF-8 and UTF-16 (LE or BE; by BOM, by a `<` next to a zero byte, or by
//! the HTTP charset — Tally usually answers UTF-16LE) are accepted; invalid UTF-16 or UTF-8 is
//! an error. An object is an element named after the collection's type (`LEDGER`, ...) right
//! inside `COLLECTION`; a field is its child element in upper case, or the first item of a
//! `FIELD.LIST` child (`NAME.LIST/NAME`), and `Name` falls back to the object's `NAME`
//! attribute. Values are trimmed; Tally's `&#4;` marker (before reserved names) is dropped;
//! entities other than XML's five are dropped (no DTD is read). Bounds: one object (or
//! anything between two objects) at most [`response::MAX_OBJECT_BYTES`], elements nested at
//! most [`response::MAX_DEPTH`] deep; hostile input is an error, never a panic.
//!
//! **Values.** String → text; Number → integer; Amount, Quantity, Rate → decimal text
//! (`-1250.00`; ` 1,250.00 Dr` → `-1250.00`, `Cr` positive, separators and currency symbols
//! dropped, the base-currency value of a forex amount, the number before a unit); Logical
//! (`Yes`/`No`) → boolean; Date (`20240401`, `1-Apr-24`) → ISO `2024-04-01` text (wire type
//! date); empty → NULL. A value that does not read as its type fails the query (`Query`),
//! never turns into a wrong number.
//!
//! **Errors.** Tally's error answers (`<RESPONSE>…</RESPONSE>`, `<LINEERROR>…</LINEERROR>`,
//! `<STATUS>0</STATUS>` with a message) → `Query("Tally: <message>")`; a message about a
//! company that cannot be found or no company loaded → `Unavailable("Tally has no company …
//! loaded …")`; connection refused, unknown host or connect timeout →
//! `Unavailable("cannot reach Tally's XML gateway at host:port (is TallyPrime running with the
//! gateway enabled? …)")`; an answer that is not Tally's XML (HTML, text) or an HTTP error →
//! `Unavailable`; a malformed or oversized answer → `Query("Tally: unreadable answer: …")`.
//! Timeouts bound the whole request (connect, wait, body); a cancel shuts the request's
//! socket at once (`Agent::shutdown`), so both end the query promptly with `Timeout` /
//! `Cancelled`.
//!
//! **Discovery** lists the five collections of the gate's catalogue with their fields (the
//! Tally type as the declared type, `GUID` as the key) and counts each collection's objects
//! with one export fetching a single field; the `Company` table lists the companies loaded.
//! `ping` exports the list of loaded companies and fails with `Unavailable` when none is
//! loaded, or not the configured one.

mod envelope;
mod response;
mod value;

use std::io::Read;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value as Json;

use self::envelope::{CollectionExport, ExportEnvelope};
use self::response::{Failure, Objects, RawObject};
use self::value::{Kind, Val};
use crate::database::Driver;
use crate::pool::PoolStatus;
use crate::query::{HookGuard, Interrupt};
use crate::{
    Cell, Column, ColumnMeta, ConnectionSpec, DatabaseSchema, DbKind, DiscoveryProgress, DriverError,
    OdbcDialect, PrivilegeReport, QueryOptions, QueryStats, RowSink, Table, TableKind,
};

/// The gateway's port unless `port` says otherwise.
pub(crate) const DEFAULT_PORT: u16 = 9000;
/// Matching rows an `ORDER BY` may hold in memory.
pub(crate) const MAX_SORTED_ROWS: usize = 100_000;
/// Bound on connecting when the query has no deadline (or a longer one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on `ping`.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on each export of a discovery.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(300);
/// The collections of the gate's Tally subset (`gate/src/tally.rs`); their fields and types
/// are read from the gate itself ([`catalogue`]), and a test checks this list against it.
const COLLECTIONS: [&str; 5] = ["Ledger", "Group", "StockItem", "Voucher", "Company"];

pub(crate) struct TallyDb {
    /// `http://host:port/`.
    url: String,
    /// `host:port`, for messages.
    address: String,
    company: Option<String>,
}

impl TallyDb {
    pub(crate) fn open(spec: &ConnectionSpec) -> Result<Box<dyn Driver>, DriverError> {
        let open_err = |what: String| DriverError::Open(format!("{}: {what}", spec.name));
        let host = spec.host.as_deref().unwrap_or("localhost").trim();
        if host.is_empty()
            || host.chars().any(|c| c.is_whitespace() || c.is_control() || "/@?#\\%".contains(c))
        {
            return Err(open_err(format!("`host` is not a host name or address: {host:?}")));
        }
        let port = spec.port.unwrap_or(DEFAULT_PORT);
        if port == 0 {
            return Err(open_err("`port` must not be 0".into()));
        }
        let company = spec.company.as_deref().map(str::trim).filter(|c| !c.is_empty());
        if company.is_some_and(|c| c.chars().any(char::is_control)) {
            return Err(open_err("`company` holds a control character".into()));
        }
        let bracketed =
            if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.into() };
        Ok(Box::new(TallyDb {
            url: format!("http://{bracketed}:{port}/"),
            address: format!("{bracketed}:{port}"),
            company: company.map(str::to_owned),
        }))
    }

    /// Sends `envelope` and returns the answer's objects of `collection` with `fields`.
    fn send(
        &self,
        envelope: &ExportEnvelope,
        collection: &str,
        fields: &[&str],
        interrupt: &Interrupt,
    ) -> Result<Exchange, DriverError> {
        interrupt.check()?;
        let remaining = interrupt.remaining();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_idle_connections(0)
            .timeout_connect(Some(remaining.map_or(CONNECT_TIMEOUT, |r| r.min(CONNECT_TIMEOUT))))
            .timeout_global(remaining)
            .user_agent("mini-connector")
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let stopper = agent.clone();
        // A cancel shuts the request's socket: a blocked connect, wait or read returns at once.
        let hook = interrupt.cancel.on_cancel(move || stopper.clone().shutdown());
        let answer = agent
            .post(&self.url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .send(envelope.as_str())
            .map_err(|e| self.request_error(&e, interrupt))?;
        let status = answer.status().as_u16();
        let charset = answer
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("charset=")))
            .map(|c| c.trim_matches('"').to_owned());
        if !(200..300).contains(&status) {
            return Err(DriverError::Unavailable(format!(
                "Tally's XML gateway at {} answered HTTP {status} (is this port TallyPrime's gateway?)",
                self.address
            )));
        }
        let body = answer.into_body().into_reader();
        let body: Box<dyn Read> = response::decode(body, charset.as_deref())
            .map_err(|e| self.read_error(Failure::Io(e), interrupt))?;
        Ok(Exchange { objects: Objects::new(body, collection, fields), _hook: hook })
    }

    /// Runs one collection export from `company` and hands each object to `each` until it says
    /// stop.
    fn export(
        &self,
        export: &CollectionExport<'_>,
        company: Option<&str>,
        interrupt: &Interrupt,
        each: &mut dyn FnMut(RawObject) -> Result<bool, DriverError>,
    ) -> Result<(), DriverError> {
        let envelope = ExportEnvelope::collection(export, company);
        let mut exchange = self.send(&envelope, export.collection, &export.fetch, interrupt)?;
        let mut read = 0u64;
        loop {
            interrupt.check_row(read)?;
            let next = exchange.objects.next_object().map_err(|f| self.read_error(f, interrupt))?;
            let Some(object) = next else {
                // A shut socket can also end a close-delimited answer where an object ends.
                return if interrupt.cancel.is_cancelled() { Err(DriverError::Cancelled) } else { Ok(()) };
            };
            read += 1;
            if !each(object)? {
                return Ok(());
            }
        }
    }

    fn unreachable(&self, cause: &dyn std::fmt::Display) -> DriverError {
        DriverError::Unavailable(format!(
            "cannot reach Tally's XML gateway at {} (is TallyPrime running with the gateway enabled? \
             F1: Help > Settings > Connectivity): {cause}",
            self.address
        ))
    }

    fn request_error(&self, e: &ureq::Error, interrupt: &Interrupt) -> DriverError {
        if let Err(stopped) = interrupt.check() {
            return stopped;
        }
        match e {
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve)
                if interrupt.remaining().is_none_or(|r| r > Duration::from_millis(50)) =>
            {
                self.unreachable(e)
            }
            ureq::Error::Timeout(_) => interrupt.stopped(),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => interrupt.stopped(),
            ureq::Error::Io(_) | ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => {
                self.unreachable(e)
            }
            other => DriverError::Unavailable(format!(
                "Tally's XML gateway at {} did not answer as an HTTP server should: {other}",
                self.address
            )),
        }
    }

    fn read_error(&self, failure: Failure, interrupt: &Interrupt) -> DriverError {
        // A cancel shuts the socket, which can look like an answer cut short.
        if !matches!(failure, Failure::Tally(_))
            && let Err(stopped) = interrupt.check()
        {
            return stopped;
        }
        match failure {
            Failure::Tally(message) => self.tally_error(&message),
            Failure::NotTally(what) => DriverError::Unavailable(format!(
                "the server at {} is not TallyPrime's XML gateway: it answered with {what}",
                self.address
            )),
            Failure::Malformed(what) => DriverError::Query(format!("Tally: unreadable answer: {what}")),
            Failure::Io(e) => {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    return interrupt.stopped();
                }
                DriverError::Unavailable(format!(
                    "the connection to Tally's XML gateway at {} broke: {e}",
                    self.address
                ))
            }
        }
    }

    /// Tally's own error message: about the company → `Unavailable`, else `Query`.
    fn tally_error(&self, message: &str) -> DriverError {
        let lower = message.to_lowercase();
        let about_company = lower.contains("company")
            && ["could not", "not find", "not found", "no company", "not loaded", "not open"]
                .iter()
                .any(|w| lower.contains(w));
        if !about_company {
            return DriverError::Query(format!("Tally: {message}"));
        }
        DriverError::Unavailable(match &self.company {
            Some(company) => format!(
                "Tally has no company named \"{company}\" loaded (open it in TallyPrime, or fix `company`): \
                 Tally: {message}"
            ),
            None => format!("Tally has no company loaded (open one in TallyPrime): Tally: {message}"),
        })
    }

    /// The names of the companies loaded in Tally (asked without `SVCURRENTCOMPANY`, so the
    /// list comes back even when the configured company is not among them).
    fn companies(&self, interrupt: &Interrupt) -> Result<Vec<String>, DriverError> {
        let mut names = Vec::new();
        let export = CollectionExport { collection: "Company", fetch: vec!["Name"], tdl: None };
        self.export(&export, None, interrupt, &mut |object| {
            if let Some(Some(name)) = object.into_iter().next() {
                names.push(name);
            }
            Ok(true)
        })?;
        Ok(names)
    }

    fn run(
        &self,
        query: &Compiled,
        interrupt: &Interrupt,
        sink: &mut dyn RowSink,
    ) -> Result<QueryStats, DriverError> {
        let metas: Vec<ColumnMeta> = query
            .select
            .iter()
            .map(|&i| {
                let (name, kind) = &query.fetch[i];
                ColumnMeta {
                    name: name.clone(),
                    wire_type: kind.wire_type(),
                    db_type: kind.name().into(),
                    nullable: Some(true),
                }
            })
            .collect();
        let offset = query.offset.unwrap_or(0);
        let limit = query.limit.unwrap_or(u64::MAX);
        let keep = usize::try_from(offset.saturating_add(limit)).unwrap_or(usize::MAX);
        let mut announced = false;
        let mut emitted = 0u64;
        let mut matched = 0u64;
        let mut held: Vec<Vec<Val>> = Vec::new();
        let fetch: Vec<&str> = query.fetch.iter().map(|(n, _)| n.as_str()).collect();
        let export = CollectionExport { collection: &query.collection, fetch, tdl: query.tdl.as_deref() };
        sink.started(None)?;
        self.export(&export, self.company.as_deref(), interrupt, &mut |object| {
            let row = query.typed(object)?;
            if query.filter.as_ref().is_some_and(|f| f.eval(&row) != Some(true)) {
                return Ok(true);
            }
            if query.order.is_empty() {
                matched += 1;
                if matched <= offset {
                    return Ok(true);
                }
                if emitted >= limit {
                    return Ok(false);
                }
                if !announced {
                    sink.columns(&metas)?;
                    announced = true;
                }
                emit(sink, &query.select, &row)?;
                emitted += 1;
                return Ok(emitted < limit);
            }
            held.push(row);
            if keep < MAX_SORTED_ROWS && held.len() >= (keep * 2).max(1024) {
                query.sort(&mut held);
                held.truncate(keep);
            }
            if held.len() > MAX_SORTED_ROWS {
                return Err(DriverError::Query(format!(
                    "Tally: ORDER BY holds the matching objects in memory, and more than {MAX_SORTED_ROWS} \
                     match; narrow the WHERE condition or add a LIMIT"
                )));
            }
            Ok(true)
        })?;
        if !announced {
            sink.columns(&metas)?;
        }
        if !query.order.is_empty() {
            query.sort(&mut held);
            let skip = usize::try_from(offset).unwrap_or(usize::MAX);
            for (n, row) in
                held.iter().skip(skip).take(usize::try_from(limit).unwrap_or(usize::MAX)).enumerate()
            {
                interrupt.check_row(n as u64)?;
                emit(sink, &query.select, row)?;
                emitted += 1;
            }
        }
        Ok(QueryStats { rows: emitted, columns: metas.len() })
    }
}

/// One request in flight: the answer's objects, and the cancel hook that shuts its socket.
struct Exchange {
    objects: Objects,
    _hook: HookGuard,
}

fn emit(sink: &mut dyn RowSink, select: &[usize], row: &[Val]) -> Result<(), DriverError> {
    let cells: Vec<Cell<'_>> = select.iter().map(|&i| row[i].cell()).collect();
    sink.row(&cells)?;
    Ok(())
}

/// Fields of a collection with their Tally types, in the gate's order.
type Fields = Vec<(String, Kind)>;

/// The gate's catalogue: each collection with its fields and Tally types, read from the
/// verdict on `SELECT * FROM <collection>` (so the driver holds no copy of it).
fn catalogue() -> &'static [(&'static str, Fields)] {
    static CATALOGUE: OnceLock<Vec<(&'static str, Fields)>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        COLLECTIONS
            .iter()
            .filter_map(|&name| {
                let sql = format!("SELECT * FROM {name}");
                let checked = gate::check_with(
                    &sql,
                    0,
                    gate::Target::TALLY,
                    &gate::Policy::default(),
                    &gate::Limits::default(),
                );
                let plan = checked.ok().and_then(|c| serde_json::from_str::<Plan>(c.sql()).ok());
                let Some(plan) = plan else {
                    tracing::error!(collection = name, "the gate has no Tally catalogue entry");
                    return None;
                };
                let fields =
                    plan.fields.into_iter().filter_map(|f| Some((f.name, Kind::parse(&f.kind)?))).collect();
                Some((name, fields))
            })
            .collect()
    })
}

fn fields_of(collection: &str) -> Option<&'static [(String, Kind)]> {
    catalogue().iter().find(|(c, _)| *c == collection).map(|(_, f)| f.as_slice())
}

/// The gate's plan, as `gate/src/tally.rs` writes it.
#[derive(Debug, Deserialize)]
struct Plan {
    collection: String,
    fields: Vec<PlanField>,
    filter: Option<Json>,
    tdl: Option<String>,
    #[serde(default)]
    order: Vec<PlanOrder>,
    limit: Option<u64>,
    offset: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct PlanField {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct PlanOrder {
    field: String,
    desc: bool,
}

/// A plan ready to run: the fields to fetch (selected first), the condition and the order
/// over their positions.
#[derive(Debug)]
struct Compiled {
    collection: String,
    fetch: Vec<(String, Kind)>,
    select: Vec<usize>,
    filter: Option<Cond>,
    tdl: Option<String>,
    order: Vec<(usize, bool)>,
    limit: Option<u64>,
    offset: Option<u64>,
}

#[derive(Debug)]
enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp { field: usize, op: Op, value: Json },
    Null { field: usize, negated: bool },
    In { field: usize, values: Vec<Json> },
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

fn bad_plan(why: impl std::fmt::Display) -> DriverError {
    DriverError::Query(format!("Tally: not a Tally export plan from the gate: {why}"))
}

impl Compiled {
    fn parse(text: &str) -> Result<Compiled, DriverError> {
        let plan: Plan = serde_json::from_str(text).map_err(bad_plan)?;
        let known = fields_of(&plan.collection)
            .ok_or_else(|| bad_plan(format!("unknown collection `{}`", plan.collection)))?;
        let mut fetch: Vec<(String, Kind)> = Vec::new();
        let position = |name: &str, fetch: &mut Vec<(String, Kind)>| -> Result<usize, DriverError> {
            if let Some(i) = fetch.iter().position(|(n, _)| n == name) {
                return Ok(i);
            }
            let (n, kind) = known
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| bad_plan(format!("unknown field `{name}`")))?;
            fetch.push((n.clone(), *kind));
            Ok(fetch.len() - 1)
        };
        // Selected columns keep their plan order (a field may be selected twice).
        let mut select = Vec::new();
        for field in &plan.fields {
            let i = position(&field.name, &mut fetch)?;
            if fetch[i].1.name() != field.kind {
                return Err(bad_plan(format!("field `{}` is not of type {}", field.name, field.kind)));
            }
            select.push(i);
        }
        let filter = match &plan.filter {
            None | Some(Json::Null) => None,
            Some(tree) => Some(cond(tree, &mut |name| position(name, &mut fetch), 0)?),
        };
        let mut order = Vec::new();
        for o in &plan.order {
            order.push((position(&o.field, &mut fetch)?, o.desc));
        }
        Ok(Compiled {
            collection: plan.collection,
            fetch,
            select,
            filter,
            tdl: plan.tdl,
            order,
            limit: plan.limit,
            offset: plan.offset,
        })
    }

    /// Types the raw values of one object.
    fn typed(&self, object: RawObject) -> Result<Vec<Val>, DriverError> {
        object
            .into_iter()
            .zip(&self.fetch)
            .map(|(raw, (name, kind))| {
                Val::from_tally(*kind, raw)
                    .map_err(|why| DriverError::Query(format!("Tally: {} {name}: {why}", self.collection)))
            })
            .collect()
    }

    fn sort(&self, rows: &mut [Vec<Val>]) {
        rows.sort_by(|a, b| {
            self.order.iter().fold(std::cmp::Ordering::Equal, |acc, &(i, desc)| {
                acc.then_with(|| {
                    let o = a[i].order(&b[i]);
                    if desc { o.reverse() } else { o }
                })
            })
        });
    }
}

/// The plan's condition tree (see `gate/src/tally.rs`); anything else is refused.
fn cond(
    tree: &Json,
    position: &mut dyn FnMut(&str) -> Result<usize, DriverError>,
    depth: usize,
) -> Result<Cond, DriverError> {
    if depth > 256 {
        return Err(bad_plan("the condition nests too deep"));
    }
    let Json::Object(map) = tree else { return Err(bad_plan("a condition is not an object")) };
    let pair = |list: &Json, position: &mut dyn FnMut(&str) -> Result<usize, DriverError>| match list {
        Json::Array(items) if items.len() == 2 => Ok((
            Box::new(cond(&items[0], position, depth + 1)?),
            Box::new(cond(&items[1], position, depth + 1)?),
        )),
        _ => Err(bad_plan("AND/OR take two conditions")),
    };
    if map.len() == 1 {
        if let Some(list) = map.get("and") {
            let (l, r) = pair(list, position)?;
            return Ok(Cond::And(l, r));
        }
        if let Some(list) = map.get("or") {
            let (l, r) = pair(list, position)?;
            return Ok(Cond::Or(l, r));
        }
        if let Some(inner) = map.get("not") {
            return Ok(Cond::Not(Box::new(cond(inner, position, depth + 1)?)));
        }
    }
    let op = map.get("op").and_then(Json::as_str).ok_or_else(|| bad_plan("a condition without `op`"))?;
    let field =
        map.get("field").and_then(Json::as_str).ok_or_else(|| bad_plan("a condition without `field`"))?;
    let field = position(field)?;
    let value = || map.get("value").cloned().ok_or_else(|| bad_plan("a comparison without `value`"));
    Ok(match op {
        "eq" => Cond::Cmp { field, op: Op::Eq, value: value()? },
        "ne" => Cond::Cmp { field, op: Op::Ne, value: value()? },
        "lt" => Cond::Cmp { field, op: Op::Lt, value: value()? },
        "le" => Cond::Cmp { field, op: Op::Le, value: value()? },
        "gt" => Cond::Cmp { field, op: Op::Gt, value: value()? },
        "ge" => Cond::Cmp { field, op: Op::Ge, value: value()? },
        "null" => Cond::Null { field, negated: false },
        "notNull" => Cond::Null { field, negated: true },
        "in" => match map.get("values") {
            Some(Json::Array(values)) => Cond::In { field, values: values.clone() },
            _ => return Err(bad_plan("IN without `values`")),
        },
        other => return Err(bad_plan(format!("the operator `{other}`"))),
    })
}

impl Cond {
    /// SQL's three-valued logic: `None` is unknown (a NULL took part).
    fn eval(&self, row: &[Val]) -> Option<bool> {
        match self {
            Cond::And(l, r) => match (l.eval(row), r.eval(row)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Cond::Or(l, r) => match (l.eval(row), r.eval(row)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Cond::Not(inner) => inner.eval(row).map(|b| !b),
            Cond::Null { field, negated } => Some((row[*field] == Val::Null) != *negated),
            Cond::Cmp { field, op, value } => {
                let o = row[*field].compare(value)?;
                Some(match op {
                    Op::Eq => o.is_eq(),
                    Op::Ne => o.is_ne(),
                    Op::Lt => o.is_lt(),
                    Op::Le => o.is_le(),
                    Op::Gt => o.is_gt(),
                    Op::Ge => o.is_ge(),
                })
            }
            Cond::In { field, values } => {
                let mut unknown = false;
                for v in values {
                    match row[*field].compare(v) {
                        Some(o) if o.is_eq() => return Some(true),
                        Some(_) => {}
                        None => unknown = true,
                    }
                }
                if unknown { None } else { Some(false) }
            }
        }
    }
}

fn bounded(timeout: Duration) -> Interrupt {
    Interrupt::new(&QueryOptions { timeout: Some(timeout), ..QueryOptions::default() }, Instant::now())
}

impl Driver for TallyDb {
    fn ping(&self) -> Result<(), DriverError> {
        let companies = self.companies(&bounded(PING_TIMEOUT))?;
        if companies.is_empty() {
            return Err(DriverError::Unavailable(
                "Tally has no company loaded (open one in TallyPrime)".into(),
            ));
        }
        if let Some(wanted) = &self.company
            && !companies.iter().any(|c| c.to_lowercase() == wanted.to_lowercase())
        {
            return Err(DriverError::Unavailable(format!(
                "Tally has no company named \"{wanted}\" loaded (loaded: {}); open it in TallyPrime, or fix `company`",
                companies.join(", ")
            )));
        }
        Ok(())
    }

    fn pool_status(&self) -> PoolStatus {
        // No pool: each query is one HTTP request on its own connection.
        PoolStatus::default()
    }

    fn query(
        &self,
        sql: &str,
        params: &[Json],
        interrupt: &Interrupt,
        sink: &mut dyn RowSink,
    ) -> Result<QueryStats, DriverError> {
        if !params.is_empty() {
            return Err(DriverError::Bind("Tally queries take no parameters: write the values in".into()));
        }
        let query = Compiled::parse(sql)?;
        self.run(&query, interrupt, sink)
    }

    fn discover(
        &self,
        connection: &str,
        progress: &mut dyn FnMut(DiscoveryProgress),
    ) -> Result<DatabaseSchema, DriverError> {
        let catalogue = catalogue();
        let mut tables = Vec::with_capacity(catalogue.len());
        progress(DiscoveryProgress { done: 0, total: Some(catalogue.len()) });
        for (collection, fields) in catalogue {
            let mut count = 0u64;
            let first = fields.first().map(|(n, _)| n.as_str()).unwrap_or("Name");
            let export = CollectionExport { collection, fetch: vec![first], tdl: None };
            self.export(&export, self.company.as_deref(), &bounded(DISCOVERY_TIMEOUT), &mut |_| {
                count += 1;
                Ok(true)
            })?;
            let columns = fields
                .iter()
                .map(|(name, kind)| Column {
                    name: name.clone(),
                    data_type: kind.name().into(),
                    wire_type: kind.wire_type(),
                    nullable: name != "GUID",
                    default: None,
                    enum_values: Vec::new(),
                    presence: None,
                })
                .collect();
            let has_guid = fields.iter().any(|(n, _)| n == "GUID");
            tables.push(Table {
                schema: None,
                name: (*collection).to_owned(),
                kind: TableKind::Table,
                columns,
                primary_key: if has_guid { vec!["GUID".into()] } else { Vec::new() },
                foreign_keys: Vec::new(),
                row_count_estimate: Some(count),
                indexes: Vec::new(),
                reads: None,
            });
            progress(DiscoveryProgress { done: tables.len(), total: Some(catalogue.len()) });
        }
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(DatabaseSchema { connection: connection.to_owned(), db_type: DbKind::Tally, tables })
    }

    fn write_privileges(&self) -> Result<PrivilegeReport, DriverError> {
        Ok(PrivilegeReport {
            user: "(none: TallyPrime's XML gateway has no login)".into(),
            can_write: false,
            superuser: false,
            findings: vec![
                "the driver only ever sends Export requests (it cannot build an Import); the gateway itself \
                 has no users or permissions, so anything that reaches its port could import: keep the port \
                 on this machine or a trusted network"
                    .into(),
            ],
            suggested_sql: "-- TallyPrime has no database users: nothing to grant. Limit who can reach the \
                            XML gateway's port (F1: Help > Settings > Connectivity) instead."
                .into(),
        })
    }

    fn sql_dialect(&self) -> OdbcDialect {
        OdbcDialect::Generic
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sql: &str) -> Compiled {
        let checked =
            gate::check_with(sql, 0, gate::Target::TALLY, &gate::Policy::default(), &gate::Limits::default())
                .expect("the gate approves");
        Compiled::parse(checked.sql()).expect("a plan")
    }

    fn row(query: &Compiled, values: &[(&str, Val)]) -> Vec<Val> {
        query
            .fetch
            .iter()
            .map(|(n, _)| values.iter().find(|(f, _)| f == n).map_or(Val::Null, |(_, v)| v.clone()))
            .collect()
    }

    #[test]
    fn the_collection_list_is_the_gates() {
        let err = gate::check_with(
            "SELECT * FROM Nothing",
            0,
            gate::Target::TALLY,
            &gate::Policy::default(),
            &gate::Limits::default(),
        )
        .unwrap_err();
        let known = err.to_string();
        let known = known.split("known: ").nth(1).expect("the gate lists the collections");
        assert_eq!(known.trim_end_matches(')'), COLLECTIONS.join(", "), "{err}");
        assert_eq!(catalogue().len(), COLLECTIONS.len());
        let ledger = fields_of("Ledger").unwrap();
        assert!(ledger.contains(&("ClosingBalance".into(), Kind::Amount)));
        assert!(fields_of("Voucher").unwrap().contains(&("Date".into(), Kind::Date)));
    }

    #[test]
    fn plans_fetch_selected_then_filtered_and_sorted_fields() {
        let q = plan(
            "SELECT Name FROM Ledger WHERE Parent = 'Sundry Debtors' ORDER BY ClosingBalance DESC LIMIT 2",
        );
        let names: Vec<&str> = q.fetch.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Name", "Parent", "ClosingBalance"]);
        assert_eq!(q.select, [0]);
        assert_eq!(q.order, [(2, true)]);
        assert_eq!(q.limit, Some(2));
        assert!(q.tdl.as_deref().is_some_and(|t| t.contains("$Parent")));
    }

    #[test]
    fn filters_are_exact_and_three_valued() {
        let q = plan("SELECT Name FROM Ledger WHERE Parent = 'Sundry Debtors' AND ClosingBalance > 1000");
        let f = q.filter.as_ref().unwrap();
        let parent = |p: &str, bal: &str| {
            row(&q, &[("Parent", Val::Text(p.into())), ("ClosingBalance", Val::Dec(bal.into()))])
        };
        assert_eq!(f.eval(&parent("Sundry Debtors", "1000.01")), Some(true));
        assert_eq!(f.eval(&parent("sundry debtors", "5000")), Some(false), "case-sensitive");
        assert_eq!(f.eval(&parent("Sundry Debtors", "1000.00")), Some(false));
        assert_eq!(f.eval(&row(&q, &[("ClosingBalance", Val::Dec("5000".into()))])), None);

        let q = plan("SELECT Name FROM Ledger WHERE NOT (Parent IN ('A', 'B')) OR Email IS NULL");
        let f = q.filter.as_ref().unwrap();
        assert_eq!(
            f.eval(&row(&q, &[("Parent", Val::Text("A".into())), ("Email", Val::Text("x".into()))])),
            Some(false)
        );
        assert_eq!(
            f.eval(&row(&q, &[("Parent", Val::Text("C".into())), ("Email", Val::Text("x".into()))])),
            Some(true)
        );
        assert_eq!(f.eval(&row(&q, &[("Parent", Val::Text("A".into()))])), Some(true));

        let q = plan("SELECT Name FROM Ledger WHERE IsBillWiseOn = true");
        assert_eq!(
            q.filter.as_ref().unwrap().eval(&row(&q, &[("IsBillWiseOn", Val::Bool(true))])),
            Some(true)
        );
    }

    #[test]
    fn malformed_plans_are_refused() {
        for text in [
            "not json",
            r#"{"collection":"Nothing","fields":[],"filter":null,"tdl":null,"order":[],"limit":null,"offset":null}"#,
            r#"{"collection":"Ledger","fields":[{"name":"Secret","type":"String"}],"filter":null,"tdl":null,"order":[],"limit":null,"offset":null}"#,
            r#"{"collection":"Ledger","fields":[{"name":"Name","type":"Amount"}],"filter":null,"tdl":null,"order":[],"limit":null,"offset":null}"#,
            r#"{"collection":"Ledger","fields":[],"filter":{"op":"like","field":"Name","value":"x"},"tdl":null,"order":[],"limit":null,"offset":null}"#,
        ] {
            assert!(matches!(Compiled::parse(text), Err(DriverError::Query(_))), "{text}");
        }
    }
}
