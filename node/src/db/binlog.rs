//! What one captured MariaDB transaction looks like in a database change record, and how the
//! binlog's events become one.
//!
//! A record's `events` are a [`Transaction`] through the versioned codec: the transaction's
//! GTID, the GTID before it in its domain on the source (the *predecessor*), the source's format
//! description event, and its body as the server logged it: groups of row events (table maps and
//! rows, raw, with their checksums) and statements (DDL, account changes). Row events are
//! replayed with the server's own `BINLOG` statement, so what `RAND()`, `NOW()` or `UUID()`
//! returned on the active is what lands on the standby.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde::Serialize;
use tandem_raft_store::codec;
use tandem_raft_store::records::DB_CHANGE_MAX_BYTES;

/// MariaDB binlog event type codes the capture reads.
pub mod event_type {
    pub const QUERY: u8 = 2;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const ROWS_V1: [u8; 3] = [23, 24, 25];
    pub const ROWS_V2: [u8; 3] = [30, 31, 32];
    pub const GTID: u8 = 162;
    /// Compressed query and rows events (`log_bin_compress`): not supported.
    pub const COMPRESSED: std::ops::RangeInclusive<u8> = 165..=171;
}

/// GTID event flags (MariaDB `Gtid_log_event::flags2`).
const FL_STANDALONE: u8 = 1;
const FL_PREPARED_XA: u8 = 64;
const FL_COMPLETED_XA: u8 = 128;

/// A MariaDB GTID: `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl FromStr for Gtid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a GTID (domain-server-seq)");
        let mut it = s.trim().split('-');
        let (Some(d), Some(sv), Some(n), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        Ok(Gtid {
            domain: d.parse().map_err(|_| bad())?,
            server: sv.parse().map_err(|_| bad())?,
            seq: n.parse().map_err(|_| bad())?,
        })
    }
}

/// A server's `@@gtid_binlog_pos`: the last GTID of each domain.
pub fn parse_position(pos: &str) -> Result<BTreeMap<u32, Gtid>, String> {
    let mut out = BTreeMap::new();
    for part in pos.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let g: Gtid = part.parse()?;
        out.insert(g.domain, g);
    }
    Ok(out)
}

/// One part of a transaction's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// Table map and rows events, raw (header, body, checksum), in binlog order.
    Rows(Vec<Event>),
    /// A statement the server logged as text (DDL, account changes), with its default schema
    /// and the time the source ran it.
    Query {
        schema: String,
        sql: String,
        timestamp: u32,
    },
}

/// One raw binlog event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event(#[serde(with = "tandem_raft_store::codec::bytes")] pub Vec<u8>);

/// One captured transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub gtid: Gtid,
    /// The GTID before this one in its domain on the source (`None`: the first of the domain).
    pub prev: Option<Gtid>,
    /// The source's format description event, raw: row events are read against it.
    #[serde(with = "tandem_raft_store::codec::bytes")]
    pub fde: Vec<u8>,
    pub parts: Vec<Part>,
}

impl Transaction {
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        codec::encode(self).map_err(|e| format!("cannot encode transaction {}: {e}", self.gtid))
    }

    pub fn decode(bytes: &[u8]) -> Result<Transaction, String> {
        codec::decode(bytes).map_err(|e| format!("database change record does not hold a transaction: {e}"))
    }

    /// How many statements the body holds: each query, and each rows event that ends a
    /// statement (`STMT_END_F` in its flags).
    pub fn statements(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Rows(evs) => evs.iter().filter(|e| ends_statement(&e.0)).count().max(1),
                Part::Query { .. } => 1,
            })
            .sum()
    }

    /// Bytes of the body (for the size limit and the lag in bytes).
    pub fn body_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Rows(evs) => evs.iter().map(|e| e.0.len()).sum(),
                Part::Query { sql, .. } => sql.len(),
            })
            .sum()
    }
}

/// Whether a raw event is a rows event with `STMT_END_F`: after the 19-byte header come the
/// table id (6 bytes) and the flags (2 bytes, little endian).
fn ends_statement(raw: &[u8]) -> bool {
    const HEADER: usize = 19;
    const STMT_END_F: u16 = 1;
    let kind = raw.get(4).copied().unwrap_or(0);
    let rows = event_type::ROWS_V1.contains(&kind) || event_type::ROWS_V2.contains(&kind);
    rows && raw.len() >= HEADER + 8 && u16::from_le_bytes([raw[HEADER + 6], raw[HEADER + 7]]) & STMT_END_F != 0
}

/// Why the events could not be cut into transactions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CutError {
    #[error("binlog event of type {0} is not supported (compressed events: turn log_bin_compress off)")]
    Compressed(u8),
    #[error("XA transaction {0} is not supported: Tandem captures ordinary transactions only")]
    Xa(Gtid),
    #[error("transaction {gtid} is {bytes} bytes, more than DB_CHANGE_MAX_BYTES ({max})", max = DB_CHANGE_MAX_BYTES)]
    TooLarge { gtid: Gtid, bytes: usize },
    #[error("malformed binlog event of type {kind}: {why}")]
    Malformed { kind: u8, why: String },
    #[error("row events outside a transaction (no GTID event before them)")]
    Orphan,
}

