//! The ingress's view of the route table: for each published port, the route it serves
//! (service, target, PROXY protocol or not) and a [`Balancer`] over the route's
//! endpoints; and how a new table changes the set of open ports ([`changes`]).
//!
//! All of it is pure (the time is passed in), so the choice of replica — round robin,
//! skipping the ones that just failed to answer — is tested here without a socket.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mycluster_core::endpoints::Route;

/// Where a published port's new connections go, in the order to try them.
///
/// Round robin: each new connection starts at the endpoint after the one the previous
/// connection started at. An endpoint whose connect failed (refused, or no answer in
/// time) is *cooling* for a while: it is tried only after every other endpoint, so a
/// dead worker's replicas do not cost every connection a connect timeout; once the
/// cooling ends (or a connect to it succeeds) it is back in the rotation.
#[derive(Debug)]
pub struct Balancer {
    endpoints: Vec<SocketAddr>,
    /// The index at which the next connection starts.
    next: usize,
    /// Until when each endpoint that failed is tried last.
    cooling: HashMap<SocketAddr, Instant>,
    cool_for: Duration,
}

impl Balancer {
    pub fn new(cool_for: Duration) -> Balancer {
        Balancer {
            endpoints: Vec::new(),
            next: 0,
            cooling: HashMap::new(),
            cool_for,
        }
    }

    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// Replaces the endpoints (a replica started, stopped or turned unhealthy); whether
    /// they changed. The rotation goes on from where it was; what is known of endpoints
    /// still there is kept.
    pub fn set(&mut self, endpoints: Vec<SocketAddr>) -> bool {
        if endpoints == self.endpoints {
            return false;
        }
        self.cooling.retain(|addr, _| endpoints.contains(addr));
        self.next = match endpoints.len() {
            0 => 0,
            n => self.next % n,
        };
        self.endpoints = endpoints;
        true
    }

    /// The endpoints to try for a new connection, in order: from the rotation's place
    /// on, those not cooling first, then the cooling ones (a slow connection is better
    /// than a refused one: the cooling may be stale). Moves the rotation past the
    /// first.
    pub fn order(&mut self, now: Instant) -> Vec<SocketAddr> {
        self.cooling.retain(|_, until| *until > now);
        let n = self.endpoints.len();
        if n == 0 {
            return Vec::new();
        }
        let rotation = (0..n).map(|i| (self.next + i) % n);
        let (warm, cooling): (Vec<usize>, Vec<usize>) =
            rotation.partition(|&i| !self.cooling.contains_key(&self.endpoints[i]));
        let order: Vec<usize> = warm.into_iter().chain(cooling).collect();
        if let Some(&first) = order.first() {
            self.next = (first + 1) % n;
        }
        order.into_iter().map(|i| self.endpoints[i]).collect()
    }

    /// A connect to `endpoint` failed at `now`: it goes last for a while.
    pub fn failed(&mut self, endpoint: SocketAddr, now: Instant) {
        if self.endpoints.contains(&endpoint) && !self.cool_for.is_zero() {
            self.cooling.insert(endpoint, now + self.cool_for);
        }
    }

    /// A connect to `endpoint` succeeded: it is back in the rotation. When others were
    /// tried before it (`after_failures`), the rotation goes on after it, so the endpoint
    /// after a dead one does not take two turns in a row.
    pub fn answered(&mut self, endpoint: SocketAddr, after_failures: bool) {
        self.cooling.remove(&endpoint);
        if after_failures {
            if let Some(i) = self.endpoints.iter().position(|e| *e == endpoint) {
                self.next = (i + 1) % self.endpoints.len();
            }
        }
    }

    /// How many endpoints are cooling at `now`.
    pub fn cooling(&self, now: Instant) -> usize {
        self.cooling.values().filter(|until| **until > now).count()
    }
}

/// Each endpoint's socket address, in the route's order (by slot).
pub fn addresses(route: &Route) -> Vec<SocketAddr> {
    route
        .endpoints
        .iter()
        .map(|e| SocketAddr::new(e.address, e.port))
        .collect()
}

/// The endpoints of `route` that expect a PROXY protocol v2 header: each replica says
/// (during a rollout that turns the header on or off, old and new ones differ).
pub fn proxied(route: &Route) -> HashSet<SocketAddr> {
    route
        .endpoints
        .iter()
        .filter(|e| e.proxy_protocol)
        .map(|e| SocketAddr::new(e.address, e.port))
        .collect()
}

