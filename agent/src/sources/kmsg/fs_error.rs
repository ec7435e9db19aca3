//! The kernel's reports of a filesystem failing under its pods: remounted read-only after an
//! error, an XFS shutdown, an aborted journal, or the I/O errors that lead there. Each record's
//! text is parsed on its own into one [`FsError`]; lines about anything else give `None`.
//!
//! Lines recognised (Linux 4.x to 6.x), by what they mean:
//!
//! - [`FsErrorKind::Error`]:
//!   - `EXT4-fs error (device loop0): trigger_test_error:20: comm bash: Test error`
//!   - `EXT4-fs error (device sda2) in ext4_reserve_inode_write:5764: Journal has aborted`
//!   - `EXT3-fs error (device sdb1): ext3_find_entry: reading directory #2 offset 0`
//!   - `EXT2-fs (sdb1): error: ext2_lookup: deleted inode referenced: 1234`
//!   - `BTRFS error (device sdc1): bdev /dev/sdc1 errs: wr 1, rd 0, flush 0, corrupt 0, gen 0`
//!     (also `critical`, `alert` and `emergency`, and 6.x's `(device sdc1: state EA)`)
//!   - `BTRFS: error (device sdc1 state EA) in btrfs_commit_transaction:2410: errno=-5 IO failure`
//!   - `XFS (sdb1): Metadata corruption detected at xfs_dinode_verify+0x434/0xcb0 [xfs], inode 0x40d422 dinode`,
//!     `XFS (dm-28): Corruption detected. Unmount and run xfs_repair`,
//!     `XFS (sdb1): Internal error xfs_trans_cancel at line 1097 of file fs/xfs/xfs_trans.c.  Caller xfs_create+0x3c1/0x5e0 [xfs]`
//! - [`FsErrorKind::RemountedReadOnly`]:
//!   - `EXT4-fs (loop0): Remounting filesystem read-only`
//!   - `EXT3-fs (sdb1): error: remounting filesystem read-only` (and `EXT2-fs`)
//!   - `BTRFS info (device sdc1): forced readonly`
//! - [`FsErrorKind::Shutdown`]:
//!   - `XFS (sdb1): Filesystem has been shut down due to log error (0x2).`
//!   - `XFS (dm-3): Corruption of in-memory data (0x8) detected at xfs_trans_cancel+0x12c/0x150 [xfs] (fs/xfs/xfs_trans.c:1097).  Shutting down filesystem.`
//!   - `XFS (sdb1): Log I/O Error Detected. Shutting down filesystem` (4.x)
//! - [`FsErrorKind::IoError`]:
//!   - `Buffer I/O error on dev sda1, logical block 1234, lost async page write`
//!   - `Buffer I/O error on device loop0, logical block 0` (4.x)
//!   - `blk_update_request: I/O error, dev sda, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0`
//!     (also `print_req_error:` and `end_request:`, and the other block statuses that fail
//!     the request: `critical medium`, `critical target`, `timeout`, …)
//!   - `I/O error, dev loop0, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 2` (5.18+)
//!   - `EXT4-fs warning (device dm-0): ext4_end_bio:343: I/O error 10 writing to inode 12 starting block 123)`
//!     (an `EXT4-fs warning` about anything but an I/O error is ignored)
//!   - `EXT4-fs (dm-0): I/O error while writing superblock`
//!   - `XFS (sdb1): metadata I/O error in "xfs_imap_to_bp+0x5c/0xa0 [xfs]" at daddr 0x10 len 32 error 5`,
//!     `XFS (dm-0): log I/O error -5`
//!   - `BTRFS warning (device sdc1): i/o error at logical 1234 on dev /dev/sdc1, physical 5678, root 5, inode 257, offset 0, length 4096, links 1 (path: a)`
//!   - `JBD2: Detected IO errors while flushing file data on sda2-8`,
//!     `JBD2: I/O error when updating journal superblock for sda-8.`,
//!     `JBD2: Error -5 detected when updating journal superblock for sda2-8.`
//!   - `dm-0: writeback error on inode 71, offset 239466496, sector 668620` (iomap, 5.x+)
//! - [`FsErrorKind::JournalAborted`]:
//!   - `Aborting journal on device loop0-8.` (the `-8` is the journal's inode, not the device's)
//!
//! Only the first [`MAX_SCAN`] bytes of a line are looked at, and a device must look like a
//! kernel device name (at most 64 printable bytes, no `/` once a leading `/dev/` is dropped).

