//! Who may call what: the cluster's API token opens every endpoint, the join token only
//! the few an agent needs (register, heartbeat, its tasks, its reports, its leave) and the
//! ingress's route table (`GET /api/v1/endpoints`), the metrics token (if one is
//! configured) only `GET /metrics`, and `/healthz`
//! is open so load balancers and the monitor can probe without a secret, as are the
//! dashboard's files (`/ui/`), which hold no data.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
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
}

/// What the manager demands of callers.
#[derive(Clone, Debug)]
pub enum Auth {
    /// `--insecure-no-auth`: anyone who reaches the port controls the cluster.
    Off,
    On {
        api: Token,
        /// Agents join with this one; `None` lets them use the API token only.
        join: Option<Token>,
    },
}

/// What an endpoint needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Open,
    /// An agent's own endpoints: the join token or the API token.
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

    /// Lets the request through, or says why not (401: no or wrong token; 403: the
    /// join token on an operator's endpoint).
    pub fn check(&self, access: Access, headers: &HeaderMap) -> Result<(), AuthError> {
        self.check_with(access, headers, None)
    }

    /// `check`, with the read-only metrics token too (it opens `GET /metrics` only; 403
    /// anywhere else).
    pub fn check_with(
        &self,
        access: Access,
        headers: &HeaderMap,
        metrics: Option<&Token>,
    ) -> Result<(), AuthError> {
        let Auth::On { api, join } = self else {
            return Ok(());
        };
        if access == Access::Open {
            return Ok(());
        }
        let Some(presented) = bearer(headers) else {
            return Err(AuthError::unauthorized(
                "authentication required: send 'Authorization: Bearer <token>' (the cluster's API token, see `mycluster token`)",
            ));
        };
        // Both comparisons always run, so timing does not tell which token was near.
        let is_api = api.matches(presented);
        let is_join = join.as_ref().is_some_and(|j| j.matches(presented));
        let is_metrics = metrics.is_some_and(|m| m.matches(presented));
        match (is_api, is_join, is_metrics, access) {
            (true, _, _, _) => Ok(()),
            (false, true, _, Access::Agent) => Ok(()),
            (false, _, true, Access::Metrics) => Ok(()),
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
            join: Some(Token::parse("join-token-0123456789", "t").unwrap()),
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
}
