//! The Tally driver against a **fake TallyPrime XML gateway**: no Tally can run here (TallyPrime
//! is a Windows desktop program with no emulator), so these tests start a small HTTP/1.1 server
//! on 127.0.0.1 that answers like TallyPrime's gateway from fixture files shaped like real
//! exports (`tests/fixtures/tally/`, a sample company with ledgers, groups, stock items and
//! vouchers, Unicode names included). The fake parses every posted envelope, records it, and
//! counts any request that is not an Export. It applies **no filter**: it answers every object
//! of the collection, so what a query returns is the driver's own exact filtering. Modes
//! give UTF-16 answers, Tally's error envelopes, no company loaded, HTML, slow and stalled
//! answers, generated large answers and hostile bodies. Queries go through the read-only gate
//! first, as in the agent.

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use drivers::{
    CancelToken, Cell, ColumnMeta, ConnectionSpec, Database, DbKind, DriverError, QueryOptions, RowSink,
    SinkError, TableKind, WireType,
};

use crate::common::{Owned, QueryText, Recorder};
use crate::tally_fake::{COMPANY, Fake, Mode, utf16};

/// Runs `sql` through the gate and the driver, with a timeout as a watchdog: no test hangs.
fn run(db: &Database, sql: &str) -> Result<Recorder, DriverError> {
    let mut sink = Recorder::default();
    let opts = QueryOptions { timeout: Some(Duration::from_secs(30)), ..QueryOptions::default() };
    db.query_text(sql, &[], &opts, &mut sink)?;
    Ok(sink)
}

fn text(s: &str) -> Owned {
    Owned::Text(s.into())
}

fn dec(s: &str) -> Owned {
    Owned::Decimal(s.into())
}

fn column(columns: &[ColumnMeta], name: &str) -> (WireType, String) {
    let c = columns.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("column {name}"));
    (c.wire_type, c.db_type.clone())
}

fn first_column(sink: &Recorder) -> Vec<Owned> {
    sink.rows.iter().map(|r| r[0].clone()).collect()
}

#[test]
fn ledgers_come_back_typed_with_unicode_names() {
    let fake = Fake::start(Mode::Normal);
    let db = fake.db();
    let sink = run(&db, "SELECT * FROM Ledger").unwrap();
    let columns = sink.columns.as_ref().unwrap();
    assert_eq!(columns.len(), 11);
    assert_eq!(column(columns, "Name"), (WireType::Text, "String".into()));
    assert_eq!(column(columns, "ClosingBalance"), (WireType::Decimal, "Amount".into()));
    assert_eq!(column(columns, "IsBillWiseOn"), (WireType::Boolean, "Logical".into()));
    assert_eq!(column(columns, "MasterID"), (WireType::Integer, "Number".into()));
    assert_eq!(sink.rows.len(), 8, "the CMPINFO counts are not ledgers");
    let names = first_column(&sink);
    assert_eq!(
        names,
        [
            "Cash",
            "Müller GmbH",
            "श्री गणेश ट्रेडर्स",
            "株式会社 東京商事",
            "Acme Ltd",
            "HDFC Bank",
            "Sales Account",
            "O'Brien & Sons <UK>"
        ]
        .map(text)
    );
    // Name, Parent, OpeningBalance, ClosingBalance, Email, LedgerPhone, PartyGSTIN, IsBillWiseOn,
    // GUID, MasterID, AlterID.
    let muller = &sink.rows[1];
    assert_eq!(muller[1], text("Sundry Debtors"));
    assert_eq!(muller[2], dec("0.00"));
    assert_eq!(muller[3], dec("-1250.00"));
    assert_eq!(muller[4], text("einkauf@mueller.example"));
    assert_eq!(muller[6], Owned::Null);
    assert_eq!(muller[7], Owned::Bool(true));
    assert_eq!(muller[9], Owned::Int(2));
    let ganesh = &sink.rows[2];
    assert_eq!(
        (ganesh[2].clone(), ganesh[3].clone()),
        (dec("-1000.00"), dec("-2500.00")),
        "`Dr` is negative"
    );
    assert_eq!(ganesh[6], text("27AAAPL1234C1ZV"));
    assert_eq!(sink.rows[5][3], dec("120000.00"), "`Cr` is positive, Indian grouping removed");
    let sales = &sink.rows[6];
    assert_eq!((sales[3].clone(), sales[7].clone()), (Owned::Null, Owned::Null), "empty is NULL");
    assert_eq!(sink.rows[0][4], Owned::Null);
    assert!(sink.json[1].contains("\"Müller GmbH\""), "{}", sink.json[1]);
}

