//! API errors: every failure is `{"message": "...", "code": N}` with the matching HTTP
//! status, so clients and people read the same thing.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mycluster_core::commands::CommandError;
use mycluster_core::wire::ErrorDoc;
use mycluster_core::SpecError;
use mycluster_store::StoreError;

use crate::cluster::MutateError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorDoc {
            message: self.message,
            code: self.status.as_u16(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE
            || self.status == StatusCode::REQUEST_TIMEOUT
        {
            // The unread body is still on the wire: the connection cannot be reused.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        let status = match e {
            CommandError::ServiceNotFound(_)
            | CommandError::WorkerNotFound(_)
            | CommandError::VolumeNotFound(_) => StatusCode::NOT_FOUND,
            CommandError::Invalid(_) => StatusCode::BAD_REQUEST,
            CommandError::Conflict(_) | CommandError::Limit(_) => StatusCode::CONFLICT,
            CommandError::Forbidden(_) => StatusCode::FORBIDDEN,
            CommandError::Revoked(_) => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        // The store's state is logged when it changes (see `Cluster::set_health`), not
        // once per refused request.
        tracing::debug!("store: {e}");
        let message = match e {
            // It may work in a moment (and a change in doubt may still land).
            StoreError::Unavailable(_) => format!("the change was not saved, try again: {e}"),
            // It will not, until an operator acts: the message says how.
            other => format!("the change was not saved: {other}"),
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl From<MutateError> for ApiError {
    fn from(e: MutateError) -> ApiError {
        match e {
            MutateError::Rejected(e) => e.into(),
            MutateError::Store(e) => e.into(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> ApiError {
        ApiError::bad_request(format!("bad path: {}", e.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::bad_request(format!("bad query string: {}", e.body_text()))
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}
