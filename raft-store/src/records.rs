//! The records that travel through the replicated log (DESIGN §5).
//!
//! Every record is wrapped in a [`Command`] that carries the proposer's epoch, so apply can
//! fence off a deposed active's late proposals (DESIGN §4). Record contents are checked again at
//! apply time: a record that breaks a rule is answered with a [`Rejection`] and changes nothing.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use crate::types::Epoch;
use crate::types::NodeId;

/// Largest payload a test record may carry.
pub const TEST_RECORD_MAX_BYTES: usize = 64 * 1024;
/// Largest file content carried inline in a file change record (DESIGN §5: ~256 KiB).
pub const INLINE_FILE_MAX_BYTES: usize = 256 * 1024;
/// Largest relative path accepted in a file change record.
pub const PATH_MAX_BYTES: usize = 4096;
/// Largest database change (one transaction's events) accepted in a record.
pub const DB_CHANGE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Longest text field (names, actions, details) accepted in a record.
pub const TEXT_MAX_BYTES: usize = 4096;

/// One entry of the replicated log, as proposed through `client_write` on the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The proposer's epoch; apply rejects records from an epoch older than the activation.
    pub epoch: Epoch,
    pub record: Record,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@epoch{}", self.record.kind(), self.epoch)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// `node` becomes the active at `epoch`; `epoch` must equal the term of the entry.
    Activate { node: NodeId, epoch: Epoch },
    /// The active of `epoch` has released every resource (planned switchover).
    Released { node: NodeId, epoch: Epoch },
    /// Replace the switch policies.
    SetPolicies(Policies),
    /// A change to a file in a sync folder.
    File(FileChange),
    /// One committed transaction of a database source.
    Db(DbChange),
    /// An operator action, kept in the audit trail.
    Audit(AuditEntry),
    /// A record that only exists to prove replication (tests, demos, benchmarks).
    Test(TestRecord),
}

impl Record {
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Activate { .. } => "activate",
            Record::Released { .. } => "released",
            Record::SetPolicies(_) => "set-policies",
            Record::File(_) => "file",
            Record::Db(_) => "db",
            Record::Audit(_) => "audit",
            Record::Test(_) => "test",
        }
    }

    /// Records that change protected data are fenced by the activation epoch.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Record::File(_) | Record::Db(_) | Record::Test(_))
    }
}

/// Switch policies (DESIGN §6), replicated so every node acts on the same ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    /// A failing active with a synced standby hands over by itself.
    pub auto_switch: bool,
    /// Automatic switches need a synced standby.
    pub only_switch_when_synced: bool,
    /// Pause automatic actions; checks keep reporting.
    pub maintenance: bool,
    /// Switch back to the former active automatically once it is healthy again.
    pub auto_failback: bool,
    /// Anti-flap: least time a node stays active before another automatic switch.
    pub min_active_secs: u64,
    /// Anti-flap: at most this many automatic switches per `switch_window_secs`.
    pub max_auto_switches: u32,
    pub switch_window_secs: u64,
}

/// Longest anti-flap time accepted in a policy (one week).
pub const POLICY_SECS_MAX: u64 = 7 * 24 * 3600;