#[test]
fn groups_stock_items_vouchers_and_companies() {
    let fake = Fake::start(Mode::Normal);
    let db = fake.db();
    let groups = run(&db, "SELECT Name, Parent, IsRevenue FROM Group").unwrap();
    assert_eq!(groups.rows[0], [text("Current Assets"), text("Primary"), Owned::Bool(false)], "&#4; dropped");
    assert_eq!(groups.rows[2][2], Owned::Bool(true));

    let items =
        run(&db, "SELECT Name, OpeningBalance, ClosingBalance, ClosingRate, OpeningValue FROM StockItem")
            .unwrap();
    assert_eq!(items.rows[0], [text("Widget A"), dec("100"), dec("80"), dec("125.00"), dec("-12500.00")]);
    assert_eq!(
        items.rows[1],
        [text("Schraube M6"), dec("12.500"), dec("2.250"), dec("150.00"), dec("-1875.00")]
    );
    assert_eq!(items.rows[2], [text("चाय पत्ती"), Owned::Null, Owned::Null, Owned::Null, Owned::Null]);

    let vouchers =
        run(&db, "SELECT Date, VoucherNumber, PartyLedgerName, Amount, Narration, IsCancelled FROM Voucher")
            .unwrap();
    let columns = vouchers.columns.as_ref().unwrap();
    assert_eq!(column(columns, "Date"), (WireType::Date, "Date".into()));
    assert_eq!(
        vouchers.rows[0],
        [
            text("2024-04-01"),
            text("1"),
            text("Müller GmbH"),
            dec("-1250.00"),
            text("Invoice <1> for Müller & Co"),
            Owned::Bool(false)
        ],
        "the voucher's own AMOUNT, not the nested ledger entries'"
    );
    assert_eq!(vouchers.rows[1][0], text("2024-04-15"), "1-Apr-24 form");
    assert_eq!(vouchers.rows[1][3], dec("2500.00"));
    assert_eq!(vouchers.rows[2][0], text("2024-02-29"));
    assert_eq!(vouchers.rows[2][4], Owned::Null);

    let companies = run(&db, "SELECT Name, StartingFrom, StateName FROM Company").unwrap();
    assert_eq!(companies.rows, [[text(COMPANY), text("2024-04-01"), text("Maharashtra")]]);
}

