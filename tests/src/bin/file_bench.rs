//! `file-bench`: how fast the file mirror carries changes to the standby, against rsync, and
//! what watching a very large tree costs.
//!
//! `cargo build --release --workspace --bins && target/release/file-bench`
//! (defaults: `--latency-files 500 --bulk-mib 256 --dirs 100000`; a value of 0 skips that part)
//!
//! 1. **Latency, small files** (`--latency-files N`): on a settled three-process cluster, files
//!    of 1–4 KiB are created on the active one at a time, each under a new name; the time runs
//!    from the `write` returning (file closed) until the standby's path holds the same bytes
//!    (polled every 200 µs; the standby renames complete files into place, so a file that is
//!    there is complete — its content is still compared). Targets: p50 ≤ 50 ms, p99 ≤ 200 ms.
//! 2. **Bulk copy against rsync** (`--bulk-mib M`): a source tree of about M MiB of
//!    incompressible files (small 1–16 KiB, medium 64 KiB–1 MiB, large 8–32 MiB, in nested
//!    directories) is copied with `cp -a` into the active's sync folder; the time runs from the
//!    start of the copy until the standby's folder holds as many files and bytes as the source
//!    and its `/v1/files` says `synced` (then every file's hash is checked, untimed). The same
//!    tree then goes with `rsync -a --whole-file` (and, for reference, without
//!    `--whole-file`) to an rsync daemon on loopback, into an empty directory. Target: Tandem
//!    ≥ 80 % of rsync's `--whole-file` throughput. rsync is installed with apt-get if missing.
//! 3. **Watching N directories** (`--dirs N`): N empty directories (100 parents holding N/100
//!    each) are made in both data nodes' folders before the cluster starts; the time runs from
//!    spawning the processes until the active says `capturing`, its replicated index holds
//!    every directory, and the standby says `synced`. Then the active's RSS (`VmRSS`) and its
//!    inotify watches are read, against the RSS with an empty folder (part 1 or 2), and the
//!    directories on both disks are counted. Entries either node moves to quarantine meanwhile
//!    are reported (nothing there was ever uncommitted, so there should be none); an index that
//!    stops growing for 30 s fails the part, naming what is missing and keeping the nodes' logs.
//!    If `fs.inotify.max_user_watches` is too low it is raised for the run and restored after.
//!    No target: the figures are recorded.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::ensure;
use anyhow::Context;
use tandem_client::api::FilesInfo;
use tandem_tests::bench_arg as arg;
use tandem_tests::other_data_node;
use tandem_tests::percentile;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;
use tandem_tests::Sysctl;

const TEMP_PREFIX: &str = tandem_node::files::disk::TEMP_PREFIX;
const FOLDER: &str = "bench";
/// How long the active's index may stand still short of the copy before the bench gives up.
const INDEX_STUCK: Duration = Duration::from_secs(30);
const MIB: f64 = 1024.0 * 1024.0;

/// Deterministic xorshift64 for sizes and incompressible content.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// inotify watches held by a process (one `inotify wd:` line each in its fds' fdinfo).
fn inotify_watches(pid: u32) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|info| info.lines().filter(|l| l.starts_with("inotify wd:")).count() as u64)
        .sum()
}

/// Run `sync(1)` so that one measurement does not pay for the previous one's dirty pages.
fn sync_disks() -> Duration {
    let t = Instant::now();
    let _ = Command::new("sync").status();
    t.elapsed()
}

/// Every entry under `root` (not `root` itself), directories before what they hold; entries
/// that vanish meanwhile are skipped.
fn each_entry(root: &Path, mut f: impl FnMut(&std::fs::DirEntry, &std::fs::Metadata)) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            }
            f(&e, &meta);
        }
    }
}

/// Files under `root` (temp files left out): relative path → size.
fn files_under(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    each_entry(root, |e, meta| {
        if meta.is_file() && !e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().to_string();
            out.insert(rel, meta.size());
        }
    });
    out
}

/// Bytes allocated on disk to the files under `root`.
fn allocated_bytes(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    each_entry(root, |_, meta| {
        if !meta.is_dir() {
            total += meta.blocks() * 512;
        }
    });
    total
}

