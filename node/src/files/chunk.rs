//! Content-defined chunks (FastCDC, blake3), the standby's staging area for pushed chunks, and
//! the compressed chunk batches that travel on the peer port.
//!
//! A file is cut where its content says so, not at fixed offsets, so a small edit changes one
//! or two chunks and leaves the others' hashes alone: only those move.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use serde::Deserialize;
use serde::Serialize;
use tandem_raft_store::codec;
use tandem_raft_store::records::ChunkRef;

/// FastCDC's smallest, average and largest chunk.
pub const CHUNK_MIN_BYTES: u32 = 16 * 1024;
pub const CHUNK_AVG_BYTES: u32 = 64 * 1024;
pub const CHUNK_MAX_BYTES: u32 = 256 * 1024;
const _: () = assert!(CHUNK_MAX_BYTES <= tandem_raft_store::records::CHUNK_MAX_BYTES);

/// Most uncompressed chunk bytes in one batch on the wire.
pub const BATCH_MAX_BYTES: usize = 8 * 1024 * 1024;
/// zstd level for chunk batches: fast, still worth it on text and logs.
const ZSTD_LEVEL: i32 = 1;

/// A file cut into chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunked {
    pub size: u64,
    /// blake3 of the whole content.
    pub hash: [u8; 32],
    pub chunks: Vec<ChunkRef>,
}

impl Chunked {
    /// Where each distinct chunk lies: hash → (offset, length).
    pub fn locations(&self) -> HashMap<[u8; 32], (u64, u32)> {
        let mut at = 0;
        let mut out = HashMap::with_capacity(self.chunks.len());
        for c in &self.chunks {
            out.entry(c.hash).or_insert((at, c.len));
            at += u64::from(c.len);
        }
        out
    }
}

/// blake3 of a whole file, streamed (for comparing a copy with a recorded hash).
pub fn hash_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path)?)?;
    Ok(*hasher.finalize().as_bytes())
}

/// Split `items` into batches of at most [`BATCH_MAX_BYTES`] by `len` (an item larger than
/// that goes alone), keeping their order.
pub fn batches<T>(items: Vec<T>, len: impl Fn(&T) -> u32) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let n = len(&item) as usize;
        match out.last_mut() {
            Some(batch) if bytes + n <= BATCH_MAX_BYTES => batch.push(item),
            _ => {
                out.push(vec![item]);
                bytes = 0;
            }
        }
        bytes += n;
    }
    out
}

/// Cut the file at `path` into chunks, hashing each and the whole as it streams by.
pub fn chunk_file(path: &Path) -> io::Result<Chunked> {
    chunk_reader(File::open(path)?)
}

pub fn chunk_reader(reader: impl Read) -> io::Result<Chunked> {
    let mut whole = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let cdc = fastcdc::v2020::StreamCDC::new(reader, CHUNK_MIN_BYTES, CHUNK_AVG_BYTES, CHUNK_MAX_BYTES);
    for chunk in cdc {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => e,
            other => io::Error::other(other.to_string()),
        })?;
        whole.update(&chunk.data);
        size += chunk.length as u64;
        chunks.push(ChunkRef {
            hash: *blake3::hash(&chunk.data).as_bytes(),
            len: chunk.length as u32,
        });
    }
    Ok(Chunked {
        size,
        hash: *whole.finalize().as_bytes(),
        chunks,
    })
}

/// Read `len` bytes at `offset` of `file`.
fn read_at(file: &mut File, offset: u64, len: u32) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; len as usize];
    file.read_exact(&mut buf)?;
    Ok(buf)
}

pub fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Chunks pushed or fetched ahead of the record that needs them. Each batch that arrives is
/// written as one pack file (not one file per chunk: creating and deleting thousands of small
/// files costs more than the bytes), and an index in memory says where each chunk is. A pack
/// is deleted once every chunk in it has been used, or after [`STAGING_TTL`].
///
/// Staged chunks are verified on the way in and again on the way out. The index is not kept
/// across restarts: [`Staging::open`] empties the area, and whatever a record still needs is
/// fetched from the other data node like any missing content.
#[derive(Debug, Clone)]
pub struct Staging {
    dir: PathBuf,
    packs: Arc<Mutex<Packs>>,
}

#[derive(Debug, Default)]
struct Packs {
    next: u64,
    chunks: HashMap<[u8; 32], Loc>,
    /// Pack number → chunks in it not used yet, and when it was written.
    live: HashMap<u64, (usize, Instant)>,
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    pack: u64,
    offset: u64,
    len: u32,
}

/// How long an unused staged chunk is kept.
pub const STAGING_TTL: Duration = Duration::from_secs(3600);

