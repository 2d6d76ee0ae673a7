//! MongoDB (type `mongodb`): the official driver's sync API, read-only by construction.
//!
//! **Connecting.** A `mongodb://` connection string (`connectionString`; `mongodb+srv://` needs
//! DNS SRV lookups, which this build leaves out) or `host`/`port` (default 27017)/`database`/
//! `user` (defined in `admin`; another `authSource` needs a connectionString), with the
//! password from the vault (SCRAM; never in the string). The database is
//! `database` or the one the string names. TLS per [`SslMode`]: `disable` none, `prefer` as the
//! string says (MongoDB has no TLS negotiation to fall back from), `require` TLS without
//! checking the certificate, `verify-full` TLS checked against `sslRootCert` or the Web PKI
//! roots (`verify-ca` is refused: the rustls backend always compares the host name). A `PLAIN`
//! (LDAP) login sends the password in clear and is refused without TLS unless
//! `allowCleartextPassword`. The client's own pool follows [`PoolSettings`](crate::PoolSettings); opening contacts
//! no server.
//!
//! **Queries.** The text is the gate's approved JSON (`gate/src/mongo.rs`): the find form runs
//! `find` with filter, projection, sort, skip and limit, the pipeline form runs `aggregate`.
//! Read preference is the string's, else `primaryPreferred`; `maxTimeMS` is the time left of
//! the command's timeout. Every operation carries a comment `mini-connector:<id>`, which is
//! also the server session id handed to [`RowSink::started`] (`mongo:<comment>`): a cancel, or
//! [`Database::cancel_server_session`](crate::Database::cancel_server_session) after a crash,
//! finds the operation with `$currentOp` (`$ownOps`) and ends it with `killOp`.
//!
//! **Rows.** When the result's shape is known — a find with an inclusion projection, or a
//! pipeline ending in an inclusion `$project` — there is one column per projected field (dotted
//! paths resolved), in projection order, `_id` first unless excluded. Otherwise every document
//! is one row of one `document` column (type `json`) holding it as relaxed Extended JSON. Values
//! map as: double → float, int32/int64 → integer, bool, null/undefined/missing → null, string →
//! text, decimal128 → decimal (text), date → RFC 3339 text, ObjectId → 24 hex digits, binary →
//! bytes (base64), anything else (documents, arrays, timestamps, regexes) → relaxed Extended
//! JSON text. Documents are read from the wire one at a time (zero-copy raw BSON), never
//! collected.

mod discover;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mongodb::bson::{self, Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf, doc};
use mongodb::error::{Error as MongoError, ErrorKind};
use mongodb::options::{
    AuthMechanism, ClientOptions, ReadPreference, ReadPreferenceOptions, SelectionCriteria, ServerAddress,
    Tls, TlsOptions,
};
use mongodb::sync::{Client, Cursor};
use serde_json::Value;

use crate::database::Driver;
use crate::pool::PoolStatus;
use crate::query::Interrupt;
use crate::secret::scrub;
use crate::{
    Cell, ColumnMeta, ConnectionSpec, DatabaseSchema, DiscoveryProgress, DriverError, OdbcDialect,
    PrivilegeReport, QueryStats, RowSink, Secret, SslMode, WireType,
};

/// Server error codes that mean "stopped from outside" (killOp, interrupted, cursor killed).
const STOPPED_CODES: &[i32] = &[11600, 11601, 237, 43, 175];
/// `MaxTimeMSExpired`.
const TIME_LIMIT: i32 = 50;
/// Documents per batch: small enough that a batch of big documents stays a few MB.
const BATCH_SIZE: u32 = 500;

/// Cheap to clone: the client is a handle on the driver's shared pool.
#[derive(Clone)]
pub(crate) struct MongoDb {
    client: Client,
    database: String,
    /// Secrets that must never show in an error message.
    secrets: Vec<Secret>,
}

