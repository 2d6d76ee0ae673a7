//! MongoDB discovery: collections and views, fields inferred from a `$sample` of 100 documents
//! (types, mixed types, presence, nested paths), indexes and estimated counts; and the write
//! privileges of the login (`connectionStatus`).

use std::collections::BTreeMap;

use mongodb::bson::{Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf, doc};

use super::MongoDb;
use crate::privileges::report;
use crate::{
    Column, DatabaseSchema, DbKind, DiscoveryProgress, DriverError, Index, PrivilegeReport, RelationName,
    Table, TableKind, ViewReads, WireType,
};

/// Documents sampled per collection (spec §4.2).
pub(crate) const SAMPLE: i64 = 100;
/// Nesting levels of sub-documents described as dotted paths.
const MAX_DEPTH: usize = 4;
/// Fields described per collection; the rest is left out (a warning is logged).
const MAX_FIELDS: usize = 500;

/// What the sample showed of one path.
#[derive(Default)]
struct FieldStats {
    /// BSON type names seen (null excluded), sorted.
    types: BTreeMap<&'static str, u32>,
    /// Documents holding the path (with any value, null included).
    present: u32,
    /// Documents where it was null.
    nulls: u32,
    /// Order of first sight.
    first_seen: usize,
}

pub(super) fn discover(
    db: &MongoDb,
    connection: &str,
    progress: &mut dyn FnMut(DiscoveryProgress),
) -> Result<DatabaseSchema, DriverError> {
    let database = db.db();
    let listing = database
        .run_command(doc! { "listCollections": 1, "authorizedCollections": true })
        .run()
        .map_err(|e| db.error(&e, None))?;
    let batch = listing
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map_err(|e| DriverError::Query(format!("listCollections: {e}")))?;
    let mut entries: Vec<(String, TableKind, Option<Document>)> = batch
        .iter()
        .filter_map(Bson::as_document)
        .filter_map(|d| {
            let name = d.get_str("name").ok()?.to_owned();
            if name.starts_with("system.") {
                return None;
            }
            let kind = match d.get_str("type").unwrap_or("collection") {
                "view" => TableKind::View,
                "collection" => TableKind::Table,
                _ => return None,
            };
            Some((name, kind, d.get_document("options").ok().cloned()))
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let total = entries.len();
    progress(DiscoveryProgress { done: 0, total: Some(total) });
    let mut tables = Vec::with_capacity(total);
    for (done, (name, kind, options)) in entries.into_iter().enumerate() {
        tables.push(describe(db, &name, kind, options.as_ref())?);
        progress(DiscoveryProgress { done: done + 1, total: Some(total) });
    }
    Ok(DatabaseSchema { connection: connection.to_owned(), db_type: DbKind::Mongodb, tables })
}

fn describe(
    db: &MongoDb,
    name: &str,
    kind: TableKind,
    options: Option<&Document>,
) -> Result<Table, DriverError> {
    let coll = db.db().collection::<RawDocumentBuf>(name);
    let err = |e: mongodb::error::Error| db.error(&e, None);
    let mut fields: BTreeMap<String, FieldStats> = BTreeMap::new();
    let mut sampled = 0u32;
    let mut cursor = coll.aggregate(vec![doc! { "$sample": { "size": SAMPLE } }]).run().map_err(err)?;
    while cursor.advance().map_err(err)? {
        sampled += 1;
        walk(cursor.current(), "", 0, &mut fields);
    }
    if fields.len() > MAX_FIELDS {
        tracing::warn!(
            collection = name,
            fields = fields.len(),
            "more fields than described; the rest left out"
        );
    }
    let mut ordered: Vec<(String, FieldStats)> = fields.into_iter().collect();
    ordered.sort_by_key(|(path, stats)| (path != "_id", stats.first_seen));
    ordered.truncate(MAX_FIELDS);
    let columns = ordered.into_iter().map(|(path, stats)| column(path, &stats, sampled)).collect();
    let (row_count_estimate, reads, indexes) = match kind {
        TableKind::Table => {
            let count = coll.estimated_document_count().run().map_err(err)?;
            let indexes = coll.list_indexes().run().map_err(err)?.filter_map(Result::ok).map(index).collect();
            (Some(count), None, indexes)
        }
        TableKind::View => (None, Some(view_reads(options)), Vec::new()),
    };
    let primary_key = if kind == TableKind::Table { vec!["_id".to_owned()] } else { Vec::new() };
    Ok(Table {
        schema: None,
        name: name.to_owned(),
        kind,
        columns,
        primary_key,
        foreign_keys: Vec::new(),
        row_count_estimate,
        indexes,
        reads,
    })
}

/// An index as the schema describes it: its name, key paths in order, uniqueness.
fn index(model: mongodb::IndexModel) -> Index {
    let options = model.options.unwrap_or_default();
    Index {
        name: options.name.unwrap_or_default(),
        columns: model.keys.keys().cloned().collect(),
        unique: options.unique.unwrap_or(false),
    }
}

/// Records every path of `doc` (sub-documents as dotted paths, array elements that are
/// documents under the array's path).
fn walk(doc: &RawDocument, prefix: &str, depth: usize, fields: &mut BTreeMap<String, FieldStats>) {
    for (key, value) in doc.iter().filter_map(Result::ok) {
        let key = key.as_str();
        let path = if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") };
        if !fields.contains_key(&path) && fields.len() >= MAX_FIELDS * 2 {
            continue;
        }
        let order = fields.len();
        let stats = fields
            .entry(path.clone())
            .or_insert_with(|| FieldStats { first_seen: order, ..FieldStats::default() });
        stats.present += 1;
        match type_name(value) {
            None => stats.nulls += 1,
            Some(t) => *stats.types.entry(t).or_default() += 1,
        }
        if depth < MAX_DEPTH {
            match value {
                RawBsonRef::Document(sub) => walk(sub, &path, depth + 1, fields),
                RawBsonRef::Array(items) => {
                    for item in items.into_iter().filter_map(Result::ok) {
                        if let RawBsonRef::Document(sub) = item {
                            walk(sub, &path, depth + 1, fields);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The BSON type name (`$type` spelling); `None` for null/undefined.
fn type_name(value: RawBsonRef<'_>) -> Option<&'static str> {
    Some(match value {
        RawBsonRef::Null | RawBsonRef::Undefined => return None,
        RawBsonRef::Double(_) => "double",
        RawBsonRef::String(_) => "string",
        RawBsonRef::Document(_) => "object",
        RawBsonRef::Array(_) => "array",
        RawBsonRef::Binary(_) => "binData",
        RawBsonRef::ObjectId(_) => "objectId",
        RawBsonRef::Boolean(_) => "bool",
        RawBsonRef::DateTime(_) => "date",
        RawBsonRef::RegularExpression(_) => "regex",
        RawBsonRef::JavaScriptCode(_) | RawBsonRef::JavaScriptCodeWithScope(_) => "javascript",
        RawBsonRef::Int32(_) => "int",
        RawBsonRef::Int64(_) => "long",
        RawBsonRef::Timestamp(_) => "timestamp",
        RawBsonRef::Decimal128(_) => "decimal",
        RawBsonRef::Symbol(_) => "symbol",
        RawBsonRef::DbPointer(_) => "dbPointer",
        RawBsonRef::MaxKey => "maxKey",
        RawBsonRef::MinKey => "minKey",
    })
}

/// A column from what the sample showed: `data_type` lists the types seen (`int|string` for
/// mixed types), `presence` the share of sampled documents holding the field.
fn column(path: String, stats: &FieldStats, sampled: u32) -> Column {
    let types: Vec<&str> = stats.types.keys().copied().collect();
    let wire_type = match types.as_slice() {
        [one] => wire_type(one),
        [a, b] if is_integer(a) && is_integer(b) => WireType::Integer,
        _ => WireType::Unknown,
    };
    let data_type = if types.is_empty() { "null".to_owned() } else { types.join("|") };
    Column {
        nullable: stats.nulls > 0 || stats.present < sampled,
        name: path,
        data_type,
        wire_type,
        default: None,
        enum_values: Vec::new(),
        presence: (sampled > 0).then(|| f64::from(stats.present) / f64::from(sampled)),
    }
}

fn is_integer(t: &str) -> bool {
    matches!(t, "int" | "long")
}

fn wire_type(t: &str) -> WireType {
    match t {
        "double" => WireType::Float,
        "string" | "objectId" | "symbol" => WireType::Text,
        "object" | "array" => WireType::Json,
        "binData" => WireType::Bytes,
        "bool" => WireType::Boolean,
        "date" => WireType::TimestampTz,
        "int" | "long" => WireType::Integer,
        "decimal" => WireType::Decimal,
        _ => WireType::Unknown,
    }
}

/// What a view reads: its `viewOn` collection when the pipeline reads nothing else.
fn view_reads(options: Option<&Document>) -> ViewReads {
    let Some(options) = options else { return ViewReads::Unresolved("no view definition visible".into()) };
    let Ok(on) = options.get_str("viewOn") else {
        return ViewReads::Unresolved("no viewOn in the view definition".into());
    };
    let pipeline = options.get_array("pipeline").map(|p| format!("{p:?}")).unwrap_or_default();
    if ["$lookup", "$unionWith", "$graphLookup", "$facet"].iter().any(|s| pipeline.contains(s)) {
        return ViewReads::Unresolved("the view's pipeline reads other collections".into());
    }
    ViewReads::Resolved(vec![RelationName::new(None, on)])
}

/// Roles whose holder can change data (built-in names).
const WRITE_ROLES: &[&str] = &[
    "readWrite",
    "readWriteAnyDatabase",
    "dbOwner",
    "dbAdmin",
    "dbAdminAnyDatabase",
    "userAdmin",
    "userAdminAnyDatabase",
    "root",
    "restore",
    "clusterAdmin",
    "clusterManager",
    "__system",
];
/// Actions that change data or structure.
const WRITE_ACTIONS: &[&str] = &[
    "insert",
    "update",
    "remove",
    "createCollection",
    "dropCollection",
    "createIndex",
    "dropIndex",
    "dropDatabase",
    "renameCollectionSameDB",
    "convertToCapped",
    "collMod",
    "bypassDocumentValidation",
    "createUser",
    "grantRole",
];

pub(super) fn write_privileges(db: &MongoDb) -> Result<PrivilegeReport, DriverError> {
    let status = db
        .db()
        .run_command(doc! { "connectionStatus": 1, "showPrivileges": true })
        .run()
        .map_err(|e| db.error(&e, None))?;
    let info = status.get_document("authInfo").cloned().unwrap_or_default();
    let users: Vec<String> = info
        .get_array("authenticatedUsers")
        .map(|a| {
            a.iter()
                .filter_map(Bson::as_document)
                .filter_map(|u| Some(format!("{}@{}", u.get_str("user").ok()?, u.get_str("db").ok()?)))
                .collect()
        })
        .unwrap_or_default();
    let suggested = suggested(&db.database);
    if users.is_empty() {
        return Ok(report(
            String::new(),
            false,
            vec![
                "no login: the server does not check access (it runs without --auth), so anyone who \
                  reaches it can write"
                    .to_owned(),
            ],
            suggested,
        ));
    }
    let mut findings = Vec::new();
    let mut superuser = false;
    for role in info.get_array("authenticatedUserRoles").into_iter().flatten().filter_map(Bson::as_document) {
        let (Ok(name), Ok(on)) = (role.get_str("role"), role.get_str("db")) else { continue };
        if WRITE_ROLES.contains(&name) {
            superuser |= name == "root" || name == "__system";
            findings.push(format!("role {name} on {on}"));
        }
    }
    for privilege in
        info.get_array("authenticatedUserPrivileges").into_iter().flatten().filter_map(Bson::as_document)
    {
        let resource = privilege.get_document("resource").map(resource_name).unwrap_or_else(|_| "?".into());
        for action in privilege.get_array("actions").into_iter().flatten().filter_map(Bson::as_str) {
            if WRITE_ACTIONS.contains(&action) {
                findings.push(format!("{action} on {resource}"));
            }
        }
    }
    Ok(report(users.join(", "), superuser, findings, suggested))
}

fn resource_name(resource: &Document) -> String {
    if resource.get_bool("cluster").unwrap_or(false) {
        return "the cluster".into();
    }
    let db = resource.get_str("db").unwrap_or("");
    let coll = resource.get_str("collection").unwrap_or("");
    match (db, coll) {
        ("", "") => "every collection of every database".into(),
        (db, "") => format!("{db}.*"),
        ("", coll) => format!("*.{coll}"),
        (db, coll) => format!("{db}.{coll}"),
    }
}

/// The mongosh commands that create a read-only login for `database`.
fn suggested(database: &str) -> String {
    let db = if database.is_empty() { "<database>" } else { database };
    format!(
        "use admin\n\
         db.createUser({{ user: \"mc_readonly\", pwd: \"<choose a password>\", roles: [{{ role: \"read\", db: \"{db}\" }}] }})\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_report_mixed_types_presence_and_nested_paths() {
        let docs = [
            doc! { "_id": 1, "code": "A", "qty": 1_i32, "addr": { "city": "Berlin" }, "lines": [{ "sku": "x" }] },
            doc! { "_id": 2, "code": "B", "qty": "n/a", "addr": { "city": null } },
            doc! { "_id": 3, "code": "C", "qty": 2_i64 },
            doc! { "_id": 4, "code": null },
        ];
        let mut fields = BTreeMap::new();
        for d in &docs {
            let raw = RawDocumentBuf::try_from(d).unwrap();
            walk(&raw, "", 0, &mut fields);
        }
        let col = |p: &str| column(p.to_owned(), &fields[p], 4);
        assert_eq!(col("qty").data_type, "int|long|string");
        assert_eq!(col("qty").wire_type, WireType::Unknown);
        assert_eq!(col("qty").presence, Some(0.75));
        assert!(col("code").nullable);
        assert_eq!(col("code").wire_type, WireType::Text);
        assert_eq!(col("addr.city").presence, Some(0.5));
        assert_eq!(col("lines.sku").data_type, "string");
        assert_eq!(col("_id").wire_type, WireType::Integer);
        assert!(!col("_id").nullable);
    }

    #[test]
    fn views_read_their_collection_unless_the_pipeline_reads_more() {
        let simple = doc! { "viewOn": "orders", "pipeline": [{ "$match": { "open": true } }] };
        assert_eq!(view_reads(Some(&simple)), ViewReads::Resolved(vec![RelationName::new(None, "orders")]));
        let joined = doc! { "viewOn": "orders", "pipeline": [{ "$lookup": { "from": "customers" } }] };
        assert!(matches!(view_reads(Some(&joined)), ViewReads::Unresolved(_)));
    }
}
