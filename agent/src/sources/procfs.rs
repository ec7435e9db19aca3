//! Node-wide readings from procfs: memory, pressure, boot id and the largest processes.
//!
//! Every reader works below a host root (`/` on the host, `/host` in a DaemonSet, where the
//! host's `/proc` must be mounted at `/host/proc`). All of it is synchronous `std::fs`: callers
//! run it on a blocking thread. Nothing here panics on what it reads.
//!
//! The texts are parsed here rather than with procfs-core's `Meminfo` and `Stat`: those slice
//! and multiply without checks, so a malformed line (a non-ASCII key in meminfo, a huge value,
//! a `stat` line with its parentheses out of place) panics instead of failing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::cgroup::{io_gone, parse_pressure, parse_u64, snippet, Pressure};

/// At most this many `/proc` entries are looked at by [`top_memory_processes`].
const MAX_SCANNED: usize = 1 << 18;

/// What can go wrong reading procfs. Every variant names the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    /// The file does not exist (a kernel without the feature, or a process that has exited).
    #[error("{0} does not exist")]
    NotFound(PathBuf),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file held something unexpected.
    #[error("cannot parse {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// [`read_pressure`] was asked for a name that is not a pressure resource.
    #[error("{0} is not a pressure file name")]
    InvalidResource(PathBuf),
}

impl ProcfsError {
    /// True when the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ProcfsError::NotFound(_))
    }
}

/// Node memory and memory pressure, from `<root>/proc/meminfo` and `<root>/proc/pressure/memory`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeMemory {
    /// Memory pressure; `None` when the kernel has no PSI (or it is disabled).
    pub pressure: Option<Pressure>,
    /// `MemTotal`.
    pub total_bytes: u64,
    /// `MemAvailable`: what can be allocated without swapping.
    pub available_bytes: u64,
    /// `MemFree`.
    pub free_bytes: u64,
    /// `SwapTotal`.
    pub swap_total_bytes: u64,
    /// `SwapFree`.
    pub swap_free_bytes: u64,
}

/// Reads node memory and memory pressure. All five meminfo fields are required; a pressure file
/// that is missing or unreadable gives `pressure: None`.
pub fn read_node_memory(host_root: &Path) -> Result<NodeMemory, ProcfsError> {
    let path = host_root.join("proc/meminfo");
    let text = read_file(&path)?;
    let field = |key: &str| {
        meminfo_bytes(&text, key).ok_or_else(|| ProcfsError::Parse {
            path: path.clone(),
            message: format!("no valid {key} line"),
        })
    };
    let pressure = match read_pressure(host_root, "memory") {
        Ok(pressure) => Some(pressure),
        Err(error) => {
            tracing::debug!(%error, "no node memory pressure");
            None
        }
    };
    Ok(NodeMemory {
        pressure,
        total_bytes: field("MemTotal")?,
        available_bytes: field("MemAvailable")?,
        free_bytes: field("MemFree")?,
        swap_total_bytes: field("SwapTotal")?,
        swap_free_bytes: field("SwapFree")?,
    })
}

/// Reads `<root>/proc/pressure/<resource>` (`memory`, `cpu`, `io`, `irq`). A name that is not
/// all lowercase ASCII letters is refused; a kernel without PSI gives
/// [`ProcfsError::NotFound`].
pub fn read_pressure(host_root: &Path, resource: &str) -> Result<Pressure, ProcfsError> {
    let path = host_root.join("proc/pressure").join(resource);
    if resource.is_empty() || !resource.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(ProcfsError::InvalidResource(path));
    }
    let text = read_file(&path)?;
    parse_pressure(&text).map_err(|e| ProcfsError::Parse {
        path,
        message: e.to_string(),
    })
}

/// The kernel's boot id (`<root>/proc/sys/kernel/random/boot_id`), trimmed: a UUID that changes
/// at every boot.
pub fn boot_id(host_root: &Path) -> Result<String, ProcfsError> {
    let path = host_root.join("proc/sys/kernel/random/boot_id");
    let text = read_file(&path)?;
    let id = text.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(ProcfsError::Parse {
            path,
            message: format!("not a boot id: {:?}", snippet(id)),
        });
    }
    Ok(id.to_owned())
}

/// A process and its resident memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessMemory {
    /// Process id (in the host's pid namespace when the host's `/proc` is read).
    pub pid: u32,
    /// The command name (`comm`, at most 15 bytes for user processes); invalid UTF-8 is replaced.
    pub comm: String,
    /// Resident set size.
    pub rss_bytes: u64,
}

