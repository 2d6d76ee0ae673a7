//! The read-only gate for MongoDB: a query is a JSON document, judged key by key.
//!
//! Forms (see `docs/PROTOCOL.md`, "MongoDB queries"):
//! `{"collection": "c", "filter": {..}, "projection": {..}, "sort": {..}, "skip": n, "limit": n}`
//! or `{"collection": "c", "pipeline": [..]}`. The stance is the SQL gate's: fail closed.
//!
//! - **Shape**: not JSON, not an object, no `collection`, both forms at once, an unknown
//!   top-level key, a duplicate key anywhere (two parsers could keep different ones) →
//!   `SQL_SYNTAX_ERROR`.
//! - **Cost**: deeper than `max_depth` levels or more than `max_tokens` values →
//!   `WRITE_OPERATION_REJECTED`.
//! - **Allow-lists**: every pipeline stage and every `$` key (query operator, expression
//!   operator, accumulator, Extended JSON type wrapper) must be on a list of side-effect-free
//!   ones; `$out`, `$merge`, server-side JavaScript (`$where`, `$function`, `$accumulator`,
//!   `$code`), `$currentOp` and the other admin stages, and anything unknown →
//!   `WRITE_OPERATION_REJECTED`. Variables: only `$$ROOT`, `$$CURRENT`, `$$NOW`, `$$REMOVE`,
//!   `$$DESCEND`, `$$PRUNE`, `$$KEEP` and lower-case user variables (`let`, `$map`, `$filter`).
//! - **Privacy** ([`Policy`]): a private or unapproved collection read anywhere (the main one,
//!   `$lookup`, `$graphLookup`, `$unionWith`) → `SCHEMA_ACCESS_DENIED`. A private field (its
//!   path, a path inside it, or its parent in a projection) named anywhere — as a key, a
//!   `"$field"` path, `$$ROOT.field`, `localField`/`foreignField` — → `SCHEMA_ACCESS_DENIED`.
//!   Field names are compared case-sensitively, as MongoDB does. A query that does not name
//!   them gets them removed at the source: the pipeline gains `{"$project": {"f": 0}}` as its
//!   first stage, so no later stage (`$replaceRoot`, `$$ROOT`, `$getField`) can see them, and
//!   the find form on such a collection becomes the same pipeline (`$project` exclusion,
//!   `$match`, `$sort`, `$skip`, `$limit`, `$project`; a `$text` filter then fails on the
//!   server, which wants it first), and a `$lookup`/`$unionWith` into a collection with private fields gets the
//!   same stage first in its sub-pipeline (`localField`/`foreignField` with `pipeline` needs
//!   MongoDB 5.0). `$graphLookup` into such a collection is denied.
//!
//! The verdict's text is the approved document re-serialised here (keys in a fixed order:
//! collection, filter, projection, sort, skip, limit, pipeline): exactly what the driver runs.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::policy::suffix_match;
use crate::{Checked, Limits, Policy, RejectCode, Rejection, SCHEMA_DENIED_REASON};

/// Pipeline stages that only read.
const STAGES: &[&str] = &[
    "$match",
    "$project",
    "$addFields",
    "$set",
    "$unset",
    "$sort",
    "$limit",
    "$skip",
    "$count",
    "$group",
    "$unwind",
    "$lookup",
    "$unionWith",
    "$graphLookup",
    "$facet",
    "$bucket",
    "$bucketAuto",
    "$sortByCount",
    "$replaceRoot",
    "$replaceWith",
    "$sample",
    "$geoNear",
    "$densify",
    "$fill",
    "$setWindowFields",
    "$redact",
];