impl Default for Policies {
    fn default() -> Self {
        Self {
            auto_switch: true,
            only_switch_when_synced: true,
            maintenance: false,
            auto_failback: false,
            min_active_secs: 60,
            max_auto_switches: 3,
            switch_window_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    pub folder: String,
    /// Path relative to the folder root, `/`-separated.
    pub path: String,
    pub op: FileOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOp {
    /// The file now has this content. `inline` holds small contents; larger ones are staged.
    Write {
        size: u64,
        mode: u32,
        mtime_ns: i128,
        hash: [u8; 32],
        inline: Option<Vec<u8>>,
    },
    Delete,
    Rename {
        to: String,
    },
}

/// What the replicated file index knows of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub size: u64,
    pub mode: u32,
    pub mtime_ns: i128,
    pub hash: [u8; 32],
    /// Log index of the record that last wrote this file.
    pub index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbChange {
    /// Which database this came from (e.g. `mariadb`).
    pub source: String,
    /// Position of this transaction in its source; must grow by exactly one (exactly-once apply).
    pub seq: u64,
    /// The source's own id of the transaction (a GTID for MariaDB/MySQL).
    pub gtid: String,
    pub events: Vec<u8>,
}

/// How far a database source has been applied through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbPosition {
    pub seq: u64,
    pub gtid: String,
    pub index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Wall-clock time at the proposer, milliseconds since the Unix epoch. Apply reads no clock.
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRecord {
    pub id: u64,
    pub payload: Vec<u8>,
}

/// The state machine's answer to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Applied at this log index.
    Applied { index: u64 },
    /// Not applied; state unchanged.
    Rejected(Rejection),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("stale epoch: the current activation is epoch {current}, the record carries {got}")]
    StaleEpoch { current: Epoch, got: Epoch },
    #[error("activation epoch {epoch} does not match the term {term} of its log entry")]
    EpochNotTerm { epoch: Epoch, term: u64 },
    #[error("database source {source_name}: expected seq {expected}, got {got}")]
    OutOfOrder {
        source_name: String,
        expected: u64,
        got: u64,
    },
    #[error("invalid record: {0}")]
    Invalid(String),
}

/// Check a record's contents; the same rules hold at proposal and at apply.
pub fn validate(record: &Record) -> Result<(), Rejection> {
    let invalid = |m: String| Err(Rejection::Invalid(m));
    match record {
        Record::Test(t) if t.payload.len() > TEST_RECORD_MAX_BYTES => invalid(format!(
            "test record payload is {} bytes, more than TEST_RECORD_MAX_BYTES ({TEST_RECORD_MAX_BYTES})",
            t.payload.len()
        )),
        Record::File(f) => {
            check_text("folder", &f.folder)?;
            check_rel_path(&f.path)?;
            match &f.op {
                FileOp::Rename { to } => check_rel_path(to),
                FileOp::Write {
                    size,
                    inline: Some(data),
                    ..
                } => {
                    if data.len() > INLINE_FILE_MAX_BYTES {
                        return invalid(format!(
                            "inline content is {} bytes, more than INLINE_FILE_MAX_BYTES ({INLINE_FILE_MAX_BYTES})",
                            data.len()
                        ));
                    }
                    if data.len() as u64 != *size {
                        return invalid(format!("inline content is {} bytes but size says {size}", data.len()));
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        Record::Db(d) => {
            check_text("source", &d.source)?;
            check_text("gtid", &d.gtid)?;
            if d.events.len() > DB_CHANGE_MAX_BYTES {
                return invalid(format!(
                    "database change is {} bytes, more than DB_CHANGE_MAX_BYTES ({DB_CHANGE_MAX_BYTES})",
                    d.events.len()
                ));
            }
            Ok(())
        }
        Record::SetPolicies(p) => {
            for (name, secs) in [
                ("min_active_secs", p.min_active_secs),
                ("switch_window_secs", p.switch_window_secs),
            ] {
                if secs > POLICY_SECS_MAX {
                    return invalid(format!(
                        "{name} is {secs}, more than POLICY_SECS_MAX ({POLICY_SECS_MAX})"
                    ));
                }
            }
            if p.max_auto_switches == 0 && p.auto_switch {
                return invalid("max_auto_switches is 0 while auto_switch is on; turn auto_switch off instead".into());
            }
            Ok(())
        }
        Record::Audit(a) => {
            check_text("actor", &a.actor)?;
            check_text("action", &a.action)?;
            check_text("detail", &a.detail)
        }
        _ => Ok(()),
    }
}

fn check_text(field: &str, value: &str) -> Result<(), Rejection> {
    if value.len() > TEXT_MAX_BYTES {
        return Err(Rejection::Invalid(format!(
            "{field} is {} bytes, more than TEXT_MAX_BYTES ({TEXT_MAX_BYTES})",
            value.len()
        )));
    }
    Ok(())
}

/// A path inside a sync folder: relative, `/`-separated, no `.`/`..`/empty parts, no NUL.
pub fn check_rel_path(path: &str) -> Result<(), Rejection> {
    let bad = |why: &str| Err(Rejection::Invalid(format!("path {path:?} {why}")));
    if path.is_empty() {
        return bad("is empty");
    }
    if path.len() > PATH_MAX_BYTES {
        return bad("is longer than PATH_MAX_BYTES (4096)");
    }
    if path.starts_with('/') || path.contains('\\') {
        return bad("must be relative and use '/' separators");
    }
    if path.contains('\0') {
        return bad("contains a NUL byte");
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return bad("has an empty, '.' or '..' component");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_folder_are_rejected() {
        for p in ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "", "a\\b", "a\0b"] {
            assert!(check_rel_path(p).is_err(), "{p:?} must be rejected");
        }
        for p in ["a", "scenes/night.cfg", "a/b/c.txt", ".hidden", "a..b"] {
            assert!(check_rel_path(p).is_ok(), "{p:?} must be accepted");
        }
    }

    #[test]
    fn oversized_records_are_rejected_with_the_limit_name() {
        let big = Record::Test(TestRecord {
            id: 1,
            payload: vec![0; TEST_RECORD_MAX_BYTES + 1],
        });
        assert!(validate(&big)
            .unwrap_err()
            .to_string()
            .contains("TEST_RECORD_MAX_BYTES"));

        let inline = Record::File(FileChange {
            folder: "f".into(),
            path: "a".into(),
            op: FileOp::Write {
                size: (INLINE_FILE_MAX_BYTES + 1) as u64,
                mode: 0o644,
                mtime_ns: 0,
                hash: [0; 32],
                inline: Some(vec![0; INLINE_FILE_MAX_BYTES + 1]),
            },
        });
        assert!(validate(&inline)
            .unwrap_err()
            .to_string()
            .contains("INLINE_FILE_MAX_BYTES"));
    }
}
