//! The kernel's own count of OOM kills in each container's memory cgroup (v1
//! `memory.oom_control`, v2 `memory.events`, `oom_kill`), against the kills podmortem has put
//! a name to.
//!
//! The kernel prints the part of an OOM report that names the memory cgroup (the dump header
//! and the `oom-kill:…task_memcg=` line) at most 10 times per 5 s node-wide, and `Killed
//! process N` for every kill. In a storm most kills therefore arrive without a cgroup. The
//! counters are exact: a kill the kernel log did not place is given to a container whose counter
//! rose by more than the kills already placed in it, and a rise that no kernel log report ever
//! explains is reported from the counter alone. Per container, the kills podmortem reports add
//! up to what the counter counted while it watched.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use crate::model::ContainerInfo;

/// At most this many containers are accounted for; more are not (their kills are placed by
/// the kernel log and `TaskOOM` only).
const MAX_ACCOUNTS: usize = 4096;
/// At most this many separate rises are kept per container; the oldest ones merge. With
/// [`MAX_ACCOUNTS`], a few MiB at the very most.
const MAX_RISES: usize = 64;

/// Kills the counter counted and nothing has explained yet, from one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rise {
    /// When the reading that saw them was taken.
    pub seen: SystemTime,
    /// How many.
    pub kills: u64,
}

/// One container's account.
#[derive(Debug, Clone)]
struct Account {
    /// The counter at the first reading, counted before podmortem watched (zero for a
    /// container created while podmortem ran).
    baseline: u64,
    /// The counter at the latest reading.
    counted: u64,
    /// Kills placed in the container before a reading counted them.
    ahead: u64,
    /// Kills counted and not placed yet, oldest first.
    unexplained: VecDeque<Rise>,
    /// Whether the counter has been read (an account opened by a kill placed before any
    /// reading has no baseline yet).
    read: bool,
    /// Kills reported from the counter alone whose kernel log report may still come (read
    /// late): such a report is then not a kill of its own.
    reported: u64,
    /// The latest reading among those whose kills were reported from the counter alone: a
    /// kill made before it was counted by it or an earlier one.
    reported_until: Option<SystemTime>,
}

/// What placing a kill in a container's account found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Explained {
    /// A kill to report.
    New,
    /// A kill already reported from the counter alone: its report came late.
    AlreadyReported,
}

impl Account {
    fn surplus(&self) -> u64 {
        self.unexplained.iter().map(|r| r.kills).sum()
    }
}

/// Overdue kills of one container: the counter counted them, no kernel log report explained
/// them.
#[derive(Debug, Clone, PartialEq)]
pub struct Unexplained {
    /// The container.
    pub container_id: String,
    /// How many.
    pub kills: u64,
    /// When the reading that counted the first of them was taken.
    pub first_seen: SystemTime,
    /// When the reading that counted the last of them was taken.
    pub last_seen: SystemTime,
    /// The counter's value at the latest reading.
    pub counter: u64,
}

/// Every container's account.
#[derive(Debug, Default)]
pub struct OomLedger {
    accounts: HashMap<String, Account>,
}

impl OomLedger {
    /// Folds a reading of container `c`'s counter, taken at `at`. `created_while_watching`:
    /// the container was created after podmortem started, so every kill its counter holds
    /// happened while podmortem was reading the kernel log.
    pub fn reading(
        &mut self,
        container_id: &str,
        counter: u64,
        at: SystemTime,
        created_while_watching: bool,
    ) {
        if !self.accounts.contains_key(container_id) && self.accounts.len() >= MAX_ACCOUNTS {
            return;
        }
        let account = self
            .accounts
            .entry(container_id.to_owned())
            .or_insert_with(|| Account {
                baseline: 0,
                counted: 0,
                ahead: 0,
                unexplained: VecDeque::new(),
                read: false,
                reported: 0,
                reported_until: None,
            });
        if !account.read {
            account.read = true;
            if !created_while_watching {
                // Already running when podmortem started: what the counter holds, the kills
                // placed before this reading among it, was counted before it watched.
                account.baseline = counter;
                account.counted = counter;
                account.ahead = 0;
                return;
            }
        }
        if counter < account.counted {
            // A new cgroup under the same name: start over.
            account.baseline = counter;
            account.counted = counter;
            account.unexplained.clear();
            return;
        }
        let mut rise = counter - account.counted;
        account.counted = counter;
        let cancelled = rise.min(account.ahead);
        account.ahead -= cancelled;
        rise -= cancelled;
        if rise > 0 {
            if account.unexplained.len() >= MAX_RISES {
                if let Some(mut oldest) = account.unexplained.pop_front() {
                    oldest.kills += account.unexplained.pop_front().map_or(0, |r| r.kills);
                    account.unexplained.push_front(oldest);
                }
            }
            account.unexplained.push_back(Rise {
                seen: at,
                kills: rise,
            });
        }
    }

