//! Admin API access: bearer tokens with a scope, checked before any handler runs.
//!
//! With no `[[admin_tokens]]` configured the admin API is open to whoever reaches its port
//! (which is loopback unless `admin_listen` says otherwise). Once one token is configured,
//! every `/v1/` route and `/metrics` need one: `read` tokens may read, `admin` tokens may also
//! change things. The health routes and the console page stay open: a load balancer and a
//! browser reach them without a token (the page asks for one before it calls the API).

use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::Request;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::Method;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use serde::Deserialize;

use crate::config::err;
use crate::config::ConfigError;

/// Shortest admin token accepted, in bytes.
pub const ADMIN_TOKEN_MIN_BYTES: usize = 16;
/// Largest token file read.
pub const ADMIN_TOKEN_FILE_MAX_BYTES: u64 = 4096;
/// Most admin tokens in one config.
pub const ADMIN_TOKENS_MAX: usize = 64;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET routes only.
    Read,
    /// Every route.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawToken {
    name: String,
    scope: Scope,
    token_file: PathBuf,
}

/// One configured token.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub name: String,
    pub scope: Scope,
    token: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl AdminToken {
    /// The token itself, for this node's own calls to its admin API (`tandem init`).
    pub fn secret(&self) -> &str {
        &self.token
    }
}

pub(crate) fn validate_tokens(raw: Vec<RawToken>, base: &Path) -> Result<Vec<AdminToken>, ConfigError> {
    if raw.len() > ADMIN_TOKENS_MAX {
        return Err(err(
            "admin_tokens",
            format!("{} tokens; ADMIN_TOKENS_MAX is {ADMIN_TOKENS_MAX}", raw.len()),
        ));
    }
    let mut names = BTreeSet::new();
    let mut tokens: Vec<AdminToken> = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("admin_tokens[{i}].{field}");
        if t.name.is_empty()
            || t.name.len() > 64
            || !t
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(
                key("name"),
                format!("{:?} must be 1–64 letters, digits, '-' or '_'", t.name),
            ));
        }
        if !names.insert(t.name.clone()) {
            return Err(err(key("name"), format!("duplicate token name {:?}", t.name)));
        }
        let file = base.join(&t.token_file);
        let meta = std::fs::metadata(&file)
            .map_err(|e| err(key("token_file"), format!("cannot read {}: {e}", file.display())))?;
        if meta.len() > ADMIN_TOKEN_FILE_MAX_BYTES {
            return Err(err(
                key("token_file"),
                format!(
                    "{} is {} bytes; ADMIN_TOKEN_FILE_MAX_BYTES is {ADMIN_TOKEN_FILE_MAX_BYTES}",
                    file.display(),
                    meta.len()
                ),
            ));
        }
        let token = std::fs::read_to_string(&file)
            .map_err(|e| err(key("token_file"), format!("cannot read {}: {e}", file.display())))?
            .trim()
            .to_string();
        if token.len() < ADMIN_TOKEN_MIN_BYTES {
            return Err(err(
                key("token_file"),
                format!(
                    "the token in {} is {} bytes; ADMIN_TOKEN_MIN_BYTES is {ADMIN_TOKEN_MIN_BYTES} (make one with: head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')",
                    file.display(),
                    token.len()
                ),
            ));
        }
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(err(
                key("token_file"),
                format!("the token in {} must be printable ASCII without spaces", file.display()),
            ));
        }
        if let Some(other) = tokens.iter().find(|o| o.token == token) {
            return Err(err(
                key("token_file"),
                format!("holds the same token as {:?}; every token must differ", other.name),
            ));
        }
        tokens.push(AdminToken {
            name: t.name,
            scope: t.scope,
            token,
        });
    }
    Ok(tokens)
}

tokio::task_local! {
    /// The token name of the admin call being handled (`None`: the API is open).
    static CALLER: Option<String>;
}

/// Who makes the admin call being handled, for the audit trail: `token:<name>`, or
/// `admin-api` when the API has no tokens.
pub fn caller() -> String {
    CALLER
        .try_with(|c| c.as_ref().map(|n| format!("token:{n}")))
        .ok()
        .flatten()
        .unwrap_or_else(|| "admin-api".into())
}

