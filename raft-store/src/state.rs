//! The replicated state and the deterministic apply logic shared by every store.
//!
//! Apply reads no clock and no randomness: the same log gives the same state on all three
//! nodes. It returns the list of keys it touched so a durable store can persist only those.

use std::collections::BTreeMap;

use openraft::vote::RaftLeaderId;
use openraft::EntryPayload;
use serde::Deserialize;
use serde::Serialize;

use crate::mutant;
use crate::mutant::Mutant;
use crate::records::link_hash;
use crate::records::validate;
use crate::records::AuditEntry;
use crate::records::Command;
use crate::records::DbPosition;
use crate::records::FileAttrs;
use crate::records::FileChange;
use crate::records::FileKind;
use crate::records::FileMeta;
use crate::records::FileOp;
use crate::records::Policies;
use crate::records::Record;
use crate::records::Rejection;
use crate::records::Response;
use crate::types::Entry;
use crate::types::Epoch;
use crate::types::LogId;
use crate::types::NodeId;
use crate::types::StoredMembership;

/// How many operator actions the replicated audit trail keeps (oldest dropped first).
pub const AUDIT_TRAIL_CAPACITY: usize = 1000;

/// The current activation (DESIGN §4, condition 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    pub node: NodeId,
    pub epoch: Epoch,
    /// Log index of the `Activate` record.
    pub since_index: u64,
    /// Set once the active of this epoch committed `Released`.
    pub released: bool,
    /// The activation this one replaced, as it stood then: a new active decides from it
    /// whether it must wait before taking over (DESIGN §4).
    pub previous: Option<PreviousActivation>,
}

/// The activation an `Activate` replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousActivation {
    pub node: NodeId,
    pub epoch: Epoch,
    pub released: bool,
}

/// Summary of the test records applied, for checking that nodes agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TestLog {
    pub count: u64,
    /// FNV-1a chain over (id, payload) of every test record in apply order.
    pub digest: u64,
}

/// Small state that is rewritten on every apply batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Meta {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub activation: Option<Activation>,
    pub policies: Policies,
    pub test_log: TestLog,
    /// Sequence number the next audit entry gets.
    pub next_audit_seq: u64,
    /// Log index of the newest file change applied (0: none).
    pub last_file_index: u64,
}

/// Everything the state machine holds; identical on all three nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SmState {
    pub meta: Meta,
    /// File index: (folder, path) → metadata.
    pub files: BTreeMap<(String, String), FileMeta>,
    pub db_positions: BTreeMap<String, DbPosition>,
    /// Audit trail by sequence number.
    pub audit: BTreeMap<u64, AuditEntry>,
}

/// A key touched by apply, for stores that persist item by item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    File((String, String)),
    Db(String),
    Audit(u64),
}

impl SmState {
    /// The epoch below which fenced records are rejected.
    pub fn current_epoch(&self) -> Epoch {
        self.meta.activation.as_ref().map_or(0, |a| a.epoch)
    }

