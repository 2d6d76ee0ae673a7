//! A small hand-written SQL lexer, faithful to each server's rules for comments, string literals
//! and quoted identifiers, and the two text-level layers built on it:
//!
//! - the keyword pre-filter: a write keyword outside strings, comments and quoted identifiers
//!   rejects the text before it is parsed;
//! - the text backstop: denied function calls, lock clauses, T-SQL statement words and the
//!   like, found on the same tokens and reported after the AST check. It only fires when
//!   sqlparser and the server disagree about where a string or comment ends.
//!
//! Both come out of one pass, [`scan`].
//!
//! **Invariant:** where a server's rule is unknown, the lexer hides *less* than the server could
//! (no nested comments, no backslash escapes, no dollar quoting): a disagreement then shows a
//! keyword that the server treats as text (a false reject), never the other way round.

use crate::Dialect;
use crate::deny;

/// How one dialect lexes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// `#` starts a line comment (MySQL).
    hash_comment: bool,
    /// `--` is a comment only when followed by whitespace, a control character or the end (MySQL).
    dash_needs_space: bool,
    /// `/* /* */ */` nests (PostgreSQL, T-SQL).
    nested_comments: bool,
    /// `\` escapes the next character in `'..'` and `".."` (MySQL).
    backslash_escapes: bool,
    /// `".."` is a string literal, not an identifier (MySQL without ANSI_QUOTES).
    double_quote_string: bool,
    /// `E'..'` strings with backslash escapes (PostgreSQL).
    e_strings: bool,
    /// `$tag$..$tag$` strings (PostgreSQL).
    dollar_quotes: bool,
    /// `U&".."` identifiers (PostgreSQL).
    unicode_idents: bool,
    /// `[..]` identifiers (T-SQL, SQLite).
    brackets: bool,
    /// `` `..` `` identifiers (MySQL, SQLite).
    backticks: bool,
    /// `q'[..]'` strings (Oracle).
    q_quotes: bool,
    /// `--+` is an optimizer hint (Oracle).
    dash_hint: bool,
    /// `/*+ ... */` optimizer hints are allowed when their body is plain (MySQL 8, Oracle).
    hint_comments: bool,
    /// Characters that may start a word besides letters and `_` (T-SQL `@var`, `#temp`).
    word_start_extra: &'static [char],
    /// Characters that may continue a word besides letters, digits and `_`.
    word_part_extra: &'static [char],
}

impl Rules {
    pub(crate) fn of(dialect: Dialect) -> Rules {
        let base = Rules {
            hash_comment: false,
            dash_needs_space: false,
            nested_comments: false,
            backslash_escapes: false,
            double_quote_string: false,
            e_strings: false,
            dollar_quotes: false,
            unicode_idents: false,
            brackets: false,
            backticks: false,
            q_quotes: false,
            dash_hint: false,
            hint_comments: false,
            word_start_extra: &[],
            word_part_extra: &['$'],
        };
        match dialect {
            Dialect::Postgres => Rules {
                nested_comments: true,
                e_strings: true,
                dollar_quotes: true,
                unicode_idents: true,
                ..base
            },
            Dialect::Mysql => Rules {
                hash_comment: true,
                dash_needs_space: true,
                backslash_escapes: true,
                double_quote_string: true,
                backticks: true,
                hint_comments: true,
                ..base
            },
            Dialect::Sqlite => Rules { brackets: true, backticks: true, ..base },
            Dialect::Mssql => Rules {
                nested_comments: true,
                brackets: true,
                word_start_extra: &['@', '#'],
                word_part_extra: &['$', '@', '#'],
                ..base
            },
            Dialect::Oracle => Rules {
                q_quotes: true,
                dash_hint: true,
                hint_comments: true,
                word_part_extra: &['$', '#'],
                ..base
            },
            Dialect::Hana => Rules { word_part_extra: &['$', '#'], ..base },
            // Unknown server: hide as little as possible. `U&"..."` is still flagged.
            Dialect::Generic => Rules { unicode_idents: true, ..base },
        }
    }
}

/// What a token is. Strings, numbers, comments and whitespace are not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An unquoted word: keyword or identifier.
    Word,
    /// A quoted identifier; the range is its content, without the quotes.
    Quoted,
    /// A string literal (content not kept).
    Str,
    /// Any other character that is not whitespace.
    Punct(char),
}

/// One token: its kind and byte range in the text (texts are at most [`crate::MAX_SQL_BYTES`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Token {
    pub(crate) fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// The code tokens of a text plus what the lexer noticed in its comments.
#[derive(Debug, Default)]
pub(crate) struct Lexed {
    pub(crate) tokens: Vec<Token>,
    /// `/*!` or `/*M!` (MySQL/MariaDB executable comment) was seen.
    pub(crate) exec_comment: Option<&'static str>,
    /// `/*+` (or Oracle `--+`) optimizer hint was seen where hints are not allowed.
    pub(crate) hint: Option<&'static str>,
    /// An allowed `/*+ ... */` hint whose body is not plain, or names a hint that changes
    /// settings: why it is refused.
    pub(crate) bad_hint: Option<String>,
    /// The first character that engines may lex differently (see [`odd_char`]), and where.
    pub(crate) bad_char: Option<(char, Place)>,
    /// PostgreSQL `U&"..."` identifier was seen.
    pub(crate) unicode_ident: bool,
    /// Lexing stopped after the token limit.
    pub(crate) truncated: bool,
}

struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek_at(&self, offset: usize) -> Option<char> {
        let j = self.i + offset;
        match self.b.get(j) {
            None => None,
            Some(&c) if c < 0x80 => Some(c as char),
            Some(_) => self.s.get(j..).and_then(|t| t.chars().next()),
        }
    }

    /// The char at the cursor and its UTF-8 length.
    fn current(&self) -> Option<(char, usize)> {
        match self.b.get(self.i) {
            None => None,
            Some(&c) if c < 0x80 => Some((c as char, 1)),
            Some(_) => self.s[self.i..].chars().next().map(|c| (c, c.len_utf8())),
        }
    }

    fn byte(&self, j: usize) -> Option<u8> {
        self.b.get(j).copied()
    }
}

fn is_word_start(c: char, rules: &Rules) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic() || c == '_' || rules.word_start_extra.contains(&c)
    } else {
        c.is_alphabetic()
    }
}

fn is_word_part(c: char, rules: &Rules) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_' || rules.word_part_extra.contains(&c)
    } else {
        c.is_alphanumeric()
    }
}

/// Where an odd character was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Anywhere in the text, strings included (NUL: the PostgreSQL protocol ends the text
    /// there, MariaDB and SQLite end a line comment there).
    Anywhere,
    /// In code, in a comment, or right after `--` (where it decides whether MySQL reads a
    /// comment).
    OutsideStrings,
    /// A carriage return not followed by a line feed inside a line comment: PostgreSQL ends
    /// the comment there, MySQL and SQLite do not.
    LineComment,
}

impl Place {
    pub(crate) fn reason(self, ch: char) -> String {
        let code = ch as u32;
        match self {
            Place::Anywhere => format!("character U+{code:04X} is not allowed"),
            Place::OutsideStrings => format!("character U+{code:04X} outside strings is not allowed"),
            Place::LineComment => {
                format!(
                    "character U+{code:04X} without a following line feed in a line comment is not allowed"
                )
            }
        }
    }
}

/// Whether `ch`, outside string literals and quoted identifiers, is one that engines lex
/// differently, so that the gate must refuse the text rather than guess.
///
/// Allowed in code: printable ASCII, space, tab, line feed, carriage return, and non-ASCII
/// letters and digits (identifiers). Everything else is odd: other ASCII control characters
/// (`\v` and `\f` too: whitespace to MariaDB and SQLite, not to PostgreSQL 15), every non-ASCII
/// space (U+00A0, U+0085, U+2000..U+200A, U+3000, ...), line and paragraph separators,
/// byte-order mark and zero-width or other format characters, symbols and punctuation outside
/// ASCII. MariaDB reads `--` followed by U+00A0 as two minus signs and PostgreSQL reads U+00A0
/// as part of an identifier, where a Unicode-aware lexer sees a space.
pub(crate) fn odd_char(ch: char) -> bool {
    if ch.is_ascii() {
        (ch as u32) < 0x20 && !matches!(ch, '\t' | '\n' | '\r') || ch == '\x7f'
    } else {
        !ch.is_alphanumeric()
    }
}

/// Whether `ch` is odd even inside a comment: control characters other than tab, line feed
/// and carriage return, and Unicode line breaks (U+0085, U+2028, U+2029). An engine that ends
/// a comment at one of them would run what the gate reads as comment.
fn odd_in_comment(ch: char) -> bool {
    (ch.is_control() && !matches!(ch, '\t' | '\n' | '\r')) || matches!(ch, '\u{2028}' | '\u{2029}')
}

fn flag(out: &mut Lexed, ch: char, place: Place) {
    out.bad_char.get_or_insert((ch, place));
}

/// Splits `sql` into code tokens under `rules`, stopping (with `truncated`) after
/// `max_tokens` tokens.
pub(crate) fn lex(sql: &str, rules: &Rules) -> Lexed {
    lex_bounded(sql, rules, usize::MAX)
}

