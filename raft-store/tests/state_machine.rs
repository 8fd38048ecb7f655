//! The sled state machine keeps its state across a reopen, and snapshots move it between
//! stores (sled → memory → sled) unchanged.

use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::RaftSnapshotBuilder;
use tandem_raft_store::records::AuditEntry;
use tandem_raft_store::records::Command;
use tandem_raft_store::records::DbChange;
use tandem_raft_store::records::FileAttrs;
use tandem_raft_store::records::FileChange;
use tandem_raft_store::records::FileOp;
use tandem_raft_store::records::Record;
use tandem_raft_store::records::TestRecord;
use tandem_raft_store::sled_store;
use tandem_raft_store::state_machine::FileFeed;
use tandem_raft_store::Entry;
use tandem_raft_store::LogId;
use tandem_raft_store::StateMachineStore;

fn entries() -> Vec<Entry> {
    let records = vec![
        Record::Activate { node: 1, epoch: 3 },
        Record::File(FileChange {
            folder: "scenes".into(),
            path: "night/main.cfg".into(),
            op: FileOp::Write {
                size: 2,
                attrs: FileAttrs {
                    mode: 0o640,
                    uid: 0,
                    gid: 0,
                    mtime_ns: 1_700_000_000_000_000_000,
                },
                hash: *blake3::hash(&[1, 2]).as_bytes(),
                chunks: vec![],
                inline: Some(vec![1, 2]),
            },
        }),
        Record::Db(DbChange {
            source: "mariadb".into(),
            seq: 1,
            gtid: "0-1-77".into(),
            events: vec![1, 2, 3],
        }),
        Record::Audit(AuditEntry {
            at_ms: 5,
            actor: "alice".into(),
            action: "switchover".into(),
            detail: "to b".into(),
        }),
        Record::Test(TestRecord {
            id: 1,
            payload: b"hello".to_vec(),
        }),
    ];
    records
        .into_iter()
        .enumerate()
        .map(|(i, record)| Entry {
            log_id: LogId::new(LeaderId { term: 3, node_id: 1 }, i as u64 + 1),
            payload: EntryPayload::Normal(Command { epoch: 3, record }),
        })
        .collect()
}

async fn apply_all(sm: &mut StateMachineStore, entries: Vec<Entry>) {
    let stream = futures_util::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.unwrap();
}

#[tokio::test]
async fn sled_state_survives_reopen_and_snapshots_round_trip() {
    let dir = tempfile::tempdir().unwrap();

    // Apply a mix of records and remember the resulting state.
    let expected = {
        let (_log, mut sm) = sled_store::open(dir.path()).unwrap();
        apply_all(&mut sm, entries()).await;
        let state = sm.reader().read().clone();
        assert_eq!(state.files.len(), 1);
        assert_eq!(state.db_positions["mariadb"].gtid, "0-1-77");
        assert_eq!(state.audit.len(), 1);
        assert_eq!(state.meta.activation.as_ref().unwrap().epoch, 3);
        state
    };
    // The flusher thread lets go of the store's lock shortly after the handles drop.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Reopen: the same state is loaded from disk.
    let (_log, mut sm) = sled_store::open(dir.path()).unwrap();
    assert_eq!(*sm.reader().read(), expected);
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.unwrap().index, 5);

    // A snapshot installs into an in-memory store and back into a fresh sled store unchanged.
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut mem = StateMachineStore::in_memory();
    mem.install_snapshot(&snap.meta, snap.snapshot.clone()).await.unwrap();
    assert_eq!(*mem.reader().read(), expected);

    let dir2 = tempfile::tempdir().unwrap();
    let (_log2, mut sm2) = sled_store::open(dir2.path()).unwrap();
    sm2.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    assert_eq!(*sm2.reader().read(), expected);
    let current = sm2
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("installed snapshot is current");
    assert_eq!(current.meta, snap.meta);
}

#[tokio::test]
async fn a_snapshot_whose_data_disagrees_with_its_metadata_is_refused() {
    let mut sm = StateMachineStore::in_memory();
    apply_all(&mut sm, entries()).await;
    let mut snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    snap.meta.last_log_id = Some(LogId::new(LeaderId { term: 3, node_id: 1 }, 99));
    let mut other = StateMachineStore::in_memory();
    let err = other.install_snapshot(&snap.meta, snap.snapshot).await.unwrap_err();
    assert!(err.to_string().contains("metadata says"), "{err}");
    assert!(other.reader().read().meta.last_applied.is_none(), "nothing installed");
}