/// Stages and operators refused with a reason of their own (the rest: "not allowed").
const NAMED_REFUSALS: &[(&str, &str)] = &[
    ("$out", "writes the result into a collection"),
    ("$merge", "writes the result into a collection"),
    ("$where", "runs server-side JavaScript"),
    ("$function", "runs server-side JavaScript"),
    ("$accumulator", "runs server-side JavaScript"),
    ("$code", "is server-side JavaScript"),
    ("$codeWithScope", "is server-side JavaScript"),
    ("$currentOp", "shows other sessions' operations"),
    ("$listSessions", "shows other sessions"),
    ("$listLocalSessions", "shows other sessions"),
    ("$collStats", "is an administrative stage"),
    ("$indexStats", "is an administrative stage"),
    ("$planCacheStats", "is an administrative stage"),
    ("$changeStream", "opens a change stream"),
    ("$documents", "is not a read of a collection"),
];

/// Query operators, expression operators, accumulators and window functions without side
/// effects, and the Extended JSON type wrappers (values).
#[rustfmt::skip]
const OPERATORS: &[&str] = &[
    // query
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$and", "$or", "$nor", "$not", "$exists",
    "$type", "$regex", "$options", "$mod", "$all", "$elemMatch", "$size", "$expr", "$jsonSchema",
    "$text", "$search", "$language", "$caseSensitive", "$diacriticSensitive", "$comment", "$geoWithin",
    "$geoIntersects", "$near", "$nearSphere", "$box", "$center", "$centerSphere", "$geometry", "$polygon",
    "$maxDistance", "$minDistance", "$bitsAllSet", "$bitsAnySet", "$bitsAllClear", "$bitsAnyClear",
    "$slice", "$meta",
    // arithmetic
    "$abs", "$add", "$ceil", "$divide", "$exp", "$floor", "$ln", "$log", "$log10", "$multiply",
    "$pow", "$round", "$sqrt", "$subtract", "$trunc",
    // comparison, boolean, conditional
    "$cmp", "$cond", "$ifNull", "$switch", "$branches", "$case", "$then", "$default",
    // strings
    "$concat", "$indexOfBytes", "$indexOfCP", "$ltrim", "$rtrim", "$trim", "$split", "$strLenBytes",
    "$strLenCP", "$strcasecmp", "$substr", "$substrBytes", "$substrCP", "$toLower", "$toUpper",
    "$regexFind", "$regexFindAll", "$regexMatch", "$replaceOne", "$replaceAll",
    // arrays and sets
    "$arrayElemAt", "$arrayToObject", "$concatArrays", "$filter", "$first", "$firstN", "$indexOfArray",
    "$isArray", "$last", "$lastN", "$map", "$maxN", "$minN", "$objectToArray", "$range", "$reduce",
    "$reverseArray", "$sortArray", "$zip", "$setDifference", "$setEquals", "$setIntersection", "$setIsSubset",
    "$setUnion", "$anyElementTrue", "$allElementsTrue",
    // dates
    "$dateAdd", "$dateDiff", "$dateFromParts", "$dateFromString", "$dateSubtract", "$dateToParts",
    "$dateToString", "$dateTrunc", "$dayOfMonth", "$dayOfWeek", "$dayOfYear", "$hour", "$isoDayOfWeek",
    "$isoWeek", "$isoWeekYear", "$millisecond", "$minute", "$month", "$second", "$week", "$year",
    // types
    "$convert", "$isNumber", "$toBool", "$toDate", "$toDecimal", "$toDouble", "$toInt", "$toLong",
    "$toObjectId", "$toString", "$binarySize", "$bsonSize",
    // objects, variables, literals
    "$getField", "$mergeObjects", "$literal", "$let", "$rand", "$sampleRate",
    // accumulators and window functions
    "$sum", "$avg", "$min", "$max", "$push", "$addToSet", "$count", "$stdDevPop", "$stdDevSamp",
    "$top", "$topN", "$bottom", "$bottomN", "$median", "$percentile", "$covariancePop", "$covarianceSamp",
    "$denseRank", "$derivative", "$documentNumber", "$expMovingAvg", "$integral", "$linearFill",
    "$locf", "$rank", "$shift",
    // Extended JSON v2 type wrappers
    "$oid", "$date", "$numberLong", "$numberInt", "$numberDouble", "$numberDecimal", "$binary",
    "$base64", "$subType", "$uuid", "$timestamp", "$regularExpression", "$pattern", "$minKey", "$maxKey",
    "$undefined",
];