impl MongoDb {
    pub(crate) fn open(spec: &ConnectionSpec) -> Result<Box<dyn Driver>, DriverError> {
        crate::pool::validate(&spec.pool)?;
        let password = spec.password.resolve()?;
        let secrets: Vec<Secret> =
            password.iter().cloned().chain(spec.connection_string.iter().cloned()).collect();
        let refs: Vec<&Secret> = secrets.iter().collect();
        let open_err = |what: String| DriverError::Open(format!("{}: {}", spec.name, scrub(what, &refs)));
        let mut options = match &spec.connection_string {
            Some(cs) => ClientOptions::parse(cs.expose())
                .run()
                .map_err(|e| open_err(format!("connectionString: {}", message(&e))))?,
            None => {
                let host = spec.host.clone().unwrap_or_else(|| "localhost".into());
                let mut o = ClientOptions::default();
                o.hosts = vec![ServerAddress::Tcp { host, port: Some(spec.port.unwrap_or(27017)) }];
                o
            }
        };
        let database =
            spec.database.clone().or_else(|| options.default_database.clone()).ok_or_else(|| {
                open_err("`database` is required for mongodb (or a database in the connectionString)".into())
            })?;
        if let Some(user) = &spec.user {
            let credential = options.credential.get_or_insert_with(Default::default);
            credential.username = Some(user.clone());
            if credential.source.is_none() && spec.connection_string.is_none() {
                // Where MongoDB keeps logins unless told otherwise; a user defined in another
                // database needs `authSource` in a connectionString.
                credential.source = Some("admin".into());
            }
        }
        if let Some(password) = &password {
            let credential = options.credential.as_mut().ok_or_else(|| {
                open_err("a password is set but no `user` (or user in the connectionString)".into())
            })?;
            credential.password = Some(password.expose().to_owned());
        }
        match spec.ssl_mode {
            SslMode::Disable => options.tls = Some(Tls::Disabled),
            SslMode::Prefer => {}
            SslMode::Require => {
                options.tls =
                    Some(Tls::Enabled(TlsOptions::builder().allow_invalid_certificates(true).build()));
            }
            SslMode::VerifyCa => {
                return Err(open_err(
                    "sslMode verify-ca is not available for mongodb (its TLS always checks the host \
                     name); use verify-full with `sslRootCert`"
                        .into(),
                ));
            }
            SslMode::VerifyFull => {
                let mut tls = TlsOptions::default();
                tls.ca_file_path = spec.ssl_root_cert.clone();
                options.tls = Some(Tls::Enabled(tls));
            }
        }
        let tls_on = matches!(options.tls, Some(Tls::Enabled(_)));
        let plain = options.credential.as_ref().is_some_and(|c| c.mechanism == Some(AuthMechanism::Plain));
        if plain && !tls_on && !spec.allow_cleartext_password {
            return Err(open_err(
                "authMechanism PLAIN sends the password in clear text and this connection has no TLS \
                 (set sslMode require/verify-full, or allowCleartextPassword)"
                    .into(),
            ));
        }
        options.app_name = Some("mini-connector".into());
        options.max_pool_size = Some(spec.pool.max_connections.max(1));
        options.min_pool_size = Some(spec.pool.min_connections.min(spec.pool.max_connections));
        if !spec.pool.idle_timeout.is_zero() {
            options.max_idle_time = Some(spec.pool.idle_timeout);
        }
        options.server_selection_timeout = Some(spec.pool.acquire_timeout);
        options.connect_timeout = Some(spec.pool.acquire_timeout.min(Duration::from_secs(10)));
        if options.selection_criteria.is_none() {
            options.selection_criteria =
                Some(SelectionCriteria::ReadPreference(ReadPreference::PrimaryPreferred {
                    options: Some(ReadPreferenceOptions::default()),
                }));
        }
        let client = Client::with_options(options).map_err(|e| open_err(message(&e)))?;
        Ok(Box::new(MongoDb { client, database, secrets }))
    }

    fn db(&self) -> mongodb::sync::Database {
        self.client.database(&self.database)
    }

