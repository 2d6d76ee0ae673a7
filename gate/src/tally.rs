//! Tally's SQL subset: a `SELECT` over one Tally collection, translated exactly into what a
//! collection export needs, or refused with `SQL_SYNTAX_ERROR`.
//!
//! The SQL layers have already approved the text (generic dialect, privacy). Here it is parsed
//! again and must be exactly
//! `SELECT field, … | * FROM Ledger|Group|StockItem|Voucher|Company [WHERE …] [ORDER BY field
//! [ASC|DESC], …] [LIMIT n] [OFFSET m]`, where the condition is built from `=`, `<>`, `<`,
//! `<=`, `>`, `>=` between a field and a string or number literal, `AND`, `OR`, `NOT`,
//! `IS [NOT] NULL`, `[NOT] IN (literals)` and brackets. Field names come from a fixed catalogue
//! per collection (case-insensitive, answered in Tally's spelling). **Exactness** is proven,
//! not assumed: the pieces the translator understood are printed back into a query, which must
//! parse to the same tree as the original, so no clause can be dropped silently.
//!
//! String literals may not hold `"`, `$`, `#`, `@`, `|`, `;`, control characters or line breaks:
//! the driver writes them into an inline TDL formula between double quotes, which has no escape,
//! so such a value is refused rather than risk a formula the user wrote. Date fields are not
//! comparable in the subset (Tally's date literals depend on the company's settings); `LIKE`,
//! functions, joins, grouping and parameters are refused.
//!
//! The verdict's text is canonical JSON (see `docs/PROTOCOL.md`, "Tally queries"):
//! `{"collection", "fields": [{"name", "type"}], "filter", "tdl", "order": [{"field", "desc"}],
//! "limit", "offset"}`. `tdl` is Tally's filter formula (Tally compares strings without regard to
//! case, so the driver also applies `filter` itself, exactly, to what Tally returns).

use serde_json::{Value, json};
use sqlparser::ast::{
    BinaryOperator, Expr, InTarget, LimitClause, OrderByKind, SelectItem, SetExpr, Statement, TableFactor,
    UnaryOperator,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::{Checked, Policy, RejectCode, Rejection, SCHEMA_DENIED_REASON};

/// Tally's collections in the subset, with their fields and Tally types.
pub const COLLECTIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "Ledger",
        &[
            ("Name", "String"),
            ("Parent", "String"),
            ("OpeningBalance", "Amount"),
            ("ClosingBalance", "Amount"),
            ("Email", "String"),
            ("LedgerPhone", "String"),
            ("PartyGSTIN", "String"),
            ("IsBillWiseOn", "Logical"),
            ("GUID", "String"),
            ("MasterID", "Number"),
            ("AlterID", "Number"),
        ],
    ),
    (
        "Group",
        &[
            ("Name", "String"),
            ("Parent", "String"),
            ("IsRevenue", "Logical"),
            ("AffectsStock", "Logical"),
            ("GUID", "String"),
            ("MasterID", "Number"),
            ("AlterID", "Number"),
        ],
    ),
    (
        "StockItem",
        &[
            ("Name", "String"),
            ("Parent", "String"),
            ("Category", "String"),
            ("BaseUnits", "String"),
            ("OpeningBalance", "Quantity"),
            ("OpeningValue", "Amount"),
            ("ClosingBalance", "Quantity"),
            ("ClosingValue", "Amount"),
            ("ClosingRate", "Rate"),
            ("GUID", "String"),
            ("MasterID", "Number"),
            ("AlterID", "Number"),
        ],
    ),
    (
        "Voucher",
        &[
            ("Date", "Date"),
            ("VoucherTypeName", "String"),
            ("VoucherNumber", "String"),
            ("PartyLedgerName", "String"),
            ("Amount", "Amount"),
            ("Narration", "String"),
            ("IsCancelled", "Logical"),
            ("GUID", "String"),
            ("MasterID", "Number"),
            ("AlterID", "Number"),
        ],
    ),
    (
        "Company",
        &[
            ("Name", "String"),
            ("StartingFrom", "Date"),
            ("BooksFrom", "Date"),
            ("Email", "String"),
            ("StateName", "String"),
            ("GUID", "String"),
        ],
    ),
];

type Fields = &'static [(&'static str, &'static str)];

