//! Who may call what: the cluster's API token opens every endpoint; the join token and a
//! worker's credential (`MCW1-…`) only the few an agent needs (register, heartbeat, its
//! tasks, its reports, its leave) and the ingress's route table (`GET
//! /api/v1/endpoints`) — which worker a credential speaks for, and what the join token
//! may still do, is the core's `identity`, checked by the handlers on the state; the
//! metrics token (if one is configured) only `GET /metrics`; and `/healthz` is open so
//! load balancers and the monitor can probe without a secret, as are the dashboard's
//! files (`/ui/`), which hold no data.
//!
//! The join token can be rotated while the manager runs (`JoinSlot`): a new one is
//! written to `<data-dir>/join-token.rotated` before it takes effect, so a restarted
//! manager keeps it.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use mycluster_client::credential;
use mycluster_core::identity::Caller;
use subtle::ConstantTimeEq;

use super::ApiError;

/// The shortest token accepted: a guessable token is no lock at all.
pub const MIN_TOKEN_LEN: usize = 16;

/// A secret compared in constant time.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// Checks a token read from a file or the environment (surrounding whitespace is
    /// trimmed, as files end with a newline). `what` names its source in the error.
    pub fn parse(text: &str, what: &str) -> Result<Token, String> {
        let text = text.trim();
        if text.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "{what} is too short: use at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"
            ));
        }
        // A token shaped like a worker's credential would be taken for one.
        if text.starts_with(mycluster_client::credential::PREFIX) {
            return Err(format!(
                "{what} must not start with {}: that is how workers' credentials start",
                mycluster_client::credential::PREFIX
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{what} must be printable ASCII without spaces (it travels in an HTTP header)"
            ));
        }
        Ok(Token(text.as_bytes().to_vec()))
    }

    /// Whether two configured tokens are the same secret.
    pub fn same_as(&self, other: &Token) -> bool {
        self.matches(&other.0)
    }

    /// The secret itself, to present it to another party (the manager to its agents,
    /// for their logs): printable ASCII, checked by `parse`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    fn matches(&self, presented: &[u8]) -> bool {
        // Lengths are not secret; the bytes are compared without an early exit.
        self.0.ct_eq(presented).into()
    }

    /// A new random token: 32 bytes in hex (a rotated join token).
    pub fn generate() -> Token {
        let bytes: [u8; 32] = rand::random();
        Token(
            bytes
                .iter()
                .flat_map(|b| {
                    let hex = b"0123456789abcdef";
                    [hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]
                })
                .collect(),
        )
    }
}

/// The join token as it is now: shared by every clone of the manager's `Auth`, so a
/// rotation (`POST /api/v1/cluster/join-token/rotate`) takes effect at once everywhere.
#[derive(Clone, Default)]
pub struct JoinSlot {
    token: Arc<RwLock<Option<Token>>>,
    /// Where a rotated token is written before it takes effect (`None`: it lives only
    /// as long as the manager; tests).
    persist: Option<PathBuf>,
}

impl std::fmt::Debug for JoinSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinSlot")
            .field("set", &self.get().is_some())
            .field("persist", &self.persist)
            .finish()
    }
}

impl From<Option<Token>> for JoinSlot {
    fn from(token: Option<Token>) -> JoinSlot {
        JoinSlot {
            token: Arc::new(RwLock::new(token)),
            persist: None,
        }
    }
}

/// Why a rotated join token could not be kept.
#[derive(Debug, thiserror::Error)]
#[error("cannot save the new join token in {path}: {source}; the old one stays in force")]
pub struct RotateError {
    path: String,
    source: std::io::Error,
}

impl JoinSlot {
    /// The same slot, writing a rotated token to `path` (mode 0600) before using it.
    pub fn persisted_at(mut self, path: PathBuf) -> JoinSlot {
        self.persist = Some(path);
        self
    }