#[test]
fn the_filter_is_applied_exactly_and_case_sensitively() {
    let fake = Fake::start(Mode::Normal);
    let db = fake.db();
    let debtors = run(&db, "SELECT Name FROM Ledger WHERE Parent = 'Sundry Debtors'").unwrap();
    assert_eq!(
        first_column(&debtors),
        ["Müller GmbH", "श्री गणेश ट्रेडर्स", "O'Brien & Sons <UK>"].map(text),
        "`sundry debtors` (Acme Ltd) differs in case: Tally's formula would keep it, SQL does not"
    );
    let sent = fake.requests().pop().unwrap();
    assert!(sent.contains("<FETCH>Name, Parent</FETCH>"), "{sent}");
    assert!(sent.contains("<FILTER>MiniConnectorFilter</FILTER>"), "{sent}");
    assert!(sent.contains("$Parent = &quot;Sundry Debtors&quot;</SYSTEM>"), "{sent}");
    assert!(sent.contains("<SVCURRENTCOMPANY>Sample Traders &amp; Co</SVCURRENTCOMPANY>"), "{sent}");

    let cases: &[(&str, &[&str])] = &[
        (
            "SELECT Name FROM Ledger WHERE ClosingBalance < 0",
            &["Cash", "Müller GmbH", "श्री गणेश ट्रेडर्स", "Acme Ltd", "O'Brien & Sons <UK>"],
        ),
        ("SELECT Name FROM Ledger WHERE ClosingBalance >= 3400.5", &["株式会社 東京商事", "HDFC Bank"]),
        ("SELECT Name FROM Ledger WHERE Name IN ('Cash', 'cash', 'HDFC Bank')", &["Cash", "HDFC Bank"]),
        (
            "SELECT Name FROM Ledger WHERE Email IS NULL AND IsBillWiseOn = false",
            &["Cash", "Acme Ltd", "HDFC Bank"],
        ),
        ("SELECT Name FROM Ledger WHERE NOT (ClosingBalance < 0)", &["株式会社 東京商事", "HDFC Bank"]),
        ("SELECT Name FROM Ledger WHERE ClosingBalance IS NULL OR MasterID = 1", &["Cash", "Sales Account"]),
        ("SELECT Name FROM Ledger WHERE Name = '株式会社 東京商事'", &["株式会社 東京商事"]),
        (
            // Code point order: `Sales Accounts`, `Sundry Creditors` and `sundry debtors` follow `S`.
            "SELECT Name FROM Ledger WHERE Parent <> 'Sundry Debtors' AND Parent > 'S'",
            &["株式会社 東京商事", "Acme Ltd", "Sales Account"],
        ),
        (
            "SELECT Name FROM Ledger WHERE Parent > 'Sundry Creditors'",
            &["Müller GmbH", "श्री गणेश ट्रेडर्स", "Acme Ltd", "O'Brien & Sons <UK>"],
        ),
    ];
    for (sql, want) in cases {
        let got = run(&db, sql).unwrap();
        let want: Vec<Owned> = want.iter().map(|s| text(s)).collect();
        assert_eq!(first_column(&got), want, "{sql}");
    }
}

#[test]
fn order_offset_and_limit() {
    let fake = Fake::start(Mode::Normal);
    let db = fake.db();
    let sorted = run(&db, "SELECT Name, ClosingBalance FROM Ledger ORDER BY ClosingBalance DESC").unwrap();
    assert_eq!(
        first_column(&sorted),
        [
            "HDFC Bank",
            "株式会社 東京商事",
            "O'Brien & Sons <UK>",
            "Acme Ltd",
            "Müller GmbH",
            "श्री गणेश ट्रेडर्स",
            "Cash",
            "Sales Account"
        ]
        .map(text),
        "exact decimal order, NULL last when descending"
    );
    let page = run(&db, "SELECT Name FROM Ledger ORDER BY ClosingBalance DESC LIMIT 2 OFFSET 1").unwrap();
    assert_eq!(first_column(&page), ["株式会社 東京商事", "O'Brien & Sons <UK>"].map(text));
    let by_name =
        run(&db, "SELECT Name FROM Ledger WHERE Parent = 'Sundry Debtors' ORDER BY Name LIMIT 2").unwrap();
    assert_eq!(first_column(&by_name), ["Müller GmbH", "O'Brien & Sons <UK>"].map(text), "code point order");
    let two_keys =
        run(&db, "SELECT Parent, Name FROM Ledger ORDER BY IsBillWiseOn, MasterID DESC LIMIT 3").unwrap();
    assert_eq!(sorted.columns.as_ref().unwrap().len(), 2);
    assert_eq!(
        two_keys.rows.iter().map(|r| r[1].clone()).collect::<Vec<_>>(),
        ["Sales Account", "HDFC Bank", "Acme Ltd"].map(text),
        "NULL first ascending, then No before Yes, MasterID descending"
    );
    let unsorted = run(&db, "SELECT Name FROM Ledger LIMIT 2 OFFSET 3").unwrap();
    assert_eq!(first_column(&unsorted), ["株式会社 東京商事", "Acme Ltd"].map(text), "Tally's order");
    let none = run(&db, "SELECT Name FROM Ledger LIMIT 0").unwrap();
    assert!(none.rows.is_empty());
    assert_eq!(none.columns.as_ref().unwrap().len(), 1, "columns are announced for an empty result too");
}