    /// A driver error as ours, secrets scrubbed; `interrupt` tells a stop from outside.
    fn error(&self, e: &MongoError, interrupt: Option<&Interrupt>) -> DriverError {
        let refs: Vec<&Secret> = self.secrets.iter().collect();
        let text = scrub(message(e), &refs);
        match &*e.kind {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
            | ErrorKind::InvalidTlsConfig { .. } => {
                DriverError::Unavailable(format!("cannot reach the server: {text}"))
            }
            ErrorKind::Authentication { .. } => {
                DriverError::Unavailable(format!("authentication failed: {text}"))
            }
            ErrorKind::Command(c) if c.code == 18 => {
                DriverError::Unavailable(format!("authentication failed: {text}"))
            }
            ErrorKind::Command(c) if c.code == TIME_LIMIT => match interrupt {
                Some(i) if i.cancel.is_cancelled() => DriverError::Cancelled,
                _ => DriverError::Timeout,
            },
            ErrorKind::Command(c) if STOPPED_CODES.contains(&c.code) && interrupt.is_some() => {
                interrupt.map_or(DriverError::Cancelled, Interrupt::stopped)
            }
            _ if interrupt.is_some_and(|i| i.cancel.is_cancelled()) => DriverError::Cancelled,
            _ => DriverError::Query(text),
        }
    }