/// [`lex`] that stops after `max_tokens` code tokens (then [`Lexed::truncated`] is set).
pub(crate) fn lex_bounded(sql: &str, rules: &Rules, max_tokens: usize) -> Lexed {
    let capacity = (sql.len() / 2 + 8).min(max_tokens.saturating_add(1));
    let mut out = Lexed { tokens: Vec::with_capacity(capacity), ..Lexed::default() };
    if sql.as_bytes().contains(&0) {
        flag(&mut out, '\0', Place::Anywhere);
    }
    let mut c = Cursor { s: sql, b: sql.as_bytes(), i: 0 };
    while let Some((ch, len)) = c.current() {
        if out.tokens.len() > max_tokens {
            out.truncated = true;
            break;
        }
        let start = c.i;
        match ch {
            '-' if c.byte(start + 1) == Some(b'-') => {
                let third = c.peek_at(2);
                if let Some(t) = third
                    && odd_char(t)
                {
                    flag(&mut out, t, Place::OutsideStrings);
                }
                // MySQL and MariaDB: a comment only when the next byte is ASCII whitespace or a
                // control character (`my_isspace || my_iscntrl` on one byte), or at the end.
                let is_comment = !rules.dash_needs_space
                    || third.is_none_or(|t| t.is_ascii() && (t as u32 <= 0x20 || t == '\x7f'));
                if is_comment {
                    if rules.dash_hint && third == Some('+') {
                        out.hint.get_or_insert("--+");
                    }
                    skip_line(&mut c, &mut out);
                } else {
                    push(&mut out, Kind::Punct('-'), start, start + 1);
                    c.i += 1;
                }
            }
            '#' if rules.hash_comment => skip_line(&mut c, &mut out),
            '/' if c.byte(start + 1) == Some(b'*') => {
                match (c.byte(start + 2), c.byte(start + 3)) {
                    (Some(b'!'), _) => {
                        out.exec_comment.get_or_insert("/*!");
                    }
                    (Some(b'M' | b'm'), Some(b'!')) => {
                        out.exec_comment.get_or_insert("/*M!");
                    }
                    (Some(b'+'), _) if rules.hint_comments => {}
                    (Some(b'+'), _) => {
                        out.hint.get_or_insert("/*+");
                    }
                    _ => {}
                }
                let body_start = start + 2;
                skip_block_comment(&mut c, &mut out, rules.nested_comments);
                if rules.hint_comments && c.byte(body_start) == Some(b'+') && out.bad_hint.is_none() {
                    let body_end = if sql[..c.i].ends_with("*/") { c.i - 2 } else { c.i };
                    let body = sql.get(body_start + 1..body_end.max(body_start + 1)).unwrap_or("");
                    out.bad_hint = hint_problem(body, body_end == c.i);
                }
            }
            '\'' => {
                c.i += 1;
                skip_quoted(&mut c, b'\'', rules.backslash_escapes);
                push(&mut out, Kind::Str, start, c.i);
            }
            '"' if rules.double_quote_string => {
                c.i += 1;
                skip_quoted(&mut c, b'"', rules.backslash_escapes);
                push(&mut out, Kind::Str, start, c.i);
            }
            '"' => quoted_ident(&mut c, &mut out, b'"', b'"'),
            '`' if rules.backticks => quoted_ident(&mut c, &mut out, b'`', b'`'),
            '[' if rules.brackets => quoted_ident(&mut c, &mut out, b'[', b']'),
            '$' if rules.dollar_quotes && dollar_quote(&mut c, &mut out) => {
                push(&mut out, Kind::Str, start, c.i)
            }
            '0'..='9' => skip_number(&mut c),
            _ if is_word_start(ch, rules) => {
                c.i += len;
                while let Some((p, plen)) = c.current() {
                    if !is_word_part(p, rules) {
                        break;
                    }
                    c.i += plen;
                }
                let word = &sql[start..c.i];
                let next = c.byte(c.i);
                if next == Some(b'\'') && rules.e_strings && word.eq_ignore_ascii_case("e") {
                    c.i += 1;
                    skip_quoted(&mut c, b'\'', true);
                    push(&mut out, Kind::Str, start, c.i);
                } else if next == Some(b'\'')
                    && rules.q_quotes
                    && (word.eq_ignore_ascii_case("q") || word.eq_ignore_ascii_case("nq"))
                    && c.byte(c.i + 1).is_some()
                {
                    q_quote(&mut c);
                    push(&mut out, Kind::Str, start, c.i);
                } else {
                    if rules.unicode_idents
                        && next == Some(b'&')
                        && word.eq_ignore_ascii_case("u")
                        && c.byte(c.i + 1) == Some(b'"')
                    {
                        out.unicode_ident = true;
                    }
                    push(&mut out, Kind::Word, start, c.i);
                }
            }
            ' ' | '\t' | '\n' | '\r' => c.i += 1,
            _ if odd_char(ch) => {
                // Refused (after the keyword pre-filter); lexed as a separator meanwhile so
                // that words on either side are still seen.
                flag(&mut out, ch, Place::OutsideStrings);
                c.i += len;
            }
            _ => {
                push(&mut out, Kind::Punct(ch), start, start + len);
                c.i += len;
            }
        }
    }
    out
}

/// Optimizer hint names that change settings or resources for the statement (MySQL 8).
const SETTING_HINTS: [&str; 2] = ["RESOURCE_GROUP", "SET_VAR"];

