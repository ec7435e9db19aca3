//! Memory cgroup readers (v1 and v2).
//!
//! Every reader works below a host root (`/` on the host, `/host` in a DaemonSet), so the same
//! code reads the node and the fixture trees. All of it is synchronous `std::fs`: callers run it
//! on a blocking thread. Nothing here panics on what it reads: a value that does not parse is an
//! error (for the one required file) or an absent field (for everything else).
//!
//! Paths read from `/proc/<pid>/cgroup` are relative to the *reader's* cgroup namespace, so the
//! agent must run in the host's cgroup namespace for them to name host cgroups.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Which cgroup hierarchy holds the memory controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupVersion {
    /// Legacy hierarchy: the memory controller at `/sys/fs/cgroup/memory` (also "hybrid" mode).
    V1,
    /// Unified hierarchy at `/sys/fs/cgroup`.
    V2,
}

/// Where cgroup hierarchies are mounted, relative to the host root.
const CGROUP_MOUNT: &str = "sys/fs/cgroup";

/// v1 limits at or above this are "no limit": the kernel reports its page-counter maximum,
/// `i64::MAX` rounded down to a page (9223372036854771712 with 4 KiB pages), which is above it.
const V1_UNLIMITED: u64 = 1 << 62;

/// What can go wrong reading cgroup files. Every variant names the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The cgroup (or process) no longer exists.
    #[error("{0} no longer exists")]
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
    /// Neither a v1 nor a v2 memory hierarchy was found under the host root.
    #[error("no memory cgroup hierarchy: no {v1} (v1) and no `memory` in {v2} (v2)")]
    NoMemoryHierarchy {
        /// The v1 file looked for.
        v1: PathBuf,
        /// The v2 controller list looked at.
        v2: PathBuf,
    },
}

impl CgroupError {
    /// True when the cgroup (or process) no longer exists, as when a container is removed
    /// between listing and reading.
    pub fn is_gone(&self) -> bool {
        matches!(self, CgroupError::NotFound(_))
    }
}

/// A text that could not be parsed; the caller adds the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// The host's memory cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFs {
    host_root: PathBuf,
    version: CgroupVersion,
    memory_root: PathBuf,
}

impl CgroupFs {
    /// Detects the memory hierarchy under `host_root`: v1 when `<root>/sys/fs/cgroup/memory/`
    /// holds `memory.usage_in_bytes` (this includes "hybrid" mode, where an empty v2 is mounted at
    /// `/sys/fs/cgroup/unified`); v2 when `<root>/sys/fs/cgroup/cgroup.controllers` lists
    /// `memory`. Otherwise an error naming both paths tried.
    pub fn detect(host_root: &Path) -> Result<CgroupFs, CgroupError> {
        let mount = host_root.join(CGROUP_MOUNT);
        let v1_root = mount.join("memory");
        let v1 = v1_root.join("memory.usage_in_bytes");
        let new = |version, memory_root| CgroupFs {
            host_root: host_root.to_path_buf(),
            version,
            memory_root,
        };
        if v1.is_file() {
            return Ok(new(CgroupVersion::V1, v1_root));
        }
        let v2 = mount.join("cgroup.controllers");
        match fs::read_to_string(&v2) {
            Ok(text) if text.split_whitespace().any(|c| c == "memory") => {
                return Ok(new(CgroupVersion::V2, mount));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(CgroupError::Read { path: v2, source }),
        }
        Err(CgroupError::NoMemoryHierarchy { v1, v2 })
    }

    /// The hierarchy's version.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The directory of the memory hierarchy's root cgroup.
    pub fn hierarchy(&self) -> &Path {
        &self.memory_root
    }

    /// Directory of a cgroup given its path inside the hierarchy (e.g.
    /// `/kubepods/burstable/pod<uid>/<id>`). `.` and empty components are dropped and `..` never
    /// climbs above the hierarchy's root, so the result always lies inside it.
    pub fn dir(&self, cgroup: &str) -> PathBuf {
        let mut parts: Vec<&str> = Vec::new();
        for part in cgroup.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                part => parts.push(part),
            }
        }
        let mut dir = self.memory_root.clone();
        dir.extend(parts);
        dir
    }

    /// The memory cgroup of a process, from `<root>/proc/<pid>/cgroup`: on v1 the line whose
    /// controller list contains `memory` (`4:memory:/kubepods/...`), on v2 the `0::/path` line.
    /// A process that has exited gives [`CgroupError::NotFound`].
    pub fn cgroup_of_pid(&self, pid: u32) -> Result<String, CgroupError> {
        let path = self.host_root.join("proc").join(pid.to_string()).join("cgroup");
        let text = read_file(&path)?;
        match parse_proc_cgroup(&text, self.version) {
            Some(cgroup) => Ok(cgroup.to_owned()),
            None => Err(CgroupError::Parse {
                path,
                message: "no memory cgroup line".to_owned(),
            }),
        }
    }

    /// Reads the memory files of one cgroup. The usage file is required: when the cgroup's
    /// directory is gone the error [`is_gone`](CgroupError::is_gone). Every other file is
    /// optional: missing or unparsable, its fields are `None`.
    pub fn read_memory(&self, cgroup: &str) -> Result<MemoryStats, CgroupError> {
        let dir = self.dir(cgroup);
        match self.version {
            CgroupVersion::V1 => read_v1(&dir),
            CgroupVersion::V2 => read_v2(&dir),
        }
    }
}