    /// Ends, on the server, every operation of ours carrying `comment`; true once none runs.
    fn kill_by_comment(&self, comment: &str) -> Result<bool, DriverError> {
        let admin = self.client.database("admin");
        let ops = |client_err: &dyn Fn(&MongoError) -> DriverError| -> Result<Vec<Bson>, DriverError> {
            let reply = admin
                .run_command(doc! { "currentOp": 1, "$ownOps": true, "command.comment": comment })
                .run()
                .map_err(|e| client_err(&e))?;
            Ok(reply
                .get_array("inprog")
                .map(|a| a.iter().filter_map(|op| op_id(op, comment)).collect())
                .unwrap_or_default())
        };
        let err = |e: &MongoError| self.error(e, None);
        for _ in 0..20 {
            let running = ops(&err)?;
            if running.is_empty() {
                return Ok(true);
            }
            for op in running {
                if let Err(e) = admin.run_command(doc! { "killOp": 1, "op": op }).run() {
                    tracing::debug!(error = %self.error(&e, None), "killOp failed");
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(false)
    }

    fn run_query(
        &self,
        plan: &Plan,
        comment: &str,
        interrupt: &Interrupt,
        sink: &mut dyn RowSink,
    ) -> Result<QueryStats, DriverError> {
        let coll = self.db().collection::<RawDocumentBuf>(&plan.collection);
        let max_time = interrupt.remaining().map(|d| d.max(Duration::from_millis(1)));
        let comment_bson = Bson::String(comment.to_owned());
        let cursor: Result<Cursor<RawDocumentBuf>, MongoError> = match &plan.form {
            Form::Find { filter, projection, sort, skip, limit } => coll
                .find(filter.clone())
                .optional(projection.clone(), |a, p| a.projection(p))
                .optional(sort.clone(), |a, s| a.sort(s))
                .optional(*skip, |a, s| a.skip(s))
                .optional(*limit, |a, l| a.limit(l))
                .optional(max_time, |a, t| a.max_time(t))
                .comment(comment_bson)
                .batch_size(BATCH_SIZE)
                .run(),
            Form::Aggregate { pipeline } => coll
                .aggregate(pipeline.clone())
                .with_type::<RawDocumentBuf>()
                .optional(max_time, |a, t| a.max_time(t))
                .comment(comment_bson)
                .batch_size(BATCH_SIZE)
                .run(),
        };
        let mut cursor = cursor.map_err(|e| self.error(&e, Some(interrupt)))?;
        let shape = Shape::of(plan);
        sink.columns(&shape.columns())?;
        let mut texts: Vec<String> = Vec::new();
        let mut rows = 0u64;
        loop {
            interrupt.check_row(rows)?;
            match cursor.advance() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(self.error(&e, Some(interrupt))),
            }
            let doc = cursor.current();
            shape.emit(doc, &mut texts, sink)?;
            rows += 1;
        }
        Ok(QueryStats { rows, columns: shape.width() })
    }
}

/// A builder step applied only when the value is there.
trait Optional: Sized {
    fn optional<T>(self, value: Option<T>, set: impl FnOnce(Self, T) -> Self) -> Self {
        match value {
            Some(v) => set(self, v),
            None => self,
        }
    }
}

impl<T> Optional for T {}

/// The approved query, converted to BSON.
struct Plan {
    collection: String,
    form: Form,
}

#[expect(clippy::large_enum_variant, reason = "one per running query, never in a collection")]
enum Form {
    Find {
        filter: Document,
        projection: Option<Document>,
        sort: Option<Document>,
        skip: Option<u64>,
        limit: Option<i64>,
    },
    Aggregate {
        pipeline: Vec<Document>,
    },
}

impl Plan {
    /// Reads the gate's canonical JSON; Extended JSON wrappers (`$date`, `$oid`, ...) become
    /// BSON values.
    fn parse(text: &str) -> Result<Plan, DriverError> {
        let bad = |what: String| DriverError::Query(format!("not an approved MongoDB query: {what}"));
        let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let object = value.as_object().ok_or_else(|| bad("not an object".into()))?;
        let collection = object
            .get("collection")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no collection".into()))?
            .to_owned();
        let document = |key: &str| -> Result<Option<Document>, DriverError> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match Bson::try_from(v.clone()).map_err(|e| bad(format!("{key}: {e}")))? {
                    Bson::Document(d) => Ok(Some(d)),
                    _ => Err(bad(format!("{key} is not a document"))),
                },
            }
        };
        let number = |key: &str| -> Result<Option<i64>, DriverError> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    v.as_i64().filter(|n| *n >= 0).map(Some).ok_or_else(|| bad(format!("{key}: not a count")))
                }
            }
        };
        let form = match object.get("pipeline") {
            // The gate refuses them; a second look here costs nothing (read-only twice over).
            Some(Value::Array(stages))
                if stages.iter().any(|s| s.get("$out").is_some() || s.get("$merge").is_some()) =>
            {
                return Err(DriverError::WriteRejected("$out and $merge write into a collection".into()));
            }
            Some(Value::Array(stages)) => Form::Aggregate {
                pipeline: stages
                    .iter()
                    .map(|s| match Bson::try_from(s.clone()) {
                        Ok(Bson::Document(d)) => Ok(d),
                        Ok(_) => Err(bad("a pipeline stage is not a document".into())),
                        Err(e) => Err(bad(format!("pipeline: {e}"))),
                    })
                    .collect::<Result<_, _>>()?,
            },
            Some(_) => return Err(bad("pipeline is not an array".into())),
            None => Form::Find {
                filter: document("filter")?.unwrap_or_default(),
                projection: document("projection")?,
                sort: document("sort")?,
                skip: number("skip")?.map(|n| n.unsigned_abs()),
                limit: number("limit")?,
            },
        };
        Ok(Plan { collection, form })
    }

    /// The inclusion projection that fixes the result's shape, if any.
    fn final_projection(&self) -> Option<&Document> {
        match &self.form {
            Form::Find { projection, .. } => projection.as_ref(),
            Form::Aggregate { pipeline } => {
                pipeline.last().and_then(|stage| stage.get_document("$project").ok())
            }
        }
    }
}

/// How documents become rows.
enum Shape {
    /// One column per projected path.
    Fields(Vec<String>),
    /// One `document` column.
    Whole,
}

impl Shape {
    fn of(plan: &Plan) -> Shape {
        let Some(projection) = plan.final_projection() else { return Shape::Whole };
        let excluded = |v: &Bson| {
            matches!(v, Bson::Int32(0) | Bson::Int64(0) | Bson::Boolean(false))
                || matches!(v, Bson::Double(d) if *d == 0.0)
        };
        let mut fields = Vec::new();
        let mut id = true;
        for (key, value) in projection {
            if key == "_id" {
                id = !excluded(value);
            } else if excluded(value) {
                // An exclusion projection: the remaining fields are not known.
                return Shape::Whole;
            } else {
                fields.push(key.clone());
            }
        }
        if fields.is_empty() && !id {
            return Shape::Whole;
        }
        if id {
            fields.insert(0, "_id".into());
        }
        Shape::Fields(fields)
    }

