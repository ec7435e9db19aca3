use std::fs;
use std::os::unix::fs::symlink;

use super::event::{encode, BadRecord, AT_FDCWD, COMM_LEN, EVENT_LEN, PATH_LEN};
use super::*;

const ID: &str = "4b1d2c3e4f5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const TGID: u32 = 4242;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mountinfo")
        .join(name)
}

fn t(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
}

fn nr(n: libc::c_long) -> u32 {
    u32::try_from(n).unwrap()
}

fn write_flags() -> u64 {
    u64::try_from(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC).unwrap()
}

/// An `openat` of `path` by pid 4242 of the container, failing with `EROFS`.
fn raw(path: &[u8]) -> RawEvent {
    RawEvent {
        boot_ns: 123_456_789_012,
        cgroup_id: 0x1_0000_0042,
        open_flags: write_flags(),
        pid: TGID + 1,
        tgid: TGID,
        nr: nr(libc::SYS_openat),
        ret: -libc::EROFS,
        mnt_ns: 4_026_532_801,
        dirfd: AT_FDCWD,
        comm: b"app".to_vec(),
        cgroup: format!("cri-containerd-{ID}.scope").into_bytes(),
        path: path.to_vec(),
        path_truncated: false,
        path_unreadable: false,
        cgroup_unreadable: false,
    }
}

// The kernel's record.

#[test]
fn a_record_round_trips() {
    let e = raw(b"/config/app.yaml");
    let bytes = encode(&e);
    assert_eq!(bytes.len(), EVENT_LEN);
    assert_eq!(EVENT_LEN, 712);
    assert_eq!(RawEvent::parse(&bytes), Ok(e));
}

#[test]
fn every_status_flag_round_trips() {
    for status in 0..8u8 {
        let mut e = raw(b"/x");
        e.path_truncated = status & 1 != 0;
        e.path_unreadable = status & 2 != 0;
        e.cgroup_unreadable = status & 4 != 0;
        assert_eq!(RawEvent::parse(&encode(&e)).unwrap(), e, "status {status}");
    }
}

#[test]
fn a_path_filling_the_field_round_trips_with_its_truncated_flag() {
    let mut path = vec![b'/'];
    path.resize(PATH_LEN - 1, b'a');
    assert_eq!(path.len(), 511);
    let mut e = raw(&path);
    e.path_truncated = true;
    let bytes = encode(&e);
    assert_eq!(bytes[EVENT_LEN - 1], 0, "the last byte is the terminating NUL");
    let parsed = RawEvent::parse(&bytes).unwrap();
    assert_eq!(parsed.path.len(), 511);
    assert!(parsed.path_truncated);
    assert_eq!(parsed, e);

    // Longer than the field: cut to what fits.
    let mut long = raw(&[b'b'; 600]);
    long.path_truncated = true;
    let parsed = RawEvent::parse(&encode(&long)).unwrap();
    assert_eq!(parsed.path, vec![b'b'; 511]);
}

#[test]
fn fields_end_at_their_first_nul_or_fill_the_field() {
    let mut e = raw(b"/a\0/hidden");
    e.comm = b"0123456789abcdefXYZ".to_vec();
    let parsed = RawEvent::parse(&encode(&e)).unwrap();
    assert_eq!(parsed.path, b"/a");
    assert_eq!(parsed.comm, b"0123456789abcde", "{COMM_LEN} bytes with the NUL");

    // A field the kernel filled without a NUL is taken whole.
    let mut bytes = encode(&raw(b"/x"));
    bytes[56..56 + COMM_LEN].fill(b'c');
    assert_eq!(RawEvent::parse(&bytes).unwrap().comm, vec![b'c'; COMM_LEN]);
    bytes[EVENT_LEN - PATH_LEN..].fill(b'p');
    assert_eq!(RawEvent::parse(&bytes).unwrap().path, vec![b'p'; PATH_LEN]);
}

#[test]
fn non_utf8_bytes_round_trip() {
    let mut e = raw(b"/data/\xff\xfe\x80name\n");
    e.comm = b"\xc3(app".to_vec();
    e.cgroup = b"\xf0\x28\x8c\xbc".to_vec();
    assert_eq!(RawEvent::parse(&encode(&e)).unwrap(), e);
}

