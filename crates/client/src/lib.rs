//! A typed client of the MyCluster REST API, used by the CLI (and by agents and the
//! monitor). Errors say which manager could not be reached, or what it answered.
//!
//! Where to start reading: `Client::request` (one call: the token, the timeout, the
//! error document), then one method per endpoint, each returning the core's wire type.

mod cluster;
pub mod credential;
mod logs;

use std::time::Duration;

pub use events::{EventQuery, EventStream};

mod events;
pub use logs::{AgentLogs, ServiceLogs};

use mycluster_core::wire::{
    AssignedTasks, DownDoc, DownManyDoc, DownRequest, ErrorDoc, HealthDoc, HeartbeatDoc,
    LabelRequest, RebalanceDoc, Registration, ReportDoc, ReseedDoc, RolloutDoc, RouteTable,
    ServiceDoc, ServiceEndpoints, ServicePatchRequest, ServiceRequest, StateDoc, StatsDoc,
    StatusReport, TaskDoc, TaskReport, VersionsDoc, VolumeDoc, WorkerDoc,
};
use mycluster_tls::{JoinToken, Pin};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the manager at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server's certificate is not from the cluster CA this client trusts: another
    /// cluster's manager, or someone in between. Nothing was sent.
    #[error("refused the server at {url}: {reason}")]
    Untrusted { url: String, reason: String },
    /// The manager answered with an error document.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the manager at {url}: {reason}")]
    Decode { url: String, reason: String },
    /// What answered is not a MyCluster manager (a web server, a proxy's error page).
    #[error("{url} does not look like a MyCluster manager (HTTP {status}, {content_type})")]
    NotManager {
        url: String,
        status: u16,
        content_type: String,
    },
    #[error("invalid manager URL '{0}': use https://host:port (or http:// on this host)")]
    BadUrl(String),
    /// An `https://` manager, and nothing to check its certificate against.
    /// A token for a cluster that speaks TLS, to be sent to another host in the clear.
    #[error("refusing to send the token to {0} in the clear: use https://HOST:PORT (the manager's TLS port); plain http:// is for the manager's own host only")]
    Cleartext(String),
    #[error("{0} speaks HTTPS, and this client has no CA to check it against: give a join token (MCJT1-…, `mycluster token --join`), the CA's digest (--ca-sha256, MYCLUSTER_CA_SHA256) or its certificate (--cacert, `mycluster token --ca`)")]
    NoTrust(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer`; `None` for a manager without authentication.
    token: Option<String>,
    /// What an `https://` manager's certificate must chain to (see `mycluster_tls`).
    pin: Option<Pin>,
    timeout: Duration,
    http2: bool,
}

impl Client {
    /// A client of the manager at `base` (e.g. `http://localhost:5000`).
    pub fn new(base: &str, timeout: Duration) -> Result<Client, ClientError> {
        Self::build(base, timeout, false)
    }

    /// The same over cleartext HTTP/2: every request of this client (an agent's
    /// heartbeats, long-poll and reports) shares one connection, so a manager serves
    /// thousands of agents with one file descriptor each.
    pub fn new_http2(base: &str, timeout: Duration) -> Result<Client, ClientError> {
        Self::build(base, timeout, true)
    }

