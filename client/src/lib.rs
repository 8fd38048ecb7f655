//! # tandem-client
//!
//! The admin API's types ([`api`]), shared with the node, and [`Client`], a typed async
//! client for one node's admin API. `tandemctl` (this crate's binary) is built on it.

pub mod api;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::ApiError;
use crate::api::AuditInfo;
use crate::api::CancelResult;
use crate::api::ClusterView;
use crate::api::EventInfo;
use crate::api::EventsPage;
use crate::api::FailoverReport;
use crate::api::FailoverRequest;
use crate::api::InitResult;
use crate::api::NodeStatus;
use crate::api::PoliciesInfo;
use crate::api::PolicyUpdate;
use crate::api::RecoverRequest;
use crate::api::RecoverResult;
use crate::api::RejoinRequest;
use crate::api::RejoinResult;
use crate::api::ResourcesInfo;
use crate::api::SwitchoverRequest;
use crate::api::SwitchoverResult;
use crate::api::WriteTestRecord;
use crate::api::WriteTestRecordResult;

/// Largest answer body the client reads.
pub const RESPONSE_MAX_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{addr}: unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("{addr}: {} ({})", .error.message, .error.code)]
    Api { addr: String, status: u16, error: ApiError },
    #[error("{addr}: unexpected answer (HTTP {status}): {body}")]
    Protocol { addr: String, status: u16, body: String },
}

impl ClientError {
    /// The API error code, if the node answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { error, .. } => Some(&error.code),
            _ => None,
        }
    }
}

/// How a client reaches nodes: the bearer token it sends and the CA it trusts for HTTPS.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// PEM file of the CA that signed the nodes' certificates. With it, an address without a
    /// scheme is reached over HTTPS.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The access every [`Client::new`] uses, with its connector (the CA file read once); each
/// client still gets a connection pool of its own.
static DEFAULT_ACCESS: std::sync::OnceLock<(Access, Result<Connector, String>)> = std::sync::OnceLock::new();

fn default_access(access: Access) -> (Access, Result<Connector, String>) {
    let connector = connector(access.ca_file.as_deref());
    (access, connector)
}

/// Set, once per process and before the first [`Client::new`], the access every
/// [`Client::new`] uses (tandemctl's `--token-file` and `--ca-file`). Later calls are ignored.
pub fn set_default_access(access: Access) {
    let _ = DEFAULT_ACCESS.set(default_access(access));
}

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

/// The CA certificates of a PEM file's contents, as trusted roots; `label` names the file in
/// errors (e.g. "ca_file /etc/x.pem").
#[cfg(feature = "tls")]
pub fn pem_roots(pem: &[u8], label: &str) -> Result<tokio_rustls::rustls::RootCertStore, String> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{label} is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{label} holds no certificate"));
    }
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{label}: unusable certificate: {e}"))?;
    }
    Ok(roots)
}

