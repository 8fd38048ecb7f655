//! What this node last knew to be on its own disk in each sync folder: the content Tandem wrote
//! there (as standby) or saw committed (as active). A file whose disk content matches neither
//! this nor the replicated index was changed locally and never committed: on rejoin it goes to
//! quarantine instead of being overwritten.

use std::path::Path;

use serde::Deserialize;
use serde::Serialize;
use tandem_raft_store::codec;
use tandem_raft_store::records::link_hash;
use tandem_raft_store::records::FileChange;
use tandem_raft_store::records::FileKind;
use tandem_raft_store::records::FileOp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEntry {
    pub kind: FileKind,
    pub size: u64,
    pub hash: [u8; 32],
    /// The mtime the entry had then: a file still of this size and mtime is taken as unchanged.
    pub mtime_ns: i128,
}

impl LocalEntry {
    /// Whether `meta` is a file of this entry's size and mtime: taken as the content Tandem
    /// last knew to be there, without reading it.
    pub fn same_stat(&self, meta: &std::fs::Metadata) -> bool {
        self.kind == FileKind::File
            && meta.is_file()
            && self.size == meta.len()
            && self.mtime_ns == super::disk::attrs_of(meta).mtime_ns
    }
}

/// sled's page cache for the local manifest (sled's default is 1 GiB).
const LOCAL_MANIFEST_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The local manifest, on sled in the data dir.
#[derive(Clone)]
pub struct LocalManifest {
    tree: sled::Tree,
}

fn key(folder: &str, path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(folder.len() + path.len() + 1);
    k.extend_from_slice(folder.as_bytes());
    k.push(0);
    k.extend_from_slice(path.as_bytes());
    k
}

impl LocalManifest {
    pub fn open(dir: &Path) -> Result<Self, String> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(LOCAL_MANIFEST_CACHE_BYTES)
            .open()
            .map_err(|e| format!("cannot open the local file manifest in {}: {e}", dir.display()))?;
        let tree = db
            .open_tree("local")
            .map_err(|e| format!("cannot open the local file manifest: {e}"))?;
        Ok(Self { tree })
    }

    pub fn get(&self, folder: &str, path: &str) -> Option<LocalEntry> {
        let v = self.tree.get(key(folder, path)).ok()??;
        codec::decode(&v).ok()
    }

    pub fn put(&self, folder: &str, path: &str, entry: LocalEntry) {
        if let Ok(v) = codec::encode(&entry) {
            if let Err(e) = self.tree.insert(key(folder, path), v) {
                tracing::warn!(folder, path, error = %e, "cannot update the local file manifest");
            }
        }
    }

    /// Remove `path` and everything under it.
    pub fn remove_tree(&self, folder: &str, path: &str) {
        let _ = self.tree.remove(key(folder, path));
        for k in self.keys_under(folder, path) {
            let _ = self.tree.remove(k);
        }
    }

    fn keys_under(&self, folder: &str, path: &str) -> Vec<sled::IVec> {
        let prefix = key(folder, &format!("{path}/"));
        self.tree.scan_prefix(prefix).keys().flatten().collect()
    }

    /// Follow a committed change (the disk now holds what it says).
    pub fn follow(&self, change: &FileChange) {
        let (folder, path) = (change.folder.as_str(), change.path.as_str());
        match &change.op {
            FileOp::Write { size, hash, attrs, .. } => {
                self.remove_tree(folder, path);
                self.put(
                    folder,
                    path,
                    LocalEntry {
                        kind: FileKind::File,
                        size: *size,
                        hash: *hash,
                        mtime_ns: attrs.mtime_ns,
                    },
                )
            }
            FileOp::Mkdir { attrs } => self.put(
                folder,
                path,
                LocalEntry {
                    kind: FileKind::Dir,
                    size: 0,
                    hash: [0; 32],
                    mtime_ns: attrs.mtime_ns,
                },
            ),
            FileOp::Symlink { target, mtime_ns } => {
                self.remove_tree(folder, path);
                self.put(
                    folder,
                    path,
                    LocalEntry {
                        kind: FileKind::Symlink,
                        size: 0,
                        hash: link_hash(target),
                        mtime_ns: *mtime_ns,
                    },
                )
            }
            FileOp::SetAttrs { attrs } => {
                if let Some(mut e) = self.get(folder, path) {
                    e.mtime_ns = attrs.mtime_ns;
                    self.put(folder, path, e);
                }
            }
            FileOp::Delete => self.remove_tree(folder, path),
            FileOp::Rename { to } => {
                self.remove_tree(folder, to);
                let mut moved = Vec::new();
                if let Some(e) = self.get(folder, path) {
                    moved.push((to.clone(), e));
                }
                for k in self.keys_under(folder, path) {
                    let rest = &k[folder.len() + 1 + path.len()..];
                    if let Ok(v) = self.tree.get(&k) {
                        if let Some(e) = v.and_then(|v| codec::decode::<LocalEntry>(&v).ok()) {
                            moved.push((format!("{to}{}", String::from_utf8_lossy(rest)), e));
                        }
                    }
                }
                self.remove_tree(folder, path);
                for (p, e) in moved {
                    self.put(folder, &p, e);
                }
            }
        }
    }

    /// Whether this node never recorded anything of `folder` (it never mirrored it).
    pub fn knows_nothing_of(&self, folder: &str) -> bool {
        let mut prefix = folder.as_bytes().to_vec();
        prefix.push(0);
        self.tree.scan_prefix(prefix).next().is_none()
    }

    pub fn flush(&self) {
        let _ = self.tree.flush();
    }
}
