//! Reading an export's answer as a stream: encoding detection, bounds, objects, Tally's errors.
//!
//! The body goes through three layers: [`decode`] turns UTF-16 (either byte order, by BOM, by
//! a leading `<` next to a zero byte, or by the HTTP charset) into UTF-8 incrementally,
//! [`Budget`] bounds the bytes one object (or anything between two objects) may take, and
//! [`Objects`] pulls quick-xml events and yields one object at a time, never the whole body.

use std::error::Error as StdError;
use std::fmt;
use std::io::{self, BufReader, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// Bytes one object (or anything outside objects between two of them) may take.
pub(super) const MAX_OBJECT_BYTES: u64 = 4 << 20;
/// Deepest nesting of elements accepted.
pub(super) const MAX_DEPTH: usize = 64;
/// Longest error message kept from Tally's answer, in characters.
const MAX_MESSAGE_CHARS: usize = 500;

/// Why an answer could not be read.
#[derive(Debug)]
pub(super) enum Failure {
    /// Tally answered with an error (`LINEERROR`, `RESPONSE`, `STATUS` 0): its message.
    Tally(String),
    /// The answer is not Tally's XML at all (HTML, plain text, another format).
    NotTally(String),
    /// The answer started as Tally XML but broke the grammar or the bounds.
    Malformed(String),
    /// Reading the body failed (the connection broke, timed out or was shut by a cancel).
    Io(io::Error),
}

/// A problem with the bytes themselves (invalid UTF-16, over the budget), carried through
/// quick-xml as an `io::Error`.
#[derive(Debug)]
struct BodyError(String);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for BodyError {}

fn body_error(what: impl Into<String>) -> io::Error {
    io::Error::other(BodyError(what.into()))
}

/// The body's encoding, from the HTTP `Content-Type` charset (if any) and its first bytes.
pub(super) fn decode(mut body: impl Read + 'static, charset: Option<&str>) -> io::Result<Box<dyn Read>> {
    let mut head = [0u8; 3];
    let mut got = 0;
    while got < head.len() {
        match body.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = &head[..got];
    let charset = charset.map(str::to_ascii_lowercase);
    let utf16_hint = charset.as_deref().is_some_and(|c| c.starts_with("utf-16") || c.starts_with("utf16"));
    let (skip, order) = match head {
        [0xEF, 0xBB, 0xBF, ..] => (3, None),
        [0xFF, 0xFE, ..] => (2, Some(Order::Little)),
        [0xFE, 0xFF, ..] => (2, Some(Order::Big)),
        [b, 0, ..] if *b != 0 => (0, Some(Order::Little)),
        [0, b, ..] if *b != 0 => (0, Some(Order::Big)),
        _ if utf16_hint && charset.as_deref() == Some("utf-16be") => (0, Some(Order::Big)),
        _ if utf16_hint => (0, Some(Order::Little)),
        _ => (0, None),
    };
    let rest = io::Cursor::new(head[skip.min(head.len())..].to_vec()).chain(body);
    Ok(match order {
        None => Box::new(rest),
        Some(order) => Box::new(Utf16::new(rest, order)),
    })
}

#[derive(Debug, Clone, Copy)]
enum Order {
    Little,
    Big,
}

/// UTF-16 to UTF-8, a buffer at a time; an unpaired surrogate or an odd trailing byte is an
/// error, never a replacement character.
struct Utf16<R> {
    inner: R,
    order: Order,
    input: Vec<u8>,
    /// An odd byte left from the last read.
    odd: Option<u8>,
    /// A high surrogate waiting for its low half.
    high: Option<u16>,
    out: Vec<u8>,
    pos: usize,
}

impl<R: Read> Utf16<R> {
    fn new(inner: R, order: Order) -> Self {
        Self { inner, order, input: vec![0; 16 << 10], odd: None, high: None, out: Vec::new(), pos: 0 }
    }

    fn unit(&self, a: u8, b: u8) -> u16 {
        match self.order {
            Order::Little => u16::from_le_bytes([a, b]),
            Order::Big => u16::from_be_bytes([a, b]),
        }
    }

    fn push(&mut self, unit: u16) -> io::Result<()> {
        let c = match (self.high.take(), unit) {
            (None, 0xD800..=0xDBFF) => {
                self.high = Some(unit);
                return Ok(());
            }
            (Some(high), 0xDC00..=0xDFFF) => {
                let code = 0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00);
                char::from_u32(code)
            }
            (None, 0xDC00..=0xDFFF) | (Some(_), _) => None,
            (None, unit) => char::from_u32(u32::from(unit)),
        };
        let c = c.ok_or_else(|| body_error("the answer is not valid UTF-16 (an unpaired surrogate)"))?;
        let mut utf8 = [0u8; 4];
        self.out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        Ok(())
    }

    /// Reads and converts one buffer; false at the end of the input.
    fn fill(&mut self) -> io::Result<bool> {
        self.out.clear();
        self.pos = 0;
        let n = loop {
            match self.inner.read(&mut self.input) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            if self.odd.is_some() || self.high.is_some() {
                return Err(body_error("the answer is not valid UTF-16 (it ends inside a character)"));
            }
            return Ok(false);
        }
        let mut i = 0;
        if let Some(a) = self.odd.take() {
            let unit = self.unit(a, self.input[0]);
            self.push(unit)?;
            i = 1;
        }
        while i + 1 < n {
            let unit = self.unit(self.input[i], self.input[i + 1]);
            self.push(unit)?;
            i += 2;
        }
        if i < n {
            self.odd = Some(self.input[i]);
        }
        Ok(true)
    }
}

impl<R: Read> Read for Utf16<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.out.len() {
            if !self.fill()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Counts the bytes read since the last [`reset`](Self::reset) and fails past the limit.
pub(super) struct Budget<R> {
    inner: R,
    used: u64,
    limit: u64,
}

impl<R> Budget<R> {
    pub(super) fn new(inner: R, limit: u64) -> Self {
        Self { inner, used: 0, limit }
    }

    fn reset(&mut self) {
        self.used = 0;
    }
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.used >= self.limit {
            return Err(body_error(format!(
                "one object of the answer is larger than {} MiB",
                self.limit >> 20
            )));
        }
        let room = usize::try_from(self.limit - self.used).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(&mut buf[..room])?;
        self.used += n as u64;
        Ok(n)
    }
}

/// One exported object: the raw text of each wanted field (`None`: absent or empty).
pub(super) type RawObject = Vec<Option<String>>;

/// What is being collected from the current element's text.
#[derive(Debug)]
enum Capture {
    /// Nothing.
    None,
    /// The text of wanted field `index`, whose element is at `depth`.
    Field { index: usize, depth: usize },
    /// Text of an error element (`LINEERROR`) or loose text of the body.
    Message,
}

/// An object being read.
#[derive(Debug)]
struct Open {
    /// Depth of the object's element.
    depth: usize,
    values: RawObject,
    /// `X.LIST` of a wanted field `X`: (field, depth of the list element).
    list: Option<(usize, usize)>,
}

/// Pulls objects of one Tally type out of an export's answer.
pub(super) struct Objects {
    reader: Reader<BufReader<Budget<Box<dyn Read>>>>,
    buf: Vec<u8>,
    /// Element name of the objects (`LEDGER`, `STOCKITEM`, ...).
    tag: String,
    /// Wanted fields, upper case; index = position in [`RawObject`].
    fields: Vec<String>,
    /// Element names from the root to the current element, upper case.
    stack: Vec<String>,
    object: Option<Open>,
    capture: Capture,
    text: String,
    /// `RESPONSE` root, `LINEERROR` and `STATUS` 0 collect a message here.
    message: String,
    failed: bool,
    root_seen: bool,
    done: bool,
}

impl Objects {
    /// A reader of `collection` objects with `fields` (Tally's spelling) from `body`.
    pub(super) fn new(body: Box<dyn Read>, collection: &str, fields: &[&str]) -> Self {
        let budget = Budget::new(body, MAX_OBJECT_BYTES);
        let mut reader = Reader::from_reader(BufReader::with_capacity(64 << 10, budget));
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = true;
        Self {
            reader,
            buf: Vec::with_capacity(8 << 10),
            tag: collection.to_ascii_uppercase(),
            fields: fields.iter().map(|f| f.to_ascii_uppercase()).collect(),
            stack: Vec::new(),
            object: None,
            capture: Capture::None,
            text: String::new(),
            message: String::new(),
            failed: false,
            root_seen: false,
            done: false,
        }
    }

    /// The next object, `None` at the end of a successful answer.
    pub(super) fn next_object(&mut self) -> Result<Option<RawObject>, Failure> {
        if self.done {
            return Ok(None);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let result = loop {
            match self.step(&mut buf) {
                Ok(Some(object)) => break Ok(object),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    break Err(e);
                }
            }
        };
        self.buf = buf;
        result
    }

    /// Reads one event: `Some(Some(object))` when it ends an object, `Some(None)` at the end.
    fn step(&mut self, buf: &mut Vec<u8>) -> Result<Option<Option<RawObject>>, Failure> {
        if self.object.is_none() {
            self.reader.get_mut().get_mut().reset();
        }
        buf.clear();
        let event = match self.reader.read_event_into(buf) {
            Ok(event) => event,
            Err(e) => return Err(self.fail(e)),
        };
        match event {
            Event::Start(start) => {
                let name = start.name().as_ref().to_ascii_uppercase();
                let attr =
                    if self.object.is_none() && name == self.tag { name_attribute(&start) } else { None };
                self.start(name, attr)?;
            }
            Event::End(_) => {
                if let Some(object) = self.end()? {
                    return Ok(Some(Some(object)));
                }
            }
            Event::Text(text) => self.text_event(&text.xml10_content())?,
            Event::CData(data) => self.text_event(&data.xml10_content())?,
            Event::GeneralRef(reference) => self.text_event(&resolve_reference(&reference.into_inner()))?,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) | Event::Empty(_) => {}
            Event::Eof => {
                self.done = true;
                if !self.root_seen {
                    return Err(Failure::NotTally("an empty answer".into()));
                }
                if !self.stack.is_empty() {
                    return Err(Failure::Malformed("the answer ends inside an element".into()));
                }
                if self.failed {
                    return Err(Failure::Tally(self.message()));
                }
                return Ok(Some(None));
            }
        }
        Ok(None)
    }

    fn fail(&mut self, e: quick_xml::Error) -> Failure {
        self.done = true;
        if let quick_xml::Error::Io(io) = &e {
            if let Some(body) = io.get_ref().and_then(|inner| inner.downcast_ref::<BodyError>()) {
                return Failure::Malformed(body.0.clone());
            }
            return Failure::Io(io::Error::new(io.kind(), io.to_string()));
        }
        if !self.root_seen {
            Failure::NotTally(format!("not XML ({e})"))
        } else {
            Failure::Malformed(format!("the XML is malformed ({e})"))
        }
    }

    fn start(&mut self, name: String, name_attr: Option<String>) -> Result<(), Failure> {
        if self.stack.len() >= MAX_DEPTH {
            self.done = true;
            return Err(Failure::Malformed(format!(
                "the answer nests elements deeper than {MAX_DEPTH} levels"
            )));
        }
        if !self.root_seen {
            self.root_seen = true;
            match name.as_str() {
                "ENVELOPE" => {}
                "RESPONSE" => self.failed = true,
                other => {
                    self.done = true;
                    return Err(Failure::NotTally(format!("an XML document of type <{}>", short(other))));
                }
            }
        }
        self.flush_text();
        let depth = self.stack.len();
        match &mut self.object {
            // An object is an element named after the type right inside `COLLECTION` (the
            // header's `CMPINFO` has elements of the same names holding counts).
            None if name == self.tag && self.stack.last().is_some_and(|p| p == "COLLECTION") => {
                let mut values = vec![None; self.fields.len()];
                // Tally writes an object's name in its NAME attribute too.
                if let (Some(i), Some(v)) = (self.fields.iter().position(|f| f == "NAME"), name_attr) {
                    values[i] = non_empty(v);
                }
                self.object = Some(Open { depth, values, list: None });
                self.capture = Capture::None;
            }
            None => {
                self.capture = match name.as_str() {
                    "LINEERROR" => {
                        self.failed = true;
                        Capture::Message
                    }
                    "STATUS" | "VERSION" | "TALLYREQUEST" | "TYPE" | "ID" => Capture::None,
                    _ => Capture::Message,
                };
            }
            Some(open) => {
                self.capture = Capture::None;
                if depth == open.depth + 1 {
                    if let Some(index) = self.fields.iter().position(|f| *f == name) {
                        self.capture = Capture::Field { index, depth };
                    } else if let Some(base) = name.strip_suffix(".LIST")
                        && let Some(index) = self.fields.iter().position(|f| f == base)
                    {
                        open.list = Some((index, depth));
                    }
                } else if let Some((index, list_depth)) = open.list
                    && depth == list_depth + 1
                    && self.fields[index] == name
                    && open.values[index].is_none()
                {
                    self.capture = Capture::Field { index, depth };
                }
            }
        }
        self.stack.push(name);
        Ok(())
    }

    fn end(&mut self) -> Result<Option<RawObject>, Failure> {
        let Some(name) = self.stack.pop() else {
            return Err(Failure::Malformed("an end tag without a start".into()));
        };
        let depth = self.stack.len();
        if let Capture::Field { index, depth: at } = self.capture
            && at == depth
        {
            let value = non_empty(std::mem::take(&mut self.text));
            if let Some(open) = &mut self.object
                && (open.values[index].is_none() || value.is_some())
            {
                open.values[index] = value;
            }
            self.capture = Capture::None;
        }
        if let Some(open) = &mut self.object {
            if open.list.is_some_and(|(_, d)| d == depth) {
                open.list = None;
            }
            if open.depth == depth {
                let object = self.object.take().map(|o| o.values);
                return Ok(object);
            }
            return Ok(None);
        }
        self.flush_text();
        if name == "LINEERROR" || (depth == 0 && self.failed) {
            self.done = true;
            return Err(Failure::Tally(self.message()));
        }
        Ok(None)
    }

    fn text_event(&mut self, text: &str) -> Result<(), Failure> {
        match self.capture {
            Capture::Field { .. } => self.text.push_str(text),
            Capture::Message => {
                if self.text.len() < MAX_MESSAGE_CHARS * 4 {
                    self.text.push_str(text);
                }
            }
            Capture::None => {
                // `<STATUS>0</STATUS>` in the header: the export failed; the message follows.
                if self.object.is_none()
                    && self.stack.last().is_some_and(|n| n == "STATUS")
                    && text.trim() == "0"
                {
                    self.failed = true;
                }
                if !self.root_seen && !text.trim().is_empty() {
                    self.done = true;
                    return Err(Failure::NotTally("text, not XML".into()));
                }
            }
        }
        Ok(())
    }

    /// Moves collected message text (outside objects) into the message.
    fn flush_text(&mut self) {
        if matches!(self.capture, Capture::Message) {
            let text = std::mem::take(&mut self.text);
            let text = text.trim();
            if !text.is_empty() && self.message.chars().count() < MAX_MESSAGE_CHARS {
                if !self.message.is_empty() {
                    self.message.push_str("; ");
                }
                self.message.push_str(text);
            }
        } else if self.object.is_none() {
            self.text.clear();
        }
    }

    fn message(&mut self) -> String {
        self.flush_text();
        let message: String = self.message.chars().take(MAX_MESSAGE_CHARS).collect();
        if message.is_empty() { "the export failed (no message)".into() } else { message }
    }
}

