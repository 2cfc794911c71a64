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

/// The workers that can take one more task of a template, best first.
#[derive(Default)]
pub(super) struct Ranking<'a> {
    groups: HashMap<Option<&'a str>, BTreeSet<Key<'a>>>,
    /// Groups with a candidate, by the slots they hold; and the count each is filed under.
    order: BTreeSet<(u32, Option<&'a str>)>,
    filed: HashMap<Option<&'a str>, u32>,
    /// The key and group of each candidate.
    entries: HashMap<&'a str, (Key<'a>, Option<&'a str>)>,
}

impl<'a> Ranking<'a> {
    pub fn contains(&self, worker: &str) -> bool {
        self.entries.contains_key(worker)
    }

    /// Files `worker` anew: out of the ranking, then back in with `active` tasks if it
    /// `has_room`, and its group re-filed by the counts.
    pub fn refresh(
        &mut self,
        worker: &'a Worker,
        counts: &Counts<'a>,
        active: u32,
        has_room: bool,
    ) {
        let name = worker.name.as_str();
        let group = counts.group(worker);
        if let Some((key, was)) = self.entries.remove(name) {
            if let Some(set) = self.groups.get_mut(&was) {
                set.remove(&key);
            }
            self.refile(was, counts);
        }
        if has_room {
            let key = (counts.on(name), active, name);
            self.groups.entry(group).or_default().insert(key);
            self.entries.insert(name, (key, group));
        }
        self.refile(group, counts);
    }

    /// Puts `group` in the order under its current count, or out of it if it has no
    /// candidate left.
    pub fn refile(&mut self, group: Option<&'a str>, counts: &Counts<'a>) {
        if let Some(old) = self.filed.remove(&group) {
            self.order.remove(&(old, group));
        }
        if self.groups.get(&group).is_some_and(|set| !set.is_empty()) {
            let n = counts.in_group(group);
            self.order.insert((n, group));
            self.filed.insert(group, n);
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