    fn width(&self) -> usize {
        match self {
            Shape::Fields(f) => f.len(),
            Shape::Whole => 1,
        }
    }

    fn columns(&self) -> Vec<ColumnMeta> {
        match self {
            Shape::Fields(fields) => fields
                .iter()
                .map(|f| ColumnMeta {
                    name: f.clone(),
                    wire_type: WireType::Unknown,
                    db_type: "bson".into(),
                    nullable: Some(true),
                })
                .collect(),
            Shape::Whole => vec![ColumnMeta {
                name: "document".into(),
                wire_type: WireType::Json,
                db_type: "document".into(),
                nullable: Some(false),
            }],
        }
    }

    fn emit(
        &self,
        doc: &RawDocument,
        texts: &mut Vec<String>,
        sink: &mut dyn RowSink,
    ) -> Result<(), DriverError> {
        texts.clear();
        match self {
            Shape::Whole => {
                texts.push(extended_json(RawBsonRef::Document(doc))?);
                sink.row(&[Cell::Text(&texts[0])])?;
            }
            Shape::Fields(fields) => {
                let values: Vec<Pre<'_>> =
                    fields.iter().map(|f| pre_cell(lookup(doc, f), texts)).collect::<Result<_, _>>()?;
                let cells: Vec<Cell<'_>> = values.iter().map(|v| v.cell(texts)).collect();
                sink.row(&cells)?;
            }
        }
        Ok(())
    }
}

/// A cell before the owned texts are final: borrowed from the document, or an index into them.
enum Pre<'a> {
    Cell(Cell<'a>),
    Text(usize),
    Decimal(usize),
}

impl<'a> Pre<'a> {
    fn cell<'b>(&self, texts: &'b [String]) -> Cell<'b>
    where
        'a: 'b,
    {
        match self {
            Pre::Cell(c) => *c,
            Pre::Text(i) => Cell::Text(&texts[*i]),
            Pre::Decimal(i) => Cell::Decimal(&texts[*i]),
        }
    }
}

fn pre_cell<'a>(value: Option<RawBsonRef<'a>>, texts: &mut Vec<String>) -> Result<Pre<'a>, DriverError> {
    let mut owned = |s: String, decimal: bool| {
        texts.push(s);
        let i = texts.len() - 1;
        if decimal { Pre::Decimal(i) } else { Pre::Text(i) }
    };
    Ok(match value {
        None | Some(RawBsonRef::Null | RawBsonRef::Undefined) => Pre::Cell(Cell::Null),
        Some(RawBsonRef::Double(d)) => Pre::Cell(Cell::Float(d)),
        Some(RawBsonRef::Int32(i)) => Pre::Cell(Cell::Int(i64::from(i))),
        Some(RawBsonRef::Int64(i)) => Pre::Cell(Cell::Int(i)),
        Some(RawBsonRef::Boolean(b)) => Pre::Cell(Cell::Bool(b)),
        Some(RawBsonRef::String(s)) => Pre::Cell(Cell::Text(s)),
        Some(RawBsonRef::Binary(b)) => Pre::Cell(Cell::Bytes(b.bytes)),
        Some(RawBsonRef::Decimal128(d)) => owned(d.to_string(), true),
        Some(RawBsonRef::ObjectId(o)) => owned(o.to_hex(), false),
        Some(RawBsonRef::DateTime(t)) => owned(date_text(t), false),
        Some(other) => owned(extended_json(other)?, false),
    })
}

/// RFC 3339 in UTC, or the milliseconds for a date outside years 0–9999.
fn date_text(t: bson::DateTime) -> String {
    t.try_to_rfc3339_string().unwrap_or_else(|_| t.timestamp_millis().to_string())
}

/// Relaxed Extended JSON of one value.
fn extended_json(value: RawBsonRef<'_>) -> Result<String, DriverError> {
    let owned = Bson::try_from(value)
        .map_err(|e| DriverError::Query(format!("a document the server sent does not decode: {e}")))?;
    Ok(owned.into_relaxed_extjson().to_string())
}

