use super::*;
use proptest::prelude::*;
use FsErrorKind::*;

/// Parses `line` and checks what it is, on which filesystem and device; returns the event.
#[track_caller]
fn check(line: &str, kind: FsErrorKind, fs_type: Option<&str>, device: &str) -> FsError {
    let e = parse_line(line).unwrap_or_else(|| panic!("not recognised: {line}"));
    assert_eq!(
        (e.kind, e.fs_type.as_deref(), e.device.as_str()),
        (kind, fs_type, device),
        "{line}"
    );
    e
}

#[test]
fn ext4_error_with_function_and_comm() {
    let e = check(
        "EXT4-fs error (device loop0): trigger_test_error:20: comm bash: Test error",
        Error,
        Some("ext4"),
        "loop0",
    );
    assert_eq!(e.detail, "trigger_test_error:20: comm bash: Test error");
}

#[test]
fn ext4_error_with_inode() {
    let e = check(
        "EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0",
        Error,
        Some("ext4"),
        "sda1",
    );
    assert_eq!(
        e.detail,
        "ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0"
    );
}

#[test]
fn ext4_std_error_names_the_function_after_in() {
    let e = check(
        "EXT4-fs error (device sda2) in ext4_reserve_inode_write:5764: Journal has aborted",
        Error,
        Some("ext4"),
        "sda2",
    );
    assert_eq!(e.detail, "in ext4_reserve_inode_write:5764: Journal has aborted");
}

#[test]
fn ext4_remount_read_only() {
    let e = check(
        "EXT4-fs (loop0): Remounting filesystem read-only",
        RemountedReadOnly,
        Some("ext4"),
        "loop0",
    );
    assert_eq!(e.detail, "Remounting filesystem read-only");
    check(
        "EXT4-fs (sda1): Remounting filesystem read-only",
        RemountedReadOnly,
        Some("ext4"),
        "sda1",
    );
    check(
        "EXT4-fs (nvme0n1p2): Remounting filesystem READ-ONLY",
        RemountedReadOnly,
        Some("ext4"),
        "nvme0n1p2",
    );
}

#[test]
fn ext3_and_ext2_remount_read_only() {
    check(
        "EXT3-fs (sdb1): error: remounting filesystem read-only",
        RemountedReadOnly,
        Some("ext3"),
        "sdb1",
    );
    check(
        "EXT2-fs (sdc1): error: remounting filesystem read-only",
        RemountedReadOnly,
        Some("ext2"),
        "sdc1",
    );
}

#[test]
fn ext3_and_ext2_errors() {
    check(
        "EXT3-fs error (device sdb1): ext3_find_entry: reading directory #2 offset 0",
        Error,
        Some("ext3"),
        "sdb1",
    );
    let e = check(
        "EXT2-fs (sdb1): error: ext2_lookup: deleted inode referenced: 1234",
        Error,
        Some("ext2"),
        "sdb1",
    );
    assert_eq!(e.detail, "error: ext2_lookup: deleted inode referenced: 1234");
}

#[test]
fn ext4_warning_counts_only_for_io_errors() {
    let e = check(
        "EXT4-fs warning (device dm-0): ext4_end_bio:343: I/O error 10 writing to inode 12 starting block 123)",
        IoError,
        Some("ext4"),
        "dm-0",
    );
    assert_eq!(
        e.detail,
        "ext4_end_bio:343: I/O error 10 writing to inode 12 starting block 123)"
    );
    check(
        "EXT4-fs warning (device vda1): ext4_end_bio:251: I/O error writing to inode 31112 (offset 7852032 size 524288 starting block 595925)",
        IoError,
        Some("ext4"),
        "vda1",
    );
    assert_eq!(
        parse_line("EXT4-fs warning (device sda1): ext4_dx_add_entry:2461: Directory (ino: 2) index full, reach max htree level :2"),
        None
    );
}

#[test]
fn ext4_superblock_write_failure() {
    check(
        "EXT4-fs (dm-0): I/O error while writing superblock",
        IoError,
        Some("ext4"),
        "dm-0",
    );
    assert_eq!(
        parse_line("EXT4-fs (sdc8): previous I/O error to superblock detected"),
        None
    );
}

