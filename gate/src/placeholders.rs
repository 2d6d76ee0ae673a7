//! PostgreSQL `?` placeholders, rewritten to `$1`, `$2`... before the gate judges the text.
//!
//! Every driver binds `?` positional placeholders; PostgreSQL's wire protocol takes only `$n`.
//! The rewrite uses the gate's own lexer with the target's rules (for PostgreSQL: nested
//! comments, `E'..'`, dollar quoting), so a `?`
//! counts as a placeholder exactly when the layers see it as code. It applies only when the
//! command has parameters and the text has no `$n` of its own; without parameters `?`, `?|`
//! and `?&` stay jsonb operators. The caller judges the rewritten text, never the original:
//! a rewrite can change where a string ends (`$?` becomes `$$1`, the opening of a
//! dollar-quoted string).

use std::borrow::Cow;

use crate::Dialect;
use crate::lex::{self, Kind};

/// Rewrites `?` to `$n` (see the module docs).
pub(crate) fn question_to_dollar(sql: &str, dialect: Dialect) -> Cow<'_, str> {
    let lexed = lex::lex(sql, &lex::Rules::of(dialect));
    let bytes = sql.as_bytes();
    let has_dollar = lexed
        .tokens
        .iter()
        .any(|t| t.kind == Kind::Punct('$') && bytes.get(t.end as usize).is_some_and(u8::is_ascii_digit));
    if has_dollar {
        return Cow::Borrowed(sql);
    }
    let mut out = String::new();
    let mut n = 0usize;
    let mut last = 0;
    for t in lexed.tokens.iter().filter(|t| t.kind == Kind::Punct('?')) {
        if n == 0 {
            out.reserve(sql.len() + 16);
        }
        n += 1;
        out.push_str(&sql[last..t.start as usize]);
        out.push('$');
        out.push_str(&n.to_string());
        last = t.end as usize;
    }
    if n == 0 {
        return Cow::Borrowed(sql);
    }
    out.push_str(&sql[last..]);
    Cow::Owned(out)
}

/// Whether `rewritten` (from [`question_to_dollar`]) lexes like `original` with each `?` as a
/// placeholder: same tokens, same kinds, in the same order.
pub(crate) fn stable(original: &str, rewritten: &str, dialect: Dialect) -> bool {
    let rules = lex::Rules::of(dialect);
    let (a, b) = (lex::lex(original, &rules), lex::lex(rewritten, &rules));
    a.tokens.len() == b.tokens.len()
        && a.tokens.iter().zip(&b.tokens).all(|(x, y)| match x.kind {
            Kind::Punct('?') => y.kind == Kind::Punct('$'),
            kind => kind == y.kind && x.end - x.start == y.end - y.start,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_code_question_marks() {
        assert_eq!(
            question_to_dollar(
                "SELECT * FROM t WHERE a = ? AND b = '?' AND \"c?\" = ? -- ?\n",
                Dialect::Postgres
            ),
            "SELECT * FROM t WHERE a = $1 AND b = '?' AND \"c?\" = $2 -- ?\n"
        );
        assert_eq!(
            question_to_dollar("SELECT $q$ ? $q$, ?, /* ? /* ? */ */ E'\\'?'", Dialect::Postgres),
            "SELECT $q$ ? $q$, $1, /* ? /* ? */ */ E'\\'?'"
        );
        assert_eq!(question_to_dollar("SELECT 'it''s ?', ?", Dialect::Postgres), "SELECT 'it''s ?', $1");
    }

    #[test]
    fn native_placeholders_leave_the_text_alone() {
        assert_eq!(question_to_dollar("SELECT $1, ?", Dialect::Postgres), "SELECT $1, ?");
        assert!(matches!(question_to_dollar("SELECT 1", Dialect::Postgres), Cow::Borrowed(_)));
    }

    #[test]
    fn a_rewrite_can_open_a_dollar_quote_and_is_then_unstable() {
        // `$?` is no dollar quote before the rewrite; `$$1` starts one after it.
        let original = "SELECT $? ' $$ x'";
        let rewritten = question_to_dollar(original, Dialect::Postgres);
        assert_eq!(rewritten, "SELECT $$1 ' $$ x'");
        assert!(!stable(original, &rewritten, Dialect::Postgres));
        let original = "SELECT a FROM t WHERE b = ? AND c = '?' AND d = ?";
        assert!(stable(original, &question_to_dollar(original, Dialect::Postgres), Dialect::Postgres));
    }
}