impl Staging {
    /// The staging area in `dir`, emptied of anything an earlier run left.
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                std::fs::remove_dir_all(e.path())?;
            } else {
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(Self {
            dir,
            packs: Arc::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Packs> {
        self.packs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pack_path(&self, pack: u64) -> PathBuf {
        self.dir.join(format!("pack-{pack}"))
    }

    pub fn has(&self, hash: &[u8; 32]) -> bool {
        self.lock().chunks.contains_key(hash)
    }

    /// Store checked chunks as one pack. Chunks already staged are skipped.
    pub fn put_all(&self, chunks: &Checked) -> io::Result<()> {
        let mut seen = std::collections::HashSet::new();
        let (pack, fresh) = {
            let mut p = self.lock();
            let fresh: Vec<&ChunkData> = chunks
                .0
                .iter()
                .filter(|(h, _)| seen.insert(*h) && !p.chunks.contains_key(h))
                .collect();
            if fresh.is_empty() {
                return Ok(());
            }
            p.next += 1;
            (p.next, fresh)
        };
        let path = self.pack_path(pack);
        let mut locs = Vec::with_capacity(fresh.len());
        let written = (|| {
            let mut f = std::io::BufWriter::with_capacity(1 << 20, File::create(&path)?);
            let mut offset = 0u64;
            for (hash, data) in &fresh {
                f.write_all(data)?;
                locs.push((
                    *hash,
                    Loc {
                        pack,
                        offset,
                        len: data.len() as u32,
                    },
                ));
                offset += data.len() as u64;
            }
            f.flush()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let mut p = self.lock();
        let mut live = 0;
        for (hash, loc) in locs {
            // Another batch may have brought the same chunk meanwhile: one copy is enough.
            if let std::collections::hash_map::Entry::Vacant(v) = p.chunks.entry(hash) {
                v.insert(loc);
                live += 1;
            }
        }
        if live == 0 {
            drop(p);
            let _ = std::fs::remove_file(&path);
        } else {
            p.live.insert(pack, (live, Instant::now()));
        }
        Ok(())
    }

    /// A staged chunk, checked again (a staged file can rot like any other).
    pub fn get(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let loc = *self.lock().chunks.get(hash)?;
        let mut data = vec![0; loc.len as usize];
        let read = File::open(self.pack_path(loc.pack)).and_then(|f| f.read_exact_at(&mut data, loc.offset));
        if read.is_err() || blake3::hash(&data).as_bytes() != hash {
            self.remove(hash);
            return None;
        }
        Some(data)
    }

    /// The chunk is no longer needed here; its pack goes with the last of its chunks.
    pub fn remove(&self, hash: &[u8; 32]) {
        let mut p = self.lock();
        let Some(loc) = p.chunks.remove(hash) else {
            return;
        };
        let last = p.live.get_mut(&loc.pack).is_some_and(|(n, _)| {
            *n -= 1;
            *n == 0
        });
        if last {
            p.live.remove(&loc.pack);
            drop(p);
            let _ = std::fs::remove_file(self.pack_path(loc.pack));
        }
    }

    /// Remove packs written more than `ttl` ago; returns how many chunks went with them.
    pub fn sweep(&self, ttl: Duration) -> usize {
        let mut p = self.lock();
        let old: Vec<u64> = p
            .live
            .iter()
            .filter(|(_, (_, made))| made.elapsed() > ttl)
            .map(|(&pack, _)| pack)
            .collect();
        if old.is_empty() {
            return 0;
        }
        let before = p.chunks.len();
        p.chunks.retain(|_, loc| !old.contains(&loc.pack));
        let removed = before - p.chunks.len();
        for pack in &old {
            p.live.remove(pack);
        }
        drop(p);
        for pack in old {
            let _ = std::fs::remove_file(self.pack_path(pack));
        }
        removed
    }
}

/// The chunks of a local file, by hash: reused when a new version is assembled, read when
/// they are sent.
pub struct LocalChunks {
    file: File,
    at: HashMap<[u8; 32], (u64, u32)>,
}

impl LocalChunks {
    /// Chunk the file at `path` (None when there is none to reuse).
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        if !meta.is_file() || meta.len() == 0 {
            return None;
        }
        Self::open(path, &chunk_file(path).ok()?).ok()
    }

    /// The file at `path`, already cut into `chunked`.
    pub fn open(path: &Path, chunked: &Chunked) -> io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
            at: chunked.locations(),
        })
    }

    pub fn has(&self, hash: &[u8; 32]) -> bool {
        self.at.contains_key(hash)
    }

    /// The chunk's length, if the file has it.
    pub fn len_of(&self, hash: &[u8; 32]) -> Option<u32> {
        self.at.get(hash).map(|&(_, len)| len)
    }

    /// The chunk's content, checked against its hash (None if absent, unreadable, or the file
    /// changed since it was cut).
    pub fn get(&mut self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        let (offset, len) = *self.at.get(hash)?;
        let data = read_at(&mut self.file, offset, len).ok()?;
        (blake3::hash(&data).as_bytes() == hash).then_some(data)
    }
}

/// A chunk's hash and content.
pub type ChunkData = ([u8; 32], Vec<u8>);

#[derive(Serialize, Deserialize)]
struct Batch {
    chunks: Vec<Chunk>,
}

/// One chunk in a batch; its content is coded as one run of bytes.
#[derive(Serialize, Deserialize)]
struct Chunk([u8; 32], #[serde(with = "tandem_raft_store::codec::bytes")] Vec<u8>);

/// Chunks whose contents match their hashes: made only by [`Checked::new`], so what reaches
/// the staging area was hashed once, on the way in.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked(Vec<ChunkData>);

impl Checked {
    /// Check each chunk against its hash; the first that does not match refuses them all.
    pub fn new(chunks: Vec<ChunkData>) -> Result<Checked, String> {
        for (hash, data) in &chunks {
            if blake3::hash(data).as_bytes() != hash {
                return Err(format!("chunk {} does not match its hash", hex(hash)));
            }
        }
        Ok(Checked(chunks))
    }

    pub fn chunks(&self) -> &[ChunkData] {
        &self.0
    }
}

/// A batch of chunks for the wire: codec-framed, then zstd.
pub fn encode_batch(chunks: Vec<ChunkData>) -> io::Result<Vec<u8>> {
    let chunks = chunks.into_iter().map(|(h, d)| Chunk(h, d)).collect();
    let framed = codec::encode(&Batch { chunks }).map_err(io::Error::other)?;
    zstd::bulk::compress(&framed, ZSTD_LEVEL)
}

/// Decode a batch, refusing more than [`BATCH_MAX_BYTES`] of content (a compressed bomb stops
/// there) and any chunk that does not match its hash.
pub fn decode_batch(bytes: &[u8]) -> Result<Checked, String> {
    // The frame adds a few bytes per chunk around the content.
    let limit = BATCH_MAX_BYTES + BATCH_MAX_BYTES / 64 + 4096;
    let framed = zstd::bulk::decompress(bytes, limit)
        .map_err(|e| format!("chunk batch does not decompress within {limit} bytes (BATCH_MAX_BYTES): {e}"))?;
    let batch: Batch = codec::decode(&framed).map_err(|e| format!("chunk batch: {e}"))?;
    let total: usize = batch.chunks.iter().map(|c| c.1.len()).sum();
    if total > BATCH_MAX_BYTES {
        return Err(format!(
            "chunk batch holds {total} bytes, more than BATCH_MAX_BYTES ({BATCH_MAX_BYTES})"
        ));
    }
    Checked::new(batch.chunks.into_iter().map(|Chunk(h, d)| (h, d)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_one_byte_edit_changes_about_one_chunk() {
        let mut data = noise(8 * 1024 * 1024, 7);
        let before = chunk_reader(&data[..]).unwrap();
        assert_eq!(before.size, data.len() as u64);
        assert_eq!(before.hash, *blake3::hash(&data).as_bytes());
        assert!(before.chunks.iter().all(|c| c.len <= CHUNK_MAX_BYTES));
        let n = before.chunks.len();
        assert!((60..=250).contains(&n), "{n} chunks for 8 MiB at an average of 64 KiB");
        data[5_000_000] ^= 0xff;
        let after = chunk_reader(&data[..]).unwrap();
        let old: std::collections::HashSet<_> = before.chunks.iter().map(|c| c.hash).collect();
        let new: Vec<_> = after.chunks.iter().filter(|c| !old.contains(&c.hash)).collect();
        assert!(
            (1..=2).contains(&new.len()),
            "{} new chunks after a 1-byte edit",
            new.len()
        );
        // An insertion shifts everything after it, but the cuts resynchronise.
        data.splice(100..100, [1, 2, 3]);
        let shifted = chunk_reader(&data[..]).unwrap();
        let moved = shifted.chunks.iter().filter(|c| !old.contains(&c.hash)).count();
        assert!(moved <= 4, "{moved} new chunks after a 3-byte insertion");
    }

    fn checked(chunks: &[&ChunkData]) -> Checked {
        Checked::new(chunks.iter().map(|&c| c.clone()).collect()).unwrap()
    }

    #[test]
    fn staging_keeps_only_chunks_that_match_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let area = dir.path().join("staging");
        std::fs::create_dir_all(area.join("ab")).unwrap();
        std::fs::write(area.join("ab").join("cd"), b"left by an earlier run").unwrap();
        let staging = Staging::open(area.clone()).unwrap();
        let files = || std::fs::read_dir(&area).unwrap().count();
        assert_eq!(files(), 0, "an earlier run's staging is cleared");

        let chunk = |text: &str| (*blake3::hash(text.as_bytes()).as_bytes(), text.as_bytes().to_vec());
        let (a, b, c) = (chunk("scene 12: night"), chunk("scene 13: dawn"), chunk("scene 14"));
        // One chunk that does not match its hash and the whole batch is refused.
        let err = Checked::new(vec![a.clone(), ([0; 32], b.1.clone())]).unwrap_err();
        assert!(err.to_string().contains("does not match its hash"), "{err}");
        assert!(!staging.has(&a.0) && !staging.has(&[0; 32]));
        assert_eq!(files(), 0);

        // A batch is one pack; a chunk staged twice is kept once.
        staging.put_all(&checked(&[&a, &b, &a])).unwrap();
        assert_eq!(files(), 1);
        staging.put_all(&checked(&[&b])).unwrap();
        assert_eq!(files(), 1, "nothing new, no pack");
        assert_eq!(staging.get(&a.0).unwrap(), a.1);
        assert_eq!(staging.get(&b.0).unwrap(), b.1);
        staging.remove(&a.0);
        assert!(!staging.has(&a.0) && staging.has(&b.0));
        assert_eq!(files(), 1, "the pack stays while a chunk in it is unused");
        staging.remove(&b.0);
        assert_eq!(files(), 0, "and goes with its last chunk");

        // A rotten pack is not served, and the chunk is dropped.
        staging.put_all(&checked(&[&c])).unwrap();
        let pack = std::fs::read_dir(&area).unwrap().next().unwrap().unwrap().path();
        std::fs::write(&pack, b"rotten!!").unwrap();
        assert!(staging.get(&c.0).is_none(), "a rotten chunk is not served");
        assert!(!staging.has(&c.0), "and is dropped");

        staging.put_all(&checked(&[&a, &b])).unwrap();
        assert_eq!(staging.sweep(Duration::from_secs(60)), 0);
        assert_eq!(staging.sweep(Duration::ZERO), 2);
        assert!(!staging.has(&a.0));
        assert_eq!(files(), 0);
    }

    #[test]
    fn batches_compress_and_refuse_bad_or_oversized_content() {
        let text = b"line of a log file\n".repeat(10_000);
        let hash = *blake3::hash(&text).as_bytes();
        let wire = encode_batch(vec![(hash, text.clone())]).unwrap();
        assert!(wire.len() < text.len() / 10, "{} bytes on the wire", wire.len());
        assert_eq!(decode_batch(&wire).unwrap().chunks(), [(hash, text.clone())]);
        let lie = encode_batch(vec![([9; 32], text)]).unwrap();
        assert!(decode_batch(&lie).unwrap_err().contains("does not match"));
        let just_over = vec![0u8; BATCH_MAX_BYTES + 1];
        let wire = encode_batch(vec![(*blake3::hash(&just_over).as_bytes(), just_over)]).unwrap();
        assert!(decode_batch(&wire).unwrap_err().contains("BATCH_MAX_BYTES"));
        let bomb = vec![0u8; BATCH_MAX_BYTES * 2];
        let wire = encode_batch(vec![(*blake3::hash(&bomb).as_bytes(), bomb)]).unwrap();
        assert!(decode_batch(&wire).unwrap_err().contains("BATCH_MAX_BYTES"));
        assert!(decode_batch(b"not zstd").is_err());
    }

    #[test]
    fn batches_stay_under_the_limit_and_keep_their_order() {
        let half = BATCH_MAX_BYTES as u32 / 2;
        let sizes = vec![half, half, 1, half * 3, 5];
        let split = batches(sizes, |n| *n);
        assert_eq!(split, vec![vec![half, half], vec![1], vec![half * 3], vec![5]]);
        assert!(batches(Vec::<u32>::new(), |n| *n).is_empty());
    }

    #[test]
    fn local_chunks_serve_the_parts_of_the_current_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let data = noise(1024 * 1024, 3);
        std::fs::write(&path, &data).unwrap();
        let chunked = chunk_file(&path).unwrap();
        assert_eq!(hash_file(&path).unwrap(), chunked.hash);
        let mut local = LocalChunks::of(&path).unwrap();
        let mut rebuilt = Vec::new();
        for c in &chunked.chunks {
            rebuilt.extend(local.get(&c.hash).unwrap());
        }
        assert_eq!(rebuilt, data);
        assert!(local.get(&[0; 32]).is_none());
    }
}
