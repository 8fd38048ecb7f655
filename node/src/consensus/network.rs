//! Peer transport, client side: openraft's RPCs as HTTP POSTs to the peer port.
//!
//! Bodies are [`codec`]-encoded (version byte + bincode). Every request carries the cluster
//! secret and runs under the deadline openraft gives it; on timeout the request future is
//! dropped, which drops its connection, so a half-open link across a partition never hangs a
//! replication stream.

use std::future::Future;
use std::io::Cursor;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::error::Timeout;
use openraft::error::Unreachable;
use openraft::network::v2::RaftNetworkV2;
use openraft::network::RPCOption;
use openraft::network::RPCTypes;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tandem_raft_store::codec;
use tandem_raft_store::Member;
use tandem_raft_store::NodeId;
use tandem_raft_store::Snapshot;
use tandem_raft_store::TypeConfig;
use tandem_raft_store::Vote;

use super::peer_api::PEER_BODY_MAX_BYTES;
use super::peer_api::SECRET_HEADER;

type HttpClient<C> = hyper_util::client::legacy::Client<C, Full<Bytes>>;

/// How a peer connection is made: TCP for a real node, the simulated network in the simulator.
pub trait PeerConnector: Connect + Clone + Send + Sync + 'static {}
impl<C: Connect + Clone + Send + Sync + 'static> PeerConnector for C {}

/// Creates one [`PeerClient`] per target; all share one connection pool.
#[derive(Clone)]
pub struct PeerNetwork<C = HttpConnector> {
    me: NodeId,
    secret: String,
    http: HttpClient<C>,
    /// `https` when the peer port speaks TLS.
    scheme: &'static str,
}

/// How long a peer connection may take to open.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Peer connections over TCP from `local_ip`, with TLS for `https` addresses when the node has
/// a client config.
#[cfg(feature = "tls")]
pub fn tls_connector(
    local_ip: Option<IpAddr>,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
) -> hyper_rustls::HttpsConnector<HttpConnector> {
    let mut tcp = tcp_connector(local_ip);
    tcp.enforce_http(false);
    // Without TLS configured peers are reached over plain HTTP and this config is unused.
    let config = match tls {
        Some(c) => (*c).clone(),
        None => tandem_client::tls_client_config(tokio_rustls::rustls::RootCertStore::empty())
            .expect("ring supports the default protocol versions"),
    };
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp)
}

/// Peer connections over TCP from `local_ip` (any address when `None`).
pub fn tcp_connector(local_ip: Option<IpAddr>) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(PEER_CONNECT_TIMEOUT));
    connector.set_local_address(local_ip);
    connector
}

impl<C: PeerConnector> PeerNetwork<C> {
    /// A peer network whose connections are made by `connector`.
    pub fn with_connector(me: NodeId, secret: String, connector: C) -> Self {
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            me,
            secret,
            http,
            scheme: "http",
        }
    }

    /// Reach peers over TLS (the connector makes the TLS connections).
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.scheme = if tls { "https" } else { "http" };
        self
    }
}

impl<C: PeerConnector> PeerNetwork<C> {
    /// POST `body` to `path` on the peer port at `addr` with the cluster secret, within
    /// `timeout`; the answer's body, or why there is none.
    pub async fn exchange(&self, addr: &str, path: &str, body: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, String> {
        let request = hyper::Request::post(format!("{}://{addr}{path}", self.scheme))
            .header(SECRET_HEADER, &self.secret)
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = self.http.request(request).await.map_err(|e| format!("{addr}: {e}"))?;
            let status = resp.status();
            let bytes = http_body_util::Limited::new(resp.into_body(), PEER_BODY_MAX_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{addr}: reading answer: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("{addr}: HTTP {status}: {}", String::from_utf8_lossy(&bytes)));
            }
            Ok(bytes.to_vec())
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("{addr}: no answer within {timeout:?}"))?
    }
}

