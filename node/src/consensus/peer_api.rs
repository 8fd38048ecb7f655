//! Peer transport, server side: the peer port's routes, each handing the decoded request to
//! the local Raft instance. Requests without the cluster secret are refused before decoding.

use std::io::Cursor;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use openraft::error::RaftError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tandem_raft_store::codec;
use tandem_raft_store::Snapshot;
use tandem_raft_store::SnapshotMeta;
use tandem_raft_store::TypeConfig;
use tandem_raft_store::Vote;

use super::Consensus;
use super::LeaderContact;
use super::Raft;
use crate::cluster::ClusterState;
use crate::cluster::Summary;
use openraft::async_runtime::WatchReceiver;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::VoteRequest;
use tandem_raft_store::NodeId;

/// Header that carries the cluster secret on every peer request.
pub const SECRET_HEADER: &str = "x-tandem-cluster-secret";
/// Largest peer request or answer body (a full snapshot travels in one).
pub const PEER_BODY_MAX_BYTES: usize = 256 * 1024 * 1024;

#[derive(Clone)]
struct PeerState {
    raft: Raft,
    secret: std::sync::Arc<str>,
    contact: LeaderContact,
    cluster: std::sync::Arc<ClusterState>,
}

pub fn router(consensus: &Consensus, secret: &str, cluster: std::sync::Arc<ClusterState>) -> Router {
    let state = PeerState {
        raft: consensus.raft().clone(),
        secret: secret.into(),
        contact: consensus.leader_contact().clone(),
        cluster,
    };
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/pre-vote", post(pre_vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/transfer-leader", post(transfer_leader))
        .route("/peer/heartbeat", post(heartbeat))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(PEER_BODY_MAX_BYTES))
        .with_state(state)
}

/// `routes` behind the same cluster-secret check and body limit as the Raft routes.
pub fn with_secret(routes: Router, secret: &str) -> Router {
    let secret: std::sync::Arc<str> = secret.into();
    routes
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let secret = secret.clone();
            async move { check_secret(&secret, req, next).await }
        }))
        .layer(DefaultBodyLimit::max(PEER_BODY_MAX_BYTES))
}

async fn check_secret(secret: &str, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same_secret(given, secret.as_bytes()) {
        tracing::warn!(path = %req.uri().path(), "peer request without the right cluster secret refused");
        return (
            StatusCode::UNAUTHORIZED,
            "peer request refused: missing or wrong cluster secret",
        )
            .into_response();
    }
    next.run(req).await
}

/// Compare in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(State(state): State<PeerState>, req: Request, next: Next) -> Response {
    check_secret(&state.secret, req, next).await
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, codec::CodecError> {
    codec::decode(body)
}

fn bad_request(e: codec::CodecError) -> Response {
    (StatusCode::BAD_REQUEST, format!("cannot decode peer request: {e}")).into_response()
}

fn reply<T: Serialize>(result: Result<T, RaftError<TypeConfig>>) -> Response {
    match codec::encode(&result) {
        Ok(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode answer: {e}")).into_response(),
    }
}

/// Once this node belongs to a cluster, Raft messages from nodes outside its membership are
/// refused: after a forced single-node recovery, a returning node that still holds its old log
/// must not disturb the recovered one (it rejoins with an empty data dir).
fn refuse_non_member(raft: &Raft, sender: NodeId) -> Option<Response> {
    let m = raft.metrics().borrow_watched().membership_config.clone();
    let membership = m.membership();
    if membership.voter_ids().next().is_none() || membership.get_node(&sender).is_some() {
        return None;
    }
    tracing::warn!(
        sender,
        "Raft message from a node outside this cluster's membership refused; it must rejoin with an empty data dir"
    );
    Some(
        (
            StatusCode::FORBIDDEN,
            format!("node {sender} is not a member of this cluster (after a forced recovery it must rejoin with an empty data dir)"),
        )
            .into_response(),
    )
}

async fn append(State(s): State<PeerState>, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match decode(&body) {
        Ok(req) => req,
        Err(e) => return bad_request(e),
    };
    if let Some(refused) = refuse_non_member(&s.raft, req.vote.leader_id().node_id) {
        return refused;
    }
    let result = s.raft.append_entries(req).await;
    if matches!(&result, Ok(resp) if !matches!(resp, AppendEntriesResponse::HigherVote(_))) {
        s.contact.touch();
    }
    reply(result)
}

async fn vote(State(s): State<PeerState>, body: Bytes) -> Response {
    match decode::<VoteRequest<TypeConfig>>(&body) {
        Ok(req) => match refuse_non_member(&s.raft, req.vote.leader_id().node_id) {
            Some(refused) => refused,
            None => reply(s.raft.vote(req).await),
        },
        Err(e) => bad_request(e),
    }
}

async fn pre_vote(State(s): State<PeerState>, body: Bytes) -> Response {
    match decode::<VoteRequest<TypeConfig>>(&body) {
        Ok(req) => match refuse_non_member(&s.raft, req.vote.leader_id().node_id) {
            Some(refused) => refused,
            None => reply(s.raft.pre_vote(req).await),
        },
        Err(e) => bad_request(e),
    }
}

async fn snapshot(State(s): State<PeerState>, body: Bytes) -> Response {
    let (vote, meta, data): (Vote, SnapshotMeta, Vec<u8>) = match decode(&body) {
        Ok(req) => req,
        Err(e) => return bad_request(e),
    };
    if let Some(refused) = refuse_non_member(&s.raft, vote.leader_id().node_id) {
        return refused;
    }
    let snapshot = Snapshot {
        meta,
        snapshot: Cursor::new(data),
    };
    reply(
        s.raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(RaftError::Fatal),
    )
}

/// A member's summary: kept, and answered with this node's own.
async fn heartbeat(State(s): State<PeerState>, body: Bytes) -> Response {
    match decode::<Summary>(&body) {
        Ok(summary) => {
            if !s.cluster.config().members.iter().any(|m| m.id == summary.node) {
                return (
                    StatusCode::FORBIDDEN,
                    format!("node {} is not a member of this cluster", summary.node),
                )
                    .into_response();
            }
            s.cluster.heard(summary, None);
            match codec::encode(&s.cluster.summary()) {
                Ok(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode answer: {e}")).into_response(),
            }
        }
        Err(e) => bad_request(e),
    }
}

async fn transfer_leader(State(s): State<PeerState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => reply(s.raft.handle_transfer_leader(req).await.map_err(RaftError::Fatal)),
        Err(e) => bad_request(e),
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcdeX"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!same_secret(b"", b"x"));
    }
}