    /// Apply one log entry. `touched` collects the keys whose value changed.
    pub fn apply(&mut self, entry: &Entry, touched: &mut Vec<Touched>) -> Response {
        let index = entry.log_id.index;
        debug_assert!(
            self.meta.last_applied.as_ref().is_none_or(|l| l.index < index),
            "apply must move forward"
        );
        self.meta.last_applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => Response::Applied { index },
            EntryPayload::Membership(m) => {
                self.meta.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                Response::Applied { index }
            }
            EntryPayload::Normal(cmd) => {
                match self.apply_command(entry.log_id.committed_leader_id().term(), index, cmd, touched) {
                    Ok(()) => Response::Applied { index },
                    Err(r) => Response::Rejected(r),
                }
            }
        }
    }

    fn apply_command(
        &mut self,
        term: u64,
        index: u64,
        cmd: &Command,
        touched: &mut Vec<Touched>,
    ) -> Result<(), Rejection> {
        validate(&cmd.record)?;
        let current = self.current_epoch();
        // DESIGN §4: records from an epoch older than the current activation are fenced off.
        if cmd.record.is_fenced() && cmd.epoch < current && !mutant::on(Mutant::NoEpochCheck) {
            return Err(Rejection::StaleEpoch {
                current,
                got: cmd.epoch,
            });
        }
        match &cmd.record {
            Record::Activate { node, epoch } => {
                if *epoch != term {
                    return Err(Rejection::EpochNotTerm { epoch: *epoch, term });
                }
                // Epochs never decrease: an activation from an older term loses. The one
                // exception: the same node re-activates in its own epoch after it released
                // (a hand-off that did not happen); no other node can lead that term.
                let reactivation = self
                    .meta
                    .activation
                    .as_ref()
                    .is_some_and(|a| a.node == *node && a.epoch == *epoch && a.released);
                if *epoch < current || (*epoch == current && self.meta.activation.is_some() && !reactivation) {
                    return Err(Rejection::StaleEpoch { current, got: *epoch });
                }
                let previous = self.meta.activation.as_ref().map(|a| PreviousActivation {
                    node: a.node,
                    epoch: a.epoch,
                    released: a.released,
                });
                self.meta.activation = Some(Activation {
                    node: *node,
                    epoch: *epoch,
                    since_index: index,
                    released: false,
                    previous,
                });
            }
            Record::Released { node, epoch } => match &mut self.meta.activation {
                Some(a) if a.node == *node && a.epoch == *epoch => a.released = true,
                _ => return Err(Rejection::StaleEpoch { current, got: *epoch }),
            },
            Record::SetPolicies(p) => self.meta.policies = p.clone(),
            Record::File(f) => {
                self.apply_file(f, index, touched)?;
                self.meta.last_file_index = index;
            }
            Record::Db(d) => {
                let expected = self.db_positions.get(&d.source).map_or(1, |p| p.seq + 1);
                if d.seq != expected {
                    return Err(Rejection::OutOfOrder {
                        source_name: d.source.clone(),
                        expected,
                        got: d.seq,
                    });
                }
                self.db_positions.insert(
                    d.source.clone(),
                    DbPosition {
                        seq: d.seq,
                        gtid: d.gtid.clone(),
                        index,
                    },
                );
                touched.push(Touched::Db(d.source.clone()));
            }
            Record::Audit(a) => {
                let seq = self.meta.next_audit_seq;
                self.meta.next_audit_seq += 1;
                self.audit.insert(seq, a.clone());
                touched.push(Touched::Audit(seq));
                while self.audit.len() > AUDIT_TRAIL_CAPACITY {
                    let (oldest, _) = self.audit.pop_first().expect("audit trail is not empty");
                    touched.push(Touched::Audit(oldest));
                }
            }
            Record::Test(t) => {
                let log = &mut self.meta.test_log;
                log.count += 1;
                log.digest = fnv1a(fnv1a(log.digest, &t.id.to_le_bytes()), &t.payload);
            }
        }
        Ok(())
    }
}

