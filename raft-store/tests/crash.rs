//! SIGKILL crash test for the sled store.
//!
//! A child process appends entries and prints each acknowledgement only after the store's
//! completion callback said the entries are flushed. The parent kills it with SIGKILL at a
//! random moment, reopens the store, and checks that every acknowledged entry is present and
//! intact. Several rounds run on the same directory, so recovery of a store that was itself
//! recovered is covered too.

use std::io::BufRead;
use std::io::BufReader;
use std::path::Path;
use std::process::Command as Process;
use std::process::Stdio;
use std::time::Duration;

use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::type_config::TypeConfigExt;
use openraft::EntryPayload;
use openraft::RaftLogReader;
use rand::RngExt;
use tandem_raft_store::records::Command;
use tandem_raft_store::records::Record;
use tandem_raft_store::records::TestRecord;
use tandem_raft_store::sled_store;
use tandem_raft_store::Entry;
use tandem_raft_store::LogId;
use tandem_raft_store::TypeConfig;
use tandem_raft_store::Vote;

const CHILD_DIR_ENV: &str = "TANDEM_CRASH_CHILD_DIR";

/// The content every entry must have, derived from its index alone.
fn expected_entry(index: u64) -> Entry {
    let len = (index * 37 % 300) as usize;
    let payload = (0..len).map(|i| (index as usize + i) as u8).collect();
    Entry {
        log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index),
        payload: EntryPayload::Normal(Command {
            epoch: 1,
            record: Record::Test(TestRecord { id: index, payload }),
        }),
    }
}

#[tokio::test]
#[ignore = "helper process: started by sigkill_never_loses_an_acknowledged_entry, not on its own"]
async fn crash_child_appender() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("run by the crash test");
    // The parent's handles on the store may take a moment to let go of sled's file lock.
    let mut attempts = 0;
    let (mut log, _sm) = loop {
        match sled_store::open(Path::new(&dir)) {
            Ok(store) => break store,
            Err(e) if attempts < 100 => {
                attempts += 1;
                eprintln!("store busy, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("open store: {e}"),
        }
    };
    let mut next = log
        .get_log_state()
        .await
        .unwrap()
        .last_log_id
        .map_or(1, |l| l.index + 1);
    let mut rng = rand::rng();
    loop {
        let batch: u64 = rng.random_range(1..=16);
        let entries: Vec<Entry> = (next..next + batch).map(expected_entry).collect();
        let (tx, rx) = TypeConfig::oneshot();
        log.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();
        next += batch;
        if rng.random_ratio(1, 8) {
            let term = next;
            log.save_vote(&Vote::new(term, 1)).await.unwrap();
            println!("vote {term}");
        }
        println!("acked {}", next - 1);
    }
}

#[tokio::test]
async fn sigkill_never_loses_an_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut total_acked = 0;
    for round in 0..4 {
        // Start the appender and kill it at a random moment.
        let mut child = Process::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_appender",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut acked, mut vote) = (0u64, 0u64);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("acked ") {
                    acked = n.parse().unwrap();
                } else if let Some(n) = line.strip_prefix("vote ") {
                    vote = n.parse().unwrap();
                }
            }
            (acked, vote)
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (acked, vote) = reader.join().unwrap();
        assert!(acked > total_acked, "round {round}: the child made no progress");
        total_acked = acked;

        // Reopen: every acknowledged entry is present and intact, the vote is not older.
        let (mut log, _sm) = sled_store::open(dir.path()).expect("reopen after SIGKILL");
        let entries = log.try_get_log_entries(1..=acked).await.unwrap();
        assert_eq!(
            entries.len() as u64,
            acked,
            "round {round}: acknowledged entries missing"
        );
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(
                *entry,
                expected_entry(i as u64 + 1),
                "round {round}: entry {} corrupt",
                i + 1
            );
        }
        if vote > 0 {
            let saved = log.read_vote().await.unwrap().expect("a saved vote survives");
            assert!(saved >= Vote::new(vote, 1), "round {round}: vote went back");
        }
        eprintln!("round {round}: {acked} acknowledged entries intact");
    }
}
