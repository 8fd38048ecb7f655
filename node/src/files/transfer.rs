//! File contents on the peer port: the active pushes the chunks a standby lacks before it
//! proposes a large file's record; a node missing contents fetches them from the other data node.
//! Requests are codec-encoded; chunk batches are zstd-compressed (see [`chunk::encode_batch`]).
//!
//! - `POST /peer/files/have` `{folder, path, hashes}` → which of those chunks the answering node
//!   holds (staged, or in its current copy of the path);
//! - `POST /peer/files/put` a chunk batch → staged, each chunk verified;
//! - `POST /peer/files/manifest` `{folder, path}` → the chunk list of the answering node's copy;
//! - `POST /peer/files/get` `{folder, path, hash, chunks}` → a batch of those chunks, read from
//!   the answering node's copy as long as it still has content `hash`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use tandem_raft_store::codec;
use tandem_raft_store::records::check_rel_path;

use super::chunk;
use super::chunk::Chunked;
use super::chunk::LocalChunks;
use super::disk;
use super::FileSync;

#[derive(Debug, Serialize, Deserialize)]
pub struct HaveRequest {
    pub folder: String,
    pub path: String,
    /// Log index of the path's last committed change (0: none). The copy on disk counts only
    /// once it is applied: until then that change may still replace it (a version proposed
    /// while the file was being written, whose chunks are only partly those of the copy here).
    pub after: u64,
    pub hashes: Vec<[u8; 32]>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestRequest {
    pub folder: String,
    pub path: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GetRequest {
    pub folder: String,
    pub path: String,
    /// The whole content the asker expects; refused if the copy here changed since.
    pub hash: [u8; 32],
    pub chunks: Vec<[u8; 32]>,
}

/// Most chunk hashes in one `have` or `get` request.
pub const HASHES_PER_REQUEST_MAX: usize = 1 << 16;
/// Longest a standby waits to apply a path's last committed change before it answers which
/// chunks of that path it holds.
pub const HAVE_WAITS_FOR_APPLY: std::time::Duration = std::time::Duration::from_secs(10);

pub fn routes(files: Arc<FileSync>) -> Router {
    Router::new()
        .route("/peer/files/have", post(have))
        .route("/peer/files/put", post(put))
        .route("/peer/files/manifest", post(manifest))
        .route("/peer/files/get", post(get))
        .with_state(files)
}

/// A request refused, with the status and the reason sent back.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn bad(status: StatusCode, message: String) -> Refusal {
    Refusal(status, message)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    codec::decode(body).map_err(|e| bad(StatusCode::BAD_REQUEST, format!("cannot decode file request: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response, Refusal> {
    match codec::encode(value) {
        Ok(bytes) => Ok(([("content-type", "application/octet-stream")], bytes).into_response()),
        Err(e) => Err(bad(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode answer: {e}"),
        )),
    }
}

/// The folder's root for a request's folder and path, both checked.
fn target(files: &FileSync, folder: &str, path: &str) -> Result<std::path::PathBuf, Refusal> {
    check_rel_path(path).map_err(|e| bad(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let spec = files.folder(folder).ok_or_else(|| {
        bad(
            StatusCode::NOT_FOUND,
            format!("sync folder {folder:?} is not configured on this node"),
        )
    })?;
    disk::resolve(&spec.root, path).map_err(|e| bad(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

async fn have(State(files): State<Arc<FileSync>>, body: Bytes) -> Result<Response, Refusal> {
    let req: HaveRequest = decode(&body)?;
    if req.hashes.len() > HASHES_PER_REQUEST_MAX {
        return Err(bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("more than HASHES_PER_REQUEST_MAX ({HASHES_PER_REQUEST_MAX}) hashes"),
        ));
    }
    let path = target(&files, &req.folder, &req.path)?;
    let local = if files.wait_materialized(req.after, HAVE_WAITS_FOR_APPLY).await {
        files.chunked_copy(&path).await
    } else {
        None // still behind: only staged chunks count, and the active pushes the rest
    };
    let local: std::collections::HashSet<[u8; 32]> =
        local.iter().flat_map(|c| c.chunks.iter().map(|r| r.hash)).collect();
    let held: Vec<bool> = req
        .hashes
        .iter()
        .map(|h| local.contains(h) || files.staging.has(h))
        .collect();
    encode(&held)
}

async fn put(State(files): State<Arc<FileSync>>, body: Bytes) -> Result<Response, Refusal> {
    let staging = files.staging.clone();
    let result = tokio::task::spawn_blocking(move || {
        let chunks = chunk::decode_batch(&body)?;
        staging
            .put_all(&chunks)
            .map_err(|e| format!("cannot stage chunks: {e}"))?;
        Ok::<usize, String>(chunks.chunks().len())
    })
    .await;
    match result {
        Ok(Ok(n)) => encode(&n),
        Ok(Err(e)) => Err(bad(StatusCode::UNPROCESSABLE_ENTITY, e)),
        Err(e) => Err(bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn manifest(State(files): State<Arc<FileSync>>, body: Bytes) -> Result<Response, Refusal> {
    let req: ManifestRequest = decode(&body)?;
    let path = target(&files, &req.folder, &req.path)?;
    let copy: Option<Chunked> = files.chunked_copy(&path).await.map(|c| (*c).clone());
    encode(&copy)
}

async fn get(State(files): State<Arc<FileSync>>, body: Bytes) -> Result<Response, Refusal> {
    let req: GetRequest = decode(&body)?;
    if req.chunks.len() > HASHES_PER_REQUEST_MAX {
        return Err(bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("more than HASHES_PER_REQUEST_MAX ({HASHES_PER_REQUEST_MAX}) chunks"),
        ));
    }
    let path = target(&files, &req.folder, &req.path)?;
    let Some(copy) = files.chunked_copy(&path).await.filter(|c| c.hash == req.hash) else {
        return Err(bad(
            StatusCode::CONFLICT,
            format!(
                "{}/{}: this node's copy no longer has that content",
                req.folder, req.path
            ),
        ));
    };
    let result = tokio::task::spawn_blocking(move || {
        let mut file = LocalChunks::open(&path, &copy).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut total = 0usize;
        for h in &req.chunks {
            let Some(len) = file.len_of(h) else {
                return Err(format!("chunk {} is not part of this copy", chunk::hex(h)));
            };
            total += len as usize;
            if total > chunk::BATCH_MAX_BYTES {
                return Err(format!(
                    "more than BATCH_MAX_BYTES ({}) asked for",
                    chunk::BATCH_MAX_BYTES
                ));
            }
            let data = file.get(h).ok_or("the copy changed while it was read")?;
            out.push((*h, data));
        }
        chunk::encode_batch(out).map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(bytes)) => Ok(([("content-type", "application/octet-stream")], bytes).into_response()),
        Ok(Err(e)) => Err(bad(StatusCode::CONFLICT, e)),
        Err(e) => Err(bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}