#[test]
fn journal_aborted_strips_the_journal_inode() {
    let e = check(
        "Aborting journal on device loop0-8.",
        JournalAborted,
        Some("jbd2"),
        "loop0",
    );
    assert_eq!(e.detail, "");
    check(
        "Aborting journal on device sda2-8.",
        JournalAborted,
        Some("jbd2"),
        "sda2",
    );
    check(
        "Aborting journal on device dm-11-45.",
        JournalAborted,
        Some("jbd2"),
        "dm-11",
    );
    // A journal on a device of its own has no inode suffix.
    check(
        "Aborting journal on device dm-3.",
        JournalAborted,
        Some("jbd2"),
        "dm-3",
    );
    check(
        "Aborting journal on device sdb1.",
        JournalAborted,
        Some("jbd2"),
        "sdb1",
    );
    assert_eq!(parse_line("Aborting journal on device ."), None);
    assert_eq!(parse_line("Aborting journal on device -8."), None);
}

#[test]
fn jbd2_io_errors() {
    let e = check(
        "JBD2: Detected IO errors while flushing file data on sda2-8",
        IoError,
        Some("jbd2"),
        "sda2",
    );
    assert_eq!(e.detail, "Detected IO errors while flushing file data on sda2-8");
    check(
        "JBD2: I/O error when updating journal superblock for sda-8.",
        IoError,
        Some("jbd2"),
        "sda",
    );
    check(
        "JBD2: Error -5 detected when updating journal superblock for nvme0n1p1-8.",
        IoError,
        Some("jbd2"),
        "nvme0n1p1",
    );
    assert_eq!(
        parse_line("JBD2: Invalid checksum recovering block 1234 in log"),
        None
    );
}

#[test]
fn xfs_shutdowns() {
    let e = check(
        "XFS (sdb1): Filesystem has been shut down due to log error (0x2).",
        Shutdown,
        Some("xfs"),
        "sdb1",
    );
    assert_eq!(e.detail, "Filesystem has been shut down due to log error (0x2).");
    check(
        "XFS (dm-3): Corruption of in-memory data (0x8) detected at xfs_trans_cancel+0x12c/0x150 [xfs] (fs/xfs/xfs_trans.c:1097).  Shutting down filesystem.",
        Shutdown,
        Some("xfs"),
        "dm-3",
    );
    check(
        "XFS (sdb1): Log I/O Error Detected. Shutting down filesystem",
        Shutdown,
        Some("xfs"),
        "sdb1",
    );
    check(
        "XFS (loop0): Metadata I/O Error (0x1) detected at xfs_trans_read_buf_map+0x1fe/0x4c0 [xfs] (fs/xfs/xfs_trans_buf.c:311).  Shutting down filesystem.",
        Shutdown,
        Some("xfs"),
        "loop0",
    );
}

#[test]
fn xfs_io_errors() {
    let e = check(
        "XFS (sdb1): metadata I/O error in \"xfs_imap_to_bp+0x5c/0xa0 [xfs]\" at daddr 0x10 len 32 error 5",
        IoError,
        Some("xfs"),
        "sdb1",
    );
    assert_eq!(
        e.detail,
        "metadata I/O error in \"xfs_imap_to_bp+0x5c/0xa0 [xfs]\" at daddr 0x10 len 32 error 5"
    );
    check("XFS (dm-0): log I/O error -5", IoError, Some("xfs"), "dm-0");
    check(
        "XFS (dm-0): metadata I/O error: block 0x1 (\"xlog_iodone\") error 5 numblks 64",
        IoError,
        Some("xfs"),
        "dm-0",
    );
}

#[test]
fn xfs_corruption_is_an_error() {
    check(
        "XFS (loop0): Metadata corruption detected at xfs_dinode_verify.part.0+0x434/0xcb0 [xfs], inode 0x40d422 xfs_inode_item_precommit_check",
        Error,
        Some("xfs"),
        "loop0",
    );
    check(
        "XFS (dm-28): Corruption detected. Unmount and run xfs_repair",
        Error,
        Some("xfs"),
        "dm-28",
    );
    check(
        "XFS (sdb1): Internal error xfs_trans_cancel at line 1097 of file fs/xfs/xfs_trans.c.  Caller xfs_create+0x3c1/0x5e0 [xfs]",
        Error,
        Some("xfs"),
        "sdb1",
    );
}

#[test]
fn buffer_io_errors() {
    let e = check(
        "Buffer I/O error on dev sda1, logical block 1234, lost async page write",
        IoError,
        None,
        "sda1",
    );
    assert_eq!(e.detail, "logical block 1234, lost async page write");
    check(
        "Buffer I/O error on device loop0, logical block 0",
        IoError,
        None,
        "loop0",
    );
    check(
        "Buffer I/O error on dev dm-1, logical block 243952, async page read",
        IoError,
        None,
        "dm-1",
    );
}