    /// Whether container `id`'s counter has been read.
    pub fn knows(&self, id: &str) -> bool {
        self.accounts.get(id).is_some_and(|a| a.read)
    }

    /// Kills counted in container `id` and not placed yet.
    pub fn surplus(&self, id: &str) -> u64 {
        self.accounts.get(id).map_or(0, Account::surplus)
    }

    /// When the reading that counted the oldest kill in container `id` not placed yet was
    /// taken.
    pub fn oldest_surplus(&self, id: &str) -> Option<SystemTime> {
        self.accounts.get(id)?.unexplained.front().map(|r| r.seen)
    }

    /// The containers with kills reported from the counter alone, counted by a reading taken at
    /// or after `at`: where a kill made at `at` whose report came late may belong.
    pub fn reported_since(&self, at: SystemTime) -> impl Iterator<Item = &str> {
        self.accounts
            .iter()
            .filter(move |(_, a)| a.reported > 0 && a.reported_until.is_some_and(|until| at <= until))
            .map(|(id, _)| id.as_str())
    }

    /// The containers with kills counted and not placed, by id.
    pub fn with_surplus(&self) -> impl Iterator<Item = &str> {
        self.accounts
            .iter()
            .filter(|(_, a)| !a.unexplained.is_empty())
            .map(|(id, _)| id.as_str())
    }

    /// Places one kill, made at `at`, in container `id`: one already reported from the counter
    /// alone when the kill was made before the reading that counted those (its report came
    /// late), else the oldest kill counted and not placed, or, before a reading has counted
    /// it, one to come.
    pub fn explain(&mut self, id: &str, at: SystemTime) -> Explained {
        let Some(account) = self.accounts.get_mut(id) else {
            if self.accounts.len() < MAX_ACCOUNTS {
                self.accounts.insert(
                    id.to_owned(),
                    Account {
                        baseline: 0,
                        counted: 0,
                        ahead: 1,
                        unexplained: VecDeque::new(),
                        read: false,
                        reported: 0,
                        reported_until: None,
                    },
                );
            }
            return Explained::New;
        };
        let late = account.reported_until.is_some_and(|until| at <= until);
        if late && account.reported > 0 {
            account.reported -= 1;
            return Explained::AlreadyReported;
        }
        match account.unexplained.front_mut() {
            Some(front) if front.kills > 1 => front.kills -= 1,
            Some(_) => {
                account.unexplained.pop_front();
            }
            None => account.ahead += 1,
        }
        Explained::New
    }

    /// Takes the kills counted at or before `before` that nothing explained, per container.
    pub fn take_unexplained(&mut self, before: SystemTime) -> Vec<Unexplained> {
        let mut out = Vec::new();
        for (id, account) in &mut self.accounts {
            let mut taken: Option<Unexplained> = None;
            while account.unexplained.front().is_some_and(|r| r.seen <= before) {
                let Some(rise) = account.unexplained.pop_front() else {
                    break;
                };
                account.reported = account.reported.saturating_add(rise.kills);
                account.reported_until = account.reported_until.max(Some(rise.seen));
                let u = taken.get_or_insert(Unexplained {
                    container_id: id.clone(),
                    kills: 0,
                    first_seen: rise.seen,
                    last_seen: rise.seen,
                    counter: account.counted,
                });
                u.kills += rise.kills;
                u.last_seen = rise.seen;
            }
            out.extend(taken);
        }
        out.sort_by_key(|u| u.first_seen);
        out
    }

    /// Forgets the containers for which `keep` is false and that hold nothing unexplained.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.accounts
            .retain(|id, a| keep(id) || !a.unexplained.is_empty());
    }

    /// How many containers are accounted for.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether no container is.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }
}

