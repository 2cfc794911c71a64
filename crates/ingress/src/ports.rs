//! Which ports the ingress listens on: one listener per published port of the route
//! table, opened when a port appears, updated in place when its route changes, closed
//! the moment it leaves (so the port is free again at once). A port that cannot be bound
//! (something else on the host holds it) is said once, with what to do, and tried again
//! every few seconds and at each new table; the other ports work meanwhile.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mycluster_background::{Loop, LoopControl};
use mycluster_core::endpoints::Route;
use mycluster_core::wire::RouteTable;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::proxy::{accept_loop, Port, Relays};
use crate::table::{changes, Closed, PortRoute};

/// How often a port that could not be bound is tried again (also at each new table).
pub const BIND_RETRY: Duration = Duration::from_secs(2);

/// The open ports, and the wanted ones that could not be bound.
pub(crate) struct Ports {
    listen: IpAddr,
    cool_for: Duration,
    relays: Arc<Relays>,
    tables: watch::Receiver<Option<Arc<RouteTable>>>,
    open: BTreeMap<u16, Open>,
    /// Wanted ports whose bind failed, with what was said about it.
    unbound: BTreeMap<u16, String>,
    /// The version of the table last applied.
    applied: Option<String>,
    /// Each open port's service, for whoever watches (tests, `dev`).
    status: watch::Sender<BTreeMap<u16, String>>,
}

struct Open {
    port: Arc<Port>,
    stop: CancellationToken,
    accepting: JoinHandle<()>,
}

impl Ports {
    pub fn new(
        listen: IpAddr,
        cool_for: Duration,
        relays: Arc<Relays>,
        tables: watch::Receiver<Option<Arc<RouteTable>>>,
        status: watch::Sender<BTreeMap<u16, String>>,
    ) -> Ports {
        Ports {
            listen,
            cool_for,
            relays,
            tables,
            open: BTreeMap::new(),
            unbound: BTreeMap::new(),
            applied: None,
            status,
        }
    }

    /// Applies each new table (woken by `wake`), and retries failed binds every
    /// [`BIND_RETRY`], until `stop`; then closes every port.
    pub async fn run(mut self, wake: &Notify, stop: CancellationToken) {
        Loop::new("ingress", BIND_RETRY, stop)
            .woken_by(wake)
            .quiet_recovery()
            .run_with(&mut self, |ports| Box::pin(ports.step()))
            .await;
        let open: Vec<u16> = self.open.keys().copied().collect();
        for port in open {
            self.close(port, None).await;
        }
        self.publish_status();
    }

    async fn step(&mut self) -> Result<LoopControl, String> {
        let table = self.tables.borrow_and_update().clone();
        let Some(table) = table else {
            return Ok(LoopControl::Continue);
        };
        if self.applied.as_deref() == Some(table.version.as_str()) && self.unbound.is_empty() {
            return Ok(LoopControl::Continue);
        }
        self.apply(&table.routes).await;
        self.applied = Some(table.version.clone());
        Ok(LoopControl::Continue)
    }

    async fn apply(&mut self, routes: &[Route]) {
        let services: BTreeMap<u16, String> = self
            .open
            .iter()
            .map(|(&number, open)| (number, open.port.route().service.clone()))
            .collect();
        let changes = changes(&services, routes);
        for (port, why) in changes.close {
            self.close(port, Some(why)).await;
        }
        for route in changes.update {
            self.update(route);
        }
        for route in changes.open {
            self.bind(route).await;
        }
        self.unbound
            .retain(|port, _| routes.iter().any(|r| r.published == *port));
        self.publish_status();
    }

    fn publish_status(&self) {
        let status = self
            .open
            .iter()
            .map(|(&number, open)| (number, open.port.route().service.clone()))
            .collect();
        self.status.send_replace(status);
    }

    /// `:8080` when listening on every address, `127.0.0.1:8080` otherwise.
    fn shown(&self, port: u16) -> String {
        if self.listen.is_unspecified() {
            format!(":{port}")
        } else {
            SocketAddr::new(self.listen, port).to_string()
        }
    }

    async fn bind(&mut self, route: &Route) {
        let number = route.published;
        let address = SocketAddr::new(self.listen, number);
        let listener = match TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(e) => {
                let said = format!(
                    "ingress: cannot listen on {} for service {}: {e}; stop whatever holds that port on this host, or publish the service on another port (trying again every {}s)",
                    self.shown(number),
                    route.service,
                    BIND_RETRY.as_secs()
                );
                if self.unbound.get(&number) != Some(&said) {
                    tracing::warn!("{said}");
                } else {
                    tracing::debug!("{said}");
                }
                self.unbound.insert(number, said);
                return;
            }
        };
        self.unbound.remove(&number);
        let port = Arc::new(Port::new(number, PortRoute::new(route, self.cool_for)));
        let stop = self.relays.stop.child_token();
        let accepting = tokio::spawn(accept_loop(
            listener,
            port.clone(),
            self.relays.clone(),
            stop.clone(),
        ));
        tracing::info!(
            "ingress: listening on {} for service {} (target {}, {} endpoint(s){})",
            self.shown(number),
            route.service,
            route.target,
            route.endpoints.len(),
            if route.proxy_protocol {
                ", PROXY protocol"
            } else {
                ""
            }
        );
        self.open.insert(
            number,
            Open {
                port,
                stop,
                accepting,
            },
        );
    }

    fn update(&mut self, route: &Route) {
        let Some(open) = self.open.get(&route.published) else {
            return;
        };
        let update = open.port.route().update(route);
        let count = route.endpoints.len();
        if update.moved {
            tracing::info!(
                "ingress: port {} now serves service {} (target {}, {count} endpoint(s))",
                route.published,
                route.service,
                route.target
            );
        } else if update.count_changed {
            tracing::info!(
                "ingress: port {} (service {}): {count} endpoint(s)",
                route.published,
                route.service
            );
        } else if update.endpoints_changed {
            tracing::debug!(
                "ingress: port {} (service {}): endpoints changed, still {count}",
                route.published,
                route.service
            );
        }
    }

    /// Stops accepting on `number` and closes its listener before returning; relays under
    /// way go on. `why`: `None` when the ingress itself stops.
    async fn close(&mut self, number: u16, why: Option<Closed>) {
        let Some(open) = self.open.remove(&number) else {
            return;
        };
        open.stop.cancel();
        if let Err(e) = open.accepting.await {
            tracing::error!("ingress: the accept loop of port {number} failed: {e}");
        }
        let service = open.port.route().service.clone();
        match why {
            Some(Closed::ServiceRemoved) => {
                tracing::info!("ingress: port {number} closed (service {service} removed)")
            }
            Some(Closed::Unpublished) => tracing::info!(
                "ingress: port {number} closed (service {service} no longer publishes it)"
            ),
            None => tracing::debug!("ingress: port {number} closed (the ingress stops)"),
        }
    }
}
