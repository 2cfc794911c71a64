//! The cluster's join token and CA for operators (API token only): `GET
//! /api/v1/cluster/join-token` shows the join token as a new host takes it
//! (`MCJT1-<CA digest>-<secret>` when the manager serves TLS, else the bare secret),
//! `POST /api/v1/cluster/join-token/rotate` replaces its secret — registered workers keep
//! working, as they speak with their own credentials — and `GET /api/v1/cluster/ca` is
//! the CA certificate, for `curl --cacert`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mycluster_core::wire::JoinTokenDoc;

use super::auth::{Auth, JoinSlot, Token};
use super::{ApiError, AppState};

/// The join token of a manager that has one.
fn slot(app: &AppState) -> Result<&JoinSlot, ApiError> {
    match &app.config.auth {
        Auth::On { join, .. } => Ok(join),
        Auth::Off => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this manager runs without authentication (--insecure-no-auth): there is no join \
             token; agents join without one",
        )),
    }
}

/// The document of `token` as an operator hands it to a new host.
fn doc(app: &AppState, token: &Token) -> JoinTokenDoc {
    match &app.config.ca {
        Some(ca) => JoinTokenDoc {
            token: mycluster_tls::JoinToken {
                ca: ca.pin,
                secret: token.as_str().to_string(),
            }
            .to_string(),
            ca_sha256: Some(ca.pin.to_string()),
        },
        None => JoinTokenDoc {
            token: token.as_str().to_string(),
            ca_sha256: None,
        },
    }
}

/// `GET /api/v1/cluster/join-token`.
pub async fn get(State(app): State<AppState>) -> Result<Json<JoinTokenDoc>, ApiError> {
    let token = slot(&app)?.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this manager has no join token: agents join with the API token; rotate to make one \
             (POST /api/v1/cluster/join-token/rotate)",
        )
    })?;
    Ok(Json(doc(&app, &token)))
}

/// `POST /api/v1/cluster/join-token/rotate`: a new secret (32 random bytes, hex), saved
/// in the data dir before it takes effect. The old join token is refused from now on;
/// workers that registered keep working with their credentials.
pub async fn rotate(State(app): State<AppState>) -> Result<Json<JoinTokenDoc>, ApiError> {
    let slot = slot(&app)?.clone();
    let token = Token::generate();
    let saved = token.clone();
    tokio::task::spawn_blocking(move || slot.rotate(saved))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the rotation did not finish ({e}): the old join token may still be in force"
                ),
            )
        })?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    tracing::warn!(
        "join token rotated: the old one is refused from now on; registered workers keep working"
    );
    Ok(Json(doc(&app, &token)))
}

/// `GET /api/v1/cluster/ca`: the cluster CA's certificate (PEM).
pub async fn ca(State(app): State<AppState>) -> Result<Response, ApiError> {
    let ca = app.config.ca.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this manager serves no TLS (--insecure-no-tls): there is no cluster CA",
        )
    })?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        ca.pem.to_string(),
    )
        .into_response())
}