/// The memory readings of one cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryStats {
    /// The hierarchy they come from.
    pub version: CgroupVersion,
    /// Memory charged to the cgroup (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    pub usage_bytes: u64,
    /// The hard limit (v2 `memory.max`, v1 `memory.limit_in_bytes`); `None` when unlimited.
    pub limit_bytes: Option<u64>,
    /// The highest usage recorded (v2 `memory.peak`, absent before Linux 5.19; v1
    /// `memory.max_usage_in_bytes`).
    pub peak_bytes: Option<u64>,
    /// Inactive page cache (`memory.stat`: v2 `inactive_file`, v1 `total_inactive_file`).
    pub inactive_file_bytes: Option<u64>,
    /// How often usage hit the limit (v1 `memory.failcnt`).
    pub failcnt: Option<u64>,
    /// How often the cgroup was out of memory (v2 `memory.events` `oom`).
    pub oom: Option<u64>,
    /// Processes killed by the OOM killer (v2 `memory.events` `oom_kill`, v1
    /// `memory.oom_control` `oom_kill`).
    pub oom_kill: Option<u64>,
    /// Whole-cgroup OOM kills (v2 `memory.events` `oom_group_kill`, Linux 5.17+).
    pub oom_group_kill: Option<u64>,
    /// How often usage was about to exceed `memory.max` (v2 `memory.events` `max`).
    pub max_events: Option<u64>,
    /// How often usage exceeded `memory.high` (v2 `memory.events` `high`).
    pub high_events: Option<u64>,
    /// Whether the cgroup is under OOM right now (v1 `memory.oom_control` `under_oom`).
    pub under_oom: Option<bool>,
    /// Memory pressure stall information (v2 `memory.pressure`).
    pub pressure: Option<Pressure>,
}

impl MemoryStats {
    /// Usage minus inactive page cache: kubelet's "working set", the figure evictions and
    /// `kubectl top` use. Saturates at 0.
    pub fn working_set_bytes(&self) -> u64 {
        self.usage_bytes
            .saturating_sub(self.inactive_file_bytes.unwrap_or(0))
    }
}

/// A pressure stall information file: `/proc/pressure/<resource>` or a v2 cgroup's
/// `<resource>.pressure`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pressure {
    /// Time in which at least some tasks were stalled.
    pub some: PressureLine,
    /// Time in which all non-idle tasks were stalled at once; absent from CPU pressure before
    /// Linux 5.13.
    pub full: Option<PressureLine>,
}

/// One line of a pressure file.
#[derive(Debug, Clone, PartialEq)]
pub struct PressureLine {
    /// Percentage of the last 10 seconds spent stalled.
    pub avg10: f64,
    /// Percentage of the last 60 seconds spent stalled.
    pub avg60: f64,
    /// Percentage of the last 300 seconds spent stalled.
    pub avg300: f64,
    /// Total stall time, in microseconds.
    pub total_us: u64,
}

