//! A process's mount table, from `/proc/<pid>/mountinfo`, and which mount covers a path: what
//! podmortem needs to say why a write failed with `EROFS` (the mount is read-only, or its
//! filesystem is, or ext4 turned it read-only after an error).
//!
//! Each line of the file describes one mount (proc(5)):
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2) (3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
//! ```
//!
//! 1. mount ID;
//! 2. parent ID (the mount this one sits on);
//! 3. `major:minor` of the filesystem's device;
//! 4. root: the directory of the filesystem mounted here (not `/` for a bind mount of a
//!    subdirectory or a file);
//! 5. mount point, relative to the process's root;
//! 6. per-mount options (`ro` or `rw` first);
//! 7. zero or more optional fields (`shared:N`, `master:N`, `propagate_from:N`, `unbindable`);
//! 8. a single `-`;
//! 9. filesystem type;
//! 10. mount source (`none` when there is none);
//! 11. per-superblock options (`ro` or `rw` first, then the filesystem's own).
//!
//! Fields are separated by single spaces. In the paths, the type and the source the kernel
//! writes space, tab, newline and backslash as octal escapes (`\040`, `\011`, `\012`, `\134`);
//! in superblock option values it also escapes commas. Every other byte is written raw, so a
//! path need not be UTF-8: escapes are decoded on bytes and the result converted lossily.
//!
//! Read-only has three levels: the mount (`ro` in field 6, e.g. a container's read-only root
//! or a `readOnly` volume), the superblock (`ro` in field 11: every mount of that filesystem),
//! and ext4's `emergency_ro` (field 11 on Linux 6.x after an ext4 error with
//! `errors=remount-ro`: both fields still say `rw`, yet writes fail with `EROFS`).
//!
//! Nothing here panics on what it reads: a malformed line is skipped and counted.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// At most this many bytes of a mount table are read (a node with tens of thousands of
/// mounts is cut there).
const MAX_TABLE_BYTES: u64 = 4 << 20;

/// One line of a mountinfo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount's ID (unique in its namespace; may be reused after an unmount).
    pub mount_id: u32,
    /// The ID of the mount this one sits on (for the process's root mount, one outside the
    /// table, or its own ID).
    pub parent_id: u32,
    /// Major number of the filesystem's device (`st_dev`).
    pub major: u32,
    /// Minor number of the filesystem's device.
    pub minor: u32,
    /// The directory of the filesystem mounted here (`/` unless a bind mount of a subdirectory
    /// or a file), unescaped.
    pub root: String,
    /// Where it is mounted, relative to the process's root, unescaped.
    pub mount_point: String,
    /// Per-mount options (`ro` or `rw`, `nosuid`, `relatime`, ...).
    pub mount_options: Vec<String>,
    /// The optional fields before the separator (`shared:N`, `master:N`, ...).
    pub optional: Vec<String>,
    /// The filesystem type (`ext4`, `overlay`, `fuse.sshfs`, ...), unescaped.
    pub fs_type: String,
    /// The mount source (`/dev/vda1`, `overlay`, `none`, ...), unescaped and kept as written.
    pub source: String,
    /// Per-superblock options (`ro` or `rw`, then the filesystem's own), each unescaped.
    pub super_options: Vec<String>,
}

