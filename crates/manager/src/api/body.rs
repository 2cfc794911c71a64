//! Reading a JSON request body with the checks every write endpoint needs: a JSON
//! Content-Type (415), a size limit (413) and well-formed JSON (400) — each with a
//! message saying which.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use super::AppState;

/// A JSON request body, read within the limits but not yet parsed: the agents' reports
/// are parsed straight into their types (building a generic JSON value first doubled
/// the cost of the manager's most frequent write).
pub struct JsonBody(axum::body::Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        check_content_type(req.headers())?;
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than the limit of {limit} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        // A client that trickles its body (or never sends it) holds a connection and a
        // task: it gets the request's own deadline, not the longer one of a waiting POST.
        let timeout = state.config.request_timeout;
        let read = tokio::time::timeout(timeout, axum::body::to_bytes(req.into_body(), limit));
        let bytes = read
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s",
                        timeout.as_secs()
                    ),
                )
            })?
            .map_err(|e| {
                if std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                {
                    too_large()
                } else {
                    ApiError::bad_request(format!("could not read the request body: {e}"))
                }
            })?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "request body is empty: a JSON object is required",
            ));
        }
        Ok(JsonBody(bytes))
    }
}

impl JsonBody {
    /// The body as a generic JSON value (checked field by field by the caller).
    pub fn value(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.0).map_err(malformed)
    }

    /// Decodes into a typed request (the agent-facing endpoints), with serde's message.
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        let first = self.0.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            // Malformed JSON says so; well-formed JSON that is not an object says that.
            self.value()?;
            return Err(ApiError::bad_request("request body must be a JSON object"));
        }
        serde_json::from_slice(&self.0).map_err(|e| {
            if e.is_data() {
                ApiError::bad_request(format!("invalid request: {e}"))
            } else {
                malformed(e)
            }
        })
    }
}

fn malformed(e: serde_json::Error) -> ApiError {
    ApiError::bad_request(format!("malformed JSON: {e}"))
}

fn check_content_type(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let unsupported = |got: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, got {got}"),
        )
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported("none"));
    };
    let text = value
        .to_str()
        .map_err(|_| unsupported("an unreadable value"))?;
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(unsupported(&format!("'{}'", text.escape_debug())))
    }
}
