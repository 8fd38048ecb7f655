//! File replication on the real three-process cluster: the active's sync folder is changed the
//! way a service changes it, and the standby's copy is compared file by file (content hash,
//! mode, mtime, links).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use tandem_client::api::FilesInfo;
use tandem_tests::other_data_node;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;
use tandem_tests::Sysctl;

const SETTLE: Duration = Duration::from_secs(30);
const TEMP_PREFIX: &str = tandem_node::files::disk::TEMP_PREFIX;

/// What a test compares of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File {
        hash: String,
        mode: u32,
        mtime_ns: i128,
        owner: (u32, u32),
    },
    Dir {
        mode: u32,
    },
    Link(String),
}

/// Every entry under `root`, by relative path, leaving out `skip`.
fn tree(root: &Path, skip: &[&str]) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            // A temp file being written under its own name is fine; what matters is that the
            // real names only ever hold complete versions.
            if skip.contains(&rel.as_str()) || e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                continue;
            }
            // Entries may vanish while the mirror works: the next look sees the new state.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let entry = if meta.file_type().is_symlink() {
                let Ok(target) = std::fs::read_link(&path) else {
                    continue;
                };
                Entry::Link(target.to_str().unwrap().to_string())
            } else if meta.is_dir() {
                stack.push(path.clone());
                Entry::Dir {
                    mode: meta.mode() & 0o7777,
                }
            } else {
                let Ok(data) = std::fs::read(&path) else { continue };
                Entry::File {
                    hash: blake3::hash(&data).to_hex().to_string(),
                    mode: meta.mode() & 0o7777,
                    mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                    owner: (meta.uid(), meta.gid()),
                }
            };
            out.insert(rel, entry);
        }
    }
    out
}

struct Setup {
    cluster: Cluster,
    folders: tempfile::TempDir,
    _limits: Limits,
}

/// The kernel's inotify limits are one setting for the whole machine. A test that lowers them
/// runs alone: every other test holds this shared for its whole life, since its nodes set
/// watches at any time (a capture starts again after a failover).
static KERNEL_LIMITS: std::sync::RwLock<()> = std::sync::RwLock::new(());