impl Mount {
    /// The filesystem's device as `major:minor`.
    pub fn device(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    /// The device as people name it: the source when it is a device path (`/dev/sda1`), else
    /// `major:minor`.
    pub fn device_name(&self) -> String {
        if self.source.starts_with('/') {
            self.source.clone()
        } else {
            self.device()
        }
    }

    /// True when this mount is read-only (`ro` among the per-mount options).
    pub fn mount_read_only(&self) -> bool {
        has(&self.mount_options, "ro")
    }

    /// True when the filesystem itself is read-only (`ro` among the superblock options): every
    /// mount of it is.
    pub fn super_read_only(&self) -> bool {
        has(&self.super_options, "ro")
    }

    /// True when ext4 made the filesystem read-only after an error (`emergency_ro` among the
    /// superblock options) although both option lists may still say `rw`.
    pub fn emergency_read_only(&self) -> bool {
        has(&self.super_options, "emergency_ro")
    }

    /// True when a write through this mount fails with `EROFS` for any of the three reasons.
    pub fn read_only(&self) -> bool {
        self.mount_read_only() || self.super_read_only() || self.emergency_read_only()
    }

    /// True for a bind mount of a subdirectory or a file of its filesystem (root not `/`).
    pub fn is_bind(&self) -> bool {
        self.root != "/"
    }
}

fn has(options: &[String], wanted: &str) -> bool {
    options.iter().any(|option| option == wanted)
}

/// A parsed mount table, in file order (later entries are mounted on top of earlier ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable {
    /// The mounts, in the order of the file.
    pub mounts: Vec<Mount>,
    /// How many non-empty lines were malformed and skipped (including a line cut by the size
    /// limit of [`MountTable::read`]).
    pub skipped: usize,
}

impl MountTable {
    /// Parses mountinfo text. Malformed lines are skipped and counted in `skipped`, never a
    /// panic; empty lines are ignored. Lines end with `\n`, the last one may not.
    ///
    /// The kernel escapes space, tab, newline and backslash as octal (`\040` `\011` `\012`
    /// `\134`) and writes any other byte (including non-UTF-8) raw: escapes are decoded on
    /// bytes, then converted with [`String::from_utf8_lossy`].
    pub fn parse(text: &[u8]) -> MountTable {
        let mut table = MountTable::default();
        for line in text.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            match parse_line(line) {
                Some(mount) => table.mounts.push(mount),
                None => table.skipped += 1,
            }
        }
        table
    }

    /// Reads and parses a file (e.g. `/proc/<pid>/mountinfo`). Reads at most 4 MiB: a bigger
    /// table is cut there, what was read is parsed and the cut last line counts as skipped.
    pub fn read(path: &Path) -> Result<MountTable, MountInfoError> {
        read_limited(path, MAX_TABLE_BYTES)
    }

    /// The mount that covers `path` (an absolute path as the process sees it): the mount whose
    /// mount point is the longest path-component prefix of `path` (`/data` covers `/data` and
    /// `/data/x` but not `/database`); among mounts on the same mount point, the last in the
    /// table (mounted on top).
    ///
    /// `path` is normalised lexically first (see [`normalize`]); a relative path returns
    /// `None`, as does a table without a mount covering it. Symbolic links are not followed:
    /// resolve them first. A mount hidden under a later mount on one of its mount point's
    /// ancestors is not recognised as hidden (table order and parent IDs could tell, but the
    /// case does not arise in the containers podmortem watches).
    pub fn covering(&self, path: &str) -> Option<&Mount> {
        let path = normalize(path)?;
        let mut best: Option<(usize, &Mount)> = None;
        for mount in &self.mounts {
            let Some(point) = normalize(&mount.mount_point) else {
                continue;
            };
            if !is_component_prefix(&point, &path) {
                continue;
            }
            // `>=`: on a tie the later mount is on top.
            if best.is_none_or(|(len, _)| point.len() >= len) {
                best = Some((point.len(), mount));
            }
        }
        best.map(|(_, mount)| mount)
    }

    /// Mounts whose source is the given device (`/dev/loop0`, or `loop0`: when `device` has no
    /// `/`, the last path component of the source is compared), or whose `major:minor` equals
    /// `device` (`7:0`). An empty `device` matches nothing.
    pub fn by_device<'a>(&'a self, device: &'a str) -> impl Iterator<Item = &'a Mount> + 'a {
        let numbers = parse_device(device.as_bytes());
        let bare = !device.contains('/');
        self.mounts.iter().filter(move |mount| {
            if device.is_empty() {
                return false;
            }
            if mount.source == device || numbers == Some((mount.major, mount.minor)) {
                return true;
            }
            bare && mount.source.rsplit('/').next() == Some(device)
        })
    }
}

