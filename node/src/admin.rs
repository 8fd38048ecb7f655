//! The admin HTTP API (JSON under `/v1`) and the load-balancer health routes.
//! Errors map to HTTP in one place: [`AdminError::into_response`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::DefaultBodyLimit;
use axum::extract::Query;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Event as SseEvent;
use axum::response::sse::KeepAlive;
use axum::response::sse::Sse;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::Json;
use axum::Router;
use serde::Deserialize;
use tandem_client::api::ApiError;
use tandem_client::api::AuditInfo;
use tandem_client::api::CancelResult;
use tandem_client::api::ClusterNode;
use tandem_client::api::ClusterView;
use tandem_client::api::EventsPage;
use tandem_client::api::FailoverReport;
use tandem_client::api::FailoverRequest;
use tandem_client::api::InitResult;
use tandem_client::api::LeaderHint;
use tandem_client::api::NodeStatus;
use tandem_client::api::PoliciesInfo;
use tandem_client::api::PolicyUpdate;
use tandem_client::api::RecoverRequest;
use tandem_client::api::RecoverResult;
use tandem_client::api::RejoinRequest;
use tandem_client::api::RejoinResult;
use tandem_client::api::ResourcesInfo;
use tandem_client::api::ScriptInfo;
use tandem_client::api::SwitchoverRequest;
use tandem_client::api::SwitchoverResult;
use tandem_client::api::VipInfo;
use tandem_client::api::WriteTestRecord;
use tandem_client::api::WriteTestRecordResult;
use tandem_raft_store::records::validate;
use tandem_raft_store::records::AuditEntry;
use tandem_raft_store::records::Record;
use tandem_raft_store::records::SwitchWindow;
use tandem_raft_store::records::TestRecord;
use tandem_raft_store::state::AUDIT_TRAIL_CAPACITY;
use tandem_raft_store::MemberRole;
use tokio::sync::broadcast;
use tokio::sync::Notify;

use crate::cluster::ClusterState;
use crate::config::MemberConfig;
use crate::config::ValidConfig;
use crate::consensus::policies_info;
use crate::consensus::Consensus;
use crate::consensus::InitError;
use crate::consensus::ProposeError;
use crate::consensus::SYNC_LAG_MAX_ENTRIES;
use crate::events;
use crate::failover::driver::Failover;
use crate::recovery;
use crate::recovery::RECOVER_SILENCE_MIN;
use crate::resources::vip::Identity;
use crate::resources::ResourceAgent;
use crate::unix_ms;

/// Largest admin request body.
pub const ADMIN_BODY_MAX_BYTES: usize = 256 * 1024;

/// What the admin handlers work with.
#[derive(Clone)]
pub struct AdminState {
    pub consensus: Consensus,
    pub failover: Failover,
    /// Ends the node's run so that the process starts again in place.
    pub restart: Arc<Notify>,
    pub identity: Arc<Identity>,
    pub agent: Arc<ResourceAgent>,
    pub cluster: Arc<ClusterState>,
    /// File replication, on a data node with sync folders.
    pub files: Option<Arc<crate::files::FileSync>>,
    /// Database change records, on a data node with a `[database]`.
    #[cfg(feature = "mariadb")]
    pub database: Option<Arc<crate::db::mariadb::MariaDb>>,
    /// The embedded SQLite database, on a data node.
    #[cfg(feature = "sqlite")]
    pub embedded: Option<Arc<crate::db::embedded::Embedded>>,
    /// Bearer tokens of the admin API.
    pub tokens: crate::auth::Tokens,
    /// Requests to the other members' peer ports.
    pub exchange: crate::files::Exchange,
}

/// The health routes alone, for the `health_listen` port a load balancer checks: no token,
/// nothing else served.
pub fn health_router(state: AdminState) -> Router {
    Router::new()
        .route("/health/live", get(health_live))
        .route("/health/active", get(health_active))
        .route("/health/standby", get(health_standby))
        .fallback(|| async {
            AdminError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "this port serves only /health/live, /health/active and /health/standby",
            )
        })
        .with_state(state)
}

/// The admin port's router (behind the token check, passing actions on to the member that
/// carries them out), and the peer-port routes through which the other members read this
/// node's status and events and pass actions on to it (see [`peer_member_routes`]). The API's
/// routes and OpenAPI document are built once for both.
pub fn routers(state: AdminState) -> (Router, Router) {
    let api = api_routes();
    let member = peer_member_routes(api.clone().with_state(state.clone()));
    let admin = api
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward_if_elsewhere,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.tokens.clone(),
            crate::auth::check,
        ))
        .with_state(state);
    (admin, member)
}

/// Operator actions that only one member can carry out (the active, or the leader), which any
/// member passes on to it over the peer port: the console and tandemctl work through whichever
/// node they reach, with each admin API on loopback.
fn forwardable(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    (method == Method::POST && (path == "/v1/switchover" || path == "/v1/failover"))
        || (method == Method::PUT && path == "/v1/policies")
}

/// Views and actions of one node's own (its resources, file mirror and database), which any
/// member passes on to the member named by `?node=NAME` over the peer port.
fn per_node(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    (method == Method::GET && matches!(path, "/v1/resources" | "/v1/files" | "/v1/db"))
        || (method == Method::POST && matches!(path, "/v1/resources/cancel" | "/v1/db/seed"))
}

/// The query of one node's own views and actions (see [`per_node`]).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NodeQuery {
    /// The member whose view this is, or that carries the action out (default: this node).
    /// Another member's is passed on to it over the peer port.
    node: Option<String>,
}

/// What the handlers of [`per_node`] routes take: `forward_if_elsewhere` has already read it
/// (and passed the request on when it names another member), so they ignore it; it is in
/// their signature for the OpenAPI document.
type NodeParam = Result<Query<NodeQuery>, QueryRejection>;

/// The `node` parameter of a request's query string, if there is one.
fn node_param(uri: &axum::http::Uri) -> Result<Option<String>, AdminError> {
    Query::<NodeQuery>::try_from_uri(uri)
        .map(|axum::extract::Query(q)| q.node)
        .map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))
}

/// Set on a request a member passed on, so it is never passed on again.
const FORWARDED_HEADER: &str = "x-tandem-forwarded-from";
/// Names the member that carried out a passed-on request.
pub const FORWARDED_TO_HEADER: &str = "x-tandem-forwarded-to";
/// How long a passed-on request may take (a switchover waits for the hand-off).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// A request passed on to another member, and its answer.
#[derive(serde::Serialize, serde::Deserialize)]
struct Forwarded {
    method: String,
    path: String,
    body: String,
    /// The token name the first member checked.
    caller: Option<String>,
    /// The first member's name.
    from: String,
    /// The answer's status (in the answer).
    status: u16,
}

/// The member that must carry out `path`, when it is not this node.
fn carried_out_by<'a>(app: &'a AdminState, path: &str) -> Option<&'a MemberConfig> {
    let cfg = app.consensus.config();
    let id = if path == "/v1/policies" {
        app.consensus.current_leader()?
    } else {
        let a = app.consensus.activation().filter(|a| !a.released)?;
        if app.failover.active_epoch().is_some() {
            return None; // this node is the active
        }
        a.node
    };
    (id != cfg.node_id)
        .then(|| cfg.members.iter().find(|m| m.id == id))
        .flatten()
}