/// The token name of the admin call being handled, if any.
pub fn caller_token() -> Option<String> {
    CALLER.try_with(Clone::clone).ok().flatten()
}

/// Run `fut` as the admin call of `caller` (a call another member checked and passed on).
pub async fn with_caller<F: std::future::Future>(caller: Option<String>, fut: F) -> F::Output {
    CALLER.scope(caller, fut).await
}

/// Every call that may change something is logged (target `tandem::audit`) with its caller and
/// outcome; the operator actions among them also go to the replicated audit trail.
async fn run_audited(caller: Option<String>, req: Request, next: Next) -> Response {
    let mutating = needed_scope(req.method(), req.uri().path()) == Scope::Admin;
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let who = caller.clone();
    let resp = CALLER.scope(caller, next.run(req)).await;
    if mutating {
        tracing::info!(
            target: "tandem::audit",
            caller = who.as_deref().unwrap_or("admin-api"),
            %method,
            path,
            status = resp.status().as_u16(),
            "admin call"
        );
    }
    resp
}

/// The configured tokens, shared by the admin server.
#[derive(Clone, Debug)]
pub struct Tokens(Arc<Vec<AdminToken>>);

impl Tokens {
    pub fn new(tokens: Vec<AdminToken>) -> Self {
        Self(Arc::new(tokens))
    }