#[test]
fn block_request_errors() {
    let e = check(
        "blk_update_request: I/O error, dev sda, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0",
        IoError,
        None,
        "sda",
    );
    assert_eq!(
        e.detail,
        "sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0"
    );
    check(
        "I/O error, dev loop0, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 2",
        IoError,
        None,
        "loop0",
    );
    check(
        "blk_update_request: I/O error, dev sda, sector 2048",
        IoError,
        None,
        "sda",
    );
    check(
        "end_request: I/O error, dev sdc, sector 730081839",
        IoError,
        None,
        "sdc",
    );
    check(
        "print_req_error: I/O error, dev nvme0n1, sector 1234",
        IoError,
        None,
        "nvme0n1",
    );
    check(
        "critical medium error, dev sdb, sector 83886080 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2",
        IoError,
        None,
        "sdb",
    );
    // An unsupported discard is not a failing device.
    assert_eq!(
        parse_line("operation not supported error, dev loop0, sector 0 op 0x9:(WRITE_ZEROES) flags 0x0 phys_seg 0 prio class 0"),
        None
    );
    assert_eq!(parse_line("I/O error, dev sda, while doing something"), None);
    assert_eq!(parse_line("x I/O error, dev sda, sector 1"), None);
}

#[test]
fn iomap_writeback_error() {
    let e = check(
        "dm-0: writeback error on inode 71, offset 239466496, sector 668620",
        IoError,
        None,
        "dm-0",
    );
    assert_eq!(
        e.detail,
        "writeback error on inode 71, offset 239466496, sector 668620"
    );
}

#[test]
fn btrfs_lines() {
    let e = check(
        "BTRFS error (device sdc1): bdev /dev/sdc1 errs: wr 1, rd 0, flush 0, corrupt 0, gen 0",
        Error,
        Some("btrfs"),
        "sdc1",
    );
    assert_eq!(
        e.detail,
        "bdev /dev/sdc1 errs: wr 1, rd 0, flush 0, corrupt 0, gen 0"
    );
    check(
        "BTRFS info (device sdc1): forced readonly",
        RemountedReadOnly,
        Some("btrfs"),
        "sdc1",
    );
    check(
        "BTRFS info (device sdc1: state EA): forced readonly",
        RemountedReadOnly,
        Some("btrfs"),
        "sdc1",
    );
    let e = check(
        "BTRFS: error (device sdc1 state EA) in btrfs_commit_transaction:2410: errno=-5 IO failure",
        Error,
        Some("btrfs"),
        "sdc1",
    );
    assert_eq!(e.detail, "in btrfs_commit_transaction:2410: errno=-5 IO failure");
    check(
        "BTRFS: error (device sdc1) in btrfs_commit_transaction:2410: errno=-5 IO failure",
        Error,
        Some("btrfs"),
        "sdc1",
    );
    check(
        "BTRFS critical (device vdb: state EA): corrupt leaf: root=5 block=30408704 slot=3, invalid key",
        Error,
        Some("btrfs"),
        "vdb",
    );
    check(
        "BTRFS warning (device sdc1): i/o error at logical 1234 on dev /dev/sdc1, physical 5678, root 5, inode 257, offset 0, length 4096, links 1 (path: a)",
        IoError,
        Some("btrfs"),
        "sdc1",
    );
}

#[test]
fn ordinary_lines_are_not_errors() {
    for line in [
        "EXT4-fs (sda1): mounted filesystem 1234abcd-0000-4000-8000-000000000000 r/w with ordered data mode. Quota mode: none.",
        "EXT4-fs (loop0): re-mounted 1234abcd-0000-4000-8000-000000000000. Quota mode: none.",
        "EXT4-fs (loop0): re-mounted 1234abcd-0000-4000-8000-000000000000 ro. Quota mode: none.",
        "EXT4-fs (sda1): mounted filesystem with ordered data mode. Opts: (null)",
        "EXT4-fs (sda1): shut down requested (2)",
        "EXT4-fs: 24 callbacks suppressed",
        "XFS (sdb1): Mounting V5 Filesystem",
        "XFS (sdb1): Ending clean mount",
        "XFS (sdb1): Please unmount the filesystem and rectify the problem(s)",
        "XFS (sdb1): Unmounting Filesystem 9faf1858-4d74-4b58-b0e7-68fd1d90762a",
        "BTRFS info (device sdc1): disk space caching is enabled",
        "BTRFS: device fsid 1234 devid 1 transid 7 /dev/sdc1 scanned by mount (123)",
        "BTRFS warning (device sdc1): excessive commit interval 600",
        "Out of memory: Killed process 1 (x)",
        "Memory cgroup out of memory: Killed process 1234 (java) total-vm:1kB",
        "sd 0:0:0:0: [sda] tag#0 FAILED Result: hostbyte=DID_OK driverbyte=DRIVER_OK",
        "",
        "   ",
        "\u{1}\u{2}\u{1b}[31m\u{7f}garbage\u{0}",
        "EXT4",
        "XFS (",
        "BTRFS",
        "BTRFS error",
    ] {
        assert_eq!(parse_line(line), None, "{line:?}");
    }
}

