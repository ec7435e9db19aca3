//! Counts repeats of the same finding (same fingerprint): first seen, last seen, how many.

use std::collections::HashMap;
use std::time::SystemTime;

use super::Finding;

/// How many fingerprints are remembered; the least recently seen is forgotten past this.
pub const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Seen {
    first: SystemTime,
    last: SystemTime,
    count: u64,
}

/// A bounded table of fingerprints seen.
#[derive(Debug)]
pub struct Occurrences {
    seen: HashMap<String, Seen>,
    capacity: usize,
}

impl Occurrences {
    /// A table remembering at most `capacity` fingerprints.
    pub fn new(capacity: usize) -> Self {
        Occurrences {
            seen: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records the occurrences of `finding` (seen at its `last_seen`; it stands for `count` of
    /// them, at least one), and sets its `first_seen` and `count` from the history.
    pub fn record(&mut self, finding: &mut Finding) {
        if !self.seen.contains_key(&finding.fingerprint) && self.seen.len() >= self.capacity {
            self.forget_oldest();
        }
        let at = finding.last_seen;
        let seen = self.seen.entry(finding.fingerprint.clone()).or_insert(Seen {
            first: at,
            last: at,
            count: 0,
        });
        // The end of a condition is not another occurrence of it.
        if !finding.resolved {
            seen.count += finding.count.max(1);
        }
        seen.first = seen.first.min(at);
        seen.last = seen.last.max(at);
        finding.first_seen = seen.first;
        finding.count = seen.count;
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .seen
            .iter()
            .min_by_key(|(_, s)| s.last)
            .map(|(fp, _)| fp.clone());
        if let Some(fp) = oldest {
            self.seen.remove(&fp);
        }
    }

    /// How many fingerprints are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{FindingKind, Severity, Subject};
    use std::time::Duration;

    fn finding(fp: &str, secs: u64) -> Finding {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        Finding {
            kind: FindingKind::ContainerExited,
            severity: Severity::Warning,
            subject: Subject::Node { node: "n".into() },
            summary: String::new(),
            evidence: vec![],
            hint: String::new(),
            fingerprint: fp.into(),
            first_seen: at,
            last_seen: at,
            count: 0,
            resolved: false,
            owner: None,
        }
    }

    #[test]
    fn repeats_count_up_and_keep_first_seen() {
        let mut occ = Occurrences::new(10);
        let mut a = finding("a", 100);
        occ.record(&mut a);
        assert_eq!((a.count, a.first_seen), (1, a.last_seen));
        let mut again = finding("a", 160);
        occ.record(&mut again);
        assert_eq!(again.count, 2);
        assert_eq!(
            again.first_seen,
            SystemTime::UNIX_EPOCH + Duration::from_secs(100)
        );
        let mut b = finding("b", 170);
        occ.record(&mut b);
        assert_eq!(b.count, 1);
    }

    #[test]
    fn stays_bounded_forgetting_the_least_recent() {
        let mut occ = Occurrences::new(2);
        for (fp, t) in [("a", 1), ("b", 2), ("c", 3)] {
            occ.record(&mut finding(fp, t));
        }
        assert_eq!(occ.len(), 2);
        let mut a = finding("a", 4);
        occ.record(&mut a);
        assert_eq!(a.count, 1, "a was forgotten when c arrived");
    }
}
