//! Tally's SQL subset: exact translations, refusals with codes, and values that could inject
//! TDL. Pure (the driver that sends the export is not built yet).

use gate::{Limits, Policy, RejectCode, Target, check_with};
use serde_json::{Value, json};

fn translate(sql: &str, policy: &Policy) -> Result<Value, (RejectCode, String)> {
    check_with(sql, 0, Target::TALLY, policy, &Limits::default())
        .map(|c| {
            assert_eq!(c.target(), Target::TALLY);
            serde_json::from_str(c.sql()).expect("JSON plan")
        })
        .map_err(|r| (r.code, r.reason))
}

#[test]
fn simple_selects_translate_exactly() {
    let plan = translate(
        "SELECT name, closingbalance FROM ledger WHERE parent = 'Sundry Debtors' AND (ClosingBalance > 1000 \
         OR Name IN ('Cash', 'शर्मा ट्रेडर्स')) ORDER BY ClosingBalance DESC, name LIMIT 10 OFFSET 5",
        &Policy::default(),
    )
    .unwrap();
    assert_eq!(plan["collection"], json!("Ledger"));
    assert_eq!(
        plan["fields"],
        json!([{"name": "Name", "type": "String"}, {"name": "ClosingBalance", "type": "Amount"}])
    );
    assert_eq!(
        plan["tdl"],
        json!(
            "($Parent = \"Sundry Debtors\") AND ((($ClosingBalance > 1000) OR (($Name = \"Cash\" OR $Name = \"शर्मा ट्रेडर्स\"))))"
        )
    );
    assert_eq!(plan["filter"]["and"][0], json!({"op": "eq", "field": "Parent", "value": "Sundry Debtors"}));
    assert_eq!(
        plan["order"],
        json!([{"field": "ClosingBalance", "desc": true}, {"field": "Name", "desc": false}])
    );
    assert_eq!((plan["limit"].clone(), plan["offset"].clone()), (json!(10), json!(5)));

    let plan = translate("SELECT * FROM StockItem WHERE Category IS NOT NULL", &Policy::default()).unwrap();
    assert_eq!(plan["fields"].as_array().unwrap().len(), 12);
    assert_eq!(plan["tdl"], json!("NOT $$IsEmpty:$Category"));
    let plan =
        translate("SELECT VoucherNumber FROM Voucher WHERE NOT IsCancelled = true", &Policy::default())
            .unwrap();
    assert_eq!(plan["tdl"], json!("NOT ($IsCancelled = Yes)"));
}

#[test]
fn what_cannot_be_translated_exactly_is_a_syntax_error() {
    for sql in [
        "SELECT Name FROM Ledger JOIN Group ON Ledger.Parent = Group.Name",
        "SELECT Name FROM Ledger, Voucher",
        "SELECT Name FROM Stuff",
        "SELECT Nope FROM Ledger",
        "SELECT upper(Name) FROM Ledger",
        "SELECT Name AS n FROM Ledger",
        "SELECT DISTINCT Name FROM Ledger",
        "SELECT Parent, count(*) FROM Ledger GROUP BY Parent",
        "SELECT Name FROM Ledger WHERE Name LIKE 'C%'",
        "SELECT Name FROM Ledger WHERE ClosingBalance > -5",
        "SELECT Name FROM Ledger WHERE Name = Parent",
        "SELECT Name FROM Ledger WHERE ClosingBalance = 'x'",
        "SELECT Name FROM Voucher WHERE Date > '2024-04-01'",
        "SELECT Name FROM Ledger WHERE Name IN (SELECT Name FROM Group)",
        "SELECT Name FROM Ledger UNION SELECT Name FROM Group",
        "WITH x AS (SELECT Name FROM Ledger) SELECT Name FROM x",
        "SELECT Name FROM Ledger ORDER BY upper(Name)",
        "SELECT Name FROM Ledger LIMIT 5, 10",
        "SELECT Name FROM Ledger HAVING Name = 'x'",
        "SELECT 1",
    ] {
        let (code, reason) = translate(sql, &Policy::default()).expect_err(sql);
        assert!(
            code == RejectCode::SqlSyntaxError || code == RejectCode::WriteOperationRejected,
            "{sql}: {code:?} {reason}"
        );
    }
    let (code, reason) =
        translate("SELECT Name FROM Ledger WHERE Name LIKE 'C%'", &Policy::default()).unwrap_err();
    assert_eq!(code, RejectCode::SqlSyntaxError);
    assert!(reason.starts_with("cannot be translated into a Tally export"), "{reason}");
    // Writes never reach the translator.
    let (code, _) = translate("UPDATE Ledger SET Name = 'x'", &Policy::default()).unwrap_err();
    assert_eq!(code, RejectCode::WriteKeywordDetected);
    let params = check_with(
        "SELECT Name FROM Ledger WHERE Name = ?",
        1,
        Target::TALLY,
        &Policy::default(),
        &Limits::default(),
    );
    assert_eq!(params.unwrap_err().code, RejectCode::SqlSyntaxError);
}

#[test]
fn values_that_could_become_tdl_are_refused() {
    for value in
        ["a\" OR \"1\" = \"1", "$$SysName", "##Var", "@@Formula", "a|b", "a;b", "line\nbreak", "tab\tx"]
    {
        let sql = format!("SELECT Name FROM Ledger WHERE Name = '{}'", value.replace('\'', "''"));
        let (code, reason) = translate(&sql, &Policy::default()).expect_err(&sql);
        assert!(
            matches!(code, RejectCode::SqlSyntaxError | RejectCode::WriteOperationRejected),
            "{sql}: {reason}"
        );
    }
    // An apostrophe is plain text in TDL.
    let plan =
        translate("SELECT Name FROM Ledger WHERE Name = 'O''Brien & Sons'", &Policy::default()).unwrap();
    assert_eq!(plan["tdl"], json!("$Name = \"O'Brien & Sons\""));
}

#[test]
fn private_collections_and_fields_are_denied() {
    let mut policy = Policy::default();
    policy.private_tables.insert("voucher".into());
    policy.private_columns.insert("Ledger".into(), ["PartyGSTIN".to_owned()].into());
    for sql in ["SELECT Name FROM Voucher", "SELECT partygstin FROM Ledger", "SELECT * FROM Ledger"] {
        let (code, _) = translate(sql, &policy).expect_err(sql);
        assert_eq!(code, RejectCode::SchemaAccessDenied, "{sql}");
    }
    assert!(translate("SELECT Name FROM Ledger", &policy).is_ok());
}
