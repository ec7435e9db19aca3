use super::*;
use std::fs;

use proptest::prelude::*;

const CONTAINER: &[u8] = include_bytes!("../../../tests/fixtures/mountinfo/container_overlay.mountinfo");
const HOST: &[u8] = include_bytes!("../../../tests/fixtures/mountinfo/host_emergency_ro.mountinfo");
const MALFORMED: &[u8] = include_bytes!("../../../tests/fixtures/mountinfo/malformed.mountinfo");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mountinfo")
        .join(name)
}

/// The ID of the mount covering `path`, if any.
fn covering_id(table: &MountTable, path: &str) -> Option<u32> {
    table.covering(path).map(|m| m.mount_id)
}

fn ids<'a>(mounts: impl Iterator<Item = &'a Mount>) -> Vec<u32> {
    mounts.map(|m| m.mount_id).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Escapes as the kernel does in paths (`mangle`/`seq_escape` with " \t\n\\").
fn kernel_escape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in text.as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            _ => out.push(b),
        }
    }
    out
}

#[test]
fn container_fixture_parses_every_line() {
    let table = MountTable::read(&fixture("container_overlay.mountinfo")).unwrap();
    assert_eq!(table, MountTable::parse(CONTAINER));
    assert_eq!((table.mounts.len(), table.skipped), (27, 0));

    let root = &table.mounts[0];
    assert_eq!((root.mount_id, root.parent_id), (1523, 1402));
    assert_eq!(
        (root.major, root.minor, root.device()),
        (0, 312, "0:312".to_owned())
    );
    assert_eq!((root.root.as_str(), root.mount_point.as_str()), ("/", "/"));
    assert_eq!(root.mount_options, strings(&["ro", "relatime"]));
    assert!(root.optional.is_empty());
    assert_eq!(
        (root.fs_type.as_str(), root.source.as_str()),
        ("overlay", "overlay")
    );
    assert_eq!(root.super_options.len(), 5);
    assert_eq!(root.super_options[0], "rw");
    assert!(root.super_options[1].starts_with("lowerdir=/var/lib/containerd/"));
    assert!(root.super_options[1].contains(":/var/lib/containerd/"));
    assert!(root.super_options[2].starts_with("upperdir="));
    assert_eq!(root.super_options[4], "uuid=on");
    // readOnlyRootFilesystem: the mount is read-only, the overlay itself is not.
    assert!(root.mount_read_only() && !root.super_read_only() && !root.emergency_read_only());
    assert!(root.read_only() && !root.is_bind());

    let volume = table.covering("/mnt/my volume").unwrap();
    assert_eq!(volume.mount_id, 1537);
    assert_eq!(volume.root, "/srv/shared volume");
    assert_eq!(volume.optional, strings(&["master:1"]));
    assert!(volume.is_bind() && !volume.read_only());
}

#[test]
fn covering_in_a_container() {
    let table = MountTable::parse(CONTAINER);
    let cases = [
        ("/", 1523),
        ("/usr/bin/app", 1523),
        ("/data", 1536),
        ("/data/cache/x.db", 1536),
        ("/database", 1523),
        ("/data.bak/x", 1523),
        ("/config/app.yaml", 1535),
        ("/configs", 1523),
        ("/etc/hosts", 1530),
        ("/etc/hostsx", 1523),
        ("/etc/hostname", 1532),
        ("/etc/resolv.conf", 1533),
        ("/etc/passwd", 1523),
        ("/dev/termination-log", 1531),
        ("/dev/shm/sem.x", 1534),
        ("/dev/null", 1525),
        ("/proc/1/status", 1524),
        ("/proc/sys/kernel/core_pattern", 1406),
        ("/proc/kcore", 1409),
        ("/sys/fs/cgroup/memory.max", 1529),
        ("/sys/firmware/efi", 1413),
        ("/mnt/my volume/file", 1537),
        ("/mnt/my", 1523),
        ("/var/run/secrets/kubernetes.io/serviceaccount/token", 1538),
    ];
    for (path, id) in cases {
        assert_eq!(covering_id(&table, path), Some(id), "{path}");
    }

    let config = table.covering("/config/app.yaml").unwrap();
    assert!(config.mount_read_only() && !config.super_read_only() && config.read_only());
    assert!(config.is_bind());
    assert!(config
        .root
        .ends_with("/volumes/kubernetes.io~configmap/app-config"));
    let data = table.covering("/data/x").unwrap();
    assert!(!data.read_only() && data.is_bind());
    let kcore = table.covering("/proc/kcore").unwrap();
    assert_eq!((kcore.root.as_str(), kcore.fs_type.as_str()), ("/null", "tmpfs"));
    let sys = table.covering("/sys/kernel").unwrap();
    assert!(sys.mount_read_only() && sys.super_read_only());
    assert!(table.covering("/proc/sys/vm").unwrap().read_only());
    assert!(table.covering("/proc/acpi").unwrap().super_read_only());
}