/// The member `req` must be passed on to, if not this node: the one a per-node request names,
/// or the one that carries out an action.
fn passed_on_to(app: &AdminState, req: &axum::extract::Request) -> Result<Option<MemberConfig>, AdminError> {
    let (method, path) = (req.method(), req.uri().path());
    if per_node(method, path) {
        let cfg = app.consensus.config();
        return match node_param(req.uri())? {
            Some(name) => member_named(cfg, &name).map(|m| (m.id != cfg.node_id).then(|| m.clone())),
            None => Ok(None),
        };
    }
    Ok(forwardable(method, path)
        .then(|| carried_out_by(app, path).cloned())
        .flatten())
}

async fn forward_if_elsewhere(
    State(app): State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.headers().contains_key(FORWARDED_HEADER) {
        return next.run(req).await;
    }
    let target = match passed_on_to(&app, &req) {
        Ok(Some(m)) => m,
        Ok(None) => return next.run(req).await,
        Err(e) => return e.into_response(),
    };
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let body = match axum::body::to_bytes(req.into_body(), ADMIN_BODY_MAX_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return AdminError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad_request",
                format!("the body is over ADMIN_BODY_MAX_BYTES ({ADMIN_BODY_MAX_BYTES})"),
            )
            .into_response()
        }
    };
    let Ok(body) = String::from_utf8(body.to_vec()) else {
        return AdminError::new(StatusCode::BAD_REQUEST, "bad_request", "the body is not UTF-8 JSON").into_response();
    };
    let envelope = Forwarded {
        method,
        path,
        body,
        caller: crate::auth::caller_token(),
        from: app.consensus.config().me().name.clone(),
        status: 0,
    };
    let sent = serde_json::to_vec(&envelope).expect("serializes");
    let answer = (app.exchange)(target.peer_addr.clone(), PEER_FORWARD_PATH, sent, FORWARD_TIMEOUT).await;
    let answer = answer.and_then(|b| serde_json::from_slice::<Forwarded>(&b).map_err(|e| e.to_string()));
    match answer {
        Ok(a) => {
            let mut resp = (
                StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY),
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                a.body,
            )
                .into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&target.name) {
                resp.headers_mut().insert(FORWARDED_TO_HEADER, v);
            }
            resp
        }
        Err(e) => AdminError::new(
            StatusCode::BAD_GATEWAY,
            "forward_failed",
            format!(
                "{} must answer this and could not be reached over its peer port {}: {e}",
                target.name, target.peer_addr
            ),
        )
        .into_response(),
    }
}

/// The peer route that carries out requests other members passed on.
pub const PEER_FORWARD_PATH: &str = "/peer/admin-forward";

async fn carry_out_forwarded(State(api): State<Router>, body: bytes::Bytes) -> Response {
    let Ok(f) = serde_json::from_slice::<Forwarded>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a forwarded request").into_response();
    };
    let Ok(method) = f.method.parse::<axum::http::Method>() else {
        return (StatusCode::BAD_REQUEST, "bad method").into_response();
    };
    if !forwardable(&method, &f.path) && !per_node(&method, &f.path) {
        return (StatusCode::BAD_REQUEST, "this request is not passed on between members").into_response();
    }
    let Ok(req) = axum::http::Request::builder()
        .method(method)
        .uri(&f.path)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .header(FORWARDED_HEADER, &f.from)
        .body(axum::body::Body::from(f.body.clone()))
    else {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    };
    let resp = crate::auth::with_caller(f.caller.clone(), run_api(api, req)).await;
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), crate::consensus::peer_api::PEER_BODY_MAX_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Json(Forwarded { body, status, ..f }).into_response()
}

/// Reads of this node's admin API for the other members, over the peer port (behind its
/// cluster secret and mutual TLS): `/v1/cluster` and `/v1/events` gather every member's part
/// this way, so they work with each admin API listening on loopback only.
fn peer_member_routes(api: Router) -> Router {
    Router::new()
        .route(PEER_READ_PATH, axum::routing::post(peer_read))
        .route(PEER_FORWARD_PATH, axum::routing::post(carry_out_forwarded))
        .with_state(api)
}

/// The peer route through which members read each other's status and events.
pub const PEER_READ_PATH: &str = "/peer/admin-read";

/// The admin paths another member may read over the peer port.
fn peer_readable(path: &str) -> bool {
    path == "/v1/status" || path.starts_with("/v1/events?")
}

async fn peer_read(State(api): State<Router>, body: bytes::Bytes) -> Response {
    let path = String::from_utf8_lossy(&body).into_owned();
    if !peer_readable(&path) {
        return AdminError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{path:?} cannot be read over the peer port"),
        )
        .into_response();
    }
    let Ok(req) = axum::http::Request::get(&path).body(axum::body::Body::empty()) else {
        return AdminError::new(StatusCode::BAD_REQUEST, "bad_request", "not a path").into_response();
    };
    run_api(api, req).await
}