#[test]
fn numbers_round_trip_at_their_extremes() {
    let mut e = raw(b"/x");
    e.boot_ns = u64::MAX;
    e.cgroup_id = u64::MAX - 1;
    e.open_flags = 0;
    e.pid = u32::MAX;
    e.tgid = 1;
    e.nr = 0;
    e.ret = i32::MIN;
    e.mnt_ns = 0;
    assert_eq!(RawEvent::parse(&encode(&e)).unwrap(), e);
}

#[test]
fn records_of_the_wrong_size_are_rejected() {
    for len in [0, 1, 48, EVENT_LEN - 1, EVENT_LEN + 1, 2 * EVENT_LEN] {
        assert_eq!(RawEvent::parse(&vec![0u8; len]), Err(BadRecord(len)), "{len}");
    }
    assert_eq!(RawEvent::parse(&[]), Err(BadRecord(0)));
    assert_eq!(RawEvent::parse(&[0u8; 711]), Err(BadRecord(711)));
    assert_eq!(RawEvent::parse(&[0u8; 713]), Err(BadRecord(713)));
    assert_eq!(
        BadRecord(711).to_string(),
        "a tracer record of 711 bytes; 712 expected"
    );
    // The right size of zeroes is a (useless) record, not a panic.
    let zero = RawEvent::parse(&[0u8; EVENT_LEN]).unwrap();
    assert!(zero.path.is_empty() && zero.comm.is_empty() && zero.cgroup.is_empty());
}

// Folding repeats.

fn key(container: &str, path: &str) -> Key {
    Key {
        container: container.into(),
        nr: nr(libc::SYS_openat),
        path: path.as_bytes().to_vec(),
    }
}

fn event(path: &str, at: SystemTime) -> ErofsEvent {
    ErofsEvent {
        at,
        syscall: "openat",
        open_flags: Some(write_flags()),
        pid: TGID + 1,
        tgid: TGID,
        comm: "app".into(),
        path: path.into(),
        path_truncated: false,
        resolved_path: Some(path.into()),
        cgroup: format!("cri-containerd-{ID}.scope"),
        container_id: Some(ID.into()),
        mnt_ns: 4_026_532_801,
        mount: MountLookup::Unknown("not looked up in this test".into()),
        count: 1,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn the_first_event_is_sent_at_once_and_repeats_are_folded_into_one() {
    let start = Instant::now();
    let mut agg = Aggregator::new(Duration::from_secs(1));
    let first = agg.observe(key(ID, "/x"), t(0), start, || event("/x", t(0)));
    assert_eq!(first, [event("/x", t(0))]);

    for i in 1..=5 {
        let out = agg.observe(key(ID, "/x"), t(i * 100), start + ms(i * 100), || {
            panic!("a repeat is not enriched")
        });
        assert!(out.is_empty(), "repeat {i}");
    }
    // A repeat whose time is earlier (another CPU's record) does not move the latest back.
    let out = agg.observe(key(ID, "/x"), t(50), start + ms(600), || {
        panic!("a repeat is not enriched")
    });
    assert!(out.is_empty());

    assert!(
        agg.flush(start + ms(999), false).is_empty(),
        "the window is not over"
    );
    let out = agg.flush(start + ms(1000), false);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].count, 6, "the repeats, not the first event");
    assert_eq!(out[0].at, t(500), "the latest");
    assert_eq!(
        ErofsEvent {
            at: t(0),
            count: 1,
            ..out[0].clone()
        },
        event("/x", t(0)),
        "the rest is the first event's"
    );
    assert!(agg.open.is_empty());
    assert!(agg.flush(start + ms(5000), true).is_empty(), "nothing twice");

    // The next one opens a new window and is sent at once.
    let out = agg.observe(key(ID, "/x"), t(6000), start + ms(6000), || event("/x", t(6000)));
    assert_eq!(out, [event("/x", t(6000))]);
}

#[test]
fn a_window_without_repeats_closes_without_an_event() {
    let start = Instant::now();
    let mut agg = Aggregator::new(Duration::from_secs(1));
    agg.observe(key(ID, "/x"), t(0), start, || event("/x", t(0)));
    assert!(agg.flush(start + ms(2000), false).is_empty());
    assert!(agg.open.is_empty(), "closed all the same");
}