impl<C: PeerConnector> RaftNetworkFactory<TypeConfig> for PeerNetwork<C> {
    type Network = PeerClient<C>;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        PeerClient {
            me: self.me,
            target,
            addr: node.peer_addr.clone(),
            secret: self.secret.clone(),
            http: self.http.clone(),
            scheme: self.scheme,
        }
    }
}

pub struct PeerClient<C> {
    me: NodeId,
    target: NodeId,
    addr: String,
    secret: String,
    http: HttpClient<C>,
    scheme: &'static str,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl<C: PeerConnector> PeerClient<C> {
    async fn call<Req, Resp>(
        &self,
        path: &str,
        action: RPCTypes,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let network = |m: String| RPCError::Network(NetworkError::new(&TransportError(m)));
        let body = codec::encode(req).map_err(|e| network(format!("encode {path}: {e}")))?;
        let request = hyper::Request::post(format!("{}://{}/raft/{path}", self.scheme, self.addr))
            .header(SECRET_HEADER, &self.secret)
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| network(e.to_string()))?;
        let exchange = async {
            let resp =
                self.http.request(request).await.map_err(|e| {
                    RPCError::Unreachable(Unreachable::new(&TransportError(format!("{}: {e}", self.addr))))
                })?;
            let status = resp.status();
            let bytes = http_body_util::Limited::new(resp.into_body(), PEER_BODY_MAX_BYTES)
                .collect()
                .await
                .map_err(|e| network(format!("{}: reading answer: {e}", self.addr)))?
                .to_bytes();
            if !status.is_success() {
                return Err(network(format!(
                    "{} answered HTTP {status}: {}",
                    self.addr,
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                )));
            }
            let result: Result<Resp, RaftError<TypeConfig>> =
                codec::decode(&bytes).map_err(|e| network(format!("{}: bad answer: {e}", self.addr)))?;
            result.map_err(|e| network(format!("{} failed the request: {e}", self.addr)))
        };
        // Dropping `exchange` on timeout drops its connection too.
        match tokio::time::timeout(ttl, exchange).await {
            Ok(r) => r,
            Err(_) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.me,
                target: self.target,
                timeout: ttl,
            })),
        }
    }
}

impl<C: PeerConnector> RaftNetworkV2<TypeConfig> for PeerClient<C> {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("append", RPCTypes::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("vote", RPCTypes::Vote, &rpc, option.hard_ttl()).await
    }

    /// DESIGN §3: the pre-vote is really asked, never granted by default.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("pre-vote", RPCTypes::Vote, &rpc, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = (vote, snapshot.meta, snapshot.snapshot.into_inner());
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = self.call("snapshot", RPCTypes::InstallSnapshot, &req, option.hard_ttl()) => Ok(res?),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("transfer-leader", RPCTypes::TransferLeader, &req, option.hard_ttl())
            .await
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn an_rpc_to_a_peer_that_never_answers_times_out_and_drops_its_connection() {
        // A "peer" that accepts and reads, but never answers; it reports when the client hangs up.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            closed_tx.send(()).ok();
        });

        let mut network = PeerNetwork::with_connector(1, "a-cluster-secret-123".into(), tcp_connector(None));
        let peer = Member {
            peer_addr: addr.to_string(),
            ..Default::default()
        };
        let mut client = network.new_client(2, &peer).await;
        let request = VoteRequest::new(Vote::new(1, 1), None);
        // The outer bound only turns a missing timeout into a failure instead of a hang.
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            client.vote(request, RPCOption::new(Duration::from_millis(200))),
        )
        .await
        .expect("the RPC ends by its own deadline")
        .unwrap_err();
        assert!(matches!(err, RPCError::Timeout(_)), "{err:?}");

        // The timed-out request's connection is closed, not left half-open in the pool.
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), closed_rx)
            .await
            .expect("the connection was closed")
            .unwrap();
    }
}