/// System variables a query may read (`$$USER_ROLES` and `$$CLUSTER_TIME` are not on it).
const VARIABLES: &[&str] = &["ROOT", "CURRENT", "NOW", "REMOVE", "DESCEND", "PRUNE", "KEEP"];

/// Judges one MongoDB query document.
pub(crate) fn check(
    text: &str,
    params: usize,
    policy: &Policy,
    limits: &Limits,
) -> Result<Checked, Rejection> {
    if params > 0 {
        return Err(Rejection::write("MongoDB queries take no positional parameters; write the values in"));
    }
    let doc = parse(text, limits)?;
    let Value::Object(mut doc) = doc else {
        return Err(syntax("the MongoDB query must be a JSON object"));
    };
    let collection = match doc.remove("collection") {
        Some(Value::String(c)) if valid_collection(&c) => c,
        Some(_) => return Err(syntax("`collection` must be a collection name (no `$`, not `system.*`)")),
        None => return Err(syntax("the MongoDB query needs a `collection`")),
    };
    let pipeline = doc.remove("pipeline");
    let mut out = Map::new();
    out.insert("collection".into(), Value::String(collection.clone()));
    let mut judge = Judge { policy, tables: vec![collection.clone()] };
    judge.collection(&collection)?;
    let private = judge.private_fields(&collection);
    if let Some(pipeline) = pipeline {
        if let Some(key) = doc.keys().next() {
            return Err(syntax(format!("`{key}` cannot be combined with `pipeline`")));
        }
        let mut stages = judge.pipeline(pipeline)?;
        if !private.is_empty() {
            stages.insert(0, exclusion_stage(&private));
        }
        out.insert("pipeline".into(), Value::Array(stages));
    } else {
        for key in doc.keys() {
            if !["filter", "projection", "sort", "skip", "limit"].contains(&key.as_str()) {
                return Err(syntax(format!("unknown query field `{key}`")));
            }
        }
        if let Some(filter) = doc.remove("filter") {
            judge.expect_object(&filter, "filter")?;
            judge.walk(&filter)?;
            out.insert("filter".into(), filter);
        }
        let projection = doc.remove("projection");
        if let Some(projection) = &projection {
            judge.expect_object(projection, "projection")?;
            judge.walk(projection)?;
        }
        if let Some(projection) = projection {
            out.insert("projection".into(), projection);
        }
        if let Some(sort) = doc.remove("sort") {
            judge.expect_object(&sort, "sort")?;
            judge.walk(&sort)?;
            out.insert("sort".into(), sort);
        }
        for key in ["skip", "limit"] {
            if let Some(n) = doc.remove(key) {
                if n.as_u64().is_none_or(|n| i64::try_from(n).is_err()) {
                    return Err(syntax(format!("`{key}` must be a whole number >= 0")));
                }
                out.insert(key.into(), n);
            }
        }
        if !private.is_empty() {
            // A filter or projection expression could read the private fields through a
            // variable (`$$ROOT`, `$getField`): as a pipeline, they are gone before it runs.
            out = find_as_pipeline(out, &private);
        }
    }
    let sql = serde_json::to_string(&Value::Object(out)).map_err(|e| Rejection::write(e.to_string()))?;
    let mut tables = Vec::new();
    for t in judge.tables {
        if !tables.contains(&t) {
            tables.push(t);
        }
    }
    Ok(Checked { tables, explain: false, sql, target: crate::Target::MONGO })
}

fn syntax(reason: impl Into<String>) -> Rejection {
    Rejection::new(RejectCode::SqlSyntaxError, reason)
}

