//! The MongoDB driver against a real MongoDB-wire-compatible server: SecantusDB from PyPI
//! (no `mongod` installs here), started by `scripts/db-servers.sh` with `--auth` and the data
//! of `scripts/mongo-seed.py`. Queries go through the read-only gate first, as in the agent.
//! Skips without `MC_TEST_MONGO_URL` unless `MC_REQUIRE_DB_SERVERS=1`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use drivers::{
    Cell, ColumnMeta, ConnectionSpec, Database, DbKind, DriverError, Password, PoolSettings, QueryOptions,
    RowSink, Secret, SinkError, TableKind, WireType,
};
use serde_json::{Value, json};

use crate::common::{Owned, QueryText, Recorder, run};
use crate::servers::env_or_skip;

/// `mongodb://user:password@host:port/db?authSource=admin` as a host/port/user/password spec
/// (the form the config uses: the password from the vault, never in a string).
fn spec(var: &str) -> Option<ConnectionSpec> {
    let url = env_or_skip(var)?;
    let rest = url.strip_prefix("mongodb://").expect("mongodb://");
    let (auth, rest) = rest.split_once('@').expect("user:password@");
    let (user, password) = auth.split_once(':').expect("user:password");
    let (hostport, db) = rest.split_once('/').expect("/db");
    let (host, port) = hostport.split_once(':').expect("host:port");
    Some(ConnectionSpec {
        name: "mongo".into(),
        kind: DbKind::Mongodb,
        host: Some(host.into()),
        port: Some(port.parse().expect("port")),
        database: Some(db.split('?').next().unwrap_or(db).into()),
        user: Some(user.into()),
        password: Password::Value(Secret::new(password)),
        pool: PoolSettings {
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            ..PoolSettings::default()
        },
        ..ConnectionSpec::default()
    })
}

fn ro() -> Option<Database> {
    static DB: OnceLock<Option<Database>> = OnceLock::new();
    DB.get_or_init(|| spec("MC_TEST_MONGO_URL").map(|s| Database::open(&s).expect("open"))).clone()
}

fn owner() -> Option<Database> {
    spec("MC_TEST_MONGO_OWNER_URL").map(|s| Database::open(&s).expect("open"))
}

fn query(db: &Database, q: &Value) -> Result<Recorder, DriverError> {
    run(db, &q.to_string(), &[]).map(|(sink, _)| sink)
}

fn names(columns: &Option<Vec<ColumnMeta>>) -> Vec<String> {
    columns.as_ref().expect("columns").iter().map(|c| c.name.clone()).collect()
}

#[test]
fn find_with_a_projection_gives_one_column_per_field() {
    let Some(db) = ro() else { return };
    let rec = query(
        &db,
        &json!({"collection": "customers", "filter": {"_id": {"$gte": 7, "$lte": 12}},
                "projection": {"_id": 0, "code": 1, "name": 1, "address.city": 1, "credit": 1},
                "sort": {"code": 1}, "skip": 1, "limit": 3}),
    )
    .unwrap();
    assert_eq!(names(&rec.columns), ["code", "name", "address.city", "credit"]);
    assert_eq!(rec.rows.len(), 3);
    // 7..=12 sorted by code, skip 1, limit 3 → 8, 9, 10; `credit` has a type per i % 3.
    assert_eq!(rec.rows[0][0], Owned::Text("C008".into()));
    assert_eq!(rec.rows[0][1], Owned::Text("株式会社サンプル 8".into()));
    assert_eq!(rec.rows[0][2], Owned::Text("東京".into()));
    assert_eq!(rec.rows[0][3], Owned::Text("on request".into()));
    assert_eq!(rec.rows[1][3], Owned::Int(900));
    assert_eq!(rec.rows[2][3], Owned::Int(2_i64.pow(40) + 10));
}