    /// Which configured token `presented` is, compared in constant time per token.
    fn find(&self, presented: &str) -> Option<&AdminToken> {
        self.0
            .iter()
            .find(|t| constant_time_eq(t.token.as_bytes(), presented.as_bytes()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The one POST route that only reads.
const READ_ONLY_POST: &str = "/v1/db/query";

/// Routes anyone reaching the port may call: load balancers' health checks and the console
/// page (which carries no data).
fn open_route(path: &str) -> bool {
    path.starts_with("/health/") || path == "/" || path == "/console" || path == "/v1/openapi.json"
}

/// A read is a GET or HEAD, or a query of the embedded database (a POST for its body, refused
/// by the node when it would write); everything else changes something and needs the admin
/// scope.
fn needed_scope(method: &Method, path: &str) -> Scope {
    if method == Method::GET || method == Method::HEAD || (method == Method::POST && path == READ_ONLY_POST) {
        Scope::Read
    } else {
        Scope::Admin
    }
}

fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    let mut resp = crate::admin::AdminError::new(status, code, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"tandem\""),
        );
    }
    resp
}

/// Checks the bearer token of every request that needs one and records the caller.
pub async fn check(State(tokens): State<Tokens>, req: Request, next: Next) -> Response {
    if tokens.0.is_empty() || open_route(req.uri().path()) {
        return run_audited(None, req, next).await;
    }
    let presented = match req.headers().get(AUTHORIZATION).map(|v| v.to_str()) {
        None => {
            tracing::info!(target: "tandem::audit", method = %req.method(), path = %req.uri().path(), "admin call without a token refused");
            return refuse(
                StatusCode::UNAUTHORIZED,
                "token_required",
                "this node's admin API needs a token: send `Authorization: Bearer <token>` (tandemctl: --token-file or TANDEM_TOKEN_FILE)".into(),
            );
        }
        Some(Ok(v)) => match v.strip_prefix("Bearer ") {
            Some(t) => t.trim().to_string(),
            None => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "bad_token",
                    "the Authorization header must be `Bearer <token>`".into(),
                )
            }
        },
        Some(Err(_)) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "bad_token",
                "the Authorization header is not printable ASCII".into(),
            )
        }
    };
    let Some(token) = tokens.find(&presented) else {
        tracing::warn!(target: "tandem::audit", method = %req.method(), path = %req.uri().path(), "admin call with an unknown token refused");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "the token is not one of this node's admin tokens".into(),
        );
    };
    let needed = needed_scope(req.method(), req.uri().path());
    if token.scope < needed {
        tracing::warn!(target: "tandem::audit", caller = %token.name, method = %req.method(), path = %req.uri().path(), "admin call beyond the token's scope refused");
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} has the {} scope; {} {} needs the {} scope",
                token.name,
                token.scope.as_str(),
                req.method(),
                req.uri().path(),
                needed.as_str()
            ),
        );
    }
    let name = token.name.clone();
    run_audited(Some(name), req, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    fn raw(name: &str, scope: Scope, file: &Path) -> RawToken {
        RawToken {
            name: name.into(),
            scope,
            token_file: file.into(),
        }
    }

    #[test]
    fn tokens_are_read_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", "0123456789abcdef0123\n");
        let r = write(dir.path(), "r", "fedcba9876543210fedc");
        let tokens = validate_tokens(
            vec![raw("ops", Scope::Admin, &a), raw("view", Scope::Read, &r)],
            dir.path(),
        )
        .unwrap();
        let tokens = Tokens::new(tokens);
        assert_eq!(tokens.find("0123456789abcdef0123").unwrap().name, "ops");
        assert_eq!(tokens.find("fedcba9876543210fedc").unwrap().scope, Scope::Read);
        assert!(tokens.find("0123456789abcdef012").is_none());
        assert!(tokens.find("").is_none());
    }

    #[test]
    fn bad_tokens_are_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let short = write(dir.path(), "short", "abc");
        let good = write(dir.path(), "good", "0123456789abcdef0123");
        let same = write(dir.path(), "same", "0123456789abcdef0123");
        let spaced = write(dir.path(), "spaced", "0123456789 abcdef0123");
        let big = write(dir.path(), "big", &"x".repeat(ADMIN_TOKEN_FILE_MAX_BYTES as usize + 1));
        let e = validate_tokens(vec![raw("a", Scope::Admin, &short)], dir.path()).unwrap_err();
        assert_eq!(e.key, "admin_tokens[0].token_file");
        assert!(e.message.contains("ADMIN_TOKEN_MIN_BYTES"), "{e}");
        let e = validate_tokens(vec![raw("a", Scope::Admin, &big)], dir.path()).unwrap_err();
        assert!(e.message.contains("ADMIN_TOKEN_FILE_MAX_BYTES"), "{e}");
        let e = validate_tokens(vec![raw("a", Scope::Admin, &spaced)], dir.path()).unwrap_err();
        assert!(e.message.contains("printable"), "{e}");
        let e = validate_tokens(
            vec![raw("a", Scope::Admin, &good), raw("b", Scope::Read, &same)],
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(e.key, "admin_tokens[1].token_file");
        let e = validate_tokens(
            vec![raw("a", Scope::Admin, &good), raw("a", Scope::Read, &good)],
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(e.key, "admin_tokens[1].name");
        let e = validate_tokens(vec![raw("a b", Scope::Admin, &good)], dir.path()).unwrap_err();
        assert_eq!(e.key, "admin_tokens[0].name");
        let e = validate_tokens(vec![raw("a", Scope::Admin, &dir.path().join("none"))], dir.path()).unwrap_err();
        assert!(e.message.contains("cannot read"), "{e}");
        let many: Vec<RawToken> = (0..=ADMIN_TOKENS_MAX)
            .map(|i| raw(&format!("t{i}"), Scope::Read, &good))
            .collect();
        let e = validate_tokens(many, dir.path()).unwrap_err();
        assert!(e.message.contains("ADMIN_TOKENS_MAX"), "{e}");
    }

    #[test]
    fn reads_need_read_and_changes_need_admin() {
        assert_eq!(needed_scope(&Method::GET, "/v1/status"), Scope::Read);
        assert_eq!(needed_scope(&Method::POST, "/v1/switchover"), Scope::Admin);
        assert_eq!(needed_scope(&Method::PUT, "/v1/policies"), Scope::Admin);
        assert_eq!(needed_scope(&Method::POST, "/v1/db/query"), Scope::Read);
        assert_eq!(needed_scope(&Method::POST, "/v1/db/execute"), Scope::Admin);
        assert!(Scope::Read < Scope::Admin);
        assert!(open_route("/health/active"));
        assert!(!open_route("/v1/status"));
        assert!(!open_route("/metrics"));
    }
}
