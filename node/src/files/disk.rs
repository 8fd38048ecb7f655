//! Disk side of the file mirror: every change a sync folder receives is made here, atomically and durably, never through a symlink that leaves the folder.
//!
//! Paths arrive already validated (relative, `/`-separated, no `.`/`..`/empty components), but
//! the disk may still hold a symlink or a file where a directory is expected: every existing
//! component before the last must be a real directory, or the change is refused
//! ([`DiskError::Unsafe`]). The last component is never followed. Tandem is the only writer on
//! the standby, so a path checked here stays as checked until it is used.
//!
//! File content goes to a temp file beside the target ([`TEMP_PREFIX`]), is checked against
//! its size and blake3 hash, gets its attributes, is fsynced and renamed into place, and the
//! directory is fsynced: a crash leaves the old version or the new one, plus at worst a temp
//! file that [`remove_temp_files`] clears at start.

use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
use tandem_raft_store::records::FileAttrs;

/// Prefix of the temporary files written beside a target before they are renamed into place.
pub const TEMP_PREFIX: &str = ".tandem-tmp.";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The file system is full (ENOSPC or EDQUOT); nothing visible changed.
    #[error("{path}: no space left on the device; free space there and the mirror resumes")]
    NoSpace { path: String },
    /// The path leads through a symlink or non-directory, or out of the folder.
    #[error("{path}: {why}")]
    Unsafe { path: String, why: String },
    /// Written content does not match the expected hash or size; nothing visible changed.
    #[error("{path}: content does not match: {why}")]
    Mismatch { path: String, why: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Absolute path of `rel` under `root`. Every existing component before the last must be a real directory (not a symlink); the last may be anything (it is not followed). Returns Unsafe otherwise.
pub fn resolve(root: &Path, rel: &str) -> Result<PathBuf, DiskError> {
    let parts = components(root, rel)?;
    let mut path = root.to_path_buf();
    let mut exists = true;
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        if exists && i + 1 < parts.len() {
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) => return Err(not_a_dir(root, rel, &path, &meta)),
                // Nothing below a missing directory exists either.
                Err(e) if e.kind() == io::ErrorKind::NotFound => exists = false,
                Err(e) => return Err(io_err(&path, e)),
            }
        }
    }
    Ok(path)
}

/// Create the missing parent directories of `rel` (mode 0o755), refusing symlinks on the way (as `resolve`).
pub fn ensure_parents(root: &Path, rel: &str) -> Result<(), DiskError> {
    let parts = components(root, rel)?;
    let mut path = root.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        path.push(part);
        for attempt in 0..2 {
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => break,
                Ok(meta) => return Err(not_a_dir(root, rel, &path, &meta)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, e)),
            }
            match fs::DirBuilder::new().mode(0o755).create(&path) {
                Ok(()) => {
                    sync_parent(&path)?;
                    break;
                }
                // Appeared in between: look at what it is once more.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt == 0 => {}
                Err(e) => return Err(io_err(&path, e)),
            }
        }
    }
    Ok(())
}