/// `req` through this node's own admin routes, in process (no token layer: the caller is a
/// member, checked by the peer port).
async fn run_api(api: Router, req: axum::extract::Request) -> Response {
    match tower::ServiceExt::oneshot(api, req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// GET `path` of member `m`'s admin API over the peer port.
async fn read_member<T: serde::de::DeserializeOwned>(
    app: &AdminState,
    m: &MemberConfig,
    path: String,
    timeout: Duration,
) -> Result<T, String> {
    let body = (app.exchange)(m.peer_addr.clone(), PEER_READ_PATH, path.into_bytes(), timeout).await?;
    serde_json::from_slice(&body).map_err(|e| format!("{}: unexpected answer: {e}", m.name))
}

fn api_routes() -> Router<AdminState> {
    use crate::openapi::Access::Admin as A;
    use crate::openapi::Access::Open as O;
    use crate::openapi::Access::Read as R;
    let doc = Arc::new(std::sync::OnceLock::<serde_json::Value>::new());
    let served = doc.clone();
    let (router, document) = crate::openapi::Api::new()
        .route("get", "/v1/status", status, "This node's status: Raft state, lease, activation, role, links, monitors, cluster status.", R)
        .route("get", "/metrics", metrics, "Prometheus metrics. Text exposition format 0.0.4: role, term, epoch, lease, Raft positions and lag, commit latency, files, databases, monitors, resource actions, takeovers.", R)
        .route("get", "/v1/cluster", cluster_view, "Every member's status and the cluster status. The other members answer over the peer port.", R)
        .route("get", "/v1/events", events_list, "Events of every member, oldest first. JSON (an EventsPage) or, with format=csv, text/csv.", R)
        .route("get", "/v1/events/stream", events_stream, "This node's live events. A text/event-stream of EventInfo objects.", R)
        .route("post", "/v1/cluster/init", init, "Bootstrap the cluster through this data node.", A)
        .route("post", "/v1/test-records", write_test_record, "Write a test record through the leader.", A)
        .route("post", "/v1/switchover", switchover, "Planned switchover to a synced standby.", A)
        .route("post", "/v1/failover", forced_failover, "Forced failover. Without accept_data_loss it only reports what the target lacks.", A)
        .route("post", "/v1/recover", recover, "Make this data node the only voter when both others are gone for good. The node restarts in place.", A)
        .route("get", "/v1/files", files, "This node's file mirror: sync state, pending files and bytes, quarantine, counters. Of another member with node=NAME.", R)
        .route("get", "/v1/db", db_info, "This node's database: positions, lag, divergence, read-only state. Of another member with node=NAME.", R)
        .route("post", "/v1/db/seed", db_seed, "Seed this node's database from the other data node's. Without replace_local_data it only reports. Of another member with node=NAME.", A)
        .route("post", "/v1/db/execute", db_execute, "Write to the embedded database (on the active).", A)
        .route("post", "/v1/db/query", db_query, "Read the embedded database (read-only statements; a read token may).", R)
        .route("get", "/v1/files/manifest", file_manifest, "One page of a sync folder's replicated index.", R)
        .route("get", "/v1/resources", resources, "This node's VIPs and scripts, the script running now, the latest runs. Of another member with node=NAME.", R)
        .route("post", "/v1/resources/cancel", cancel_script, "Kill the running resource script. On another member with node=NAME.", A)
        .route("post", "/v1/cluster/rejoin", rejoin, "Bring a member back as a voter after a recovery (on the leader).", A)
        .route("get", "/v1/policies", get_policies, "The replicated switch policies and maintenance mode.", R)
        .route("put", "/v1/policies", put_policies, "Change switch policies or maintenance mode.", A)
        .route("get", "/v1/audit", audit, "The newest entries of the replicated audit trail.", R)
        .route("get", "/health/live", health_live, "200 while the process answers.", O)
        .route("get", "/health/active", health_active, "200 only on the lease-holding active with every resource held; 503 elsewhere.", O)
        .route("get", "/health/standby", health_standby, "200 only on a data node that is a synced standby; 503 elsewhere.", O)
        .route("get", "/", crate::console::page, "The web console. An HTML page.", O)
        .route("get", "/console", crate::console::page, "The web console. An HTML page.", O)
        .route(
            "get",
            crate::openapi::OPENAPI_PATH,
            move || {
                let served = served.clone();
                async move { Json(served.get().cloned().unwrap_or_default()) }
            },
            "This document.",
            O,
        )
        .finish();
    let _ = doc.set(document);
    router
        .fallback(|| async {
            AdminError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; see /v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(ADMIN_BODY_MAX_BYTES))
}

/// 200 while the process answers.
async fn health_live() -> &'static str {
    "live\n"
}

/// 200 only while this node is the lease-holding active (DESIGN §4) with every resource
/// acquired, for load balancers: not before the service was started, not once it is being
/// released.
async fn health_active(State(app): State<AdminState>) -> (StatusCode, String) {
    match app.failover.service_epoch() {
        Some(epoch) => (StatusCode::OK, format!("active epoch {epoch}\n")),
        None => (StatusCode::SERVICE_UNAVAILABLE, "not active\n".into()),
    }
}

/// 200 only on a data node that is not active and has applied everything committed (its sync
/// folders included).
async fn health_standby(State(app): State<AdminState>) -> (StatusCode, &'static str) {
    let data = app.consensus.config().role() == MemberRole::Data;
    let files_synced = app.files.as_ref().is_none_or(|f| f.synced());
    if data && app.failover.active_epoch().is_none() && app.consensus.caught_up() && files_synced {
        (StatusCode::OK, "standby, synced\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not a synced standby\n")
    }
}

#[derive(Debug)]
pub(crate) struct AdminError {
    status: StatusCode,
    body: ApiError,
}

impl AdminError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiError {
                code: code.into(),
                message: message.into(),
                leader: None,
            },
        }
    }
}

impl crate::openapi::DocError for AdminError {}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<JsonRejection> for AdminError {
    fn from(r: JsonRejection) -> Self {
        let status = match r {
            JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        AdminError::new(status, "bad_request", r.body_text())
    }
}

impl From<ProposeError> for AdminError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { leader } => {
                let mut err = AdminError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "not_leader",
                    match &leader {
                        Some((id, m)) => format!(
                            "this node is not the leader; send the request to node {id} at {}",
                            m.admin_addr
                        ),
                        None => "this node is not the leader and no leader is known yet; retry shortly".into(),
                    },
                );
                err.body.leader = leader.map(|(id, m)| LeaderHint {
                    id,
                    admin_addr: m.admin_addr,
                });
                err
            }
            ProposeError::WitnessLeader => {
                AdminError::new(StatusCode::SERVICE_UNAVAILABLE, "witness_leader", e.to_string())
            }
            ProposeError::Rejected(r) => AdminError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", r.to_string()),
            ProposeError::FutureEpoch { .. } => AdminError::new(StatusCode::CONFLICT, "future_epoch", e.to_string()),
            ProposeError::Fatal(_) => AdminError::new(StatusCode::SERVICE_UNAVAILABLE, "raft_stopped", e.to_string()),
        }
    }
}

async fn status(State(app): State<AdminState>) -> Json<NodeStatus> {
    Json(node_status(&app))
}

/// The node's state for Prometheus: role, term, epoch, and the database change records.
/// The families of `/metrics` beyond the database's: role, lease, Raft progress and
/// replication lag, commit latency, files, monitors, resource actions, takeovers.
async fn node_metrics(app: &AdminState, status: &NodeStatus, m: &mut crate::metrics::Exposition) {
    use crate::metrics::Type::Counter;
    use crate::metrics::Type::Gauge;
    let b = |v: bool| f64::from(u8::from(v));
    for role in ["active", "standby", "witness", "detached", "switching"] {
        m.sample(
            "tandem_role",
            Gauge,
            "1 for the role this node has in the cluster now (active, standby, witness, detached, switching).",
            &[("role", role)],
            b(status.role == role),
        );
    }
    m.sample(
        "tandem_raft_leader",
        Gauge,
        "1 while this node is the Raft leader.",
        &[],
        b(status.leader == Some(status.node_id)),
    );
    m.sample(
        "tandem_lease_remaining_seconds",
        Gauge,
        "On the leader: how long its lease still runs without another quorum acknowledgement (0 elsewhere).",
        &[],
        status.lease_remaining_ms.unwrap_or(0) as f64 / 1000.0,
    );
    for (name, v) in [
        ("tandem_raft_last_log_index", status.last_log_index),
        ("tandem_raft_committed_index", status.committed_index),
        ("tandem_raft_applied_index", status.applied_index),
    ] {
        m.sample(
            name,
            Gauge,
            "Raft log position on this node.",
            &[],
            v.unwrap_or(0) as f64,
        );
    }
    m.histogram(
        "tandem_commit_latency_seconds",
        "From a record proposed on this node to its commit and apply.",
        &[],
        app.consensus.commit_latency(),
    );
    // On the leader: what each other member lacks of the committed log.
    let cfg = app.consensus.config();
    for member in cfg.members.iter().filter(|x| x.id != cfg.node_id) {
        if let Some(lag) = app.consensus.lag_of(member.id).await {
            let l = [("to", member.name.as_str())];
            m.sample(
                "tandem_replication_lag_records",
                Gauge,
                "On the leader: committed records this member lacks.",
                &l,
                lag.missing_records as f64,
            );
            m.sample(
                "tandem_replication_lag_bytes",
                Gauge,
                "On the leader: stored size of the committed records this member lacks (those still in the log).",
                &l,
                lag.missing_bytes as f64,
            );
        }
    }
    if let Some(files) = &app.files {
        let f = files.info();
        m.sample(
            "tandem_files_synced",
            Gauge,
            "1 when every committed file change is on this node's disk.",
            &[],
            b(f.synced),
        );
        m.sample(
            "tandem_files_pending_files",
            Gauge,
            "Files whose committed content this node still has to write (replication lag in files).",
            &[],
            f.pending_files as f64,
        );
        m.sample(
            "tandem_files_pending_bytes",
            Gauge,
            "Bytes of committed file content this node still has to write.",
            &[],
            f.pending_bytes as f64,
        );
    }
    for mon in &status.monitors {
        for state in ["idle", "unknown", "ok", "failing", "failed"] {
            m.sample(
                "tandem_monitor_state",
                Gauge,
                "1 for the state each health monitor is in.",
                &[("monitor", mon.name.as_str()), ("state", state)],
                b(mon.state == state),
            );
        }
        if let Some(us) = mon.last_duration_us {
            m.sample(
                "tandem_monitor_last_duration_seconds",
                Gauge,
                "How long each monitor's last check took.",
                &[("monitor", mon.name.as_str())],
                us as f64 / 1e6,
            );
        }
        m.sample(
            "tandem_monitor_consecutive_failures",
            Gauge,
            "Failed checks in a row of each monitor.",
            &[("monitor", mon.name.as_str())],
            f64::from(mon.consecutive_failures),
        );
    }
    m.histogram(
        "tandem_resource_acquire_seconds",
        "How long acquiring the resources took (the gates before the service, then each script), per activation.",
        &[],
        &app.agent.acquire_seconds,
    );
    m.histogram(
        "tandem_resource_release_seconds",
        "How long releasing every resource took.",
        &[],
        &app.agent.release_seconds,
    );
    // The runs are oldest first: the last one of each action wins.
    let last: std::collections::BTreeMap<(String, String), u64> = app
        .agent
        .recent_runs()
        .into_iter()
        .map(|r| ((r.resource, r.action), r.duration_ms))
        .collect();
    for ((resource, action), ms) in &last {
        m.sample(
            "tandem_resource_action_last_duration_seconds",
            Gauge,
            "How long the last run of each resource action took.",
            &[("resource", resource.as_str()), ("action", action.as_str())],
            *ms as f64 / 1000.0,
        );
    }
    for (how, i) in [("start", 0), ("switchover", 1), ("failover", 2)] {
        m.sample(
            "tandem_takeovers_total",
            Counter,
            "Times this node became active since it started: at start or after its own release, by a planned switchover, or by failover from a node that never released.",
            &[("kind", how)],
            app.agent.takeovers[i].load(std::sync::atomic::Ordering::Relaxed) as f64,
        );
    }
}