/// The value at a dotted path (through sub-documents, not arrays).
fn lookup<'a>(doc: &'a RawDocument, path: &str) -> Option<RawBsonRef<'a>> {
    let mut current = doc;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = current.get(part).ok().flatten()?;
        if parts.peek().is_none() {
            return Some(value);
        }
        match value {
            RawBsonRef::Document(d) => current = d,
            _ => return None,
        }
    }
    None
}

/// The `opid` of a `$currentOp` entry that carries `comment` (on its command, or on the command
/// that opened its cursor). Checked here, not only in the filter sent: a server that ignores
/// the filter must not get every operation it lists killed.
fn op_id(op: &Bson, comment: &str) -> Option<Bson> {
    let op = op.as_document()?;
    let commented = |path: &[&str]| {
        let mut doc = op;
        for key in &path[..path.len() - 1] {
            match doc.get_document(key) {
                Ok(d) => doc = d,
                Err(_) => return false,
            }
        }
        doc.get_str(path[path.len() - 1]).is_ok_and(|c| c == comment)
    };
    let ours = commented(&["command", "comment"])
        || commented(&["cursor", "originatingCommand", "comment"])
        || commented(&["originatingCommand", "comment"]);
    if ours { op.get("opid").cloned() } else { None }
}

/// The driver's message without the `Kind:` wrapping noise.
fn message(e: &MongoError) -> String {
    match &*e.kind {
        ErrorKind::Command(c) => format!("{} ({}, code {})", c.message, c.code_name, c.code),
        ErrorKind::ServerSelection { message, .. }
        | ErrorKind::Authentication { message, .. }
        | ErrorKind::InvalidArgument { message, .. }
        | ErrorKind::DnsResolve { message, .. }
        | ErrorKind::InvalidTlsConfig { message, .. } => message.clone(),
        _ => e.to_string(),
    }
}

