//! Detection: turns source events into findings. Each finding kind has its own detector module;
//! the [`Engine`](crate::engine::Engine) feeds every detector every event, in order, together
//! with the current [`Inventory`].

pub mod container_exit;
pub mod exec_attribution;
pub mod exit_code;
pub mod finding;
pub mod format;
pub mod host_fs_readonly;
pub mod missing_host_dep;
pub mod occurrences;
pub mod oom_evidence;
pub mod oom_kill;
pub mod oom_ledger;
pub mod oom_risk;
pub mod readonly_cause;
pub mod readonly_write;

use std::time::SystemTime;

pub use self::finding::{Evidence, EvidenceSource, Finding, FindingKind, Severity, Subject};
use crate::inventory::Inventory;
use crate::sources::SourceEvent;

/// What a detector may look at besides the event.
#[derive(Debug)]
pub struct Context<'a> {
    /// The node podmortem runs on.
    pub node: &'a str,
    /// The pods and containers on it, with the current event already applied.
    pub inventory: &'a Inventory,
    /// The current time.
    pub now: SystemTime,
}

/// A detector of one kind of problem.
pub trait Detector: Send {
    /// The detector's name, for logs.
    fn name(&self) -> &'static str;

    /// Looks at one source event; pushes any findings to `out`.
    fn on_event(&mut self, event: &SourceEvent, cx: &Context<'_>, out: &mut Vec<Finding>);

    /// Called periodically, for findings that depend on time passing.
    fn on_tick(&mut self, _cx: &Context<'_>, _out: &mut Vec<Finding>) {}

    /// Called once when podmortem stops, after the last event: report what is still held back.
    fn on_shutdown(&mut self, _cx: &Context<'_>, _out: &mut Vec<Finding>) {}

    /// The kernel log sequence number of the oldest record this detector still holds back
    /// without having reported it, and the timestamp cursor just before that record: the
    /// engine records the log as handled only up to before it.
    fn kmsg_held_from(&self) -> Option<(u64, Option<crate::sources::kmsg::syslog::UsecCursor>)> {
        None
    }
}