/// Processes with the largest resident memory on the node, largest first (ties by pid), at most
/// `n`. Reads `<root>/proc/<pid>/stat`, which holds both `comm` and `rss` (the same figure as
/// `statm`'s resident pages), in one read per process. Processes that vanish mid-scan or whose
/// file does not parse are skipped, as are those with no resident memory (kernel threads). At
/// most 262144 `/proc` entries are looked at.
pub fn top_memory_processes(host_root: &Path, n: usize) -> Result<Vec<ProcessMemory>, ProcfsError> {
    let proc_dir = host_root.join("proc");
    let entries = fs::read_dir(&proc_dir).map_err(|source| io_error(&proc_dir, source))?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let page_size = procfs::page_size();
    // A min-heap on (rss, lowest pid first) holding the best `n` seen so far.
    let mut top = BinaryHeap::with_capacity(n + 1);
    for entry in entries.take(MAX_SCANNED) {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(parse_u64) else {
            continue;
        };
        let Ok(pid) = u32::try_from(pid) else { continue };
        let Ok(bytes) = fs::read(entry.path().join("stat")) else {
            continue;
        };
        let Some((comm, rss_pages)) = parse_stat(&String::from_utf8_lossy(&bytes)) else {
            continue;
        };
        if rss_pages == 0 {
            continue;
        }
        top.push(Reverse((rss_pages.saturating_mul(page_size), Reverse(pid), comm)));
        if top.len() > n {
            top.pop();
        }
    }
    Ok(top
        .into_sorted_vec()
        .into_iter()
        .map(|Reverse((rss_bytes, Reverse(pid), comm))| ProcessMemory { pid, comm, rss_bytes })
        .collect())
}

/// `comm` and `rss` (pages) from a `/proc/<pid>/stat` line. `comm` is between the first `(` and
/// the last `)`, as it may itself hold parentheses and spaces; `rss` is the 24th field.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?;
    // Fields after comm start at the 3rd (state); rss is the 24th.
    let rss = text.get(close + 1..)?.split_whitespace().nth(24 - 3)?;
    Some((comm.to_owned(), parse_u64(rss)?))
}

/// A meminfo value in bytes (`Key:  123 kB`, or a bare count for the few unitless keys).
fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        if k != key {
            return None;
        }
        let mut fields = rest.split_whitespace();
        let value = parse_u64(fields.next()?)?;
        match (fields.next(), fields.next()) {
            (None, _) => Some(value),
            (Some("kB"), None) => value.checked_mul(1024),
            _ => None,
        }
    })
}

fn read_file(path: &Path) -> Result<String, ProcfsError> {
    fs::read_to_string(path).map_err(|source| io_error(path, source))
}