/// Cuts the binlog's events into transactions.
#[derive(Debug, Default)]
pub struct Cutter {
    fde: Vec<u8>,
    open: Option<Open>,
    /// The last GTID seen per domain (the next transaction's predecessor).
    last: BTreeMap<u32, Gtid>,
}

#[derive(Debug)]
struct Open {
    gtid: Gtid,
    standalone: bool,
    parts: Vec<Part>,
    bytes: usize,
}

impl Cutter {
    /// A cutter whose predecessors start at `position` (where the stream starts).
    pub fn starting_at(position: BTreeMap<u32, Gtid>) -> Cutter {
        Cutter {
            last: position,
            ..Cutter::default()
        }
    }

    /// Feed one event: `kind` its type code, `timestamp` and `server_id` from its header,
    /// `body` the event data after the header (checksum removed), `raw` the whole event with
    /// its checksum, and `query` the parsed schema and text of a query event. Returns a
    /// transaction once its last event is in.
    pub fn feed(&mut self, ev: &RawEvent) -> Result<Option<Transaction>, CutError> {
        use event_type::*;
        let kind = ev.kind;
        if COMPRESSED.contains(&kind) {
            return Err(CutError::Compressed(kind));
        }
        match kind {
            FORMAT_DESCRIPTION => self.fde = ev.raw.clone(),
            GTID => {
                let b = &ev.body;
                if b.len() < 13 {
                    return Err(CutError::Malformed {
                        kind,
                        why: format!("GTID event body of {} bytes", b.len()),
                    });
                }
                let seq = u64::from_le_bytes(b[0..8].try_into().expect("8 bytes"));
                let domain = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
                let flags = b[12];
                let gtid = Gtid {
                    domain,
                    server: ev.server_id,
                    seq,
                };
                if flags & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0 {
                    return Err(CutError::Xa(gtid));
                }
                self.open = Some(Open {
                    gtid,
                    standalone: flags & FL_STANDALONE != 0,
                    parts: Vec::new(),
                    bytes: 0,
                });
            }
            QUERY => {
                let Some(open) = self.open.as_mut() else {
                    return Ok(None); // a statement outside any transaction group: nothing to replay
                };
                let (schema, sql) = ev.query.clone().ok_or_else(|| CutError::Malformed {
                    kind,
                    why: "query event without its text".into(),
                })?;
                match sql.as_str() {
                    "BEGIN" => {}
                    "COMMIT" => return self.close(),
                    _ => {
                        open.bytes += sql.len();
                        open.parts.push(Part::Query {
                            schema,
                            sql,
                            timestamp: ev.timestamp,
                        });
                        if open.standalone {
                            return self.close();
                        }
                    }
                }
                self.check_size()?;
            }
            TABLE_MAP => self.rows(ev)?,
            k if ROWS_V1.contains(&k) || ROWS_V2.contains(&k) => self.rows(ev)?,
            XID => return self.close(),
            _ => {} // rotate, checkpoints, GTID lists, heartbeats: positions, not changes
        }
        Ok(None)
    }

    fn rows(&mut self, ev: &RawEvent) -> Result<(), CutError> {
        let open = self.open.as_mut().ok_or(CutError::Orphan)?;
        open.bytes += ev.raw.len();
        match open.parts.last_mut() {
            Some(Part::Rows(evs)) => evs.push(Event(ev.raw.clone())),
            _ => open.parts.push(Part::Rows(vec![Event(ev.raw.clone())])),
        }
        self.check_size()
    }

    fn check_size(&self) -> Result<(), CutError> {
        match &self.open {
            Some(o) if o.bytes > DB_CHANGE_MAX_BYTES - 64 * 1024 => Err(CutError::TooLarge {
                gtid: o.gtid,
                bytes: o.bytes,
            }),
            _ => Ok(()),
        }
    }

    fn close(&mut self) -> Result<Option<Transaction>, CutError> {
        let Some(open) = self.open.take() else {
            return Ok(None);
        };
        let prev = self.last.insert(open.gtid.domain, open.gtid);
        Ok(Some(Transaction {
            gtid: open.gtid,
            prev,
            fde: self.fde.clone(),
            parts: open.parts,
        }))
    }
}

/// One binlog event as the cutter needs it.
#[derive(Debug, Clone, Default)]
pub struct RawEvent {
    pub kind: u8,
    pub timestamp: u32,
    pub server_id: u32,
    pub body: Vec<u8>,
    pub raw: Vec<u8>,
    pub query: Option<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gtid_event(seq: u64, domain: u32, server: u32, flags: u8) -> RawEvent {
        let mut body = seq.to_le_bytes().to_vec();
        body.extend_from_slice(&domain.to_le_bytes());
        body.push(flags);
        RawEvent {
            kind: event_type::GTID,
            server_id: server,
            body,
            ..Default::default()
        }
    }

