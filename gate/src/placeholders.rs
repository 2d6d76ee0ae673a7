//! PostgreSQL `?` placeholders, rewritten to `$1`, `$2`... before the gate judges the text.
//!
//! Every driver binds `?` positional placeholders; PostgreSQL's own are `$n`. The rewrite uses
//! the gate's own lexer (PostgreSQL rules: nested comments, `E'..'`, dollar quoting), so a `?`
//! counts as a placeholder exactly when the layers see it as code. It applies only when the
//! command has parameters and the text has no `$n` of its own; without parameters `?`, `?|`
//! and `?&` stay jsonb operators. The caller judges the rewritten text, never the original:
//! a rewrite can change where a string ends (`$?` becomes `$$1`, the opening of a
//! dollar-quoted string).

use std::borrow::Cow;

use crate::Dialect;
use crate::lex::{self, Kind};

/// Rewrites `?` to `$n` (see the module docs).
pub(crate) fn question_to_dollar(sql: &str) -> Cow<'_, str> {
    let lexed = lex::lex(sql, &lex::Rules::of(Dialect::Postgres));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_code_question_marks() {
        assert_eq!(
            question_to_dollar("SELECT * FROM t WHERE a = ? AND b = '?' AND \"c?\" = ? -- ?\n"),
            "SELECT * FROM t WHERE a = $1 AND b = '?' AND \"c?\" = $2 -- ?\n"
        );
        assert_eq!(
            question_to_dollar("SELECT $q$ ? $q$, ?, /* ? /* ? */ */ E'\\'?'"),
            "SELECT $q$ ? $q$, $1, /* ? /* ? */ */ E'\\'?'"
        );
        assert_eq!(question_to_dollar("SELECT 'it''s ?', ?"), "SELECT 'it''s ?', $1");
    }

    #[test]
    fn native_placeholders_leave_the_text_alone() {
        assert_eq!(question_to_dollar("SELECT $1, ?"), "SELECT $1, ?");
        assert!(matches!(question_to_dollar("SELECT 1"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_rewrite_can_open_a_dollar_quote() {
        // `$?` is no dollar quote before the rewrite; `$$1` starts one after it.
        assert_eq!(question_to_dollar("SELECT $? ' $$ x'"), "SELECT $$1 ' $$ x'");
    }
}
