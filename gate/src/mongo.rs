//! The read-only gate for MongoDB: a query is a JSON document, judged field by field.
//!
//! Forms (see `docs/PROTOCOL.md`):
//! `{"collection": "c", "filter": {..}, "projection": {..}, "sort": {..}, "skip": n, "limit": n}`
//! or `{"collection": "c", "pipeline": [..]}`. Anything not on the allow-lists is refused with
//! `WRITE_OPERATION_REJECTED` (fail closed). The verdict's text is the approved document,
//! re-serialised by this module (canonical key order), and is what the driver runs.
//!
//! SKELETON: the minimal allow-list below is a placeholder that the full gate replaces.

use serde_json::{Map, Value};

use crate::{Checked, Limits, Policy, RejectCode, Rejection, SCHEMA_DENIED_REASON};

const STAGES: &[&str] = &["$match", "$project", "$sort", "$limit", "$skip", "$count"];
const OPERATORS: &[&str] =
    &["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$and", "$or", "$nor", "$not", "$exists"];

/// Judges one MongoDB query document.
pub(crate) fn check(
    text: &str,
    params: usize,
    policy: &Policy,
    limits: &Limits,
) -> Result<Checked, Rejection> {
    if params > 0 {
        return Err(Rejection::write("MongoDB queries take no positional parameters"));
    }
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        Rejection::new(RejectCode::SqlSyntaxError, format!("the MongoDB query is not a JSON document: {e}"))
    })?;
    let Value::Object(doc) = doc else {
        return Err(Rejection::new(RejectCode::SqlSyntaxError, "the MongoDB query must be a JSON object"));
    };
    let Some(Value::String(collection)) = doc.get("collection") else {
        return Err(Rejection::new(
            RejectCode::SqlSyntaxError,
            "the MongoDB query needs a `collection` string",
        ));
    };
    if policy.table_denied(&[collection.clone()]) {
        return Err(Rejection::new(RejectCode::SchemaAccessDenied, SCHEMA_DENIED_REASON));
    }
    for (key, value) in &doc {
        match key.as_str() {
            "collection" | "skip" | "limit" => {}
            "filter" | "projection" | "sort" => operators(value, 0, limits)?,
            "pipeline" => {
                let Value::Array(stages) = value else {
                    return Err(Rejection::write("`pipeline` must be an array of stages"));
                };
                for stage in stages {
                    let Value::Object(stage) = stage else {
                        return Err(Rejection::write("a pipeline stage must be an object"));
                    };
                    for (name, body) in stage {
                        if !STAGES.contains(&name.as_str()) {
                            return Err(Rejection::write(format!("the stage `{name}` is not allowed")));
                        }
                        operators(body, 0, limits)?;
                    }
                }
            }
            other => return Err(Rejection::write(format!("unknown query field `{other}`"))),
        }
    }
    let text = serde_json::to_string(&Value::Object(Map::from_iter(doc.clone())))
        .map_err(|e| Rejection::write(e.to_string()))?;
    Ok(Checked { tables: vec![collection.clone()], explain: false, sql: text, target: crate::Target::MONGO })
}

fn operators(value: &Value, depth: usize, limits: &Limits) -> Result<(), Rejection> {
    if depth > limits.max_depth {
        return Err(Rejection::write(format!("query nests deeper than {} levels", limits.max_depth)));
    }
    match value {
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if k.starts_with('$') && !OPERATORS.contains(&k.as_str()) {
                return Err(Rejection::write(format!("the operator `{k}` is not allowed")));
            }
            operators(v, depth + 1, limits)
        }),
        Value::Array(items) => items.iter().try_for_each(|v| operators(v, depth + 1, limits)),
        _ => Ok(()),
    }
}