/// Parses a pressure file (`some avg10=.. avg60=.. avg300=.. total=..` and an optional `full`
/// line). Lines with another tag are skipped; a malformed `some`/`full` line is an error.
///
/// procfs-core's parser is not used: it slices a fixed offset into each line (a truncated line
/// panics), keeps only `f32`, and requires a `full` line.
pub fn parse_pressure(text: &str) -> Result<Pressure, ParseError> {
    let (mut some, mut full) = (None, None);
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        if slot.is_some() {
            return Err(ParseError(format!("repeated line {:?}", snippet(line))));
        }
        *slot = Some(
            parse_pressure_fields(fields)
                .ok_or_else(|| ParseError(format!("bad line {:?}", snippet(line))))?,
        );
    }
    let some = some.ok_or_else(|| ParseError("no `some` line".to_owned()))?;
    Ok(Pressure { some, full })
}

fn parse_pressure_fields<'a>(fields: impl Iterator<Item = &'a str>) -> Option<PressureLine> {
    let (mut avg10, mut avg60, mut avg300, mut total_us) = (None, None, None, None);
    for field in fields {
        let (key, value) = field.split_once('=')?;
        match key {
            "avg10" => avg10 = Some(parse_percent(value)?),
            "avg60" => avg60 = Some(parse_percent(value)?),
            "avg300" => avg300 = Some(parse_percent(value)?),
            "total" => total_us = Some(parse_u64(value)?),
            _ => {}
        }
    }
    Some(PressureLine {
        avg10: avg10?,
        avg60: avg60?,
        avg300: avg300?,
        total_us: total_us?,
    })
}

/// A decimal like `12.34`: digits and dots only (no sign, exponent, `inf` or `NaN`).
fn parse_percent(text: &str) -> Option<f64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    text.parse().ok()
}