#[test]
fn utf16_answers_in_both_byte_orders() {
    let fake = Fake::start(Mode::Utf16Le);
    let db = fake.db();
    let le = run(&db, "SELECT Name, ClosingBalance FROM Ledger WHERE Parent = 'Sundry Debtors'").unwrap();
    assert_eq!(le.rows[1], [text("श्री गणेश ट्रेडर्स"), dec("-2500.00")]);
    fake.set_mode(Mode::Utf16Be);
    let be = run(&db, "SELECT Name, ClosingBalance FROM Ledger WHERE Parent = 'Sundry Debtors'").unwrap();
    assert_eq!(be.rows, le.rows);
    fake.set_mode(Mode::Normal);
    let utf8 = run(&db, "SELECT Name, ClosingBalance FROM Ledger WHERE Parent = 'Sundry Debtors'").unwrap();
    assert_eq!(utf8.rows, le.rows);
}

#[test]
fn tally_errors_are_coded() {
    let fake = Fake::start(Mode::LineError);
    let db = fake.db();
    let err = run(&db, "SELECT Name FROM Ledger").unwrap_err();
    assert!(
        matches!(&err, DriverError::Query(m) if m == "Tally: Could not evaluate the formula MiniConnectorFilter"),
        "{err}"
    );

    fake.set_mode(Mode::NoCompany);
    let err = run(&db, "SELECT Name FROM Ledger").unwrap_err();
    assert!(
        matches!(&err, DriverError::Unavailable(m) if m.contains("Tally has no company named \"Sample Traders & Co\" loaded")),
        "{err}"
    );
    assert!(err.is_retryable());
    let err = db.ping().unwrap_err();
    assert!(
        matches!(&err, DriverError::Unavailable(m) if m.starts_with("Tally has no company loaded")),
        "{err}"
    );
    let anonymous = Database::open(&fake.spec(None)).unwrap();
    let err = run(&anonymous, "SELECT Name FROM Ledger").unwrap_err();
    assert!(
        matches!(&err, DriverError::Unavailable(m) if m.contains("Tally has no company loaded")),
        "{err}"
    );

    fake.set_mode(Mode::Normal);
    db.ping().unwrap();
    anonymous.ping().unwrap();
    let other = Database::open(&fake.spec(Some("R&D <India> \"Ltd\""))).unwrap();
    let err = run(&other, "SELECT Name FROM Ledger").unwrap_err();
    assert!(
        matches!(&err, DriverError::Unavailable(m) if m.contains("no company named \"R&D <India> \"Ltd\"\"")),
        "{err}"
    );
    let sent = fake.requests().pop().unwrap();
    assert!(
        sent.contains("<SVCURRENTCOMPANY>R&amp;D &lt;India&gt; &quot;Ltd&quot;</SVCURRENTCOMPANY>"),
        "{sent}"
    );
    let err = other.ping().unwrap_err();
    assert!(
        matches!(&err, DriverError::Unavailable(m) if m.contains("(loaded: Sample Traders & Co)")),
        "{err}"
    );

    fake.set_mode(Mode::Html);
    let err = run(&db, "SELECT Name FROM Ledger").unwrap_err();
    assert!(
        matches!(&err, DriverError::Unavailable(m) if m.contains("is not TallyPrime's XML gateway") && m.contains("<HTML>")),
        "{err}"
    );
    fake.set_mode(Mode::Raw(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()));
    assert!(matches!(run(&db, "SELECT Name FROM Ledger"), Err(DriverError::Unavailable(_))));
}

#[test]
fn a_closed_port_is_unavailable() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let spec = ConnectionSpec {
        name: "tally".into(),
        kind: DbKind::Tally,
        host: Some("127.0.0.1".into()),
        port: Some(port),
        ..ConnectionSpec::default()
    };
    let db = Database::open(&spec).expect("opening contacts nothing");
    let err = run(&db, "SELECT Name FROM Ledger").unwrap_err();
    let want = format!("cannot reach Tally's XML gateway at 127.0.0.1:{port} (is TallyPrime running");
    assert!(
        matches!(&err, DriverError::Unavailable(m) if m.starts_with(&want) && m.contains("F1: Help > Settings > Connectivity")),
        "{err}"
    );
    assert!(matches!(db.ping(), Err(DriverError::Unavailable(_))));
    assert!(matches!(db.discover(), Err(DriverError::Unavailable(_))));
}