/// The node's file mirror learns of applied file changes only: a record the state machine
/// refuses (a path out of the folder, a stale epoch) never reaches the disk.
#[tokio::test]
async fn the_file_feed_carries_applied_changes_with_their_origin() {
    let mut sm = StateMachineStore::in_memory();
    let mut feed = sm.subscribe_files();
    let file = |path: &str, epoch| Command {
        epoch,
        record: Record::File(FileChange {
            folder: "scenes".into(),
            path: path.into(),
            op: FileOp::Mkdir {
                attrs: FileAttrs {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime_ns: 0,
                },
            },
        }),
    };
    let entry = |index: u64, term: u64, cmd| Entry {
        log_id: LogId::new(LeaderId { term, node_id: 1 }, index),
        payload: EntryPayload::Normal(cmd),
    };
    let activate = |node, epoch| Command {
        epoch,
        record: Record::Activate { node, epoch },
    };
    apply_all(
        &mut sm,
        vec![
            entry(1, 3, activate(1, 3)),
            entry(2, 3, file("ok", 3)),
            entry(3, 3, file("../escape", 3)),
            entry(4, 4, activate(2, 4)),
            entry(5, 4, file("late", 3)),
            entry(6, 4, file("from-b", 4)),
        ],
    )
    .await;
    let mut got = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(std::time::Duration::from_millis(50), feed.recv()).await {
        match item {
            FileFeed::Applied { index, origin, change } => got.push((index, origin, change.path)),
            FileFeed::Resync => panic!("no resync expected"),
        }
    }
    assert_eq!(
        got,
        vec![(2, Some(1), "ok".to_string()), (6, Some(2), "from-b".to_string())]
    );
}

/// A data node keeps each applied database change in its journal until its database holds it:
/// across a reopen, across a snapshot install, and only what the state machine applied.
#[tokio::test]
async fn the_database_journal_keeps_applied_changes_until_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let db = |seq: u64, epoch| Command {
        epoch,
        record: Record::Db(DbChange {
            source: "mariadb".into(),
            seq,
            gtid: format!("0-1-{seq}"),
            events: vec![seq as u8; 3],
        }),
    };
    let entry = |index: u64, cmd| Entry {
        log_id: LogId::new(LeaderId { term: 3, node_id: 1 }, index),
        payload: EntryPayload::Normal(cmd),
    };
    let activate = Command {
        epoch: 3,
        record: Record::Activate { node: 1, epoch: 3 },
    };
    {
        let (_log, mut sm) = sled_store::open(dir.path()).unwrap();
        let journal = sm.db_journal();
        journal.enable();
        // Seq 3 before 2 is refused by the state machine and never journaled; so is a stale epoch.
        apply_all(
            &mut sm,
            vec![
                entry(1, activate),
                entry(2, db(1, 3)),
                entry(3, db(3, 3)),
                entry(4, db(2, 3)),
                entry(5, db(3, 2)),
                entry(6, db(3, 3)),
            ],
        )
        .await;
        let seqs: Vec<(u64, u64)> = journal
            .read("mariadb", 0, 10)
            .iter()
            .map(|e| (e.change.seq, e.index))
            .collect();
        assert_eq!(seqs, vec![(1, 2), (2, 4), (3, 6)]);
        assert_eq!(journal.mark("mariadb"), 0);
        journal.trim("mariadb", 1).unwrap();
        assert_eq!(journal.first_seq("mariadb"), Some(2));
        assert_eq!(journal.mark("mariadb"), 1);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Reopened: what was not trimmed is there again, in order.
    let (_log, mut sm) = sled_store::open(dir.path()).unwrap();
    let journal = sm.db_journal();
    let seqs: Vec<u64> = journal.read("mariadb", 0, 10).iter().map(|e| e.change.seq).collect();
    assert_eq!(seqs, vec![2, 3]);
    assert_eq!(journal.get("mariadb", 3).unwrap().change.events, vec![3; 3]);
    assert_eq!(journal.mark("mariadb"), 1, "the mark is kept too");

    // A snapshot install replaces the state but keeps the journal, which is not in it.
    let mut other = StateMachineStore::in_memory();
    apply_all(&mut other, vec![entry(1, db(1, 0))]).await;
    let snap = other.get_snapshot_builder().await.build_snapshot().await.unwrap();
    sm.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    assert_eq!(sm.reader().read().db_positions["mariadb"].seq, 1);
    drop((_log, sm, journal));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (_log, sm) = sled_store::open(dir.path()).unwrap();
    assert_eq!(sm.db_journal().read("mariadb", 0, 10).len(), 2);
    assert_eq!(sm.db_journal().mark("mariadb"), 1);

    // A store whose journal is not enabled (the witness) keeps nothing.
    let mut witness = StateMachineStore::in_memory();
    apply_all(&mut witness, vec![entry(1, db(1, 0))]).await;
    assert!(witness.db_journal().read("mariadb", 0, 10).is_empty());
}