fn denied() -> Rejection {
    Rejection::new(RejectCode::SchemaAccessDenied, SCHEMA_DENIED_REASON)
}

fn valid_collection(name: &str) -> bool {
    !name.is_empty() && !name.contains(['$', '\0']) && !name.starts_with("system.") && name.len() <= 255
}

/// `{"$project": {"a": 0, "b.c": 0}}`.
fn exclusion_stage(private: &BTreeSet<String>) -> Value {
    let fields = private.iter().map(|f| (f.clone(), Value::from(0))).collect::<Map<_, _>>();
    Value::Object(Map::from_iter([("$project".to_owned(), Value::Object(fields))]))
}

/// The find form as the equivalent pipeline that removes `private` first:
/// `$project` (exclusion), `$match`, `$sort`, `$skip`, `$limit`, `$project` (the projection).
fn find_as_pipeline(find: Map<String, Value>, private: &BTreeSet<String>) -> Map<String, Value> {
    let mut stages = vec![exclusion_stage(private)];
    for (key, stage) in [
        ("filter", "$match"),
        ("sort", "$sort"),
        ("skip", "$skip"),
        ("limit", "$limit"),
        ("projection", "$project"),
    ] {
        if let Some(value) = find.get(key) {
            stages.push(Value::Object(Map::from_iter([(stage.to_owned(), value.clone())])));
        }
    }
    let mut out = Map::new();
    out.insert("collection".into(), find["collection"].clone());
    out.insert("pipeline".into(), Value::Array(stages));
    out
}

struct Judge<'a> {
    policy: &'a Policy,
    tables: Vec<String>,
}