impl SmState {
    /// The index entries of `folder` whose paths start with `prefix` ("" for all), in path
    /// order.
    pub fn folder_files<'a>(
        &'a self,
        folder: &'a str,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a FileMeta)> {
        self.files
            .range((folder.to_string(), prefix.to_string())..)
            .take_while(move |((f, p), _)| f == folder && p.starts_with(prefix))
            .map(|((_, p), m)| (p.as_str(), m))
    }

    /// Keys of `folder` at `path` and everything under it.
    fn subtree(&self, folder: &str, path: &str) -> Vec<(String, String)> {
        let prefix = format!("{path}/");
        let mut keys: Vec<_> = self
            .folder_files(folder, &prefix)
            .map(|(p, _)| (folder.to_string(), p.to_string()))
            .collect();
        let own = (folder.to_string(), path.to_string());
        if self.files.contains_key(&own) {
            keys.insert(0, own);
        }
        keys
    }

    fn apply_file(&mut self, f: &FileChange, index: u64, touched: &mut Vec<Touched>) -> Result<(), Rejection> {
        let key = (f.folder.clone(), f.path.clone());
        let unknown = |what: &str| Rejection::Invalid(format!("{what} of unknown entry {}/{}", f.folder, f.path));
        let put = |state: &mut Self, meta: FileMeta, touched: &mut Vec<Touched>| {
            // A file replacing a directory replaces everything under it too.
            if meta.kind != FileKind::Dir {
                for k in state.subtree(&f.folder, &f.path) {
                    state.files.remove(&k);
                    touched.push(Touched::File(k));
                }
            }
            state.files.insert(key.clone(), meta);
            touched.push(Touched::File(key.clone()));
        };
        match &f.op {
            FileOp::Write { size, attrs, hash, .. } => {
                let meta = FileMeta {
                    kind: FileKind::File,
                    size: *size,
                    attrs: *attrs,
                    hash: *hash,
                    target: None,
                    index,
                };
                put(self, meta, touched);
            }
            FileOp::Mkdir { attrs } => {
                let meta = FileMeta {
                    kind: FileKind::Dir,
                    size: 0,
                    attrs: *attrs,
                    hash: [0; 32],
                    target: None,
                    index,
                };
                if self.files.get(&key).is_some_and(|m| m.kind != FileKind::Dir) {
                    self.files.remove(&key);
                }
                put(self, meta, touched);
            }
            FileOp::Symlink { target, mtime_ns } => {
                let meta = FileMeta {
                    kind: FileKind::Symlink,
                    size: 0,
                    attrs: FileAttrs {
                        mode: 0o777,
                        uid: 0,
                        gid: 0,
                        mtime_ns: *mtime_ns,
                    },
                    hash: link_hash(target),
                    target: Some(target.clone()),
                    index,
                };
                put(self, meta, touched);
            }
            FileOp::SetAttrs { attrs } => {
                let meta = self.files.get_mut(&key).ok_or_else(|| unknown("attribute change"))?;
                meta.attrs = *attrs;
                meta.index = index;
                touched.push(Touched::File(key));
            }
            FileOp::Delete => {
                let keys = self.subtree(&f.folder, &f.path);
                if keys.is_empty() {
                    return Err(unknown("delete"));
                }
                for k in keys {
                    self.files.remove(&k);
                    touched.push(Touched::File(k));
                }
            }
            FileOp::Rename { to } => {
                let keys = self.subtree(&f.folder, &f.path);
                if keys.is_empty() {
                    return Err(unknown("rename"));
                }
                // Whatever was at the destination is replaced, as rename(2) does.
                for k in self.subtree(&f.folder, to) {
                    self.files.remove(&k);
                    touched.push(Touched::File(k));
                }
                for k in keys {
                    let mut meta = self.files.remove(&k).expect("key listed from the index");
                    meta.index = index;
                    let moved = (f.folder.clone(), format!("{to}{}", &k.1[f.path.len()..]));
                    touched.push(Touched::File(k));
                    self.files.insert(moved.clone(), meta);
                    touched.push(Touched::File(moved));
                }
            }
        }
        Ok(())
    }
}

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    if hash == 0 {
        hash = 0xcbf2_9ce4_8422_2325;
    }
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use openraft::impls::leader_id_adv::LeaderId;

    use super::*;
    use crate::records::DbChange;
    use crate::records::FileAttrs;
    use crate::records::FileChange;
    use crate::records::TestRecord;

    fn entry(term: u64, index: u64, record: Record, epoch: Epoch) -> Entry {
        Entry {
            log_id: LogId::new(LeaderId { term, node_id: 1 }, index),
            payload: EntryPayload::Normal(Command { epoch, record }),
        }
    }

    fn apply(sm: &mut SmState, e: Entry) -> Response {
        sm.apply(&e, &mut Vec::new())
    }

    #[test]
    fn a_deposed_actives_late_record_is_rejected() {
        let mut sm = SmState::default();
        assert_eq!(
            apply(&mut sm, entry(2, 1, Record::Activate { node: 1, epoch: 2 }, 2)),
            Response::Applied { index: 1 }
        );
        assert_eq!(
            apply(&mut sm, entry(5, 2, Record::Activate { node: 2, epoch: 5 }, 5)),
            Response::Applied { index: 2 }
        );
        let previous = sm.meta.activation.as_ref().unwrap().previous;
        let replaced = PreviousActivation {
            node: 1,
            epoch: 2,
            released: false,
        };
        assert_eq!(previous, Some(replaced), "the replaced activation is kept");
        // The old active (epoch 2) proposes a file change that lands after the new activation.
        let late = Record::Test(TestRecord {
            id: 9,
            payload: vec![1],
        });
        assert_eq!(
            apply(&mut sm, entry(5, 3, late.clone(), 2)),
            Response::Rejected(Rejection::StaleEpoch { current: 5, got: 2 })
        );
        assert_eq!(sm.meta.test_log.count, 0, "a rejected record changes nothing");
        assert_eq!(apply(&mut sm, entry(5, 4, late, 5)), Response::Applied { index: 4 });
        assert_eq!(sm.meta.test_log.count, 1);
    }

    #[test]
    fn activation_epochs_never_decrease_and_must_match_the_term() {
        let mut sm = SmState::default();
        apply(&mut sm, entry(4, 1, Record::Activate { node: 1, epoch: 4 }, 4));
        let older = apply(&mut sm, entry(4, 2, Record::Activate { node: 2, epoch: 3 }, 3));
        assert!(matches!(older, Response::Rejected(Rejection::EpochNotTerm { .. })));
        let same = apply(&mut sm, entry(4, 3, Record::Activate { node: 2, epoch: 4 }, 4));
        assert!(matches!(same, Response::Rejected(Rejection::StaleEpoch { .. })));
        assert_eq!(sm.meta.activation.as_ref().unwrap().node, 1);
    }

    #[test]
    fn a_released_active_may_activate_again_in_its_own_epoch_but_nobody_else_may() {
        let mut sm = SmState::default();
        apply(&mut sm, entry(3, 1, Record::Activate { node: 1, epoch: 3 }, 3));
        // Not released yet: no second activation in the epoch.
        let again = apply(&mut sm, entry(3, 2, Record::Activate { node: 1, epoch: 3 }, 3));
        assert!(matches!(again, Response::Rejected(Rejection::StaleEpoch { .. })));
        apply(&mut sm, entry(3, 3, Record::Released { node: 1, epoch: 3 }, 3));
        let other = apply(&mut sm, entry(3, 4, Record::Activate { node: 2, epoch: 3 }, 3));
        assert!(matches!(other, Response::Rejected(Rejection::StaleEpoch { .. })));
        assert_eq!(
            apply(&mut sm, entry(3, 5, Record::Activate { node: 1, epoch: 3 }, 3)),
            Response::Applied { index: 5 }
        );
        let a = sm.meta.activation.as_ref().unwrap();
        assert!(!a.released);
        assert_eq!(
            a.previous.map(|p| p.released),
            Some(true),
            "the new activation replaced a released one"
        );
    }

    #[test]
    fn released_only_counts_for_the_current_activation() {
        let mut sm = SmState::default();
        apply(&mut sm, entry(3, 1, Record::Activate { node: 1, epoch: 3 }, 3));
        let wrong = apply(&mut sm, entry(3, 2, Record::Released { node: 2, epoch: 3 }, 3));
        assert!(matches!(wrong, Response::Rejected(_)));
        assert!(!sm.meta.activation.as_ref().unwrap().released);
        apply(&mut sm, entry(3, 3, Record::Released { node: 1, epoch: 3 }, 3));
        assert!(sm.meta.activation.as_ref().unwrap().released);
    }

    #[test]
    fn database_changes_apply_exactly_once_in_order() {
        let mut sm = SmState::default();
        let db = |seq| {
            Record::Db(DbChange {
                source: "mariadb".into(),
                seq,
                gtid: format!("0-1-{seq}"),
                events: vec![],
            })
        };
        assert!(matches!(
            apply(&mut sm, entry(1, 1, db(1), 1)),
            Response::Applied { .. }
        ));
        assert!(matches!(
            apply(&mut sm, entry(1, 2, db(1), 1)),
            Response::Rejected(Rejection::OutOfOrder { .. })
        ));
        assert!(matches!(
            apply(&mut sm, entry(1, 3, db(3), 1)),
            Response::Rejected(Rejection::OutOfOrder { .. })
        ));
        assert!(matches!(
            apply(&mut sm, entry(1, 4, db(2), 1)),
            Response::Applied { .. }
        ));
        assert_eq!(sm.db_positions["mariadb"].gtid, "0-1-2");
    }

    #[test]
    fn file_index_follows_writes_renames_and_deletes() {
        let mut sm = SmState::default();
        let file = |path: &str, op| {
            Record::File(FileChange {
                folder: "scenes".into(),
                path: path.into(),
                op,
            })
        };
        let attrs = FileAttrs {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
        };
        let write = FileOp::Write {
            size: 3,
            attrs,
            hash: *blake3::hash(&[1, 2, 3]).as_bytes(),
            chunks: vec![],
            inline: Some(vec![1, 2, 3]),
        };
        let mut touched = Vec::new();
        sm.apply(&entry(1, 1, file("a.cfg", write.clone()), 1), &mut touched);
        sm.apply(
            &entry(1, 2, file("a.cfg", FileOp::Rename { to: "b.cfg".into() }), 1),
            &mut touched,
        );
        assert!(sm.files.contains_key(&("scenes".into(), "b.cfg".into())));
        assert!(!sm.files.contains_key(&("scenes".into(), "a.cfg".into())));
        assert_eq!(touched.len(), 3);
        let bad = apply(&mut sm, entry(1, 3, file("../etc/passwd", FileOp::Delete), 1));
        assert!(matches!(bad, Response::Rejected(Rejection::Invalid(_))));
        assert!(matches!(
            apply(&mut sm, entry(1, 4, file("b.cfg", FileOp::Delete), 1)),
            Response::Applied { .. }
        ));
        assert!(sm.files.is_empty());

        // Directories move and go with everything under them, and nothing beside them.
        let mut touched = Vec::new();
        sm.apply(&entry(1, 5, file("d", FileOp::Mkdir { attrs }), 1), &mut touched);
        sm.apply(&entry(1, 6, file("d/x", write.clone()), 1), &mut touched);
        sm.apply(&entry(1, 7, file("d/e/y", write.clone()), 1), &mut touched);
        sm.apply(&entry(1, 8, file("d0", write.clone()), 1), &mut touched);
        sm.apply(
            &entry(1, 9, file("d", FileOp::Rename { to: "n".into() }), 1),
            &mut touched,
        );
        let paths: Vec<&str> = sm.files.keys().map(|(_, p)| p.as_str()).collect();
        assert_eq!(paths, ["d0", "n", "n/e/y", "n/x"]);
        let set = FileOp::SetAttrs {
            attrs: FileAttrs { mode: 0o600, ..attrs },
        };
        sm.apply(&entry(1, 10, file("n/x", set), 1), &mut touched);
        assert_eq!(sm.files[&("scenes".into(), "n/x".into())].attrs.mode, 0o600);
        sm.apply(&entry(1, 11, file("n", FileOp::Delete), 1), &mut touched);
        let paths: Vec<&str> = sm.files.keys().map(|(_, p)| p.as_str()).collect();
        assert_eq!(paths, ["d0"]);
        // A file written where a directory was replaces the directory's whole subtree.
        sm.apply(&entry(1, 12, file("d0", FileOp::Delete), 1), &mut touched);
        sm.apply(&entry(1, 13, file("t/a", write.clone()), 1), &mut touched);
        sm.apply(&entry(1, 14, file("t", write), 1), &mut touched);
        let paths: Vec<&str> = sm.files.keys().map(|(_, p)| p.as_str()).collect();
        assert_eq!(paths, ["t"]);
    }

    #[test]
    fn audit_trail_is_bounded() {
        let mut sm = SmState::default();
        for i in 0..(AUDIT_TRAIL_CAPACITY as u64 + 5) {
            let a = AuditEntry {
                at_ms: i,
                actor: "op".into(),
                action: "switchover".into(),
                detail: String::new(),
            };
            apply(&mut sm, entry(1, i + 1, Record::Audit(a), 0));
        }
        assert_eq!(sm.audit.len(), AUDIT_TRAIL_CAPACITY);
        assert_eq!(*sm.audit.keys().next().unwrap(), 5);
    }

    #[test]
    fn same_records_give_the_same_digest() {
        let mut a = SmState::default();
        let mut b = SmState::default();
        for i in 1..=10 {
            let r = Record::Test(TestRecord {
                id: i,
                payload: vec![i as u8; 3],
            });
            apply(&mut a, entry(1, i, r.clone(), 0));
            apply(&mut b, entry(1, i, r, 0));
        }
        assert_eq!(a.meta.test_log, b.meta.test_log);
        let mut c = SmState::default();
        apply(
            &mut c,
            entry(
                1,
                1,
                Record::Test(TestRecord {
                    id: 2,
                    payload: vec![2; 3],
                }),
                0,
            ),
        );
        assert_ne!(c.meta.test_log.digest, a.meta.test_log.digest);
    }
}