/// Write a new version of the file `rel` atomically: a temp file beside it receives the content
/// from `fill`, which must match `size` and the blake3 `hash`; it gets owner (with `keep_owner`),
/// mode and mtime, is fsynced and renamed over the target, and the directory is fsynced.
/// On any error the temp file is removed and the target is untouched. A directory at the target
/// is refused (Unsafe): the caller removes directories explicitly.
pub fn write_atomic(
    root: &Path,
    rel: &str,
    size: u64,
    hash: &[u8; 32],
    attrs: &FileAttrs,
    keep_owner: bool,
    fill: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), DiskError> {
    ensure_parents(root, rel)?;
    let target = resolve(root, rel)?;
    refuse_dir(&target, "a file")?;
    let (file, temp) = create_temp(&target)?;
    let guard = TempGuard(Some(temp.clone()));
    let mut writer = HashingWriter {
        inner: BufWriter::with_capacity(1 << 16, file),
        hasher: blake3::Hasher::new(),
        count: 0,
    };
    fill(&mut writer).map_err(|e| io_err(&target, e))?;
    let HashingWriter { inner, hasher, count } = writer;
    let file = inner.into_inner().map_err(|e| io_err(&target, e.into_error()))?;
    let shown = target.display().to_string();
    if count != size {
        let why = format!("{count} bytes received, {size} expected; the file was not replaced");
        return Err(DiskError::Mismatch { path: shown, why });
    }
    let got = hasher.finalize();
    if got.as_bytes() != hash {
        let want = blake3::Hash::from_bytes(*hash).to_hex();
        let why = format!(
            "blake3 {} received, {want} expected; the file was not replaced",
            got.to_hex()
        );
        return Err(DiskError::Mismatch { path: shown, why });
    }
    if keep_owner {
        std::os::unix::fs::fchown(&file, Some(attrs.uid), Some(attrs.gid)).map_err(|e| io_err(&target, e))?;
    }
    file.set_permissions(Permissions::from_mode(attrs.mode & 0o7777))
        .map_err(|e| io_err(&target, e))?;
    rustix::fs::futimens(&file, &timestamps(attrs.mtime_ns)).map_err(|e| io_err(&target, e.into()))?;
    file.sync_all().map_err(|e| io_err(&target, e))?;
    drop(file);
    fs::rename(&temp, &target).map_err(|e| io_err(&target, e))?;
    guard.disarm();
    sync_parent(&target)
}

/// Make sure `rel` is a directory with these attributes (create it if missing; if a file or symlink is there, it is replaced by the directory). fsync the parent when something was created or replaced.
pub fn make_dir(root: &Path, rel: &str, attrs: &FileAttrs, keep_owner: bool) -> Result<(), DiskError> {
    ensure_parents(root, rel)?;
    let path = resolve(root, rel)?;
    let created = match lstat(&path)? {
        Some(meta) if meta.is_dir() => false,
        existing => {
            if existing.is_some() {
                fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            }
            // Owner-only until its own mode is set below.
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .map_err(|e| io_err(&path, e))?;
            true
        }
    };
    set_path_attrs(&path, attrs, keep_owner, false)?;
    if created {
        sync_parent(&path)?;
    }
    Ok(())
}

/// Make `rel` a symlink to `target` atomically (temp link beside it + rename), its mtime set without following it (utimensat with AT_SYMLINK_NOFOLLOW). The target text is not checked here (the caller did).
pub fn make_symlink(root: &Path, rel: &str, target: &str, mtime_ns: i128) -> Result<(), DiskError> {
    ensure_parents(root, rel)?;
    let path = resolve(root, rel)?;
    refuse_dir(&path, "a symlink")?;
    let mut temp = temp_path(&path);
    let mut tries = 0;
    loop {
        match std::os::unix::fs::symlink(target, &temp) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => temp = temp_path(&path),
            Err(e) => return Err(io_err(&path, e)),
        }
        tries += 1;
    }
    let guard = TempGuard(Some(temp.clone()));
    set_mtime_nofollow(&temp, mtime_ns).map_err(|e| io_err(&path, e))?;
    fs::rename(&temp, &path).map_err(|e| io_err(&path, e))?;
    guard.disarm();
    sync_parent(&path)
}

/// Set mode (not for symlinks), owner (when keep_owner) and mtime of an existing entry.
pub fn set_attrs(root: &Path, rel: &str, attrs: &FileAttrs, keep_owner: bool) -> Result<(), DiskError> {
    let path = resolve(root, rel)?;
    let meta = fs::symlink_metadata(&path).map_err(|e| io_err(&path, e))?;
    set_path_attrs(&path, attrs, keep_owner, meta.file_type().is_symlink())
}