/// Translates a query the SQL layers already approved.
pub(crate) fn check(sql: &str, params: usize, policy: &Policy) -> Result<Checked, Rejection> {
    if params > 0 {
        return Err(untranslatable("parameters are not supported; write the values in"));
    }
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| untranslatable(e.to_string()))?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err(untranslatable("only one SELECT"));
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(untranslatable("only a plain SELECT"));
    };
    let [from] = select.from.as_slice() else {
        return Err(untranslatable("exactly one collection after FROM"));
    };
    if !from.joins.is_empty() {
        return Err(untranslatable("joins"));
    }
    let TableFactor::Table { name, .. } = &from.relation else {
        return Err(untranslatable("FROM must name a collection"));
    };
    let table_text = name.to_string();
    let Some(&(collection, fields)) = COLLECTIONS.iter().find(|(c, _)| c.eq_ignore_ascii_case(&table_text))
    else {
        let known = COLLECTIONS.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
        return Err(untranslatable(format!("unknown collection `{table_text}` (known: {known})")));
    };
    let private = |field: &str| {
        policy
            .private_columns
            .iter()
            .filter(|(t, _)| t.eq_ignore_ascii_case(collection))
            .any(|(_, cols)| cols.iter().any(|c| c.eq_ignore_ascii_case(field)))
    };

    let mut chosen = Vec::new();
    let mut items = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(_) => {
                chosen.extend(fields.iter().filter(|(f, _)| !private(f)).copied());
            }
            SelectItem::UnnamedExpr(Expr::Identifier(ident)) => chosen.push(field(fields, &ident.value)?),
            _ => return Err(untranslatable("only field names or * after SELECT")),
        }
        items.push(item.to_string());
    }
    if chosen.iter().any(|(f, _)| private(f)) {
        return Err(Rejection::new(RejectCode::SchemaAccessDenied, SCHEMA_DENIED_REASON));
    }

    let (filter, tdl) = match &select.selection {
        Some(expr) => {
            let filter = condition(fields, expr)?;
            (Some(filter.0), Some(filter.1))
        }
        None => (None, None),
    };
    let mut order = Vec::new();
    let mut order_text = Vec::new();
    if let Some(order_by) = &query.order_by {
        let OrderByKind::Expressions(exprs) = &order_by.kind else {
            return Err(untranslatable("ORDER BY ALL"));
        };
        for e in exprs {
            let Expr::Identifier(ident) = &e.expr else {
                return Err(untranslatable("ORDER BY takes field names"));
            };
            let (name, _) = field(fields, &ident.value)?;
            let desc = matches!(e.options.sort, Some(sqlparser::ast::OrderBySort::Desc));
            order.push(json!({"field": name, "desc": desc}));
            order_text.push(e.to_string());
        }
    }
    let (mut limit, mut offset) = (None, None);
    let mut limit_text = String::new();
    if let Some(clause) = &query.limit_clause {
        let LimitClause::LimitOffset { limit: l, offset: o, .. } = clause else {
            return Err(untranslatable("write LIMIT n OFFSET m"));
        };
        if let Some(l) = l {
            limit = Some(whole(l)?);
            limit_text.push_str(&format!(" LIMIT {l}"));
        }
        if let Some(o) = o {
            offset = Some(whole(&o.value)?);
            limit_text.push_str(&format!(" OFFSET {}", o.value));
        }
    }

    // Exactness: what was understood, printed back, must be the whole query.
    let mut rebuilt = format!("SELECT {} FROM {name}", items.join(", "));
    if let Some(expr) = &select.selection {
        rebuilt.push_str(&format!(" WHERE {expr}"));
    }
    if !order_text.is_empty() {
        rebuilt.push_str(&format!(" ORDER BY {}", order_text.join(", ")));
    }
    rebuilt.push_str(&limit_text);
    let same = Parser::parse_sql(&GenericDialect {}, &rebuilt).is_ok_and(|again| again == statements);
    if !same {
        return Err(untranslatable("only SELECT fields FROM collection WHERE … ORDER BY … LIMIT … OFFSET …"));
    }

    let plan = json!({
        "collection": collection,
        "fields": chosen.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
        "filter": filter,
        "tdl": tdl,
        "order": order,
        "limit": limit,
        "offset": offset,
    });
    Ok(Checked {
        tables: vec![collection.to_owned()],
        explain: false,
        sql: plan.to_string(),
        target: crate::Target::TALLY,
    })
}

fn untranslatable(why: impl std::fmt::Display) -> Rejection {
    Rejection::new(RejectCode::SqlSyntaxError, format!("cannot be translated into a Tally export: {why}"))
}

fn field(fields: Fields, name: &str) -> Result<(&'static str, &'static str), Rejection> {
    fields
        .iter()
        .find(|(f, _)| f.eq_ignore_ascii_case(name))
        .copied()
        .ok_or_else(|| untranslatable(format!("unknown field `{name}`")))
}

fn whole(expr: &Expr) -> Result<u64, Rejection> {
    match expr {
        Expr::Value(v) => match &v.value {
            sqlparser::ast::Value::Number(n, _) => {
                n.parse().map_err(|_| untranslatable("LIMIT/OFFSET take whole numbers"))
            }
            _ => Err(untranslatable("LIMIT/OFFSET take whole numbers")),
        },
        _ => Err(untranslatable("LIMIT/OFFSET take whole numbers")),
    }
}

