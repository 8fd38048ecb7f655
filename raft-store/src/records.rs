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
    /// Effective windows: automatic switches happen only inside one of them (none = always).
    /// Outside, a failing active only raises a warning.
    pub windows: Vec<SwitchWindow>,
    /// The windows' times of day are local to this offset from UTC, in minutes.
    pub window_utc_offset_min: i16,
}

/// Most effective windows in a policy.
pub const POLICY_WINDOWS_MAX: usize = 16;
/// Largest UTC offset accepted for the windows (±14 h, the widest in use).
pub const UTC_OFFSET_MAX_MIN: i16 = 14 * 60;
const MINUTES_PER_DAY: u16 = 24 * 60;
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Weekdays and a time of day, written `mon-fri 08:00-18:00` or `sat,sun 22:00-06:00`
/// (an end before the start runs past midnight into the next day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchWindow {
    /// Bit 0 = Monday … bit 6 = Sunday: the days the window starts on.
    pub days: u8,
    /// Minutes after midnight.
    pub start_min: u16,
    pub end_min: u16,
}

impl SwitchWindow {
    /// Parse `DAYS HH:MM-HH:MM`; DAYS is `daily` or a comma list of days and day ranges.
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage = || {
            format!("window {text:?}: expected DAYS HH:MM-HH:MM, e.g. \"mon-fri 08:00-18:00\" or \"daily 22:00-06:00\"")
        };
        let (days_text, times) = text.trim().split_once(' ').ok_or_else(usage)?;
        let day = |d: &str| WEEKDAYS.iter().position(|w| *w == d.trim().to_ascii_lowercase());
        let mut days = 0u8;
        if days_text == "daily" {
            days = 0x7f;
        } else {
            for part in days_text.split(',') {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let (Some(a), Some(b)) = (day(a), day(b)) else {
                    return Err(format!(
                        "window {text:?}: unknown day in {part:?}; use mon, tue, wed, thu, fri, sat, sun or daily"
                    ));
                };
                let mut d = a;
                loop {
                    days |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
        }
        let (start, end) = times.trim().split_once('-').ok_or_else(usage)?;
        let minute = |t: &str| -> Result<u16, String> {
            let (h, m) = t.split_once(':').ok_or_else(usage)?;
            match (h.parse::<u16>(), m.parse::<u16>()) {
                (Ok(h), Ok(m)) if h < 24 && m < 60 => Ok(h * 60 + m),
                (Ok(24), Ok(0)) => Ok(MINUTES_PER_DAY),
                _ => Err(format!("window {text:?}: {t:?} is not a time of day (00:00 to 24:00)")),
            }
        };
        let w = Self {
            days,
            start_min: minute(start)?,
            end_min: minute(end)?,
        };
        w.check().map(|()| w)
    }

    fn check(&self) -> Result<(), String> {
        if self.days == 0 || self.days > 0x7f {
            return Err(format!("window {self}: no valid weekday"));
        }
        if self.start_min >= MINUTES_PER_DAY || self.end_min > MINUTES_PER_DAY {
            return Err(format!("window {self}: times must lie within a day"));
        }
        if self.start_min == self.end_min {
            return Err(format!(
                "window {self}: starts and ends at the same time; use 00:00-24:00 for a whole day"
            ));
        }
        Ok(())
    }

    /// Whether minute `minute` of weekday `weekday` (0 = Monday) falls inside the window.
    pub fn contains(&self, weekday: u8, minute: u16) -> bool {
        let on = |d: u8| self.days & (1 << (d % 7)) != 0;
        if self.start_min < self.end_min {
            on(weekday) && minute >= self.start_min && minute < self.end_min
        } else {
            (on(weekday) && minute >= self.start_min) || (on(weekday + 6) && minute < self.end_min)
        }
    }
}

impl fmt::Display for SwitchWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = (0..7)
            .filter(|d| self.days & (1 << d) != 0)
            .map(|d| WEEKDAYS[d])
            .collect();
        let days = if self.days == 0x7f {
            "daily".to_string()
        } else {
            names.join(",")
        };
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{days} {}-{}", hm(self.start_min), hm(self.end_min))
    }
}

