//! The hash-chained audit log (spec §7.3): append, read, verify.
//!
//! Each record's `hash` is SHA-256 over the previous record's hash (32 bytes; zeros for the
//! first) followed by a canonical, length-prefixed encoding of the record's fields (seq, ts,
//! event, commandId, executionId, connection, rowCount, durationMs, outcome, queryHash,
//! queryText, detail). The newest seq and hash are kept in `meta` as the head, updated in the
//! same transaction, so cutting records off the end is detected too.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};
use sha2::{Digest as _, Sha256};

use crate::{AuditRecord, AuditReport, QueueError};

/// The previous hash of the first record.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const DOMAIN: &[u8] = b"mini-connector audit v1\0";

/// A record before it is chained.
#[derive(Debug, Default)]
pub(crate) struct Entry<'a> {
    pub ts_ms: i64,
    pub event: &'a str,
    pub command_id: Option<&'a str>,
    pub execution_id: Option<&'a str>,
    pub connection: Option<&'a str>,
    pub row_count: Option<i64>,
    pub duration_ms: Option<i64>,
    pub outcome: Option<&'a str>,
    pub query_hash: Option<&'a str>,
    pub query_text: Option<&'a str>,
    pub detail: Option<&'a str>,
}

/// One field of the canonical encoding, as stored (a text field may hold any bytes when the
/// file was edited; they are hashed as they are).
#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    Null,
    Int(i64),
    Text(&'a [u8]),
    Other(&'a [u8]),
}

fn encode(out: &mut Vec<u8>, field: Field<'_>) {
    match field {
        Field::Null => out.push(0),
        Field::Int(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
        Field::Text(bytes) | Field::Other(bytes) => {
            out.push(if matches!(field, Field::Text(_)) { 2 } else { 3 });
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

fn hash(prev_hash: &[u8], fields: &[Field<'_>]) -> String {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(DOMAIN);
    buf.extend_from_slice(prev_hash);
    for field in fields {
        encode(&mut buf, *field);
    }
    hex::encode(Sha256::digest(&buf))
}

fn text(v: Option<&str>) -> Field<'_> {
    v.map_or(Field::Null, |s| Field::Text(s.as_bytes()))
}

fn int(v: Option<i64>) -> Field<'static> {
    v.map_or(Field::Null, Field::Int)
}

/// The head kept in `meta`: (last seq, last hash).
pub(crate) fn head(conn: &Connection) -> Result<Option<(i64, String)>, QueueError> {
    // One cached statement for both (this runs for every record appended).
    let (seq, hash): (Option<String>, Option<String>) = conn
        .prepare_cached(
            "SELECT (SELECT value FROM meta WHERE key = 'audit_head_seq'), \
             (SELECT value FROM meta WHERE key = 'audit_head_hash')",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    match (seq, hash) {
        (None, None) => Ok(None),
        (Some(seq), Some(hash)) => {
            let seq = seq
                .parse::<i64>()
                .map_err(|_| QueueError::Corrupt("audit head seq is not a number".into()))?;
            Ok(Some((seq, hash)))
        }
        _ => Err(QueueError::Corrupt("audit head is half missing".into())),
    }
}

/// Appends one record after the head. Call inside the transaction of the change it records.
pub(crate) fn append(conn: &Connection, e: &Entry<'_>) -> Result<i64, QueueError> {
    let (seq, prev) = match head(conn)? {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_owned()),
    };
    let prev_bytes =
        hex::decode(&prev).map_err(|_| QueueError::Corrupt("audit head hash is not hex".into()))?;
    let h = hash(
        &prev_bytes,
        &[
            Field::Int(seq),
            Field::Int(e.ts_ms),
            Field::Text(e.event.as_bytes()),
            text(e.command_id),
            text(e.execution_id),
            text(e.connection),
            int(e.row_count),
            int(e.duration_ms),
            text(e.outcome),
            text(e.query_hash),
            text(e.query_text),
            text(e.detail),
        ],
    );
    conn.prepare_cached(
        "INSERT INTO audit (seq, ts, event, command_id, execution_id, connection, row_count, duration_ms, \
         outcome, query_hash, query_text, detail, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        seq,
        e.ts_ms,
        e.event,
        e.command_id,
        e.execution_id,
        e.connection,
        e.row_count,
        e.duration_ms,
        e.outcome,
        e.query_hash,
        e.query_text,
        e.detail,
        prev,
        h
    ])?;
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('audit_head_seq', ?1), ('audit_head_hash', ?2) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![seq.to_string(), h])?;
    Ok(seq)
}

const COLUMNS: &str = "seq, ts, event, command_id, execution_id, connection, row_count, duration_ms, \
                       outcome, query_hash, query_text, detail, prev_hash, hash";

/// Records with `ts >= since_ms` (all when None), oldest first. A stored value of the wrong
/// type or encoding is [`QueueError::Corrupt`].
pub(crate) fn records(conn: &Connection, since_ms: Option<i64>) -> Result<Vec<AuditRecord>, QueueError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM audit WHERE ts >= ?1 ORDER BY seq"))?;
    let mut rows = stmt.query([since_ms.unwrap_or(i64::MIN)])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let ts_ms: i64 = r.get(1)?;
        out.push(AuditRecord {
            seq: r.get(0)?,
            ts_ms,
            time: rfc3339_ms(ts_ms),
            event: r.get(2)?,
            command_id: r.get(3)?,
            execution_id: r.get(4)?,
            connection: r.get(5)?,
            row_count: r.get(6)?,
            duration_ms: r.get(7)?,
            outcome: r.get(8)?,
            query_hash: r.get(9)?,
            query_text: r.get(10)?,
            detail: r.get(11)?,
            prev_hash: r.get(12)?,
            hash: r.get(13)?,
        });
    }
    Ok(out)
}