async fn metrics(State(app): State<AdminState>) -> Response {
    use crate::metrics::Type::Gauge;
    let mut m = crate::metrics::Exposition::default();
    let status = node_status(&app);
    m.sample(
        "tandem_raft_term",
        Gauge,
        "The Raft term this node is in.",
        &[],
        status.term as f64,
    );
    m.sample(
        "tandem_active",
        Gauge,
        "1 while this node is the active (it holds the lease).",
        &[],
        f64::from(u8::from(status.active_epoch.is_some())),
    );
    m.sample(
        "tandem_epoch",
        Gauge,
        "The epoch of the current activation.",
        &[],
        app.consensus.activation().map_or(0, |a| a.epoch) as f64,
    );
    node_metrics(&app, &status, &mut m).await;
    #[cfg(feature = "mariadb")]
    if let Some(db) = &app.database {
        use crate::metrics::Type::Counter;
        let i = db.info();
        let l = [("source", i.source.as_str())];
        let b = |v: bool| f64::from(u8::from(v));
        m.sample(
            "tandem_db_committed_seq",
            Gauge,
            "Sequence number of the last committed database change.",
            &l,
            i.committed_seq as f64,
        );
        m.sample(
            "tandem_db_applied_seq",
            Gauge,
            "The last committed database change this node's database holds.",
            &l,
            i.applied_seq as f64,
        );
        m.sample(
            "tandem_db_lag_records",
            Gauge,
            "Committed database changes this node's database lacks.",
            &l,
            i.lag_records as f64,
        );
        m.sample(
            "tandem_db_lag_bytes",
            Gauge,
            "Size of the committed database changes this node's database lacks.",
            &l,
            i.lag_bytes as f64,
        );
        m.sample(
            "tandem_db_synced",
            Gauge,
            "1 when this node's database holds every committed change and did not diverge.",
            &l,
            b(i.synced),
        );
        m.sample(
            "tandem_db_diverged",
            Gauge,
            "1 when this node's database holds changes that never committed, or its journal has a gap.",
            &l,
            b(i.diverged.is_some()),
        );
        m.sample(
            "tandem_db_read_only",
            Gauge,
            "1 when this node's database server is read-only.",
            &l,
            b(i.read_only == Some(true)),
        );
        m.sample(
            "tandem_db_capturing",
            Gauge,
            "1 while this node captures its database's changes (the active).",
            &l,
            b(i.capturing),
        );
        m.sample(
            "tandem_db_captured_total",
            Counter,
            "Transactions this node captured and committed.",
            &l,
            i.captured_total as f64,
        );
        m.sample(
            "tandem_db_applied_total",
            Counter,
            "Transactions this node replayed on its database.",
            &l,
            i.applied_total as f64,
        );
        if let Some(ms) = i.last_applied_ms_ago {
            m.sample(
                "tandem_db_last_applied_age_seconds",
                Gauge,
                "Seconds since this node last replayed a transaction.",
                &l,
                ms as f64 / 1000.0,
            );
        }
        if let Some(g) = &i.server_gtid {
            m.sample(
                "tandem_db_server_position_info",
                Gauge,
                "The database server's GTID position, as a label.",
                &[("source", i.source.as_str()), ("gtid", g.as_str())],
                1.0,
            );
        }
    }
    #[cfg(feature = "sqlite")]
    if let Some(e) = &app.embedded {
        let (applied, committed, diverged) = e.state();
        let l = [("source", crate::db::embedded::SOURCE)];
        m.sample(
            "tandem_db_committed_seq",
            Gauge,
            "Sequence number of the last committed database change.",
            &l,
            committed as f64,
        );
        m.sample(
            "tandem_db_applied_seq",
            Gauge,
            "The last committed database change this node's database holds.",
            &l,
            applied as f64,
        );
        m.sample(
            "tandem_db_lag_records",
            Gauge,
            "Committed database changes this node's database lacks.",
            &l,
            committed.saturating_sub(applied) as f64,
        );
        m.sample(
            "tandem_db_synced",
            Gauge,
            "1 when this node's database holds every committed change and did not diverge.",
            &l,
            f64::from(u8::from(committed == applied && diverged.is_none())),
        );
        m.sample(
            "tandem_db_diverged",
            Gauge,
            "1 when this node's database holds changes that never committed, or its journal has a gap.",
            &l,
            f64::from(u8::from(diverged.is_some())),
        );
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.finish(),
    )
        .into_response()
}

fn node_status(app: &AdminState) -> NodeStatus {
    let mut status = app.consensus.status();
    status.active_epoch = app.failover.active_epoch();
    status.service = match (status.kind.as_str(), status.active_epoch) {
        ("witness", _) => "witness",
        (_, Some(_)) => "active",
        _ => "standby",
    }
    .into();
    status.role = app.cluster.role().as_str().into();
    status.cluster_status = app.cluster.cluster_status();
    status.links = app.cluster.links();
    status.witness_contact = app.cluster.witness_contact();
    status.monitors = app.cluster.monitors.infos();
    status
}

/// How long `/v1/cluster` and `/v1/events` wait for each other member.
pub const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(2);