/// A condition as a JSON tree (for the driver's exact check) and as a TDL formula.
fn condition(fields: Fields, expr: &Expr) -> Result<(Value, String), Rejection> {
    match expr {
        Expr::Nested(inner) => {
            let (tree, tdl) = condition(fields, inner)?;
            Ok((tree, format!("({tdl})")))
        }
        Expr::UnaryOp { op: UnaryOperator::Not, expr } => {
            let (tree, tdl) = condition(fields, expr)?;
            Ok((json!({"not": tree}), format!("NOT ({tdl})")))
        }
        Expr::BinaryOp { left, op: op @ (BinaryOperator::And | BinaryOperator::Or), right } => {
            let (l, lt) = condition(fields, left)?;
            let (r, rt) = condition(fields, right)?;
            let word = if *op == BinaryOperator::And { "and" } else { "or" };
            Ok((json!({ word: [l, r] }), format!("({lt}) {} ({rt})", word.to_uppercase())))
        }
        Expr::BinaryOp { left, op, right } => {
            let (sym, name) = match op {
                BinaryOperator::Eq => ("=", "eq"),
                BinaryOperator::NotEq => ("<>", "ne"),
                BinaryOperator::Lt => ("<", "lt"),
                BinaryOperator::LtEq => ("<=", "le"),
                BinaryOperator::Gt => (">", "gt"),
                BinaryOperator::GtEq => (">=", "ge"),
                _ => return Err(untranslatable(format!("the operator {op}"))),
            };
            let (field, kind) = field_of(fields, left)?;
            let (value, text) = literal(kind, right)?;
            Ok((json!({"op": name, "field": field, "value": value}), format!("${field} {sym} {text}")))
        }
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
            let (field, _) = field_of(fields, inner)?;
            let null = matches!(expr, Expr::IsNull(_));
            let tdl = format!("$$IsEmpty:${field}");
            let tree = json!({"op": if null { "null" } else { "notNull" }, "field": field});
            Ok((tree, if null { tdl } else { format!("NOT {tdl}") }))
        }
        Expr::In { expr, target: InTarget::List(list), negated, global: false } => {
            let (field, kind) = field_of(fields, expr)?;
            let mut values = Vec::new();
            let mut parts = Vec::new();
            for item in list {
                let (value, text) = literal(kind, item)?;
                values.push(value);
                parts.push(format!("${field} = {text}"));
            }
            if parts.is_empty() {
                return Err(untranslatable("an empty IN list"));
            }
            let any = format!("({})", parts.join(" OR "));
            let tree = json!({"op": "in", "field": field, "values": values});
            if *negated { Ok((json!({"not": tree}), format!("NOT {any}"))) } else { Ok((tree, any)) }
        }
        _ => Err(untranslatable(format!("the condition `{expr}`"))),
    }
}

fn field_of(fields: Fields, expr: &Expr) -> Result<(&'static str, &'static str), Rejection> {
    let Expr::Identifier(ident) = expr else {
        return Err(untranslatable("a comparison must have a field name on its left"));
    };
    let (name, kind) = field(fields, &ident.value)?;
    if kind == "Date" {
        return Err(untranslatable(format!("comparisons on the date field `{name}`")));
    }
    Ok((name, kind))
}

/// A literal as JSON and as TDL text for a field of Tally type `kind`.
fn literal(kind: &str, expr: &Expr) -> Result<(Value, String), Rejection> {
    let Expr::Value(v) = expr else {
        return Err(untranslatable("a comparison must have a literal on its right"));
    };
    match (&v.value, kind) {
        (sqlparser::ast::Value::SingleQuotedString(s), "String") => {
            if s.chars().any(|c| c.is_control() || "\"$#@|;\u{2028}\u{2029}".contains(c)) {
                return Err(untranslatable(
                    "string values may not contain \", $, #, @, |, ; or control characters",
                ));
            }
            Ok((json!(s), format!("\"{s}\"")))
        }
        (sqlparser::ast::Value::Number(n, false), "Amount" | "Number" | "Quantity" | "Rate") => {
            if !n.bytes().all(|b| b.is_ascii_digit() || b == b'.') || n.parse::<f64>().is_err() {
                return Err(untranslatable(format!("the number {n}")));
            }
            Ok((json!(n), n.clone()))
        }
        (sqlparser::ast::Value::Boolean(b), "Logical") => {
            Ok((json!(b), if *b { "Yes" } else { "No" }.to_owned()))
        }
        _ => Err(untranslatable(format!("`{v}` cannot be compared with a {kind} field"))),
    }
}