enum Limits {
    Shared(#[allow(dead_code)] std::sync::RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] std::sync::RwLockWriteGuard<'static, ()>),
}

impl Limits {
    fn shared() -> Limits {
        Limits::Shared(KERNEL_LIMITS.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn alone() -> Limits {
        Limits::Alone(KERNEL_LIMITS.write().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Setup {
    fn start(extra: &str) -> Setup {
        Self::start_with(extra, "")
    }

    /// `extra`: more TOML for the data nodes; `all`: for every node.
    fn start_with(extra: &str, all: &str) -> Setup {
        Self::start_in(tempfile::tempdir().unwrap(), extra, all)
    }

    /// A cluster whose data nodes keep folder `scenes` in `folders/<node>`, as found there.
    fn start_in(folders: tempfile::TempDir, extra: &str, all: &str) -> Setup {
        Self::start_holding(folders, extra, all, Limits::shared())
    }

    fn start_holding(folders: tempfile::TempDir, extra: &str, all: &str, limits: Limits) -> Setup {
        let data_config = format!(
            "[[sync]]\nid = \"scenes\"\npath = \"{}/@NODE@\"\nignore = [\"licence.key\", \"*.swp\"]\n{extra}",
            folders.path().display()
        );
        let cluster = Cluster::start_initialized(ClusterOptions {
            data_config,
            extra_config: all.to_string(),
            ..Default::default()
        })
        .unwrap();
        Setup {
            cluster,
            folders,
            _limits: limits,
        }
    }

    fn folder(&self, node: &str) -> PathBuf {
        self.folders.path().join(node)
    }

    fn files(&self, node: &str) -> FilesInfo {
        let client = self.cluster.client(node);
        self.cluster.block_on(client.files()).unwrap()
    }

    /// Wait until the standby's folder equals the active's and the standby says it is synced.
    fn wait_mirrored(&self, active: &str, what: &str) {
        let standby = other_data_node(active);
        let skip = ["licence.key", "x.swp"];
        let started = Instant::now();
        loop {
            let a = tree(&self.folder(active), &skip);
            let b = tree(&self.folder(standby), &skip);
            let synced = self
                .cluster
                .block_on(self.cluster.client(standby).files())
                .is_ok_and(|f| f.synced);
            if a == b && synced {
                return;
            }
            if started.elapsed() > SETTLE {
                let only_a: Vec<_> = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).take(10).collect();
                let only_b: Vec<_> = b.iter().filter(|(k, v)| a.get(*k) != Some(v)).take(10).collect();
                let files = |n| self.cluster.block_on(self.cluster.client(n).files());
                panic!(
                    "{what}: standby {standby} did not mirror {active} within {SETTLE:?} (synced: {synced})\n\
                     active only/different: {only_a:?}\nstandby only/different: {only_b:?}\n\
                     active's mirror: {:?}\nstandby's mirror: {:?}\n{}",
                    files(active),
                    files(standby),
                    self.cluster.log_tail(standby)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn changes_on_the_active_appear_on_the_standby() {
    let setup = Setup::start("");
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    let root = setup.folder(active);
    // The standby keeps its own licence file; it must survive everything below.
    write(&setup.folder(standby).join("licence.key"), b"licence of the standby");

    write(&root.join("scene.cfg"), b"night shift\n");
    write(&root.join("empty"), b"");
    write(&root.join("maps/north/a.map"), &noise(10_000, 1));
    write(&root.join("maps/south/b.map"), &noise(3 * 1024 * 1024, 2));
    write(&root.join("licence.key"), b"licence of the active");
    write(&root.join("x.swp"), b"editor swap");
    std::os::unix::fs::symlink("maps/north/a.map", root.join("current.map")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    setup.wait_mirrored(active, "creates");
    let b = setup.folder(standby);
    assert_eq!(std::fs::read(b.join("licence.key")).unwrap(), b"licence of the standby");
    assert!(!b.join("x.swp").exists(), "ignored files stay local");

    // Edits, permissions, renames of a file and of a directory, deletes.
    write(&root.join("scene.cfg"), b"day shift\n");
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(root.join("empty"), Some(1234), Some(4321)).unwrap();
    std::fs::rename(root.join("maps/north"), root.join("maps/west")).unwrap();
    std::fs::rename(root.join("scene.cfg"), root.join("scene-1.cfg")).unwrap();
    std::fs::remove_file(root.join("maps/south/b.map")).unwrap();
    std::fs::remove_dir(root.join("empty-dir")).unwrap();
    setup.wait_mirrored(active, "edits, renames, deletes");
    let owner = std::fs::metadata(b.join("empty")).unwrap();
    assert_eq!((owner.uid(), owner.gid(), owner.mode() & 0o7777), (1234, 4321, 0o600));
    assert_eq!(std::fs::read(b.join("licence.key")).unwrap(), b"licence of the standby");
    assert!(
        std::fs::symlink_metadata(b.join("current.map"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link stays a link (now dangling, as on the active)"
    );

    // Thousands of small changes settle to the same tree.
    for i in 0..1500 {
        write(
            &root.join(format!("bulk/{}/{i}.txt", i % 30)),
            format!("line {i}\n").as_bytes(),
        );
    }
    for i in (0..1500).step_by(3) {
        std::fs::remove_file(root.join(format!("bulk/{}/{i}.txt", i % 30))).unwrap();
    }
    for i in (1..1500).step_by(3) {
        write(
            &root.join(format!("bulk/{}/{i}.txt", i % 30)),
            format!("edited {i}\n").as_bytes(),
        );
    }
    setup.wait_mirrored(active, "bulk changes");

    let info = setup.files(standby);
    assert!(
        info.synced && info.pending_files == 0 && info.stalled.is_none(),
        "{info:?}"
    );
    // Creates, edits and deletes of one path that settle together become one change.
    assert!(info.counters.applied >= 1000, "{:?}", info.counters);
    let active_info = setup.files(active);
    assert!(active_info.capturing, "{active_info:?}");
    assert!(
        active_info.counters.pushed_bytes >= 3 * 1024 * 1024,
        "the large file went through staging: {:?}",
        active_info.counters
    );
    let leftovers: Vec<_> = walkdir(&b).into_iter().filter(|p| p.contains(TEMP_PREFIX)).collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

fn walkdir(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[test]
fn a_one_byte_edit_of_a_200_mb_file_moves_about_one_chunk() {
    let setup = Setup::start("");
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    let big = setup.folder(active).join("video.bin");
    let mut data = noise(200 * 1024 * 1024, 9);
    write(&big, &data);
    setup.wait_mirrored(active, "200 MB file");
    let before = setup.files(active).counters;
    assert!(before.pushed_bytes >= 200 * 1024 * 1024, "{before:?}");

    data[123_456_789] ^= 0x5a;
    write(&big, &data);
    setup.wait_mirrored(active, "1-byte edit");
    let after = setup.files(active).counters;
    let moved = after.pushed_bytes - before.pushed_bytes;
    // One chunk is 64 KiB on average and at most 256 KiB; the edit may straddle a cut.
    assert!(
        moved > 0 && moved <= 2 * 256 * 1024,
        "a 1-byte edit moved {moved} bytes ({before:?} → {after:?})"
    );
    let standby_info = setup.files(standby);
    assert!(standby_info.synced, "{standby_info:?}");
    assert_eq!(standby_info.counters.fetched_bytes, 0, "nothing had to be fetched");
}

impl Setup {
    /// The committed state of the folder, as `node` holds it in its replicated index.
    fn manifest(&self, node: &str) -> BTreeMap<String, tandem_client::api::ManifestEntry> {
        let entries = self
            .cluster
            .block_on(self.cluster.client(node).file_manifest_all("scenes"))
            .unwrap();
        entries.into_iter().map(|e| (e.path.clone(), e)).collect()
    }

    /// Differences between `node`'s folder and the committed state (empty: it holds exactly
    /// that, every file hash-verified).
    fn differences_from_committed(&self, node: &str, committed_by: &str, skip: &[&str]) -> Vec<String> {
        let committed = self.manifest(committed_by);
        let disk = tree(&self.folder(node), skip);
        let mut diffs = Vec::new();
        for (path, e) in &committed {
            let ok = match (e.kind.as_str(), disk.get(path)) {
                (
                    "file",
                    Some(Entry::File {
                        hash,
                        mode,
                        mtime_ns,
                        owner,
                    }),
                ) => *hash == e.hash && *mode == e.mode && *mtime_ns == e.mtime_ns && *owner == (e.uid, e.gid),
                ("dir", Some(Entry::Dir { .. })) => true,
                ("symlink", Some(Entry::Link(t))) => Some(t) == e.target.as_ref(),
                _ => false,
            };
            if !ok {
                diffs.push(format!("{path}: committed {e:?}, on disk {:?}", disk.get(path)));
            }
        }
        for path in disk.keys() {
            // Parent directories of committed files need not be entries of their own.
            let parent_of_committed = committed.keys().any(|c| c.starts_with(&format!("{path}/")));
            if !committed.contains_key(path) && !parent_of_committed {
                diffs.push(format!("{path}: on disk, not committed"));
            }
        }
        diffs
    }

    fn wait_committed_state(&self, node: &str, committed_by: &str, skip: &[&str], what: &str) {
        let started = Instant::now();
        loop {
            let diffs = self.differences_from_committed(node, committed_by, skip);
            if diffs.is_empty() {
                return;
            }
            if started.elapsed() > SETTLE {
                panic!(
                    "{what}: {node}'s folder does not hold the committed state: {:?}\n{}",
                    &diffs[..diffs.len().min(10)],
                    self.cluster.log_tail(node)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn sigkill_of_the_active_keeps_the_committed_state_and_quarantines_the_rest() {
    let mut setup = Setup::start("");
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    let root = setup.folder(active);
    write(&root.join("keep/settings.cfg"), b"committed settings\n");
    setup.wait_mirrored(active, "first files");

    // A service writing flat out: creates, edits, renames and deletes, a 200 MB file among
    // them, and a large file rewritten again and again.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            write(&root.join("load/video.bin"), &noise(200 * 1024 * 1024, 77));
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let dir = root.join(format!("load/{}", i % 20));
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(dir.join(format!("{i}.txt")), format!("record {i}\n"));
                if i % 7 == 0 {
                    let _ = std::fs::rename(dir.join(format!("{i}.txt")), dir.join(format!("{i}.moved")));
                }
                if i % 5 == 0 && i >= 5 {
                    let _ = std::fs::remove_file(root.join(format!("load/{}/{}.txt", (i - 5) % 20, i - 5)));
                }
                if i % 200 == 0 {
                    let _ = std::fs::write(root.join("load/big.bin"), noise(4 * 1024 * 1024, i));
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // The 200 MB file commits while the load goes on; the SIGKILL comes a moment later.
    let started = Instant::now();
    while !setup.manifest("w").contains_key("load/video.bin") {
        assert!(started.elapsed() < SETTLE, "the 200 MB file never committed");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    setup.cluster.kill(active);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let new_active = setup.cluster.wait_active(Some(active), SETTLE);
    assert_eq!(new_active, standby);

    // The new active holds exactly what committed, each file verified against the index the
    // witness holds, and no temp file.
    setup.wait_committed_state(standby, "w", &[], "after SIGKILL");
    let leftovers: Vec<_> = walkdir(&setup.folder(standby))
        .into_iter()
        .filter(|p| p.contains(TEMP_PREFIX))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    // While the old active is down: the service there had written things that never
    // committed, and the new active goes on changing the folder.
    write(&root.join("never-committed.txt"), b"written just before the crash\n");
    write(&root.join("keep/settings.cfg"), b"edited just before the crash\n");
    write(
        &setup.folder(standby).join("after-failover.txt"),
        b"written on the new active\n",
    );
    setup.wait_committed_state(standby, "w", &[], "new active's own change");

    setup.cluster.restart(active).unwrap();
    // The returning node holds the committed state; its own uncommitted changes are in
    // quarantine, listed in the API, with their content.
    setup.wait_committed_state(active, "w", &[], "rejoined node");
    setup.wait_mirrored(standby, "rejoined node mirrors the new active");
    let info = setup.files(active);
    let quarantined: BTreeMap<&str, &str> = info
        .quarantined
        .iter()
        .map(|q| (q.path.as_str(), q.moved_to.as_str()))
        .collect();
    for (path, content) in [
        ("never-committed.txt", "written just before the crash\n"),
        ("keep/settings.cfg", "edited just before the crash\n"),
    ] {
        let moved_to = quarantined
            .get(path)
            .unwrap_or_else(|| panic!("{path} not in quarantine: {quarantined:?}"));
        assert_eq!(std::fs::read_to_string(moved_to).unwrap(), content);
        assert!(moved_to.contains("epoch-"), "{moved_to}");
    }
    assert_eq!(
        std::fs::read_to_string(setup.folder(active).join("keep/settings.cfg")).unwrap(),
        "committed settings\n"
    );
}

#[test]
fn a_standby_that_was_down_fetches_only_what_changed() {
    // A short log: the returning standby gets a snapshot of the index, not the records, and
    // compares its whole folder with it.
    let mut setup = Setup::start_with("", "[log]\nsnapshot_every_entries = 20\nkept_after_snapshot = 5\n");
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    let root = setup.folder(active);
    let mut big = noise(20 * 1024 * 1024, 5);
    write(&root.join("archive.bin"), &big);
    for i in 0..50 {
        write(&root.join(format!("small/{i}.cfg")), format!("value {i}\n").as_bytes());
    }
    setup.wait_mirrored(active, "first copy");

    let standby_last = setup.cluster.status(standby).unwrap().last_log_index.unwrap();
    setup.cluster.kill(standby);
    big[7_000_000] ^= 1;
    write(&root.join("archive.bin"), &big);
    for i in 0..10 {
        write(
            &root.join(format!("small/{i}.cfg")),
            format!("changed {i}\n").as_bytes(),
        );
    }
    std::fs::remove_file(root.join("small/49.cfg")).unwrap();
    write(&root.join("new/report.txt"), b"made while the standby was down\n");
    for i in 0..40 {
        write(&root.join(format!("new/{i}.log")), format!("entry {i}\n").as_bytes());
    }
    setup.wait_committed_state(active, "w", &[], "changes while the standby is down");
    setup
        .cluster
        .wait_for("the leader purged entries the standby lacks", SETTLE, |s| {
            s.leader_status()
                .is_some_and(|l| l.purged_index.is_some_and(|p| p > standby_last))
        })
        .unwrap();

    setup.cluster.restart(standby).unwrap();
    setup.wait_mirrored(active, "resync");
    let c = setup.files(standby).counters;
    assert!(
        c.fetched_bytes <= 2 * 256 * 1024,
        "the returning standby fetched {} bytes for a 1-byte change of a 20 MiB file: {c:?}",
        c.fetched_bytes
    );
    let a = setup.files(active).counters;
    assert!(a.pushed_bytes < 21 * 1024 * 1024 + 2 * 256 * 1024, "{a:?}");
    // The log it missed was compacted: it compared its folder with the index and fetched.
    let events = events_of(&setup, standby);
    assert!(
        events.iter().any(|e| e.contains("to fetch from the other data node")),
        "{events:?}"
    );
}

#[test]
fn content_only_the_dead_active_held_stays_committed_and_comes_back_with_it() {
    let mut setup = Setup::start("");
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    let root = setup.folder(active);
    // Larger than inline records: their content goes only to the data nodes.
    let (v1, v2, fresh) = (noise(600_000, 1), noise(600_000, 2), noise(700_000, 3));
    write(&root.join("scene.bin"), &v1);
    setup.wait_mirrored(active, "first version");

    // The standby is down: the next versions commit with the witness, their content only on
    // the active (its push found nobody to take it).
    setup.cluster.kill(standby);
    write(&root.join("scene.bin"), &v2);
    write(&root.join("fresh.bin"), &fresh);
    let hex = |d: &[u8]| blake3::hash(d).to_hex().to_string();
    let started = Instant::now();
    loop {
        let m = setup.manifest("w");
        if m.get("scene.bin").is_some_and(|e| e.hash == hex(&v2))
            && m.get("fresh.bin").is_some_and(|e| e.hash == hex(&fresh))
        {
            break;
        }
        assert!(started.elapsed() < SETTLE, "the second versions never committed: {m:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The active dies before the standby could fetch them; the standby comes back, the
    // witness catches it up and hands it the lead.
    setup.cluster.kill(active);
    setup.cluster.restart(standby).unwrap();
    assert_eq!(setup.cluster.wait_active(Some(active), SETTLE), standby);
    wait_capturing(&setup, standby);
    // Its folder has the first version and no fresh.bin. It must not commit that as the
    // folder's state: the committed versions stay, pending, and it says so.
    std::thread::sleep(Duration::from_secs(1));
    let m = setup.manifest("w");
    assert_eq!(m["scene.bin"].hash, hex(&v2), "the new active undid a committed change");
    assert_eq!(m["fresh.bin"].hash, hex(&fresh));
    let info = setup.files(standby);
    assert_eq!(info.pending_files, 2, "{info:?}");
    assert_eq!(std::fs::read(setup.folder(standby).join("scene.bin")).unwrap(), v1);
    let events = events_of(&setup, standby);
    assert!(
        events
            .iter()
            .any(|e| e.contains("never reached this node: scenes/fresh.bin, scenes/scene.bin")),
        "{events:?}"
    );

    // The old active returns as standby with the content on its disk: the new active fetches
    // it, and both hold exactly the committed state.
    setup.cluster.restart(active).unwrap();
    setup.wait_committed_state(standby, "w", &[], "content fetched from the returning node");
    setup.wait_mirrored(standby, "the returning node mirrors the new active");
    assert_eq!(setup.files(standby).pending_files, 0);
    assert!(
        setup.files(active).quarantined.is_empty(),
        "nothing there was uncommitted"
    );
}

#[test]
fn a_copy_that_keeps_size_and_mtime_still_replaces_the_file() {
    // `cp -p`, `tar x` or `rsync -t` restoring another version of a file: same size, same
    // mtime, other content. Size and mtime alone would call it unchanged.
    let setup = Setup::start("");
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    let root = setup.folder(active);
    let outside = setup.folders.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let cases = [
        ("small.cfg", noise(1000, 11), noise(1000, 12)),
        ("large.bin", noise(900_000, 13), noise(900_000, 14)),
    ];
    for (name, first, _) in &cases {
        write(&root.join(name), first);
    }
    setup.wait_mirrored(active, "first versions");
    for (name, _, second) in &cases {
        let mtime = std::fs::metadata(root.join(name)).unwrap().modified().unwrap();
        let staged = outside.join(name);
        write(&staged, second);
        std::fs::File::options()
            .write(true)
            .open(&staged)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&staged, root.join(name)).unwrap();
    }
    setup.wait_mirrored(active, "second versions, same size and mtime");
    for (name, _, second) in &cases {
        assert_eq!(
            &std::fs::read(setup.folder(standby).join(name)).unwrap(),
            second,
            "{name}"
        );
    }
}

#[test]
fn a_rename_onto_a_file_changed_on_the_standby_moves_that_change_to_quarantine() {
    let setup = Setup::start("");
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    let root = setup.folder(active);
    write(&root.join("current.cfg"), b"committed\n");
    write(&root.join("next.cfg"), b"the next settings\n");
    setup.wait_mirrored(active, "first files");
    // Someone edits the standby's copy by hand, then the service swaps the next file in.
    write(&setup.folder(standby).join("current.cfg"), b"edited on the standby\n");
    std::fs::rename(root.join("next.cfg"), root.join("current.cfg")).unwrap();
    setup.wait_mirrored(active, "after the rename");
    let info = setup.files(standby);
    let moved = info
        .quarantined
        .iter()
        .find(|q| q.path == "current.cfg")
        .unwrap_or_else(|| panic!("the hand edit was not kept: {:?}", info.quarantined));
    assert_eq!(std::fs::read(&moved.moved_to).unwrap(), b"edited on the standby\n");
}

/// A tmpfs mounted for the life of a test.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs at {} (the test runs as root)", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_on_the_standby_stops_applying_and_resumes_when_space_returns() {
    // Both data nodes keep the folder on a small file system of its own.
    let folders = tempfile::tempdir().unwrap();
    let _mounts: Vec<Tmpfs> = ["a", "b"]
        .iter()
        .map(|n| Tmpfs::mount(&folders.path().join(n), "16m"))
        .collect();
    let setup = Setup::start_in(folders, "", "");
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    write(&setup.folder(active).join("before.txt"), b"fits\n");
    setup.wait_mirrored(active, "before the disk fills");

    // Fill the standby's file system to within 1 MiB.
    // Ignored, so it is the standby's own.
    let ballast = setup.folder(standby).join("ballast.swp");
    write(&ballast, &vec![0u8; 15 * 1024 * 1024]);
    let data = noise(3 * 1024 * 1024, 11);
    write(&setup.folder(active).join("scene.bin"), &data);

    let started = Instant::now();
    loop {
        let info = setup.files(standby);
        if info.stalled.is_some() {
            break;
        }
        assert!(started.elapsed() < SETTLE, "the standby never stopped: {info:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A change committed after the one that does not fit waits behind it.
    write(&setup.folder(active).join("zz-after.txt"), b"queued behind\n");
    let started = Instant::now();
    while !setup.manifest("w").contains_key("zz-after.txt") {
        assert!(started.elapsed() < SETTLE, "zz-after.txt never committed");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let info = setup.files(standby);
    assert!(!info.synced, "{info:?}");
    assert!(info.stalled.as_deref().unwrap().contains("no space"), "{info:?}");
    let b = setup.folder(standby);
    assert!(
        !b.join("scene.bin").exists(),
        "nothing under the real name while the disk is full"
    );
    assert!(
        !b.join("zz-after.txt").exists(),
        "later changes wait: they are applied in order"
    );
    // The active hears of it with the next heartbeat.
    setup
        .cluster
        .wait_cluster_status(active, "not synced", "stopped applying file changes", SETTLE);
    let events = events_of(&setup, standby);
    assert!(events.iter().any(|e| e.contains("file mirror stopped")), "{events:?}");

    // Space returns: the standby resumes by itself, in order, and is synced again.
    std::fs::remove_file(&ballast).unwrap();
    setup.wait_mirrored(active, "after space returned");
    assert_eq!(std::fs::read(b.join("scene.bin")).unwrap(), data);
    let leftovers: Vec<_> = walkdir(&b).into_iter().filter(|p| p.contains(TEMP_PREFIX)).collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn bad_content_and_paths_on_the_peer_port_are_refused_and_change_nothing() {
    use tandem_node::files::chunk::encode_batch;
    use tandem_node::files::transfer::GetRequest;
    use tandem_node::files::transfer::ManifestRequest;
    use tandem_raft_store::codec;

    let post = |addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        tandem_tests::http_request(addr, "POST", path, headers, body)
    };
    let setup = Setup::start("");
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    write(&setup.folder(active).join("a.cfg"), b"fine\n");
    setup.wait_mirrored(active, "first file");
    let peer = setup.cluster.spec(standby).peer_addr();
    let secret = [("x-tandem-cluster-secret", tandem_tests::SECRET)];
    let staging = setup.cluster.data_dir(standby).join("files/staging");
    let staged = || walkdir(&staging).len();
    let before = staged();

    // A chunk whose content does not match its hash.
    let lie = encode_batch(vec![([7; 32], b"not what the hash says".to_vec())]).unwrap();
    let (status, body) = post(&peer, "/peer/files/put", &secret, &lie).unwrap();
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("does not match its hash"));
    // Garbage instead of a compressed batch, and a batch larger than its limit once inflated.
    let (status, _) = post(&peer, "/peer/files/put", &secret, b"garbage").unwrap();
    assert_eq!(status, 422);
    let bomb = vec![0u8; tandem_node::files::chunk::BATCH_MAX_BYTES + 1];
    let bomb = encode_batch(vec![(*blake3::hash(&bomb).as_bytes(), bomb)]).unwrap();
    let (status, body) = post(&peer, "/peer/files/put", &secret, &bomb).unwrap();
    assert_eq!(status, 422);
    assert!(String::from_utf8_lossy(&body).contains("BATCH_MAX_BYTES"));
    // Without the cluster secret nothing is even read.
    let good = b"a real chunk".to_vec();
    let good = encode_batch(vec![(*blake3::hash(&good).as_bytes(), good)]).unwrap();
    let (status, _) = post(&peer, "/peer/files/put", &[], &good).unwrap();
    assert_eq!(status, 401);
    assert_eq!(staged(), before, "nothing was staged");

    // Paths that leave the folder, absolute or through `..`, and unknown folders.
    for path in ["../../etc/passwd", "/etc/passwd", "a/../../x"] {
        let req = codec::encode(&ManifestRequest {
            folder: "scenes".into(),
            path: path.into(),
        })
        .unwrap();
        let (status, body) = post(&peer, "/peer/files/manifest", &secret, &req).unwrap();
        assert_eq!(status, 422, "{path}: {}", String::from_utf8_lossy(&body));
        let req = codec::encode(&GetRequest {
            folder: "scenes".into(),
            path: path.into(),
            hash: [0; 32],
            chunks: vec![],
        })
        .unwrap();
        let (status, _) = post(&peer, "/peer/files/get", &secret, &req).unwrap();
        assert_eq!(status, 422, "{path}");
    }
    let req = codec::encode(&ManifestRequest {
        folder: "elsewhere".into(),
        path: "a.cfg".into(),
    })
    .unwrap();
    let (status, body) = post(&peer, "/peer/files/manifest", &secret, &req).unwrap();
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("not configured"));

    // A symlink on the disk pointing out of the folder is not followed to serve content.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(outside.path(), setup.folder(standby).join("out")).unwrap();
    let req = codec::encode(&ManifestRequest {
        folder: "scenes".into(),
        path: "out/secret".into(),
    })
    .unwrap();
    let (status, _) = post(&peer, "/peer/files/manifest", &secret, &req).unwrap();
    assert_eq!(status, 422);
    // And the mirror still works.
    write(&setup.folder(active).join("b.cfg"), b"still fine\n");
    setup.wait_committed_state(standby, "w", &["out"], "after the bad requests");
}

fn events_of(setup: &Setup, node: &str) -> Vec<String> {
    let q = tandem_client::EventsQuery {
        local: true,
        ..Default::default()
    };
    let page = setup.cluster.block_on(setup.cluster.client(node).events(&q)).unwrap();
    page.events.into_iter().map(|e| e.detail).collect()
}

fn wait_capturing(setup: &Setup, node: &str) {
    let started = Instant::now();
    while !setup.files(node).capturing {
        assert!(started.elapsed() < SETTLE, "{node} never started capturing");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lost_notifications_and_a_watch_limit_fall_back_to_rescans() {
    // The kernel's notification queue of the active's watch holds 16 events: a burst of
    // creates overflows it.
    let setup = {
        let alone = Limits::alone();
        let _small_queue = Sysctl::set("/proc/sys/fs/inotify/max_queued_events", "16");
        let setup = Setup::start_holding(tempfile::tempdir().unwrap(), "", "", alone);
        let active = setup.cluster.wait_active(None, SETTLE);
        wait_capturing(&setup, active);
        setup
    };
    let active = setup.cluster.wait_active(None, SETTLE);
    for i in 0..400 {
        write(&setup.folder(active).join(format!("burst/{}/{i}", i % 4)), b"x");
    }
    setup.wait_mirrored(active, "after an overflow");
    assert!(
        setup.files(active).counters.rescans >= 1,
        "{:?}",
        setup.files(active).counters
    );
    assert!(
        events_of(&setup, active)
            .iter()
            .any(|e| e.contains("change notifications were lost")),
        "{:?}",
        events_of(&setup, active)
    );
    drop(setup);

    // No watch can be set at all: the folder is rescanned every few seconds instead.
    let folders = tempfile::tempdir().unwrap();
    for node in ["a", "b"] {
        for d in 0..5 {
            std::fs::create_dir_all(folders.path().join(format!("{node}/d{d}"))).unwrap();
        }
    }
    let setup = {
        let alone = Limits::alone();
        let _no_watches = Sysctl::set("/proc/sys/fs/inotify/max_user_watches", "1");
        let setup = Setup::start_holding(folders, "", "", alone);
        let active = setup.cluster.wait_active(None, SETTLE);
        wait_capturing(&setup, active);
        setup
    };
    let active = setup.cluster.wait_active(None, SETTLE);
    write(&setup.folder(active).join("d3/found-by-a-rescan"), b"polled\n");
    setup.wait_mirrored(active, "without a watch");
    let events = events_of(&setup, active);
    assert!(setup.files(active).counters.rescans >= 1, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e.contains("cannot be watched") && e.contains("max_user_watches")),
        "{events:?}"
    );
}

#[test]
fn a_rate_limited_resync_shows_its_progress() {
    let mut setup = Setup::start("resync_rate_limit_mib_s = 4\n");
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    write(&setup.folder(active).join("seed.txt"), b"seed\n");
    setup.wait_mirrored(active, "seed");
    setup.cluster.kill(standby);
    // Two files the standby will have to fetch: 12 MiB at 4 MiB/s.
    write(&setup.folder(active).join("one.bin"), &noise(6 * 1024 * 1024, 21));
    write(&setup.folder(active).join("two.bin"), &noise(6 * 1024 * 1024, 22));
    setup.wait_committed_state(active, "w", &[], "written while the standby is down");
    let started = Instant::now();
    setup.cluster.restart(standby).unwrap();
    let mut seen = None;
    while started.elapsed() < SETTLE {
        let info = setup.files(standby);
        if let Some(p) = info.progress {
            if p.bytes_done > 0 && p.bytes_done < p.bytes_total {
                seen = Some(p);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let p = seen.expect("no progress under way was ever shown");
    assert_eq!(p.files_total, 2, "{p:?}");
    assert!(p.bytes_total >= 12 * 1024 * 1024, "{p:?}");
    assert!(p.rate_bytes_per_sec > 0 && p.eta_secs.is_some(), "{p:?}");
    setup.wait_mirrored(active, "rate-limited resync");
    // The limit holds the fetch to at least 12 MiB / 4 MiB/s; fetching without it takes a
    // fraction of a second here.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "12 MiB at 4 MiB/s took only {:?}",
        started.elapsed()
    );
}

#[test]
fn existing_folders_are_mirrored_from_the_first_active_moving_only_what_differs() {
    // Both machines already hold a copy (say, from an rsync job); they differ a little.
    let folders = tempfile::tempdir().unwrap();
    let shared = noise(6 * 1024 * 1024, 31);
    for node in ["a", "b"] {
        let root = folders.path().join(node);
        write(&root.join("media/shared.bin"), &shared);
        write(&root.join("same.cfg"), b"same on both\n");
        write(
            &root.join("conflict.cfg"),
            format!("the version of {node}\n").as_bytes(),
        );
        write(&root.join(format!("only-on-{node}.txt")), b"mine\n");
    }
    let setup = Setup::start_in(folders, "", "");
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);

    // The first active's copy is the cluster's: nothing of it moved or lost.
    setup.wait_mirrored(active, "initial mirroring");
    let a = setup.folder(active);
    assert_eq!(std::fs::read(a.join("media/shared.bin")).unwrap(), shared);
    assert_eq!(
        std::fs::read_to_string(a.join("conflict.cfg")).unwrap(),
        format!("the version of {active}\n")
    );
    assert!(a.join(format!("only-on-{active}.txt")).exists());
    assert!(!a.join(format!("only-on-{standby}.txt")).exists());
    assert!(setup.files(active).quarantined.is_empty());

    // The standby's own differences are kept aside, not deleted.
    let q: BTreeMap<String, String> = setup
        .files(standby)
        .quarantined
        .into_iter()
        .map(|q| (q.path, q.moved_to))
        .collect();
    assert_eq!(
        q.keys().map(String::as_str).collect::<Vec<_>>(),
        ["conflict.cfg".to_string(), format!("only-on-{standby}.txt")]
    );
    assert_eq!(
        std::fs::read_to_string(&q["conflict.cfg"]).unwrap(),
        format!("the version of {standby}\n")
    );
    // The large file both had moved no content.
    let c = setup.files(active).counters;
    assert!(c.pushed_bytes < 256 * 1024, "{c:?}");
}

#[test]
fn a_large_existing_folder_is_taken_over_as_it_is_on_both_nodes() {
    // Thousands of entries already on both machines: the first active proposes them all while
    // the standby falls behind its feed. Nothing may be taken for a local change on either.
    let folders = tempfile::tempdir().unwrap();
    for node in ["a", "b"] {
        for d in 0..5000 {
            std::fs::create_dir_all(folders.path().join(format!("{node}/p{}/d{d}", d % 50))).unwrap();
        }
        for f in 0..500 {
            write(
                &folders.path().join(format!("{node}/p{}/d{f}/f.txt", f % 50)),
                format!("file {f}\n").as_bytes(),
            );
        }
    }
    let setup = Setup::start_in(folders, "", "");
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    wait_capturing(&setup, active);
    setup.wait_mirrored(active, "large first copy");
    assert_eq!(tree(&setup.folder(active), &[]).len(), 5000 + 500 + 50);
    for node in [active, standby] {
        let info = setup.files(node);
        assert!(
            info.quarantined.is_empty(),
            "{node}: {:?}",
            &info.quarantined[..3.min(info.quarantined.len())]
        );
    }
    assert_eq!(setup.manifest("w").len(), 5000 + 500 + 50);
}

#[test]
fn a_planned_switchover_sends_what_the_service_wrote_as_it_stopped() {
    // The service's stop script writes its last state into the folder, as a service flushing
    // on shutdown does; the capture sends it before the old active counts as released.
    let folders = tempfile::tempdir().unwrap();
    let resource = format!(
        "[[resources]]\ntype = \"script\"\nname = \"svc\"\nacquire = 'true'\nrelease = 'echo \"state of @NODE@ in epoch $TANDEM_EPOCH\" > {}/@NODE@/last-words.txt'\n",
        folders.path().display()
    );
    let setup = Setup::start_in(folders, &resource, "");
    let old = setup.cluster.wait_active(None, SETTLE);
    let new = other_data_node(old);
    wait_capturing(&setup, old);
    write(&setup.folder(old).join("before.txt"), b"before the switch\n");
    setup.wait_mirrored(old, "before the switchover");
    let epoch = setup.cluster.status(old).unwrap().activation.unwrap().epoch;
    let started = Instant::now();
    loop {
        let (code, text) = setup.cluster.ctl(&["switchover"]);
        if code == Some(0) {
            break;
        }
        // The standby may still be catching up its heartbeats' view.
        assert!(started.elapsed() < SETTLE, "switchover refused: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(setup.cluster.wait_active(Some(old), SETTLE), new);
    // The new active holds the old one's last words, committed in the old epoch, and the old
    // active has nothing in quarantine.
    setup.wait_committed_state(new, "w", &[], "after the switchover");
    assert_eq!(
        std::fs::read_to_string(setup.folder(new).join("last-words.txt")).unwrap(),
        format!("state of {old} in epoch {epoch}\n")
    );
    assert!(
        setup.files(old).quarantined.is_empty(),
        "{:?}",
        setup.files(old).quarantined
    );
}