/// A TLS client config on ring that trusts `roots` and shows no certificate of its own.
#[cfg(feature = "tls")]
pub fn tls_client_config(
    roots: tokio_rustls::rustls::RootCertStore,
) -> Result<tokio_rustls::rustls::ClientConfig, String> {
    use tokio_rustls::rustls;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

type HttpClient = hyper_util::client::legacy::Client<Connector, Full<Bytes>>;

/// A fresh HTTP client (with its own connection pool) over `connector`.
fn http_client(connector: Connector) -> HttpClient {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

/// The connector for `ca_file` (read once here), or why the CA file cannot be used.
fn connector(ca_file: Option<&std::path::Path>) -> Result<Connector, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    #[cfg(feature = "tls")]
    {
        let roots = match ca_file {
            Some(path) => {
                let label = format!("CA file {}", path.display());
                let pem = std::fs::read(path).map_err(|e| format!("cannot read {label}: {e}"))?;
                pem_roots(&pem, &label)?
            }
            None => tokio_rustls::rustls::RootCertStore::empty(),
        };
        let config = tls_client_config(roots)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(connector)
    }
    #[cfg(not(feature = "tls"))]
    {
        if ca_file.is_some() {
            return Err("this build has no TLS (the `tls` feature)".into());
        }
        Ok(http)
    }
}

/// A client for one node's admin API at `addr`: `host:port` (HTTPS when the access names a
/// CA file, else HTTP), or a URL base such as `https://10.0.0.5:7480`.
#[derive(Clone, Debug)]
pub struct Client {
    addr: String,
    base: String,
    timeout: Duration,
    token: Option<String>,
    http: Result<HttpClient, String>,
    /// For one node's own views and actions: the member they are of (see [`Client::on_node`]).
    node: Option<String>,
}

impl Client {
    pub fn new(addr: impl Into<String>) -> Self {
        let (access, connector) = DEFAULT_ACCESS.get_or_init(|| default_access(Access::default()));
        Self::with_http(addr.into(), access, connector.clone().map(http_client))
    }

    /// A client with its own token and CA instead of the process's default access.
    pub fn with_access(addr: impl Into<String>, access: &Access) -> Self {
        Self::with_http(
            addr.into(),
            access,
            connector(access.ca_file.as_deref()).map(http_client),
        )
    }

    fn with_http(addr: String, access: &Access, http: Result<HttpClient, String>) -> Self {
        // An explicit scheme wins; without one, HTTPS when a CA is given.
        let (scheme, rest) = match addr.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (s, rest.trim_end_matches('/')),
            _ if access.ca_file.is_some() => ("https", addr.as_str()),
            _ => ("http", addr.as_str()),
        };
        let (addr, base) = (rest.to_string(), format!("{scheme}://{rest}"));
        Self {
            addr,
            base,
            timeout: Duration::from_secs(5),
            token: access.token.clone(),
            http,
            node: None,
        }
    }

    /// Ask for member `name`'s own resources, file mirror and database (and cancel its script or
    /// seed its database) through the node this client reaches, which passes the request on
    /// over the peer port (`?node=NAME`). Other calls are unchanged.
    pub fn on_node(mut self, name: impl Into<String>) -> Self {
        self.node = Some(name.into());
        self
    }

    /// `path` with `?node=NAME` when [`Client::on_node`] named a member.
    fn of_node(&self, path: &str) -> String {
        match &self.node {
            Some(n) => format!("{path}?node={}", encode_query_value(n)),
            None => path.to_string(),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        self.call::<(), _>("GET", "/v1/status", None).await
    }

    pub async fn init(&self) -> Result<InitResult, ClientError> {
        self.call("POST", "/v1/cluster/init", Some(&serde_json::json!({})))
            .await
    }

    pub async fn write_test_record(&self, req: &WriteTestRecord) -> Result<WriteTestRecordResult, ClientError> {
        self.call("POST", "/v1/test-records", Some(req)).await
    }

    pub async fn policies(&self) -> Result<PoliciesInfo, ClientError> {
        self.call::<(), _>("GET", "/v1/policies", None).await
    }

    pub async fn set_policies(&self, update: &PolicyUpdate) -> Result<PoliciesInfo, ClientError> {
        self.call("PUT", "/v1/policies", Some(update)).await
    }

    pub async fn audit(&self) -> Result<Vec<AuditInfo>, ClientError> {
        self.call::<(), _>("GET", "/v1/audit", None).await
    }

    pub async fn switchover(&self, req: &SwitchoverRequest) -> Result<SwitchoverResult, ClientError> {
        self.call("POST", "/v1/switchover", Some(req)).await
    }

    pub async fn failover(&self, req: &FailoverRequest) -> Result<FailoverReport, ClientError> {
        self.call("POST", "/v1/failover", Some(req)).await
    }

    pub async fn recover(&self, req: &RecoverRequest) -> Result<RecoverResult, ClientError> {
        self.call("POST", "/v1/recover", Some(req)).await
    }

    pub async fn rejoin(&self, req: &RejoinRequest) -> Result<RejoinResult, ClientError> {
        self.call("POST", "/v1/cluster/rejoin", Some(req)).await
    }

    /// Every member's status and the cluster status (`GET /v1/cluster`).
    pub async fn cluster(&self) -> Result<ClusterView, ClientError> {
        self.call::<(), _>("GET", "/v1/cluster", None).await
    }

    /// Events, oldest first (`GET /v1/events`).
    pub async fn events(&self, q: &EventsQuery) -> Result<EventsPage, ClientError> {
        self.call::<(), _>("GET", &format!("/v1/events?{}", q.to_query()), None)
            .await
    }

    /// Events as CSV (`GET /v1/events?format=csv`).
    pub async fn events_csv(&self, q: &EventsQuery) -> Result<String, ClientError> {
        let (status, body) = self
            .exchange("GET", &format!("/v1/events?{}&format=csv", q.to_query()), Bytes::new())
            .await?;
        self.decode_text(status, body)
    }

    /// Follow this node's live events (`GET /v1/events/stream`): `on_event` gets each one as
    /// it happens; returns when the node closes the stream or cannot be reached.
    pub async fn follow_events(
        &self,
        kind: Option<&str>,
        mut on_event: impl FnMut(EventInfo),
    ) -> Result<(), ClientError> {
        let path = match kind {
            Some(k) => format!("/v1/events/stream?kind={}", encode_query_value(k)),
            None => "/v1/events/stream".to_string(),
        };
        let req = self
            .request("GET", &path)
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        let addr = self.addr.clone();
        let unreachable = |reason: String| ClientError::Unreachable {
            addr: addr.clone(),
            reason,
        };
        let resp = tokio::time::timeout(self.timeout, self.http()?.request(req))
            .await
            .map_err(|_| ClientError::Timeout {
                addr: addr.clone(),
                timeout: self.timeout,
            })?
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let bytes = body.collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
            return self.decode_text(status, bytes).map(drop);
        }
        let mut buf = String::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| unreachable(e.to_string()))?;
            let Ok(data) = frame.into_data() else { continue };
            buf.push_str(&String::from_utf8_lossy(&data));
            if buf.len() > RESPONSE_MAX_BYTES {
                return Err(ClientError::Protocol {
                    addr,
                    status,
                    body: "an event larger than RESPONSE_MAX_BYTES".into(),
                });
            }
            // Server-sent events end with a blank line; only `data:` lines of events are used.
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                for line in block.lines() {
                    if let Some(json) = line.strip_prefix("data:") {
                        if let Ok(e) = serde_json::from_str::<EventInfo>(json.trim_start()) {
                            on_event(e);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// One page of a sync folder's replicated index (`after`: the last path of the page before).
    pub async fn file_manifest(
        &self,
        folder: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<api::FileManifest, ClientError> {
        let mut path = format!("/v1/files/manifest?folder={}", encode_query_value(folder));
        if let Some(a) = after {
            path.push_str(&format!("&after={}", encode_query_value(a)));
        }
        if let Some(l) = limit {
            path.push_str(&format!("&limit={l}"));
        }
        self.call::<(), _>("GET", &path, None).await
    }

    /// A sync folder's whole replicated index, page after page.
    pub async fn file_manifest_all(&self, folder: &str) -> Result<Vec<api::ManifestEntry>, ClientError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.file_manifest(folder, after.as_deref(), None).await?;
            out.extend(page.entries);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// `GET /v1/files`: the node's file mirror.
    pub async fn files(&self) -> Result<api::FilesInfo, ClientError> {
        self.call::<(), _>("GET", &self.of_node("/v1/files"), None).await
    }

    /// `GET /v1/db`: the node's database change records.
    pub async fn db(&self) -> Result<api::DbInfo, ClientError> {
        self.call::<(), _>("GET", &self.of_node("/v1/db"), None).await
    }

    /// `POST /v1/db/seed`: seed this node's database from the other data node's.
    pub async fn db_seed(&self, req: &api::SeedRequest) -> Result<api::SeedAnswer, ClientError> {
        self.call("POST", &self.of_node("/v1/db/seed"), Some(req)).await
    }

    /// `POST /v1/db/execute`: run statements on the active's embedded database as one
    /// replicated transaction.
    pub async fn db_execute(&self, req: &api::ExecuteRequest) -> Result<api::ExecuteResult, ClientError> {
        self.call("POST", "/v1/db/execute", Some(req)).await
    }

    /// `POST /v1/db/query`: read the embedded database.
    pub async fn db_query(&self, req: &api::QueryRequest) -> Result<api::QueryResult, ClientError> {
        self.call("POST", "/v1/db/query", Some(req)).await
    }

    pub async fn resources(&self) -> Result<ResourcesInfo, ClientError> {
        self.call::<(), _>("GET", &self.of_node("/v1/resources"), None).await
    }

    pub async fn cancel_script(&self) -> Result<CancelResult, ClientError> {
        self.call::<(), _>("POST", &self.of_node("/v1/resources/cancel"), None)
            .await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).expect("API request types serialize")),
            None => Bytes::new(),
        };
        let (status, body) = self.exchange(method, path, body).await?;
        let addr = self.addr.clone();
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
                addr,
                status,
                body: format!("{e}: {}", String::from_utf8_lossy(&body)),
            });
        }
        Err(self.error_answer(status, &body))
    }

    fn error_answer(&self, status: u16, body: &[u8]) -> ClientError {
        let addr = self.addr.clone();
        match serde_json::from_slice::<ApiError>(body) {
            Ok(error) => ClientError::Api { addr, status, error },
            Err(_) => ClientError::Protocol {
                addr,
                status,
                body: String::from_utf8_lossy(body).into_owned(),
            },
        }
    }

    fn decode_text(&self, status: u16, body: Bytes) -> Result<String, ClientError> {
        if (200..300).contains(&status) {
            Ok(String::from_utf8_lossy(&body).into_owned())
        } else {
            Err(self.error_answer(status, &body))
        }
    }

    /// A request to `path` on this node, with the token if there is one.
    fn request(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req
    }

    fn http(&self) -> Result<&hyper_util::client::legacy::Client<Connector, Full<Bytes>>, ClientError> {
        self.http.as_ref().map_err(|reason| ClientError::Unreachable {
            addr: self.addr.clone(),
            reason: reason.clone(),
        })
    }

    /// One request and its whole answer, within the timeout.
    async fn exchange(&self, method: &str, path: &str, body: Bytes) -> Result<(u16, Bytes), ClientError> {
        let req = self
            .request(method, path)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("valid request");
        let addr = self.addr.clone();
        let http = self.http()?;
        let exchange = async {
            let resp = http.request(req).await.map_err(|e| ClientError::Unreachable {
                addr: addr.clone(),
                reason: error_chain(&e),
            })?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), RESPONSE_MAX_BYTES)
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                addr: addr.clone(),
                timeout: self.timeout,
            })?
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch (proleptic Gregorian).
pub fn utc_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01, counted in 400-year eras from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Filters of `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsQuery {
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Comma-separated kinds.
    pub kind: Option<String>,
    pub node: Option<String>,
    pub limit: Option<usize>,
    /// Only the asked node's own events.
    pub local: bool,
}

impl EventsQuery {
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |k: &str, v: String| parts.push(format!("{k}={}", encode_query_value(&v)));
        if let Some(v) = self.since_ms {
            add("since_ms", v.to_string());
        }
        if let Some(v) = self.until_ms {
            add("until_ms", v.to_string());
        }
        if let Some(v) = &self.kind {
            add("kind", v.clone());
        }
        if let Some(v) = &self.node {
            add("node", v.clone());
        }
        if let Some(v) = self.limit {
            add("limit", v.to_string());
        }
        if self.local {
            add("local", "true".into());
        }
        parts.join("&")
    }
}

/// Percent-encode everything but unreserved characters.
fn encode_query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_match_the_calendar() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc_time(1_795_132_800_000 + 86_399_999), "2026-11-20T23:59:59.999Z");
    }
}