#[test]
fn implausible_devices_are_refused() {
    let long = "a".repeat(65);
    for line in [
        "EXT4-fs error (device ): x".to_owned(),
        "EXT4-fs (): Remounting filesystem read-only".to_owned(),
        format!("EXT4-fs (device {long}): Remounting filesystem read-only"),
        format!("EXT4-fs ({long}): Remounting filesystem read-only"),
        "EXT4-fs (a/b): Remounting filesystem read-only".to_owned(),
        "EXT4-fs (/dev/mapper/x): Remounting filesystem read-only".to_owned(),
        "XFS (\u{1}\u{2}): Filesystem has been shut down due to log error (0x2).".to_owned(),
        "XFS (sdb1 junk): Filesystem has been shut down due to log error (0x2).".to_owned(),
        "Buffer I/O error on dev , logical block 1".to_owned(),
        format!("Aborting journal on device {long}-8."),
        "BTRFS error (device sdc1 state E-A): x".to_owned(),
    ] {
        assert_eq!(parse_line(&line), None, "{line:?}");
    }
    // At the limit, and with `/dev/` dropped.
    let max = "a".repeat(64);
    check(
        &format!("EXT4-fs ({max}): Remounting filesystem read-only"),
        RemountedReadOnly,
        Some("ext4"),
        &max,
    );
    check(
        "Buffer I/O error on dev /dev/sda1, logical block 1",
        IoError,
        None,
        "sda1",
    );
}

#[test]
fn only_the_start_of_a_long_line_is_read() {
    // 100 KiB of noise.
    assert_eq!(parse_line(&"\u{fffd}x".repeat(100 * 1024 / 4)), None);
    // A phrase past the first 1024 bytes is not seen.
    let line = format!(
        "EXT4-fs (sda1): {} Remounting filesystem read-only",
        "x".repeat(1100)
    );
    assert_eq!(parse_line(&line), None);
    // A long message is cut, on a char boundary.
    let line = format!("EXT4-fs error (device sda1): {}", "é".repeat(50 * 1024));
    let e = check(&line, Error, Some("ext4"), "sda1");
    assert!(e.detail.len() <= MAX_DETAIL && e.detail.len() >= MAX_DETAIL - 1);
    assert!(e.detail.chars().all(|c| c == 'é'));
}

#[test]
fn kinds_serialize_in_snake_case() {
    let names: Vec<String> = [RemountedReadOnly, Error, Shutdown, IoError, JournalAborted]
        .iter()
        .map(|k| serde_json::to_string(k).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "\"remounted_read_only\"",
            "\"error\"",
            "\"shutdown\"",
            "\"io_error\"",
            "\"journal_aborted\""
        ]
    );
}

/// Lines the parser recognises, for the mutation test.
const KNOWN: [&str; 8] = [
    "EXT4-fs error (device loop0): trigger_test_error:20: comm bash: Test error",
    "EXT4-fs (loop0): Remounting filesystem read-only",
    "Aborting journal on device loop0-8.",
    "XFS (dm-3): Corruption of in-memory data (0x8) detected at xfs_trans_cancel+0x12c/0x150 [xfs] (fs/xfs/xfs_trans.c:1097).  Shutting down filesystem.",
    "Buffer I/O error on dev sda1, logical block 1234, lost async page write",
    "I/O error, dev loop0, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 2",
    "BTRFS: error (device sdc1: state EA) in btrfs_commit_transaction:2410: errno=-5 IO failure",
    "JBD2: Detected IO errors while flushing file data on sda2-8",
];

proptest! {
    #[test]
    fn no_input_panics(line in ".{0,300}") {
        if let Some(e) = parse_line(&line) {
            prop_assert!(!e.device.is_empty() && e.device.len() <= 64);
            prop_assert!(e.detail.len() <= MAX_DETAIL);
        }
    }

    #[test]
    fn mutated_known_lines_never_panic(which in 0..KNOWN.len(), cut in 0usize..200, insert in ".{0,12}") {
        let line = KNOWN[which];
        let mut s: String = line.chars().take(cut).collect();
        s.push_str(&insert);
        s.extend(line.chars().skip(cut));
        if let Some(e) = parse_line(&s) {
            prop_assert!(!e.device.is_empty() && !e.device.contains('/'));
        }
    }
}
