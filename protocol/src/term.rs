//! Text for a terminal, shared by both command lines (`mini-connector`, `connector-gateway`):
//! escaping of control characters, display width, one table renderer, and whether colour may
//! be used.
//!
//! Data and names from a database (cells, table and column names, error texts the server
//! wrote) may contain tabs, newlines, escape sequences or bidi overrides. Printed raw they
//! break rows or drive the admin's terminal (`ESC ]` sequences rewrite the title or the
//! clipboard, bidi overrides reorder what is shown). [`escape`] shows each of them visibly:
//! `\t`, `\n`, `\r`, `\x1b` (other C0 and DEL as `\xNN`), C1 controls and the Unicode bidi /
//! format controls as `\u{…}`. Backslashes are left alone (a path reads as it is). JSON output
//! does not go through here: JSON escapes control characters itself and stays exact.
//!
//! Column widths are display widths ([`width`], `unicode-width`): CJK and emoji take two
//! cells, combining marks none, so tables line up on a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

use unicode_width::UnicodeWidthStr as _;

/// Whether `c` must not reach a terminal as it is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            // Arabic letter mark, LRM/RLM, LRE..RLO + PDF, LRI..PDI: they reorder text.
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            // Line and paragraph separators: a line break to some terminals.
            | '\u{2028}' | '\u{2029}'
            // Byte order mark / zero-width no-break space, interlinear annotations.
            | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// `text` with every control character, bidi control and line separator shown as an escape
/// (`\t`, `\n`, `\r`, `\x1b`, `\u{202e}`); borrowed when there is none.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Columns `text` takes on a terminal (after [`escape`]: control characters count as 0).
pub fn width(text: &str) -> usize {
    text.width()
}

/// `text` padded with spaces to `cells` display columns (left-aligned, or right-aligned).
pub fn pad(text: &str, cells: usize, right: bool) -> String {
    let fill = " ".repeat(cells.saturating_sub(width(text)));
    if right { format!("{fill}{text}") } else { format!("{text}{fill}") }
}

/// One line of a table: the (already escaped) cells padded to `widths`, two spaces apart,
/// trailing spaces trimmed. Cells beyond `widths` are printed unpadded.
pub fn line(cells: &[String], widths: &[usize], right: &[bool]) -> String {
    let parts: Vec<String> = cells
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            pad(cell, widths.get(i).copied().unwrap_or(0), right.get(i).copied().unwrap_or(false))
        })
        .collect();
    parts.join("  ").trim_end().to_owned()
}

/// A text table: a header, optionally a rule of dashes under it, rows; cells escaped and
/// columns sized by display width.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
    rule: bool,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Self {
        Self { headers: headers.iter().map(|h| escape(h.as_ref()).into_owned()).collect(), ..Self::default() }
    }

    /// Draws a rule of dashes under the header.
    #[must_use]
    pub fn with_rule(mut self) -> Self {
        self.rule = true;
        self
    }

    /// Right-aligns column `index` (numbers).
    #[must_use]
    pub fn right(mut self, index: usize) -> Self {
        if self.right.len() <= index {
            self.right.resize(index + 1, false);
        }
        self.right[index] = true;
        self
    }

    /// Adds a row (its cells are escaped here).
    pub fn push<S: AsRef<str>>(&mut self, row: &[S]) {
        self.rows.push(row.iter().map(|c| escape(c.as_ref()).into_owned()).collect());
    }

    /// The column widths: the widest cell of each column, header included.
    pub fn widths(&self) -> Vec<usize> {
        widths(&self.headers, &self.rows)
    }

    /// The whole table, one line per row, each ending in `\n`.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut out = String::new();
        out.push_str(&line(&self.headers, &widths, &self.right));
        out.push('\n');
        if self.rule {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&line(&rule, &widths, &[]));
            out.push('\n');
        }
        for row in &self.rows {
            out.push_str(&line(row, &widths, &self.right));
            out.push('\n');
        }
        out
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

/// The widest (display width) cell of each column of `headers` and `rows` (already escaped).
pub fn widths(headers: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i >= widths.len() {
                widths.push(0);
            }
            widths[i] = widths[i].max(width(cell));
        }
    }
    widths
}

/// Whether colour codes may be written to a stream: only to a terminal (`is_terminal`), never
/// when `NO_COLOR` is set to anything non-empty (<https://no-color.org>), nor when `TERM` is
/// `dumb`.
pub fn color_allowed(is_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    is_terminal && !no_color && !dumb
}

/// [`color_allowed`] for this process's stderr (where both binaries log).
pub fn stderr_color() -> bool {
    color_allowed(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_escaped() {
        assert_eq!(escape("plain café 東京"), "plain café 東京");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape("a\tb\nc\rd"), "a\\tb\\nc\\rd");
        assert_eq!(escape("\u{1b}[31mred\u{1b}]0;title\u{7}"), "\\x1b[31mred\\x1b]0;title\\x07");
        assert_eq!(escape("\0\u{7f}"), "\\x00\\x7f");
        assert_eq!(escape("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escape("x\u{2028}y\u{feff}"), "x\\u{2028}y\\u{feff}");
        // Nothing left that a terminal would act on.
        for text in ["\u{1b}P1;2|x\u{1b}\\", "\u{90}\u{9c}", "\u{2066}a\u{2069}"] {
            assert!(!escape(text).chars().any(is_unsafe), "{text:?}");
        }
    }

    #[test]
    fn widths_are_display_columns() {
        assert_eq!(width("abc"), 3);
        assert_eq!(width("東京"), 4);
        assert_eq!(width("🙂"), 2);
        assert_eq!(width("e\u{301}"), 1);
    }

    #[test]
    fn wide_and_combining_cells_line_up() {
        let mut table = Table::new(&["NAME", "CITY"]).with_rule();
        table.push(&["東京支店", "x"]);
        table.push(&["cafe\u{301}", "y"]);
        table.push(&["🙂🙂", "z"]);
        table.push(&["tab\there", "w"]);
        let text = table.render();
        // The second column starts at the same display column on every line.
        let starts: Vec<usize> = text
            .lines()
            .skip(2)
            .map(|l| {
                let (head, _) = l.rsplit_once("  ").unwrap();
                width(head) + 2
            })
            .collect();
        assert!(starts.iter().all(|s| *s == starts[0]), "{starts:?}\n{text}");
        assert_eq!(text.lines().count(), 6, "a tab or newline never breaks a row:\n{text}");
        assert!(text.contains("tab\\there"));
    }

    #[test]
    fn right_alignment_pads_on_the_left() {
        let mut table = Table::new(&["N", "ROWS"]).right(1);
        table.push(&["a", "7"]);
        table.push(&["b", "1234"]);
        assert_eq!(table.render(), "N  ROWS\na     7\nb  1234\n");
    }
}