/// The `NAME` attribute of an object element, unescaped.
fn name_attribute(start: &BytesStart<'_>) -> Option<String> {
    start
        .attributes()
        .with_checks(false)
        .flatten()
        .find(|a| a.key.as_ref().eq_ignore_ascii_case("NAME"))
        .map(|a| unescape(&a.value))
}

/// `&name;` references: the five XML entities and character references; anything else
/// (Tally's `&#4;` marker before reserved names, undefined entities) is dropped.
fn resolve_reference(name: &str) -> String {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => number.parse().ok(),
        };
        return match code.and_then(char::from_u32) {
            Some(c) if !c.is_control() || matches!(c, '\t' | '\n' | '\r') => c.to_string(),
            _ => String::new(),
        };
    }
    quick_xml::escape::resolve_predefined_entity(name).unwrap_or_default().to_owned()
}

/// Unescapes an attribute value with [`resolve_reference`].
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match after.find(';') {
            Some(semi) if semi <= 32 => {
                out.push_str(&resolve_reference(&after[..semi]));
                rest = &after[semi + 1..];
            }
            _ => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn non_empty(text: String) -> Option<String> {
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{4}');
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == text.len() {
        Some(text)
    } else {
        Some(trimmed.to_owned())
    }
}

fn short(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(body: Vec<u8>, fields: &[&str]) -> Result<Vec<RawObject>, Failure> {
        let body = decode(io::Cursor::new(body), None).map_err(Failure::Io)?;
        let mut objects = Objects::new(body, "Ledger", fields);
        let mut out = Vec::new();
        while let Some(o) = objects.next_object()? {
            out.push(o);
        }
        Ok(out)
    }

    fn utf16le(text: &str) -> Vec<u8> {
        let mut out = vec![0xFF, 0xFE];
        out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        out
    }

    const LEDGERS: &str = "<ENVELOPE><HEADER><VERSION>1</VERSION><STATUS>1</STATUS></HEADER><BODY><DATA><COLLECTION>\
        <LEDGER NAME=\"M&#252;ller &amp; Co\" RESERVEDNAME=\"\"><NAME.LIST TYPE=\"String\"><NAME>M\u{fc}ller &amp; Co</NAME><NAME>alias</NAME></NAME.LIST>\
        <PARENT TYPE=\"String\">&#4; Sundry Debtors</PARENT><CLOSINGBALANCE TYPE=\"Amount\">-1250.00</CLOSINGBALANCE>\
        <ALLLEDGERENTRIES.LIST><PARENT>nested, ignored</PARENT></ALLLEDGERENTRIES.LIST></LEDGER>\
        <LEDGER NAME=\"Cash\"><PARENT/><CLOSINGBALANCE><![CDATA[ 10.00 ]]></CLOSINGBALANCE></LEDGER>\
        </COLLECTION></DATA></BODY></ENVELOPE>";

    #[test]
    fn objects_stream_with_lists_references_and_attributes() {
        let got = objects(LEDGERS.as_bytes().to_vec(), &["Name", "Parent", "ClosingBalance"]).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            [Some("Müller & Co".into()), Some("Sundry Debtors".into()), Some("-1250.00".into())]
        );
        assert_eq!(got[1], [Some("Cash".into()), None, Some("10.00".into())]);
    }

    #[test]
    fn utf16_bodies_decode_in_both_byte_orders() {
        let le = objects(utf16le(LEDGERS), &["Name"]).unwrap();
        assert_eq!(le[0][0].as_deref(), Some("Müller & Co"));
        let mut be = vec![0xFE, 0xFF];
        be.extend(LEDGERS.encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(objects(be, &["Name"]).unwrap(), le);
        // No BOM: a `<` next to a zero byte.
        let no_bom = utf16le(LEDGERS)[2..].to_vec();
        assert_eq!(objects(no_bom, &["Name"]).unwrap(), le);
    }

    #[test]
    fn broken_utf16_is_an_error() {
        let mut body = utf16le("<ENVELOPE><X>");
        body.extend([0x00, 0xD8, b'<', 0]); // an unpaired high surrogate
        assert!(matches!(objects(body, &["Name"]), Err(Failure::Malformed(m)) if m.contains("UTF-16")));
        let mut odd = utf16le("<ENVELOPE></ENVELOPE>");
        odd.push(b'x');
        assert!(matches!(objects(odd, &["Name"]), Err(Failure::Malformed(_))));
    }

    #[test]
    fn tally_errors_are_reported() {
        let line = "<ENVELOPE><BODY><DATA><LINEERROR>Could not find Company 'X'</LINEERROR></DATA></BODY></ENVELOPE>";
        assert!(
            matches!(objects(line.into(), &["Name"]), Err(Failure::Tally(m)) if m == "Could not find Company 'X'")
        );
        let response = "<RESPONSE>Unknown Request, cannot be processed</RESPONSE>";
        assert!(
            matches!(objects(response.into(), &["Name"]), Err(Failure::Tally(m)) if m == "Unknown Request, cannot be processed")
        );
        let status = "<ENVELOPE><HEADER><VERSION>1</VERSION><STATUS>0</STATUS></HEADER><BODY><DESC></DESC><DATA>No company is open</DATA></BODY></ENVELOPE>";
        assert!(
            matches!(objects(status.into(), &["Name"]), Err(Failure::Tally(m)) if m == "No company is open")
        );
    }

    #[test]
    fn non_tally_and_hostile_answers_are_errors() {
        for body in ["<html><body>It works</body></html>", "HTTP gateway", "{\"json\": 1}", ""] {
            assert!(matches!(objects(body.into(), &["Name"]), Err(Failure::NotTally(_))), "{body}");
        }
        let deep = format!("<ENVELOPE>{}", "<A>".repeat(MAX_DEPTH + 5));
        assert!(
            matches!(objects(deep.into(), &["Name"]), Err(Failure::Malformed(m)) if m.contains("deeper"))
        );
        // (The budget is counted where the 64 KiB read buffer fills, so it may be late by that much.)
        let huge = format!(
            "<ENVELOPE><COLLECTION><LEDGER NAME=\"{}\"/></ENVELOPE>",
            "x".repeat(MAX_OBJECT_BYTES as usize + (128 << 10))
        )
        .replace("</ENVELOPE>", "</COLLECTION></ENVELOPE>");
        let got = objects(huge.into(), &["Name"]).map(|o| o.len());
        assert!(matches!(&got, Err(Failure::Malformed(m)) if m.contains("larger")), "{got:?}");
        let unclosed = "<ENVELOPE><COLLECTION><LEDGER><NAME>x</LEDGER>";
        assert!(matches!(objects(unclosed.into(), &["Name"]), Err(Failure::Malformed(_))));
        let truncated = "<ENVELOPE><COLLECTION><LEDGER><NAME>x</NAME>";
        assert!(matches!(objects(truncated.into(), &["Name"]), Err(Failure::Malformed(_))));
    }
}