/// What one published port serves now, as its connections see it.
#[derive(Debug)]
pub struct PortRoute {
    pub service: String,
    pub target: u16,
    /// What the service asks for now (for people: each connection follows `proxied`).
    pub proxy_protocol: bool,
    /// The endpoints that get a PROXY protocol v2 header.
    pub proxied: HashSet<SocketAddr>,
    pub balancer: Balancer,
}

impl PortRoute {
    pub fn new(route: &Route, cool_for: Duration) -> PortRoute {
        let mut balancer = Balancer::new(cool_for);
        balancer.set(addresses(route));
        PortRoute {
            service: route.service.clone(),
            target: route.target,
            proxy_protocol: route.proxy_protocol,
            proxied: proxied(route),
            balancer,
        }
    }

    /// Takes `route` in; what changed.
    pub fn update(&mut self, route: &Route) -> Update {
        let moved = self.service != route.service || self.target != route.target;
        self.service = route.service.clone();
        self.target = route.target;
        self.proxy_protocol = route.proxy_protocol;
        self.proxied = proxied(route);
        let before = self.balancer.endpoints().len();
        let changed = self.balancer.set(addresses(route));
        Update {
            moved,
            endpoints_changed: changed,
            count_changed: before != self.balancer.endpoints().len(),
        }
    }
}

/// What [`PortRoute::update`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// The port now reaches another service, or another target of it.
    pub moved: bool,
    pub endpoints_changed: bool,
    pub count_changed: bool,
}

/// Why a port is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The service is in the table no more (deleted, or it publishes nothing now).
    ServiceRemoved,
    /// The service is still there but no longer publishes this port.
    Unpublished,
}

/// How the open ports must change for `routes`: which to close (and why), which to open,
/// which to update (by port). `open` maps each open (or wanted but not yet bound) port to
/// its service.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes<'a> {
    pub close: Vec<(u16, Closed)>,
    pub open: Vec<&'a Route>,
    pub update: Vec<&'a Route>,
}

