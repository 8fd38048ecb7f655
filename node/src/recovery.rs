//! Recovery when quorum is gone for good (both the witness and the other data node lost).
//!
//! A data node never activates without a quorum. An operator who knows the other two will not
//! come back with their data can make one data node a cluster of its own:
//!
//! 1. `POST /v1/recover` (`tandemctl recover --force-single-node`) on that node checks that it
//!    has heard from no leader for [`RECOVER_SILENCE_MIN`], writes [`REQUEST_FILE`] into the
//!    data dir, and restarts the node process in place (same pid, same arguments);
//! 2. at start, before Raft runs, the request is carried out on the store
//!    ([`tandem_raft_store::SledLogStore::force_single_voter`]): a membership entry with this
//!    node as the only voter, in a new term. The request file becomes [`DONE_FILE`];
//! 3. Raft elects the node alone; once it leads, the recovery is written to the replicated
//!    audit trail and [`DONE_FILE`] is removed.
//!
//! The others rejoin with an empty data dir (`POST /v1/cluster/rejoin`): they are added as
//! learners, catch up, and become voters again. Until then the recovered node refuses Raft
//! messages from nodes outside its membership, so a returning node that still holds its old
//! log cannot disturb it.

use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use tandem_raft_store::records::AuditEntry;
use tandem_raft_store::records::Record;
use tandem_raft_store::sled_store::ForcedMembership;

use crate::consensus::Consensus;

/// Written by the API, read at start.
pub const REQUEST_FILE: &str = "recover-single-node.request";
/// What was done, kept until it is in the audit trail.
pub const DONE_FILE: &str = "recover-single-node.done";
/// How long a node must have heard from no leader before it may be recovered alone.
pub const RECOVER_SILENCE_MIN: Duration = Duration::from_secs(5);

/// The operator's request, as written to [`REQUEST_FILE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub requested_at_ms: u64,
    pub actor: String,
}

/// What was done, as written to [`DONE_FILE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub request: Request,
    pub term: u64,
    pub index: u64,
    pub previous_voters: Vec<u64>,
}

pub fn request_path(data_dir: &Path) -> PathBuf {
    data_dir.join(REQUEST_FILE)
}

/// Write the request durably (file and directory synced) before the restart.
pub fn write_request(data_dir: &Path, request: &Request) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{REQUEST_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(
        serde_json::to_string(request)
            .map_err(std::io::Error::other)?
            .as_bytes(),
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, request_path(data_dir))?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// At start, before Raft: carry out a pending request on the store. Returns what was done.
pub fn carry_out_pending(
    data_dir: &Path,
    force: impl FnOnce() -> std::io::Result<ForcedMembership>,
) -> anyhow::Result<Option<Done>> {
    let path = request_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let request: Request = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a recovery request this build understands ({e}); remove it to start normally",
            path.display()
        )
    })?;
    let forced = force().map_err(|e| anyhow::anyhow!("forced single-node recovery failed on the store: {e}"))?;
    let done = Done {
        request,
        term: forced.term,
        index: forced.index,
        previous_voters: forced.previous_voters,
    };
    let done_path = data_dir.join(DONE_FILE);
    std::fs::write(&done_path, serde_json::to_string(&done)?)?;
    std::fs::File::open(&done_path)?.sync_all()?;
    std::fs::remove_file(&path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    tracing::warn!(
        term = done.term,
        index = done.index,
        previous_voters = ?done.previous_voters,
        "FORCED SINGLE-NODE RECOVERY: this node is now the only voter; the others must rejoin with an empty data dir"
    );
    Ok(Some(done))
}

/// Once this node leads, put a recovery done at start into the audit trail, then forget it.
pub async fn record_in_audit_trail(consensus: Consensus, data_dir: PathBuf) {
    let path = data_dir.join(DONE_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let Ok(done) = serde_json::from_str::<Done>(&text) else {
        tracing::error!(file = %path.display(), "unreadable recovery record; leaving it for the operator");
        return;
    };
    let entry = AuditEntry {
        at_ms: done.request.requested_at_ms,
        actor: done.request.actor.clone(),
        action: "recover-single-node".into(),
        detail: format!(
            "{} made the only voter (term {}, log index {}); voters before: {:?}",
            consensus.config().me().name,
            done.term,
            done.index,
            done.previous_voters
        ),
    };
    loop {
        match consensus.propose(Record::Audit(entry.clone())).await {
            Ok(_) => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(file = %path.display(), error = %e, "cannot remove the recovery record");
    }
}
