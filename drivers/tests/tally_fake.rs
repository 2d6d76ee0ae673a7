//! A fake TallyPrime XML gateway (no Tally can run here: TallyPrime is a Windows desktop
//! program with no emulator): a small HTTP/1.1 server on 127.0.0.1 answering like TallyPrime's
//! gateway from fixture files shaped like real exports (`drivers/tests/fixtures/tally/`). It
//! records every posted envelope and counts any request that is not an Export (a test fails on
//! drop if there was one). Shared by the drivers' tests and the agent's end-to-end tests
//! (`#[path]`), each of which uses part of it.
#![allow(dead_code, reason = "shared by two test crates, each using part of it")]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use drivers::{ConnectionSpec, Database, DbKind};

/// What the fake answers.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The fixture of the requested collection (UTF-8).
    Normal,
    /// The fixture as UTF-16LE with a BOM (`charset=utf-16`), as TallyPrime usually answers.
    Utf16Le,
    /// The fixture as UTF-16BE with a BOM.
    Utf16Be,
    /// `lineerror.xml` for every request.
    LineError,
    /// No company loaded: an empty `Company` collection, `no-company.xml` for the rest.
    NoCompany,
    /// An HTML page, as another web server on the port would answer.
    Html,
    /// Waits this long before answering anything.
    Slow(Duration),
    /// Sends the head and the start of the body, then waits this long.
    Stall(Duration),
    /// `n` generated ledgers; after the first `gate` of them, waits (up to 10 s) until
    /// [`Fake::release`] is called.
    Large { n: usize, gate: usize },
    /// These bytes as the body.
    Raw(Vec<u8>),
}

struct State {
    mode: Mode,
    /// Every request body, in order.
    requests: Vec<String>,
}

/// The fake gateway; dropping it stops the server.
pub struct Fake {
    pub port: u16,
    shared: Shared,
}

/// What the fake's threads and the test share.
#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    /// Requests that were not exactly one `<TALLYREQUEST>Export</TALLYREQUEST>`.
    not_export: Arc<AtomicUsize>,
    released: Arc<AtomicBool>,
    /// Set when a large answer was written to the end.
    finished: Arc<AtomicBool>,
    companies: Vec<&'static str>,
}

pub const COMPANY: &str = "Sample Traders & Co";

/// The fixture directory, from the drivers crate or the workspace root (the two users).
fn fixtures() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let own = root.join("tests/fixtures/tally");
    if own.is_dir() { own } else { root.join("drivers/tests/fixtures/tally") }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn utf16(text: &[u8], little: bool) -> Vec<u8> {
    let text = std::str::from_utf8(text).unwrap();
    let mut out = if little { vec![0xFF, 0xFE] } else { vec![0xFE, 0xFF] };
    for unit in text.encode_utf16() {
        out.extend(if little { unit.to_le_bytes() } else { unit.to_be_bytes() });
    }
    out
}