/// Remove a file, symlink or a whole directory tree (never following symlinks). Missing is Ok. fsync the parent.
pub fn remove(root: &Path, rel: &str) -> Result<(), DiskError> {
    let path = resolve(root, rel)?;
    let Some(meta) = lstat(&path)? else { return Ok(()) };
    remove_entry(&path, &meta)?;
    sync_parent(&path)
}

/// rename(2) `from` to `to` inside the folder (parents of `to` created), replacing what is at `to` (a directory at `to` is removed first). fsync both parent directories.
pub fn rename(root: &Path, from: &str, to: &str) -> Result<(), DiskError> {
    let src = resolve(root, from)?;
    let src_meta = fs::symlink_metadata(&src).map_err(|e| io_err(&src, e))?;
    if from == to {
        return Ok(());
    }
    let inside = |inner: &str, outer: &str| inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'));
    if inside(to, from) || inside(from, to) {
        let why = format!("cannot rename {from} to {to}: one contains the other");
        let source = io::Error::new(io::ErrorKind::InvalidInput, why);
        return Err(DiskError::Io {
            path: src.display().to_string(),
            source,
        });
    }
    ensure_parents(root, to)?;
    let dst = resolve(root, to)?;
    if let Some(meta) = lstat(&dst)? {
        // rename(2) replaces a file with a file, but not a directory with a file or the reverse.
        if meta.is_dir() || src_meta.is_dir() {
            remove_entry(&dst, &meta)?;
        }
    }
    fs::rename(&src, &dst).map_err(|e| io_err(&dst, e))?;
    sync_parent(&src)?;
    if src.parent() != dst.parent() {
        sync_parent(&dst)?;
    }
    Ok(())
}

/// Move `rel` (file, link or tree) to `quarantine_dir/rel` (parents created), by rename when on the same file system, else copy (preserving mode and mtime) + fsync + remove. Returns the new absolute path. Never overwrites: if the destination exists, append `.1`, `.2`, ...
pub fn quarantine(root: &Path, rel: &str, quarantine_dir: &Path) -> Result<PathBuf, DiskError> {
    let src = resolve(root, rel)?;
    let meta = fs::symlink_metadata(&src).map_err(|e| io_err(&src, e))?;
    fs::create_dir_all(quarantine_dir).map_err(|e| io_err(quarantine_dir, e))?;
    ensure_parents(quarantine_dir, rel)?;
    let base = resolve(quarantine_dir, rel)?;
    let mut dst = base.clone();
    let mut n = 0u32;
    while lstat(&dst)?.is_some() {
        n += 1;
        let mut name = base.as_os_str().to_os_string();
        name.push(format!(".{n}"));
        dst = PathBuf::from(name);
    }
    match fs::rename(&src, &dst) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => move_by_copy(&src, &dst, &meta)?,
        Err(e) => return Err(io_err(&src, e)),
    }
    sync_parent(&dst)?;
    sync_parent(&src)?;
    Ok(dst)
}

/// Remove leftover temp files (names starting with TEMP_PREFIX) anywhere under root, e.g. after a crash; returns how many.
pub fn remove_temp_files(root: &Path) -> Result<usize, DiskError> {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let path = entry.path();
            // The entry's own type: a symlink to a directory is not descended into.
            let kind = entry.file_type().map_err(|e| io_err(&path, e))?;
            if kind.is_dir() {
                dirs.push(path);
            } else if entry.file_name().as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// What is at `rel` right now, without following a final symlink (None if missing).
pub fn stat(root: &Path, rel: &str) -> Result<Option<std::fs::Metadata>, DiskError> {
    lstat(&resolve(root, rel)?)
}

/// Bytes available to unprivileged users on the file system holding `path` (statvfs f_bavail * f_frsize).
pub fn free_bytes(path: &Path) -> Result<u64, DiskError> {
    let vfs = rustix::fs::statvfs(path).map_err(|e| io_err(path, e.into()))?;
    Ok(vfs.f_bavail.saturating_mul(vfs.f_frsize))
}

/// FileAttrs of an existing metadata (mode & 0o7777, uid, gid, mtime in ns).
pub fn attrs_of(meta: &std::fs::Metadata) -> FileAttrs {
    FileAttrs {
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    }
}

/// The components of `rel`, refusing what could leave the folder (the caller validated it; this
/// is the last line of defence).
fn components<'a>(root: &Path, rel: &'a str) -> Result<Vec<&'a str>, DiskError> {
    let parts: Vec<&str> = rel.split('/').collect();
    if rel.contains('\0') || parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        let why = "not a path inside the folder (empty, absolute, or with `.`, `..` or NUL); \
                   the change is refused, report this as a bug"
            .to_string();
        return Err(DiskError::Unsafe {
            path: format!("{}/{rel}", root.display()),
            why,
        });
    }
    Ok(parts)
}