/// Why the body of an allowed `/*+ ... */` hint is refused, if it is: it may hold only hint
/// names, identifiers, numbers, `( ) , . @ $ _` and spaces, so that no quote, comment opener or
/// `*` can make an engine's hint scanner end the comment somewhere else than the gate does.
fn hint_problem(body: &str, unterminated: bool) -> Option<String> {
    if unterminated {
        return Some("optimizer hint comment /*+ is not terminated".into());
    }
    let plain = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'(' | b')' | b',' | b'.' | b'@' | b'$' | b'_')
    };
    if let Some(b) = body.bytes().find(|&b| !plain(b)) {
        let shown =
            if b.is_ascii_graphic() { format!("`{}`", b as char) } else { "a non-ASCII character".into() };
        return Some(format!(
            "optimizer hint comment /*+ may only contain hint names, identifiers, numbers, `( ) , . @` \
             and spaces; found {shown}"
        ));
    }
    body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| SETTING_HINTS.iter().any(|h| h.eq_ignore_ascii_case(w)))
        .map(|w| {
            format!("optimizer hint {} is not allowed: it changes session settings", w.to_ascii_uppercase())
        })
}

fn push(out: &mut Lexed, kind: Kind, start: usize, end: usize) {
    // Texts longer than u32::MAX are rejected before lexing (MAX_SQL_BYTES).
    out.tokens.push(Token { kind, start: start as u32, end: end as u32 });
}

/// The non-ASCII character starting at byte `i` when it is odd even in a comment.
fn odd_comment_char(c: &Cursor<'_>, i: usize) -> Option<char> {
    let ch = c.s.get(i..)?.chars().next()?;
    odd_in_comment(ch).then_some(ch)
}

/// Skips a line comment: to the line feed. A carriage return is flagged unless a line feed
/// follows (PostgreSQL ends the comment at it, MySQL and SQLite do not) and ends the comment
/// there, so the gate never hides what any of them reads as code.
fn skip_line(c: &mut Cursor<'_>, out: &mut Lexed) {
    while let Some(b) = c.byte(c.i) {
        c.i += 1;
        match b {
            b'\n' => break,
            b'\r' if c.byte(c.i) == Some(b'\n') => {}
            b'\r' => {
                flag(out, '\r', Place::LineComment);
                break;
            }
            b'\t' => {}
            0..0x20 | 0x7f => flag(out, b as char, Place::OutsideStrings),
            0xc2 | 0xe2 => {
                if let Some(ch) = odd_comment_char(c, c.i - 1) {
                    flag(out, ch, Place::OutsideStrings);
                }
            }
            _ => {}
        }
    }
}

/// Skips `/* ... */` starting at the cursor; an unterminated comment runs to the end.
fn skip_block_comment(c: &mut Cursor<'_>, out: &mut Lexed, nested: bool) {
    c.i += 2;
    let mut depth = 1usize;
    while let Some(b) = c.byte(c.i) {
        if b == b'*' && c.byte(c.i + 1) == Some(b'/') {
            c.i += 2;
            depth -= 1;
            if depth == 0 {
                return;
            }
        } else if nested && b == b'/' && c.byte(c.i + 1) == Some(b'*') {
            c.i += 2;
            depth += 1;
        } else {
            match b {
                b'\t' | b'\n' | b'\r' => {}
                0..0x20 | 0x7f => flag(out, b as char, Place::OutsideStrings),
                0xc2 | 0xe2 => {
                    if let Some(ch) = odd_comment_char(c, c.i) {
                        flag(out, ch, Place::OutsideStrings);
                    }
                }
                _ => {}
            }
            c.i += 1;
        }
    }
}

/// Skips the body of a literal opened by `quote` (the cursor is past the opening quote), with
/// doubled quotes and, if asked, backslash escapes. Unterminated: runs to the end.
fn skip_quoted(c: &mut Cursor<'_>, quote: u8, backslash: bool) {
    while let Some(b) = c.byte(c.i) {
        if backslash && b == b'\\' {
            c.i += 2;
        } else if b == quote {
            if c.byte(c.i + 1) == Some(quote) {
                c.i += 2;
            } else {
                c.i += 1;
                return;
            }
        } else {
            c.i += 1;
        }
    }
    c.i = c.i.min(c.b.len());
}

fn quoted_ident(c: &mut Cursor<'_>, out: &mut Lexed, open: u8, close: u8) {
    debug_assert_eq!(c.byte(c.i), Some(open));
    c.i += 1;
    let start = c.i;
    skip_quoted(c, close, false);
    let end = if c.i > start && c.byte(c.i - 1) == Some(close) { c.i - 1 } else { c.i };
    push(out, Kind::Quoted, start, end.max(start));
}