#[test]
fn covering_normalises_the_path() {
    let table = MountTable::parse(CONTAINER);
    let cases = [
        ("/data/", Some(1536)),
        ("//data//x///", Some(1536)),
        ("/./data/./x", Some(1536)),
        ("/config/../data/x", Some(1536)),
        ("/data/../config/./app.yaml", Some(1535)),
        ("/../../data", Some(1536)),
        ("/data/..", Some(1523)),
        ("/data/x/../../etc/hosts", Some(1530)),
        ("/database/../data", Some(1536)),
        ("///", Some(1523)),
        ("data/x", None),
        ("./data", None),
        ("../data", None),
        ("", None),
    ];
    for (path, id) in cases {
        assert_eq!(covering_id(&table, path), id, "{path:?}");
    }
    assert_eq!(MountTable::default().covering("/data"), None);
    // No root mount in the table: only paths under a listed mount point are covered.
    let partial = MountTable::parse(b"5 4 0:40 / /data rw - tmpfs tmpfs rw\n");
    assert_eq!(covering_id(&partial, "/data/x"), Some(5));
    assert_eq!(covering_id(&partial, "/etc"), None);
}

#[test]
fn normalize_is_lexical() {
    let cases = [
        ("/", Some("/")),
        ("//", Some("/")),
        ("/a/b/", Some("/a/b")),
        ("/a//b/./c/..", Some("/a/b")),
        ("/..", Some("/")),
        ("/../a/../../b", Some("/b")),
        ("/a/...", Some("/a/...")),
        ("/a/.b/..c", Some("/a/.b/..c")),
        ("a", None),
        ("", None),
        (".", None),
    ];
    for (path, want) in cases {
        assert_eq!(normalize(path).as_deref(), want, "{path:?}");
    }
}

#[test]
fn covering_picks_the_top_of_a_stack() {
    let table = MountTable::parse(HOST);
    assert_eq!((table.mounts.len(), table.skipped), (17, 0));
    let top = table.covering("/mnt/x/file").unwrap();
    assert_eq!(top.mount_id, 111);
    assert!(top.mount_read_only() && !top.super_read_only());
    assert_eq!(covering_id(&table, "/mnt/x"), Some(111));
    assert_eq!(covering_id(&table, "/mnt/xy"), Some(22));
    assert_eq!(covering_id(&table, "/mnt"), Some(22));

    // Order alone decides between mounts on one mount point, whatever their IDs.
    let stack = MountTable::parse(b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n9 1 0:40 / /m ro - tmpfs a rw\n3 9 0:41 / /m/ rw - tmpfs b rw\n");
    assert_eq!(table_source(&stack, "/m/f"), Some("b"));
}

fn table_source<'a>(table: &'a MountTable, path: &str) -> Option<&'a str> {
    table.covering(path).map(|m| m.source.as_str())
}