fn io_error(path: &Path, source: io::Error) -> ProcfsError {
    if io_gone(&source) {
        ProcfsError::NotFound(path.to_path_buf())
    } else {
        ProcfsError::Read {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::cgroup::PressureLine;
    use proptest::prelude::*;

    /// The fixture host root: its `proc/` is `tests/fixtures/proc`.
    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    #[test]
    fn node_memory_from_fixture() {
        let memory = read_node_memory(&fixtures()).unwrap();
        assert_eq!(
            memory,
            NodeMemory {
                pressure: Some(Pressure {
                    some: PressureLine {
                        avg10: 0.0,
                        avg60: 0.0,
                        avg300: 0.0,
                        total_us: 4722
                    },
                    full: Some(PressureLine {
                        avg10: 0.0,
                        avg60: 0.0,
                        avg300: 0.0,
                        total_us: 3971
                    }),
                }),
                total_bytes: 24_683_656 * 1024,
                available_bytes: 23_887_036 * 1024,
                free_bytes: 22_010_944 * 1024,
                swap_total_bytes: 0,
                swap_free_bytes: 0,
            }
        );
    }

    #[test]
    fn node_memory_without_psi_or_with_bad_meminfo() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("proc")).unwrap();
        let meminfo = root.path().join("proc/meminfo");
        fs::write(
            &meminfo,
            "MemTotal: 2048 kB\nMemFree: 1 kB\nMemAvailable: 2 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
        )
        .unwrap();
        let memory = read_node_memory(root.path()).unwrap();
        assert_eq!(memory.pressure, None);
        assert_eq!(memory.total_bytes, 2 << 20);

        fs::write(&meminfo, "MemTotal: 2048 kB\nMemFree: 1 kB\nMemAvail").unwrap();
        let err = read_node_memory(root.path()).unwrap_err();
        assert!(matches!(err, ProcfsError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("MemAvailable"), "{err}");

        fs::remove_file(&meminfo).unwrap();
        assert!(read_node_memory(root.path()).unwrap_err().is_not_found());
    }

    #[test]
    fn meminfo_values() {
        let text = "MemTotal:       24683656 kB\nHugePages_Total:       7\nBad: 1 MB\nHuge: 18446744073709551615 kB\n\
                    Two: 1 kB 2\nNeg: -1 kB\n";
        assert_eq!(meminfo_bytes(text, "MemTotal"), Some(24_683_656 * 1024));
        assert_eq!(meminfo_bytes(text, "HugePages_Total"), Some(7));
        for absent in ["Bad", "Huge", "Two", "Neg", "Missing", "MemTotal:", ""] {
            assert_eq!(meminfo_bytes(text, absent), None, "{absent}");
        }
    }

    #[test]
    fn pressure_files() {
        let cpu = read_pressure(&fixtures(), "cpu").unwrap();
        assert_eq!(
            cpu.some,
            PressureLine {
                avg10: 7.35,
                avg60: 1.71,
                avg300: 3.36,
                total_us: 263_784_410
            }
        );
        assert!(read_pressure(&fixtures(), "io").unwrap_err().is_not_found());
        for bad in ["", "../meminfo", "Memory", "memory/"] {
            let err = read_pressure(&fixtures(), bad).unwrap_err();
            assert!(matches!(err, ProcfsError::InvalidResource(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn boot_id_from_fixture() {
        assert_eq!(
            boot_id(&fixtures()).unwrap(),
            "11598da2-a035-4eaa-ab1c-ed9634c1612f"
        );
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("proc/sys/kernel/random/boot_id");
        assert!(boot_id(root.path()).unwrap_err().is_not_found());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "not a uuid\n").unwrap();
        assert!(matches!(boot_id(root.path()), Err(ProcfsError::Parse { .. })));
    }

    #[test]
    fn top_processes_from_fixture() {
        let page = procfs::page_size();
        let top = top_memory_processes(&fixtures(), 10).unwrap();
        let want = [
            (13224, "cargo", 15991),
            (1, "process_api", 1955),
            (4711, "(sd-pam)", 946),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|&(pid, comm, pages)| ProcessMemory {
                pid,
                comm: comm.to_owned(),
                rss_bytes: pages * page,
            })
            .collect();
        // 10 is a kernel thread (no rss), 4712 is truncated.
        assert_eq!(top, want);
        assert_eq!(top_memory_processes(&fixtures(), 2).unwrap(), want[..2]);
        assert_eq!(top_memory_processes(&fixtures(), 0).unwrap(), []);

        let empty = tempfile::tempdir().unwrap();
        assert!(top_memory_processes(empty.path(), 3).unwrap_err().is_not_found());
    }

    #[test]
    fn stat_lines() {
        let stat = "7 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 99 21";
        assert_eq!(parse_stat(stat), Some(("a) b (c)".to_owned(), 99)));
        for bad in [
            "",
            "(",
            ")(",
            "1 (x)",
            "1 (x) S",
            ") 1 (",
            "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 -5",
        ] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn real_host() {
        let root = Path::new("/");
        if !root.join("proc/meminfo").is_file() {
            println!("skipped: no /proc/meminfo");
            return;
        }
        let memory = read_node_memory(root).unwrap();
        assert!(memory.total_bytes > 0 && memory.available_bytes <= memory.total_bytes);
        assert!(!boot_id(root).unwrap().is_empty());
        let top = top_memory_processes(root, 5).unwrap();
        assert!(!top.is_empty() && top.len() <= 5);
        assert!(
            top.windows(2).all(|w| w[0].rss_bytes >= w[1].rss_bytes),
            "{top:?}"
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in any::<String>(), pick in "[-a-zA-Z():_ \\n0-9]{0,120}") {
            for text in [text.as_str(), pick.as_str()] {
                let _ = parse_stat(text);
                let _ = meminfo_bytes(text, "MemTotal");
                let _ = parse_pressure(text);
            }
        }
    }
}