fn not_a_dir(root: &Path, rel: &str, component: &Path, meta: &Metadata) -> DiskError {
    let kind = meta.file_type();
    let why = if kind.is_symlink() {
        format!(
            "{} is a symlink; Tandem never writes through a symlink in a sync folder (it could lead outside \
             the folder); remove it on this node so the mirror can create the directory",
            component.display()
        )
    } else {
        format!(
            "{} is not a directory (a file or other entry is there); remove it on this node so the mirror can \
             create the directory",
            component.display()
        )
    };
    DiskError::Unsafe {
        path: format!("{}/{rel}", root.display()),
        why,
    }
}

/// ENOSPC and EDQUOT become NoSpace; everything else is Io.
fn io_err(path: &Path, source: io::Error) -> DiskError {
    let path = path.display().to_string();
    match source.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => DiskError::NoSpace { path },
        _ => DiskError::Io { path, source },
    }
}

fn lstat(path: &Path) -> Result<Option<Metadata>, DiskError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

fn refuse_dir(path: &Path, what: &str) -> Result<(), DiskError> {
    match lstat(path)? {
        Some(meta) if meta.is_dir() => Err(DiskError::Unsafe {
            path: path.display().to_string(),
            why: format!("a directory is there; it must be removed before {what} can take its place"),
        }),
        _ => Ok(()),
    }
}

fn remove_entry(path: &Path, meta: &Metadata) -> Result<(), DiskError> {
    // `remove_dir_all` removes symlinks inside the tree, never what they point to.
    let done = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    done.map_err(|e| io_err(path, e))
}

fn sync_dir(dir: &Path) -> Result<(), DiskError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))
}