impl Policies {
    /// Whether automatic switches are allowed at `unix_ms` by the effective windows.
    pub fn in_window(&self, unix_ms: u64) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        let local_min = (unix_ms / 60_000) as i64 + i64::from(self.window_utc_offset_min);
        let day = local_min.div_euclid(i64::from(MINUTES_PER_DAY));
        let minute = local_min.rem_euclid(i64::from(MINUTES_PER_DAY)) as u16;
        // 1970-01-01 was a Thursday (weekday 3 counting from Monday = 0).
        let weekday = (day + 3).rem_euclid(7) as u8;
        self.windows.iter().any(|w| w.contains(weekday, minute))
    }
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
            windows: Vec::new(),
            window_utc_offset_min: 0,
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
            if p.windows.len() > POLICY_WINDOWS_MAX {
                return invalid(format!(
                    "{} effective windows, more than POLICY_WINDOWS_MAX ({POLICY_WINDOWS_MAX})",
                    p.windows.len()
                ));
            }
            for w in &p.windows {
                w.check().map_err(Rejection::Invalid)?;
            }
            if p.window_utc_offset_min.abs() > UTC_OFFSET_MAX_MIN {
                return invalid(format!(
                    "window_utc_offset_min is {}, beyond ±UTC_OFFSET_MAX_MIN ({UTC_OFFSET_MAX_MIN})",
                    p.window_utc_offset_min
                ));
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
    fn switch_windows_parse_print_and_match() {
        let w = SwitchWindow::parse("mon-fri 08:00-18:00").unwrap();
        assert_eq!(w.days, 0b001_1111);
        assert_eq!(w.to_string(), "mon,tue,wed,thu,fri 08:00-18:00");
        assert!(w.contains(0, 8 * 60) && w.contains(4, 18 * 60 - 1));
        assert!(
            !w.contains(0, 18 * 60) && !w.contains(5, 9 * 60),
            "after the end; Saturday"
        );
        let night = SwitchWindow::parse("fri 22:00-06:00").unwrap();
        assert!(
            night.contains(4, 23 * 60) && night.contains(5, 5 * 60),
            "runs past midnight into Saturday"
        );
        assert!(
            !night.contains(4, 5 * 60),
            "Friday early morning belongs to Thursday's night"
        );
        assert_eq!(
            SwitchWindow::parse("sat-mon 00:00-24:00").unwrap().days,
            0b110_0001,
            "wraps the week"
        );
        assert_eq!(
            SwitchWindow::parse("daily 00:00-24:00").unwrap().to_string(),
            "daily 00:00-24:00"
        );
        for bad in [
            "mon",
            "funday 08:00-09:00",
            "mon 25:00-26:00",
            "mon 08:00-08:00",
            "mon 8-9",
            "mon 08:60-09:00",
        ] {
            assert!(SwitchWindow::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn policies_are_in_window_by_local_weekday_and_time() {
        // 2026-11-20 is a Friday; 09:00 UTC.
        let friday_9_utc = 1_795_132_800_000 + 9 * 3_600_000;
        let mut p = Policies::default();
        assert!(p.in_window(friday_9_utc), "no windows: always");
        p.windows = vec![SwitchWindow::parse("mon-fri 08:00-18:00").unwrap()];
        assert!(p.in_window(friday_9_utc));
        p.window_utc_offset_min = 10 * 60; // 19:00 local
        assert!(!p.in_window(friday_9_utc));
        p.window_utc_offset_min = -2 * 60; // 07:00 local
        assert!(!p.in_window(friday_9_utc));
        p.window_utc_offset_min = 0;
        assert!(!p.in_window(friday_9_utc + 86_400_000), "Saturday");
    }

    #[test]
    fn policies_with_too_many_or_bad_windows_are_refused() {
        let mut p = Policies {
            windows: vec![SwitchWindow::parse("daily 01:00-02:00").unwrap(); POLICY_WINDOWS_MAX],
            ..Policies::default()
        };
        assert!(validate(&Record::SetPolicies(p.clone())).is_ok());
        p.windows.push(p.windows[0]);
        let e = validate(&Record::SetPolicies(p.clone())).unwrap_err().to_string();
        assert!(e.contains("POLICY_WINDOWS_MAX"), "{e}");
        p.windows = vec![SwitchWindow {
            days: 0,
            start_min: 0,
            end_min: 10,
        }];
        assert!(validate(&Record::SetPolicies(p.clone())).is_err());
        p.windows.clear();
        p.window_utc_offset_min = UTC_OFFSET_MAX_MIN;
        assert!(validate(&Record::SetPolicies(p.clone())).is_ok());
        p.window_utc_offset_min = UTC_OFFSET_MAX_MIN + 1;
        let e = validate(&Record::SetPolicies(p)).unwrap_err().to_string();
        assert!(e.contains("UTC_OFFSET_MAX_MIN"), "{e}");
    }

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