fn skip_number(c: &mut Cursor<'_>) {
    while c.byte(c.i).is_some_and(|b| b.is_ascii_digit()) {
        c.i += 1;
    }
    if c.byte(c.i) == Some(b'.') && c.byte(c.i + 1).is_some_and(|b| b.is_ascii_digit()) {
        c.i += 1;
        while c.byte(c.i).is_some_and(|b| b.is_ascii_digit()) {
            c.i += 1;
        }
    }
    if matches!(c.byte(c.i), Some(b'e' | b'E')) {
        let mut j = c.i + 1;
        if matches!(c.byte(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if c.byte(j).is_some_and(|b| b.is_ascii_digit()) {
            c.i = j;
            while c.byte(c.i).is_some_and(|b| b.is_ascii_digit()) {
                c.i += 1;
            }
        }
    }
}

/// PostgreSQL `$tag$ ... $tag$` at the cursor (`$`). Returns false (cursor unchanged) when the
/// `$` does not open a dollar quote (`$1`, a lone `$`).
fn dollar_quote(c: &mut Cursor<'_>, out: &mut Lexed) -> bool {
    let open_start = c.i;
    let mut j = c.i + 1;
    let tag_start = j;
    // Tag: empty, or [A-Za-z_\x80-] [A-Za-z0-9_\x80-]*
    if let Some(first) = c.byte(j)
        && first != b'$'
    {
        if !(first.is_ascii_alphabetic() || first == b'_' || first >= 0x80) {
            return false;
        }
        while c.byte(j).is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80) {
            j += 1;
        }
    }
    if c.byte(j) != Some(b'$') {
        return false;
    }
    let delim = &c.s[open_start..=j];
    debug_assert!(delim.len() >= 2 && tag_start <= j);
    // The tag is part of the delimiter, not of the string: the same rule as code.
    if let Some(odd) = c.s.get(tag_start..j).and_then(|tag| tag.chars().find(|&ch| odd_char(ch))) {
        flag(out, odd, Place::OutsideStrings);
    }
    let body_start = j + 1;
    match c.s.get(body_start..).and_then(|rest| rest.find(delim)) {
        Some(k) => c.i = body_start + k + delim.len(),
        None => c.i = c.b.len(),
    }
    true
}

/// Oracle `q'X...X'` / `nq'X...X'`: the cursor is on the opening `'`.
fn q_quote(c: &mut Cursor<'_>) {
    c.i += 1; // the quote
    let Some((open, len)) = c.current() else { return };
    c.i += len;
    let close = match open {
        '[' => ']',
        '{' => '}',
        '(' => ')',
        '<' => '>',
        other => other,
    };
    let mut pat = [0u8; 8];
    let close_len = close.encode_utf8(&mut pat).len();
    pat[close_len] = b'\'';
    let pat = &pat[..=close_len];
    match c.s.get(c.i..).and_then(|rest| rest.find(std::str::from_utf8(pat).unwrap_or("'"))) {
        Some(k) => c.i += k + pat.len(),
        None => c.i = c.b.len(),
    }
}

// ---------------------------------------------------------------------------------------------
// Layer 1: the keyword pre-filter

/// Statement keywords that have no place in a read-only query, matched case-insensitively as
/// whole words outside comments, strings and quoted identifiers. Sorted, for the reader.
const WRITE_KEYWORDS: [&str; 26] = [
    "ALTER", "ATTACH", "CALL", "COPY", "CREATE", "DELETE", "DETACH", "DROP", "EXEC", "EXECUTE", "GRANT",
    "INSERT", "INTO", "KILL", "MERGE", "PRAGMA", "REINDEX", "RENAME", "REPLACE", "REVOKE", "SHUTDOWN",
    "TRUNCATE", "UNLOCK", "UPDATE", "UPSERT", "VACUUM",
];

/// Keywords that are also ordinary functions when a `(` follows (`REPLACE(s, 'a', 'b')`,
/// MySQL `INSERT(s, 1, 2, 'x')` and `TRUNCATE(x, 2)`).
const ALSO_FUNCTIONS: [&str; 3] = ["INSERT", "REPLACE", "TRUNCATE"];

/// Upper-cases a short word into `buf` (ASCII fast path; other scripts through Unicode case
/// mapping, so that `ınsert` or `ſet`-style spellings that fold to ASCII are still caught).
/// `None` for words longer than `buf` or that do not fold to ASCII.
fn upper<'b>(word: &str, buf: &'b mut [u8; 32]) -> Option<&'b [u8]> {
    if word.len() <= buf.len() && word.is_ascii() {
        for (d, s) in buf.iter_mut().zip(word.bytes()) {
            *d = s.to_ascii_uppercase();
        }
        return Some(&buf[..word.len()]);
    }
    if word.is_ascii() {
        return None;
    }
    let up: String = word.to_uppercase();
    if !up.is_ascii() || up.len() > buf.len() {
        return None;
    }
    buf[..up.len()].copy_from_slice(up.as_bytes());
    Some(&buf[..up.len()])
}

// ---------------------------------------------------------------------------------------------
// The text backstop (run after the AST check)

/// T-SQL reserved words that start statements and cannot appear unquoted in a single SELECT.
/// Sorted, for the reader.
/// T-SQL needs no `;` between statements, so `SELECT a FROM t SHUTDOWN` is two statements to the
/// server; sqlparser reads the second word as an alias.
#[rustfmt::skip]
const TSQL_STATEMENT_WORDS: [&str; 43] = [
    "BACKUP", "BEGIN", "BREAK", "BULK", "CHECKPOINT", "CLOSE", "COMMIT", "CONTINUE", "DBCC", "DECLARE",
    "DENY", "DISK", "DUMP", "ERRLVL", "EXIT", "GOTO", "IF", "LINENO", "LOAD", "OPEN", "PRINT", "PROC",
    "PROCEDURE", "RAISERROR", "READTEXT", "RECONFIGURE", "RESTORE", "RETURN", "REVERT", "ROLLBACK", "SAVE",
    "SECURITYAUDIT", "SET", "SETUSER", "TEXTSIZE", "TRAN", "TRANSACTION", "TRIGGER", "UPDATETEXT", "USE",
    "WAITFOR", "WHILE", "WRITETEXT",
];

