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
    /// The sync folder's id (the same on both data nodes; each maps it to its own path).
    pub folder: String,
    /// Path relative to the folder root, `/`-separated.
    pub path: String,
    pub op: FileOp,
}

/// Mode, owner and modification time of a file, directory or symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAttrs {
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
}

/// One content-defined chunk of a file: its blake3 hash and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub hash: [u8; 32],
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOp {
    /// The file now has this content: `inline` for small contents (up to
    /// [`INLINE_FILE_MAX_BYTES`]), otherwise `chunks`, which the standby assembles from its
    /// staging area and its current copy. `hash` is blake3 of the whole content.
    Write {
        size: u64,
        attrs: FileAttrs,
        hash: [u8; 32],
        chunks: Vec<ChunkRef>,
        #[serde(with = "crate::codec::opt_bytes")]
        inline: Option<Vec<u8>>,
    },
    /// A directory exists here (created, or its attributes changed).
    Mkdir { attrs: FileAttrs },
    /// A symbolic link to `target`, which must resolve inside the folder.
    Symlink { target: String, mtime_ns: i128 },
    /// Only mode, owner or times changed; the content is the same.
    SetAttrs { attrs: FileAttrs },
    /// The file, link or directory (with everything under it) is gone.
    Delete,
    /// Moved within the folder; a directory moves with everything under it.
    Rename { to: String },
}

/// What kind of entry the file index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
}

/// What the replicated file index knows of one entry of a sync folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub kind: FileKind,
    /// Content length (files), 0 otherwise.
    pub size: u64,
    pub attrs: FileAttrs,
    /// blake3 of the content (files) or of the link target (symlinks); zero for directories.
    pub hash: [u8; 32],
    /// A symlink's target.
    pub target: Option<String>,
    /// Log index of the record that last changed this entry.
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
    #[serde(with = "crate::codec::bytes")]
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
    #[serde(with = "crate::codec::bytes")]
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
        Record::File(f) => validate_file_change(f),
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

/// Largest file a sync folder replicates.
pub const FILE_MAX_BYTES: u64 = 1 << 40;
/// Largest chunk in a chunk list (the chunker's maximum chunk size).
pub const CHUNK_MAX_BYTES: u32 = 1024 * 1024;
/// Most chunks one file's record may list.
pub const CHUNKS_PER_FILE_MAX: usize = 2 * 1024 * 1024;
/// Longest folder id.
pub const FOLDER_ID_MAX_BYTES: usize = 64;

/// A folder id: 1–64 letters, digits, `-`, `_` or `.`.
pub fn check_folder_id(id: &str) -> Result<(), Rejection> {
    let ok = !id.is_empty()
        && id.len() <= FOLDER_ID_MAX_BYTES
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Rejection::Invalid(format!(
            "folder id {id:?} must be 1–{FOLDER_ID_MAX_BYTES} letters, digits, '-', '_' or '.' (FOLDER_ID_MAX_BYTES)"
        )))
    }
}

fn validate_file_change(f: &FileChange) -> Result<(), Rejection> {
    let invalid = |m: String| Err(Rejection::Invalid(format!("{}/{}: {m}", f.folder, f.path)));
    check_folder_id(&f.folder)?;
    check_rel_path(&f.path)?;
    let check_attrs = |a: &FileAttrs| {
        if a.mode > 0o7777 {
            return invalid(format!("mode {:o} has bits beyond 0o7777", a.mode));
        }
        Ok(())
    };
    match &f.op {
        FileOp::Rename { to } => {
            check_rel_path(to)?;
            if to == &f.path || to.starts_with(&format!("{}/", f.path)) {
                return invalid(format!("cannot rename onto itself or into itself ({to:?})"));
            }
            Ok(())
        }
        FileOp::Mkdir { attrs } | FileOp::SetAttrs { attrs } => check_attrs(attrs),
        FileOp::Symlink { target, .. } => check_link_target(&f.path, target),
        FileOp::Delete => Ok(()),
        FileOp::Write {
            size,
            attrs,
            hash,
            chunks,
            inline,
        } => {
            check_attrs(attrs)?;
            if *size > FILE_MAX_BYTES {
                return invalid(format!("size {size} is more than FILE_MAX_BYTES ({FILE_MAX_BYTES})"));
            }
            match inline {
                Some(data) => {
                    if data.len() > INLINE_FILE_MAX_BYTES {
                        return invalid(format!(
                            "inline content is {} bytes, more than INLINE_FILE_MAX_BYTES ({INLINE_FILE_MAX_BYTES})",
                            data.len()
                        ));
                    }
                    if data.len() as u64 != *size {
                        return invalid(format!("inline content is {} bytes but size says {size}", data.len()));
                    }
                    if !chunks.is_empty() {
                        return invalid("a record carries either inline content or a chunk list, not both".into());
                    }
                    if blake3::hash(data).as_bytes() != hash {
                        return invalid("inline content does not match its hash".into());
                    }
                    Ok(())
                }
                None => {
                    if chunks.len() > CHUNKS_PER_FILE_MAX {
                        return invalid(format!(
                            "{} chunks, more than CHUNKS_PER_FILE_MAX ({CHUNKS_PER_FILE_MAX})",
                            chunks.len()
                        ));
                    }
                    if let Some(c) = chunks.iter().find(|c| c.len == 0 || c.len > CHUNK_MAX_BYTES) {
                        return invalid(format!(
                            "a chunk of {} bytes is outside 1..=CHUNK_MAX_BYTES ({CHUNK_MAX_BYTES})",
                            c.len
                        ));
                    }
                    let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
                    if total != *size {
                        return invalid(format!("the chunks add up to {total} bytes but size says {size}"));
                    }
                    Ok(())
                }
            }
        }
    }
}