    fn build(base: &str, timeout: Duration, http2: bool) -> Result<Client, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        let valid = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
        if !valid {
            return Err(ClientError::BadUrl(base));
        }
        let http = Self::http(&base, timeout, http2, None)?;
        Ok(Client {
            base,
            http,
            token: None,
            pin: None,
            timeout,
            http2,
        })
    }

    fn http(
        base: &str,
        timeout: Duration,
        http2: bool,
        pin: Option<Pin>,
    ) -> Result<reqwest::Client, ClientError> {
        let mut builder = http_builder(base, pin)?
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            // Below the manager's keep-alive (10 s), so a pooled connection is not
            // reused just as the manager closes it.
            .pool_idle_timeout(Duration::from_secs(5));
        if http2 {
            builder = builder.http2_prior_knowledge();
        }
        builder
            .build()
            .map_err(|e| ClientError::BadUrl(format!("{base}: {e}")))
    }

    /// The same client, presenting `token` (the API token, or an agent's join token).
    /// A join token of the `MCJT1-<digest>-<secret>` form presents its secret, and pins
    /// the CA it names unless the client was given one already.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        let token = token.filter(|t| !t.trim().is_empty());
        match token.as_deref().map(JoinToken::parse) {
            Some(Ok(join)) => {
                self.token = Some(join.secret);
                if self.pin.is_none() {
                    // Cannot fail: the same builder already built once, without a pin.
                    if let Ok(pinned) = self.clone().with_pin(Some(join.ca)) {
                        self = pinned;
                    }
                }
            }
            _ => self.token = token,
        }
        self
    }

    /// The same client, trusting an `https://` manager whose certificate the CA `pin`
    /// names signed (`None`: none, as before).
    pub fn with_pin(mut self, pin: Option<Pin>) -> Result<Client, ClientError> {
        if pin != self.pin {
            self.http = Self::http(&self.base, self.timeout, self.http2, pin)?;
            self.pin = pin;
        }
        Ok(self)
    }

    /// Whether the manager is reached over TLS.
    fn is_https(&self) -> bool {
        self.base.starts_with("https://")
    }

    /// Refused before any byte is sent: an `https://` manager with nothing to trust, and
    /// a token for a cluster that speaks TLS (this client has its CA) sent in the clear
    /// to another host.
    fn check_trust(&self) -> Result<(), ClientError> {
        if self.is_https() && self.pin.is_none() {
            return Err(ClientError::NoTrust(self.base.clone()));
        }
        if !self.is_https()
            && self.pin.is_some()
            && self.token.is_some()
            && !is_loopback(&self.base)
        {
            return Err(ClientError::Cleartext(self.base.clone()));
        }
        Ok(())
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request without a body and decodes a JSON answer; an error status becomes
    /// `Api` with the manager's message.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, ClientError> {
        self.send(method, path, NO_BODY, None, &[], &[]).await
    }

    /// The same, with `body` (a request type of `mycluster_core::wire`) as its JSON body.
    pub async fn request_with<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(method, path, Some(body), None, &[], &[]).await
    }

    /// Sends a request and decodes its JSON answer. An error status becomes `Api` with
    /// the manager's message, except the statuses in `accept`, whose answer is decoded
    /// like a success's.
    async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
        headers: &[(&str, &str)],
        accept: &[StatusCode],
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        self.check_trust()?;
        let mut request = self.http.request(method, &url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request
            .send()
            .await
            .map_err(|e| send_error(&self.base, &e))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type")
            .to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                reason: describe(&e),
            })?;
        let not_manager = || ClientError::NotManager {
            url: self.base.clone(),
            status: status.as_u16(),
            content_type: content_type.clone(),
        };
        // Every answer of a manager is JSON, errors included — but for the few its HTTP
        // layer gives without a body (headers far too large): those say their status.
        if !content_type.starts_with("application/json") {
            if bytes.is_empty() && !status.is_success() {
                return Err(ClientError::Api {
                    status: status.as_u16(),
                    message: status.canonical_reason().unwrap_or("error").to_string(),
                });
            }
            return Err(not_manager());
        }
        if !status.is_success() && !accept.contains(&status) {
            return Err(match serde_json::from_slice::<ErrorDoc>(&bytes) {
                Ok(error) if error.code == status.as_u16() => ClientError::Api {
                    status: status.as_u16(),
                    message: error.message,
                },
                _ => not_manager(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: url.clone(),
            reason: e.to_string(),
        })
    }

    /// `GET /healthz`: the manager's status, cluster name and store. A degraded manager
    /// answers 503 with the same document: that is an answer too, not an error.
    pub async fn health(&self) -> Result<HealthDoc, ClientError> {
        self.send(
            Method::GET,
            "/healthz",
            NO_BODY,
            None,
            &[],
            &[StatusCode::SERVICE_UNAVAILABLE],
        )
        .await
    }

    /// `POST /api/v1/store/reseed`: writes the manager's state back into its store.
    pub async fn reseed(&self) -> Result<ReseedDoc, ClientError> {
        self.request(Method::POST, "/api/v1/store/reseed").await
    }

    pub async fn stats(&self) -> Result<StatsDoc, ClientError> {
        self.request(Method::GET, "/api/v1/stats").await
    }

    pub async fn state(&self) -> Result<StateDoc, ClientError> {
        self.request(Method::GET, "/api/v1/state").await
    }

    /// Creates the service, or updates it if it exists (`POST /api/v1/service`).
    pub async fn put_service(&self, body: &ServiceRequest) -> Result<StateDoc, ClientError> {
        self.request_with(Method::POST, "/api/v1/service", body)
            .await
    }

    /// Creates or updates a service without waiting for its tasks, and without the
    /// state document in the answer (`?wait=0`, `Prefer: return=minimal`): for tools
    /// that submit many.
    pub async fn submit_service(&self, body: &ServiceRequest) -> Result<ServiceDoc, ClientError> {
        self.send(
            Method::POST,
            "/api/v1/service?wait=0",
            Some(body),
            None,
            &[("Prefer", "return=minimal")],
            &[],
        )
        .await
    }

    pub async fn service(&self, name: &str) -> Result<ServiceDoc, ClientError> {
        self.request(Method::GET, &format!("/api/v1/service/{}", segment(name)))
            .await
    }

    pub async fn services(&self) -> Result<Vec<ServiceDoc>, ClientError> {
        self.request(Method::GET, "/api/v1/services").await
    }

    /// Changes only the given fields of a service.
    pub async fn patch_service(
        &self,
        name: &str,
        image: Option<&str>,
        replicas: Option<u32>,
    ) -> Result<ServiceDoc, ClientError> {
        let body = ServicePatchRequest {
            image: image.map(str::to_string),
            replicas,
            ..ServicePatchRequest::default()
        };
        self.patch_service_with(name, &body).await
    }

    /// Changes the fields `patch` gives (`PATCH /api/v1/service/<name>`).
    pub async fn patch_service_with(
        &self,
        name: &str,
        patch: &ServicePatchRequest,
    ) -> Result<ServiceDoc, ClientError> {
        let path = format!("/api/v1/service/{}", segment(name));
        self.request_with(Method::PATCH, &path, patch).await
    }

    /// The versions of a service's spec the manager keeps, newest first.
    pub async fn versions(&self, name: &str) -> Result<VersionsDoc, ClientError> {
        let path = format!("/api/v1/service/{}/versions", segment(name));
        self.request(Method::GET, &path).await
    }

    /// Where a service's replicas are reached now, per target port.
    pub async fn service_endpoints(&self, name: &str) -> Result<ServiceEndpoints, ClientError> {
        let path = format!("/api/v1/service/{}/endpoints", segment(name));
        self.request(Method::GET, &path).await
    }

    /// The ingress's route table; with `version` (one answered before), waits up to
    /// `wait` for a table that differs from it.
    pub async fn route_table(
        &self,
        version: Option<&str>,
        wait: Duration,
    ) -> Result<RouteTable, ClientError> {
        let path = match version {
            Some(version) => format!(
                "/api/v1/endpoints?version={}&wait={}ms",
                segment(version),
                wait.as_millis()
            ),
            None => "/api/v1/endpoints".to_string(),
        };
        // The answer may take the whole wait: allow for it.
        self.send(
            Method::GET,
            &path,
            NO_BODY,
            Some(wait + Duration::from_secs(15)),
            &[],
            &[],
        )
        .await
    }

    /// Where a service's latest rollout stands.
    pub async fn rollout(&self, name: &str) -> Result<RolloutDoc, ClientError> {
        let path = format!("/api/v1/service/{}/rollout", segment(name));
        self.request(Method::GET, &path).await
    }

    /// Rolls the previous version of a service out again; answers the rollout started.
    pub async fn rollback(&self, name: &str) -> Result<RolloutDoc, ClientError> {
        let path = format!("/api/v1/service/{}/rollback", segment(name));
        self.request(Method::POST, &path).await
    }

    /// Replaces every task of a service, as a rollout; answers the rollout started.
    pub async fn restart(&self, name: &str) -> Result<RolloutDoc, ClientError> {
        let path = format!("/api/v1/service/{}/restart", segment(name));
        self.request(Method::POST, &path).await
    }

    pub async fn delete_service(&self, name: &str) -> Result<ServiceDoc, ClientError> {
        self.request(
            Method::DELETE,
            &format!("/api/v1/service/{}", segment(name)),
        )
        .await
    }

    /// Removes a service; with `volumes`, its volumes too (else they are kept). The
    /// answer names them (`kept_volumes`, `removed_volumes`).
    pub async fn delete_service_with(
        &self,
        name: &str,
        volumes: bool,
    ) -> Result<ServiceDoc, ClientError> {
        let query = if volumes { "?volumes=true" } else { "" };
        let path = format!("/api/v1/service/{}{query}", segment(name));
        self.request(Method::DELETE, &path).await
    }

    /// Drains a worker (`drain`), or activates it again.
    pub async fn set_drain(&self, worker: &str, drain: bool) -> Result<WorkerDoc, ClientError> {
        let action = if drain { "drain" } else { "activate" };
        let path = format!("/api/v1/workers/{}/{action}", segment(worker));
        self.request(Method::POST, &path).await
    }

    /// Removes a worker that is down, or drained and empty; answers it as it was.
    pub async fn remove_worker(&self, worker: &str) -> Result<WorkerDoc, ClientError> {
        let path = format!("/api/v1/workers/{}", segment(worker));
        self.request(Method::DELETE, &path).await
    }

    /// Sets and removes a worker's operator labels; answers the worker.
    pub async fn label_worker(
        &self,
        worker: &str,
        labels: &LabelRequest,
    ) -> Result<WorkerDoc, ClientError> {
        let path = format!("/api/v1/workers/{}/labels", segment(worker));
        self.request_with(Method::PATCH, &path, labels).await
    }

    /// Rebalances one service (or every one): the moves made now, or that would be.
    pub async fn rebalance(
        &self,
        service: Option<&str>,
        dry_run: bool,
    ) -> Result<RebalanceDoc, ClientError> {
        let path = match service {
            Some(name) => format!("/api/v1/service/{}/rebalance", segment(name)),
            None => "/api/v1/rebalance".to_string(),
        };
        let query = if dry_run { "?dry_run=true" } else { "" };
        self.request(Method::POST, &format!("{path}{query}")).await
    }

    /// Every volume record.
    pub async fn volumes(&self) -> Result<Vec<VolumeDoc>, ClientError> {
        self.request(Method::GET, "/api/v1/volumes").await
    }

    /// Marks a volume for removal; answers its record.
    pub async fn remove_volume(&self, name: &str) -> Result<VolumeDoc, ClientError> {
        let path = format!("/api/v1/volumes/{}", segment(name));
        self.request(Method::DELETE, &path).await
    }

    pub async fn workers(&self) -> Result<Vec<WorkerDoc>, ClientError> {
        self.request(Method::GET, "/api/v1/workers").await
    }

    /// The workers, once one has a suspicion of an index above `after` (its agent left,
    /// its connection dropped) or after `wait`: the monitor's blocking query.
    pub async fn workers_suspected_after(
        &self,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<WorkerDoc>, ClientError> {
        let path = format!(
            "/api/v1/workers?suspected_after={after}&wait={}ms",
            wait.as_millis()
        );
        self.send(
            Method::GET,
            &path,
            NO_BODY,
            Some(wait + Duration::from_secs(10)),
            &[],
            &[],
        )
        .await
    }

    /// Tasks, all or only those of a service or placed on a worker.
    pub async fn tasks(
        &self,
        service: Option<&str>,
        worker: Option<&str>,
    ) -> Result<Vec<TaskDoc>, ClientError> {
        let mut filters = Vec::new();
        if let Some(service) = service {
            filters.push(format!("service={}", segment(service)));
        }
        if let Some(worker) = worker {
            filters.push(format!("worker={}", segment(worker)));
        }
        let mut path = "/api/v1/tasks".to_string();
        if !filters.is_empty() {
            path = format!("{path}?{}", filters.join("&"));
        }
        self.request(Method::GET, &path).await
    }
}

/// The calls an agent makes. Each names the agent's `instance` (see
/// `mycluster_core::identity`): the manager refuses (409) the calls of an instance that
/// does not hold the worker.
impl Client {
    pub async fn register(&self, registration: &Registration) -> Result<WorkerDoc, ClientError> {
        self.request_with(Method::POST, "/api/v1/workers", registration)
            .await
    }

    pub async fn heartbeat(
        &self,
        worker: &str,
        instance: &str,
    ) -> Result<HeartbeatDoc, ClientError> {
        let path = agent_path(worker, "heartbeat", instance, None);
        self.request(Method::POST, &path).await
    }

    /// A heartbeat that gives up after `timeout`: a lease is renewed only by answers, so
    /// a heartbeat lost in a network split must not hold the next one up for the
    /// client's whole timeout.
    pub async fn heartbeat_within(
        &self,
        worker: &str,
        instance: &str,
        timeout: Duration,
    ) -> Result<HeartbeatDoc, ClientError> {
        let path = agent_path(worker, "heartbeat", instance, None);
        self.send(Method::POST, &path, NO_BODY, Some(timeout), &[], &[])
            .await
    }

    /// The agent is stopping: the manager has its worker declared down at once.
    pub async fn leave(&self, worker: &str, instance: &str) -> Result<WorkerDoc, ClientError> {
        let path = agent_path(worker, "leave", instance, None);
        self.request(Method::POST, &path).await
    }

    /// The worker's tasks; with `index`, waits up to `wait` for a change after it.
    pub async fn assigned_tasks(
        &self,
        worker: &str,
        instance: &str,
        index: Option<u64>,
        wait: Duration,
    ) -> Result<AssignedTasks, ClientError> {
        let blocking = index.map(|index| format!("index={index}&wait={}ms", wait.as_millis()));
        let path = agent_path(worker, "tasks", instance, blocking);
        // The answer may take the whole wait: allow for it.
        self.send(
            Method::GET,
            &path,
            NO_BODY,
            Some(wait + Duration::from_secs(15)),
            &[],
            &[],
        )
        .await
    }

    /// The monitor's verdict: the worker is dead (if it is still silent for `silent_for`
    /// when the manager acts); its tasks are relocated.
    pub async fn declare_down(
        &self,
        worker: &str,
        silent_for: Duration,
    ) -> Result<DownDoc, ClientError> {
        let path = format!(
            "/api/v1/workers/{}/down?silent_for={}ms",
            segment(worker),
            silent_for.as_millis()
        );
        self.request(Method::POST, &path).await
    }

    /// Declares many workers down in one commit (`POST /api/v1/workers/_down`); with
    /// `silent_for`, those heard from within it are skipped.
    pub async fn declare_down_many(
        &self,
        workers: &[&str],
        silent_for: Option<Duration>,
    ) -> Result<DownManyDoc, ClientError> {
        let path = match silent_for {
            Some(silent_for) => format!(
                "/api/v1/workers/_down?silent_for={}ms",
                silent_for.as_millis()
            ),
            None => "/api/v1/workers/_down".to_string(),
        };
        let body = DownRequest {
            workers: workers.iter().map(|w| w.to_string()).collect(),
        };
        self.request_with(Method::POST, &path, &body).await
    }

    pub async fn report(
        &self,
        worker: &str,
        instance: &str,
        reports: &[TaskReport],
    ) -> Result<ReportDoc, ClientError> {
        let report = StatusReport {
            tasks: reports.to_vec(),
            removed_volumes: Vec::new(),
        };
        self.report_status(worker, instance, &report).await
    }

    /// A whole status report: task states, and the volumes the agent removed.
    pub async fn report_status(
        &self,
        worker: &str,
        instance: &str,
        report: &StatusReport,
    ) -> Result<ReportDoc, ClientError> {
        let path = agent_path(worker, "status", instance, None);
        self.request_with(Method::POST, &path, report).await
    }
}

/// No request body (the type is only there to name one).
const NO_BODY: Option<&()> = None;

/// `/api/v1/workers/<worker>/<action>`, with `?instance=` (when there is one) and any
/// other query.
fn agent_path(worker: &str, action: &str, instance: &str, query: Option<String>) -> String {
    let mut params: Vec<String> = query.into_iter().collect();
    if !instance.is_empty() {
        params.push(format!("instance={}", segment(instance)));
    }
    let mut path = format!("/api/v1/workers/{}/{action}", segment(worker));
    if !params.is_empty() {
        path = format!("{path}?{}", params.join("&"));
    }
    path
}

/// The host `address` names (`scheme://host[:port][/…]` or `host[:port]`), an IPv6
/// literal without its brackets.
pub fn host_of(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    }
}