#[test]
fn read_only_levels() {
    let table = MountTable::parse(HOST);
    // ext4 after an error with errors=remount-ro on 6.x: "rw" everywhere, but emergency_ro.
    let containerd = table
        .covering("/var/lib/containerd/io.containerd.content.v1.content/blobs/sha256/ab")
        .unwrap();
    assert_eq!(containerd.mount_id, 95);
    assert_eq!(containerd.mount_options, strings(&["rw", "relatime"]));
    assert_eq!(
        containerd.super_options,
        strings(&["rw", "errors=remount-ro", "emergency_ro"])
    );
    assert!(!containerd.mount_read_only());
    assert!(!containerd.super_read_only());
    assert!(containerd.emergency_read_only());
    assert!(containerd.read_only());

    let boot = table.covering("/boot/grub/grub.cfg").unwrap();
    assert_eq!(boot.mount_id, 31);
    assert!(boot.mount_read_only() && boot.super_read_only() && !boot.emergency_read_only());
    assert_eq!(covering_id(&table, "/boot/efi/EFI"), Some(32));

    let root = table.covering("/etc/fstab").unwrap();
    assert!(!root.read_only() && !root.is_bind());
    assert_eq!(root.optional, strings(&["shared:1"]));
    let kubelet = table.covering("/var/lib/kubelet/pods").unwrap();
    assert_eq!(kubelet.mount_id, 96);
    assert!(!kubelet.read_only() && kubelet.is_bind());

    // Only `ro` and `emergency_ro` count, not look-alikes.
    let similar = MountTable::parse(
        b"1 0 8:1 / / rw,nouser_xattr,errors=remount-ro - ext4 /dev/sda1 rw,errors=remount-ro,ro_compat,shutdown\n",
    );
    assert!(!similar.mounts[0].read_only());
    let super_ro = MountTable::parse(b"1 0 8:1 / / rw - ext4 /dev/sda1 ro,errors=remount-ro\n");
    let m = &super_ro.mounts[0];
    assert!(!m.mount_read_only() && m.super_read_only() && m.read_only());
}

#[test]
fn by_device_matches_path_name_and_numbers() {
    let table = MountTable::parse(HOST);
    assert_eq!(ids(table.by_device("/dev/loop0")), [95, 97]);
    assert_eq!(ids(table.by_device("loop0")), [95, 97]);
    assert_eq!(ids(table.by_device("7:0")), [95, 97]);
    assert_eq!(ids(table.by_device("loop1")), [40]);
    assert_eq!(ids(table.by_device("/dev/loop1")), [40]);
    assert_eq!(ids(table.by_device("7:10")), [41]);
    assert_eq!(ids(table.by_device("vda1")), [22, 96]);
    assert_eq!(ids(table.by_device("252:1")), [22, 96]);
    assert_eq!(ids(table.by_device("overlay")), [98]);
    assert_eq!(ids(table.by_device("udev")), [25]);
    for nothing in [
        "",
        "dev/loop0",
        "/loop0",
        "loop",
        "7:",
        ":0",
        "7:0:0",
        "/dev/loop2",
    ] {
        assert_eq!(ids(table.by_device(nothing)), [] as [u32; 0], "{nothing:?}");
    }
    let image_cache = table.by_device("7:0").nth(1).unwrap();
    assert_eq!(image_cache.root, "/io.containerd.content.v1.content");
    assert!(image_cache.emergency_read_only() && image_cache.is_bind());
}

#[test]
fn escapes_decode_on_bytes() {
    let table = MountTable::parse(
        b"30 1 0:50 /a\\040b\\011c /mnt/x\\012y\\134z\\040 rw,relatime - fuse.my\\040fs src\\040dev rw,opt=a\\054b\\134c,user_id=0\n",
    );
    assert_eq!(table.skipped, 0);
    let m = &table.mounts[0];
    assert_eq!(m.root, "/a b\tc");
    assert_eq!(m.mount_point, "/mnt/x\ny\\z ");
    assert_eq!(m.fs_type, "fuse.my fs");
    assert_eq!(m.source, "src dev");
    // An escaped comma inside a superblock option's value does not split it.
    assert_eq!(m.super_options, strings(&["rw", "opt=a,b\\c", "user_id=0"]));
    assert_eq!(table.covering("/mnt/x\ny\\z /f").map(|m| m.mount_id), Some(30));

    // A backslash that starts no escape is kept; escapes above \377 are not escapes.
    let odd = MountTable::parse(b"31 1 0:51 / /a\\b\\8\\400\\0\\04\\ rw - tmpfs none rw\n");
    assert_eq!(odd.mounts[0].mount_point, "/a\\b\\8\\400\\0\\04\\");
    assert_eq!(odd.mounts[0].source, "none");
    // Escapes decode to bytes: an escaped UTF-8 sequence is text again.
    let utf8 = MountTable::parse(b"32 1 0:52 / /caf\\303\\251 rw - tmpfs tmpfs rw\n");
    assert_eq!(utf8.mounts[0].mount_point, "/caf\u{e9}");
    // An empty source (the kernel writes nothing between the spaces) is kept.
    let empty = MountTable::parse(b"33 1 0:53 / /e rw - tmpfs  rw\n");
    assert_eq!((empty.mounts.len(), empty.mounts[0].source.as_str()), (1, ""));
}