pub fn changes<'a>(open: &BTreeMap<u16, String>, routes: &'a [Route]) -> Changes<'a> {
    let mut changes = Changes::default();
    for (&port, service) in open {
        if routes.iter().any(|r| r.published == port) {
            continue;
        }
        let why = if routes.iter().any(|r| &r.service == service) {
            Closed::Unpublished
        } else {
            Closed::ServiceRemoved
        };
        changes.close.push((port, why));
    }
    for route in routes {
        if open.contains_key(&route.published) {
            changes.update.push(route);
        } else {
            changes.open.push(route);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycluster_core::endpoints::Endpoint;
    use mycluster_core::service::Protocol;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn balancer(ports: &[u16], cool_for: Duration) -> Balancer {
        let mut balancer = Balancer::new(cool_for);
        balancer.set(ports.iter().map(|&p| addr(p)).collect());
        balancer
    }

    /// The first endpoint of each of `n` connections at `now`.
    fn firsts(balancer: &mut Balancer, n: usize, now: Instant) -> Vec<u16> {
        (0..n)
            .map(|_| balancer.order(now).first().map_or(0, |a| a.port()))
            .collect()
    }

    #[test]
    fn round_robin_over_every_endpoint() {
        let now = Instant::now();
        let mut b = balancer(&[1, 2, 3], Duration::from_secs(3));
        assert_eq!(firsts(&mut b, 7, now), [1, 2, 3, 1, 2, 3, 1]);
        // The whole order: from the rotation's place on, wrapping around.
        assert_eq!(b.order(now), [addr(2), addr(3), addr(1)]);
        assert_eq!(Balancer::new(Duration::ZERO).order(now), []);
    }

    #[test]
    fn a_failed_endpoint_goes_last_until_its_cooling_ends() {
        let start = Instant::now();
        let mut b = balancer(&[1, 2, 3], Duration::from_secs(3));
        assert_eq!(b.order(start), [addr(1), addr(2), addr(3)]);
        // 1 does not answer: the connection goes on to 2, and 1 cools.
        b.failed(addr(1), start);
        assert_eq!(b.cooling(start), 1);
        b.answered(addr(2), true);
        // The next connection starts after 2, not at it again.
        assert_eq!(b.order(start), [addr(3), addr(2), addr(1)]);
        // Connections alternate over 2 and 3, each with 1 as the last resort.
        let later = start + Duration::from_secs(1);
        assert_eq!(b.order(later), [addr(2), addr(3), addr(1)]);
        assert_eq!(b.order(later), [addr(3), addr(2), addr(1)]);
        assert_eq!(firsts(&mut b, 4, later), [2, 3, 2, 3]);
        // Cooling over: 1 is back in the rotation.
        let after = start + Duration::from_secs(3);
        assert_eq!(b.cooling(after), 0);
        assert_eq!(firsts(&mut b, 3, after), [1, 2, 3]);
    }

    #[test]
    fn every_endpoint_cooling_is_tried_anyway() {
        let now = Instant::now();
        let mut b = balancer(&[1, 2], Duration::from_secs(3));
        b.failed(addr(1), now);
        b.failed(addr(2), now);
        assert_eq!(b.order(now), [addr(1), addr(2)]);
        assert_eq!(b.order(now), [addr(2), addr(1)]);
        // One answers after all: it is warm again and goes first.
        b.answered(addr(1), false);
        assert_eq!(b.order(now), [addr(1), addr(2)]);
        assert_eq!(b.order(now), [addr(1), addr(2)]);
    }

    #[test]
    fn no_cooling_when_told_so() {
        let now = Instant::now();
        let mut b = balancer(&[1, 2], Duration::ZERO);
        b.failed(addr(1), now);
        assert_eq!(firsts(&mut b, 4, now), [1, 2, 1, 2]);
    }

    #[test]
    fn new_endpoints_keep_the_rotation_and_what_is_known() {
        let now = Instant::now();
        let mut b = balancer(&[1, 2, 3], Duration::from_secs(3));
        assert_eq!(firsts(&mut b, 2, now), [1, 2]);
        b.failed(addr(3), now);
        assert!(!b.set(vec![addr(1), addr(2), addr(3)]), "same endpoints");
        // A fourth replica: the rotation goes on from 3 (cooling, so skipped) to 4.
        assert!(b.set(vec![addr(1), addr(2), addr(3), addr(4)]));
        assert_eq!(firsts(&mut b, 3, now), [4, 1, 2]);
        // 3 leaves: its cooling is forgotten, and it is never offered again.
        assert!(b.set(vec![addr(1), addr(2), addr(4)]));
        assert_eq!(b.cooling(now), 0);
        assert_eq!(firsts(&mut b, 3, now), [4, 1, 2]);
        // A failure reported for an endpoint that left (a connect under way) is ignored.
        b.failed(addr(3), now);
        assert_eq!(b.cooling(now), 0);
        // Every replica gone, then back.
        assert!(b.set(Vec::new()));
        assert_eq!(b.order(now), []);
        assert!(b.set(vec![addr(5)]));
        assert_eq!(b.order(now), [addr(5)]);
    }

    fn route(published: u16, service: &str, ports: &[u16]) -> Route {
        Route {
            published,
            protocol: Protocol::Tcp,
            service: service.into(),
            target: 8000,
            proxy_protocol: false,
            endpoints: ports
                .iter()
                .enumerate()
                .map(|(i, &port)| Endpoint {
                    task: format!("{service}.{i}"),
                    slot: i as u32 + 1,
                    worker: "w1".into(),
                    address: addr(port).ip(),
                    port,
                    target: 8000,
                    proxy_protocol: false,
                })
                .collect(),
        }
    }

    #[test]
    fn port_routes_say_what_changed() {
        let mut port = PortRoute::new(&route(80, "web", &[1, 2]), Duration::from_secs(3));
        assert_eq!(port.balancer.endpoints(), [addr(1), addr(2)]);
        assert_eq!(port.update(&route(80, "web", &[1, 2])), Update::default());
        assert_eq!(
            port.update(&route(80, "web", &[1, 3])),
            Update {
                moved: false,
                endpoints_changed: true,
                count_changed: false
            }
        );
        let mut other = route(80, "api", &[1]);
        other.proxy_protocol = true;
        assert_eq!(
            port.update(&other),
            Update {
                moved: true,
                endpoints_changed: true,
                count_changed: true
            }
        );
        assert!(port.proxy_protocol);
        assert_eq!(port.service, "api");
    }

    #[test]
    fn changes_open_update_and_close_ports() {
        let open: BTreeMap<u16, String> = [
            (80, "web".to_string()),
            (81, "web".to_string()),
            (90, "old".to_string()),
        ]
        .into_iter()
        .collect();
        let routes = vec![route(80, "web", &[1]), route(8080, "api", &[2])];
        let changes = changes(&open, &routes);
        assert_eq!(
            changes.close,
            [(81, Closed::Unpublished), (90, Closed::ServiceRemoved)]
        );
        assert_eq!(changes.update, [&routes[0]]);
        assert_eq!(changes.open, [&routes[1]]);
    }
}