/// Whether `address` (a URL, or `host[:port]`) names this host: `localhost`,
/// 127.0.0.0/8 or ::1 (IPv4-mapped too).
pub fn is_loopback(address: &str) -> bool {
    let host = host_of(address);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// A reqwest builder for any other HTTP client of the process (probes, tests): it
/// makes sure the TLS provider reqwest needs even for http:// is installed first.
pub fn reqwest_builder() -> reqwest::ClientBuilder {
    // Without a pin it only fails if rustls cannot make a config at all (it can).
    http_builder("", None).unwrap_or_else(|_| reqwest::Client::builder())
}

/// A reqwest builder for `base`: with TLS pinned to `pin`'s CA (no system roots: a
/// scratch image has none, and a cluster's CA is its own).
pub(crate) fn http_builder(
    base: &str,
    pin: Option<Pin>,
) -> Result<reqwest::ClientBuilder, ClientError> {
    // reqwest builds a rustls config even for http:// clients, and panics without a
    // process-wide provider (only ring is compiled in: see mycluster_tls).
    mycluster_tls::install_default_provider();
    let builder = reqwest::Client::builder();
    match pin {
        Some(pin) => {
            let config = mycluster_tls::pinned_client(pin)
                .map_err(|e| ClientError::BadUrl(format!("{base}: {e}")))?;
            Ok(builder.tls_backend_preconfigured(config))
        }
        // Plain HTTP only (an https:// manager with nothing to trust is refused before
        // any byte is sent): a TLS config that trusts nobody, so reqwest does not look
        // for the platform's roots, which a scratch image lacks (it fails to build then).
        None => {
            let config = mycluster_tls::trusting_nobody()
                .map_err(|e| ClientError::BadUrl(format!("{base}: {e}")))?;
            Ok(builder.tls_backend_preconfigured(config))
        }
    }
}

/// What a request that got no answer becomes: `Untrusted` when the server's certificate
/// was refused, else `Unreachable`.
pub(crate) fn send_error(url: &str, error: &reqwest::Error) -> ClientError {
    match mycluster_tls::refused_certificate(error) {
        Some(reason) => ClientError::Untrusted {
            url: url.to_string(),
            reason,
        },
        None => ClientError::Unreachable {
            url: url.to_string(),
            reason: describe(error),
        },
    }
}

/// reqwest's Display stops at the outermost error; the cause ("connection refused") is
/// what a person needs.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "connection failed".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    let mut last = String::new();
    while let Some(cause) = source {
        last = cause.to_string();
        source = cause.source();
    }
    if !last.is_empty() && !text.contains(&last) {
        text = format!("{text}: {last}");
    }
    text
}