#[test]
fn an_event_after_the_window_sends_the_aggregate_then_itself() {
    let start = Instant::now();
    let mut agg = Aggregator::new(Duration::from_secs(1));
    agg.observe(key(ID, "/x"), t(0), start, || event("/x", t(0)));
    for i in 1..=3 {
        assert!(agg
            .observe(key(ID, "/x"), t(i), start + ms(i), || event("/x", t(i)))
            .is_empty());
    }
    let out = agg.observe(key(ID, "/x"), t(1500), start + ms(1500), || event("/x", t(1500)));
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].count, out[0].at), (3, t(3)));
    assert_eq!((out[1].count, out[1].at), (1, t(1500)));
    // The new window runs from then.
    assert!(agg
        .observe(key(ID, "/x"), t(2000), start + ms(2000), || event("/x", t(2000)))
        .is_empty());
    assert!(agg.flush(start + ms(2499), false).is_empty());
    let out = agg.flush(start + ms(2500), false);
    assert_eq!((out.len(), out[0].count), (1, 1));

    // Without repeats in between, only the new event.
    let out = agg.observe(key(ID, "/x"), t(9000), start + ms(9000), || event("/x", t(9000)));
    assert_eq!(out, [event("/x", t(9000))]);
}

#[test]
fn container_syscall_and_path_each_make_a_window() {
    let start = Instant::now();
    let mut agg = Aggregator::new(Duration::from_secs(1));
    let other = "9".repeat(64);
    let mut mkdir = key(ID, "/x");
    mkdir.nr = nr(libc::SYS_mkdirat);
    for k in [key(ID, "/x"), key(ID, "/y"), key(&other, "/x"), mkdir] {
        assert_eq!(agg.observe(k, t(0), start, || event("/x", t(0))).len(), 1);
    }
    assert_eq!(agg.open.len(), 4);
}

#[test]
fn open_windows_stay_bounded_and_lose_no_count() {
    let start = Instant::now();
    let mut agg = Aggregator::new(Duration::from_secs(60));
    for i in 0..MAX_WINDOWS {
        let path = format!("/p/{i}");
        assert_eq!(
            agg.observe(key(ID, &path), t(0), start, || event(&path, t(0)))
                .len(),
            1
        );
        assert!(agg
            .observe(key(ID, &path), t(1), start, || event(&path, t(1)))
            .is_empty());
    }
    assert_eq!(agg.open.len(), MAX_WINDOWS);
    // One more: every open window is closed with its count, then the new one sent.
    let out = agg.observe(key(ID, "/new"), t(2), start, || event("/new", t(2)));
    assert_eq!(out.len(), MAX_WINDOWS + 1);
    assert!(out[..MAX_WINDOWS].iter().all(|e| e.count == 1 && e.at == t(1)));
    assert_eq!(out[MAX_WINDOWS].path, "/new");
    assert_eq!(agg.open.len(), 1);

    for i in 0..3 * MAX_WINDOWS {
        let path = format!("/q/{i}");
        agg.observe(key(ID, &path), t(3), start, || event(&path, t(3)));
        assert!(agg.open.len() <= MAX_WINDOWS);
    }
}

// Enriching a record.

/// A fake host root with pid 4242's mount table (the container fixture), working directory,
/// directory descriptor 7 (`/config`) and mount namespace (the one the records name).
fn host_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let proc = dir.path().join("proc").join(TGID.to_string());
    fs::create_dir_all(proc.join("ns")).unwrap();
    fs::create_dir_all(proc.join("fd")).unwrap();
    fs::copy(fixture("container_overlay.mountinfo"), proc.join("mountinfo")).unwrap();
    symlink("/app", proc.join("cwd")).unwrap();
    symlink("/config", proc.join("fd/7")).unwrap();
    symlink("mnt:[4026532801]", proc.join("ns/mnt")).unwrap();
    dir
}

fn found(e: &ErofsEvent) -> &Mount {
    match &e.mount {
        MountLookup::Found(m) => m,
        MountLookup::Unknown(why) => panic!("not found: {why}"),
    }
}