/// T-SQL table hints that take or hold locks or raise isolation. Sorted, for the reader.
pub(crate) const TSQL_LOCK_HINTS: [&str; 10] = [
    "HOLDLOCK",
    "PAGLOCK",
    "READCOMMITTEDLOCK",
    "REPEATABLEREAD",
    "ROWLOCK",
    "SERIALIZABLE",
    "TABLOCK",
    "TABLOCKX",
    "UPDLOCK",
    "XLOCK",
];

/// What one pass over the code tokens found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Layer 1: the first write keyword (when set, the scan stopped there).
    pub(crate) keyword: Option<&'static str>,
    /// The text backstop: a reason to reject that the AST check should already have found:
    /// a denied function call (`name(` or `pkg.name(`), sequence `.NEXTVAL`, a row-lock clause,
    /// MySQL `:=`, Oracle `@dblink`, T-SQL statement words and lock hints, PostgreSQL `U&"..."`.
    pub(crate) backstop: Option<String>,
}

/// The entry of `list` equal to `word` (short lists: comparing lengths first is cheaper than a
/// binary search's string comparisons).
fn member(list: &[&'static str], word: &[u8]) -> Option<&'static str> {
    list.iter().copied().find(|k| k.len() == word.len() && k.as_bytes() == word)
}

/// One pass over the code tokens for the keyword pre-filter and, if asked, the backstop.
pub(crate) fn scan(sql: &str, lexed: &Lexed, dialect: Dialect, with_backstop: bool) -> Scan {
    let toks = &lexed.tokens;
    let text = |t: &Token| &sql[t.range()];
    let mut out = Scan::default();
    let mut backstop = with_backstop;
    if backstop && lexed.unicode_ident {
        out.backstop = Some("unicode-escaped identifiers (U&\"...\") are not allowed".into());
        backstop = false;
    }
    let mut buf = [0u8; 32];
    // The previous token was the word FOR or KEY (for `FOR SHARE`, `FOR KEY SHARE`).
    let mut prev_pair: Option<&'static str> = None;
    for (n, tok) in toks.iter().enumerate() {
        let pair = prev_pair.take();
        match tok.kind {
            Kind::Word => {
                let word = text(tok);
                let up = upper(word, &mut buf);
                if let Some(up) = up
                    && (4..=8).contains(&up.len())
                    && let Some(found) = member(&WRITE_KEYWORDS, up)
                {
                    let called = toks.get(n + 1).is_some_and(|t| t.kind == Kind::Punct('('));
                    let function_spelling = called && ALSO_FUNCTIONS.contains(&found);
                    if !(function_spelling || member_name(sql, toks, n, dialect)) {
                        out.keyword = Some(found);
                        return out;
                    }
                }
                if backstop {
                    let up = up.unwrap_or_default();
                    let up: &[u8] = up;
                    let after_dot = n > 0 && toks[n - 1].kind == Kind::Punct('.');
                    let next = toks.get(n + 1).map(|t| (t.kind, text(t)));
                    if let Some(reason) = word_rule(up, pair, after_dot, next, dialect) {
                        out.backstop = Some(reason);
                        backstop = false;
                    }
                    prev_pair = if up == b"FOR" {
                        Some("FOR")
                    } else if up == b"KEY" {
                        Some("KEY")
                    } else {
                        None
                    };
                }
            }
            Kind::Punct('(') if backstop && n > 0 => {
                // The dotted name before the parenthesis, if any: a call.
                let mut parts: Vec<&str> = Vec::new();
                let mut m = n;
                while m > 0 && matches!(toks[m - 1].kind, Kind::Word | Kind::Quoted) {
                    parts.push(text(&toks[m - 1]));
                    if m >= 2 && toks[m - 2].kind == Kind::Punct('.') {
                        m -= 2;
                    } else {
                        break;
                    }
                }
                parts.reverse();
                if !parts.is_empty()
                    && let Some(why) = deny::function(&parts, dialect)
                {
                    out.backstop = Some(format!("function {} is not allowed: {why}", parts.join(".")));
                    backstop = false;
                }
            }
            Kind::Quoted
                if backstop
                    && n > 0
                    && toks[n - 1].kind == Kind::Punct('.')
                    && text(tok).eq_ignore_ascii_case("nextval") =>
            {
                out.backstop = Some("NEXTVAL is not allowed: it advances a sequence".into());
                backstop = false;
            }
            Kind::Punct('@') if backstop && dialect == Dialect::Oracle => {
                out.backstop = Some("database links (@) reach another server".into());
                backstop = false;
            }
            Kind::Punct(':')
                if backstop
                    && dialect == Dialect::Mysql
                    && toks.get(n + 1).is_some_and(|t| t.kind == Kind::Punct('=') && t.start == tok.end) =>
            {
                out.backstop = Some("assignment to a variable (`:=`) is not allowed".into());
                backstop = false;
            }
            _ => {}
        }
    }
    out
}

/// Whether the word `toks[n]` is a member name, `t.update`: the `.` directly between it and a
/// name (or a quoted name's closing quote), no space. PostgreSQL, MySQL, SQLite, Oracle and
/// HANA read any word after such a dot as an identifier, never as the start of a statement.
/// Not for T-SQL: it needs no `;` between statements, and its reserved words after a dot
/// must be bracketed anyway.
fn member_name(sql: &str, toks: &[Token], n: usize, dialect: Dialect) -> bool {
    if dialect == Dialect::Mssql || n < 2 {
        return false;
    }
    let (dot, name, word) = (&toks[n - 1], &toks[n - 2], &toks[n]);
    if dot.kind != Kind::Punct('.') || dot.end != word.start {
        return false;
    }
    match name.kind {
        Kind::Word => name.end == dot.start,
        // The quoted name's range is its content: its closing quote sits right before the dot.
        Kind::Quoted => {
            name.end as usize + 1 == dot.start as usize
                && sql.as_bytes().get(name.end as usize).is_some_and(|&q| matches!(q, b'"' | b'`' | b']'))
        }
        _ => false,
    }
}

/// Backstop rules on one upper-cased word.
fn word_rule(
    up: &[u8],
    pair: Option<&str>,
    after_dot: bool,
    next: Option<(Kind, &str)>,
    dialect: Dialect,
) -> Option<String> {
    if let Some(prev) = pair
        && up == b"SHARE"
    {
        return Some(format!("locking clause {prev} SHARE is not allowed"));
    }
    if after_dot && up == b"NEXTVAL" {
        return Some("NEXTVAL is not allowed: it advances a sequence".into());
    }
    if up == b"LOCK"
        && next.is_some_and(|(kind, s)| {
            kind == Kind::Word
                && (s.eq_ignore_ascii_case("in")
                    || s.eq_ignore_ascii_case("table")
                    || s.eq_ignore_ascii_case("tables"))
        })
    {
        return Some("locking clause LOCK is not allowed".into());
    }
    if dialect == Dialect::Mssql {
        if let Some(word) = member(&TSQL_STATEMENT_WORDS, up) {
            return Some(format!(
                "T-SQL statement keyword {word} is not allowed (it would start a second statement)"
            ));
        }
        if let Some(hint) = member(&TSQL_LOCK_HINTS, up) {
            return Some(format!("table hint {hint} takes locks"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str, d: Dialect) -> Vec<String> {
        let lexed = lex(sql, &Rules::of(d));
        lexed
            .tokens
            .iter()
            .filter(|t| matches!(t.kind, Kind::Word | Kind::Quoted))
            .map(|t| sql[t.range()].to_owned())
            .collect()
    }

    fn kw(sql: &str, d: Dialect) -> Option<&'static str> {
        scan(sql, &lex(sql, &Rules::of(d)), d, false).keyword
    }

    #[test]
    fn word_lists_are_sorted_upper_case_ascii() {
        for list in [&WRITE_KEYWORDS[..], &TSQL_STATEMENT_WORDS, &TSQL_LOCK_HINTS] {
            for pair in list.windows(2) {
                assert!(pair[0] < pair[1], "{} / {}", pair[0], pair[1]);
            }
            for k in list {
                assert!(k.len() <= 32 && k.is_ascii() && *k == k.to_ascii_uppercase(), "{k}");
            }
        }
        for k in WRITE_KEYWORDS {
            assert!(k.len() >= 4, "{k}: the pre-filter skips shorter words");
        }
    }

    #[test]
    fn comments_strings_and_quoted_identifiers_hide_words() {
        for d in Dialect::ALL {
            assert_eq!(kw("SELECT 'please delete' FROM t -- DROP\n", d), None, "{d}");
            assert_eq!(kw("SELECT update_time, drop_count FROM t /* DELETE */", d), None, "{d}");
            assert_eq!(kw("SELECT 'it''s; DELETE' FROM t", d), None, "{d}");
        }
        assert_eq!(kw(r#"SELECT "update" FROM t"#, Dialect::Postgres), None);
        assert_eq!(kw("SELECT `delete` FROM t", Dialect::Mysql), None);
        assert_eq!(kw("SELECT [delete] FROM t", Dialect::Mssql), None);
        assert_eq!(kw("SELECT $$ delete $$, $x$ drop $x$", Dialect::Postgres), None);
        assert_eq!(kw(r"SELECT E'\' delete'", Dialect::Postgres), None);
        assert_eq!(kw(r"SELECT 'a\' delete'", Dialect::Mysql), None);
        assert_eq!(kw("SELECT q'[it's delete]' FROM dual", Dialect::Oracle), None);
        assert_eq!(kw("SELECT 1 # delete\n", Dialect::Mysql), None);
        assert_eq!(kw("SELECT /* /* */ DELETE */ 1", Dialect::Postgres), None);
    }

    #[test]
    fn keywords_in_code_are_found() {
        for d in Dialect::ALL {
            assert_eq!(kw("DeLeTe FROM t", d), Some("DELETE"), "{d}");
            assert_eq!(kw("/**/DELETE/**/FROM t", d), Some("DELETE"), "{d}");
            assert_eq!(kw("SELECT 1;\u{a0}DROP\ttable t", d), Some("DROP"), "{d}");
            assert_eq!(kw("SELECT 1 FROM t FOR UPDATE", d), Some("UPDATE"), "{d}");
            assert_eq!(kw("SELECT a INTO t2 FROM t", d), Some("INTO"), "{d}");
        }
        // Where the server does not escape or nest, the lexer does not either.
        assert_eq!(kw(r"SELECT 'a\' , (DELETE) , '", Dialect::Postgres), Some("DELETE"));
        assert_eq!(kw("SELECT /* /* */ DELETE */ 1", Dialect::Mysql), Some("DELETE"));
        assert_eq!(kw("SELECT 1 --DELETE\n", Dialect::Mysql), Some("DELETE"));
        assert_eq!(kw("SELECT 1 # DELETE\n", Dialect::Postgres), Some("DELETE"));
        assert_eq!(kw("SELECT $$ delete $$", Dialect::Mysql), Some("DELETE"));
        assert_eq!(kw("SELECT 1delete", Dialect::Postgres), Some("DELETE"));
        assert_eq!(kw("SELECT 1 FROM t; ınsert INTO x", Dialect::Generic), Some("INSERT"));
    }

    #[test]
    fn function_spellings_of_keywords_are_allowed() {
        assert_eq!(
            kw("SELECT REPLACE(name, 'a', 'b'), TRUNCATE(x, 2), INSERT(s, 1, 2, 'x')", Dialect::Mysql),
            None
        );
        assert_eq!(kw("REPLACE INTO t VALUES (1)", Dialect::Mysql), Some("REPLACE"));
    }

    #[test]
    fn lexing_matches_server_rules() {
        assert_eq!(
            words("SELECT a$b, #t, @v FROM [x y]", Dialect::Mssql),
            ["SELECT", "a$b", "#t", "@v", "FROM", "x y"]
        );
        assert_eq!(words("SELECT \"a\"\"b\" FROM t", Dialect::Postgres), ["SELECT", "a\"\"b", "FROM", "t"]);
        assert_eq!(words("SELECT $1, $$x$$ FROM t", Dialect::Postgres), ["SELECT", "FROM", "t"]);
        assert_eq!(words("SELECT 1 --x\n", Dialect::Mysql), ["SELECT", "x"]);
        assert_eq!(words("SELECT 1 -- x\n", Dialect::Mysql), ["SELECT"]);
        let lexed = lex("SELECT /*! 1 */ 2", &Rules::of(Dialect::Postgres));
        assert_eq!(lexed.exec_comment, Some("/*!"));
        let lexed = lex("SELECT /*+ INDEX(t) */ 2", &Rules::of(Dialect::Postgres));
        assert_eq!(lexed.hint, Some("/*+"));
        // MySQL 8 and Oracle: allowed when the body is plain.
        for d in [Dialect::Mysql, Dialect::Oracle] {
            let lexed = lex("SELECT /*+ INDEX(t) */ 2", &Rules::of(d));
            assert_eq!((lexed.hint, lexed.bad_hint), (None, None), "{d}");
        }
        let lexed = lex("SELECT U&\"\\0061\" FROM t", &Rules::of(Dialect::Postgres));
        assert!(lexed.unicode_ident);
    }

    #[test]
    fn unterminated_literals_do_not_panic() {
        for d in Dialect::ALL {
            for sql in
                ["'", "\"", "`", "[", "/*", "$a", "$$", "q'", "q'[", "E'", "--", "#", "U&", "1e", "1.", "€"]
            {
                let _ = lex(sql, &Rules::of(d));
            }
        }
    }

    #[test]
    fn backstop_finds_calls_the_parser_may_have_missed() {
        let b = |sql: &str, d: Dialect| scan(sql, &lex(sql, &Rules::of(d)), d, true).backstop;
        assert!(b("SELECT pg_sleep(1)", Dialect::Postgres).unwrap().contains("pg_sleep"));
        assert!(b("SELECT \"DBMS_LOCK\".\"SLEEP\"(1) FROM dual", Dialect::Oracle).is_some());
        assert!(b("SELECT s.NEXTVAL FROM dual", Dialect::Oracle).is_some());
        assert!(b("SELECT \"S\".\"NEXTVAL\" FROM dual", Dialect::Oracle).is_some());
        assert!(b("SELECT a FROM t FOR SHARE", Dialect::Postgres).is_some());
        assert!(b("SELECT @a := 1", Dialect::Mysql).is_some());
        assert!(b("SELECT a FROM t CHECKPOINT", Dialect::Mssql).is_some());
        assert!(b("SELECT a FROM t WITH (UPDLOCK)", Dialect::Mssql).is_some());
        assert_eq!(b("SELECT sleep FROM t WHERE share > 1", Dialect::Mysql), None);
        assert_eq!(b("SELECT DBMS_LOB.SUBSTR(c, 10, 1) FROM t", Dialect::Oracle), None);
    }
}
