//! The cluster's own documents, for operators and `setup`: the CA's certificate
//! (`GET /api/v1/cluster/ca`, PEM text, what `curl --cacert` wants) and the join token a
//! new host needs (`GET /api/v1/cluster/join-token`, and its rotation). All want the API
//! token.

use mycluster_core::wire::{ErrorDoc, JoinTokenDoc};
use reqwest::Method;

use crate::{Client, ClientError};

/// What every PEM certificate starts with: an answer without it is not the CA.
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

impl Client {
    /// `GET /api/v1/cluster/ca`: the cluster CA's certificate, PEM. The one endpoint
    /// that answers text, not JSON (errors are the usual JSON document).
    pub async fn cluster_ca(&self) -> Result<String, ClientError> {
        self.check_trust()?;
        let url = format!("{}/api/v1/cluster/ca", self.base);
        let mut request = self.http.get(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let unreachable = |e: reqwest::Error| crate::send_error(&self.base, &e);
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if !status.is_success() {
            let message = serde_json::from_str::<ErrorDoc>(&text)
                .map(|error| error.message)
                .unwrap_or_else(|_| status.canonical_reason().unwrap_or("error").to_string());
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        if !text.contains(PEM_CERTIFICATE) {
            return Err(ClientError::Decode {
                url,
                reason: "the answer is no PEM certificate".into(),
            });
        }
        Ok(text)
    }

    /// `GET /api/v1/cluster/join-token`: `MCJT1-<CA digest>-<secret>`, for `mycluster
    /// join --token` on another host.
    pub async fn join_token(&self) -> Result<JoinTokenDoc, ClientError> {
        self.request(Method::GET, "/api/v1/cluster/join-token")
            .await
    }

    /// `POST /api/v1/cluster/join-token/rotate`: a new secret; the old one is refused
    /// from then on (registered workers keep working with their credentials).
    pub async fn rotate_join_token(&self) -> Result<JoinTokenDoc, ClientError> {
        self.request(Method::POST, "/api/v1/cluster/join-token/rotate")
            .await
    }
}