#[test]
fn an_absolute_path_finds_its_covering_mount() {
    let root = host_root();
    let e = enrich(&raw(b"/config/app.yaml"), t(7), Some(ID.into()), root.path());
    let m = found(&e);
    assert_eq!(m.mount_point, "/config");
    assert!(m.mount_read_only());
    assert!(m.root.ends_with("/volumes/kubernetes.io~configmap/app-config"));
    assert_eq!(e.at, t(7));
    assert_eq!(e.syscall, "openat");
    assert_eq!(e.open_flags, Some(write_flags()));
    assert_eq!((e.pid, e.tgid), (TGID + 1, TGID));
    assert_eq!(e.comm, "app");
    assert_eq!(e.path, "/config/app.yaml");
    assert_eq!(e.resolved_path.as_deref(), Some("/config/app.yaml"));
    assert_eq!(e.cgroup, format!("cri-containerd-{ID}.scope"));
    assert_eq!(e.container_id.as_deref(), Some(ID));
    assert_eq!(e.mnt_ns, 4_026_532_801);
    assert!(!e.path_truncated);
    assert_eq!(e.count, 1);

    // Not normalised as passed: resolved lexically, the path kept as passed.
    let e = enrich(&raw(b"//config/./x/../app.yaml"), t(7), None, root.path());
    assert_eq!(e.path, "//config/./x/../app.yaml");
    assert_eq!(e.resolved_path.as_deref(), Some("/config/app.yaml"));
    assert_eq!(found(&e).mount_point, "/config");
    assert_eq!(e.container_id, None);

    // Elsewhere: the read-only overlay root.
    let e = enrich(&raw(b"/var/run/app.pid"), t(7), None, root.path());
    assert_eq!(found(&e).mount_point, "/");
    assert_eq!(found(&e).fs_type, "overlay");
}

#[test]
fn a_relative_path_is_joined_to_the_working_directory() {
    let root = host_root();
    let e = enrich(&raw(b"state/db.lock"), t(7), Some(ID.into()), root.path());
    assert_eq!(e.path, "state/db.lock");
    assert_eq!(e.resolved_path.as_deref(), Some("/app/state/db.lock"));
    assert_eq!(found(&e).mount_point, "/");

    let e = enrich(&raw(b"../data/out.log"), t(7), Some(ID.into()), root.path());
    assert_eq!(e.resolved_path.as_deref(), Some("/data/out.log"));
    let m = found(&e);
    assert_eq!(m.mount_point, "/data");
    assert!(!m.read_only());
}

#[test]
fn a_process_that_exited_leaves_the_mount_unknown() {
    let root = tempfile::tempdir().unwrap();
    let e = enrich(&raw(b"/config/app.yaml"), t(7), Some(ID.into()), root.path());
    assert_eq!(e.resolved_path.as_deref(), Some("/config/app.yaml"));
    assert_eq!(
        e.mount,
        MountLookup::Unknown(format!("pid {TGID} exited before its mount table was read"))
    );

    let e = enrich(&raw(b"data/x"), t(7), Some(ID.into()), root.path());
    assert_eq!(e.resolved_path, None);
    assert_eq!(
        e.mount,
        MountLookup::Unknown(format!(
            "pid {TGID} exited before the relative path \"data/x\" could be resolved"
        ))
    );
}

#[test]
fn an_unreadable_path_is_not_looked_up() {
    let root = host_root();
    let mut r = raw(b"");
    r.path_unreadable = true;
    let e = enrich(&r, t(7), Some(ID.into()), root.path());
    assert_eq!(e.resolved_path, None);
    assert_eq!(
        e.mount,
        MountLookup::Unknown("the path could not be read from the process".into())
    );
    // An empty path the kernel did read names nothing either.
    let e = enrich(&raw(b""), t(7), Some(ID.into()), root.path());
    assert_eq!(e.resolved_path, None);
    assert!(matches!(e.mount, MountLookup::Unknown(_)));
}

#[test]
fn a_table_without_a_covering_mount_or_that_cannot_be_read() {
    let root = tempfile::tempdir().unwrap();
    let proc = root.path().join("proc").join(TGID.to_string());
    fs::create_dir_all(proc.join("ns")).unwrap();
    symlink("mnt:[4026532801]", proc.join("ns/mnt")).unwrap();
    fs::write(
        proc.join("mountinfo"),
        "1536 1523 252:1 / /data rw,relatime - ext4 /dev/vda1 rw\n",
    )
    .unwrap();
    let e = enrich(&raw(b"/config/x"), t(7), None, root.path());
    assert_eq!(
        e.mount,
        MountLookup::Unknown(format!("no mount of pid {TGID} covers /config/x"))
    );

    fs::remove_file(proc.join("mountinfo")).unwrap();
    fs::create_dir(proc.join("mountinfo")).unwrap();
    let e = enrich(&raw(b"/config/x"), t(7), None, root.path());
    match &e.mount {
        MountLookup::Unknown(why) => assert!(why.starts_with("cannot read mount table "), "{why}"),
        MountLookup::Found(m) => panic!("found {m:?}"),
    }
}