fn field<'a>(v: ValueRef<'a>) -> Field<'a> {
    match v {
        ValueRef::Null => Field::Null,
        ValueRef::Integer(i) => Field::Int(i),
        ValueRef::Text(t) => Field::Text(t),
        ValueRef::Blob(b) => Field::Other(b),
        // A real where the record had none: hash its bits so it never matches an integer.
        ValueRef::Real(_) => Field::Other(b"real"),
    }
}

/// Walks the chain from seq 1 and stops at the first record that is missing, edited or out
/// of place, or at a head that does not match the last record. Values of the wrong type are
/// a broken chain (reported), not an error.
pub(crate) fn verify(conn: &Connection) -> Result<AuditReport, QueueError> {
    let head = match head(conn) {
        Ok(head) => Ok(head),
        Err(QueueError::Corrupt(why)) => Err(why),
        Err(e) => return Err(e),
    };
    let (head_seq, head_hash) = match &head {
        Ok(Some((s, h))) => (Some(*s), Some(h.clone())),
        _ => (None, None),
    };
    let mut report =
        AuditReport { records: 0, ok: true, first_bad_seq: None, why: None, head_seq, head_hash };
    let fail = |report: &mut AuditReport, seq: Option<i64>, why: String| {
        report.ok = false;
        report.first_bad_seq = seq;
        report.why = Some(why);
    };
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
    let mut rows = stmt.query([])?;
    let mut expected_seq = 1i64;
    let mut prev = hex::decode(GENESIS).unwrap_or_default();
    let mut prev_hex = GENESIS.to_owned();
    while let Some(r) = rows.next()? {
        report.records += 1;
        let seq = match r.get_ref(0)? {
            ValueRef::Integer(seq) => seq,
            _ => {
                fail(&mut report, Some(expected_seq), format!("record {expected_seq} has no integer seq"));
                return Ok(report);
            }
        };
        if seq != expected_seq {
            let why = if seq > expected_seq {
                format!("record {expected_seq} is missing (the next one is {seq})")
            } else {
                format!("record {seq} is out of order")
            };
            fail(&mut report, Some(expected_seq), why);
            return Ok(report);
        }
        let stored_prev = match r.get_ref(12)? {
            ValueRef::Text(t) => t,
            _ => b"",
        };
        if stored_prev != prev_hex.as_bytes() {
            fail(
                &mut report,
                Some(seq),
                format!("record {seq} does not follow record {} (previous hash differs)", seq - 1),
            );
            return Ok(report);
        }
        let mut fields = Vec::with_capacity(12);
        for i in 0..12 {
            fields.push(field(r.get_ref(i)?));
        }
        let computed = hash(&prev, &fields);
        let stored = match r.get_ref(13)? {
            ValueRef::Text(t) => t,
            _ => b"",
        };
        if stored != computed.as_bytes() {
            fail(
                &mut report,
                Some(seq),
                format!("record {seq} was changed (its hash does not match its fields)"),
            );
            return Ok(report);
        }
        prev = hex::decode(&computed).unwrap_or_default();
        prev_hex = computed;
        expected_seq = seq + 1;
    }
    let last = expected_seq - 1;
    match head {
        Err(why) => fail(&mut report, None, format!("the audit head is damaged: {why}")),
        Ok(None) if last > 0 => fail(&mut report, None, "the audit head is missing".into()),
        Ok(None) => {}
        Ok(Some((head_seq, head_hash))) => {
            if head_seq > last {
                fail(
                    &mut report,
                    Some(last + 1),
                    format!("records {} to {head_seq} were cut off the end", last + 1),
                );
            } else if head_seq < last {
                fail(
                    &mut report,
                    Some(head_seq + 1),
                    format!("record {} was added after the head", head_seq + 1),
                );
            } else if head_hash != prev_hex {
                fail(&mut report, Some(last), format!("record {last} does not match the head"));
            }
        }
    }
    Ok(report)
}

/// `ts_ms` as RFC 3339 in UTC with milliseconds (`2026-12-02T00:09:18.123Z`).
pub fn rfc3339_ms(ts_ms: i64) -> String {
    let secs = ts_ms.div_euclid(1000);
    let ms = ts_ms.rem_euclid(1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ms;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