/// Every member's own status, asked in parallel, and the cluster status: as the active sees
/// it when the active answers, else as this node sees it.
async fn cluster_view(State(app): State<AdminState>) -> Json<ClusterView> {
    let cfg = app.consensus.config();
    let asks = cfg.members.iter().map(|m| {
        let mine = m.id == cfg.node_id;
        let local = mine.then(|| node_status(&app));
        let app = &app;
        async move {
            let (status, error) = match local {
                Some(s) => (Some(s), None),
                None => match read_member::<NodeStatus>(app, m, "/v1/status".into(), FAN_OUT_TIMEOUT).await {
                    Ok(s) => (Some(s), None),
                    Err(e) => (None, Some(e)),
                },
            };
            ClusterNode {
                name: m.name.clone(),
                admin_addr: m.admin_addr.clone(),
                status,
                error,
            }
        }
    });
    let nodes = futures_util::future::join_all(asks).await;
    let active = nodes
        .iter()
        .find(|n| n.status.as_ref().is_some_and(|s| s.role == "active"))
        .map(|n| n.name.clone());
    let cluster_status = nodes
        .iter()
        .find(|n| Some(&n.name) == active.as_ref())
        .and_then(|n| n.status.as_ref())
        .map_or_else(|| app.cluster.cluster_status(), |s| s.cluster_status.clone());
    Json(ClusterView {
        cluster_status,
        active,
        nodes,
    })
}

/// Most events one `/v1/events` answer carries (the newest ones).
pub const EVENTS_PAGE_MAX: usize = 10_000;

/// `GET /v1/events` query.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Only events at or after this time (ms since the Unix epoch).
    since_ms: Option<u64>,
    /// Only events before this time (ms since the Unix epoch).
    until_ms: Option<u64>,
    /// Comma-separated kinds.
    kind: Option<String>,
    /// Only this member's events.
    node: Option<String>,
    /// At most this many (the newest), up to EVENTS_PAGE_MAX.
    limit: Option<usize>,
    /// `json` (default) or `csv`.
    format: Option<String>,
    /// Only this node's events (no asking the other members).
    #[serde(default)]
    local: bool,
}

fn events_filter(q: &EventsQuery) -> Result<events::Filter, AdminError> {
    let kinds = match &q.kind {
        Some(k) => k
            .split(',')
            .map(|k| events::Kind::parse(k.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, "bad_kind", e))?,
        None => Vec::new(),
    };
    Ok(events::Filter {
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        kinds,
        node: q.node.clone(),
    })
}

/// The events of every member (or only this node's with `local=true`), oldest first, as JSON
/// or CSV.
async fn events_list(
    State(app): State<AdminState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(q) = query.map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let filter = events_filter(&q)?;
    let limit = q.limit.unwrap_or(EVENTS_PAGE_MAX);
    if limit == 0 || limit > EVENTS_PAGE_MAX {
        return Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit must be 1 to EVENTS_PAGE_MAX ({EVENTS_PAGE_MAX})"),
        ));
    }
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(AdminError::new(
                StatusCode::BAD_REQUEST,
                "bad_format",
                format!("format {other:?} is not known; use json or csv"),
            ))
        }
    };
    let cfg = app.consensus.config();
    if let Some(n) = &q.node {
        member_named(cfg, n)?;
    }
    let mut events = app.cluster.events.query(&filter, limit);
    let mut unreachable = Vec::new();
    if !q.local {
        let others = cfg
            .members
            .iter()
            .filter(|m| m.id != cfg.node_id && q.node.as_ref().is_none_or(|n| *n == m.name));
        let asks = others.map(|m| {
            let app = &app;
            let query = tandem_client::EventsQuery {
                since_ms: q.since_ms,
                until_ms: q.until_ms,
                kind: q.kind.clone(),
                node: q.node.clone(),
                limit: Some(limit),
                local: true,
            };
            async move {
                let path = format!("/v1/events?{}", query.to_query());
                (
                    m.name.clone(),
                    read_member::<EventsPage>(app, m, path, FAN_OUT_TIMEOUT).await,
                )
            }
        });
        for (name, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok(page) => events.extend(page.events),
                Err(e) => unreachable.push(format!("{name}: {e}")),
            }
        }
        events.sort_by(|a, b| (a.at_ms, &a.node, a.seq).cmp(&(b.at_ms, &b.node, b.seq)));
        let skip = events.len().saturating_sub(limit);
        events.drain(..skip);
    }
    if csv {
        return Ok((
            [
                (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    "attachment; filename=\"tandem-events.csv\"",
                ),
            ],
            events::to_csv(&events),
        )
            .into_response());
    }
    Ok(Json(EventsPage { events, unreachable }).into_response())
}

/// How often an idle event stream sends a keep-alive comment.
pub const EVENT_STREAM_KEEPALIVE: Duration = Duration::from_secs(15);

/// `GET /v1/events/stream`: this node's events as server-sent events (`event: <kind>`, JSON
/// data), from now on; `kind` filters as in `/v1/events`.
async fn events_stream(
    State(app): State<AdminState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(q) = query.map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let filter = events_filter(&q)?;
    let rx = app.cluster.events.subscribe();
    let stream = futures_util::stream::unfold((rx, filter), |(mut rx, filter)| async move {
        loop {
            let sse = match rx.recv().await {
                Ok(e) if !filter.matches(&e) => continue,
                Ok(e) => SseEvent::default()
                    .event(e.kind.clone())
                    .id(e.seq.to_string())
                    .json_data(&e)
                    .unwrap_or_else(|_| SseEvent::default().comment("unencodable event")),
                Err(broadcast::error::RecvError::Lagged(n)) => SseEvent::default()
                    .event("lagged")
                    .data(format!("{n} events were dropped: this stream fell more than EVENT_STREAM_BACKLOG behind; fetch them from /v1/events")),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            return Some((Ok::<_, std::convert::Infallible>(sse), (rx, filter)));
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(EVENT_STREAM_KEEPALIVE))
        .into_response())
}

async fn init(State(app): State<AdminState>) -> Result<Json<InitResult>, AdminError> {
    match app.consensus.initialize().await {
        Ok(members) => {
            tracing::info!("cluster initialized with three voters");
            Ok(Json(InitResult { members }))
        }
        Err(e @ InitError::OnWitness) => Err(AdminError::new(
            StatusCode::CONFLICT,
            "witness_cannot_init",
            e.to_string(),
        )),
        Err(e @ InitError::AlreadyInitialized) => Err(AdminError::new(
            StatusCode::CONFLICT,
            "already_initialized",
            e.to_string(),
        )),
        Err(e @ InitError::Other(_)) => Err(AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "init_failed",
            e.to_string(),
        )),
    }
}

async fn write_test_record(
    State(AdminState { consensus: c, .. }): State<AdminState>,
    body: Result<Json<WriteTestRecord>, JsonRejection>,
) -> Result<Json<WriteTestRecordResult>, AdminError> {
    let Json(req) = body?;
    let record = Record::Test(TestRecord {
        id: req.id,
        payload: req.payload.into_bytes(),
    });
    // The replicated rule, checked before anything enters the log.
    validate(&record).map_err(|e| AdminError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string()))?;
    let index = c.propose_in(record, req.epoch).await?;
    Ok(Json(WriteTestRecordResult {
        id: req.id,
        index,
        leader: c.config().node_id,
    }))
}

/// How long a switchover may take from the request to leadership on the target.
pub const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(15);