#[test]
fn non_utf8_bytes_are_replaced_and_the_lookup_still_works() {
    let root = host_root();
    let mut r = raw(b"/data/\xff\xfe.tmp");
    r.comm = b"\xffapp".to_vec();
    r.path_truncated = true;
    let e = enrich(&r, t(7), Some(ID.into()), root.path());
    assert_eq!(e.path, "/data/\u{fffd}\u{fffd}.tmp");
    assert_eq!(e.comm, "\u{fffd}app");
    assert!(e.path_truncated);
    assert_eq!(found(&e).mount_point, "/data");
}

#[test]
fn open_flags_only_for_the_open_family() {
    let root = host_root();
    let mut r = raw(b"/config/new");
    r.nr = nr(libc::SYS_mkdirat);
    let e = enrich(&r, t(7), None, root.path());
    assert_eq!((e.syscall, e.open_flags), ("mkdirat", None));
    r.nr = nr(libc::SYS_openat2);
    assert_eq!(
        enrich(&r, t(7), None, root.path()).open_flags,
        Some(write_flags())
    );
    r.nr = 9999;
    let e = enrich(&r, t(7), None, root.path());
    assert_eq!((e.syscall, e.open_flags), ("unknown", None));
}

// The rest.

#[test]
fn boot_time_converts_to_the_wall_clock() {
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap();
    let boot_ns =
        u64::try_from(boot.tv_sec()).unwrap() * 1_000_000_000 + u64::try_from(boot.tv_nsec()).unwrap();
    let before = SystemTime::now();
    let at = wall_clock(boot_ns);
    let after = SystemTime::now();
    assert!(at <= after);
    assert!(before.duration_since(at).unwrap_or_default() < Duration::from_secs(1));
    // Before the boot (never), or in the future: no panic.
    assert!(wall_clock(0) <= after);
    assert!(wall_clock(u64::MAX) >= before);
}

#[test]
fn settings_default_and_parse() {
    let d = ErofsConfig::default();
    assert!(d.tracer);
    assert_eq!(
        (d.window, d.repeat_interval),
        (Duration::from_secs(1), Duration::from_secs(10))
    );
    let c: ErofsConfig = serde_yaml_ng::from_str("tracer: false\nwindow: 250ms\n").unwrap();
    assert_eq!(
        c,
        ErofsConfig {
            tracer: false,
            window: Duration::from_millis(250),
            ..ErofsConfig::default()
        }
    );
    assert!(serde_yaml_ng::from_str::<ErofsConfig>("windw: 1s\n").is_err());
}

#[test]
fn a_relative_path_of_an_at_call_starts_from_its_directory_descriptor() {
    let root = host_root();
    let mut r = raw(b"app.conf");
    r.nr = libc::SYS_unlinkat as u32;
    r.dirfd = 7;
    let e = enrich(&r, SystemTime::UNIX_EPOCH, Some(ID.into()), root.path());
    assert_eq!(e.resolved_path.as_deref(), Some("/config/app.conf"));
    assert_eq!(found(&e).mount_point, "/config");
    // A descriptor that is not open: unknown, never the working directory instead.
    r.dirfd = 9;
    let e = enrich(&r, SystemTime::UNIX_EPOCH, Some(ID.into()), root.path());
    assert_eq!(e.resolved_path, None);
    assert!(
        matches!(&e.mount, MountLookup::Unknown(why) if why.contains("fd/9")),
        "{:?}",
        e.mount
    );
}

#[test]
fn a_reused_pid_in_another_mount_namespace_is_not_read() {
    let root = host_root();
    let mut r = raw(b"/config/app.conf");
    r.mnt_ns = 4_026_532_999;
    let e = enrich(&r, SystemTime::UNIX_EPOCH, Some(ID.into()), root.path());
    assert!(
        matches!(&e.mount, MountLookup::Unknown(why) if why.contains("exited")),
        "{:?}",
        e.mount
    );
}