/// What can go wrong reading a mount table.
#[derive(Debug, thiserror::Error)]
pub enum MountInfoError {
    /// The file could not be opened or read.
    #[error("cannot read mount table {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl MountInfoError {
    /// True when the file does not exist or its process has exited (`ENOENT` or `ESRCH`).
    pub fn is_not_found(&self) -> bool {
        match self {
            MountInfoError::Read { source, .. } => {
                source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(nix::libc::ESRCH)
            }
        }
    }
}

/// Normalises a path lexically as [`MountTable::covering`] does: repeated slashes, `.`
/// components, `..` components (never above `/`) and a trailing slash are removed. `None`
/// for a relative (or empty) path.
pub fn normalize(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    let mut out = String::with_capacity(path.len());
    for part in &parts {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// True when `prefix` is `path` or one of its ancestors, by whole components (both normalised).
fn is_component_prefix(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Reads at most `limit` bytes of a mount table; see [`MountTable::read`].
fn read_limited(path: &Path, limit: u64) -> Result<MountTable, MountInfoError> {
    let error = |source| MountInfoError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(error)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(error)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if bytes.len() <= limit {
        return Ok(MountTable::parse(&bytes));
    }
    // Cut: keep the complete lines only; the line the limit fell in (or the one right after
    // it, when the limit fell on a line's end) is lost.
    bytes.truncate(limit);
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut table = MountTable::parse(&bytes[..end]);
    table.skipped += 1;
    Ok(table)
}

/// Parses one line (without its `\n`); `None` when malformed.
fn parse_line(line: &[u8]) -> Option<Mount> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    // Six fixed fields, then the optional ones up to the separator.
    let separator = 6 + fields.get(6..)?.iter().position(|f| *f == b"-")?;
    let [fs_type, source, super_options] = fields.get(separator + 1..)? else {
        return None;
    };
    let (major, minor) = parse_device(fields[2])?;
    let (root, mount_point, mount_options) = (fields[3], fields[4], fields[5]);
    if root.is_empty() || mount_point.is_empty() || mount_options.is_empty() || fs_type.is_empty() {
        return None;
    }
    Some(Mount {
        mount_id: parse_u32(fields[0])?,
        parent_id: parse_u32(fields[1])?,
        major,
        minor,
        root: unescape(root),
        mount_point: unescape(mount_point),
        mount_options: split_options(mount_options),
        optional: fields[6..separator]
            .iter()
            .filter(|f| !f.is_empty())
            .map(|f| unescape(f))
            .collect(),
        fs_type: unescape(fs_type),
        source: unescape(source),
        super_options: split_options(super_options),
    })
}

/// Splits an option field on commas, then decodes each option (an escaped comma, `\054`, in a
/// value does not split). Empty options are dropped.
fn split_options(field: &[u8]) -> Vec<String> {
    field
        .split(|&b| b == b',')
        .filter(|option| !option.is_empty())
        .map(unescape)
        .collect()
}

/// `major:minor`, both decimal.
fn parse_device(text: &[u8]) -> Option<(u32, u32)> {
    let colon = text.iter().position(|&b| b == b':')?;
    Some((parse_u32(&text[..colon])?, parse_u32(&text[colon + 1..])?))
}

/// A decimal `u32`: digits only (no sign, no space), no overflow.
fn parse_u32(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter()
        .try_fold(0u32, |n, &d| n.checked_mul(10)?.checked_add(u32::from(d - b'0')))
}

/// Decodes the kernel's octal escapes (`\` and three octal digits, at most `\377`); a backslash
/// not starting one is kept as is. Then converts lossily to UTF-8.
fn unescape(field: &[u8]) -> String {
    if !field.contains(&b'\\') {
        return String::from_utf8_lossy(field).into_owned();
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(byte) = field.get(i + 1..i + 4).and_then(octal_byte) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Three octal digits as a byte; `None` when not octal digits or above `\377`.
fn octal_byte(digits: &[u8]) -> Option<u8> {
    let [a, b, c] = digits else {
        return None;
    };
    if !matches!(a, b'0'..=b'3') || !matches!(b, b'0'..=b'7') || !matches!(c, b'0'..=b'7') {
        return None;
    }
    Some(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'))
}

#[cfg(test)]
mod tests;