/// Planned switchover (DESIGN §4): the active releases everything, commits `Released`, and
/// hands leadership to a standby that holds every committed record.
async fn switchover(
    State(app): State<AdminState>,
    body: Result<Json<SwitchoverRequest>, JsonRejection>,
) -> Result<Json<SwitchoverResult>, AdminError> {
    let Json(req) = body?;
    let cfg = app.consensus.config();
    let conflict = |code: &str, message: String| AdminError::new(StatusCode::CONFLICT, code, message);
    let (epoch, target) = active_and_target(&app, req.to.as_deref(), "switchover")?;
    // A standby that holds everything but stopped answering is no target: handing it the
    // lead would leave the service released.
    let recent = cfg.timers.election_timeout_min;
    if !app.consensus.in_sync(target.id, recent) {
        return Err(conflict(
            "standby_not_synced",
            format!(
                "{} has not acknowledged the leader within {recent:?} or lacks more than SYNC_LAG_MAX_ENTRIES ({SYNC_LAG_MAX_ENTRIES}) committed records; wait until it is synced (tandemctl status), or see `tandemctl failover --force`",
                target.name
            ),
        ));
    }
    // Recorded before the hand-off: afterwards this node no longer leads and cannot propose.
    let detail = format!("{} -> {} requested (epoch {epoch})", cfg.me().name, target.name);
    audit_action(&app, "switchover", detail).await;
    app.failover
        .start_switchover(target.id)
        .await
        .map_err(|reason| conflict("switchover_refused", reason))?;
    tracing::info!(to = %target.name, %epoch, "switchover started");
    if let HandOff::TookBack = await_handoff(&app, target).await? {
        return Err(conflict(
            "switchover_failed",
            format!(
                "{} did not take the lead; {} took the service back (epoch {epoch})",
                target.name,
                cfg.me().name
            ),
        ));
    }
    Ok(Json(SwitchoverResult {
        from: cfg.me().name.clone(),
        to: target.name.clone(),
        released_epoch: epoch,
    }))
}

/// This node's active epoch and the data node a hand-off goes to (`to`, or the other one).
fn active_and_target<'a>(
    app: &'a AdminState,
    to: Option<&str>,
    what: &str,
) -> Result<(u64, &'a MemberConfig), AdminError> {
    let cfg = app.consensus.config();
    let conflict = |code: &str, message: String| AdminError::new(StatusCode::CONFLICT, code, message);
    let Some(epoch) = app.failover.active_epoch() else {
        return Err(conflict(
            "not_active",
            format!(
                "{} is not the active; send the {what} to the active node",
                cfg.me().name
            ),
        ));
    };
    let target = match to {
        Some(name) => member_named(cfg, name)?,
        None => cfg
            .members
            .iter()
            .find(|m| m.role == MemberRole::Data && m.id != cfg.node_id)
            .expect("validated: two data nodes"),
    };
    if target.role != MemberRole::Data || target.id == cfg.node_id {
        return Err(conflict(
            "bad_target",
            format!("{} cannot take the service: pick the other data node", target.name),
        ));
    }
    Ok((epoch, target))
}

/// How a hand-off ended.
enum HandOff {
    /// The target leads.
    Led,
    /// The target did not take the lead and this node serves again.
    TookBack,
}