use crate::text::cut;

/// Bytes of a line that are looked at; the rest is ignored.
pub const MAX_SCAN: usize = 1024;
/// Longest [`FsError::detail`] kept, in bytes.
pub const MAX_DETAIL: usize = 512;
/// Longest device name accepted, in bytes.
const MAX_DEVICE: usize = 64;

/// What the kernel said happened to a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsErrorKind {
    /// The filesystem was remounted read-only: ext2/3/4 `Remounting filesystem read-only`,
    /// btrfs `forced readonly`. Writes to it now fail with `EROFS`.
    RemountedReadOnly,
    /// The filesystem reported an error (`EXT4-fs error`, `BTRFS error`, XFS corruption): it
    /// may be remounted read-only next, per its `errors=` option.
    Error,
    /// XFS shut the filesystem down: every operation on it now fails.
    Shutdown,
    /// A block device, or a filesystem writing to it, reported an I/O error.
    IoError,
    /// The filesystem's journal was aborted; ext3/4 remount read-only after it.
    JournalAborted,
}

/// One kernel log line about a filesystem or its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    /// What happened.
    pub kind: FsErrorKind,
    /// The filesystem type as the line names it: `ext4`, `ext3`, `ext2`, `xfs`, `btrfs`, or
    /// `jbd2` for journal lines; `None` for block-layer lines, which name no filesystem.
    pub fs_type: Option<String>,
    /// The device, as named: `loop0`, `sda1`, `dm-0`, `nvme0n1p2` (without `/dev/`, and
    /// without a jbd2 journal's `-8` suffix). Block-layer lines name the whole disk (`sda`).
    pub device: String,
    /// The rest of the message after the device, trimmed, at most [`MAX_DETAIL`] bytes. Lines
    /// that name the device last (`JBD2: …`) keep their whole message; `Aborting journal`
    /// lines have none.
    pub detail: String,
}

/// Parses one kernel message text (without its `/dev/kmsg` prefix); `None` for anything else.
pub fn parse_line(text: &str) -> Option<FsError> {
    let text = cut(text, MAX_SCAN).trim();
    if let Some(rest) = text.strip_prefix("EXT") {
        return parse_ext(rest);
    }
    if let Some(rest) = text.strip_prefix("XFS (") {
        return parse_xfs(rest);
    }
    if let Some(rest) = text.strip_prefix("BTRFS") {
        return parse_btrfs(rest);
    }
    if let Some(rest) = text.strip_prefix("Aborting journal on device ") {
        let device = journal_device(rest)?;
        return Some(event(FsErrorKind::JournalAborted, Some("jbd2"), device, ""));
    }
    if let Some(rest) = text.strip_prefix("JBD2: ") {
        return parse_jbd2(rest);
    }
    if let Some(rest) = text
        .strip_prefix("Buffer I/O error on dev ")
        .or_else(|| text.strip_prefix("Buffer I/O error on device "))
    {
        let (device, rest) = device_token(rest)?;
        let detail = rest.strip_prefix(", ")?;
        return detail
            .starts_with("logical block ")
            .then(|| event(FsErrorKind::IoError, None, device, detail));
    }
    if let Some(event) = parse_block_request(text) {
        return Some(event);
    }
    parse_writeback(text)
}

