//! A network partition for process agents, with no privileges: a `RelayedAgent` is a
//! process agent whose traffic goes through two `mycluster_relay::Relay`s (TCP relays
//! that a test can cut and heal): its manager is `http://<relay>` and its health endpoint
//! is advertised at a second relay, so a cut silences it *and* fails the monitor's probe,
//! as a real split does. The agent is killed when the handle drops (its workloads with
//! it), the relays closed.

use std::time::{Duration, Instant};

use mycluster_relay::{free_port, Relay};

use super::Agent;

/// A process agent whose traffic passes through relays: to its manager, and from the
/// monitor to its health endpoint. `cut` and `heal` split it from the cluster and join
/// it again.
pub struct RelayedAgent {
    pub agent: Agent,
    /// Between the agent and the manager.
    pub to_manager: Relay,
    /// Between the monitor (anyone probing the advertised address) and the agent.
    pub to_health: Relay,
}

impl RelayedAgent {
    /// `mycluster agent --name NAME --driver process` reaching `manager_url` through a
    /// relay, its health endpoint on a fixed local port advertised through another.
    pub fn start(manager_url: &str, name: &str, extra: &[&str]) -> RelayedAgent {
        let to_manager = Relay::to_url(manager_url).expect("a relay to the manager");
        // The health endpoint's port must be known before the agent starts (its log
        // names the advertised address, not the bound one). A port taken in between
        // makes the agent exit: tried again with another.
        for _ in 0..5 {
            let port = free_port().expect("a free port");
            let listen = format!("127.0.0.1:{port}");
            let to_health = Relay::start(listen.as_str()).expect("a relay to the agent");
            let advertise = to_health.addr.to_string();
            let mut args = vec!["--advertise", &advertise];
            args.extend_from_slice(extra);
            let manager = format!("http://{}", to_manager.addr);
            let mut agent = Agent::listening(&manager, name, "process", &listen, &args);
            // Up once it says where its health endpoint is; gone if the port was taken.
            let started = Instant::now();
            while started.elapsed() < super::DEADLINE {
                if agent.health_address().is_some() {
                    return RelayedAgent {
                        agent,
                        to_manager,
                        to_health,
                    };
                }
                if agent.exit_status().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                agent.exit_status().is_some(),
                "agent {name} did not start within {:?}:\n{}",
                super::DEADLINE,
                agent.log_text()
            );
            eprintln!(
                "agent {name} exited at start (port {port} taken?), again:\n{}",
                agent.log_text()
            );
        }
        panic!("agent {name} could not start behind its relays");
    }

    /// Splits the worker from the cluster: neither its traffic to the manager nor the
    /// monitor's probes pass.
    pub fn cut(&self) {
        self.to_manager.cut();
        self.to_health.cut();
    }

    /// Joins it again. The probe's path first, so a monitor that probes the moment the
    /// manager notices the agent's closed connections finds it answering.
    pub fn heal(&self) {
        self.to_health.heal();
        self.to_manager.heal();
    }

    pub fn is_cut(&self) -> bool {
        self.to_manager.is_cut()
    }
}