fn sync_parent(path: &Path) -> Result<(), DiskError> {
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

fn timestamps(mtime_ns: i128) -> Timestamps {
    let secs = mtime_ns
        .div_euclid(1_000_000_000)
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    let time = Timespec {
        tv_sec: secs as i64,
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

fn set_mtime_nofollow(path: &Path, mtime_ns: i128) -> io::Result<()> {
    rustix::fs::utimensat(CWD, path, &timestamps(mtime_ns), AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

/// Owner first (chown clears set-id bits), then mode (not on symlinks), then times.
fn set_path_attrs(path: &Path, attrs: &FileAttrs, keep_owner: bool, symlink: bool) -> Result<(), DiskError> {
    if keep_owner {
        std::os::unix::fs::lchown(path, Some(attrs.uid), Some(attrs.gid)).map_err(|e| io_err(path, e))?;
    }
    if !symlink {
        fs::set_permissions(path, Permissions::from_mode(attrs.mode & 0o7777)).map_err(|e| io_err(path, e))?;
    }
    set_mtime_nofollow(path, attrs.mtime_ns).map_err(|e| io_err(path, e))
}

/// `<dir>/.tandem-tmp.<name>.<16 hex digits>`, the name shortened to keep within NAME_MAX.
fn temp_path(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let name = target.file_name().map_or(&[][..], |n| n.as_bytes());
    let keep = name.len().min(255 - TEMP_PREFIX.len() - 17);
    let mut temp = TEMP_PREFIX.as_bytes().to_vec();
    temp.extend_from_slice(&name[..keep]);
    temp.extend_from_slice(format!(".{:016x}", hasher.finish()).as_bytes());
    target.with_file_name(OsStr::from_bytes(&temp))
}

fn create_temp(target: &Path) -> Result<(File, PathBuf), DiskError> {
    let mut last = None;
    for _ in 0..8 {
        let temp = temp_path(target);
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp);
        match opened {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io_err(target, e)),
        }
    }
    Err(io_err(
        target,
        last.unwrap_or_else(|| io::ErrorKind::AlreadyExists.into()),
    ))
}

/// Removes the temp file unless disarmed (after the rename).
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Counts and hashes the bytes as they pass to the file.
struct HashingWriter {
    inner: BufWriter<File>,
    hasher: blake3::Hasher,
    count: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Moves across file systems: copy (mode and mtime kept, fsynced), then remove the source. A
/// failed copy is removed again and the source stays.
fn move_by_copy(src: &Path, dst: &Path, meta: &Metadata) -> Result<(), DiskError> {
    if let Err(e) = copy_tree(src, dst) {
        if let Ok(Some(partial)) = lstat(dst) {
            let _ = remove_entry(dst, &partial);
        }
        return Err(e);
    }
    remove_entry(src, meta)
}

fn copy_tree(src: &Path, dst: &Path) -> Result<(), DiskError> {
    let meta = fs::symlink_metadata(src).map_err(|e| io_err(src, e))?;
    let attrs = attrs_of(&meta);
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(src).map_err(|e| io_err(src, e))?;
        std::os::unix::fs::symlink(target, dst).map_err(|e| io_err(dst, e))?;
        set_mtime_nofollow(dst, attrs.mtime_ns).map_err(|e| io_err(dst, e))?;
    } else if kind.is_dir() {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dst)
            .map_err(|e| io_err(dst, e))?;
        for entry in fs::read_dir(src).map_err(|e| io_err(src, e))? {
            let entry = entry.map_err(|e| io_err(src, e))?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        set_path_attrs(dst, &attrs, false, false)?;
        sync_dir(dst)?;
    } else if kind.is_file() {
        let mut from = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(src)
            .map_err(|e| io_err(src, e))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(|e| io_err(dst, e))?;
        io::copy(&mut from, &mut to).map_err(|e| io_err(dst, e))?;
        to.set_permissions(Permissions::from_mode(attrs.mode))
            .map_err(|e| io_err(dst, e))?;
        rustix::fs::futimens(&to, &timestamps(attrs.mtime_ns)).map_err(|e| io_err(dst, e.into()))?;
        to.sync_all().map_err(|e| io_err(dst, e))?;
    }
    // FIFOs, sockets and device nodes hold no content to keep: they are not copied.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    fn attrs(mode: u32, mtime_ns: i128) -> FileAttrs {
        FileAttrs {
            mode,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            mtime_ns,
        }
    }

    const MTIME: i128 = 1_700_000_000_123_456_789;

    fn put(root: &Path, rel: &str, data: &[u8], attrs: &FileAttrs) -> Result<(), DiskError> {
        let hash = *blake3::hash(data).as_bytes();
        write_atomic(root, rel, data.len() as u64, &hash, attrs, false, &mut |w| {
            w.write_all(data)
        })
    }

    /// Temp files anywhere under `dir`, found independently of `remove_temp_files`.
    fn leftovers(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                found.extend(leftovers(&entry.path()));
            } else if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                found.push(entry.path());
            }
        }
        found
    }

    fn mtime_ns(path: &Path) -> i128 {
        attrs_of(&fs::symlink_metadata(path).unwrap()).mtime_ns
    }

    #[test]
    fn write_atomic_writes_content_and_attrs_then_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "a/b/f.txt", b"hello", &attrs(0o640, MTIME)).unwrap();
        let path = root.join("a/b/f.txt");
        // Before reading: a read may move the access time.
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(attrs_of(&meta).mtime_ns, MTIME);
        assert_eq!(meta.atime() as i128 * 1_000_000_000 + meta.atime_nsec() as i128, MTIME);
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert!(leftovers(root).is_empty());

        put(root, "a/b/f.txt", b"second version", &attrs(0o600, MTIME + 1)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second version");
        assert_eq!(mtime_ns(&path), MTIME + 1);
        assert!(leftovers(root).is_empty());
        assert!(matches!(
            put(root, "a/b", b"x", &attrs(0o644, MTIME)),
            Err(DiskError::Unsafe { .. })
        ));
    }

    #[test]
    fn mismatch_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "f", b"old", &attrs(0o644, MTIME)).unwrap();
        let wrong = *blake3::hash(b"other").as_bytes();
        let a = attrs(0o644, MTIME);
        let bad_hash = write_atomic(root, "f", 3, &wrong, &a, false, &mut |w| w.write_all(b"new"));
        assert!(matches!(bad_hash, Err(DiskError::Mismatch { .. })), "{bad_hash:?}");
        let right = *blake3::hash(b"new").as_bytes();
        let bad_size = write_atomic(root, "f", 4, &right, &a, false, &mut |w| w.write_all(b"new"));
        assert!(matches!(bad_size, Err(DiskError::Mismatch { .. })), "{bad_size:?}");
        assert_eq!(fs::read(root.join("f")).unwrap(), b"old");
        assert!(leftovers(root).is_empty());
    }

    #[test]
    fn failing_fill_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "f", b"old", &attrs(0o644, MTIME)).unwrap();
        let hash = *blake3::hash(b"newnew").as_bytes();
        let result = write_atomic(root, "f", 6, &hash, &attrs(0o644, MTIME), false, &mut |w| {
            w.write_all(b"new")?;
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer went away"))
        });
        assert!(matches!(result, Err(DiskError::Io { .. })), "{result:?}");
        assert_eq!(fs::read(root.join("f")).unwrap(), b"old");
        assert!(leftovers(root).is_empty());
    }

    #[test]
    fn symlinks_and_files_on_the_way_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(outside.path().join("x"), b"outside").unwrap();
        symlink(outside.path(), root.join("out")).unwrap();
        fs::write(root.join("a"), b"a").unwrap();
        let a = attrs(0o644, MTIME);
        let refused = |r: Result<(), DiskError>| matches!(r, Err(DiskError::Unsafe { .. }));
        assert!(refused(put(root, "out/x", b"in", &a)));
        assert!(refused(put(root, "out/new/y", b"in", &a)));
        assert!(refused(make_dir(root, "out/d", &a, false)));
        assert!(refused(make_symlink(root, "out/l", "x", MTIME)));
        assert!(refused(rename(root, "a", "out/a")));
        assert!(refused(remove(root, "out/x")));
        assert!(refused(set_attrs(root, "out/x", &attrs(0o600, MTIME), false)));
        assert!(refused(quarantine(root, "out/x", &root.join("q")).map(|_| ())));
        assert!(matches!(stat(root, "out/x"), Err(DiskError::Unsafe { .. })));
        let mut names: Vec<_> = fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec![std::ffi::OsString::from("x")]);
        assert_eq!(fs::read(outside.path().join("x")).unwrap(), b"outside");
        assert!(root.join("a").exists());
        // A regular file used as a directory.
        assert!(refused(put(root, "a/y", b"in", &a)));
        assert!(refused(ensure_parents(root, "a/y/z")));
        assert!(matches!(resolve(root, "a/y"), Err(DiskError::Unsafe { .. })));
        assert!(matches!(resolve(root, "../etc"), Err(DiskError::Unsafe { .. })));
        // The last component is not followed.
        assert_eq!(resolve(root, "out").unwrap(), root.join("out"));
    }

    #[test]
    fn make_dir_symlink_and_set_attrs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "d", b"file", &attrs(0o644, MTIME)).unwrap();
        make_dir(root, "d", &attrs(0o750, MTIME), false).unwrap();
        let meta = fs::symlink_metadata(root.join("d")).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o750);
        assert_eq!(attrs_of(&meta).mtime_ns, MTIME);

        make_symlink(root, "d/link", "../target", MTIME - 5).unwrap();
        assert_eq!(fs::read_link(root.join("d/link")).unwrap(), Path::new("../target"));
        assert_eq!(mtime_ns(&root.join("d/link")), MTIME - 5);
        put(root, "f", b"file", &attrs(0o644, MTIME)).unwrap();
        make_symlink(root, "f", "d", MTIME).unwrap();
        assert!(stat(root, "f").unwrap().unwrap().file_type().is_symlink());
        assert_eq!(fs::read_link(root.join("f")).unwrap(), Path::new("d"));

        put(root, "g", b"g", &attrs(0o644, MTIME)).unwrap();
        set_attrs(root, "g", &attrs(0o600, MTIME + 42), false).unwrap();
        let got = attrs_of(&stat(root, "g").unwrap().unwrap());
        assert_eq!((got.mode, got.mtime_ns), (0o600, MTIME + 42));
        // On a symlink only the time changes, the target is untouched.
        set_attrs(root, "f", &attrs(0o600, MTIME + 7), false).unwrap();
        assert_eq!(mtime_ns(&root.join("f")), MTIME + 7);
        assert_eq!(fs::metadata(root.join("d")).unwrap().mode() & 0o7777, 0o750);
        assert!(leftovers(root).is_empty());
        assert!(stat(root, "missing").unwrap().is_none());
    }

    #[test]
    fn remove_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(outside.path().join("keep"), b"keep").unwrap();
        put(root, "t/sub/f", b"f", &attrs(0o644, MTIME)).unwrap();
        symlink(outside.path(), root.join("t/sub/link")).unwrap();
        symlink(outside.path(), root.join("top")).unwrap();
        remove(root, "t").unwrap();
        remove(root, "top").unwrap();
        assert!(!root.join("t").exists());
        assert!(fs::symlink_metadata(root.join("top")).is_err());
        assert_eq!(fs::read(outside.path().join("keep")).unwrap(), b"keep");
        remove(root, "t").unwrap();
        remove(root, "never/was").unwrap();
    }

    #[test]
    fn rename_trees_and_replaces_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "a/x/f", b"f", &attrs(0o644, MTIME)).unwrap();
        put(root, "b/old", b"old", &attrs(0o644, MTIME)).unwrap();
        rename(root, "a", "b/c/a2").unwrap();
        assert!(!root.join("a").exists());
        assert_eq!(fs::read(root.join("b/c/a2/x/f")).unwrap(), b"f");

        put(root, "n", b"new", &attrs(0o644, MTIME)).unwrap();
        rename(root, "n", "b/old").unwrap();
        assert_eq!(fs::read(root.join("b/old")).unwrap(), b"new");
        assert!(!root.join("n").exists());

        // A directory at the destination is replaced.
        put(root, "m", b"m", &attrs(0o644, MTIME)).unwrap();
        rename(root, "m", "b/c").unwrap();
        assert_eq!(fs::read(root.join("b/c")).unwrap(), b"m");
        assert!(rename(root, "b", "b/inner").is_err());
        assert!(rename(root, "missing", "z").is_err());
    }

    #[test]
    fn quarantine_moves_without_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let q = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "d/f", b"one", &attrs(0o644, MTIME)).unwrap();
        let first = quarantine(root, "d/f", q.path()).unwrap();
        assert_eq!(first, q.path().join("d/f"));
        assert_eq!(fs::read(&first).unwrap(), b"one");
        assert!(!root.join("d/f").exists());

        put(root, "d/f", b"two", &attrs(0o644, MTIME)).unwrap();
        let second = quarantine(root, "d/f", q.path()).unwrap();
        assert_eq!(second, q.path().join("d/f.1"));
        assert_eq!(fs::read(&first).unwrap(), b"one");
        assert_eq!(fs::read(&second).unwrap(), b"two");

        put(root, "tree/a/b", b"b", &attrs(0o644, MTIME)).unwrap();
        let moved = quarantine(root, "tree", q.path()).unwrap();
        assert_eq!(fs::read(moved.join("a/b")).unwrap(), b"b");
        assert!(!root.join("tree").exists());
    }

    #[test]
    fn copy_move_keeps_content_mode_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "src/sub/f", b"data", &attrs(0o640, MTIME)).unwrap();
        make_symlink(root, "src/l", "sub/f", MTIME - 1).unwrap();
        set_attrs(root, "src/sub", &attrs(0o710, MTIME + 1), false).unwrap();
        let src = root.join("src");
        let dst = root.join("dst");
        move_by_copy(&src, &dst, &fs::symlink_metadata(&src).unwrap()).unwrap();
        assert!(!src.exists());
        let f = fs::metadata(dst.join("sub/f")).unwrap();
        assert_eq!(fs::read(dst.join("sub/f")).unwrap(), b"data");
        assert_eq!((f.mode() & 0o7777, attrs_of(&f).mtime_ns), (0o640, MTIME));
        let sub = fs::metadata(dst.join("sub")).unwrap();
        assert_eq!((sub.mode() & 0o7777, attrs_of(&sub).mtime_ns), (0o710, MTIME + 1));
        assert_eq!(fs::read_link(dst.join("l")).unwrap(), Path::new("sub/f"));
        assert_eq!(mtime_ns(&dst.join("l")), MTIME - 1);
    }

    #[test]
    fn remove_temp_files_finds_nested_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "a/b/keep", b"k", &attrs(0o644, MTIME)).unwrap();
        fs::write(root.join(format!("{TEMP_PREFIX}x.1")), b"").unwrap();
        fs::write(root.join(format!("a/b/{TEMP_PREFIX}keep.2")), b"").unwrap();
        symlink("nowhere", root.join(format!("a/{TEMP_PREFIX}l.3"))).unwrap();
        assert_eq!(leftovers(root).len(), 3);
        assert_eq!(remove_temp_files(root).unwrap(), 3);
        assert!(leftovers(root).is_empty());
        assert!(root.join("a/b/keep").exists());
        assert_eq!(remove_temp_files(root).unwrap(), 0);
    }

    /// Unmounts the test tmpfs even when an assertion fails.
    struct Mount(PathBuf);

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }

    #[test]
    fn full_disk_is_no_space_and_keeps_old_content() {
        if !rustix::process::geteuid().is_root() {
            println!("full_disk_is_no_space_and_keeps_old_content skipped: mounting a small tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        let _mount = Mount(mnt.clone());
        assert!(free_bytes(&mnt).unwrap() <= 1 << 20);

        let small = vec![7u8; 100_000];
        put(&mnt, "small", &small, &attrs(0o644, MTIME)).unwrap();
        let big = vec![9u8; 4 << 20];
        let result = put(&mnt, "dir/big", &big, &attrs(0o644, MTIME));
        assert!(matches!(result, Err(DiskError::NoSpace { .. })), "{result:?}");
        assert_eq!(fs::read(mnt.join("small")).unwrap(), small);
        assert!(leftovers(&mnt).is_empty());
        assert!(stat(&mnt, "dir/big").unwrap().is_none());

        remove(&mnt, "small").unwrap();
        let medium = vec![5u8; 512 << 10];
        put(&mnt, "dir/big", &medium, &attrs(0o644, MTIME)).unwrap();
        assert_eq!(fs::read(mnt.join("dir/big")).unwrap(), medium);
    }
}