/// After `EXT`: `4-fs error (device X): …`, `4-fs warning (device X): …`, `4-fs (X): …`.
fn parse_ext(rest: &str) -> Option<FsError> {
    let (fs_type, rest) = [("ext4", "4-fs"), ("ext3", "3-fs"), ("ext2", "2-fs")]
        .into_iter()
        .find_map(|(fs, prefix)| rest.strip_prefix(prefix).map(|r| (fs, r)))?;
    if let Some(rest) = rest.strip_prefix(" error (device ") {
        let (device, detail) = device_in_parens(rest)?;
        return Some(event(FsErrorKind::Error, Some(fs_type), device, detail));
    }
    if let Some(rest) = rest.strip_prefix(" warning (device ") {
        let (device, detail) = device_in_parens(rest)?;
        return contains_ignore_case(detail, "I/O error")
            .then(|| event(FsErrorKind::IoError, Some(fs_type), device, detail));
    }
    let (device, message) = device_in_parens(rest.strip_prefix(" (")?)?;
    let kind = if contains_ignore_case(message, "remounting filesystem read-only") {
        FsErrorKind::RemountedReadOnly
    } else if message.starts_with("I/O error") {
        FsErrorKind::IoError
    } else if fs_type != "ext4" && message.starts_with("error: ") {
        // ext2 (and ext3's `ext3_msg`) print their errors as `EXT2-fs (X): error: …`.
        FsErrorKind::Error
    } else {
        return None;
    };
    Some(event(kind, Some(fs_type), device, message))
}

/// After `XFS (`: `X): <message>`.
fn parse_xfs(rest: &str) -> Option<FsError> {
    let (device, message) = device_in_parens(rest)?;
    // 4.x's `Log I/O Error Detected. Shutting down filesystem` names an I/O error too: the
    // shutdown is what matters.
    let kind = if contains_ignore_case(message, "shutting down filesystem")
        || message.starts_with("Filesystem has been shut down")
    {
        FsErrorKind::Shutdown
    } else if contains_ignore_case(message, "I/O error") {
        FsErrorKind::IoError
    } else if message.starts_with("Metadata corruption detected")
        || message.starts_with("Corruption detected")
        || message.starts_with("Internal error ")
    {
        FsErrorKind::Error
    } else {
        return None;
    };
    Some(event(kind, Some("xfs"), device, message))
}

/// After `BTRFS`: ` <level> (device X[ state S]): …` or `: error (device X[ state S]) in …`.
fn parse_btrfs(rest: &str) -> Option<FsError> {
    /// The levels `btrfs_printk` names.
    const LEVELS: [&str; 8] = [
        "emergency",
        "alert",
        "critical",
        "error",
        "warning",
        "notice",
        "info",
        "debug",
    ];
    let (level, rest) = match rest.strip_prefix(": error (device ") {
        Some(rest) => ("error", rest),
        None => {
            let (level, rest) = rest.strip_prefix(' ')?.split_once(" (device ")?;
            if !LEVELS.contains(&level) {
                return None;
            }
            (level, rest)
        }
    };
    let (device, message) = device_in_parens(rest)?;
    let kind = if contains_ignore_case(message, "forced readonly") {
        FsErrorKind::RemountedReadOnly
    } else {
        match level {
            "emergency" | "alert" | "critical" | "error" => FsErrorKind::Error,
            "warning" if contains_ignore_case(message, "I/O error") => FsErrorKind::IoError,
            _ => return None,
        }
    };
    Some(event(kind, Some("btrfs"), device, message))
}

/// After `JBD2: `: the journal's I/O errors, which name its device last.
fn parse_jbd2(rest: &str) -> Option<FsError> {
    let device = if rest.starts_with("Detected IO errors") {
        rest.split_once(" while flushing file data on ")?.1
    } else {
        rest.split_once(" when updating journal superblock for ")?.1
    };
    let device = journal_device(device)?;
    Some(event(FsErrorKind::IoError, Some("jbd2"), device, rest))
}