/// Directories under `root` (not counting `root`).
fn dirs_under(root: &Path) -> u64 {
    let mut n = 0;
    each_entry(root, |_, meta| n += u64::from(meta.is_dir()));
    n
}

/// Files whose content under `root` differs from `expected` (relative path → blake3).
fn content_differences(root: &Path, expected: &BTreeMap<String, blake3::Hash>) -> Vec<String> {
    expected
        .iter()
        .filter(|(rel, hash)| std::fs::read(root.join(rel)).map(|d| blake3::hash(&d)).ok() != Some(**hash))
        .map(|(rel, _)| rel.clone())
        .collect()
}

/// A running cluster with one sync folder, `<folders>/<node>` on each data node.
struct Bench {
    cluster: Cluster,
    folders: PathBuf,
}

impl Bench {
    fn start(folders: &Path) -> anyhow::Result<Bench> {
        let data_config = format!("[[sync]]\nid = \"{FOLDER}\"\npath = \"{}/@NODE@\"\n", folders.display());
        let cluster = Cluster::start_initialized(ClusterOptions {
            data_config,
            ..Default::default()
        })?;
        Ok(Bench {
            cluster,
            folders: folders.to_path_buf(),
        })
    }

    fn folder(&self, node: &str) -> PathBuf {
        self.folders.join(node)
    }

    fn files(&self, node: &str) -> anyhow::Result<FilesInfo> {
        Ok(self.cluster.block_on(self.cluster.client(node).files())?)
    }

    /// The files of `node`'s index whose content is not the source's, with what the index
    /// and the disk say of them.
    fn index_differences(&self, node: &str, dir: &Path, source: &BTreeMap<String, blake3::Hash>) -> String {
        let entries = match self
            .cluster
            .block_on(self.cluster.client(node).file_manifest_all(FOLDER))
        {
            Ok(e) => e,
            Err(e) => return format!("(manifest unavailable: {e})"),
        };
        let indexed: BTreeMap<&str, &tandem_client::api::ManifestEntry> =
            entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut out = Vec::new();
        for (rel, hash) in source {
            let disk = std::fs::metadata(dir.join(rel))
                .map(|m| format!("size {} mtime {:?}", m.len(), m.modified().ok()))
                .unwrap_or_else(|e| e.to_string());
            match indexed.get(rel.as_str()) {
                Some(e) if e.hash == hash.to_hex().as_str() => {}
                Some(e) => out.push(format!(
                    "{rel}: index size {} mtime_ns {} index {}; disk {disk}",
                    e.size, e.mtime_ns, e.index
                )),
                None => out.push(format!("{rel}: not in the index; disk {disk}")),
            }
        }
        out.truncate(20);
        out.join("\n")
    }

    /// Entries of the sync folder in `node`'s replicated index.
    fn indexed(&self, node: &str) -> Option<(u64, u64)> {
        let info = self.files(node).ok()?;
        let f = info.folders.iter().find(|f| f.id == FOLDER)?;
        Some((f.entries, f.bytes))
    }