/// After a hand-off started: wait until `target` leads, or this node took the service back.
async fn await_handoff(app: &AdminState, target: &MemberConfig) -> Result<HandOff, AdminError> {
    let started = tokio::time::Instant::now();
    loop {
        if app.consensus.current_leader() == Some(target.id) {
            return Ok(HandOff::Led);
        }
        if started.elapsed() >= HANDOFF_SETTLE && app.failover.serving_epoch().is_some() {
            return Ok(HandOff::TookBack);
        }
        if started.elapsed() > SWITCHOVER_TIMEOUT {
            return Err(AdminError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "switchover_timeout",
                format!("the service was released, but {} did not take the lead within {SWITCHOVER_TIMEOUT:?}; check `tandemctl status`", target.name),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What this node holds and what its scripts did lately.
/// Most entries in one page of `GET /v1/files/manifest`.
pub const MANIFEST_PAGE_MAX: usize = 10_000;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ManifestQuery {
    /// The sync folder's name.
    folder: String,
    /// Start after this path (the last one of the previous page).
    after: Option<String>,
    /// At most this many entries, up to MANIFEST_PAGE_MAX.
    limit: Option<usize>,
}

/// `GET /v1/files/manifest`: one page of a folder's replicated index, on any member (the
/// witness holds the index too).
async fn file_manifest(
    State(app): State<AdminState>,
    query: Result<Query<ManifestQuery>, QueryRejection>,
) -> Result<Json<tandem_client::api::FileManifest>, AdminError> {
    let Query(q) = query.map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(MANIFEST_PAGE_MAX);
    if limit == 0 || limit > MANIFEST_PAGE_MAX {
        return Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit must be 1 to MANIFEST_PAGE_MAX ({MANIFEST_PAGE_MAX})"),
        ));
    }
    let state = app.consensus.state().read();
    let start = (q.folder.clone(), q.after.clone().unwrap_or_default());
    let mut entries = Vec::new();
    let mut next = None;
    for ((folder, path), m) in state.files.range(start..) {
        if *folder != q.folder {
            break;
        }
        if q.after.as_deref() == Some(path.as_str()) {
            continue;
        }
        if entries.len() == limit {
            next = entries
                .last()
                .map(|e: &tandem_client::api::ManifestEntry| e.path.clone());
            break;
        }
        entries.push(tandem_client::api::ManifestEntry {
            path: path.clone(),
            kind: match m.kind {
                tandem_raft_store::records::FileKind::File => "file",
                tandem_raft_store::records::FileKind::Dir => "dir",
                tandem_raft_store::records::FileKind::Symlink => "symlink",
            }
            .into(),
            size: m.size,
            hash: if m.kind == tandem_raft_store::records::FileKind::Dir {
                String::new()
            } else {
                crate::files::chunk::hex(&m.hash)
            },
            mode: m.attrs.mode,
            uid: m.attrs.uid,
            gid: m.attrs.gid,
            mtime_ns: m.attrs.mtime_ns,
            target: m.target.clone(),
            index: m.index,
        });
    }
    Ok(Json(tandem_client::api::FileManifest {
        folder: q.folder,
        entries,
        next,
    }))
}

/// `GET /v1/files`: this node's file mirror (404 on a node without sync folders).
async fn files(
    State(app): State<AdminState>,
    _node: NodeParam,
) -> Result<Json<tandem_client::api::FilesInfo>, AdminError> {
    let files = app.files.as_ref().ok_or_else(|| {
        AdminError::new(
            StatusCode::NOT_FOUND,
            "no_sync_folders",
            "this node mirrors no folders: add [[sync]] entries to the config of both data nodes",
        )
    })?;
    Ok(Json(files.info()))
}

#[cfg(feature = "mariadb")]
async fn db_info(
    State(app): State<AdminState>,
    _node: NodeParam,
) -> Result<Json<crate::db::mariadb::DbInfo>, AdminError> {
    let db = app.database.as_ref().ok_or_else(no_database)?;
    Ok(Json(db.info()))
}

#[cfg(not(feature = "mariadb"))]
async fn db_info(_: State<AdminState>, _node: NodeParam) -> Result<Json<()>, AdminError> {
    Err(no_database())
}

/// Seed this node's database from the other data node's (or, without `replace_local_data`,
/// say what that would do).
#[cfg(feature = "mariadb")]
async fn db_seed(
    State(app): State<AdminState>,
    _node: NodeParam,
    body: Result<Json<tandem_client::api::SeedRequest>, JsonRejection>,
) -> Result<Json<tandem_client::api::SeedAnswer>, AdminError> {
    let Json(req) = body?;
    let db = app.database.as_ref().ok_or_else(no_database)?;
    match db.start_seed(req.replace_local_data).await {
        Ok(answer) => Ok(Json(answer)),
        Err(crate::db::seed::SeedRefusal::Conflict(why)) => {
            Err(AdminError::new(StatusCode::CONFLICT, "cannot_seed", why))
        }
    }
}

#[cfg(not(feature = "mariadb"))]
async fn db_seed(_: State<AdminState>, _node: NodeParam) -> Result<Json<()>, AdminError> {
    Err(no_database())
}

#[cfg(feature = "sqlite")]
fn embedded_of(app: &AdminState) -> Result<&Arc<crate::db::embedded::Embedded>, AdminError> {
    app.embedded.as_ref().ok_or_else(|| {
        AdminError::new(
            StatusCode::NOT_FOUND,
            "no_embedded_database",
            "the witness holds no embedded database: ask a data node",
        )
    })
}

#[cfg(feature = "sqlite")]
fn sql_error(e: crate::db::embedded::SqlError) -> AdminError {
    use crate::db::embedded::SqlError;
    match e {
        SqlError::Invalid(m) => AdminError::new(StatusCode::BAD_REQUEST, "bad_sql", m),
        SqlError::Unavailable(m) => AdminError::new(StatusCode::CONFLICT, "not_available_here", m),
        SqlError::Failed(m) => AdminError::new(StatusCode::SERVICE_UNAVAILABLE, "not_committed", m),
    }
}

/// Run statements on the embedded database as one replicated transaction (the active only).
#[cfg(feature = "sqlite")]
async fn db_execute(
    State(app): State<AdminState>,
    body: Result<Json<tandem_client::api::ExecuteRequest>, JsonRejection>,
) -> Result<Json<tandem_client::api::ExecuteResult>, AdminError> {
    let Json(req) = body?;
    let e = embedded_of(&app)?;
    e.execute(req).await.map(Json).map_err(sql_error)
}

/// One read-only statement on the embedded database.
#[cfg(feature = "sqlite")]
async fn db_query(
    State(app): State<AdminState>,
    body: Result<Json<tandem_client::api::QueryRequest>, JsonRejection>,
) -> Result<Json<tandem_client::api::QueryResult>, AdminError> {
    let Json(req) = body?;
    let e = embedded_of(&app)?;
    e.query(req).await.map(Json).map_err(sql_error)
}

#[cfg(not(feature = "sqlite"))]
async fn db_execute() -> Result<Json<()>, AdminError> {
    Err(AdminError::new(
        StatusCode::NOT_FOUND,
        "no_embedded_database",
        "this build has no embedded database (built without the `sqlite` feature)",
    ))
}

#[cfg(not(feature = "sqlite"))]
async fn db_query() -> Result<Json<()>, AdminError> {
    db_execute().await
}

fn no_database() -> AdminError {
    AdminError::new(
        StatusCode::NOT_FOUND,
        "no_database",
        "this node replicates no database: add a [database] section to the config of both data nodes",
    )
}

async fn resources(State(app): State<AdminState>, _node: NodeParam) -> Json<ResourcesInfo> {
    let held = app.identity.is_held();
    Json(ResourcesInfo {
        node: app.consensus.config().me().name.clone(),
        vips: app
            .consensus
            .config()
            .vips
            .iter()
            .map(|v| VipInfo {
                name: v.name.clone(),
                address: format!("{}/{}", v.address, v.prefix),
                interface: v.interface.clone(),
                held,
            })
            .collect(),
        scripts: app
            .agent
            .resources()
            .iter()
            .map(|r| ScriptInfo {
                name: r.name.clone(),
                check: r.check.as_ref().map(|c| c.command.clone()),
            })
            .collect(),
        running: app.agent.running(),
        recent: app.agent.recent_runs(),
    })
}

/// Cancel the script running on this node (a hung acquire, check or release): its process
/// group is killed and the run fails as cancelled; the controller reacts as to any failure.
async fn cancel_script(State(app): State<AdminState>, _node: NodeParam) -> Json<CancelResult> {
    let cancelled = app.agent.cancel();
    if let Some(c) = &cancelled {
        audit_action(
            &app,
            "cancel-script",
            format!("{} of {} after {} ms", c.action, c.resource, c.running_ms),
        )
        .await;
    }
    Json(CancelResult { cancelled })
}

/// Make this data node the only voter, when both other members are gone for good
/// (see [`crate::recovery`]). Answers, then restarts the process in place.
async fn recover(
    State(app): State<AdminState>,
    body: Result<Json<RecoverRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<RecoverResult>), AdminError> {
    let Json(req) = body?;
    let cfg = app.consensus.config();
    let conflict = |code: &str, message: String| AdminError::new(StatusCode::CONFLICT, code, message);
    if !req.force_single_node {
        return Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            "force_single_node_required",
            "recovery makes this node the only voter; say so with \"force_single_node\": true".to_string(),
        ));
    }
    if cfg.role() == MemberRole::Witness {
        return Err(conflict(
            "witness",
            "the witness never runs the service; recover a data node".to_string(),
        ));
    }
    if app.consensus.voter_ids() == vec![cfg.node_id] {
        return Err(conflict(
            "already_single",
            format!(
                "{} is already the only voter; bring the others back with rejoin",
                cfg.me().name
            ),
        ));
    }
    let silence = app.consensus.quorum_silence();
    if silence < RECOVER_SILENCE_MIN {
        return Err(conflict(
            "quorum_present",
            format!(
                "{} was in touch with a quorum {} ms ago; forced recovery is only for a cluster whose other two members are gone for good (wait {} s without a leader)",
                cfg.me().name,
                silence.as_millis(),
                RECOVER_SILENCE_MIN.as_secs()
            ),
        ));
    }
    let request = recovery::Request {
        requested_at_ms: unix_ms(),
        actor: format!("{}@{}", crate::auth::caller(), cfg.me().name),
    };
    recovery::write_request(&cfg.data_dir, &request).map_err(|e| {
        AdminError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "io",
            format!("cannot write the recovery request into {}: {e}", cfg.data_dir.display()),
        )
    })?;
    app.cluster.events.record(
        events::Kind::Operator,
        "forced single-node recovery requested; restarting in place to carry it out",
    );
    app.restart.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(RecoverResult {
            node: cfg.me().name.clone(),
            restarting: true,
        }),
    ))
}

