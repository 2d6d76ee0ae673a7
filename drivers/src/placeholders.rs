//! Placeholder styles: every driver accepts `?` positional placeholders (the ODBC, MySQL and
//! SQLite style); PostgreSQL also takes its native `$1`, `$2`...
//!
//! For PostgreSQL, `?` outside literals, quoted identifiers, comments and dollar-quoted strings
//! becomes `$n`, but only when parameters are given and the text has no `$n` of its own, so the
//! jsonb operators `?`, `?|`, `?&` keep working in queries without parameters.

use std::borrow::Cow;

/// Rewrites `?` placeholders to `$n` for PostgreSQL (see the module docs).
pub(crate) fn question_to_dollar(sql: &str, params: usize) -> Cow<'_, str> {
    if params == 0 || has_dollar_placeholder(sql) {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut last = 0;
    for (pos, token) in scan(sql) {
        if token == Token::Question {
            out.push_str(&sql[last..pos]);
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
            last = pos + 1;
        }
    }
    if n == 0 {
        return Cow::Borrowed(sql);
    }
    out.push_str(&sql[last..]);
    Cow::Owned(out)
}

fn has_dollar_placeholder(sql: &str) -> bool {
    scan(sql).any(|(_, t)| t == Token::Dollar)
}

/// Counts `?` placeholders outside literals and comments.
pub(crate) fn count_question(sql: &str) -> usize {
    scan(sql).filter(|(_, t)| *t == Token::Question).count()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Question,
    Dollar,
}

/// Positions of `?` and `$<digit>` outside strings, quoted identifiers, comments and
/// dollar-quoted bodies.
fn scan(sql: &str) -> impl Iterator<Item = (usize, Token)> + '_ {
    let b = sql.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            let c = b[i];
            match c {
                b'\'' => {
                    // E'...' allows backslash escapes.
                    let escapes = i > 0 && (b[i - 1] == b'E' || b[i - 1] == b'e');
                    i += 1;
                    while i < b.len() {
                        if escapes && b[i] == b'\\' {
                            i += 2;
                            continue;
                        }
                        if b[i] == b'\'' {
                            if b.get(i + 1) == Some(&b'\'') {
                                i += 2;
                                continue;
                            }
                            break;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                b'"' | b'`' => {
                    i += 1;
                    while i < b.len() && b[i] != c {
                        i += 1;
                    }
                    i += 1;
                }
                b'-' if b.get(i + 1) == Some(&b'-') => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    let mut depth = 1;
                    i += 2;
                    while i < b.len() && depth > 0 {
                        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                            depth += 1;
                            i += 2;
                        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                            depth -= 1;
                            i += 2;
                        } else {
                            i += 1;
                        }
                    }
                }
                b'$' => {
                    if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                        let pos = i;
                        i += 1;
                        return Some((pos, Token::Dollar));
                    }
                    // $tag$ ... $tag$ (tag may be empty); `$` inside identifiers is not a quote.
                    let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
                    let tag_end = b[i + 1..].iter().position(|&x| !(x.is_ascii_alphanumeric() || x == b'_'));
                    match tag_end {
                        Some(len) if !ident_before && b[i + 1 + len] == b'$' => {
                            let tag = &sql[i..i + len + 2];
                            let body = i + len + 2;
                            i = match sql[body..].find(tag) {
                                Some(end) => body + end + tag.len(),
                                None => b.len(),
                            };
                        }
                        _ => i += 1,
                    }
                }
                b'?' => {
                    let pos = i;
                    i += 1;
                    return Some((pos, Token::Question));
                }
                _ => i += 1,
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_outside_literals() {
        assert_eq!(
            question_to_dollar("SELECT * FROM t WHERE a = ? AND b = '?' AND \"c?\" = ? -- ?\n", 2),
            "SELECT * FROM t WHERE a = $1 AND b = '?' AND \"c?\" = $2 -- ?\n"
        );
        assert_eq!(
            question_to_dollar("SELECT $q$ ? $q$, ?, /* ? /* ? */ */ E'\\'?'", 1),
            "SELECT $q$ ? $q$, $1, /* ? /* ? */ */ E'\\'?'"
        );
        assert_eq!(question_to_dollar("SELECT 'it''s ?', ?", 1), "SELECT 'it''s ?', $1");
    }

    #[test]
    fn native_placeholders_and_parameterless_queries_are_untouched() {
        assert_eq!(question_to_dollar("SELECT $1, ?", 1), "SELECT $1, ?");
        assert_eq!(question_to_dollar("SELECT data ? 'key' FROM t", 0), "SELECT data ? 'key' FROM t");
        assert!(matches!(question_to_dollar("SELECT 1", 3), Cow::Borrowed(_)));
        assert_eq!(count_question("SELECT ?, '?', `?`, ?"), 2);
    }
}