    /// The join token now (`None`: agents join with the API token).
    pub fn get(&self) -> Option<Token> {
        // A poisoned lock still holds a whole token: it is only ever replaced whole.
        match self.token.read() {
            Ok(token) => token.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the join token with `token`, saved first (so a restart keeps what the
    /// operator was told).
    pub fn rotate(&self, token: Token) -> Result<(), RotateError> {
        // Held across the write: two rotations at once leave the file and the token in
        // force the same.
        let mut slot = match self.token.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(path) = &self.persist {
            mycluster_tls::write_private(path, &format!("{}\n", token.as_str()), 0o600).map_err(
                |source| RotateError {
                    path: path.display().to_string(),
                    source,
                },
            )?;
        }
        *slot = Some(token);
        Ok(())
    }
}

/// What the manager demands of callers.
#[derive(Clone, Debug)]
pub enum Auth {
    /// `--insecure-no-auth`: anyone who reaches the port controls the cluster.
    Off,
    On {
        api: Token,
        /// Agents join with this one; none lets them use the API token only.
        join: JoinSlot,
    },
}

/// What an endpoint needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Open,
    /// An agent's endpoints (register, its worker's heartbeat, tasks, reports, leave)
    /// and the ingress's route table: the API token, the join token or a worker's
    /// credential (which of them may act for which worker: the handler, by `identity`).
    Agent,
    /// `GET /metrics`: the metrics token or the API token.
    Metrics,
    /// Everything else: the API token.
    Admin,
}

/// The access an endpoint needs, from its method and path (before routing, so that an
/// unknown path without a token gets 401, not a map of what exists).
pub fn access_for(method: &Method, path: &str) -> Access {
    if path == "/healthz" {
        return Access::Open;
    }
    if path == "/metrics" && method == Method::GET {
        return Access::Metrics;
    }
    // The dashboard's files hold no data: the page signs in with the API token itself.
    if (method == Method::GET || method == Method::HEAD) && super::ui::is_dashboard(path) {
        return Access::Open;
    }
    // The ingress's route table: an ingress runs beside an agent, with its join token.
    if path == "/api/v1/endpoints" && method == Method::GET {
        return Access::Agent;
    }
    let agent = match path.strip_prefix("/api/v1/workers") {
        Some("") => method == Method::POST,
        Some(rest) => match rest.strip_prefix('/').and_then(|r| r.split_once('/')) {
            Some((name, action)) if !name.is_empty() => matches!(
                (method.as_str(), action),
                ("POST", "heartbeat") | ("GET", "tasks") | ("POST", "status") | ("POST", "leave")
            ),
            _ => false,
        },
        None => false,
    };
    if agent {
        Access::Agent
    } else {
        Access::Admin
    }
}

impl Auth {
    pub fn is_off(&self) -> bool {
        matches!(self, Auth::Off)
    }

    /// The join token now, if authentication is on and the cluster has one.
    pub fn join_token(&self) -> Option<Token> {
        match self {
            Auth::Off => None,
            Auth::On { join, .. } => join.get(),
        }
    }

    /// Lets the request through, or says why not (401: no or wrong token; 403: the
    /// join token on an operator's endpoint).
    pub fn check(&self, access: Access, headers: &HeaderMap) -> Result<Caller, AuthError> {
        self.check_with(access, headers, None)
    }

    /// `check`, with the read-only metrics token too (it opens `GET /metrics` only; 403
    /// anywhere else). Answers who is calling, for the handlers of agents' endpoints
    /// (`Caller::Open` without authentication, or on an open endpoint).
    pub fn check_with(
        &self,
        access: Access,
        headers: &HeaderMap,
        metrics: Option<&Token>,
    ) -> Result<Caller, AuthError> {
        let Auth::On { api, join } = self else {
            return Ok(Caller::Open);
        };
        if access == Access::Open {
            return Ok(Caller::Open);
        }
        let Some(presented) = bearer(headers) else {
            return Err(AuthError::unauthorized(
                "authentication required: send 'Authorization: Bearer <token>' (the cluster's API token, see `mycluster token`)",
            ));
        };
        // A worker's credential is told by its shape; which worker has it is the
        // handler's question (the manager keeps only hashes).
        if let Some(text) = std::str::from_utf8(presented)
            .ok()
            .filter(|t| credential::is_credential(t))
        {
            return match access {
                Access::Agent => Ok(Caller::Credential(credential::hash(text))),
                _ => Err(AuthError(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a worker's credential only lets its agent register, beat and report (and an ingress read its routes): use the cluster's API token",
                ))),
            };
        }
        // Every comparison always runs, so timing does not tell which token was near.
        let is_api = api.matches(presented);
        let is_join = join.get().is_some_and(|j| j.matches(presented));
        let is_metrics = metrics.is_some_and(|m| m.matches(presented));
        match (is_api, is_join, is_metrics, access) {
            (true, _, _, _) => Ok(Caller::Operator),
            (false, true, _, Access::Agent) => Ok(Caller::JoinToken),
            (false, _, true, Access::Metrics) => Ok(Caller::Operator),
            (false, true, _, _) => Err(AuthError(ApiError::new(
                StatusCode::FORBIDDEN,
                "the join token only lets agents register, beat and report (and an ingress read its routes): use the cluster's API token",
            ))),
            (false, false, true, _) => Err(AuthError(ApiError::new(
                StatusCode::FORBIDDEN,
                "the metrics token only reads GET /metrics: use the cluster's API token",
            ))),
            (false, false, false, _) => Err(AuthError::unauthorized("invalid token")),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// A refusal, answered with the error document (and, for 401, the challenge header).
#[derive(Debug)]
pub struct AuthError(pub ApiError);

impl AuthError {
    fn unauthorized(message: &str) -> AuthError {
        AuthError(ApiError::new(StatusCode::UNAUTHORIZED, message))
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let unauthorized = self.0.status == StatusCode::UNAUTHORIZED;
        let mut response = self.0.into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mycluster\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn auth() -> Auth {
        Auth::On {
            api: Token::parse("api-token-0123456789", "t").unwrap(),
            join: Some(Token::parse("join-token-0123456789", "t").unwrap()).into(),
        }
    }

    #[test]
    fn endpoints_are_classified() {
        use Access::*;
        let cases = [
            (Method::GET, "/healthz", Open),
            (Method::GET, "/api/v1/stats", Admin),
            (Method::GET, "/api/v1/workers", Admin),
            (Method::POST, "/api/v1/workers", Agent),
            (Method::POST, "/api/v1/workers/w1/heartbeat", Agent),
            (Method::POST, "/api/v1/workers/w1/leave", Agent),
            (Method::GET, "/api/v1/workers/w1/tasks", Agent),
            (Method::POST, "/api/v1/workers/w1/status", Agent),
            (Method::POST, "/api/v1/workers/w1/down", Admin),
            (Method::GET, "/api/v1/workers/w1", Admin),
            (Method::POST, "/api/v1/workers//status", Admin),
            (Method::DELETE, "/api/v1/workers/w1/tasks", Admin),
            (Method::GET, "/api/v1/workersx", Admin),
            (Method::GET, "/nowhere", Admin),
            (Method::GET, "/metrics", Metrics),
            (Method::POST, "/metrics", Admin),
            (Method::GET, "/metrics/x", Admin),
            (Method::GET, "/", Open),
            (Method::GET, "/ui", Open),
            (Method::GET, "/ui/", Open),
            (Method::HEAD, "/ui/app.js", Open),
            (Method::POST, "/ui/", Admin),
            (Method::GET, "/uix", Admin),
        ];
        for (method, path, want) in cases {
            assert_eq!(access_for(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn tokens_open_what_they_should() {
        let auth = auth();
        let status = |access, value: &str| {
            auth.check(access, &headers(value))
                .err()
                .map(|e| e.0.status.as_u16())
        };
        assert_eq!(status(Access::Admin, "Bearer api-token-0123456789"), None);
        assert_eq!(status(Access::Admin, "bearer api-token-0123456789"), None);
        assert_eq!(status(Access::Agent, "Bearer api-token-0123456789"), None);
        assert_eq!(status(Access::Agent, "Bearer join-token-0123456789"), None);
        assert_eq!(
            status(Access::Admin, "Bearer join-token-0123456789"),
            Some(403)
        );
        assert_eq!(
            status(Access::Admin, "Bearer api-token-012345678"),
            Some(401)
        );
        assert_eq!(
            status(Access::Agent, "Basic api-token-0123456789"),
            Some(401)
        );
        assert_eq!(status(Access::Admin, "Bearer "), Some(401));
        assert!(auth.check(Access::Admin, &HeaderMap::new()).is_err());
        assert!(auth.check(Access::Open, &HeaderMap::new()).is_ok());
        assert!(Auth::Off.check(Access::Admin, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn the_metrics_token_reads_metrics_only() {
        let auth = auth();
        let metrics = Token::parse("metrics-token-0123456789", "t").unwrap();
        let status = |access, value: &str| {
            auth.check_with(access, &headers(value), Some(&metrics))
                .err()
                .map(|e| e.0.status.as_u16())
        };
        assert_eq!(
            status(Access::Metrics, "Bearer metrics-token-0123456789"),
            None
        );
        assert_eq!(status(Access::Metrics, "Bearer api-token-0123456789"), None);
        assert_eq!(
            status(Access::Admin, "Bearer metrics-token-0123456789"),
            Some(403)
        );
        assert_eq!(
            status(Access::Agent, "Bearer metrics-token-0123456789"),
            Some(403)
        );
        assert_eq!(
            status(Access::Metrics, "Bearer join-token-0123456789"),
            Some(403)
        );
        assert_eq!(
            status(Access::Metrics, "Bearer wrong-token-0123456789"),
            Some(401)
        );
        assert!(auth
            .check_with(Access::Metrics, &HeaderMap::new(), Some(&metrics))
            .is_err());
        // Without a metrics token configured, it is just a wrong token.
        assert_eq!(
            auth.check(Access::Metrics, &headers("Bearer metrics-token-0123456789"))
                .err()
                .map(|e| e.0.status.as_u16()),
            Some(401)
        );
    }

    #[test]
    fn weak_tokens_are_refused() {
        assert!(Token::parse("short", "t").is_err());
        assert!(Token::parse("has a space in it, long", "t").is_err());
        assert!(Token::parse("  padded-token-0123456789\n", "t").is_ok());
    }

    #[test]
    fn a_credential_opens_the_agents_endpoints_only_and_says_whose_it_is() {
        let auth = auth();
        let secret = credential::generate();
        let bearer = format!("Bearer {secret}");
        assert_eq!(
            auth.check(Access::Agent, &headers(&bearer)).ok(),
            Some(Caller::Credential(credential::hash(&secret)))
        );
        let refused = auth.check(Access::Admin, &headers(&bearer)).err();
        assert_eq!(refused.map(|e| e.0.status.as_u16()), Some(403));
        assert_eq!(
            auth.check(Access::Agent, &headers("Bearer join-token-0123456789"))
                .ok(),
            Some(Caller::JoinToken)
        );
        assert_eq!(
            auth.check(Access::Agent, &headers("Bearer api-token-0123456789"))
                .ok(),
            Some(Caller::Operator)
        );
        assert_eq!(
            Auth::Off.check(Access::Agent, &HeaderMap::new()).ok(),
            Some(Caller::Open)
        );
    }

    #[test]
    fn a_rotated_join_token_replaces_the_old_one_and_is_saved_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("join-token.rotated");
        let slot = JoinSlot::from(Some(Token::parse("join-token-0123456789", "t").unwrap()))
            .persisted_at(path.clone());
        let auth = Auth::On {
            api: Token::parse("api-token-0123456789", "t").unwrap(),
            join: slot.clone(),
        };
        let new = Token::generate();
        assert_eq!(new.as_str().len(), 64);
        slot.rotate(new.clone()).unwrap();
        let status = |value: &str| {
            auth.check(Access::Agent, &headers(value))
                .err()
                .map(|e| e.0.status.as_u16())
        };
        assert_eq!(status("Bearer join-token-0123456789"), Some(401));
        assert_eq!(status(&format!("Bearer {}", new.as_str())), None);
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), new.as_str());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A slot that cannot save keeps the old token (its "directory" is a file).
        let stuck = JoinSlot::from(Some(new.clone())).persisted_at(path.join("join-token.rotated"));
        assert!(stuck.rotate(Token::generate()).is_err());
        assert!(stuck.get().is_some_and(|t| t.same_as(&new)));
    }
}
