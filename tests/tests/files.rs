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

const SETTLE: Duration = Duration::from_secs(30);
const TEMP_PREFIX: &str = tandem_node::files::disk::TEMP_PREFIX;

/// What a test compares of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File { hash: String, mode: u32, mtime_ns: i128 },
    Dir { mode: u32 },
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
}

impl Setup {
    fn start(extra: &str) -> Setup {
        let folders = tempfile::tempdir().unwrap();
        let data_config = format!(
            "[[sync]]\nid = \"scenes\"\npath = \"{}/@NODE@\"\nignore = [\"licence.key\", \"*.swp\"]\n{extra}",
            folders.path().display()
        );
        let cluster = Cluster::start_initialized(ClusterOptions {
            data_config,
            ..Default::default()
        })
        .unwrap();
        Setup { cluster, folders }
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
                panic!(
                    "{what}: standby {standby} did not mirror {active} within {SETTLE:?} (synced: {synced})\n\
                     active only/different: {only_a:?}\nstandby only/different: {only_b:?}\n{}",
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
    std::fs::rename(root.join("maps/north"), root.join("maps/west")).unwrap();
    std::fs::rename(root.join("scene.cfg"), root.join("scene-1.cfg")).unwrap();
    std::fs::remove_file(root.join("maps/south/b.map")).unwrap();
    std::fs::remove_dir(root.join("empty-dir")).unwrap();
    setup.wait_mirrored(active, "edits, renames, deletes");
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