#[test]
fn timeouts_end_slow_and_stalled_answers_promptly() {
    let fake = Fake::start(Mode::Slow(Duration::from_secs(30)));
    let db = fake.db();
    for mode in [Mode::Slow(Duration::from_secs(30)), Mode::Stall(Duration::from_secs(30))] {
        fake.set_mode(mode.clone());
        let opts = QueryOptions { timeout: Some(Duration::from_millis(300)), ..QueryOptions::default() };
        let start = Instant::now();
        let err = db.query_text("SELECT Name FROM Ledger", &[], &opts, &mut Recorder::default()).unwrap_err();
        assert!(matches!(err, DriverError::Timeout), "{mode:?}: {err}");
        assert!(start.elapsed() < Duration::from_secs(3), "{mode:?}: {:?}", start.elapsed());
    }
}

#[test]
fn cancel_ends_slow_and_stalled_answers_promptly() {
    let fake = Fake::start(Mode::Slow(Duration::from_secs(30)));
    let db = fake.db();
    for mode in [Mode::Slow(Duration::from_secs(30)), Mode::Stall(Duration::from_secs(30))] {
        fake.set_mode(mode.clone());
        let cancel = CancelToken::new();
        let opts = QueryOptions { timeout: Some(Duration::from_secs(60)), cancel: cancel.clone() };
        let canceller = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            cancel.cancel();
        });
        let start = Instant::now();
        let err = db.query_text("SELECT Name FROM Ledger", &[], &opts, &mut Recorder::default()).unwrap_err();
        canceller.join().unwrap();
        assert!(matches!(err, DriverError::Cancelled), "{mode:?}: {err}");
        assert!(start.elapsed() < Duration::from_secs(3), "{mode:?}: {:?}", start.elapsed());
    }
}

/// Counts rows; at the first row, notes whether the fake had already written everything.
struct Streaming<'a> {
    fake: &'a Fake,
    rows: u64,
    finished_at_first_row: Option<bool>,
}

impl RowSink for Streaming<'_> {
    fn columns(&mut self, _: &[ColumnMeta]) -> Result<(), SinkError> {
        Ok(())
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), SinkError> {
        if self.rows == 0 {
            self.finished_at_first_row = Some(self.fake.finished());
            self.fake.release();
        }
        assert!(matches!(cells[0], Cell::Text(_)));
        self.rows += 1;
        Ok(())
    }
}

#[test]
fn large_answers_stream_row_by_row() {
    let fake = Fake::start(Mode::Large { n: 60_000, gate: 100 });
    let db = fake.db();
    let mut sink = Streaming { fake: &fake, rows: 0, finished_at_first_row: None };
    let start = Instant::now();
    let stats = db
        .query_text(
            "SELECT Name, ClosingBalance FROM Ledger WHERE Parent = 'Sundry Debtors'",
            &[],
            &QueryOptions { timeout: Some(Duration::from_secs(30)), ..QueryOptions::default() },
            &mut sink,
        )
        .unwrap();
    assert_eq!(stats.rows, 30_000);
    assert_eq!(
        sink.finished_at_first_row,
        Some(false),
        "the first row arrived while the answer was still being written"
    );
    assert!(start.elapsed() < Duration::from_secs(9), "no wait for the gate: {:?}", start.elapsed());

    // ORDER BY with a LIMIT holds only the first rows; reading stops at a LIMIT without one.
    fake.set_mode(Mode::Large { n: 60_000, gate: usize::MAX });
    let top = run(&db, "SELECT Name, ClosingBalance FROM Ledger ORDER BY ClosingBalance LIMIT 3").unwrap();
    assert_eq!(top.rows.len(), 3);
    assert_eq!(top.rows[0], [text("Party 046963"), dec("-99997.63")]);
    assert_eq!(top.rows[1], [text("Party 029284"), dec("-99996.84")]);
    let first = run(&db, "SELECT Name FROM Ledger LIMIT 5").unwrap();
    assert_eq!(first_column(&first)[4], text("Party 000004"));
}