#[test]
fn non_utf8_is_lossy() {
    let table = MountTable::parse(MALFORMED);
    let cafe = table.mounts.iter().find(|m| m.mount_id == 24).unwrap();
    assert_eq!(cafe.mount_point, "/srv/caf\u{fffd}");
    assert_eq!(cafe.root, "/srv");
    let raw = MountTable::parse(b"40 1 0:60 /\xff\xfe /m\\377x rw - tmpfs \xc3 rw,o=\x80\n");
    let m = &raw.mounts[0];
    assert_eq!(
        (m.root.as_str(), m.mount_point.as_str()),
        ("/\u{fffd}\u{fffd}", "/m\u{fffd}x")
    );
    assert_eq!(m.source, "\u{fffd}");
    assert_eq!(m.super_options, strings(&["rw", "o=\u{fffd}"]));
}

#[test]
fn malformed_lines_are_skipped_and_counted() {
    let table = MountTable::parse(MALFORMED);
    assert_eq!(ids(table.mounts.iter()), [20, 24, 25, 29]);
    assert_eq!(table.skipped, 8);
    let newline = &table.mounts[2];
    assert_eq!(newline.mount_point, "/mnt/line\nbreak");
    // The last line has no newline.
    assert_eq!(table.mounts[3].super_options, strings(&["rw", "inode64"]));
    assert_eq!(covering_id(&table, "/tmp/x"), Some(29));
    assert_eq!(
        covering_id(&table, "/proc/1"),
        Some(20),
        "the /proc line was skipped"
    );

    assert_eq!(MountTable::parse(b""), MountTable::default());
    assert_eq!(MountTable::parse(b"\n\n\n"), MountTable::default());
    let bad = [
        &b" "[..],
        b"1 0 8:1 / / rw -",
        b"1 0 8:1 / / rw - ext4",
        b"1 0 8:1 / / rw - ext4 /dev/sda1",
        b"1 0 8:1 / / rw - ext4 /dev/sda1 rw ",
        b"1 0 8:1 / / - ext4 /dev/sda1 rw",
        b"1 0 8:1 / /  - ext4 /dev/sda1 rw",
        b"1 0 8:1  / rw - ext4 /dev/sda1 rw",
        b"1 0 8:1 / / rw -  /dev/sda1 rw",
        b"+1 0 8:1 / / rw - ext4 /dev/sda1 rw",
        b"1 0 8 / / rw - ext4 /dev/sda1 rw",
        b"1 0 8:1:2 / / rw - ext4 /dev/sda1 rw",
        b"1 0 :1 / / rw - ext4 /dev/sda1 rw",
        b"1  0 8:1 / / rw - ext4 /dev/sda1 rw",
        b"1\t0 8:1 / / rw - ext4 /dev/sda1 rw",
        b"1 0 8:1 / / rw shared:1 ext4 /dev/sda1 rw",
        b"1 0 8:1 / / rw\r",
    ];
    for line in bad {
        let table = MountTable::parse(line);
        assert_eq!(
            (table.mounts.len(), table.skipped),
            (0, 1),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
    // The largest IDs are fine; one more is not.
    let big = MountTable::parse(b"4294967295 4294967295 4294967295:4294967295 / / rw - ext4 x rw\n");
    assert_eq!((big.mounts.len(), big.mounts[0].major), (1, u32::MAX));
}

#[test]
fn read_reports_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("4242/mountinfo");
    let err = MountTable::read(&missing).unwrap_err();
    assert!(err.is_not_found());
    assert!(err.to_string().contains("4242/mountinfo"), "{err}");

    // A directory opens but cannot be read: an error, not "gone".
    let err = MountTable::read(dir.path()).unwrap_err();
    assert!(!err.is_not_found(), "{err}");

    let gone = MountInfoError::Read {
        path: missing.clone(),
        source: io::Error::from_raw_os_error(nix::libc::ESRCH),
    };
    assert!(gone.is_not_found());
    let denied = MountInfoError::Read {
        path: missing,
        source: io::Error::from_raw_os_error(nix::libc::EACCES),
    };
    assert!(!denied.is_not_found());
}

#[test]
fn read_cuts_a_table_that_is_too_big() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mountinfo");
    let line = |n: u32| format!("{n} 1 0:{n} / /m/{n} rw - tmpfs tmpfs rw\n");
    let text: String = (10..20).map(line).collect();
    fs::write(&path, &text).unwrap();
    let len = text.len() as u64;

    let whole = read_limited(&path, len).unwrap();
    assert_eq!((whole.mounts.len(), whole.skipped), (10, 0));
    assert_eq!(read_limited(&path, len + 100).unwrap(), whole);

    // The limit falls inside the fourth line: three parsed, the cut one skipped.
    let three = (line(10) + &line(11) + &line(12)).len() as u64;
    let cut = read_limited(&path, three + 5).unwrap();
    assert_eq!((ids(cut.mounts.iter()), cut.skipped), (vec![10, 11, 12], 1));
    // The limit falls on a line's end: the next line is the cut one.
    let cut = read_limited(&path, three).unwrap();
    assert_eq!((ids(cut.mounts.iter()), cut.skipped), (vec![10, 11, 12], 1));
    // Inside the first line: nothing parsed.
    let cut = read_limited(&path, 3).unwrap();
    assert_eq!((cut.mounts.len(), cut.skipped), (0, 1));
    let cut = read_limited(&path, 0).unwrap();
    assert_eq!((cut.mounts.len(), cut.skipped), (0, 1));
}