/// Whether container `c` was created after `since`: its whole counter was counted while
/// podmortem read the kernel log.
pub fn created_after(c: Option<&ContainerInfo>, since: Option<SystemTime>) -> bool {
    match (c.and_then(|c| c.created_at), since) {
        (Some(created), Some(since)) => created >= since,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    #[test]
    fn kills_placed_before_or_after_the_reading_cancel_out() {
        let mut l = OomLedger::default();
        l.reading("a", 0, t(0), true);
        // The kernel log placed a kill before the reading counted it.
        l.explain("a", t(0));
        l.reading("a", 1, t(10), true);
        assert_eq!(l.surplus("a"), 0);
        // Two kills counted, then placed one by one.
        l.reading("a", 3, t(20), true);
        assert_eq!(l.surplus("a"), 2);
        assert_eq!(l.with_surplus().collect::<Vec<_>>(), ["a"]);
        l.explain("a", t(0));
        l.explain("a", t(0));
        assert_eq!(l.surplus("a"), 0);
        assert!(l.take_unexplained(t(1000)).is_empty());
    }

    #[test]
    fn a_rise_nothing_explains_is_taken_once_it_is_old_enough() {
        let mut l = OomLedger::default();
        l.reading("a", 0, t(0), true);
        l.reading("a", 2, t(10), true);
        l.reading("a", 5, t(500), true);
        assert!(l.take_unexplained(t(5)).is_empty(), "not yet");
        let taken = l.take_unexplained(t(100));
        assert_eq!(taken.len(), 1);
        assert_eq!(
            (taken[0].kills, taken[0].first_seen, taken[0].counter),
            (2, t(10), 5)
        );
        assert_eq!(l.surplus("a"), 3);
        assert_eq!(l.take_unexplained(t(1000))[0].kills, 3);
        assert_eq!(l.surplus("a"), 0);
    }

    #[test]
    fn what_was_counted_before_podmortem_watched_is_not_a_kill_to_report() {
        let mut l = OomLedger::default();
        l.reading("old", 300, t(0), false);
        assert_eq!(l.surplus("old"), 0);
        l.reading("old", 301, t(10), false);
        assert_eq!(l.surplus("old"), 1);
        // A container created while watching: its first reading's kills count.
        l.reading("new", 2, t(0), true);
        assert_eq!(l.surplus("new"), 2);
        // A counter that goes down is a new cgroup.
        l.reading("old", 0, t(20), false);
        assert_eq!(l.surplus("old"), 0);
    }

    #[test]
    fn a_kill_placed_before_any_reading_is_not_counted_twice() {
        let mut l = OomLedger::default();
        l.explain("a", t(0));
        assert!(!l.knows("a"), "not read yet");
        l.reading("a", 1, t(10), true);
        assert_eq!(l.surplus("a"), 0);
        assert!(l.knows("a"));
        assert!(!l.knows("b"));
        // A container that ran before podmortem: a kill replayed from the kernel log before
        // its first reading is in that reading's count, not a rise.
        l.explain("old", t(0));
        l.reading("old", 300, t(10), false);
        assert_eq!(l.surplus("old"), 0);
        l.reading("old", 301, t(20), false);
        assert_eq!(l.surplus("old"), 1);
    }

    #[test]
    fn a_report_read_after_its_kill_was_reported_from_the_counter_is_not_a_second_kill() {
        let mut l = OomLedger::default();
        l.reading("a", 0, t(0), true);
        l.reading("a", 1, t(10), true);
        assert_eq!(l.take_unexplained(t(5000))[0].kills, 1);
        // The kill's report, read late.
        assert_eq!(l.explain("a", t(8)), Explained::AlreadyReported);
        // The next kill is a kill again, before and after its reading.
        assert_eq!(l.explain("a", t(6000)), Explained::New);
        l.reading("a", 2, t(6010), true);
        assert_eq!(l.surplus("a"), 0);
        // A kill newer than a rise not placed yet takes that rise, not a reported one.
        l.reading("a", 3, t(7000), true);
        assert_eq!(l.take_unexplained(t(7500))[0].kills, 1);
        l.reading("a", 4, t(8000), true);
        assert_eq!(l.explain("a", t(7990)), Explained::New, "counted at 8000");
        assert_eq!(l.surplus("a"), 0);
        assert_eq!(
            l.explain("a", t(6990)),
            Explained::AlreadyReported,
            "counted at 7000, reported"
        );
    }

    #[test]
    fn a_storm_of_readings_keeps_a_bounded_account() {
        let mut l = OomLedger::default();
        for i in 0..10_000u64 {
            l.reading("a", i, t(i), true);
        }
        assert_eq!(l.surplus("a"), 9_999);
        assert!(l.accounts["a"].unexplained.len() <= MAX_RISES);
        l.retain(|_| false);
        assert_eq!(l.len(), 1, "kept while it holds unexplained kills");
        l.take_unexplained(t(20_000));
        l.retain(|_| false);
        assert!(l.is_empty());
    }
}
