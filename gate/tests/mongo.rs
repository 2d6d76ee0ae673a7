//! The MongoDB gate: the JSON query forms, the allow-lists (fail closed), privacy and its
//! rewrite, and the cost limits. Pure: no server (the driver's tests run the verdicts).

use gate::{Limits, Policy, RejectCode, Target, check_with};
use serde_json::{Value, json};

fn judge(query: &Value, policy: &Policy) -> Result<Value, (RejectCode, String)> {
    check_with(&query.to_string(), 0, Target::MONGO, policy, &Limits::default())
        .map(|checked| {
            assert_eq!(checked.target(), Target::MONGO);
            serde_json::from_str(checked.sql()).expect("the verdict is JSON")
        })
        .map_err(|r| (r.code, r.reason))
}

fn refused(query: &Value) -> (RejectCode, String) {
    judge(query, &Policy::default()).expect_err(&query.to_string())
}

fn private() -> Policy {
    let mut policy = Policy::default();
    policy.private_tables.insert("payroll".into());
    policy.private_columns.insert("customers".into(), ["ssn".to_owned(), "card.number".to_owned()].into());
    policy
}

#[test]
fn find_and_pipeline_forms_pass_in_canonical_key_order() {
    let find = json!({"limit": 5, "collection": "orders", "sort": {"total": -1},
        "filter": {"status": {"$in": ["open", "paid"]}, "total": {"$gte": {"$numberDecimal": "10.5"}}},
        "projection": {"_id": 0, "total": 1}, "skip": 2});
    let checked =
        check_with(&find.to_string(), 0, Target::MONGO, &Policy::default(), &Limits::default()).unwrap();
    assert!(checked.sql().starts_with(r#"{"collection":"orders","filter":"#), "{}", checked.sql());
    assert_eq!(checked.tables, ["orders"]);
    let out: Value = serde_json::from_str(checked.sql()).unwrap();
    assert_eq!(out["limit"], json!(5));
    assert_eq!(out["projection"], json!({"_id": 0, "total": 1}));

    let pipeline = json!({"collection": "orders", "pipeline": [
        {"$match": {"$expr": {"$gt": ["$total", 100]}}},
        {"$group": {"_id": "$customer", "n": {"$sum": 1}, "sum": {"$sum": "$total"}}},
        {"$lookup": {"from": "customers", "localField": "_id", "foreignField": "_id", "as": "c"}},
        {"$unwind": "$c"},
        {"$project": {"name": {"$toUpper": "$c.name"}, "n": 1, "day": {"$dateToString": {"format": "%Y", "date": "$$NOW"}}}},
        {"$sort": {"n": -1}}, {"$limit": 10}]});
    let checked =
        check_with(&pipeline.to_string(), 0, Target::MONGO, &Policy::default(), &Limits::default()).unwrap();
    assert_eq!(checked.tables, ["orders", "customers"]);
    // Accepted text re-checks to itself.
    let again = check_with(checked.sql(), 0, Target::MONGO, &Policy::default(), &Limits::default()).unwrap();
    assert_eq!(again.sql(), checked.sql());
}

#[test]
fn writes_javascript_and_admin_stages_are_refused_wherever_they_hide() {
    let cases = [
        json!({"collection": "o", "pipeline": [{"$out": "copy"}]}),
        json!({"collection": "o", "pipeline": [{"$merge": {"into": "copy"}}]}),
        json!({"collection": "o", "pipeline": [{"$currentOp": {}}]}),
        json!({"collection": "o", "pipeline": [{"$collStats": {}}]}),
        json!({"collection": "o", "pipeline": [{"$listSessions": {}}]}),
        json!({"collection": "o", "pipeline": [{"$indexStats": {}}]}),
        json!({"collection": "o", "pipeline": [{"$documents": [{"a": 1}]}]}),
        json!({"collection": "o", "filter": {"$where": "sleep(10000) || true"}}),
        json!({"collection": "o", "filter": {"a": {"$elemMatch": {"$where": "1"}}}}),
        json!({"collection": "o", "filter": {"$and": [{"a": 1}, {"$where": "1"}]}}),
        json!({"collection": "o", "filter": {"$expr": {"$function": {"body": "x", "args": [], "lang": "js"}}}}),
        json!({"collection": "o", "projection": {"x": {"$function": {"body": "x", "args": [], "lang": "js"}}}}),
        json!({"collection": "o", "pipeline": [{"$group": {"_id": 1, "x": {"$accumulator": {}}}}]}),
        json!({"collection": "o", "pipeline": [{"$facet": {"a": [{"$out": "copy"}]}}]}),
        json!({"collection": "o", "pipeline": [{"$lookup": {"from": "c", "as": "x", "pipeline": [{"$merge": "c"}]}}]}),
        json!({"collection": "o", "pipeline": [{"$unionWith": {"coll": "c", "pipeline": [{"$out": "d"}]}}]}),
        json!({"collection": "o", "pipeline": [{"$project": {"x": {"$cond": [true, {"$function": {}}, 1]}}}]}),
        json!({"collection": "o", "filter": {"a": {"$code": "function() {}"}}}),
        json!({"collection": "o", "pipeline": [{"$brandNewStage": {}}]}),
        json!({"collection": "o", "filter": {"a": {"$brandNewOperator": 1}}}),
        json!({"collection": "o", "pipeline": [{"$project": {"r": "$$USER_ROLES"}}]}),
    ];
    for case in cases {
        let (code, reason) = refused(&case);
        assert_eq!(code, RejectCode::WriteOperationRejected, "{case}: {reason}");
    }
    let (_, reason) = refused(&json!({"collection": "o", "pipeline": [{"$out": "copy"}]}));
    assert!(reason.contains("writes the result into a collection"), "{reason}");
    let (_, reason) = refused(&json!({"collection": "o", "filter": {"$where": "1"}}));
    assert!(reason.contains("JavaScript"), "{reason}");
    // `$where` as a value is only a string to compare with.
    assert!(judge(&json!({"collection": "o", "filter": {"note": "$where"}}), &Policy::default()).is_ok());
}

#[test]
fn malformed_documents_are_syntax_errors() {
    let texts = [
        "not json",
        "[1, 2]",
        r#"{"filter": {}}"#,
        r#"{"collection": 5}"#,
        r#"{"collection": "system.users"}"#,
        r#"{"collection": "a$b"}"#,
        r#"{"collection": "o", "pipeline": [], "filter": {}}"#,
        r#"{"collection": "o", "update": {"$set": {"a": 1}}}"#,
        r#"{"collection": "o", "pipeline": {"$match": {}}}"#,
        r#"{"collection": "o", "pipeline": [{"$match": {}, "$limit": 1}]}"#,
        r#"{"collection": "o", "limit": -1}"#,
        r#"{"collection": "o", "filter": {"a": 1, "a": {"$ne": 1}}}"#,
        r#"{"collection": "o", "collection": "p"}"#,
        r#"{"collection": "o"} trailing"#,
    ];
    for text in texts {
        let rejection =
            check_with(text, 0, Target::MONGO, &Policy::default(), &Limits::default()).expect_err(text);
        assert_eq!(rejection.code, RejectCode::SqlSyntaxError, "{text}: {}", rejection.reason);
    }
    let dup = check_with(
        r#"{"collection": "o", "filter": {"a": 1, "a": 2}}"#,
        0,
        Target::MONGO,
        &Policy::default(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(dup.reason.contains("duplicate key `a`"), "{}", dup.reason);
    let params =
        check_with(r#"{"collection": "o"}"#, 1, Target::MONGO, &Policy::default(), &Limits::default());
    assert_eq!(params.unwrap_err().code, RejectCode::WriteOperationRejected);
}

#[test]
fn cost_limits_hold_before_anything_is_judged() {
    let deep =
        format!(r#"{{"collection": "o", "filter": {}1{}}}"#, r#"{"$and": ["#.repeat(40), "]}".repeat(40));
    let r = check_with(&deep, 0, Target::MONGO, &Policy::default(), &Limits::default()).unwrap_err();
    assert_eq!(r.code, RejectCode::WriteOperationRejected, "{}", r.reason);
    assert!(r.reason.contains("deeper than 32"), "{}", r.reason);
    let wide = format!(r#"{{"collection": "o", "filter": {{"a": {{"$in": [{}0]}}}}}}"#, "0,".repeat(60_000));
    let r = check_with(&wide, 0, Target::MONGO, &Policy::default(), &Limits::default()).unwrap_err();
    assert!(r.reason.contains("more than 50000 values"), "{}", r.reason);
}

#[test]
fn private_collections_and_named_private_fields_are_denied() {
    let policy = private();
    let cases = [
        json!({"collection": "payroll"}),
        json!({"collection": "o", "pipeline": [{"$lookup": {"from": "payroll", "localField": "a", "foreignField": "b", "as": "p"}}]}),
        json!({"collection": "o", "pipeline": [{"$unionWith": "payroll"}]}),
        json!({"collection": "o", "pipeline": [{"$facet": {"x": [{"$unionWith": {"coll": "payroll"}}]}}]}),
        json!({"collection": "customers", "filter": {"ssn": "123"}}),
        json!({"collection": "customers", "filter": {"card.number": {"$exists": true}}}),
        json!({"collection": "customers", "filter": {"card": {"$ne": null}}, "projection": {"card": 1}}),
        json!({"collection": "customers", "projection": {"ssn": 1}}),
        json!({"collection": "customers", "sort": {"ssn": 1}}),
        json!({"collection": "customers", "pipeline": [{"$project": {"x": "$ssn"}}]}),
        json!({"collection": "customers", "pipeline": [{"$project": {"x": "$$ROOT.ssn"}}]}),
        json!({"collection": "customers", "pipeline": [{"$group": {"_id": "$card.number"}}]}),
        json!({"collection": "o", "pipeline": [{"$lookup": {"from": "customers", "localField": "c", "foreignField": "ssn", "as": "x"}}]}),
        json!({"collection": "o", "pipeline": [{"$graphLookup": {"from": "customers", "startWith": "$c", "connectFromField": "a", "connectToField": "b", "as": "x"}}]}),
    ];
    for case in cases {
        let (code, reason) = judge(&case, &policy).expect_err(&case.to_string());
        assert_eq!(code, RejectCode::SchemaAccessDenied, "{case}: {reason}");
        assert!(!reason.contains("ssn") && !reason.contains("payroll"), "the reason names nothing: {reason}");
    }
    let approved = Policy { approved_tables: Some(["orders".to_owned()].into()), ..Policy::default() };
    assert!(judge(&json!({"collection": "orders"}), &approved).is_ok());
    assert_eq!(
        judge(&json!({"collection": "customers"}), &approved).unwrap_err().0,
        RejectCode::SchemaAccessDenied
    );
}

#[test]
fn queries_that_do_not_name_private_fields_get_them_removed_at_the_source() {
    let policy = private();
    // The find form becomes a pipeline that drops them first: a `$let` alias of `$$ROOT` in
    // the filter then finds nothing to read.
    let find = json!({"collection": "customers", "filter": {"$expr": {"$let": {"vars": {"r": "$$ROOT"},
        "in": {"$eq": ["$$r.ssn", "1"]}}}}, "sort": {"name": 1}, "limit": 3, "projection": {"name": 1}});
    let out = judge(&find, &policy).unwrap();
    assert_eq!(
        out,
        json!({"collection": "customers", "pipeline": [
            {"$project": {"card.number": 0, "ssn": 0}},
            {"$match": find["filter"]}, {"$sort": {"name": 1}}, {"$limit": 3}, {"$project": {"name": 1}}]})
    );
    // Without private fields the find form stays a find.
    let out = judge(&json!({"collection": "orders", "filter": {"a": 1}}), &policy).unwrap();
    assert_eq!(out, json!({"collection": "orders", "filter": {"a": 1}}));

    let out = judge(
        &json!({"collection": "customers", "pipeline": [{"$replaceRoot": {"newRoot": "$$ROOT"}}]}),
        &policy,
    )
    .unwrap();
    assert_eq!(out["pipeline"][0], json!({"$project": {"card.number": 0, "ssn": 0}}));
    assert_eq!(out["pipeline"][1], json!({"$replaceRoot": {"newRoot": "$$ROOT"}}));

    let out = judge(
        &json!({"collection": "orders", "pipeline": [
            {"$lookup": {"from": "customers", "localField": "customer", "foreignField": "_id", "as": "c"}},
            {"$unionWith": "customers"}]}),
        &policy,
    )
    .unwrap();
    let exclusion = json!([{"$project": {"card.number": 0, "ssn": 0}}]);
    assert_eq!(out["pipeline"][0]["$lookup"]["pipeline"], exclusion);
    assert_eq!(out["pipeline"][1]["$unionWith"], json!({"coll": "customers", "pipeline": exclusion}));
    assert_eq!(out.get("pipeline").and_then(|p| p.as_array()).map(Vec::len), Some(2), "orders has none");
}

#[test]
fn random_json_never_panics() {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<i64>().prop_map(|n| json!(n)),
        "[$a-z.]{0,8}".prop_map(|s| json!(s)),
    ];
    let value = leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[$a-z.]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    proptest!(ProptestConfig::with_cases(512), |(filter in value.clone(), stage in value)| {
        for q in [json!({"collection": "o", "filter": filter}), json!({"collection": "o", "pipeline": [stage]})] {
            if let Ok(checked) = check_with(&q.to_string(), 0, Target::MONGO, &private(), &Limits::default()) {
                let again = check_with(checked.sql(), 0, Target::MONGO, &private(), &Limits::default()).unwrap();
                prop_assert_eq!(again.sql(), checked.sql());
            }
        }
    });
}

#[test]
fn sort_documents_keep_their_key_order() {
    // `{"b": 1, "a": -1}` sorts by b first: the approved text must keep that order.
    let find = json!({"collection": "o", "sort": {"b": 1, "a": -1}, "projection": {"z": 1, "y": 1}});
    let checked =
        check_with(&find.to_string(), 0, Target::MONGO, &Policy::default(), &Limits::default()).unwrap();
    assert!(checked.sql().contains(r#""sort":{"b":1,"a":-1}"#), "{}", checked.sql());
    assert!(checked.sql().contains(r#""projection":{"z":1,"y":1}"#), "{}", checked.sql());
    let pipeline = json!({"collection": "o", "pipeline": [{"$sort": {"zz": -1, "aa": 1}}]});
    let checked =
        check_with(&pipeline.to_string(), 0, Target::MONGO, &Policy::default(), &Limits::default()).unwrap();
    assert!(checked.sql().contains(r#"{"$sort":{"zz":-1,"aa":1}}"#), "{}", checked.sql());
}