/// A comment that names one operation of this process: `mini-connector:<pid>-<nanos>-<n>`.
fn new_comment() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("mini-connector:{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

const SESSION_PREFIX: &str = "mongo:";

impl Driver for MongoDb {
    fn ping(&self) -> Result<(), DriverError> {
        self.db().run_command(doc! { "ping": 1 }).run().map(drop).map_err(|e| self.error(&e, None))
    }

    fn cancel_server_session(&self, session: &str) -> Result<bool, DriverError> {
        let comment = session
            .strip_prefix(SESSION_PREFIX)
            .filter(|c| c.starts_with("mini-connector:"))
            .ok_or_else(|| DriverError::Bind(format!("not a MongoDB operation id: {session}")))?;
        self.kill_by_comment(comment)
    }

    fn pool_status(&self) -> PoolStatus {
        // The official driver keeps its pool to itself (sized by `PoolSettings` at open): not known.
        PoolStatus::default()
    }

    fn query(
        &self,
        sql: &str,
        params: &[Value],
        interrupt: &Interrupt,
        sink: &mut dyn RowSink,
    ) -> Result<QueryStats, DriverError> {
        if !params.is_empty() {
            return Err(DriverError::Bind(
                "MongoDB queries take no parameters: put values in the document".into(),
            ));
        }
        let plan = Plan::parse(sql)?;
        let comment = new_comment();
        sink.started(Some(&format!("{SESSION_PREFIX}{comment}")))?;
        let killer = self.clone();
        let hook_comment = comment.clone();
        let hook = interrupt.cancel.on_cancel(move || {
            let (killer, comment) = (killer.clone(), hook_comment.clone());
            // The canceller's thread must not wait for the server.
            let spawned = std::thread::Builder::new().name("mongo-kill".into()).spawn(move || {
                if let Err(e) = killer.kill_by_comment(&comment) {
                    tracing::debug!(error = %e, "killing a cancelled MongoDB operation failed");
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no thread to kill a cancelled MongoDB operation");
            }
        });
        let result = self.run_query(&plan, &comment, interrupt, sink);
        hook.disarm();
        result
    }

    fn discover(
        &self,
        connection: &str,
        progress: &mut dyn FnMut(DiscoveryProgress),
    ) -> Result<DatabaseSchema, DriverError> {
        discover::discover(self, connection, progress)
    }

    fn write_privileges(&self) -> Result<PrivilegeReport, DriverError> {
        discover::write_privileges(self)
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

    #[test]
    fn plans_parse_both_forms_with_extended_json() {
        let find = Plan::parse(
            r#"{"collection":"orders","filter":{"at":{"$gte":{"$date":"2024-01-01T00:00:00Z"}}},"projection":{"code":1,"_id":0},"sort":{"at":-1},"skip":5,"limit":10}"#,
        )
        .unwrap();
        assert_eq!(find.collection, "orders");
        let Form::Find { filter, skip, limit, .. } = &find.form else { panic!("find") };
        assert!(matches!(filter.get_document("at").unwrap().get("$gte"), Some(Bson::DateTime(_))));
        assert_eq!((*skip, *limit), (Some(5), Some(10)));
        assert!(matches!(Shape::of(&find), Shape::Fields(f) if f == ["code"]));
        let agg =
            Plan::parse(r#"{"collection":"c","pipeline":[{"$match":{}},{"$project":{"a":1,"b.c":1}}]}"#)
                .unwrap();
        assert!(matches!(Shape::of(&agg), Shape::Fields(f) if f == ["_id", "a", "b.c"]));
        let whole = Plan::parse(r#"{"collection":"c","pipeline":[{"$project":{"secret":0}}]}"#).unwrap();
        assert!(matches!(Shape::of(&whole), Shape::Whole));
        assert!(Plan::parse("[]").is_err());
        assert!(Plan::parse(r#"{"collection":"c","skip":-1}"#).is_err());
        let write = Plan::parse(r#"{"collection":"c","pipeline":[{"$match":{}},{"$merge":"d"}]}"#);
        assert!(matches!(write, Err(DriverError::WriteRejected(_))));
    }

    #[test]
    fn only_operations_carrying_the_comment_are_killed() {
        let ours = "mini-connector:1-2-3";
        let listed = [
            Bson::Document(doc! { "opid": 1, "command": { "aggregate": "c", "comment": ours } }),
            Bson::Document(
                doc! { "opid": 2, "command": { "getMore": 5_i64 }, "cursor": { "originatingCommand": { "comment": ours } } },
            ),
            Bson::Document(doc! { "opid": 3, "command": { "find": "c", "comment": "someone else" } }),
            Bson::Document(doc! { "opid": 4, "command": { "insert": "c" } }),
            Bson::Document(doc! { "opid": 5 }),
        ];
        let ids: Vec<Bson> = listed.iter().filter_map(|op| op_id(op, ours)).collect();
        assert_eq!(ids, [Bson::Int32(1), Bson::Int32(2)]);
    }

    #[test]
    fn values_map_to_cells() {
        let raw = RawDocumentBuf::try_from(&doc! {
            "s": "Müller", "i": 7_i32, "l": 8_i64, "d": 1.5, "b": true, "n": null,
            "o": bson::oid::ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").unwrap(),
            "t": bson::DateTime::from_millis(0), "sub": { "x": [1, 2] },
        })
        .unwrap();
        let mut texts = Vec::new();
        let fields = ["s", "i", "l", "d", "b", "n", "missing", "o", "t", "sub", "sub.x"];
        let pres: Vec<Pre<'_>> =
            fields.iter().map(|f| pre_cell(lookup(&raw, f), &mut texts).unwrap()).collect();
        let cells: Vec<Cell<'_>> = pres.iter().map(|p| p.cell(&texts)).collect();
        assert_eq!(
            serde_json::to_string(&cells).unwrap(),
            r#"["Müller",7,8,1.5,true,null,null,"64b7f0c2a1b2c3d4e5f60718","1970-01-01T00:00:00Z","{\"x\":[1,2]}","[1,2]"]"#
        );
    }
}