    fn query(sql: &str) -> RawEvent {
        RawEvent {
            kind: event_type::QUERY,
            timestamp: 7,
            query: Some(("shop".into(), sql.into())),
            ..Default::default()
        }
    }

    fn rows(kind: u8, tag: u8) -> RawEvent {
        RawEvent {
            kind,
            raw: vec![tag; 10],
            ..Default::default()
        }
    }

    #[test]
    fn gtids_and_positions_read_and_print_alike() {
        let g: Gtid = "0-41-8".parse().unwrap();
        assert_eq!(
            g,
            Gtid {
                domain: 0,
                server: 41,
                seq: 8
            }
        );
        assert_eq!(g.to_string(), "0-41-8");
        assert!("0-41".parse::<Gtid>().is_err());
        assert!("a-b-c".parse::<Gtid>().is_err());
        let pos = parse_position("0-1-5, 2-3-9").unwrap();
        assert_eq!(
            pos[&2],
            Gtid {
                domain: 2,
                server: 3,
                seq: 9
            }
        );
        assert!(parse_position("").unwrap().is_empty());
    }

    #[test]
    fn events_are_cut_into_transactions_with_their_predecessors() {
        let start = parse_position("0-1-4").unwrap();
        let mut c = Cutter::starting_at(start);
        let fde = RawEvent {
            kind: event_type::FORMAT_DESCRIPTION,
            raw: vec![15; 5],
            ..Default::default()
        };
        assert_eq!(c.feed(&fde).unwrap(), None);
        // A row transaction: GTID, table map, rows, XID.
        c.feed(&gtid_event(5, 0, 1, 0)).unwrap();
        c.feed(&rows(event_type::TABLE_MAP, 1)).unwrap();
        c.feed(&rows(23, 2)).unwrap();
        let tx = c.feed(&RawEvent {
            kind: event_type::XID,
            ..Default::default()
        });
        let tx = tx.unwrap().unwrap();
        assert_eq!(tx.gtid.to_string(), "0-1-5");
        assert_eq!(tx.prev.unwrap().to_string(), "0-1-4");
        assert_eq!(tx.fde, vec![15; 5]);
        assert_eq!(tx.parts, vec![Part::Rows(vec![Event(vec![1; 10]), Event(vec![2; 10])])]);
        // A standalone DDL: GTID, one query.
        c.feed(&gtid_event(6, 0, 1, FL_STANDALONE)).unwrap();
        let ddl = c.feed(&query("ALTER TABLE t ADD c INT")).unwrap().unwrap();
        assert_eq!(ddl.prev.unwrap().to_string(), "0-1-5");
        assert!(
            matches!(&ddl.parts[..], [Part::Query { sql, schema, timestamp: 7 }] if sql == "ALTER TABLE t ADD c INT" && schema == "shop")
        );
        // A non-transactional table's statement ends with a COMMIT query.
        c.feed(&gtid_event(7, 0, 1, 0)).unwrap();
        c.feed(&query("BEGIN")).unwrap();
        c.feed(&rows(event_type::TABLE_MAP, 3)).unwrap();
        let t = c.feed(&query("COMMIT")).unwrap().unwrap();
        assert_eq!((t.gtid.seq, t.parts.len()), (7, 1));
        // Statements: the row transaction above ended no statement by flag (counts as one).
        assert_eq!(tx.statements(), 1);
        let rows_end = |stmt_end: bool| {
            let mut raw = vec![0u8; 19 + 8];
            raw[4] = 23;
            raw[19 + 6] = u8::from(stmt_end);
            Event(raw)
        };
        let two = Transaction {
            parts: vec![Part::Rows(vec![rows_end(true), rows_end(false), rows_end(true)])],
            ..tx.clone()
        };
        assert_eq!(two.statements(), 2);
        // Round trip through the record's encoding.
        assert_eq!(Transaction::decode(&t.encode().unwrap()).unwrap(), t);
    }

    #[test]
    fn what_cannot_be_replayed_is_refused_by_name() {
        let mut c = Cutter::default();
        let e = c.feed(&gtid_event(1, 0, 1, FL_PREPARED_XA)).unwrap_err();
        assert!(e.to_string().contains("XA transaction 0-1-1"), "{e}");
        let e = c.feed(&rows(166, 0)).unwrap_err();
        assert!(e.to_string().contains("log_bin_compress"), "{e}");
        let e = Cutter::default().feed(&rows(23, 0)).unwrap_err();
        assert_eq!(e, CutError::Orphan);
        let mut c = Cutter::default();
        c.feed(&gtid_event(1, 0, 1, 0)).unwrap();
        let big = RawEvent {
            kind: 23,
            raw: vec![0; DB_CHANGE_MAX_BYTES],
            ..Default::default()
        };
        let e = c.feed(&big).unwrap_err();
        assert!(e.to_string().contains("DB_CHANGE_MAX_BYTES"), "{e}");
        assert!(Transaction::decode(b"garbage").is_err());
    }
}