#[test]
fn order_by_over_too_many_rows_is_refused() {
    let fake = Fake::start(Mode::Large { n: 100_001, gate: usize::MAX });
    let db = fake.db();
    let err = run(&db, "SELECT Name FROM Ledger ORDER BY Name").unwrap_err();
    assert!(matches!(&err, DriverError::Query(m) if m.contains("more than 100000 match")), "{err}");
}

#[test]
fn discovery_lists_the_five_collections_with_types_and_counts() {
    let fake = Fake::start(Mode::Normal);
    let db = fake.db();
    let mut seen = Vec::new();
    let schema = db.discover_with_progress(&mut |p| seen.push(p.done)).unwrap();
    assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    assert_eq!(schema.db_type, DbKind::Tally);
    let names: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Company", "Group", "Ledger", "StockItem", "Voucher"]);
    let counts: Vec<Option<u64>> = schema.tables.iter().map(|t| t.row_count_estimate).collect();
    assert_eq!(counts, [Some(1), Some(4), Some(8), Some(3), Some(3)]);
    let ledger = &schema.tables[2];
    assert_eq!(ledger.kind, TableKind::Table);
    assert_eq!(ledger.primary_key, ["GUID"]);
    let balance = ledger.columns.iter().find(|c| c.name == "ClosingBalance").unwrap();
    assert_eq!((balance.data_type.as_str(), balance.wire_type), ("Amount", WireType::Decimal));
    let voucher = &schema.tables[4];
    let date = voucher.columns.iter().find(|c| c.name == "Date").unwrap();
    assert_eq!((date.data_type.as_str(), date.wire_type), ("Date", WireType::Date));
    let item = &schema.tables[3];
    let rate = item.columns.iter().find(|c| c.name == "ClosingRate").unwrap();
    assert_eq!(rate.data_type, "Rate");
    // Every discovery request was a small export of one field.
    for sent in fake.requests() {
        assert!(sent.contains("<TALLYREQUEST>Export</TALLYREQUEST>") && !sent.contains("<FILTER>"), "{sent}");
    }
    assert!(!db.write_privileges().unwrap().can_write);
    assert!(db.write_privileges().unwrap().findings[0].contains("only ever sends Export requests"));
    assert_eq!(db.pool_status().connections, 0);
    assert_eq!(db.gate_target(), gate::Target::TALLY);
}

#[test]
fn hostile_answers_are_errors_not_panics() {
    let fake = Fake::start(Mode::Normal);
    let db = fake.db();
    let deep = format!("<ENVELOPE><BODY><DATA><COLLECTION>{}", "<LEDGER><X>".repeat(500));
    let huge = format!(
        "<ENVELOPE><BODY><DATA><COLLECTION><LEDGER NAME=\"{}\"></LEDGER></COLLECTION></DATA></BODY></ENVELOPE>",
        "A".repeat(6 << 20)
    );
    let mut bad16 = utf16(b"<ENVELOPE><BODY><DATA><COLLECTION><LEDGER NAME=\"x", true);
    bad16.extend([0x3D, 0xD8, 0x41, 0x00]); // a high surrogate followed by `A`
    let mut bad8 = b"<ENVELOPE><BODY><DATA><COLLECTION><LEDGER><NAME>".to_vec();
    bad8.extend([0xC3, 0x28]);
    bad8.extend(b"</NAME></LEDGER></COLLECTION></DATA></BODY></ENVELOPE>");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("deep", deep.into_bytes()),
        ("huge", huge.into_bytes()),
        ("bad utf-16", bad16),
        ("bad utf-8", bad8),
        ("truncated", b"<ENVELOPE><BODY><DATA><COLLECTION><LEDGER NAME=\"Cash\">".to_vec()),
        ("mismatched", b"<ENVELOPE><BODY></DATA></ENVELOPE>".to_vec()),
        ("entity bomb", b"<!DOCTYPE x [<!ENTITY a \"aaaa\">]><ENVELOPE><BODY><DATA><COLLECTION><LEDGER><NAME>&a;&a;</NAME></LEDGER></COLLECTION></DATA></BODY></ENVELOPE>".to_vec()),
        ("bad number", b"<ENVELOPE><BODY><DATA><COLLECTION><LEDGER><CLOSINGBALANCE>lots</CLOSINGBALANCE></LEDGER></COLLECTION></DATA></BODY></ENVELOPE>".to_vec()),
        ("zeros", vec![0; 4096]),
    ];
    for (what, body) in cases {
        fake.set_mode(Mode::Raw(body));
        let result = run(&db, "SELECT Name, ClosingBalance FROM Ledger");
        match (what, result) {
            ("entity bomb", Ok(sink)) => {
                assert_eq!(sink.rows, [[Owned::Null, Owned::Null]], "undefined entities are dropped")
            }
            ("bad number", Err(DriverError::Query(m))) => {
                assert!(m.contains("`lots` is not a Tally Amount value"), "{m}")
            }
            ("zeros", Err(e)) => {
                assert!(matches!(e, DriverError::Query(_) | DriverError::Unavailable(_)), "{e}")
            }
            (_, Err(DriverError::Query(m))) => {
                assert!(m.starts_with("Tally: unreadable answer"), "{what}: {m}")
            }
            (what, other) => panic!("{what}: {:?}", other.map(|s| s.rows.len())),
        }
    }
}