#[test]
fn a_sort_on_two_fields_sorts_by_the_first_one_first() {
    let Some(db) = ro() else { return };
    let rec = query(
        &db,
        &json!({"collection": "customers", "projection": {"country": 1},
                "sort": {"country": 1, "_id": -1}, "limit": 3}),
    )
    .unwrap();
    // DE customers are 6, 12, …, 60: the highest ids first within the first country.
    assert_eq!(rec.json, [r#"[60,"DE"]"#, r#"[54,"DE"]"#, r#"[48,"DE"]"#]);
}

#[test]
fn pipelines_stream_whole_documents_as_extended_json() {
    let Some(db) = ro() else { return };
    let rec = query(
        &db,
        &json!({"collection": "orders", "pipeline": [
            {"$match": {"_id": {"$in": [1, 2]}}},
            {"$lookup": {"from": "customers", "localField": "customer_id", "foreignField": "_id", "as": "customer"}},
            {"$unwind": "$customer"},
            {"$addFields": {"customer": "$customer.name"}},
            {"$sort": {"_id": 1}}
        ]}),
    )
    .unwrap();
    let columns = rec.columns.as_ref().unwrap();
    assert_eq!((columns[0].name.as_str(), columns[0].wire_type), ("document", WireType::Json));
    assert_eq!(rec.rows.len(), 2);
    let Owned::Text(first) = &rec.rows[0][0] else { panic!("text") };
    let doc: Value = serde_json::from_str(first).unwrap();
    assert_eq!(doc["_id"], 1);
    assert_eq!(doc["customer"], "株式会社サンプル 2", "order 1 is customer 2's");
    assert_eq!(doc["total"], json!({"$numberDecimal": "10.50"}), "{doc}");
    assert_eq!(doc["placed_at"], json!({"$date": "2024-01-02T00:00:00Z"}), "{doc}");
}

#[test]
fn writes_are_refused_even_for_an_owner_and_nothing_is_written() {
    let Some(db) = owner() else { return };
    let before = query(&db, &json!({"collection": "orders", "pipeline": [{"$count": "n"}]})).unwrap().json;
    for (q, what) in [
        (json!({"collection": "orders", "pipeline": [{"$out": "stolen"}]}), "$out"),
        (json!({"collection": "orders", "pipeline": [{"$merge": {"into": "orders"}}]}), "$merge"),
        (json!({"collection": "orders", "filter": {"$where": "this.total > 0"}}), "$where"),
        (json!({"collection": "orders", "pipeline": [{"$currentOp": {}}]}), "$currentOp"),
        (
            json!({"collection": "orders", "pipeline": [{"$group": {"_id": null, "x": {"$function": {}}}}]}),
            "$function",
        ),
    ] {
        let err = query(&db, &q).unwrap_err();
        assert!(matches!(err, DriverError::WriteRejected(_)), "{what}: {err}");
        assert!(err.to_string().contains(what), "{err}");
    }
    let listed = query(&db, &json!({"collection": "stolen"})).unwrap();
    assert!(listed.rows.is_empty(), "no `stolen` collection was written");
    assert_eq!(
        query(&db, &json!({"collection": "orders", "pipeline": [{"$count": "n"}]})).unwrap().json,
        before
    );
}

#[test]
fn private_fields_are_removed_at_the_source_and_private_collections_refused() {
    let Some(db) = ro() else { return };
    let mut policy = gate::Policy::default();
    policy.private_tables.insert("payroll".into());
    policy.private_columns.insert("customers".into(), ["iban".to_owned()].into());
    let check =
        |q: &Value| gate::check_with(&q.to_string(), 0, db.gate_target(), &policy, &gate::Limits::default());
    let checked = check(&json!({"collection": "customers", "filter": {"country": "DE"}})).unwrap();
    let mut rec = Recorder::default();
    db.query(&checked, &[], &QueryOptions::default(), &mut rec).unwrap();
    assert_eq!(rec.rows.len(), 10);
    assert!(rec.json.iter().all(|row| !row.contains("iban") && row.contains("address")), "{:?}", rec.json[0]);
    // Through $replaceRoot/$$ROOT and a $lookup from another collection too.
    let checked = check(&json!({"collection": "orders", "pipeline": [
        {"$limit": 3},
        {"$lookup": {"from": "customers", "localField": "customer_id", "foreignField": "_id", "as": "c"}},
        {"$replaceRoot": {"newRoot": {"$mergeObjects": [{"$arrayElemAt": ["$c", 0]}, "$$ROOT"]}}}
    ]}))
    .unwrap();
    let mut rec = Recorder::default();
    db.query(&checked, &[], &QueryOptions::default(), &mut rec).unwrap();
    assert_eq!(rec.rows.len(), 3);
    assert!(rec.json.iter().all(|row| !row.contains("iban") && !row.contains("DE0000")), "{:?}", rec.json);
    for denied in [
        json!({"collection": "payroll"}),
        json!({"collection": "customers", "projection": {"iban": 1}}),
        json!({"collection": "orders", "pipeline": [{"$unionWith": "payroll"}]}),
    ] {
        assert_eq!(check(&denied).unwrap_err().code, gate::RejectCode::SchemaAccessDenied, "{denied}");
    }
}

#[test]
fn a_timeout_stops_the_operation_on_the_server() {
    let Some(db) = ro() else { return };
    let slow = json!({"collection": "big", "pipeline": [
        {"$group": {"_id": {"$mod": ["$n", 9973]}, "c": {"$sum": 1}, "s": {"$push": "$s"}}},
        {"$sort": {"c": -1}}
    ]});
    let checked = crate::common::checked(&db, &slow.to_string(), 0).unwrap();
    let opts = QueryOptions { timeout: Some(Duration::from_millis(300)), ..QueryOptions::default() };
    let started = Instant::now();
    let err = db.query(&checked, &[], &opts, &mut Recorder::default()).unwrap_err();
    assert!(matches!(err, DriverError::Timeout), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "stopped after {:?}", started.elapsed());
    // The connection is fine afterwards.
    let count = query(&db, &json!({"collection": "payroll", "pipeline": [{"$count": "n"}]})).unwrap();
    assert_eq!(count.json, [r#"["{\"n\":10}"]"#]);
}

/// Cancels the query from another thread once `after` rows arrived.
struct CancelAfter {
    after: usize,
    seen: usize,
    opts: QueryOptions,
    fired: Arc<AtomicBool>,
}

impl RowSink for CancelAfter {
    fn columns(&mut self, _: &[ColumnMeta]) -> Result<(), SinkError> {
        Ok(())
    }
    fn row(&mut self, _: &[Cell<'_>]) -> Result<(), SinkError> {
        self.seen += 1;
        if self.seen == self.after && !self.fired.swap(true, Ordering::SeqCst) {
            let token = self.opts.cancel.clone();
            std::thread::spawn(move || token.cancel());
        }
        Ok(())
    }
}

#[test]
fn cancel_stops_a_streaming_result_and_big_results_stream() {
    let Some(db) = ro() else { return };
    let all = json!({"collection": "big", "projection": {"_id": 0, "n": 1}});
    let checked = crate::common::checked(&db, &all.to_string(), 0).unwrap();
    let mut count =
        CancelAfter { after: usize::MAX, seen: 0, opts: QueryOptions::default(), fired: Arc::default() };
    let stats = db.query(&checked, &[], &QueryOptions::default(), &mut count).unwrap();
    assert_eq!((stats.rows, count.seen), (50_000, 50_000), "every document streamed");
    let opts = QueryOptions::default();
    let mut sink = CancelAfter { after: 1_000, seen: 0, opts: opts.clone(), fired: Arc::default() };
    let started = Instant::now();
    let err = db.query(&checked, &[], &opts, &mut sink).unwrap_err();
    assert!(matches!(err, DriverError::Cancelled), "{err}");
    assert!(sink.seen < 50_000, "stopped early, after {} rows", sink.seen);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn discovery_samples_documents_for_fields_types_presence_and_counts() {
    let Some(db) = ro() else { return };
    let schema = db.discover().unwrap();
    assert_eq!(schema.db_type, DbKind::Mongodb);
    let names: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
    for expected in ["big", "customers", "open_orders", "order_lines", "orders", "payroll"] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let customers = schema.tables.iter().find(|t| t.name == "customers").unwrap();
    assert_eq!(customers.row_count_estimate, Some(60));
    assert_eq!(customers.primary_key, ["_id"]);
    let code = customers.indexes.iter().find(|i| i.columns == ["code"]).expect("the index on code");
    assert!(code.unique, "{:?}", customers.indexes);
    assert!(customers.indexes.iter().any(|i| i.columns == ["_id"]), "{:?}", customers.indexes);
    let col =
        |name: &str| customers.columns.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(col("credit").data_type, "int|long|string", "mixed types reported");
    assert_eq!(col("credit").wire_type, WireType::Unknown);
    assert_eq!(col("name").wire_type, WireType::Text);
    assert_eq!(col("address.city").data_type, "string", "nested paths");
    assert_eq!(col("contacts.kind").data_type, "string", "documents inside arrays");
    let phone = col("phone");
    assert!(phone.nullable);
    let presence = phone.presence.unwrap();
    assert!((0.5..0.7).contains(&presence), "phone is in 36 of 60 documents: {presence}");
    assert_eq!(col("code").presence, Some(1.0));
    let view = schema.tables.iter().find(|t| t.name == "open_orders").unwrap();
    assert_eq!(view.kind, TableKind::View);
    assert_eq!(view.row_count_estimate, None);
    // Never row data: no value of a document in the schema.
    let text = serde_json::to_string(&schema).unwrap();
    assert!(!text.contains("Müller") && !text.contains("DE0000"), "schema holds no data");
}

#[test]
fn privileges_tell_a_read_login_from_an_owner() {
    let Some(db) = ro() else { return };
    let report = db.write_privileges().unwrap();
    assert!(!report.can_write, "{report:?}");
    assert_eq!(report.user, "mc_ro@admin");
    assert!(report.suggested_sql.contains("role: \"read\""));
    let Some(owner) = owner() else { return };
    let report = owner.write_privileges().unwrap();
    assert!(report.can_write, "{report:?}");
    assert!(report.findings.iter().any(|f| f.contains("dbOwner")), "{report:?}");
}

#[test]
fn bad_logins_and_unreachable_servers_are_unavailable_without_the_password() {
    let Some(good) = spec("MC_TEST_MONGO_URL") else { return };
    let wrong = ConnectionSpec { password: Password::Value(Secret::new("not-the-pw-4711")), ..good.clone() };
    let err = Database::open(&wrong).unwrap().check_health().unwrap_err();
    assert!(matches!(err, DriverError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(!err.to_string().contains("not-the-pw-4711"), "{err}");
    let nowhere = ConnectionSpec {
        port: Some(1),
        pool: PoolSettings { acquire_timeout: Duration::from_millis(500), ..good.pool.clone() },
        ..good.clone()
    };
    let err = Database::open(&nowhere).unwrap().check_health().unwrap_err();
    assert!(matches!(err, DriverError::Unavailable(_)), "{err}");
    let db = Database::open(&good).unwrap();
    db.check_health().unwrap();
    let err = db.query_text(
        &json!({"collection": "orders"}).to_string(),
        &[json!(1)],
        &QueryOptions::default(),
        &mut Recorder::default(),
    );
    assert!(matches!(err, Err(DriverError::WriteRejected(_) | DriverError::Bind(_))), "{err:?}");
}