/// Percent-encodes a path segment or query value.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_told_apart() {
        for url in [
            "http://localhost:5000",
            "http://127.0.0.1:5000/api",
            "http://127.1.2.3",
            "http://[::1]:5000",
            "http://LOCALHOST",
            "127.0.0.1:7000",
            "[::1]:7000",
            "[::ffff:127.0.0.1]:7000",
            "localhost:7000",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:5000",
            "http://manager:5000",
            "http://[fe80::1]:5000",
            "http://localhost.example.com:5000",
            "10.0.0.7:7000",
            "node1:7000",
            "[::ffff:10.0.0.1]:1",
            "",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
        assert_eq!(host_of("https://[::1]:5443/api"), "::1");
        assert_eq!(host_of("node1:7000"), "node1");
        assert_eq!(host_of("10.0.0.7"), "10.0.0.7");
    }

    #[tokio::test]
    async fn a_pinned_token_is_not_sent_in_the_clear_to_another_host() {
        let token = format!("MCJT1-{}-secret-0123456789abcdef", Pin::of_der(b"ca"));
        let remote = Client::new("http://10.255.255.1:5000", Duration::from_secs(1))
            .unwrap()
            .with_token(Some(token.clone()));
        assert!(matches!(
            remote.health().await,
            Err(ClientError::Cleartext(_))
        ));
        // On this host, plain HTTP is fine (nothing listens here: unreachable, not refused).
        let local = Client::new("http://127.0.0.1:9", Duration::from_secs(1))
            .unwrap()
            .with_token(Some(token));
        assert!(matches!(
            local.health().await,
            Err(ClientError::Unreachable { .. })
        ));
    }
}
