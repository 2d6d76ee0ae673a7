//! Property tests: arbitrary text and mutated corpus queries. The gate never panics, and never
//! allows a text that sqlparser (in the same dialect) reads as anything but exactly one query or
//! an `EXPLAIN` (without `ANALYZE`) of one.
//!
//! The default case count (proptest's 256 per property) keeps this to a few seconds; a longer
//! run: `PROPTEST_CASES=100000 cargo test -p gate --release --test tests props`.

use std::sync::OnceLock;

use gate::{Dialect, Policy, check, keyword_prefilter_for};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sqlparser::ast::Statement;

/// Pieces that exercise the lexer's and the parser's edge cases.
const FRAGMENTS: &[&str] = &[
    "'",
    "\"",
    "`",
    "[",
    "]",
    "--",
    "-- ",
    "#",
    "/*",
    "*/",
    "/*!",
    "/*+",
    "$$",
    "$a$",
    "$1",
    ";",
    "(",
    ")",
    ",",
    ".",
    " ",
    "\n",
    "\t",
    "\u{a0}",
    "\u{2003}",
    "\\",
    "E'",
    "q'[",
    "]'",
    "U&\"",
    "N'",
    "''",
    ":=",
    "@x",
    "#tmp",
    "SELECT",
    "select",
    "FROM",
    "WHERE",
    "t",
    "1",
    "*",
    "DELETE",
    "delete",
    "UPDATE",
    "INSERT INTO t VALUES (1)",
    "DROP TABLE t",
    "INTO",
    "pg_sleep(1)",
    "SLEEP(1)",
    "sleep",
    "FOR UPDATE",
    "FOR SHARE",
    "LOCK IN SHARE MODE",
    "WITH (UPDLOCK)",
    "WITH (NOLOCK)",
    "UNION SELECT 1",
    "WITH x AS (SELECT 1)",
    "x",
    "EXPLAIN",
    "EXPLAIN ANALYZE",
    "ANALYZE",
    "nextval('s')",
    "s.NEXTVAL",
    "WAITFOR",
    "SHUTDOWN",
    "CHECKPOINT",
    "DBMS_LOCK.SLEEP(1)",
    "BEGIN",
    "END",
    "SET x = 1",
    "COMMIT",
    "VALUES (1)",
    "TABLE t",
    "RETURNING *",
    "@a := 1",
    "AS",
    "GO",
    "LATERAL",
    "->>",
    "#>",
    "@>",
    "::text",
    "CASE WHEN 1 THEN 2 END",
];

fn corpus_sql() -> &'static [String] {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    SQL.get_or_init(|| {
        let mut seen = std::collections::BTreeSet::new();
        crate::corpus::load()
            .into_iter()
            .map(|(_, _, _, case)| case.sql().to_owned())
            .filter(|s| seen.insert(s.clone()))
            .collect()
    })
}

fn erp_policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| crate::corpus::policies().remove("erp").unwrap())
}

fn dialect() -> impl Strategy<Value = Dialect> {
    prop::sample::select(Dialect::ALL.to_vec())
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FRAGMENTS).prop_map(str::to_owned),
        2 => "[a-zA-Z_][a-zA-Z0-9_$]{0,8}",
        1 => any::<char>().prop_map(String::from),
        1 => any::<String>(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, String),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Upper(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), fragment()).prop_map(|(p, f)| Mutation::Insert(p, f)),
        1 => (any::<usize>(), 1usize..12).prop_map(|(p, n)| Mutation::Delete(p, n)),
        1 => (any::<usize>(), 1usize..24).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
        1 => (any::<usize>(), 1usize..24).prop_map(|(p, n)| Mutation::Upper(p, n)),
    ]
}

/// The nearest char boundary at or before `i % (len + 1)`.
fn boundary(s: &str, i: usize) -> usize {
    let mut i = i % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(mut s: String, m: &Mutation) -> String {
    match m {
        Mutation::Insert(p, f) => {
            let p = boundary(&s, *p);
            s.insert_str(p, f);
        }
        Mutation::Delete(p, n) | Mutation::Duplicate(p, n) | Mutation::Upper(p, n) => {
            let a = boundary(&s, *p);
            let b = boundary(&s, a.saturating_add(*n).min(s.len()));
            let piece = s[a..b].to_owned();
            match m {
                Mutation::Delete(..) => s.replace_range(a..b, ""),
                Mutation::Duplicate(..) => s.insert_str(b, &piece),
                _ => s.replace_range(a..b, &piece.to_uppercase()),
            }
        }
    }
    s
}

/// The property: no panic (under both policies), and whatever is allowed is one query to the
/// parser and passes the keyword pre-filter.
fn sound(sql: &str, d: Dialect) -> Result<(), TestCaseError> {
    let _ = check(sql, d, erp_policy());
    if check(sql, d, &Policy::default()).is_err() {
        return Ok(());
    }
    let statements = gate::parse(sql, d);
    let statements = match statements {
        Ok(s) => s,
        Err(e) => return Err(TestCaseError::fail(format!("allowed but unparseable in {d}: {e}: {sql:?}"))),
    };
    prop_assert_eq!(statements.len(), 1, "allowed {:?} in {} is not one statement", sql, d);
    match &statements[0] {
        Statement::Query(_) => {}
        Statement::Explain { analyze, statement, .. }
            if matches!(**statement, Statement::Query(_)) && (!analyze || d == Dialect::Postgres) => {}
        other => return Err(TestCaseError::fail(format!("allowed a non-query in {d}: {other}"))),
    }
    prop_assert!(keyword_prefilter_for(sql, d).is_ok(), "allowed {:?} but the pre-filter rejects it", sql);
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_text_is_never_allowed_unless_one_query(
        parts in prop::collection::vec(fragment(), 0..24),
        d in dialect(),
    ) {
        let sql = parts.join(" ");
        sound(&sql, d)?;
        sound(&parts.concat(), d)?;
    }

    #[test]
    fn arbitrary_unicode_never_panics(sql in any::<String>(), d in dialect()) {
        sound(&sql, d)?;
    }

    #[test]
    fn mutated_corpus_queries_are_never_allowed_unless_one_query(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..5),
        d in dialect(),
    ) {
        let corpus = corpus_sql();
        let sql = mutations.iter().fold(pick.get(corpus).clone(), apply);
        sound(&sql, d)?;
    }
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    // Run on a small stack, as a worker thread might have.
    let run = || {
        let chain = " + 1".repeat(10_000);
        let texts = [
            format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000)),
            format!("SELECT 1{chain}"),
            format!("SELECT 1{chain} )"),
            format!("SET x = 1{chain}"),
            format!("SELECT 1{}", " UNION SELECT 1".repeat(6_000)),
            format!("SELECT {}1{}", "(SELECT ".repeat(2_000), ")".repeat(2_000)),
            format!("SELECT 1 FROM t WHERE {}", vec!["a = 1"; 6_000].join(" AND ")),
        ];
        for sql in &texts {
            for d in [Dialect::Postgres, Dialect::Mssql] {
                let _ = check(sql, d, erp_policy());
            }
        }
    };
    std::thread::Builder::new().stack_size(512 << 10).spawn(run).unwrap().join().unwrap();
}