#[test]
fn reads_its_own_mount_table() {
    let table = MountTable::read(Path::new("/proc/self/mountinfo")).unwrap();
    assert_eq!(table.skipped, 0);
    assert!(!table.mounts.is_empty());
    let root = table.covering("/").unwrap();
    assert_eq!(normalize(&root.mount_point).as_deref(), Some("/"));
}

proptest! {
    #[test]
    fn parse_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        words in proptest::collection::vec("([0-9]{1,3}(:[0-9]{1,3})?|-|/[a-z\\\\0-7]{0,6}|r[ow](,[a-z_]{1,4}){0,2}|shared:[0-9]|)", 0..16),
        path in "[/a-z.]{0,12}",
    ) {
        let line = words.join(" ");
        for text in [bytes.as_slice(), line.as_bytes()] {
            let table = MountTable::parse(text);
            let lines = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
            prop_assert_eq!(table.mounts.len() + table.skipped, lines);
            let _ = table.covering(&path);
            let _ = table.by_device(&path).count();
        }
    }

    #[test]
    fn escaped_fields_round_trip(
        point in "\\PC{0,40}",
        root in any::<String>(),
        source in "[ \\\\\t\na-z/\u{e9}]{0,20}",
        id in any::<u32>(),
    ) {
        let mount_point = format!("/{point}");
        let root = format!("/{root}");
        let mut line = format!("{id} 1 0:42 ").into_bytes();
        line.extend(kernel_escape(&root));
        line.push(b' ');
        line.extend(kernel_escape(&mount_point));
        line.extend_from_slice(b" rw,relatime shared:7 - tmpfs ");
        line.extend(kernel_escape(&source));
        line.extend_from_slice(b" rw,inode64\n");
        let table = MountTable::parse(&line);
        prop_assert_eq!(table.skipped, 0);
        prop_assert_eq!(table.mounts.len(), 1);
        let m = &table.mounts[0];
        prop_assert_eq!(m.mount_id, id);
        prop_assert_eq!(&m.mount_point, &mount_point);
        prop_assert_eq!(&m.root, &root);
        prop_assert_eq!(&m.source, &source);
        if let Some(normal) = normalize(&mount_point) {
            prop_assert_eq!(table.covering(&normal).map(|m| m.mount_id), Some(id));
        }
    }

    #[test]
    fn normalize_is_idempotent(path in "(/|\\.|\\.\\.|a|b/|//){0,12}") {
        match normalize(&path) {
            None => prop_assert!(!path.starts_with('/')),
            Some(normal) => {
                prop_assert!(normal.starts_with('/'));
                prop_assert!(normal == "/" || !normal.ends_with('/'));
                prop_assert!(!normal.contains("//"));
                prop_assert!(!normal.split('/').any(|c| c == "." || c == ".."));
                prop_assert_eq!(normalize(&normal), Some(normal.clone()));
            }
        }
    }
}