/// What the file index records as a symlink's hash: blake3 of its target.
pub fn link_hash(target: &str) -> [u8; 32] {
    *blake3::hash(target.as_bytes()).as_bytes()
}

/// A symlink target that resolves inside the folder, seen from the link at `link_path`.
pub fn check_link_target(link_path: &str, target: &str) -> Result<(), Rejection> {
    let bad = |why: &str| Err(Rejection::Invalid(format!("symlink {link_path:?} -> {target:?} {why}")));
    if target.is_empty() || target.len() > PATH_MAX_BYTES || target.contains('\0') {
        return bad("has an empty, over-long or NUL-carrying target");
    }
    if target.starts_with('/') {
        return bad("points to an absolute path; only links inside the folder are replicated");
    }
    let mut depth: Vec<&str> = link_path.split('/').collect();
    depth.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return bad("leaves the folder");
                }
            }
            p => depth.push(p),
        }
    }
    Ok(())
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

    const ATTRS: FileAttrs = FileAttrs {
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
    };

    fn write(path: &str, size: u64, hash: [u8; 32], chunks: Vec<ChunkRef>, inline: Option<Vec<u8>>) -> Record {
        Record::File(FileChange {
            folder: "scenes".into(),
            path: path.into(),
            op: FileOp::Write {
                size,
                attrs: ATTRS,
                hash,
                chunks,
                inline,
            },
        })
    }

    #[test]
    fn file_records_with_bad_contents_are_rejected_by_name() {
        let data = b"night shift".to_vec();
        let hash = *blake3::hash(&data).as_bytes();
        assert!(validate(&write("a.cfg", 11, hash, vec![], Some(data.clone()))).is_ok());
        let e = validate(&write("a.cfg", 11, [7; 32], vec![], Some(data.clone()))).unwrap_err();
        assert!(e.to_string().contains("does not match its hash"), "{e}");
        let e = validate(&write("a.cfg", 12, hash, vec![], Some(data))).unwrap_err();
        assert!(e.to_string().contains("size says 12"), "{e}");
        let chunk = |len| ChunkRef { hash: [1; 32], len };
        assert!(validate(&write("big", 30, hash, vec![chunk(10), chunk(20)], None)).is_ok());
        let e = validate(&write("big", 31, hash, vec![chunk(10), chunk(20)], None)).unwrap_err();
        assert!(e.to_string().contains("add up to 30"), "{e}");
        let e = validate(&write("big", 0, hash, vec![chunk(0)], None)).unwrap_err();
        assert!(e.to_string().contains("CHUNK_MAX_BYTES"), "{e}");
        let e = validate(&write("big", FILE_MAX_BYTES + 1, hash, vec![], None)).unwrap_err();
        assert!(e.to_string().contains("FILE_MAX_BYTES"), "{e}");
        let bad_folder = Record::File(FileChange {
            folder: "../etc".into(),
            path: "a".into(),
            op: FileOp::Delete,
        });
        assert!(validate(&bad_folder)
            .unwrap_err()
            .to_string()
            .contains("FOLDER_ID_MAX_BYTES"));
        let into_itself = Record::File(FileChange {
            folder: "f".into(),
            path: "a".into(),
            op: FileOp::Rename { to: "a/b".into() },
        });
        assert!(validate(&into_itself).is_err());
        let setuid_and_more = Record::File(FileChange {
            folder: "f".into(),
            path: "a".into(),
            op: FileOp::Mkdir {
                attrs: FileAttrs { mode: 0o17777, ..ATTRS },
            },
        });
        assert!(validate(&setuid_and_more).is_err());
    }

    #[test]
    fn symlinks_must_stay_inside_the_folder() {
        for (link, target) in [("a", "b"), ("d/a", "../b"), ("d/e/a", "../../b/c"), ("a", "./b")] {
            assert!(check_link_target(link, target).is_ok(), "{link} -> {target}");
        }
        for (link, target) in [("a", "../b"), ("d/a", "../../b"), ("a", "/etc/passwd"), ("a", "")] {
            assert!(
                check_link_target(link, target).is_err(),
                "{link} -> {target} must be refused"
            );
        }
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
                attrs: ATTRS,
                hash: [0; 32],
                chunks: vec![],
                inline: Some(vec![0; INLINE_FILE_MAX_BYTES + 1]),
            },
        });
        assert!(validate(&inline)
            .unwrap_err()
            .to_string()
            .contains("INLINE_FILE_MAX_BYTES"));
    }
}