/// The gate's rule for characters outside strings and quoted identifiers (`lex::odd_char`):
/// printable ASCII, tab, line feed, carriage return and non-ASCII letters and digits only.
fn odd(c: char) -> bool {
    if c.is_ascii() {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\x7f'
    } else {
        !c.is_alphanumeric()
    }
}

/// Characters that engines lex differently, weighted towards the ones seen in attacks.
fn odd_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(vec![
            '\u{a0}', '\u{85}', '\u{3000}', '\u{2028}', '\u{2029}', '\u{feff}', '\u{200b}', '\u{200d}',
            '\u{2003}', '\u{180e}', '\u{b}', '\u{c}', '\u{1}', '\u{7f}', '\u{0}', '\u{1680}', '\u{202f}',
        ]),
        1 => any::<char>().prop_filter("an odd character", |c| odd(*c)),
    ]
}

/// Whether every odd character of `sql` lies inside a string literal or quoted identifier (or
/// a comment, where only control characters and line breaks are odd), as sqlparser's tokenizer
/// (a second, independent lexer) sees it. Texts it cannot tokenize
/// count as fine: the gate refuses what sqlparser cannot parse.
fn odd_only_in_literals(sql: &str, d: Dialect) -> bool {
    use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
    let Ok(tokens) = d.with_sqlparser_dialect(|pd| Tokenizer::new(pd, sql).tokenize()) else { return true };
    // In a comment: no control character or line break, and a plain character after `--`.
    let comment_ok = |c: char| {
        let line_break = matches!(c, '\u{2028}' | '\u{2029}');
        let control = c.is_control() && !matches!(c, '\t' | '\n' | '\r');
        !(line_break || control)
    };
    tokens.iter().all(|t| match t {
        Token::Whitespace(Whitespace::SingleLineComment { comment, prefix }) => {
            comment.chars().all(comment_ok) && !(prefix == "--" && comment.chars().next().is_some_and(odd))
        }
        Token::Whitespace(Whitespace::MultiLineComment(comment)) => comment.chars().all(comment_ok),
        Token::Whitespace(w) => !w.to_string().chars().any(odd),
        Token::Word(w) if w.quote_style.is_none() => !w.value.chars().any(odd),
        Token::Number(n, _) => !n.chars().any(odd),
        Token::Char(c) => !odd(*c),
        _ => true,
    })
}

proptest! {
    #[test]
    fn odd_characters_in_code_and_after_dashes_are_refused(c in odd_char(), d in dialect()) {
        let code = format!("U+{:04X}", c as u32);
        for sql in [
            format!("SELECT{c}1"),
            format!("SELECT 1 --{c}, 2\n"),
            format!("SELECT 1 FROM orders WHERE id = 1 {c}"),
            format!("{c}SELECT 1"),
        ] {
            let err = check(&sql, d, &Policy::default());
            prop_assert!(err.as_ref().is_err_and(|e| e.reason.contains(&code)), "{:?} in {}: {:?}", sql, d, err);
        }
        // Inside a comment only controls and line breaks are refused; inside a string only NUL.
        let in_comment = check(&format!("SELECT 1 /* {c} */"), d, &Policy::default());
        prop_assert_eq!(in_comment.is_err(), c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'), "{:?}", in_comment);
        let in_string = check(&format!("SELECT 'x{c}y'"), d, &Policy::default());
        prop_assert_eq!(in_string.is_err(), c == '\0', "{:?}", in_string);
    }

    #[test]
    fn allowed_texts_have_odd_characters_only_inside_literals(
        pick in any::<prop::sample::Index>(),
        inserts in prop::collection::vec((any::<usize>(), odd_char()), 1..4),
        d in dialect(),
    ) {
        let corpus = corpus_sql();
        let mut sql = pick.get(corpus).clone();
        for (at, c) in &inserts {
            let at = boundary(&sql, *at);
            sql.insert(at, *c);
        }
        if check(&sql, d, &Policy::default()).is_ok() {
            prop_assert!(!sql.contains('\0'), "allowed a NUL: {:?}", sql);
            prop_assert!(odd_only_in_literals(&sql, d), "allowed {:?} in {} with an odd character outside literals", sql, d);
        }
    }
}