#[test]
fn parameters_and_settings_are_checked() {
    let fake = Fake::start(Mode::Normal);
    let db = fake.db();
    let checked = gate::check_with(
        "SELECT Name FROM Ledger",
        0,
        db.gate_target(),
        &gate::Policy::default(),
        &gate::Limits::default(),
    )
    .unwrap();
    let err = db
        .query(&checked, &[serde_json::json!(1)], &QueryOptions::default(), &mut Recorder::default())
        .unwrap_err();
    assert!(matches!(err, DriverError::Bind(_)), "{err}");
    for host in ["bad host", "a/b", "user@host"] {
        let spec = ConnectionSpec { host: Some(host.into()), ..fake.spec(None) };
        assert!(matches!(Database::open(&spec), Err(DriverError::Open(_))), "{host}");
    }
    let spec = ConnectionSpec { company: Some("A\u{7}B".into()), ..fake.spec(None) };
    assert!(matches!(Database::open(&spec), Err(DriverError::Open(_))));
    // A query checked for another engine is refused before anything is sent.
    let sqlite = gate::check("SELECT 1", gate::Dialect::Sqlite, &gate::Policy::default()).unwrap();
    let before = fake.requests().len();
    assert!(matches!(
        db.query(&sqlite, &[], &QueryOptions::default(), &mut Recorder::default()),
        Err(DriverError::WriteRejected(_))
    ));
    assert_eq!(fake.requests().len(), before);
}

/// Cancels its query from inside the row callback once `at` rows arrived.
struct CancelAt {
    token: CancelToken,
    at: u64,
    rows: u64,
}

impl RowSink for CancelAt {
    fn columns(&mut self, _: &[ColumnMeta]) -> Result<(), SinkError> {
        Ok(())
    }

    fn row(&mut self, _: &[Cell<'_>]) -> Result<(), SinkError> {
        self.rows += 1;
        if self.rows == self.at {
            self.token.cancel();
        }
        Ok(())
    }
}

#[test]
fn cancel_stops_a_streaming_answer_between_rows() {
    let fake = Fake::start(Mode::Large { n: 60_000, gate: usize::MAX });
    let db = fake.db();
    let token = CancelToken::new();
    let opts = QueryOptions { timeout: Some(Duration::from_secs(30)), cancel: token.clone() };
    let mut sink = CancelAt { token, at: 1_000, rows: 0 };
    let err = db.query_text("SELECT Name FROM Ledger", &[], &opts, &mut sink).unwrap_err();
    assert!(matches!(err, DriverError::Cancelled), "{err}");
    assert_eq!(sink.rows, 1_000, "no row after the cancel");
}