/// A jbd2 journal's name, `<device>-<inode>` (a journal on its own device has no suffix), then
/// perhaps a full stop.
fn journal_device(rest: &str) -> Option<&str> {
    let name = rest.trim_end().strip_suffix('.').unwrap_or(rest.trim_end());
    let name = match name.rsplit_once('-') {
        // `dm-3` is a device-mapper device, not a journal inode 3 on `dm`.
        Some((device, inode))
            if device != "dm" && !inode.is_empty() && inode.bytes().all(|b| b.is_ascii_digit()) =>
        {
            device
        }
        _ => name,
    };
    valid_device(name)
}

/// `[caller: ]<status> error, dev X, sector N…`, the block layer failing a request.
fn parse_block_request(text: &str) -> Option<FsError> {
    /// The block statuses that mean the device failed the request (not `operation not
    /// supported`, which an unsupported discard gets).
    const STATUSES: [&str; 9] = [
        "I/O",
        "critical medium",
        "critical target",
        "critical nexus",
        "recoverable transport",
        "critical space allocation",
        "protection",
        "timeout",
        "device offline",
    ];
    let text = ["blk_update_request: ", "print_req_error: ", "end_request: "]
        .into_iter()
        .find_map(|caller| text.strip_prefix(caller))
        .unwrap_or(text);
    let (status, rest) = text.split_once(" error, dev ")?;
    if !STATUSES.contains(&status) {
        return None;
    }
    let (device, rest) = device_token(rest)?;
    let detail = rest.strip_prefix(", ")?;
    detail
        .starts_with("sector ")
        .then(|| event(FsErrorKind::IoError, None, device, detail))
}

/// `X: writeback error on inode N, offset N, sector N` (iomap, 5.x+).
fn parse_writeback(text: &str) -> Option<FsError> {
    let (device, detail) = text.split_once(": ")?;
    let device = valid_device(device)?;
    detail
        .starts_with("writeback error on inode ")
        .then(|| event(FsErrorKind::IoError, None, device, detail))
}

/// `X): <message>`, `X state S) <message>` or `X: state S): <message>` (btrfs 5.x–6.x): the
/// device and the message.
fn device_in_parens(s: &str) -> Option<(&str, &str)> {
    let (device, rest) = device_token(s)?;
    let (state, message) = rest.split_once(')')?;
    if !state.is_empty() {
        let flags = state
            .strip_prefix(" state ")
            .or_else(|| state.strip_prefix(": state "))?;
        if flags.len() > 32 || !flags.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
    }
    Some((device, message.trim_start_matches([':', ' '])))
}

/// A device name up to the next space, `)`, `,`, `:` or `(`, and what follows it.
fn device_token(s: &str) -> Option<(&str, &str)> {
    let end = s
        .find(|c: char| c.is_whitespace() || matches!(c, ')' | ',' | ':' | '('))
        .unwrap_or(s.len());
    Some((valid_device(&s[..end])?, &s[end..]))
}

/// The name without a leading `/dev/`, if it looks like a kernel device name.
fn valid_device(name: &str) -> Option<&str> {
    let name = name.strip_prefix("/dev/").unwrap_or(name);
    let plausible = !name.is_empty()
        && name.len() <= MAX_DEVICE
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'(' | b')' | b',' | b':'));
    plausible.then_some(name)
}

fn event(kind: FsErrorKind, fs_type: Option<&str>, device: &str, detail: &str) -> FsError {
    FsError {
        kind,
        fs_type: fs_type.map(str::to_owned),
        device: device.to_owned(),
        detail: cut(detail.trim(), MAX_DETAIL).trim_end().to_owned(),
    }
}

/// Whether `needle` (ASCII) occurs in `haystack`, ignoring ASCII case.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty()
        || haystack
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
#[path = "fs_error_tests.rs"]
mod tests;