/// Converts the cgroup path CRI reports (`cgroupsPath` in verbose ContainerStatus info) to a
/// path inside the hierarchy.
///
/// cgroupfs driver paths (`/kubepods/burstable/pod<uid>/<id>`) are returned as is. The systemd
/// driver's `slice:prefix:name` form (`kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`)
/// expands as runc does: each `-` in the slice name is a parent level (systemd.slice(5)), and
/// the unit is `<prefix>-<name>.scope` (or `<name>` when it already ends in `.slice`), giving
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`.
/// An empty slice means `system.slice`, as in runc. `None` for anything else.
pub fn cgroup_from_cri(cgroups_path: &str) -> Option<String> {
    if cgroups_path.starts_with('/') {
        return Some(cgroups_path.to_owned());
    }
    let mut parts = cgroups_path.split(':');
    let (slice, prefix, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || name.is_empty() || name.contains('/') || prefix.contains('/') {
        return None;
    }
    let mut path = expand_slice(if slice.is_empty() { "system.slice" } else { slice })?;
    if !path.ends_with('/') {
        path.push('/');
    }
    if name.ends_with(".slice") {
        path.push_str(name);
    } else if prefix.is_empty() {
        path.push_str(&format!("{name}.scope"));
    } else {
        path.push_str(&format!("{prefix}-{name}.scope"));
    }
    Some(path)
}

/// runc's `ExpandSlice`: `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`, `-.slice` → `/`.
fn expand_slice(slice: &str) -> Option<String> {
    let base = slice.strip_suffix(".slice")?;
    if base.contains('/') {
        return None;
    }
    if base == "-" {
        return Some("/".to_owned());
    }
    let (mut path, mut prefix) = (String::new(), String::new());
    for component in base.split('-') {
        if component.is_empty() {
            return None;
        }
        path.push_str(&format!("/{prefix}{component}.slice"));
        prefix.push_str(component);
        prefix.push('-');
    }
    Some(path)
}

/// The memory cgroup in a `/proc/<pid>/cgroup` text (`hierarchy-id:controllers:path` lines).
fn parse_proc_cgroup(text: &str, version: CgroupVersion) -> Option<&str> {
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let matches = match version {
            CgroupVersion::V1 => controllers.split(',').any(|c| c == "memory"),
            CgroupVersion::V2 => id == "0" && controllers.is_empty(),
        };
        (matches && path.starts_with('/')).then_some(path)
    })
}

fn read_v2(dir: &Path) -> Result<MemoryStats, CgroupError> {
    let usage_bytes = read_usage(dir, "memory.current")?;
    let events = read_optional(dir, "memory.events").unwrap_or_default();
    Ok(MemoryStats {
        version: CgroupVersion::V2,
        usage_bytes,
        limit_bytes: read_optional(dir, "memory.max").and_then(|text| {
            if text.trim() == "max" {
                None
            } else {
                parse_u64(&text)
            }
        }),
        peak_bytes: read_optional(dir, "memory.peak").and_then(|text| parse_u64(&text)),
        inactive_file_bytes: read_optional(dir, "memory.stat")
            .and_then(|text| keyed_value(&text, "inactive_file")),
        failcnt: None,
        oom: keyed_value(&events, "oom"),
        oom_kill: keyed_value(&events, "oom_kill"),
        oom_group_kill: keyed_value(&events, "oom_group_kill"),
        max_events: keyed_value(&events, "max"),
        high_events: keyed_value(&events, "high"),
        under_oom: None,
        pressure: read_optional(dir, "memory.pressure").and_then(|text| parse_pressure(&text).ok()),
    })
}

fn read_v1(dir: &Path) -> Result<MemoryStats, CgroupError> {
    let usage_bytes = read_usage(dir, "memory.usage_in_bytes")?;
    let oom_control = read_optional(dir, "memory.oom_control").unwrap_or_default();
    Ok(MemoryStats {
        version: CgroupVersion::V1,
        usage_bytes,
        limit_bytes: read_optional(dir, "memory.limit_in_bytes")
            .and_then(|text| parse_u64(&text))
            .filter(|&limit| limit < V1_UNLIMITED),
        peak_bytes: read_optional(dir, "memory.max_usage_in_bytes").and_then(|text| parse_u64(&text)),
        inactive_file_bytes: read_optional(dir, "memory.stat")
            .and_then(|text| keyed_value(&text, "total_inactive_file")),
        failcnt: read_optional(dir, "memory.failcnt").and_then(|text| parse_u64(&text)),
        oom: None,
        oom_kill: keyed_value(&oom_control, "oom_kill"),
        oom_group_kill: None,
        max_events: None,
        high_events: None,
        under_oom: match keyed_value(&oom_control, "under_oom") {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        pressure: None,
    })
}

/// Reads the required usage file; when it is missing because the directory is gone, the error
/// is [`CgroupError::NotFound`] naming the directory.
fn read_usage(dir: &Path, name: &str) -> Result<u64, CgroupError> {
    let path = dir.join(name);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if io_gone(&e) && !dir.is_dir() => return Err(CgroupError::NotFound(dir.to_path_buf())),
        Err(source) => return Err(CgroupError::Read { path, source }),
    };
    parse_u64(&text).ok_or_else(|| CgroupError::Parse {
        path,
        message: format!("not a byte count: {:?}", snippet(&text)),
    })
}

/// Reads an optional file: `None` when it is missing or unreadable.
fn read_optional(dir: &Path, name: &str) -> Option<String> {
    fs::read_to_string(dir.join(name)).ok()
}

/// Reads a whole file, a vanished one giving [`CgroupError::NotFound`].
fn read_file(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| {
        if io_gone(&source) {
            CgroupError::NotFound(path.to_path_buf())
        } else {
            CgroupError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// True for the errors a file gives when what it describes has gone: not found, a removed
/// cgroup's open file (`ENODEV`), an exited process's open file (`ESRCH`).
pub(crate) fn io_gone(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound
        || matches!(error.raw_os_error(), Some(code) if code == nix::libc::ENODEV || code == nix::libc::ESRCH)
}

/// A decimal `u64`, surrounding whitespace allowed: digits only (no sign), no overflow.
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The value of `key` in a `key value` file (memory.stat, memory.events, memory.oom_control):
/// the first well-formed line for it; malformed and other lines are skipped.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some(k), Some(value), None) if k == key => parse_u64(value),
            _ => None,
        }
    })
}

/// The start of a text, for error messages.
pub(crate) fn snippet(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests;