impl Judge<'_> {
    fn collection(&mut self, name: &str) -> Result<(), Rejection> {
        if self.policy.table_denied(&[name.to_owned()]) {
            return Err(denied());
        }
        self.tables.push(name.to_owned());
        Ok(())
    }

    /// The private fields of `collection` (policy entries match like table names).
    fn private_fields(&self, collection: &str) -> BTreeSet<String> {
        let parts = [collection.to_owned()];
        self.policy
            .private_columns
            .iter()
            .filter(|(t, _)| suffix_match(t, &parts))
            .flat_map(|(_, cols)| cols.iter().cloned())
            .collect()
    }

    /// Every private field of every collection in the policy: a name in a query is checked
    /// against all of them (a sub-pipeline may read another collection).
    fn is_private_path(&self, path: &str) -> bool {
        // `$$ROOT.a` and `$$CURRENT.a` name the field `a`; `$a` names `a`.
        let path = path
            .strip_prefix("$$ROOT.")
            .or_else(|| path.strip_prefix("$$CURRENT."))
            .unwrap_or_else(|| path.trim_start_matches('$'));
        self.policy.private_columns.values().flatten().any(|private| {
            path == private
                || path.strip_prefix(private.as_str()).is_some_and(|rest| rest.starts_with('.'))
                || private.strip_prefix(path).is_some_and(|rest| rest.starts_with('.'))
        })
    }

    fn expect_object(&self, value: &Value, what: &str) -> Result<(), Rejection> {
        if value.is_object() { Ok(()) } else { Err(syntax(format!("`{what}` must be an object"))) }
    }

    fn pipeline(&mut self, pipeline: Value) -> Result<Vec<Value>, Rejection> {
        let Value::Array(stages) = pipeline else {
            return Err(syntax("`pipeline` must be an array of stages"));
        };
        stages.into_iter().map(|stage| self.stage(stage)).collect()
    }

    fn stage(&mut self, stage: Value) -> Result<Value, Rejection> {
        let Value::Object(mut stage) = stage else {
            return Err(syntax("a pipeline stage must be an object"));
        };
        if stage.len() != 1 {
            return Err(syntax("a pipeline stage must have exactly one key"));
        }
        let (name, mut body) = stage.iter_mut().next().map(|(k, v)| (k.clone(), v.take())).expect("one key");
        stage.clear();
        refuse_named(&name)?;
        if !STAGES.contains(&name.as_str()) {
            return Err(Rejection::write(format!("the stage `{name}` is not allowed")));
        }
        match name.as_str() {
            "$lookup" | "$graphLookup" => body = self.lookup(&name, body)?,
            "$unionWith" => body = self.union_with(body)?,
            "$facet" => {
                let Value::Object(facets) = body else {
                    return Err(syntax("`$facet` takes an object of pipelines"));
                };
                let mut out = Map::new();
                for (facet, pipeline) in facets {
                    out.insert(facet, Value::Array(self.pipeline(pipeline)?));
                }
                body = Value::Object(out);
            }
            "$unset" => match &body {
                Value::String(f) if self.is_private_path(f) => return Err(denied()),
                Value::Array(fs)
                    if fs.iter().any(|f| f.as_str().is_some_and(|f| self.is_private_path(f))) =>
                {
                    return Err(denied());
                }
                Value::String(_) | Value::Array(_) => self.walk(&body)?,
                _ => return Err(syntax("`$unset` takes a field name or an array of them")),
            },
            _ => self.walk(&body)?,
        }
        stage.insert(name, body);
        Ok(Value::Object(stage))
    }

    /// `$lookup`/`$graphLookup`: the foreign collection is judged, and reads of one with
    /// private fields start with their removal.
    fn lookup(&mut self, name: &str, body: Value) -> Result<Value, Rejection> {
        let Value::Object(mut body) = body else {
            return Err(syntax(format!("`{name}` takes an object")));
        };
        let from = match body.get("from") {
            Some(Value::String(from)) if valid_collection(from) => from.clone(),
            Some(_) => return Err(syntax(format!("`{name}.from` must be a collection name"))),
            None if name == "$lookup" && body.contains_key("pipeline") => String::new(),
            None => return Err(syntax(format!("`{name}` needs `from`"))),
        };
        if !from.is_empty() {
            self.collection(&from)?;
        }
        let private = if from.is_empty() { BTreeSet::new() } else { self.private_fields(&from) };
        if name == "$graphLookup" && !private.is_empty() {
            return Err(denied());
        }
        let pipeline = body.remove("pipeline");
        for (key, value) in &body {
            if !["from", "as", "depthField", "maxDepth"].contains(&key.as_str()) {
                self.walk(value)?;
            }
            if ["localField", "foreignField", "connectFromField", "connectToField"].contains(&key.as_str())
                && value.as_str().is_some_and(|f| self.is_private_path(f))
            {
                return Err(denied());
            }
        }
        self.sub_pipeline(body, pipeline, &private)
    }

    /// A `$lookup`/`$unionWith` body with its sub-pipeline judged and, for a collection with
    /// private fields, their removal as its first stage.
    fn sub_pipeline(
        &mut self,
        mut body: Map<String, Value>,
        pipeline: Option<Value>,
        private: &BTreeSet<String>,
    ) -> Result<Value, Rejection> {
        let mut stages = match pipeline {
            Some(pipeline) => self.pipeline(pipeline)?,
            None => Vec::new(),
        };
        if !private.is_empty() {
            stages.insert(0, exclusion_stage(private));
        }
        if !stages.is_empty() {
            body.insert("pipeline".into(), Value::Array(stages));
        }
        Ok(Value::Object(body))
    }

    fn union_with(&mut self, body: Value) -> Result<Value, Rejection> {
        let mut body = match body {
            Value::String(coll) => Map::from_iter([("coll".to_owned(), Value::String(coll))]),
            Value::Object(map) => map,
            _ => return Err(syntax("`$unionWith` takes a collection name or an object")),
        };
        if let Some(key) = body.keys().find(|k| !["coll", "pipeline"].contains(&k.as_str())) {
            return Err(syntax(format!("unknown `$unionWith` field `{key}`")));
        }
        let Some(Value::String(coll)) = body.get("coll").cloned() else {
            return Err(syntax("`$unionWith` needs `coll`"));
        };
        if !valid_collection(&coll) {
            return Err(syntax("`$unionWith.coll` must be a collection name"));
        }
        self.collection(&coll)?;
        let private = self.private_fields(&coll);
        let pipeline = body.remove("pipeline");
        self.sub_pipeline(body, pipeline, &private)
    }

    /// Any value: `$` keys must be allowed operators, other keys and `"$path"` strings must not
    /// name a private field, `$$` variables must be allowed.
    fn walk(&self, value: &Value) -> Result<(), Rejection> {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    if key.starts_with('$') {
                        refuse_named(key)?;
                        if !OPERATORS.contains(&key.as_str()) {
                            return Err(Rejection::write(format!("the operator `{key}` is not allowed")));
                        }
                    } else if self.is_private_path(key) {
                        return Err(denied());
                    }
                    self.walk(inner)?;
                }
                Ok(())
            }
            Value::Array(items) => items.iter().try_for_each(|v| self.walk(v)),
            Value::String(s) if s.starts_with("$$") => {
                let var = s[2..].split('.').next().unwrap_or_default();
                let user = var.chars().next().is_some_and(|c| c.is_ascii_lowercase());
                if !user && !VARIABLES.contains(&var) {
                    return Err(Rejection::write(format!("the variable `$${var}` is not allowed")));
                }
                if self.is_private_path(s) { Err(denied()) } else { Ok(()) }
            }
            Value::String(s) if s.starts_with('$') && self.is_private_path(s) => Err(denied()),
            _ => Ok(()),
        }
    }
}