/// On the leader: bring a member back as a voter after a forced recovery. It must have been
/// started with an empty data dir, so nothing of its old log can mix with the recovered one.
async fn rejoin(
    State(app): State<AdminState>,
    body: Result<Json<RejoinRequest>, JsonRejection>,
) -> Result<Json<RejoinResult>, AdminError> {
    let Json(req) = body?;
    let cfg = app.consensus.config();
    let conflict = |code: &str, message: String| AdminError::new(StatusCode::CONFLICT, code, message);
    let target = member_named(cfg, &req.node)?;
    if app.consensus.current_leader() != Some(cfg.node_id) {
        return Err(conflict(
            "not_leader",
            format!("{} does not lead; send the rejoin to the leader", cfg.me().name),
        ));
    }
    if app.consensus.voter_ids().contains(&target.id) {
        return Err(conflict(
            "already_member",
            format!("{} is already a voter", target.name),
        ));
    }
    let status = read_member::<NodeStatus>(&app, target, "/v1/status".into(), Duration::from_secs(2))
        .await
        .map_err(|e| {
            conflict(
                "unreachable",
                format!(
                    "{} does not answer on its peer port {} ({e}); start it with an empty data_dir first",
                    target.name, target.peer_addr
                ),
            )
        })?;
    if status.initialized {
        return Err(conflict(
            "holds_old_data",
            format!(
                "{} still holds its log from before the recovery (term {}, last index {:?}): stop it, move its data_dir aside, start it again, then retry",
                target.name, status.term, status.last_log_index
            ),
        ));
    }
    let voters = app
        .consensus
        .add_voter(target)
        .await
        .map_err(|e| AdminError::new(StatusCode::SERVICE_UNAVAILABLE, "membership_change_failed", e))?;
    let names: Vec<String> = voters
        .iter()
        .filter_map(|id| cfg.members.iter().find(|m| m.id == *id).map(|m| m.name.clone()))
        .collect();
    audit_action(
        &app,
        "rejoin",
        format!("{} is a voter again; voters: {names:?}", target.name),
    )
    .await;
    Ok(Json(RejoinResult {
        node: target.name.clone(),
        voters: names,
    }))
}

/// The configured member called `name`, or a 400 naming the unknown name and the members.
fn member_named<'a>(cfg: &'a ValidConfig, name: &str) -> Result<&'a MemberConfig, AdminError> {
    cfg.members.iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<_> = cfg.members.iter().map(|m| m.name.as_str()).collect();
        AdminError::new(
            StatusCode::BAD_REQUEST,
            "unknown_node",
            format!("no member is named {name:?}; members: {}", names.join(", ")),
        )
    })
}

/// After a hand-off started, how long before "this node serves again" means it took the
/// service back (rather than not yet having let go).
const HANDOFF_SETTLE: Duration = Duration::from_millis(300);

/// Files are not replicated by this version; the report says so rather than claiming zero.
const FILES_NOT_REPLICATED: &str = "none replicated by this version";

/// Forced failover: a switchover without the sync check. Without `accept_data_loss` it only
/// reports what the target lacks; with it, the hand-off starts like a planned switchover.
/// Raft never elects a node that lacks committed records, so the records listed must reach
/// the target before it leads; if they cannot, the hand-off fails and this node activates
/// again after the hand-off grace.
async fn forced_failover(
    State(app): State<AdminState>,
    body: Result<Json<FailoverRequest>, JsonRejection>,
) -> Result<Json<FailoverReport>, AdminError> {
    let Json(req) = body?;
    if !req.force {
        return Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            "force_required",
            "a forced failover needs \"force\": true; for a planned one use /v1/switchover".to_string(),
        ));
    }
    let cfg = app.consensus.config();
    let (epoch, target) = active_and_target(&app, req.to.as_deref(), "failover")?;
    let lag = app.consensus.lag_of(target.id).await.ok_or_else(|| {
        AdminError::new(
            StatusCode::CONFLICT,
            "not_active",
            format!(
                "{} stopped leading; send the failover to the active node",
                cfg.me().name
            ),
        )
    })?;
    let mut report = FailoverReport {
        from: cfg.me().name.clone(),
        to: target.name.clone(),
        committed_index: lag.committed_index,
        target_matched_index: lag.matched_index,
        missing_records: lag.missing_records,
        missing_bytes: lag.missing_bytes,
        needs_snapshot: lag.needs_snapshot,
        target_last_ack_ms: lag.last_ack.map(|d| d.as_millis() as u64),
        files: FILES_NOT_REPLICATED.to_string(),
        executed: false,
        released_epoch: None,
        outcome: "report only: nothing changed; send accept_data_loss: true to go ahead".to_string(),
    };
    if !req.accept_data_loss {
        return Ok(Json(report));
    }
    let detail = format!(
        "forced {} -> {} (epoch {epoch}); the target lacked {} records ({} bytes), last ack {}",
        cfg.me().name,
        target.name,
        lag.missing_records,
        lag.missing_bytes,
        lag.last_ack
            .map_or("never".to_string(), |d| format!("{} ms ago", d.as_millis())),
    );
    audit_action(&app, "failover", detail).await;
    app.failover
        .start_switchover(target.id)
        .await
        .map_err(|reason| AdminError::new(StatusCode::CONFLICT, "failover_refused", reason))?;
    tracing::warn!(to = %target.name, %epoch, missing = lag.missing_records, "forced failover started");
    report.executed = true;
    report.released_epoch = Some(epoch);
    report.outcome = match await_handoff(&app, target).await? {
        HandOff::Led => format!("{} leads and takes the service", target.name),
        HandOff::TookBack => format!(
            "{} did not take the lead; {} took the service back",
            target.name,
            cfg.me().name
        ),
    };
    Ok(Json(report))
}

async fn get_policies(State(app): State<AdminState>) -> Json<PoliciesInfo> {
    Json(policies_info(&app.consensus.policies()))
}

/// Change the replicated policies (on the leader) and record who did what in the audit trail.
async fn put_policies(
    State(app): State<AdminState>,
    body: Result<Json<PolicyUpdate>, JsonRejection>,
) -> Result<Json<PoliciesInfo>, AdminError> {
    let Json(update) = body?;
    let mut p = app.consensus.policies();
    let mut changes = Vec::new();
    macro_rules! apply {
        ($($field:ident),*) => {$(
            if let Some(v) = update.$field {
                if p.$field != v {
                    changes.push(format!("{} {} -> {}", stringify!($field), p.$field, v));
                    p.$field = v;
                }
            }
        )*};
    }
    apply!(
        auto_switch,
        only_switch_when_synced,
        maintenance,
        auto_failback,
        min_active_secs,
        max_auto_switches,
        switch_window_secs,
        window_utc_offset_min
    );
    if let Some(texts) = update.windows {
        let windows = texts
            .iter()
            .map(|t| SwitchWindow::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AdminError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", e))?;
        if p.windows != windows {
            let show = |ws: &[SwitchWindow]| ws.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("; ");
            changes.push(format!("windows [{}] -> [{}]", show(&p.windows), show(&windows)));
            p.windows = windows;
        }
    }
    let record = Record::SetPolicies(p.clone());
    validate(&record)
        .map_err(|e| AdminError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", e.to_string()))?;
    if changes.is_empty() {
        return Ok(Json(policies_info(&p)));
    }
    app.consensus.propose(record).await?;
    let detail = changes.join(", ");
    app.cluster.events.record(events::Kind::Policy, detail.clone());
    audit_action(&app, "set-policies", detail).await;
    Ok(Json(policies_info(&p)))
}

/// Record an operator action in the replicated audit trail; a failure is logged, since the
/// action itself already happened.
async fn audit_action(app: &AdminState, action: &str, detail: String) {
    app.cluster
        .events
        .record(events::Kind::Operator, format!("{action}: {detail}"));
    let entry = AuditEntry {
        at_ms: unix_ms(),
        actor: format!("{}@{}", crate::auth::caller(), app.consensus.config().me().name),
        action: action.into(),
        detail,
    };
    if let Err(e) = app.consensus.propose(Record::Audit(entry)).await {
        tracing::error!(error = %e, action, "could not record the action in the audit trail");
    }
}

/// Newest entries of the replicated audit trail (up to `AUDIT_TRAIL_CAPACITY`).
async fn audit(State(app): State<AdminState>) -> Json<Vec<AuditInfo>> {
    Json(app.consensus.audit(AUDIT_TRAIL_CAPACITY))
}
