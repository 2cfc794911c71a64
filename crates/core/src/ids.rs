//! Where new task ids come from. The manager draws random ids; tests use a counter so
//! their results are reproducible.

/// A source of unique task ids.
pub trait IdSource {
    fn next_id(&mut self) -> String;
}

/// Ids `t000001`, `t000002`, …: deterministic, for tests and simulations.
#[derive(Debug, Default, Clone)]
pub struct SequentialIds {
    next: u64,
}

impl IdSource for SequentialIds {
    fn next_id(&mut self) -> String {
        self.next += 1;
        format!("t{:06}", self.next)
    }
}
