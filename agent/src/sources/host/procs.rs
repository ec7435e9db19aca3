//! Which programs run on the host, by process command name.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::{read_bounded, HostError};

/// At most this many `/proc` entries are looked at, so a broken procfs cannot keep a scan
/// going forever (`pid_max` is at most 4194304; a node has far fewer processes).
const MAX_SCANNED: usize = 1_000_000;

/// The kernel keeps this many bytes of a command name (`TASK_COMM_LEN` less its NUL).
pub const COMM_LEN: usize = 15;

/// The most read of a `comm` file (16 bytes from the kernel).
const MAX_COMM: u64 = 4096;

/// One scan of the host's processes: each command name (`/proc/<pid>/comm`) and the lowest pid
/// running it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonScan {
    /// Command names (at most [`COMM_LEN`] bytes) → lowest pid.
    comms: BTreeMap<Vec<u8>, u32>,
    unreadable: usize,
    complete: bool,
}

impl DaemonScan {
    /// The lowest pid whose command name is `name`, compared as the kernel stores names: cut to
    /// their first 15 bytes (`a-daemon-with-a-long-name` runs as `a-daemon-with-a`). Kernel
    /// threads count too. `None` for an empty name.
    pub fn running(&self, name: &str) -> Option<u32> {
        if name.is_empty() {
            return None;
        }
        self.comms.get(truncate_comm(name.as_bytes())).copied()
    }

    /// Processes whose `comm` could not be read (they exited during the scan, or access was
    /// refused): a name not [`running`](Self::running) may be one of them.
    pub fn unreadable(&self) -> usize {
        self.unreadable
    }

    /// False when the scan stopped at its limit of 1,000,000 `/proc` entries.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// The number of distinct command names seen.
    pub fn len(&self) -> usize {
        self.comms.len()
    }

    /// True when no process was seen.
    pub fn is_empty(&self) -> bool {
        self.comms.is_empty()
    }

    /// Each command name (invalid UTF-8 replaced) and the lowest pid running it, by name.
    pub fn iter(&self) -> impl Iterator<Item = (Cow<'_, str>, u32)> + '_ {
        self.comms
            .iter()
            .map(|(comm, &pid)| (String::from_utf8_lossy(comm), pid))
    }
}

fn truncate_comm(comm: &[u8]) -> &[u8] {
    &comm[..comm.len().min(COMM_LEN)]
}

/// Scans `<root>/proc/<pid>/comm`. Only an unreadable `/proc` is an error.
pub(super) fn scan(root: &Path) -> Result<DaemonScan, HostError> {
    let proc_dir = root.join("proc");
    let entries = fs::read_dir(&proc_dir).map_err(|e| HostError::io(&proc_dir, e))?;
    let mut scan = DaemonScan {
        complete: true,
        ..DaemonScan::default()
    };
    for (index, entry) in entries.enumerate() {
        if index >= MAX_SCANNED {
            tracing::warn!(path = %proc_dir.display(), "stopped scanning after {MAX_SCANNED} entries");
            scan.complete = false;
            break;
        }
        let Ok(entry) = entry else {
            scan.unreadable += 1;
            continue;
        };
        let Some(pid) = entry.file_name().to_str().and_then(parse_pid) else {
            continue;
        };
        let comm = match read_bounded(&entry.path().join("comm"), MAX_COMM) {
            Ok(comm) => comm,
            Err(error) => {
                tracing::trace!(%error, "skipped a process");
                scan.unreadable += 1;
                continue;
            }
        };
        let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
        let lowest = scan.comms.entry(truncate_comm(comm).to_vec()).or_insert(pid);
        *lowest = (*lowest).min(pid);
    }
    Ok(scan)
}

/// A `/proc` directory name that is a pid: ASCII digits only.
fn parse_pid(name: &str) -> Option<u32> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}
