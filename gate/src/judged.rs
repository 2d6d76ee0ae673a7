//! The text the parser judges, when the server accepts a form sqlparser does not know.
//!
//! The layers run on the text the server runs, with one exception: for two forms sqlparser
//! cannot parse, the AST layer parses an equivalent text built from the same tokens. The
//! keyword pre-filter, the character rules and the text backstop still run on the original.
//!
//! - `TABLE [ONLY] name` (PostgreSQL, MySQL 8) is `SELECT * FROM [ONLY] name`: judged as that,
//!   so a table with private columns is denied as for `*`.
//! - Oracle flashback `table AS OF TIMESTAMP expr` / `AS OF SCN expr` is judged as
//!   `table FOR SYSTEM_TIME AS OF expr` (the gate's Oracle dialect parses table versions), so
//!   `expr` is walked like any expression.
//!
//! Nothing else is rewritten; a text in neither form is parsed as is.

use std::borrow::Cow;

use crate::Dialect;
use crate::lex::{Kind, Lexed, Token};

/// The text to parse for `sql` (see the module docs).
pub(crate) fn text<'a>(sql: &'a str, lexed: &Lexed, dialect: Dialect) -> Cow<'a, str> {
    match dialect {
        Dialect::Postgres | Dialect::Mysql => match table_statement(sql, &lexed.tokens, dialect) {
            Some(judged) => Cow::Owned(judged),
            None => Cow::Borrowed(sql),
        },
        Dialect::Oracle => flashback(sql, &lexed.tokens),
        _ => Cow::Borrowed(sql),
    }
}

fn word_is(sql: &str, t: &Token, word: &str) -> bool {
    t.kind == Kind::Word && sql[t.range()].eq_ignore_ascii_case(word)
}

/// The byte range of a name token, quotes included.
fn name_span(sql: &str, t: &Token) -> Option<(usize, usize)> {
    match t.kind {
        Kind::Word => Some((t.start as usize, t.end as usize)),
        Kind::Quoted => {
            let start = (t.start as usize).checked_sub(1)?;
            let end = t.end as usize;
            // The closing quote, if the identifier is terminated.
            let close = sql.as_bytes().get(end).is_some_and(|b| matches!(b, b'"' | b'`'));
            Some((start, if close { end + 1 } else { end }))
        }
        _ => None,
    }
}

/// `TABLE [ONLY] a[.b[.c]] [;]` as `SELECT * FROM [ONLY] a[.b[.c]]`.
fn table_statement(sql: &str, toks: &[Token], dialect: Dialect) -> Option<String> {
    let toks = match toks.split_last() {
        Some((last, rest)) if last.kind == Kind::Punct(';') => rest,
        _ => toks,
    };
    let (first, rest) = toks.split_first()?;
    if !word_is(sql, first, "table") {
        return None;
    }
    let (only, name) = match rest.split_first() {
        Some((t, name)) if dialect == Dialect::Postgres && word_is(sql, t, "only") && !name.is_empty() => {
            (true, name)
        }
        _ => (false, rest),
    };
    // name: part (. part)*, at most three parts.
    if name.is_empty() || name.len() % 2 == 0 || name.len() > 5 {
        return None;
    }
    for (i, t) in name.iter().enumerate() {
        let ok = if i % 2 == 0 { name_span(sql, t).is_some() } else { t.kind == Kind::Punct('.') };
        if !ok {
            return None;
        }
    }
    let (start, _) = name_span(sql, name.first()?)?;
    let (_, end) = name_span(sql, name.last()?)?;
    let only = if only { "ONLY " } else { "" };
    Some(format!("SELECT * FROM {only}{}", &sql[start..end]))
}

/// Oracle `AS OF TIMESTAMP` / `AS OF SCN` as `FOR SYSTEM_TIME AS OF`.
fn flashback<'a>(sql: &'a str, toks: &[Token]) -> Cow<'a, str> {
    let mut out = String::new();
    let mut last = 0;
    for w in toks.windows(3) {
        if word_is(sql, &w[0], "as")
            && word_is(sql, &w[1], "of")
            && (word_is(sql, &w[2], "timestamp") || word_is(sql, &w[2], "scn"))
        {
            if out.is_empty() {
                out.reserve(sql.len() + 16);
            }
            out.push_str(&sql[last..w[0].start as usize]);
            out.push_str("FOR SYSTEM_TIME AS OF");
            last = w[2].end as usize;
        }
    }
    if last == 0 {
        return Cow::Borrowed(sql);
    }
    out.push_str(&sql[last..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lex;

    fn judged(sql: &str, d: Dialect) -> String {
        text(sql, &lex::lex(sql, &lex::Rules::of(d)), d).into_owned()
    }

    #[test]
    fn table_statements_read_as_select_star() {
        assert_eq!(judged("TABLE orders", Dialect::Postgres), "SELECT * FROM orders");
        assert_eq!(
            judged("table ONLY public.\"Orders\" ;", Dialect::Postgres),
            "SELECT * FROM ONLY public.\"Orders\""
        );
        assert_eq!(judged("TABLE `db`.`t`", Dialect::Mysql), "SELECT * FROM `db`.`t`");
        // Anything more is left to the parser, which refuses it.
        for sql in ["TABLE orders ORDER BY id", "TABLE a.b.c.d", "TABLE", "TABLE a..b", "TABLE 'x'"] {
            assert_eq!(judged(sql, Dialect::Postgres), sql);
        }
        assert_eq!(judged("TABLE orders", Dialect::Sqlite), "TABLE orders");
    }

    #[test]
    fn oracle_flashback_reads_as_a_table_version() {
        assert_eq!(
            judged("SELECT * FROM emp as of scn 123 e WHERE 'AS OF SCN' = e.x", Dialect::Oracle),
            "SELECT * FROM emp FOR SYSTEM_TIME AS OF 123 e WHERE 'AS OF SCN' = e.x"
        );
        assert_eq!(judged("SELECT 1 AS of_x FROM dual", Dialect::Oracle), "SELECT 1 AS of_x FROM dual");
    }
}