/// The text of the first `<tag>…</tag>` after `from` in `xml`, with the five entities resolved.
fn element(xml: &str, from: &str, tag: &str) -> Option<String> {
    let rest = &xml[xml.find(from)?..];
    let open = format!("<{tag}>");
    let start = rest.find(&open)? + open.len();
    let end = rest[start..].find(&format!("</{tag}>"))? + start;
    Some(
        rest[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

impl Fake {
    pub fn start(mode: Mode) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let shared = Shared {
            state: Arc::new(Mutex::new(State { mode, requests: Vec::new() })),
            stop: Arc::new(AtomicBool::new(false)),
            not_export: Arc::new(AtomicUsize::new(0)),
            released: Arc::new(AtomicBool::new(false)),
            finished: Arc::new(AtomicBool::new(false)),
            companies: vec![COMPANY],
        };
        let fake = Fake { port: listener.local_addr().unwrap().port(), shared: shared.clone() };
        thread::Builder::new()
            .name("fake-tally".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = shared.clone();
                    thread::spawn(move || {
                        let _ = shared.serve(stream);
                    });
                }
            })
            .unwrap();
        fake
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.state.lock().unwrap().mode = mode;
    }

    pub fn requests(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// Whether a large answer was written to the end.
    pub fn finished(&self) -> bool {
        self.shared.finished.load(Ordering::SeqCst)
    }

    pub fn release(&self) {
        self.shared.released.store(true, Ordering::SeqCst);
    }

    pub fn spec(&self, company: Option<&str>) -> ConnectionSpec {
        ConnectionSpec {
            name: "tally".into(),
            kind: DbKind::Tally,
            host: Some("127.0.0.1".into()),
            port: Some(self.port),
            company: company.map(str::to_owned),
            ..ConnectionSpec::default()
        }
    }

    pub fn db(&self) -> Database {
        Database::open(&self.spec(Some(COMPANY))).unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        // Every request any test made was an Export.
        if !thread::panicking() {
            assert_eq!(self.shared.not_export.load(Ordering::SeqCst), 0, "a request that is not an Export");
        }
    }
}

impl Shared {
    fn serve(&self, mut stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let (head_len, length) = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(len) = request.parse(&buf).expect("an HTTP request") {
                assert_eq!(request.method, Some("POST"));
                let length = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap())
                    .expect("Content-Length");
                break (len, length);
            }
        };
        while buf.len() < head_len + length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8(buf[head_len..head_len + length].to_vec()).expect("UTF-8 envelope");
        let export = body.matches("<TALLYREQUEST>").count() == 1
            && body.contains("<TALLYREQUEST>Export</TALLYREQUEST>")
            && !body.to_ascii_lowercase().contains(">import<");
        if !export {
            self.not_export.fetch_add(1, Ordering::SeqCst);
        }
        let collection = element(&body, "<COLLECTION NAME=", "TYPE").expect("a collection TYPE");
        let company = element(&body, "<STATICVARIABLES>", "SVCURRENTCOMPANY");
        let mode = {
            let mut state = self.state.lock().unwrap();
            state.requests.push(body.clone());
            state.mode.clone()
        };
        let file = format!("{}.xml", collection.to_ascii_lowercase());
        let known_company = company.as_deref().is_none_or(|c| self.companies.contains(&c));
        let xml = "text/xml; charset=utf-8";
        match mode {
            _ if !export => {
                respond(&mut stream, xml, b"<RESPONSE>Unknown Request, cannot be processed</RESPONSE>")
            }
            Mode::NoCompany if collection == "Company" => {
                respond(&mut stream, xml, &fixture("empty-company.xml"))
            }
            Mode::NoCompany => respond(&mut stream, xml, &fixture("no-company.xml")),
            _ if !known_company => respond(&mut stream, xml, &fixture("unknown-company.xml")),
            Mode::Normal => respond(&mut stream, xml, &fixture(&file)),
            Mode::Utf16Le => respond(&mut stream, "text/xml; charset=utf-16", &utf16(&fixture(&file), true)),
            Mode::Utf16Be => respond(&mut stream, "text/xml; charset=utf-16", &utf16(&fixture(&file), false)),
            Mode::LineError => respond(&mut stream, xml, &fixture("lineerror.xml")),
            Mode::Html => {
                respond(&mut stream, "text/html", b"<!DOCTYPE html><html><body>It works!</body></html>")
            }
            Mode::Slow(wait) => {
                self.sleep(wait);
                respond(&mut stream, xml, &fixture(&file))
            }
            Mode::Stall(wait) => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\n\r\n")?;
                stream.write_all(b"<ENVELOPE><HEADER><VERSION>1</VERSION><STATUS>1</STATUS></HEADER><BODY><DATA><COLLECTION>")?;
                stream.flush()?;
                self.sleep(wait);
                Ok(())
            }
            Mode::Large { n, gate } => self.large(&mut stream, n, gate),
            Mode::Raw(bytes) => respond(&mut stream, xml, &bytes),
        }
    }

    fn sleep(&self, wait: Duration) {
        let until = Instant::now() + wait;
        while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `n` ledgers, close-delimited, written as they are generated.
    fn large(&self, stream: &mut TcpStream, n: usize, gate: usize) -> std::io::Result<()> {
        stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nConnection: close\r\n\r\n",
        )?;
        let mut out = std::io::BufWriter::with_capacity(64 << 10, &mut *stream);
        out.write_all(b"<ENVELOPE><HEADER><VERSION>1</VERSION><STATUS>1</STATUS></HEADER><BODY><DESC></DESC><DATA><COLLECTION>\n")?;
        for i in 0..n {
            if i == gate {
                out.flush()?;
                let until = Instant::now() + Duration::from_secs(10);
                while !self.released.load(Ordering::SeqCst) && Instant::now() < until {
                    thread::sleep(Duration::from_millis(5));
                }
            }
            writeln!(
                out,
                "<LEDGER NAME=\"Party {i:06}\" RESERVEDNAME=\"\"><PARENT TYPE=\"String\">{}</PARENT>\
                 <CLOSINGBALANCE TYPE=\"Amount\">-{}.{:02}</CLOSINGBALANCE><MASTERID TYPE=\"Number\"> {i}</MASTERID>\
                 <NARRATION>{}</NARRATION></LEDGER>",
                if i % 2 == 0 { "Sundry Debtors" } else { "Sundry Creditors" },
                (i * 7919) % 100_000,
                i % 100,
                "padding ".repeat(8),
            )?;
        }
        out.write_all(b"</COLLECTION></DATA></BODY></ENVELOPE>\n")?;
        out.flush()?;
        drop(out);
        self.finished.store(true, Ordering::SeqCst);
        let _ = stream.shutdown(Shutdown::Write);
        Ok(())
    }
}

fn respond(stream: &mut TcpStream, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()
}