    /// Wait for an active that captures and a standby that is synced; (active, standby).
    fn wait_settled(&self, within: Duration) -> anyhow::Result<(&'static str, &'static str)> {
        let active = self.cluster.wait_active(None, within);
        let standby = other_data_node(active);
        let deadline = Instant::now() + within;
        loop {
            let capturing = self.files(active).is_ok_and(|f| f.capturing);
            let synced = self.files(standby).is_ok_and(|f| f.synced);
            if capturing && synced {
                return Ok((active, standby));
            }
            ensure!(
                Instant::now() < deadline,
                "not settled within {within:?}: active {active} {:?}, standby {standby} {:?}",
                self.files(active),
                self.files(standby)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every path of the sync folder in `node`'s replicated index.
    fn manifest_paths(&self, node: &str) -> anyhow::Result<std::collections::HashSet<String>> {
        let client = self.cluster.client(node).with_timeout(Duration::from_secs(10));
        let entries = self.cluster.block_on(client.file_manifest_all(FOLDER))?;
        Ok(entries.into_iter().map(|e| e.path).collect())
    }

    /// Copy the nodes' logs out of the cluster's directory (removed on drop); where they are.
    fn keep_logs(&self) -> anyhow::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("file-bench-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        for n in &self.cluster.nodes {
            std::fs::copy(self.cluster.log_path(n.name), dir.join(format!("{}.log", n.name)))?;
        }
        Ok(dir)
    }

    fn rss_kib(&self, node: &str) -> u64 {
        self.cluster.pid(node).and_then(|p| proc_kib(p, "VmRSS")).unwrap_or(0)
    }
}

/// What the parts found, printed together at the end.
#[derive(Default)]
struct Summary {
    lines: Vec<String>,
    /// RSS of an active with an empty folder, KiB.
    idle_rss_kib: Option<u64>,
}

impl Summary {
    fn add(&mut self, line: String) {
        println!("  {line}");
        self.lines.push(line);
    }
}

fn latency(files: u64, summary: &mut Summary) -> anyhow::Result<()> {
    println!("== 1. latency of small files: {files} files of 1-4 KiB, one at a time");
    let folders = tempfile::tempdir()?;
    let bench = Bench::start(folders.path())?;
    let (active, standby) = bench.wait_settled(Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = bench.rss_kib(active);
    summary.idle_rss_kib.get_or_insert(idle);
    println!("  active {active}, standby {standby}; active's RSS with an empty folder: {idle} KiB");
    let (src, dst) = (bench.folder(active), bench.folder(standby));
    let mut rng = Rng::new(1);
    let mut took = Vec::with_capacity(files as usize);
    for i in 0..files {
        let len = rng.range(1024, 4096) as usize;
        let data = rng.bytes(len);
        let name = format!("small-{i:05}.bin");
        std::fs::write(src.join(&name), &data)?;
        let written = Instant::now();
        let there = dst.join(&name);
        loop {
            match std::fs::read(&there) {
                Ok(d) if d == data => break,
                Ok(d) => bail!(
                    "{name} appeared on the standby with {} bytes that are not the {} written: a partial file under the real name",
                    d.len(),
                    data.len()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => bail!("reading {}: {e}", there.display()),
            }
            if written.elapsed() > Duration::from_secs(30) {
                bail!(
                    "{name} (file {i}) did not reach the standby within 30 s\nactive: {:?}\nstandby: {:?}\n{}",
                    bench.files(active),
                    bench.files(standby),
                    bench.cluster.log_tail(active)
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        took.push(written.elapsed());
    }
    let mean = took.iter().sum::<Duration>() / took.len() as u32;
    took.sort();
    let (p50, p90, p99, max) = (
        percentile(&took, 50.0),
        percentile(&took, 90.0),
        percentile(&took, 99.0),
        took[took.len() - 1],
    );
    let verdict = |d: Duration, target: f64| if ms(d) <= target { "met" } else { "MISSED" };
    summary.add(format!(
        "latency, {files} small files: min {:.2} ms, mean {:.2} ms, p50 {:.2} ms ({} target <= 50 ms), p90 {:.2} ms, p99 {:.2} ms ({} target <= 200 ms), max {:.2} ms",
        ms(took[0]),
        ms(mean),
        ms(p50),
        verdict(p50, 50.0),
        ms(p90),
        ms(p99),
        verdict(p99, 200.0),
        ms(max)
    ));
    let buckets = [2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, f64::INFINITY];
    let mut line = String::from("latency histogram:");
    let mut from = 0.0;
    for b in buckets {
        let n = took.iter().filter(|d| ms(**d) > from && ms(**d) <= b).count();
        line.push_str(&format!(" ({from}, {b}] ms: {n};"));
        from = b;
    }
    println!("  {line}");
    let info = bench.files(active)?;
    summary.add(format!(
        "latency run: active's RSS {} KiB empty, {} KiB after {files} files; {} records proposed",
        idle,
        bench.rss_kib(active),
        info.counters.proposed
    ));
    Ok(())
}

/// A source tree of about `mib` MiB: (relative path, content hash), total bytes.
fn make_source(root: &Path, mib: u64) -> anyhow::Result<(BTreeMap<String, blake3::Hash>, u64)> {
    let scale = mib as f64 / 256.0;
    let small = ((2000.0 * scale).round() as u64).max(1);
    let medium = (200.0 * scale).round() as u64;
    let mut rng = Rng::new(7);
    let mut plan: Vec<(String, u64)> = Vec::new();
    for i in 0..small {
        plan.push((
            format!("docs/d{:02}/s{}/small-{i:05}.txt", i % 25, i % 4),
            rng.range(1024, 16 * 1024),
        ));
    }
    for i in 0..medium {
        plan.push((
            format!("media/m{:02}/medium-{i:04}.bin", i % 10),
            rng.range(64 * 1024, 1024 * 1024),
        ));
    }
    // Large files of 8–32 MiB fill what is left of the budget.
    let budget = mib * 1024 * 1024;
    let used: u64 = plan.iter().map(|(_, s)| s).sum();
    let left = budget.saturating_sub(used);
    let large = (left as f64 / (20.0 * MIB)).round() as u64;
    if large > 0 {
        let weights: Vec<u64> = (0..large).map(|_| rng.range(8, 32)).collect();
        let total: u64 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            plan.push((format!("video/v{}/large-{i:02}.bin", i % 3), left * w / total));
        }
    }
    let mut hashes = BTreeMap::new();
    let mut bytes = 0;
    for (rel, size) in plan {
        let path = root.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap())?;
        let data = rng.bytes(size as usize);
        std::fs::write(&path, &data)?;
        hashes.insert(rel, blake3::hash(&data));
        bytes += size;
    }
    println!(
        "  source: {} files ({small} of 1-16 KiB, {medium} of 64 KiB-1 MiB, {large} of about 8-32 MiB), {:.1} MiB",
        hashes.len(),
        bytes as f64 / MIB
    );
    Ok((hashes, bytes))
}

/// Install rsync with apt-get if it is missing.
fn ensure_rsync() -> anyhow::Result<()> {
    let found = Command::new("which")
        .arg("rsync")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Ok(());
    }
    println!("  rsync is not installed: installing it with `apt-get install -y -qq rsync`");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "rsync"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()?
        .success();
    if !ok {
        println!("  apt-get install failed; running `apt-get update -qq` and trying again");
        Command::new("apt-get").args(["update", "-qq"]).status()?;
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq", "rsync"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?
            .success();
        ensure!(ok, "could not install rsync");
    }
    Ok(())
}

/// An rsync daemon on loopback with one writable module per name, each an empty directory.
struct RsyncDaemon {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RsyncDaemon {
    fn start(modules: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut conf = format!(
            "pid file = {0}/rsyncd.pid\nlog file = {0}/rsyncd.log\nuse chroot = no\n",
            dir.path().display()
        );
        for m in modules {
            let dest = dir.path().join(m);
            std::fs::create_dir(&dest)?;
            conf.push_str(&format!(
                "\n[{m}]\npath = {}\nread only = no\nuid = root\ngid = root\n",
                dest.display()
            ));
        }
        let conf_path = dir.path().join("rsyncd.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", conf_path.display()))
            .arg(format!("--port={port}"))
            .arg("--address=127.0.0.1")
            .stdin(Stdio::null())
            .spawn()
            .context("start rsync --daemon")?;
        let daemon = RsyncDaemon { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(Instant::now() < deadline, "the rsync daemon does not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    fn dest(&self, module: &str) -> PathBuf {
        self.dir.path().join(module)
    }

    /// `rsync -a [extra] src/ rsync://127.0.0.1:port/module/`; its wall time.
    fn push(&self, src: &Path, module: &str, extra: &[&str]) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let out = Command::new("rsync")
            .arg("-a")
            .args(extra)
            .arg(format!("{}/", src.display()))
            .arg(format!("rsync://127.0.0.1:{}/{module}/", self.port))
            .output()?;
        let took = t.elapsed();
        ensure!(
            out.status.success(),
            "rsync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(took)
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bulk(mib: u64, summary: &mut Summary) -> anyhow::Result<()> {
    println!("== 2. bulk copy of about {mib} MiB: Tandem against rsync on loopback");
    ensure_rsync()?;
    let work = tempfile::tempdir()?;
    let src = work.path().join("src");
    let (hashes, total_bytes) = make_source(&src, mib)?;
    let total_files = hashes.len();
    let total_mib = total_bytes as f64 / MIB;

    // (a) Tandem.
    let tandem_time = {
        let folders = work.path().join("folders");
        let bench = Bench::start(&folders)?;
        let (active, standby) = bench.wait_settled(Duration::from_secs(30))?;
        std::thread::sleep(Duration::from_secs(1));
        let idle = bench.rss_kib(active);
        summary.idle_rss_kib.get_or_insert(idle);
        let (a_dir, b_dir) = (bench.folder(active), bench.folder(standby));
        let flushed = sync_disks();
        println!(
            "  active {active}, standby {standby}; sync before the copy took {:.0} ms",
            ms(flushed)
        );
        let started = Instant::now();
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(format!("{}/", a_dir.display()))
            .status()?;
        ensure!(status.success(), "cp -a failed");
        let copied = started.elapsed();
        let limit = Duration::from_secs(120.max(mib * 2));
        let mut indexed_at = None;
        // The active's index, and since when it has not moved.
        let mut last_index = (None, Instant::now());
        let done = loop {
            let index = bench.indexed(active);
            if indexed_at.is_none() && index.is_some_and(|(_, b)| b >= total_bytes) {
                indexed_at = Some(started.elapsed());
            }
            if index != last_index.0 {
                last_index = (index, Instant::now());
            }
            if indexed_at.is_none() && last_index.1.elapsed() > INDEX_STUCK {
                bail!(
                    "the active's index stopped short of the copy: {index:?} for {INDEX_STUCK:?}, of {total_files} \
                     files and {total_bytes} bytes; entries that differ from the source:\n{}",
                    bench.index_differences(active, &a_dir, &hashes)
                );
            }
            // The cheap look first (the standby's API); the walk of its folder only when that
            // says it may be done, so the bench does not take CPU from the nodes.
            let synced = bench.files(standby).is_ok_and(|f| f.synced);
            let standby_index = bench.indexed(standby).unwrap_or_default();
            let mut seen = (0, 0);
            if synced && standby_index.1 >= total_bytes {
                let there = files_under(&b_dir);
                seen = (there.len(), there.values().sum::<u64>());
                if seen == (total_files, total_bytes) {
                    break started.elapsed();
                }
            }
            if started.elapsed() > limit {
                bail!(
                    "the standby did not hold the copy within {limit:?} (its index: {standby_index:?}; on its disk, \
                     counted this round: {seen:?} of {total_files} files and {total_bytes} bytes)\n\
                     active: {:?}\nstandby: {:?}\n{}",
                    bench.files(active),
                    bench.files(standby),
                    bench.cluster.log_tail(standby)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let wrong = content_differences(&b_dir, &hashes);
        ensure!(
            wrong.is_empty(),
            "{} files on the standby differ from the source: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
        let (a, b) = (bench.files(active)?, bench.files(standby)?);
        summary.add(format!(
            "Tandem: {total_files} files, {total_mib:.1} MiB: cp -a took {:.2} s; the active's index held every byte after {:.2} s; \
             the standby held all (hash-checked) and was synced after {:.2} s = {:.1} MiB/s",
            copied.as_secs_f64(),
            indexed_at.unwrap_or(done).as_secs_f64(),
            done.as_secs_f64(),
            total_mib / done.as_secs_f64()
        ));
        summary.add(format!(
            "Tandem counters: active proposed {} records, pushed {:.1} MiB ({:.1} MiB on the wire), {:.1} MiB inline; \
             standby applied {}, fetched {:.1} MiB; RSS active {} KiB (empty folder {idle} KiB), standby {} KiB",
            a.counters.proposed,
            a.counters.pushed_bytes as f64 / MIB,
            a.counters.pushed_wire_bytes as f64 / MIB,
            a.counters.inline_bytes as f64 / MIB,
            b.counters.applied,
            b.counters.fetched_bytes as f64 / MIB,
            bench.rss_kib(active),
            bench.rss_kib(standby)
        ));
        done
    };

    // (b) rsync over loopback, each run into an empty directory.
    // The third run makes rsync fsync every file it writes, as Tandem does.
    let daemon = RsyncDaemon::start(&["whole", "delta", "fsync"])?;
    let mut rsync = Vec::new();
    for (module, extra) in [
        ("whole", &["--whole-file"][..]),
        ("delta", &[][..]),
        ("fsync", &["--whole-file", "--fsync"][..]),
    ] {
        sync_disks();
        let took = daemon.push(&src, module, extra)?;
        let flush = sync_disks();
        let there = files_under(&daemon.dest(module));
        ensure!(
            there.len() == total_files && there.values().sum::<u64>() == total_bytes,
            "rsync's copy is incomplete"
        );
        let wrong = content_differences(&daemon.dest(module), &hashes);
        ensure!(
            wrong.is_empty(),
            "rsync's copy differs: {:?}",
            &wrong[..wrong.len().min(10)]
        );
        let (label, fsyncs) = match module {
            "whole" => ("rsync -a --whole-file", "rsync does not fsync"),
            "delta" => ("rsync -a (delta algorithm)", "rsync does not fsync"),
            _ => ("rsync -a --whole-file --fsync", "each file fsynced"),
        };
        summary.add(format!(
            "{label}: {:.2} s = {:.1} MiB/s (the sync after it took {:.2} s more; {fsyncs})",
            took.as_secs_f64(),
            total_mib / took.as_secs_f64(),
            flush.as_secs_f64()
        ));
        rsync.push(took);
    }
    let ratio = rsync[0].as_secs_f64() / tandem_time.as_secs_f64();
    summary.add(format!(
        "Tandem's throughput is {:.0} % of rsync --whole-file's ({:.0} % of rsync's delta run, {:.0} % of \
         rsync --fsync's): target >= 80 % of rsync --whole-file: {}",
        100.0 * ratio,
        100.0 * rsync[1].as_secs_f64() / tandem_time.as_secs_f64(),
        100.0 * rsync[2].as_secs_f64() / tandem_time.as_secs_f64(),
        if ratio >= 0.8 { "met" } else { "MISSED" }
    ));
    Ok(())
}

/// Per node: how many entries went to quarantine, when, and which first and last.
fn quarantine_summary(q: &[(&str, String, f64)]) -> String {
    let mut out = Vec::new();
    for node in ["a", "b"] {
        let mine: Vec<_> = q.iter().filter(|(n, ..)| *n == node).collect();
        if let (Some(first), Some(last)) = (mine.first(), mine.last()) {
            out.push(format!(
                "{node} moved {} entries to quarantine {:.2}-{:.2} s after the start (first {}, last {})",
                mine.len(),
                first.2,
                last.2,
                first.1,
                last.1
            ));
        }
    }
    if out.is_empty() {
        "none".to_string()
    } else {
        out.join("; ")
    }
}

const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// Raises `fs.inotify.max_user_watches` to `need` for the run if it is lower (put back when the
/// returned guard drops).
fn watch_limit_at_least(need: u64) -> anyhow::Result<Option<Sysctl>> {
    let now: u64 = std::fs::read_to_string(MAX_USER_WATCHES)?.trim().parse()?;
    if now >= need {
        println!("  fs.inotify.max_user_watches is {now} (>= {need} needed): unchanged");
        return Ok(None);
    }
    let raised = Sysctl::set(MAX_USER_WATCHES, &need.to_string());
    println!(
        "  raised fs.inotify.max_user_watches from {} to {need} for this run",
        raised.old()
    );
    Ok(Some(raised))
}

fn many_dirs(leaves: u64, summary: &mut Summary) -> anyhow::Result<()> {
    let parents = leaves.min(100);
    let per = leaves.div_ceil(parents);
    let names: Vec<String> = (0..leaves)
        .map(|i| format!("p{:03}/c{:05}", i / per, i % per))
        .collect();
    let parents = (leaves - 1) / per + 1;
    let entries = leaves + parents;
    println!("== 3. watching {entries} directories ({parents} holding {leaves} empty ones)");
    // Both data nodes' processes run as this user; one watches. Leave room for anything else.
    let _limit = watch_limit_at_least(entries + 16_384)?;
    let folders = tempfile::tempdir()?;
    let made = Instant::now();
    for node in ["a", "b"] {
        for n in &names {
            std::fs::create_dir_all(folders.path().join(node).join(n))?;
        }
    }
    println!(
        "  made them in both folders in {:.1} s; sync took {:.1} s",
        made.elapsed().as_secs_f64(),
        sync_disks().as_secs_f64()
    );

    let (started, started_ms) = (Instant::now(), tandem_node::unix_ms());
    let bench = Bench::start(folders.path())?;
    let initialized = started.elapsed();
    let active = bench.cluster.wait_active(None, Duration::from_secs(60));
    let standby = other_data_node(active);
    let active_at = started.elapsed();
    let limit = Duration::from_secs(600.max(entries / 50));
    let (mut capturing_at, mut indexed_at, mut standby_synced_first) = (None, None, None);
    let mut quarantined: Vec<(&str, String, f64)> = Vec::new();
    let mut read_q = [0usize; 2];
    let mut last_report = Instant::now();
    let mut growth = (0, Instant::now());
    let settled = loop {
        let a = bench.files(active).ok();
        let b = bench.files(standby).ok();
        let now = started.elapsed();
        let a_entries = a
            .as_ref()
            .and_then(|i| i.folders.iter().find(|f| f.id == FOLDER))
            .map_or(0, |f| f.entries);
        let capturing = a.as_ref().is_some_and(|i| i.capturing);
        if capturing {
            capturing_at.get_or_insert(now);
        }
        if a_entries >= entries {
            indexed_at.get_or_insert(now);
        }
        let synced = b.as_ref().is_some_and(|i| i.synced);
        if synced && capturing_at.is_some() {
            standby_synced_first.get_or_insert(now);
        }
        // Nothing that was in the folders before the start should be moved aside. The API's
        // list only grows: read what is new since the last look.
        for (k, (node, info)) in [(active, &a), (standby, &b)].into_iter().enumerate() {
            let Some(list) = info.as_ref().map(|i| &i.quarantined) else {
                continue;
            };
            for q in list.iter().skip(read_q[k]) {
                let secs = q.at_ms.saturating_sub(started_ms) as f64 / 1000.0;
                let path = format!("{}/{}", q.folder, q.path);
                if read_q[k] < 3 {
                    println!(
                        "  UNEXPECTED: {node} moved {path} to quarantine {secs:.2} s after the processes were spawned"
                    );
                }
                read_q[k] += 1;
                quarantined.push((node, path, secs));
            }
        }
        if indexed_at.is_some() && synced && capturing {
            break Ok(now);
        }
        if a_entries != growth.0 {
            growth = (a_entries, Instant::now());
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!(
                "  {:.0} s: active capturing {capturing}, {a_entries} of {entries} entries in its index; standby synced {synced}, applied {}",
                now.as_secs_f64(),
                b.as_ref().map_or(0, |i| i.counters.applied)
            );
            last_report = Instant::now();
        }
        if capturing && growth.1.elapsed() > Duration::from_secs(30) {
            break Err(format!(
                "the active captures, but its index stopped at {a_entries} of {entries} entries 30 s ago (standby synced: {synced})"
            ));
        }
        if now > limit {
            break Err(format!(
                "not settled within {limit:?}: {a_entries} of {entries} entries indexed"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let done = match settled {
        Ok(done) => done,
        Err(why) => {
            let indexed = bench.manifest_paths(active)?;
            let wanted = names.iter().cloned().chain(names.iter().map(|n| n[..4].to_string()));
            let missing: Vec<String> = wanted
                .filter(|n| !indexed.contains(n))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|n| {
                    let on = |node: &str| bench.folder(node).join(&n).is_dir();
                    format!(
                        "{n} (on {active}'s disk: {}, on {standby}'s: {})",
                        on(active),
                        on(standby)
                    )
                })
                .collect();
            let pid = bench.cluster.pid(active).unwrap_or(0);
            bail!(
                "{why}\nthe active said capturing after {}; its RSS {} KiB, {} inotify watches\n\
                 missing from the active's index: {} entries, first: {:?}\n\
                 quarantined: {}\nactive: {:?}\nstandby: {:?}\nlogs kept in {}",
                capturing_at.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
                proc_kib(pid, "VmRSS").unwrap_or(0),
                inotify_watches(pid),
                missing.len(),
                &missing[..missing.len().min(5)],
                quarantine_summary(&quarantined),
                bench.files(active).ok().map(|i| (i.capturing, i.counters)),
                bench
                    .files(standby)
                    .ok()
                    .map(|i| (i.synced, i.pending_files, i.stalled, i.counters)),
                bench.keep_logs()?.display()
            );
        }
    };
    let pid = bench.cluster.pid(active).context("active's pid")?;
    let settled_rss = proc_kib(pid, "VmRSS").unwrap_or(0);
    std::thread::sleep(Duration::from_secs(2));
    let rss = proc_kib(pid, "VmRSS").unwrap_or(0);
    let hwm = proc_kib(pid, "VmHWM").unwrap_or(0);
    let watches = inotify_watches(pid);
    let standby_rss = bench.rss_kib(standby);
    let (a, b) = (bench.files(active)?, bench.files(standby)?);
    // The API's word checked against the disks (untimed): every directory in both folders.
    let held: Vec<(&str, u64)> = [active, standby]
        .into_iter()
        .map(|n| (n, dirs_under(&bench.folder(n))))
        .collect();

    // One file in the last directory made, to see that the watch there works.
    let last = names.last().context("no directories")?;
    std::fs::write(bench.folder(active).join(last).join("probe.txt"), b"deep\n")?;
    let written = Instant::now();
    let there = bench.folder(standby).join(last).join("probe.txt");
    while std::fs::read(&there).ok().as_deref() != Some(b"deep\n".as_slice()) {
        ensure!(
            written.elapsed() < Duration::from_secs(30),
            "a file in {last} did not reach the standby within 30 s"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let probe = written.elapsed();

    let secs = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
    summary.add(format!(
        "{entries} directories: processes spawned -> cluster initialized {:.2} s -> active known {:.2} s -> \
         active capturing {} -> its index holds every directory {} -> standby synced {:.2} s \
         (the standby first said synced after capturing began at {})",
        initialized.as_secs_f64(),
        active_at.as_secs_f64(),
        secs(capturing_at),
        secs(indexed_at),
        done.as_secs_f64(),
        secs(standby_synced_first)
    ));
    summary.add(format!(
        "{entries} directories: active proposed {} records, standby applied {}; active's RSS {} KiB settled, {} KiB 2 s later \
         (peak {} KiB), {watches} inotify watches; standby's RSS {} KiB; with an empty folder: {}",
        a.counters.proposed,
        b.counters.applied,
        settled_rss,
        rss,
        hwm,
        standby_rss,
        summary
            .idle_rss_kib
            .map_or("not measured (parts 1 and 2 skipped)".to_string(), |k| format!("{k} KiB"))
    ));
    summary.add(format!(
        "{entries} directories: a new file in the last directory reached the standby in {:.1} ms",
        ms(probe)
    ));
    let on_disk: Vec<String> = ["a", "b", "w"]
        .iter()
        .map(|n| {
            let raft = allocated_bytes(&bench.cluster.data_dir(n).join("raft"));
            format!("{n} {:.0} MiB", raft as f64 / MIB)
        })
        .collect();
    summary.add(format!(
        "{entries} directories: the Raft store (log and state) takes on disk: {}",
        on_disk.join(", ")
    ));
    for (node, n) in held {
        let verdict = if n == entries { "as it should" } else { "UNEXPECTED" };
        summary.add(format!(
            "{entries} directories: {node}'s folder holds {n} directories once settled ({verdict})"
        ));
    }
    if !quarantined.is_empty() {
        summary.add(format!(
            "{entries} directories: UNEXPECTED: {}",
            quarantine_summary(&quarantined)
        ));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let (files, mib, dirs) = (
        arg("--latency-files", 500),
        arg("--bulk-mib", 256),
        arg("--dirs", 100_000),
    );
    let mut summary = Summary::default();
    let mut failed = Vec::new();
    if files > 0 {
        if let Err(e) = latency(files, &mut summary) {
            failed.push(format!("latency: {e:#}"));
        }
    }
    if mib > 0 {
        if let Err(e) = bulk(mib, &mut summary) {
            failed.push(format!("bulk: {e:#}"));
        }
    }
    if dirs > 0 {
        if let Err(e) = many_dirs(dirs, &mut summary) {
            failed.push(format!("directories: {e:#}"));
        }
    }
    println!("\n== summary (--latency-files {files} --bulk-mib {mib} --dirs {dirs})");
    for line in &summary.lines {
        println!("- {line}");
    }
    for f in &failed {
        println!("- FAILED {f}");
    }
    ensure!(failed.is_empty(), "{} part(s) failed", failed.len());
    Ok(())
}