fn refuse_named(key: &str) -> Result<(), Rejection> {
    match NAMED_REFUSALS.iter().find(|(k, _)| *k == key) {
        Some((k, why)) => Err(Rejection::write(format!("`{k}` is not allowed: it {why}"))),
        None => Ok(()),
    }
}

/// Parses JSON refusing duplicate keys, deeper than `max_depth` levels or more than
/// `max_tokens` values.
fn parse(text: &str, limits: &Limits) -> Result<Value, Rejection> {
    let mut budget = Budget { values: 0, limits: *limits, over: None };
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed =
        Seed { budget: &mut budget, depth: 0 }.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    if let Some(over) = budget.over {
        return Err(Rejection::write(over));
    }
    parsed.map_err(|e| syntax(format!("the MongoDB query is not valid JSON: {e}")))
}

struct Budget {
    values: usize,
    limits: Limits,
    over: Option<String>,
}

struct Seed<'b> {
    budget: &'b mut Budget,
    depth: usize,
}

impl Seed<'_> {
    fn count<E: de::Error>(&mut self) -> Result<(), E> {
        self.budget.values += 1;
        if self.budget.values > self.budget.limits.max_tokens {
            self.budget.over = Some(format!("query has more than {} values", self.budget.limits.max_tokens));
            return Err(E::custom("too many values"));
        }
        Ok(())
    }

    fn nested<E: de::Error>(&mut self) -> Result<Seed<'_>, E> {
        if self.depth >= self.budget.limits.max_depth {
            self.budget.over =
                Some(format!("query nests deeper than {} levels", self.budget.limits.max_depth));
            return Err(E::custom("too deep"));
        }
        Ok(Seed { budget: self.budget, depth: self.depth + 1 })
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<Value, E> {
        self.count()?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<Value, E> {
        self.count()?;
        if v.contains('\0') {
            return Err(E::custom("NUL in a string"));
        }
        Ok(Value::String(v.to_owned()))
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self.nested()?)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key.contains('\0') {
                return Err(de::Error::custom("NUL in a key"));
            }
            let value = map.next_value_seed(self.nested()?)?;
            if out.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
        }
        Ok(Value::Object(out))
    }
}
