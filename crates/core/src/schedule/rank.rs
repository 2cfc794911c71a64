//! The ranking of the workers that can take a service's next task: first the value of
//! the service's spread attribute (if it has one) holding the fewest of its slots, then
//! the worker holding the fewest of its slots, then the fewest active tasks in all, then
//! the name. Kept incrementally, so placing many tasks costs a few tree operations each.

use std::collections::{BTreeSet, HashMap};

use crate::service::Attribute;
use crate::Worker;

/// Where a service's slots are: per worker, and per value of its spread attribute
/// (`None`: workers without it, one group of their own). Shared by the rankings of the
/// service's templates in one pass.
pub(super) struct Counts<'a> {
    attr: Option<&'a Attribute>,
    on: HashMap<&'a str, u32>,
    by_value: HashMap<Option<&'a str>, u32>,
}

impl<'a> Counts<'a> {
    pub fn new(attr: Option<&'a Attribute>) -> Counts<'a> {
        Counts {
            attr,
            on: HashMap::new(),
            by_value: HashMap::new(),
        }
    }

    /// The spread group of `worker`.
    pub fn group(&self, worker: &'a Worker) -> Option<&'a str> {
        self.attr.and_then(|a| a.of(worker))
    }

    /// One slot more (`up`) or less on `worker`.
    pub fn shift(&mut self, worker: &'a Worker, up: bool) {
        let step = |n: &mut u32| {
            *n = if up {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            }
        };
        step(self.on.entry(worker.name.as_str()).or_default());
        step(self.by_value.entry(self.group(worker)).or_default());
    }

    pub fn on(&self, worker: &str) -> u32 {
        self.on.get(worker).copied().unwrap_or(0)
    }

    fn in_group(&self, group: Option<&str>) -> u32 {
        self.by_value.get(&group).copied().unwrap_or(0)
    }
}

/// A worker's place within its group: slots of the service, active tasks, name.
type Key<'a> = (u32, u32, &'a str);

/// The workers that can take one more task of a template, best first. A worker's key
/// and its group's place follow from the counts and its active tasks, so a change to
/// either is made between [`Ranking::take`] and [`Ranking::put_back`].
#[derive(Default)]
pub(super) struct Ranking<'a> {
    groups: HashMap<Option<&'a str>, BTreeSet<Key<'a>>>,
    /// Groups with a candidate, by the slots they hold.
    order: BTreeSet<(u32, Option<&'a str>)>,
}

impl<'a> Ranking<'a> {
    /// The ranking of `candidates` (workers with their active tasks), built in bulk.
    pub fn build(candidates: impl Iterator<Item = (&'a Worker, u32)>, counts: &Counts<'a>) -> Self {
        if counts.attr.is_none() {
            // One group: no grouping to pay for on the common path.
            let set: BTreeSet<Key<'a>> = candidates
                .map(|(w, active)| Self::key(w, counts, active))
                .collect();
            let mut ranking = Ranking::default();
            if !set.is_empty() {
                ranking.order.insert((counts.in_group(None), None));
            }
            ranking.groups.insert(None, set);
            return ranking;
        }
        let mut keys: HashMap<Option<&'a str>, Vec<Key<'a>>> = HashMap::new();
        for (worker, active) in candidates {
            let name = worker.name.as_str();
            keys.entry(counts.group(worker))
                .or_default()
                .push((counts.on(name), active, name));
        }
        let groups: HashMap<Option<&'a str>, BTreeSet<Key<'a>>> = keys
            .into_iter()
            .map(|(group, keys)| (group, keys.into_iter().collect()))
            .collect();
        let order = groups
            .keys()
            .map(|group| (counts.in_group(*group), *group))
            .collect();
        Ranking { groups, order }
    }

    fn key(worker: &'a Worker, counts: &Counts<'a>, active: u32) -> Key<'a> {
        (counts.on(&worker.name), active, worker.name.as_str())
    }

    pub fn contains(&self, worker: &'a Worker, counts: &Counts<'a>, active: u32) -> bool {
        self.groups
            .get(&counts.group(worker))
            .is_some_and(|set| set.contains(&Self::key(worker, counts, active)))
    }

    /// Takes `worker` (with `active` tasks, as the counts stand) out, and its group out of
    /// the order; answers whether it was a candidate.
    pub fn take(&mut self, worker: &'a Worker, counts: &Counts<'a>, active: u32) -> bool {
        let group = counts.group(worker);
        self.order.remove(&(counts.in_group(group), group));
        self.groups
            .get_mut(&group)
            .is_some_and(|set| set.remove(&Self::key(worker, counts, active)))
    }

    /// Puts `worker` back (if it `has_room`) and its group in the order, as the counts
    /// stand now.
    pub fn put_back(
        &mut self,
        worker: &'a Worker,
        counts: &Counts<'a>,
        active: u32,
        has_room: bool,
    ) {
        let group = counts.group(worker);
        let set = self.groups.entry(group).or_default();
        if has_room {
            set.insert(Self::key(worker, counts, active));
        }
        if !set.is_empty() {
            self.order.insert((counts.in_group(group), group));
        }
    }

    /// The best candidate that `ok` accepts.
    pub fn best(&self, ok: impl Fn(&str) -> bool) -> Option<&'a str> {
        self.order
            .iter()
            .filter_map(|(_, group)| self.groups.get(group))
            .flat_map(|set| set.iter())
            .map(|(_, _, name)| *name)
            .find(|name| ok(name))
    }
}
